"""How a handler's failure reaches the page: a message the user can act on, and a traceback in the log only when
something unexpected happened (`reasonapp.ui.errors.guard`)."""

from __future__ import annotations

import logging

import gradio as gr
import pytest

from reasonapp.errors import ReasonappError
from reasonapp.ui.compare import NO_TEXT, text_given
from reasonapp.ui.errors import guard


def failing(error: BaseException):
    def handler():
        raise error

    return handler


def test_an_error_the_user_can_fix_is_shown_as_its_message_without_a_traceback(caplog):
    with caplog.at_level(logging.ERROR), pytest.raises(gr.Error) as raised:
        guard(failing(ReasonappError("No run at /tmp/x: pick a finished run.")))()
    assert raised.value.message == "No run at /tmp/x: pick a finished run." and raised.value.print_exception is False
    assert caplog.records == []


def test_a_handlers_own_input_error_is_passed_on_without_a_traceback():
    for error in (gr.Error("Type a text to classify."), _raised_from(gr.Error("bad run"), ReasonappError("no such run"))):
        with pytest.raises(gr.Error) as raised:
            guard(failing(error))()
        assert raised.value is error and raised.value.print_exception is False


def test_an_unexpected_failure_keeps_its_traceback_in_the_log(caplog):
    wrapped = _raised_from(gr.Error("Could not read texts.csv"), RuntimeError("parser crashed"))
    with pytest.raises(gr.Error) as raised:
        guard(failing(wrapped))()
    assert raised.value.print_exception is True  # a gr.Error wrapping a crash: Gradio still logs it

    with caplog.at_level(logging.ERROR), pytest.raises(gr.Error) as raised:
        guard(failing(KeyError("qa")), api_name="compare_predict")()
    assert raised.value.message.startswith("Compare predict failed unexpectedly (KeyError") and "app's log" in raised.value.message
    assert [record.exc_info[0] for record in caplog.records] == [KeyError]


def test_a_streaming_handler_stays_a_generator_and_fails_the_same_way():
    def streaming():
        yield "first"
        raise ReasonappError("The run was deleted while streaming.")

    stream = guard(streaming)()
    assert next(stream) == "first"
    with pytest.raises(gr.Error, match="deleted while streaming"):
        next(stream)


def test_compare_refuses_an_empty_text_at_the_text_box_before_the_queue():
    refused, *others = text_given("  \n", "runs/qa", "runs/qra")
    assert refused == gr.validate(False, NO_TEXT) and all(check["is_valid"] for check in others) and len(others) == 2
    assert all(check["is_valid"] for check in text_given("i feel fine", "runs/qa", None))


def _raised_from(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


def test_a_huge_argument_echoed_in_an_error_is_cut_in_the_reply_and_the_log(caplog):
    """An API caller's 1 MB run directory came back whole in the reply and grew the log by 1 MB a call."""
    huge = "x" * 1_000_000
    for error in (OSError(36, "File name too long", huge), ReasonappError(f"no run at {huge}"), gr.Error(f"bad {huge}")):
        caplog.clear()
        with caplog.at_level(logging.ERROR), pytest.raises(gr.Error) as raised:
            guard(failing(error))()
        assert len(raised.value.message) < 1000 and "characters)" in raised.value.message
        assert sum(len(record.getMessage()) + len(str(record.exc_info or "")) for record in caplog.records) < 20_000
    unexpected = RuntimeError(huge)
    caplog.clear()
    with caplog.at_level(logging.ERROR), pytest.raises(gr.Error):
        guard(failing(unexpected))()
    (record,) = caplog.records
    assert record.exc_info is None and "test_ui_errors.py" in record.getMessage() and len(record.getMessage()) < 20_000  # the frames, cut


def test_a_text_parameter_given_a_number_or_a_list_is_refused_before_the_handler_runs():
    called = []

    def monitor(run_dir: str | None, limit: int = 0) -> str:
        called.append(run_dir)
        return "ok"

    guarded = guard(monitor, api_name="train_monitor")
    assert guarded("runs/qa") == "ok" and guarded(None) == "ok"
    for wrong in (1, ["runs/qa"], {"a": 1}):
        with pytest.raises(gr.Error) as raised:
            guarded(wrong)
        assert raised.value.message == f"Train monitor: run dir must be text, not {type(wrong).__name__}." and raised.value.print_exception is False
    assert called == ["runs/qa", None]
