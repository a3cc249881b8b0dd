"""Errors in the page: every handler's failure becomes a message that says what happened and what to do.

Gradio shows an exception that is not a `gr.Error` as a bare "Error" badge. `guard_handlers` wraps every
event handler of an app once, after the tabs are built, so no handler is left out: a `ReasonappError`
(the user can fix it) is shown as its own message; anything else is logged with its traceback and shown
as an unexpected error with what to do next.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sqlite3
from collections.abc import Callable

import gradio as gr

from reasonapp.errors import ReasonappError

logger = logging.getLogger(__name__)


def user_message(error: BaseException, action: str) -> str:
    """One line for the page: what failed, why, and what to do."""
    if isinstance(error, ReasonappError):
        return str(error)
    if isinstance(error, sqlite3.OperationalError | sqlite3.DatabaseError):
        return (
            f"{action} failed: the review store could not be used ({error}). Nothing from this action was saved; "
            "reload the page, and if it repeats restart the app (other processes writing the store may have changed it)."
        )
    if isinstance(error, MemoryError):
        return f"{action} failed: out of memory. Close other jobs or use a smaller batch or model, then try again."
    if isinstance(error, OSError):
        return f"{action} failed: {error.strerror or error} ({getattr(error, 'filename', None) or 'a file'}). Check the path and free disk space, then try again."
    return (
        f"{action} failed unexpectedly ({type(error).__name__}: {error}). The traceback is in the app's log; "
        "reload the page and try again, and report it if it repeats."
    )


def _action_name(fn: Callable, api_name: str | None) -> str:
    name = api_name or getattr(fn, "__name__", "") or "This action"
    return "This action" if name == "<lambda>" else name.replace("_", " ").strip().capitalize()


def _raise_for(error: BaseException, action: str) -> None:
    if isinstance(error, gr.Error):
        if error.__cause__ is None or isinstance(error.__cause__, ReasonappError):
            error.print_exception = False  # an input the user can fix: the page says it, the log needs no traceback
        raise error
    if not isinstance(error, ReasonappError):
        logger.exception("handler %s failed", action)
    raise gr.Error(user_message(error, action), print_exception=False) from error


def guard(fn: Callable, api_name: str | None = None) -> Callable:
    """`fn` with every exception turned into a `gr.Error` carrying a readable message; generators stay generators."""
    action = _action_name(fn, api_name)
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def guarded_generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:
                _raise_for(error, action)

        guarded_generator.reasonapp_guarded = True
        return guarded_generator

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            _raise_for(error, action)

    guarded.reasonapp_guarded = True
    return guarded


def guard_handlers(blocks: gr.Blocks) -> None:
    """Wrap every Python handler registered on `blocks` (the tabs' events, loads and timers)."""
    for block_fn in blocks.fns.values():
        if block_fn.fn is not None and not inspect.iscoroutinefunction(block_fn.fn) and not getattr(block_fn.fn, "reasonapp_guarded", False):
            block_fn.fn = guard(block_fn.fn, block_fn.api_name)
