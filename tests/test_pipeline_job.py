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
    job_dir = launcher.start_pipeline(tiny_config(tiny_model_dir, qa={"max_steps": 150, "batch_size": 2}))
    state, _ = follow(job_dir, lambda state: stage(state, "qa")["progress"].startswith("step ") and not stage(state, "qa")["progress"].startswith("step 0/"))
    launcher.stop_pipeline(job_dir)  # Q->A saves a checkpoint at its next step and the job ends there
    state, _ = follow(job_dir)
    assert state["state"] == "stopped", state
    assert [stage(state, name)["state"] for name in STAGES] == ["finished", "finished", "stopped", "pending", "pending"]
    step, total = stage(state, "qa")["progress"].removeprefix("step ").split("/")
    assert 0 < int(step) < int(total) == 150  # stopped midway, at a checkpoint
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
    assert state["review_store"] and "choose this store in the Review tab's Store list" in state["error"]
    with pytest.raises(ReasonappError, match="nothing is reviewed yet"):
        launcher.continue_pipeline(job_dir)
    from reasonapp.ui.pipeline import pipeline_continue, pipeline_view

    line, table, *_ = pipeline_view(str(job_dir))  # the page names the store, how to review it, and Continue
    assert state["review_store"] in line and "choose this store in its Store list" in line and "click Continue" in line
    assert table["state"].tolist() == ["finished", "awaiting-review", "pending", "pending", "pending"]
    assert "nothing is reviewed yet" in pipeline_continue(str(job_dir))
    for elsewhere in ("../../../../etc/passwd", str(job_dir.parent.parent)):  # a typed path acts on nothing, says why
        assert pipeline_continue(elsewhere) == "Not a pipeline job of this workspace: pick one from the list."
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


# -- the Pipeline tab


def test_the_form_edits_only_the_sizes_it_shows_and_the_yaml_is_what_start_runs(tiny_model_dir):
    from reasonapp.ui import pipeline

    assert {"cpu-small", "tiny-smoke", "paper"} <= set(pipeline.config_choices()) and "compare-small" not in pipeline.config_choices()
    shipped = yaml.safe_load(open("configs/cpu-small.yaml"))
    assert pipeline.build_pipeline_config("cpu-small", *pipeline.form_values(shipped)) == shipped  # untouched: the file's meaning

    form = list(pipeline.form_values(yaml.safe_load(open("configs/tiny-smoke.yaml"))))
    assert form[1:] == [24, 24, 1, 1, 3, 16, False]
    form[0:2], form[4:8] = [tiny_model_dir, 12], [2, 5, 8, True]
    shown = yaml.safe_load(pipeline.pipeline_yaml("tiny-smoke", *form))
    assert (shown["base_model"], shown["n_train"], shown["evaluate"]["limit"], shown["review"]) == (tiny_model_dir, 12, 8, True)
    assert shown["qa"]["epochs"] == shown["qra"]["epochs"] == 2 and "epochs" not in shown["rgen"]
    assert shown["rgen"]["max_steps"] == shown["qa"]["max_steps"] == shown["qra"]["max_steps"] == 5
    assert pipeline.pipeline_yaml("tiny-smoke", tiny_model_dir, 0, *form[2:]).startswith("# n_train must be a whole number")
    assert "Not started: n_train must be" in pipeline.pipeline_start("tiny-smoke", tiny_model_dir, 0, *form[2:])[1]
    assert "no experiment config 'nope'" in pipeline.pipeline_start("nope", *form)[1] and launcher.pipeline_jobs() == []


def test_the_pipeline_runs_on_the_pages_dataset_an_imported_three_label_one_to_its_report(tiny_model_dir, shared_data, tmp_path):
    from reasonapp import dataset_import
    from reasonapp.data import DEFAULT_CLASSIFICATION_DATASET as APPS
    from reasonapp.ui import pipeline
    from tests.test_dataset_import import ticket_rows, write_csv

    tickets = str(dataset_import.import_files([write_csv(tmp_path / "up" / "tickets.csv", ticket_rows(20))], "tickets"))
    form = list(pipeline.form_values(tiny_config(tiny_model_dir)))
    # on the dataset the app opened on: the config's own (tiny-smoke names none: the default); switched: the page's
    assert "dataset" not in yaml.safe_load(pipeline.pipeline_yaml("tiny-smoke", *form, APPS, APPS))
    assert yaml.safe_load(pipeline.pipeline_yaml("cpu-small", *form, APPS, APPS))["dataset"] == "dair-ai/emotion"
    assert yaml.safe_load(pipeline.pipeline_yaml("tiny-smoke", *form, tickets, APPS))["dataset"] == tickets
    assert yaml.safe_load(pipeline.pipeline_form("cpu-small", tickets, APPS)[-1])["dataset"] == tickets

    listing, message = pipeline.pipeline_start("tiny-smoke", *form, tickets, APPS)
    assert message.startswith("Started pipeline-"), message
    job_dir = Path(listing["value"])
    assert yaml.safe_load((job_dir / launcher.PIPELINE_CONFIG).read_text())["dataset"] == tickets
    state, _ = follow(job_dir)
    assert state["state"] == "finished", (state, launcher.log_tail(job_dir / launcher.PIPELINE_LOG))
    store = ReasoningStore(stage(state, "augment")["store"])
    assert store.datasets() == [tickets] and {store.get(i).label for i in store.query_ids()} <= {"billing", "bug", "praise"}
    store.close()
    for side in ("qa", "qra"):  # both classifiers learned the tickets' labels, and were evaluated on its test split
        assert rundir.read_config(Path(stage(state, side)["dir"]))["label_names"] == ["billing", "bug", "praise"]
    report = (Path(state["report"]) / "report.md").read_text()
    assert "# Evaluation on tickets (workspace) / test" in report and "McNemar" in report


def test_starting_a_pipeline_is_refused_in_the_demo(tiny_model_dir, monkeypatch):
    from reasonapp.ui import pipeline

    monkeypatch.setenv("REASONAPP_DEMO", "1")
    form = pipeline.form_values(tiny_config(tiny_model_dir))
    assert "off in this demo" in pipeline.pipeline_start("tiny-smoke", *form)[1] and launcher.pipeline_jobs() == []


@pytest.mark.browser
def test_browser_starts_the_pipeline_finds_it_again_after_a_reload_and_shows_the_report(tiny_model_dir, shared_data):
    import gradio as gr

    from reasonapp.ui.access import action_of, enforce_access
    from reasonapp.ui.errors import guard_handlers
    from reasonapp.ui.pipeline import build_pipeline_tab
    from tests.ui_helpers import browser_page, launched, screenshot

    with gr.Blocks() as demo:
        with gr.Tab("Pipeline"):
            build_pipeline_tab(demo, "some/base-model")
    assert all(action_of(fn.fn) for fn in demo.fns.values() if fn.fn is not None)  # every handler is classified
    guard_handlers(demo)
    enforce_access(demo)

    def value(elem_id: str) -> str:
        return page.locator(f"#{elem_id} input, #{elem_id} textarea").first.input_value()

    with launched(demo) as url, browser_page() as page:
        page.goto(url, wait_until="load")
        field = page.locator("#pipeline-config input")
        field.fill("tiny-smoke")
        field.press("Enter")
        page.wait_for_function("() => document.querySelector('#pipeline-yaml')?.innerText.includes('name: tiny-smoke')")
        page.locator("#pipeline-base-model textarea, #pipeline-base-model input").first.fill(tiny_model_dir)
        for elem_id, number in (("pipeline-n-train", "12"), ("pipeline-eval-rows", "8"), ("pipeline-max-steps", "40")):
            page.locator(f"#{elem_id} input").fill(number)
            page.locator(f"#{elem_id} input").press("Tab")
        page.wait_for_function("() => document.querySelector('#pipeline-yaml')?.innerText.includes('max_steps: 40')")
        assert "n_train: 12" in page.locator("#pipeline-yaml").inner_text()
        page.locator("#pipeline-start").click()
        page.wait_for_function("() => document.querySelector('#pipeline-message textarea')?.value.startsWith('Started pipeline-')")
        page.wait_for_function("() => document.querySelector('#pipeline-stages')?.innerText.includes('running')", timeout=120_000)
        screenshot(page, "pipeline-running.png")
        job = launcher.pipeline_jobs()[0]

        page.reload(wait_until="load")  # the job runs on; the page finds it again, with its settings in the form
        page.wait_for_function(f"() => document.querySelector('#pipeline-job input')?.value === {job!r}")
        page.wait_for_function("() => document.querySelector('#pipeline-stages')?.innerText.includes('running')")
        assert launcher.pipeline_state(job)["state"] == "running"
        page.wait_for_function(f"() => document.querySelector('#pipeline-base-model textarea, #pipeline-base-model input')?.value === {tiny_model_dir!r}")
        assert (value("pipeline-config"), value("pipeline-n-train"), value("pipeline-eval-rows"), value("pipeline-max-steps")) == ("tiny-smoke", "12", "8", "40")
        screenshot(page, "pipeline-reattached.png")

        page.wait_for_function("() => document.querySelector('#pipeline-report')?.innerText.includes('McNemar')", timeout=300_000)
        assert "finished" in page.locator("#pipeline-state textarea").input_value()
        stages = page.locator("#pipeline-stages").inner_text()
        assert stages.count("finished") == 5 and "running" not in stages
        screenshot(page, "pipeline-report.png")
