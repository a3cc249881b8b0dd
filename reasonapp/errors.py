"""User-facing errors: each carries a message that says what is wrong and how to fix it.

The CLI prints these as one line and exits 2; the UI shows them in a message box. Anything else
that escapes is a bug and keeps its traceback.
"""


class ReasonappError(Exception):
    """Base class of every error a user can cause and fix."""


class DataError(ReasonappError):
    """A dataset that cannot be found, read or understood."""


class ModelError(ReasonappError):
    """A model or adapter that cannot be found or loaded."""


class ConfigError(ReasonappError):
    """A configuration value that is missing, contradictory or out of range."""


class RunDirError(ReasonappError):
    """A run directory that holds another run, or lacks what a step needs."""


class RunStopped(ReasonappError):
    """A pipeline stopped on request (Stop button, STOP file, SIGTERM) at a saved checkpoint; the same command resumes it."""
