"""The whole method from one config: every stage runs, and a second run reuses them all."""

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


@pytest.mark.parametrize("path", sorted(str(p) for p in (PROJECT_ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_reads_cleanly(path):
    from training.comparison import load_comparison_config

    loaded = load_comparison_config(path) if "compare" in Path(path).name else load_experiment_config(path)
    assert loaded["base_model"]
