"""Stage 2 from an OpenAI-compatible endpoint: every row ends generated or failed with its reason, a re-run
finishes the failed ones without asking again for the others, and the API key never leaves the request."""

import json
import logging
import sqlite3

import pytest

from reasonapp.errors import ConfigError
from reasonapp.store import ReasoningStore, RowFilter
from tests.endpoint_standin import FAILING, RECOVERING, EndpointStandIn
from training.augment import augment_to_store
from training.generation import Decoding
from training.teacher import TeacherConfig, TeacherError, failed_rows

KEY = "sk-reasonapp-FAKE-teacher-key-0123456789abcdef"  # recognisable, not shaped like any real key
DATASET = "dair-ai/emotion"


def teacher(stand_in, **overrides) -> TeacherConfig:
    """Quick retries: the stand-in fails on purpose, and a test need not wait out real backoff."""
    settings = {"teacher_url": stand_in.base_url, "teacher_model": "stand-in", "timeout": 2.0, "max_retries": 2, "backoff": 0.01, "max_backoff": 0.05}
    return TeacherConfig(**{**settings, **overrides})


def all_rows(store_path):
    store = ReasoningStore(store_path)
    rows = [store.get(i) for i in store.query_ids(RowFilter(generated_only=False))]
    histories = {row.id: store.history(row.id) for row in rows}
    store.close()
    return rows, histories


def store_dump(store_path) -> str:
    """Everything in the store file, every table, as SQL text (read through SQLite: never open() a store file)."""
    db = sqlite3.connect(store_path)
    try:
        return "\n".join(db.iterdump())
    finally:
        db.close()


# ---------------------------------------------------------------------------------------------
# failures, retries and resumption


def test_every_row_ends_generated_or_failed_with_its_reason_and_a_rerun_finishes_the_failed_ones(tmp_path, shared_data):
    store_path = tmp_path / "store.sqlite"
    with EndpointStandIn(modes=("ok", *RECOVERING, *FAILING)) as stand_in:
        first = augment_to_store(teacher(stand_in, concurrency=4), DATASET, store_path, limit=24, decoding=Decoding(max_new_tokens=40))
        rows, histories = all_rows(store_path)
        failed = failed_rows(store_path)
        assert len(rows) == 24 and (first["generated"], first["failed"]) == (18, 6)  # three rows in each mode
        for row in rows:  # generated, or failed with the reason; never both, never neither
            assert (row.reasoning is not None) != (row.id in failed), row
        by_text = {row.text: row for row in rows}
        for text in stand_in.texts_in_mode("ok", *RECOVERING):
            assert by_text[text].reasoning == by_text[text].reasoning.strip() != ""
            assert stand_in.requests_for(text) == (1 if stand_in.assigned[text] == "ok" else 2)  # one failure, one retry
        for text in stand_in.texts_in_mode("down"):
            assert failed[by_text[text].id] == "HTTP 503: the model is loading (attempt 3, retries exhausted)"
            assert stand_in.requests_for(text) == 3  # the first try and max_retries=2 retries
        for text in stand_in.texts_in_mode("refused"):
            assert failed[by_text[text].id] == "refused: HTTP 400: bad request from None"  # a 400 is not retried
            assert stand_in.requests_for(text) == 1
        assert {r["model"] for r in stand_in.requests} == {"stand-in"} and {r["max_tokens"] for r in stand_in.requests} == {40}
        assert {r["temperature"] for r in stand_in.requests} == {0}  # greedy

        stand_in.healthy = True  # the outage is over
        asked_before = len(stand_in.requests)
        second = augment_to_store(teacher(stand_in, concurrency=4), DATASET, store_path, limit=24, decoding=Decoding(max_new_tokens=40))
        assert (second["generated"], second["failed"], second["skipped"]) == (6, 0, 18)
        assert sorted(r["text"] for r in stand_in.requests[asked_before:]) == sorted(stand_in.texts_in_mode(*FAILING))
    rows, histories = all_rows(store_path)
    assert failed_rows(store_path) == {} and all(row.reasoning for row in rows)
    assert all([entry["action"] for entry in histories[row.id]] == ["generate"] for row in rows)  # none written twice


def test_a_killed_run_resumes_without_asking_again_for_rows_it_wrote(tmp_path, shared_data):
    store_path = tmp_path / "store.sqlite"

    def kill_after_five_rows(done, total):
        if done == 5:
            raise KeyboardInterrupt

    with EndpointStandIn() as stand_in:
        with pytest.raises(KeyboardInterrupt):
            augment_to_store(teacher(stand_in, concurrency=2), DATASET, store_path, limit=12, progress=kill_after_five_rows)
        rows, _ = all_rows(store_path)
        written = {row.text for row in rows if row.reasoning is not None}
        assert len(written) == 5 and failed_rows(store_path) == {}  # the rows in flight at the kill are simply not written
        asked_before = len(stand_in.requests)
        result = augment_to_store(teacher(stand_in, concurrency=2), DATASET, store_path, limit=12)
        assert (result["generated"], result["skipped"]) == (7, 5)
        assert not written & {r["text"] for r in stand_in.requests[asked_before:]}
    rows, histories = all_rows(store_path)
    assert all(row.reasoning for row in rows) and all(len(histories[row.id]) == 1 for row in rows)


def test_requests_are_in_flight_concurrently(tmp_path, shared_data):
    # the stand-in holds the first four requests until four are in flight together (a sequential client never gets there)
    with EndpointStandIn(in_flight_barrier=4) as stand_in:
        result = augment_to_store(teacher(stand_in, concurrency=4, max_retries=0), DATASET, tmp_path / "s.sqlite", limit=8)
    assert result["generated"] == 8 and stand_in.max_in_flight == 4


def test_an_endpoint_that_stays_down_stops_the_run_and_the_next_run_continues(tmp_path, shared_data):
    store_path = tmp_path / "store.sqlite"
    with EndpointStandIn(modes=("down",)) as stand_in:
        with pytest.raises(TeacherError, match=r"failed 3 rows in a row \(the last: HTTP 503.*run the same command to continue"):
            augment_to_store(teacher(stand_in, concurrency=1, stop_after_failed_rows=3), DATASET, store_path, limit=10)
        assert len(stand_in.assigned) == 3  # no row after the third was asked
        assert len(failed_rows(store_path)) == 3
        stand_in.healthy = True
        assert augment_to_store(teacher(stand_in, concurrency=1), DATASET, store_path, limit=10)["generated"] == 10
    assert failed_rows(store_path) == {}


def test_a_refused_key_or_an_unknown_route_stops_at_once_with_what_to_check(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("TEACHER_KEY", KEY)
    with EndpointStandIn(modes=("unauthorized",)) as stand_in:
        with pytest.raises(TeacherError) as refused:
            augment_to_store(teacher(stand_in, api_key_env="TEACHER_KEY", concurrency=1), DATASET, tmp_path / "a.sqlite", limit=5)
        assert len(stand_in.requests) == 1  # 401 is not retried, and no other row is tried
        wrong_path = teacher(stand_in, teacher_url=stand_in.base_url + "/wrong", concurrency=1)
        with pytest.raises(TeacherError, match="answered 404 for model 'stand-in'.*most servers' base URL ends in /v1"):
            augment_to_store(wrong_path, DATASET, tmp_path / "b.sqlite", limit=5)
    message = str(refused.value)
    assert "refused the request (401: Incorrect API key provided: Bearer ***)" in message and "$TEACHER_KEY" in message
    assert KEY not in message


def test_best_of_k_asks_again_when_the_server_ignores_n_and_keeps_the_reasoning_that_cites_the_text(tmp_path, shared_data):
    store_path = tmp_path / "store.sqlite"
    sampling = Decoding(max_new_tokens=40, do_sample=True, temperature=0.9)
    with EndpointStandIn(ignore_n=True) as stand_in:  # one choice per answer, as llama-cpp-python's server
        augment_to_store(teacher(stand_in), DATASET, store_path, limit=4, decoding=sampling, candidates=2)
    assert sorted(r["n"] for r in stand_in.requests) == [1] * 4 + [2] * 4  # n=2, one answer, then n=1 for the other
    assert all(stand_in.requests_for(text) == 2 for text in stand_in.assigned)
    rows, _ = all_rows(store_path)
    for row in rows:  # of "<Label> is the answer." and 'The words "..." show it.', the flags prefer the quote
        assert row.reasoning == f'The words "{" ".join(row.text.split()[:8])}" show it.'
        assert (row.generator["candidates"], row.generator["selection"]) == (2, "fewest quality flags")
        assert row.generator["decoding"]["do_sample"] is True and row.generator["decoding"]["temperature"] == 0.9


def test_generator_fields_name_the_endpoint_model_prompt_and_decoding(tmp_path, shared_data):
    with EndpointStandIn() as stand_in:
        config = teacher(stand_in, extra_body='{"repeat_penalty": 1.0}')
        augment_to_store(config, DATASET, tmp_path / "s.sqlite", limit=2, decoding=Decoding(max_new_tokens=48), prompt_variant="few-shot")
    rows, _ = all_rows(tmp_path / "s.sqlite")
    assert rows[0].generator == {
        "rgen_run": f"endpoint:{stand_in.base_url}#stand-in",
        "teacher": "endpoint",
        "endpoint": stand_in.base_url,
        "model": "stand-in",
        "stage1": None,
        "prompt_version": "1",
        "prompt_variant": "few-shot",
        "prompt_variant_version": "1",
        "candidates": 1,
        "selection": None,
        "decoding": {"max_new_tokens": 48, "do_sample": False, "temperature": 0.7, "top_p": 0.95, "extra_body": {"repeat_penalty": 1.0}},
    }


# ---------------------------------------------------------------------------------------------
# settings


def test_settings_that_cannot_work_are_refused_before_the_store_is_touched(tmp_path, monkeypatch, shared_data):
    for url, message in (
        ("localhost:8000", "must be an http\\(s\\) URL"),
        ("http://user:secret@127.0.0.1:8000/v1", "may not carry credentials, a query string"),
        ("http://127.0.0.1:8000/v1?api_key=abc", "may not carry credentials, a query string"),
    ):
        with pytest.raises(ConfigError, match=message):
            TeacherConfig(teacher_url=url, teacher_model="m")
    with pytest.raises(ConfigError, match="--teacher-model is needed"):
        TeacherConfig(teacher_url="http://127.0.0.1:8000/v1")
    with pytest.raises(ConfigError, match="--extra-body must be a JSON object"):
        TeacherConfig(teacher_url="http://127.0.0.1:8000/v1", teacher_model="m", extra_body="repeat_penalty=1")
    with pytest.raises(ConfigError, match="may not set \\['n'\\]"):
        TeacherConfig(teacher_url="http://127.0.0.1:8000/v1", teacher_model="m", extra_body='{"n": 4}')
    monkeypatch.delenv("NO_SUCH_TEACHER_KEY", raising=False)
    unset_key = TeacherConfig(teacher_url="http://127.0.0.1:8000/v1", teacher_model="m", api_key_env="NO_SUCH_TEACHER_KEY")
    with pytest.raises(ConfigError, match="names NO_SUCH_TEACHER_KEY, which is not set"):
        augment_to_store(unset_key, DATASET, tmp_path / "store.sqlite", limit=4)
    assert not (tmp_path / "store.sqlite").exists()


def test_augment_takes_one_source_of_reasonings(capsys):
    from training.cli import main

    assert main(["augment", "--limit", "4"]) == 2
    assert main(["augment", "--rgen-run", "base:x", "--teacher-url", "http://127.0.0.1:1/v1", "--teacher-model", "m"]) == 2
    assert capsys.readouterr().err.count("name the source of the reasonings: --rgen-run") == 2


def test_shipped_stage2_configs_read_as_augment_settings():
    from pathlib import Path

    import yaml

    from reasonapp.prompts import STAGE2_PROMPTS
    from training.cli import SUBPARSERS, _yaml_defaults, build_parser

    build_parser()
    paths = sorted((Path(__file__).parent.parent / "configs" / "stage2").glob("*.yaml"))
    assert paths
    for path in paths:
        values = _yaml_defaults(str(path), SUBPARSERS["augment"])
        TeacherConfig(**{name: values[name] for name in ("teacher_url", "teacher_model", "concurrency") if name in values})
        assert yaml.safe_load(path.read_text())["prompt_variant"] in STAGE2_PROMPTS


# ---------------------------------------------------------------------------------------------
# the key


def test_the_api_key_never_leaks_into_the_store_logs_exports_or_a_pushed_card(tmp_path, monkeypatch, capsys, caplog, shared_data):
    import huggingface_hub.constants

    from tests.hub_standin import HubStandIn
    from tests.test_hub import FAKE_TOKEN
    from training.augment import export_store
    from training.cli import main
    from training.hub import push_dataset

    caplog.set_level(logging.DEBUG)  # every logger, httpx's and httpcore's included
    monkeypatch.setenv("TEACHER_KEY", KEY)
    store_path = tmp_path / "store.sqlite"
    flags = ["augment", "--store", str(store_path), "--limit", "6", "--api-key-env", "TEACHER_KEY", "--teacher-model", "stand-in",
             "--max-retries", "1", "--backoff", "0.01", "--max-backoff", "0.05"]
    with EndpointStandIn(modes=("ok", "refused", "500")) as stand_in:  # "refused" quotes the Authorization header back
        flags += ["--teacher-url", stand_in.base_url]
        assert main(["-v", *flags]) == 0
        assert any("Bearer ***" in reason for reason in failed_rows(store_path).values())
        stand_in.healthy = True
        assert main(["-v", *flags]) == 0
    with EndpointStandIn(modes=("unauthorized",)) as refusing:
        assert main(["-v", *flags, "--teacher-url", refusing.base_url, "--store", str(tmp_path / "other.sqlite")]) == 2
    assert {r["authorization"] for r in stand_in.requests + refusing.requests} == {f"Bearer {KEY}"}  # the key was sent

    export = tmp_path / "export"
    export_store(store_path, export, include_pending=True)
    with HubStandIn(FAKE_TOKEN) as hub:
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        push_dataset(export, "tester/teacher-reasonings", token=FAKE_TOKEN)
        pushed = hub.files("dataset", "tester/teacher-reasonings")

    captured = capsys.readouterr()
    assert "refused the request (401" in captured.err  # the failure was reported, without the key
    logged = caplog.text + "".join(record.getMessage() for record in caplog.records)
    assert "Bearer ***" in logged  # the echoed key reached the log, scrubbed
    for where, text in (("stdout", captured.out), ("stderr", captured.err), ("logs", logged), ("store", store_dump(store_path))):
        assert KEY not in text, where
    for path in export.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert "README.md" in pushed and "## Provenance" in pushed["README.md"].decode()
    for name, content in pushed.items():
        assert KEY.encode() not in content, name
    assert json.loads(pushed["provenance.json"])["rows"] == 6


# ---------------------------------------------------------------------------------------------
# a real server: llama-cpp-python's, on the bundled SmolLM2


def test_augment_against_llama_cpp_server_on_the_bundled_gguf(tmp_path, shared_data, capsys):
    pytest.importorskip("llama_cpp", reason="optional backend: pip install llama-cpp-python")
    from reasonapp.models import DEFAULT_BASE_MODEL, base_gguf_path
    from reasonapp.quality import quality_flags
    from training.cli import main
    from training.teacher import LlamaCppServer

    store_path = tmp_path / "store.sqlite"
    with LlamaCppServer(base_gguf_path(DEFAULT_BASE_MODEL), context=2048, threads=1, lifetime_s=900) as server:  # one thread: steady on a shared CPU
        code = main([
            "augment", "--teacher-url", server.base_url, "--teacher-model", "smollm2", "--store", str(store_path), "--limit", "20",
            "--prompt-variant", "cue-words", "--max-new-tokens", "48", "--concurrency", "2", "--extra-body", '{"repeat_penalty": 1.0}',
        ])
        assert code == 0, capsys.readouterr().err[-2000:]
        assert server.process.poll() is None
    assert server.process.poll() is not None  # stopped with the block
    assert "generated 20 reasonings, 0 rows already had one" in capsys.readouterr().out
    rows, histories = all_rows(store_path)
    assert len(rows) == 20 and failed_rows(store_path) == {}
    labels = ReasoningStore(store_path).label_names(DATASET)
    for row in rows:
        assert row.reasoning and row.reasoning == row.reasoning.strip() and len(histories[row.id]) == 1
        assert row.generator["endpoint"] == server.base_url and row.generator["model"] == "smollm2"
        assert row.generator["prompt_variant"] == "cue-words" and row.generator["decoding"]["max_new_tokens"] == 48
        assert [f for f in row.flags if not f.startswith("template")] == quality_flags(row.reasoning, row.text, row.label, labels)


# ---------------------------------------------------------------------------------------------
# teacher prompts


def _emotions():
    from reasonapp.prompts import LabelSpace

    return LabelSpace(("sadness", "joy", "love", "anger", "fear", "surprise"), "Which emotion does the text express?")


def test_stage2_prompts_are_named_and_versioned_and_the_default_is_exactly_the_stage1_format():
    from reasonapp.prompts import STAGE2_PROMPTS, rgen_messages, rgen_question, stage2_messages

    labels = _emotions()
    for name in ("default", "cue"):  # a trained R-Gen behind an endpoint is asked exactly what it learned
        assert stage2_messages("i feel down", "sadness", labels, name) == rgen_messages(rgen_question("i feel down", labels), "sadness", name)
    assert set(STAGE2_PROMPTS) == {"default", "cue", "cue-words", "cue-words-brief", "few-shot"}
    assert all(prompt.version and prompt.summary for prompt in STAGE2_PROMPTS.values())
    with pytest.raises(ValueError, match="unknown Stage 2 prompt 'shout'"):
        stage2_messages("i feel down", "sadness", labels, "shout")


@pytest.mark.parametrize("name", ["cue-words", "cue-words-brief"])
def test_zero_shot_prompts_give_the_task_options_text_and_answer_and_ask_for_words_from_the_text(name):
    from reasonapp.prompts import stage2_messages

    [turn] = stage2_messages("i feel so alone tonight", "sadness", _emotions(), name)
    assert turn["role"] == "user"
    assert turn["content"].startswith(
        "Task: Which emotion does the text express? Options: sadness, joy, love, anger, fear, surprise.\n"
        "Text: i feel so alone tonight\nCorrect answer: sadness\n\n"
    )
    assert "words from the text" in turn["content"] or "words or short phrases from the text" in turn["content"]


def test_few_shot_examples_come_from_other_label_sets_cite_their_text_and_precede_the_row():
    import re

    from reasonapp.prompts import FEW_SHOT_EXAMPLES, stage2_messages
    from reasonapp.quality import quality_flags

    messages = stage2_messages("i feel so alone tonight", "sadness", _emotions(), "few-shot")
    assert [m["role"] for m in messages] == ["user", "assistant"] * len(FEW_SHOT_EXAMPLES) + ["user"]
    assert messages[-1] == stage2_messages("i feel so alone tonight", "sadness", _emotions(), "cue-words")[0]
    assert len({example.labels.names for example in FEW_SHOT_EXAMPLES}) == len(FEW_SHOT_EXAMPLES) >= 3
    for example, answer in zip(FEW_SHOT_EXAMPLES, messages[1::2], strict=False):
        assert not set(example.labels.names) & set(_emotions().names)  # nothing leans toward the emotion set
        assert answer["content"] == example.reasoning
        for quote in re.findall(r'"([^"]+)"', example.reasoning):  # every quote is the text's own words
            assert all(part.strip() in example.text for part in quote.split("..."))
        assert quality_flags(example.reasoning, example.text, example.label, example.labels.names) == []  # what the flags ask for
