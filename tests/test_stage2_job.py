"""Stage 2 as a job: the Review tab's "Generate reasonings" panel launches `python -m training augment` in its own process
(training.launcher.start_stage2), polls its progress file, stops and resumes it; rows land in the app's store as written."""

import json
import time
from pathlib import Path

import pytest

from reasonapp.errors import ConfigError, ReasonappError
from reasonapp.store import ReasoningStore
from training import launcher

LABELS = ["billing", "bug", "praise"]


@pytest.fixture
def tickets(tmp_path):
    folder = tmp_path / "tickets"
    folder.mkdir()
    (folder / "train.jsonl").write_text(
        "".join(json.dumps({"text": f"ticket {i} about my bill", "label": LABELS[i % 3]}) + "\n" for i in range(12))
    )
    return str(folder)


def settings_for(tiny_model_dir, tickets, store, **changes):
    values = {"source": f"base:{tiny_model_dir}", "dataset": tickets, "store": str(store), "split": "train", "limit": 8,
              "batch_size": 2, "max_new_tokens": 4}
    return launcher.Stage2Settings(**{**values, **changes})


def wait_until_ended(job_dir, polls=1200) -> dict:
    for _ in range(polls):  # bounded: 10 minutes at most
        state = launcher.stage2_state(job_dir)
        if state["state"] != "running":
            return state
        time.sleep(0.5)
    raise AssertionError(f"{job_dir} still running: {state}")


def rows_of(store_path, dataset) -> list:
    store = ReasoningStore(store_path)
    try:
        ids = store.query_ids()
        return [store.get(i) for i in ids if store.get(i).dataset == dataset]
    finally:
        store.close()


def test_a_job_runs_to_the_end_and_its_rows_are_in_the_store(tiny_model_dir, tickets, tmp_path):
    store = tmp_path / "store.sqlite"
    job_dir = launcher.start_stage2(settings_for(tiny_model_dir, tickets, store))
    assert job_dir.parent == launcher.jobs_root() and job_dir.name.startswith("stage2-")
    assert launcher.stage2_jobs() == [str(job_dir)]
    state = wait_until_ended(job_dir)
    assert state["state"] == "finished", state
    assert (state["done"], state["total"]) == (8, 8)
    assert "finished · 8/8 rows" in launcher.stage2_line(state)
    rows = rows_of(store, tickets)
    assert len(rows) == 8 and all(row.reasoning is not None and row.split == "train" for row in rows)
    assert all(row.generator["rgen_run"] == f"base:{tiny_model_dir}" for row in rows)
    with pytest.raises(ReasonappError, match="nothing to resume"):
        launcher.resume_stage2(job_dir)


def test_stop_keeps_the_rows_written_and_resume_finishes_the_rest_without_duplicates(tiny_model_dir, tickets, tmp_path):
    store = tmp_path / "store.sqlite"
    job_dir = launcher.start_stage2(settings_for(tiny_model_dir, tickets, store, batch_size=1))
    launcher.stop_stage2(job_dir)  # while it loads (or has written some rows): the rows written so far stay
    state = wait_until_ended(job_dir)
    assert state["state"] == "stopped", state
    written = {row.row_index: row.reasoning for row in rows_of(store, tickets) if row.reasoning is not None}
    assert len(written) < 8
    with pytest.raises(ReasonappError, match="not running"):
        launcher.stop_stage2(job_dir)
    launcher.resume_stage2(job_dir)
    state = wait_until_ended(job_dir)
    assert state["state"] == "finished" and (state["done"], state["total"]) == (8, 8), state
    rows = rows_of(store, tickets)
    assert len(rows) == 8 and len({row.row_index for row in rows}) == 8 and all(row.reasoning for row in rows)
    assert all(row.reasoning == written[row.row_index] for row in rows if row.row_index in written)  # kept, not redone


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"split": "validation"}, "no split 'validation'"),
        ({"source": "runs/no-such-rgen"}, "not a run directory"),
        ({"source": ""}, "choose the R-Gen source"),
        ({"prompt_variant": "shout"}, "unknown Stage 2 prompt"),
        ({"candidates": 0}, "at least 1"),
    ],
)
def test_a_bad_setting_is_refused_before_anything_launches(tiny_model_dir, tickets, tmp_path, changes, said):
    with pytest.raises(ReasonappError, match=said):
        launcher.start_stage2(settings_for(tiny_model_dir, tickets, tmp_path / "store.sqlite", **changes))
    assert launcher.stage2_jobs() == [] and not Path(tmp_path / "store.sqlite").exists()


def test_the_review_tab_panel_starts_polls_and_reattaches_and_the_queue_shows_the_rows(tiny_model_dir, tickets, tmp_path):
    from reasonapp.ui.review import ReviewHandlers

    store = tmp_path / "store.sqlite"
    handlers = ReviewHandlers(str(store), LABELS, "support tickets", dataset=tickets)
    refused = handlers.stage2_start(f"base:{tiny_model_dir}", "default", "", "validation", 8, "greedy", 4, 2)
    assert "Not started" in refused[1] and "no split 'validation'" in refused[1] and launcher.stage2_jobs() == []
    assert "Not started" in handlers.stage2_start("runs/missing", "default", "", "train", 8, "greedy", 4, 2)[1]

    job_update, line = handlers.stage2_start(f"base:{tiny_model_dir}", "cue", "", "train", 8, "best-of-K sampling", 2, 2)
    job = job_update["value"]
    assert job_update["choices"] == [job] and job.startswith(str(launcher.jobs_root())) and "stage2-" in line
    settings = launcher.stage2_settings(job)
    assert (settings.dataset, settings.store, settings.candidates, settings.prompt_variant) == (tickets, str(store), 2, "cue")

    reloaded = ReviewHandlers(str(store), LABELS, "support tickets", dataset=tickets)  # a page reload finds the job again
    assert reloaded.stage2_reattach()[0]["value"] == job
    for _ in range(1200):  # bounded: what the page's timer does
        line = reloaded.stage2_state(job)
        if ": running" not in line:
            break
        time.sleep(0.5)
    assert "finished · 8/8 rows" in line, line
    assert "nothing to resume" in reloaded.stage2_resume(job) and "not running" in reloaded.stage2_stop(job)
    assert "Not a Stage 2 job" in reloaded.stage2_state(str(tmp_path))
    queue = reloaded.load_queue("pending", "all", "", 0, 0, "any", "in order", tickets)
    assert queue[-1] == "8 rows match" and queue[1].startswith("ticket ")


def test_an_endpoint_teacher_is_a_stage2_job_source_and_its_key_stays_a_variable_name(tickets, tmp_path, monkeypatch):
    from tests.endpoint_standin import EndpointStandIn

    monkeypatch.setenv("TEACHER_KEY", "sk-never-in-any-file-0123456789")
    store = tmp_path / "store.sqlite"
    with EndpointStandIn() as endpoint:
        source = f"endpoint:{endpoint.base_url}#served-teacher"
        job = launcher.Stage2Settings(source=source, dataset=tickets, store=str(store), limit=6, api_key_env="TEACHER_KEY", concurrency=2)
        job_dir = launcher.start_stage2(job)
        state = wait_until_ended(job_dir)
    assert state["state"] == "finished", state
    rows = rows_of(store, tickets)
    assert len(rows) == 6 and all(r.reasoning and r.generator["rgen_run"] == source for r in rows)
    assert all(request["authorization"] == "Bearer sk-never-in-any-file-0123456789" for request in endpoint.requests)
    assert not any("sk-never" in path.read_text(errors="ignore") for path in Path(job_dir).iterdir() if path.is_file())
    with pytest.raises(ConfigError, match="teacher-url must be an http"):
        launcher.start_stage2(launcher.Stage2Settings(source="endpoint:ftp://x#m", dataset=tickets, store=str(store)))


@pytest.mark.parametrize("variable", ["HF_TOKEN", "OAUTH_CLIENT_SECRET", "REASONAPP_SYNC_TOKEN"])
def test_the_app_sends_a_teacher_only_keys_meant_for_teachers(tickets, tmp_path, variable):
    job = launcher.Stage2Settings(source="endpoint:https://teacher.example/v1#m", dataset=tickets, store=str(tmp_path / "s.sqlite"), api_key_env=variable)
    with pytest.raises(ConfigError, match="may not be sent to a teacher"):
        launcher.start_stage2(job)
    assert not launcher.jobs_root().exists() or not list(launcher.jobs_root().iterdir())


def test_on_the_demo_a_first_stage2_job_writes_the_users_own_store_and_both_stay_reachable(tiny_model_dir, tickets):
    """A fresh workspace shows the demo store. Rows the user generates went into it, unlogged for sync and hidden once
    the workspace had work of its own (the demo store is then not opened). They go to the workspace's own store, which
    the Store list offers beside the demo, and after a restart the demo store is offered beside it."""
    from reasonapp.store import default_store_path
    from reasonapp.ui.review import ReviewHandlers
    from training import demo

    demo_store = str(demo.install_demo())
    own = str(default_store_path())
    handlers = ReviewHandlers(demo_store, LABELS, "support tickets", dataset=tickets)
    assert [value for _, value in handlers.store_choices()] == [demo_store]
    assert handlers.sync_status(None).startswith("Decisions on the demo store are kept in its file only, not in the decision log")

    job = handlers.stage2_start(f"base:{tiny_model_dir}", "default", "", "train", 8, "greedy", 4, 2)[0]["value"]
    assert launcher.stage2_settings(job).store == own
    assert wait_until_ended(job)["state"] == "finished"
    assert handlers.stage2_state(job).endswith("into the workspace store (reasonings.sqlite): pick it in Store to review its rows")
    assert handlers.store_choices()[:2] == [("demo store (demo/reasonings.sqlite)", demo_store), ("workspace store (reasonings.sqlite)", own)]
    on_demo = handlers.load_queue("pending", "all", "", 0, 0, "any", "in order", tickets)
    assert on_demo[-1] == f"No rows of {tickets} in this store: they are in the workspace store (reasonings.sqlite). Pick it in Store."
    assert handlers.load_queue("pending", "all", "", 0, 0, "any", "in order", tickets, None, own)[-1] == "8 rows match"

    restarted = ReviewHandlers(None, LABELS, "support tickets", dataset=tickets)  # the workspace has work of its own now
    assert [value for _, value in restarted.store_choices()][:2] == [own, demo_store]
    assert restarted.load_queue("pending", "all", "", 0, 0, "any", "in order", "dair-ai/emotion", None, demo_store)[-1].endswith("rows match")


def test_a_finished_job_process_is_reaped_at_once_not_left_a_zombie(tmp_path):
    """A finished training child stayed a zombie (`<defunct>` in ps) until the page next polled or launched."""
    import sys

    pid = launcher._spawn([sys.executable, "-c", "pass"], tmp_path / "log.txt", tmp_path)
    for _ in range(100):  # bounded: 10 s
        status = Path(f"/proc/{pid}/status")
        if not status.exists():
            break
        assert "zombie" not in status.read_text() or _ < 99, "still a zombie after 10 s"
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()
