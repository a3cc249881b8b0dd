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
import traceback
from collections.abc import Callable

import gradio as gr

from reasonapp.errors import ReasonappError

logger = logging.getLogger(__name__)


# A message (and a logged error) is cut to this: an API caller's 1 MB argument echoed in an error grew the log by
# 1 MB a call and came back whole in the reply.
MESSAGE_CHARS = 600
# Parameters annotated as text: a caller of the API can send a number or a list where the page sends text.
TEXT_ANNOTATIONS = {"str", "str | None", "None | str", "Optional[str]"}


def shortened(text: str) -> str:
    """`text`, or its first MESSAGE_CHARS characters and how long it was."""
    return text if len(text) <= MESSAGE_CHARS else f"{text[:MESSAGE_CHARS]}… ({len(text):,} characters)"


def user_message(error: BaseException, action: str) -> str:
    """One line for the page: what failed, why, and what to do."""
    return shortened(_message(error, action))


def _message(error: BaseException, action: str) -> str:
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
        if isinstance(error.message, str):
            error.message = shortened(error.message)
        raise error
    if not isinstance(error, ReasonappError):
        if len(str(error)) > MESSAGE_CHARS:  # the traceback's last line would repeat it whole: the frames, the message cut
            frames = "".join(traceback.format_tb(error.__traceback__))
            logger.error("handler %s failed: %s: %s\n%s", action, type(error).__name__, shortened(str(error)), frames)
        else:
            logger.exception("handler %s failed", action)
    raise gr.Error(user_message(error, action), print_exception=False) from error


def _text_parameters(fn: Callable) -> list[tuple[int, str]]:
    """(position, name) of the positional parameters of `fn` annotated as text."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return []
    found = []
    for position, parameter in enumerate(parameters):
        if parameter.kind not in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            break
        annotation = parameter.annotation
        if annotation is str or (annotation if isinstance(annotation, str) else str(annotation)) in TEXT_ANNOTATIONS:
            found.append((position, parameter.name))
    return found


def _check_text(args: tuple, text_parameters: list[tuple[int, str]], action: str) -> None:
    for position, name in text_parameters:
        if position < len(args) and args[position] is not None and not isinstance(args[position], str):
            raise gr.Error(f"{action}: {name.replace('_', ' ')} must be text, not {type(args[position]).__name__}.", print_exception=False)


def guard(fn: Callable, api_name: str | None = None) -> Callable:
    """`fn` with every exception turned into a `gr.Error` carrying a readable message; generators stay generators."""
    action = _action_name(fn, api_name)
    text_parameters = _text_parameters(fn)
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def guarded_generator(*args, **kwargs):
            _check_text(args, text_parameters, action)
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:
                _raise_for(error, action)

        guarded_generator.reasonapp_guarded = True
        return guarded_generator

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        _check_text(args, text_parameters, action)
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
