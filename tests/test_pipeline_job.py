"""The whole method as a job: `python -m training experiment` launched from one config (training.launcher.start_pipeline),
its per-stage state polled, stopped and resumed, paused for the review of its Stage 2 rows and continued; and the
Pipeline tab that drives it in the browser, found again after a page reload."""

import json
import time
from pathlib import Path

import pytest
import yaml

from reasonapp.errors import ReasonappError
from reasonapp.store import ReasoningStore
from training import launcher, rundir
from training.experiment import STAGES


def tiny_config(tiny_model_dir: str, **changes) -> dict:
    """configs/tiny-smoke.yaml on the tiny random model, smaller still: seconds a stage."""
    config = yaml.safe_load(open("configs/tiny-smoke.yaml"))
    config.update(base_model=tiny_model_dir, n_train=12)
    config["rgen"] = {**config["rgen"], "limit": 12}
    config["evaluate"] = {**config["evaluate"], "limit": 8}
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    return config


def follow(job_dir, until=lambda state: state["state"] != "running", polls=6000) -> tuple[dict, dict[str, list[str]]]:
    """Poll the job as the page does until `until(state)`; returns the last state and each stage's states in the order seen."""
    seen: dict[str, list[str]] = {stage: [] for stage in STAGES}
    for _ in range(polls):  # bounded: 5 minutes at most
        state = launcher.pipeline_state(job_dir)
        for stage in state["stages"]:
            if not seen[stage["stage"]] or seen[stage["stage"]][-1] != stage["state"]:
                seen[stage["stage"]].append(stage["state"])
        if until(state):
            return state, seen
        time.sleep(0.05)
    raise AssertionError(f"{job_dir} never got there: {state}")


def stage(state: dict, name: str) -> dict:
    return next(entry for entry in state["stages"] if entry["stage"] == name)


def files_of(*folders) -> dict:
    return {path: path.stat().st_mtime_ns for folder in folders for path in Path(folder).rglob("*") if path.is_file()}


def test_a_tiny_pipeline_runs_every_stage_to_the_report(tiny_model_dir, shared_data):
    config = tiny_config(tiny_model_dir)
    job_dir = launcher.start_pipeline(config)
    assert job_dir.parent == launcher.jobs_root() and job_dir.name.startswith("pipeline-")
    assert launcher.pipeline_jobs() == [str(job_dir)]
    assert yaml.safe_load((job_dir / launcher.PIPELINE_CONFIG).read_text()) == config  # the exact settings it runs
    state, seen = follow(job_dir)
    assert state["state"] == "finished", state
    for name in STAGES:  # each stage went pending -> running -> finished (a poll may fall between two changes)
        assert seen[name][-1] == "finished" and seen[name] == [s for s in ("pending", "running", "finished") if s in seen[name]], seen
        entry = stage(state, name)
        assert entry["started"] <= entry["finished"] and entry["wall_s"] > 0 and not entry["cached"], entry
    assert any("running" in states for states in seen.values())
    report = Path(state["report"])
    assert (report / "report.md").is_file() and "McNemar" in (report / "report.md").read_text()
    assert {"qa_scored", "qra", "tfidf"} <= set(rundir.read_json(report / "metrics.json")["systems"])
    with pytest.raises(ReasonappError, match="nothing to resume"):
        launcher.resume_pipeline(job_dir)
    with pytest.raises(ReasonappError, match="not running"):
        launcher.stop_pipeline(job_dir)


def test_a_stopped_pipeline_resumes_without_redoing_its_finished_stages(tiny_model_dir, shared_data):
    job_dir = launcher.start_pipeline(tiny_config(tiny_model_dir, qa={"max_steps": 400, "batch_size": 2}))
    state, _ = follow(job_dir, lambda state: stage(state, "qa")["progress"].startswith("step ") and not stage(state, "qa")["progress"].startswith("step 0/"))
    launcher.stop_pipeline(job_dir)  # Q->A saves a checkpoint at its next step and the job ends there
    state, _ = follow(job_dir)
    assert state["state"] == "stopped", state
    assert [stage(state, name)["state"] for name in STAGES] == ["finished", "finished", "stopped", "pending", "pending"]
    assert stage(state, "qa")["progress"].startswith("step ") and stage(state, "qa")["progress"].endswith("/400")
    done = files_of(stage(state, "rgen")["dir"], stage(state, "augment")["dir"], Path(stage(state, "augment")["store"]).parent)

    launcher.resume_pipeline(job_dir)
    state, seen = follow(job_dir)
    assert state["state"] == "finished", state
    assert files_of(stage(state, "rgen")["dir"], stage(state, "augment")["dir"], Path(stage(state, "augment")["store"]).parent) == done
    assert stage(state, "rgen")["cached"] and stage(state, "augment")["cached"] and seen["rgen"] == ["finished"]
    status = rundir.read_json(Path(stage(state, "qa")["dir"]) / rundir.STATUS)
    assert status["state"] == "finished" and "checkpoint-" in status["resumed_from"]  # from where it stopped
    assert (Path(state["report"]) / "report.md").is_file()


def test_the_review_pause_waits_and_continue_trains_qra_on_the_reviewed_rows_only(tiny_model_dir, shared_data):
    job_dir = launcher.start_pipeline(tiny_config(tiny_model_dir, review=True))
    state, _ = follow(job_dir)
    assert state["state"] == "awaiting-review", state
    assert [stage(state, name)["state"] for name in STAGES] == ["finished", "awaiting-review", "pending", "pending", "pending"]
    assert state["review_store"] and "REASONAPP_STORE=" in state["error"]
    with pytest.raises(ReasonappError, match="nothing is reviewed yet"):
        launcher.continue_pipeline(job_dir)
    with pytest.raises(ReasonappError, match="waits for the review"):
        launcher.resume_pipeline(job_dir)

    store = ReasoningStore(state["review_store"])
    rows = [store.get(row_id) for row_id in store.query_ids()]
    assert len(rows) == 12 and all(row.reasoning is not None for row in rows)
    for row in rows[:4]:
        store.review(row.id, "accepted", row.version, "ana")
    store.review(rows[4].id, "edited", rows[4].version, "ana", reasoning="The words 'feel' and the tone carry it.")
    for row in rows[5:8]:
        store.review(row.id, "rejected", row.version, "ana")
    store.close()
    kept = {row.row_index for row in rows[:5]}

    launcher.continue_pipeline(job_dir)
    state, _ = follow(job_dir)
    assert state["state"] == "finished", state
    qra_config = rundir.read_config(Path(stage(state, "qra")["dir"]))
    exported = [json.loads(line) for line in (Path(qra_config["dataset"]) / "train.jsonl").read_text().splitlines()]
    assert {row["source_row"] for row in exported} == kept and state["reviewed_rows"] == 5
    assert "The words 'feel' and the tone carry it." in {row["reasoning"] for row in exported}
    assert (Path(state["report"]) / "report.md").is_file()


def test_a_bad_config_is_refused_before_anything_launches(tiny_model_dir):
    with pytest.raises(ReasonappError, match="n_train must be a whole number"):
        launcher.start_pipeline(tiny_config(tiny_model_dir, n_train=0))
    with pytest.raises(ReasonappError, match="unknown keys"):
        launcher.start_pipeline({**tiny_config(tiny_model_dir), "n_rows": 3})
    assert launcher.pipeline_jobs() == []
