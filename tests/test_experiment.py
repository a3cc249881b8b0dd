"""The whole method from one config: every stage runs, and a second run reuses them all."""

import json
from pathlib import Path

import pytest

from reasonapp.errors import ConfigError
from reasonapp.settings import PROJECT_ROOT
from training.experiment import load_experiment_config, run_experiment


def test_config_rejects_unknown_keys(tmp_path):
    (tmp_path / "x.yaml").write_text("name: x\nn_rows: 5\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['n_rows'\]"):
        load_experiment_config(tmp_path / "x.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("qra:\n  learnig_rate: 1.0e-4\n", r"experiment section 'qra': unknown training settings \['learnig_rate'\]"),
        ("rgen:\n  batch_size: 0\n", r"experiment section 'rgen': batch_size must be positive"),
        ("qa:\n  epochs: two\n", r"experiment section 'qa'"),
        ("n_train: 0\n", r"n_train must be a whole number of at least 1; got 0"),
        ("qa: 5\n", r"section 'qa' must be a mapping of settings, got 5"),
        ("augment:\n  batch_size: 0\n", r"experiment section 'augment': batch_size must be a whole number of at least 1, got 0"),
        ("augment:\n  max_tokens: 32\n", r"experiment section 'augment': unknown Stage 2 settings \['max_tokens'\]"),
    ],
)
def test_a_mistake_in_a_later_stage_is_named_when_the_config_is_read(tmp_path, text, message):
    (tmp_path / "x.yaml").write_text("name: x\n" + text)
    with pytest.raises(ConfigError, match=message):
        load_experiment_config(tmp_path / "x.yaml")


def _tiny_experiment(tiny_model_dir: str, tmp_path) -> dict:
    """configs/tiny-smoke.yaml on the tiny random model, loaded as `experiment` loads it."""
    import yaml

    config = yaml.safe_load(open("configs/tiny-smoke.yaml"))
    config["base_model"] = tiny_model_dir
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    return load_experiment_config(tmp_path / "tiny.yaml")


def test_tiny_experiment_runs_every_stage_then_reuses_them(tiny_model_dir, tmp_path, shared_data):
    loaded = _tiny_experiment(tiny_model_dir, tmp_path)
    report = run_experiment(loaded, tmp_path / "exp")
    assert set(report["stage_wall_s"]) == {"rgen", "augment", "qa", "qra", "evaluate"}
    assert {"qa_scored", "qra", "tfidf"} <= set(report["systems"])
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "exp").rglob("*") if p.is_file() and p.name != "summary.json"}

    again = run_experiment(loaded, tmp_path / "exp")
    assert again["systems"] == report["systems"]
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}  # nothing retrained or regenerated

    loaded["qa"] = {**loaded["qa"], "learning_rate": 1e-3}  # a changed stage re-runs, with what depends on it
    changed = run_experiment(loaded, tmp_path / "exp")
    assert changed["stages"]["qa"] != report["stages"]["qa"] and changed["stages"]["rgen"] == report["stages"]["rgen"]


def test_a_stopped_stage_ends_the_experiment_and_the_same_command_resumes_it(tiny_model_dir, tmp_path, shared_data, monkeypatch):
    import training.sft
    from reasonapp.errors import RunStopped
    from tests.test_training import train_that_stops
    from training import rundir

    loaded = _tiny_experiment(tiny_model_dir, tmp_path)
    root = tmp_path / "exp"

    real_train = training.sft.train
    monkeypatch.setattr(training.sft, "train", train_that_stops("qa"))
    with pytest.raises(RunStopped, match="qa training stopped .* run the same command again"):
        run_experiment(loaded, root)
    assert [p.name.split("-")[0] for p in sorted(root.iterdir()) if p.is_dir()] == ["augment", "qa", "rgen", "store"]  # Q->RA never started

    monkeypatch.setattr(training.sft, "train", real_train)
    report = run_experiment(loaded, root)
    assert rundir.read_json(Path(report["stages"]["qa"]) / rundir.STATUS)["state"] == "finished"
    assert {"qa_scored", "qra"} <= set(report["systems"])


def test_a_pipeline_stop_sent_while_a_training_stage_loads_stops_it_at_its_first_checkpoint(tiny_model_dir, tmp_path, shared_data, monkeypatch):
    """The Pipeline tab's Stop writes the job's STOP (and the stage's, once its folder exists); a stage that is still
    loading must see the job's file, or it trains to the end before the pipeline stops."""
    import training.sft
    from reasonapp.errors import RunStopped
    from training import rundir

    loaded = _tiny_experiment(tiny_model_dir, tmp_path)
    job = tmp_path / "job"
    job.mkdir()
    real_train = training.sft.train

    def stop_arrives_while_loading(config, resume=False, callbacks=(), stop_file=None):
        (job / "STOP").write_text("")  # what launcher.stop_pipeline writes, before the run's folder exists
        return real_train(config, resume, callbacks, stop_file=stop_file)

    monkeypatch.setattr(training.sft, "train", stop_arrives_while_loading)
    with pytest.raises(RunStopped, match="rgen training stopped at a checkpoint"):
        run_experiment(loaded, tmp_path / "exp", state_file=job / "stages.json")
    rgen = next((tmp_path / "exp").glob("rgen-*"))
    status = rundir.read_json(rgen / rundir.STATUS)
    assert status["state"] == "stopped" and status["step"] == 1
    assert json.loads((job / "stages.json").read_text())["stages"]["rgen"]["state"] == "stopped"


@pytest.mark.parametrize("path", sorted(str(p) for p in (PROJECT_ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_reads_cleanly(path):
    from training.comparison import load_comparison_config

    loaded = load_comparison_config(path) if "compare" in Path(path).name else load_experiment_config(path)
    assert loaded["base_model"]


def test_with_the_review_pause_qra_trains_on_the_reviewed_rows_and_a_changed_review_trains_it_again(tiny_model_dir, tmp_path, shared_data):
    from reasonapp.store import ReasoningStore
    from training.experiment import AwaitingReview

    loaded = {**_tiny_experiment(tiny_model_dir, tmp_path), "review": True, "n_train": 8}
    root = tmp_path / "exp"
    with pytest.raises(AwaitingReview, match="review its reasonings in .*store.sqlite"):
        run_experiment(loaded, root, tmp_path / "stages.json")
    assert not any(p.name.startswith(("qa-", "qra-", "evaluate-")) for p in root.iterdir())  # nothing after Stage 2 yet
    with pytest.raises(AwaitingReview, match="nothing is reviewed yet"):
        run_experiment(loaded, root, proceed=True)

    store_path = next(root.glob("store-*/store.sqlite"))
    store = ReasoningStore(store_path)
    rows = [store.get(row_id) for row_id in store.query_ids()]
    for row in rows[:5]:
        store.review(row.id, "accepted", row.version, "ana")
    store.review(rows[5].id, "rejected", rows[5].version, "ana")
    report = run_experiment(loaded, root, proceed=True)
    exported = [json.loads(line) for line in (Path(report["stages"]["augment"]) / "train.jsonl").read_text().splitlines()]
    assert sorted(row["source_row"] for row in exported) == sorted(row.row_index for row in rows[:5])

    row = store.get(rows[0].id)
    store.review(row.id, "rejected", row.version, "ana")  # the review changed: Q->RA and the evaluation run again, Q->A does not
    store.close()
    again = run_experiment(loaded, root, proceed=True)
    assert again["stages"]["qra"] != report["stages"]["qra"] and again["stages"]["evaluate"] != report["stages"]["evaluate"]
    assert again["stages"]["qa"] == report["stages"]["qa"]
    assert len((Path(again["stages"]["augment"]) / "train.jsonl").read_text().splitlines()) == 4


def test_experiment_review_flag_pauses_after_stage2_and_says_how_to_go_on(tiny_model_dir, tmp_path, shared_data, capsys):
    import yaml

    from training import rundir
    from training.cli import main

    config = {**yaml.safe_load(open("configs/tiny-smoke.yaml")), "base_model": tiny_model_dir, "n_train": 6}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    command = ["experiment", "--config", str(tmp_path / "tiny.yaml"), "--root", str(tmp_path / "exp"), "--state-file", str(tmp_path / "stages.json")]
    assert main([*command, "--review"]) == 3
    said = capsys.readouterr().err
    assert "review its reasonings in" in said and "experiment --continue" in said
    states = rundir.read_json(tmp_path / "stages.json")
    assert states["state"] == "awaiting-review" and states["review_store"].endswith("store.sqlite")
    assert [states["stages"][stage]["state"] for stage in ("rgen", "augment", "qa", "qra", "evaluate")] == [
        "finished", "awaiting-review", "pending", "pending", "pending"
    ]


def test_a_pipeline_stop_is_accepted_while_the_stage_has_no_run_folder_yet(tmp_path):
    import os

    from training import launcher, rundir

    job = tmp_path / "pipeline-1"
    job.mkdir()
    rundir.write_json(job / "process.json", {"pid": os.getpid()})  # a live process: the job is running
    not_yet = tmp_path / "exp" / "qa-123"
    rundir.write_json(job / launcher.PIPELINE_STAGES, {"state": "running", "stages": {"qa": {"state": "running", "dir": str(not_yet)}}})
    launcher.stop_pipeline(job)
    assert (job / launcher.PIPELINE_STOP).is_file() and not not_yet.exists()
