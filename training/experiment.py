"""The paper end to end, from one YAML file, each stage cached by its settings.

    python -m training experiment --config configs/cpu-small.yaml

Stages: R-Gen on the reasoning data -> Stage 2 reasonings for N training rows -> Q->A and Q->RA on
those same N rows -> evaluation of both (and TF-IDF) on the test split. Each stage lives in
`<workspace>/experiments/<name>/<stage>-<hash>/`, where the hash covers the stage's own settings and
those of the stages it depends on. A re-run skips finished stages; a run killed midway resumes the
unfinished stage from its last checkpoint. Changing a setting re-runs that stage and what follows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from reasonapp import settings
from reasonapp.errors import ConfigError, RunStopped
from training import rundir

logger = logging.getLogger(__name__)

STAGES = ("rgen", "augment", "qa", "qra", "evaluate")
DEFAULTS = {
    "name": "experiment",
    "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "dataset": "dair-ai/emotion",
    "reasoning_dataset": "syvai/reasoning-gen",
    "seed": 0,
    "n_train": 1000,
    "reasoning_format": "qra",
    "rgen": {},
    "augment": {"batch_size": 16, "max_new_tokens": 64},
    "qa": {},
    "qra": {},
    "evaluate": {"split": "test", "limit": None, "batch_size": 16},
}


def read_yaml_config(path: str | Path, defaults: dict, kind: str, sections: tuple[str, ...] = ()) -> dict:
    """A YAML file over `defaults`; `sections` (mappings) are merged key by key. Unknown keys are errors."""
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"could not read {kind} config {path}: {error}") from error
    unknown = sorted(set(values) - set(defaults))
    if unknown:
        raise ConfigError(f"{kind} config {path} has unknown keys {unknown}; known: {sorted(defaults)}")
    config = {**defaults, **values}
    for section in sections:
        given = values.get(section) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{kind} config {path}: section {section!r} must be a mapping of settings, got {given!r}")
        config[section] = {**defaults[section], **given}
    return config


def is_whole_number(value, smallest: int) -> bool:
    """An int (YAML gives bools and floats too) of at least `smallest`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= smallest


def check_augment_section(section: dict, where: str) -> None:
    """A config file's Stage 2 settings (batch_size, max_new_tokens), checked when the file is read."""
    unknown = sorted(set(section) - {"batch_size", "max_new_tokens"})
    if unknown:
        raise ConfigError(f"{where}: unknown Stage 2 settings {unknown}; known: ['batch_size', 'max_new_tokens']")
    for name in ("batch_size", "max_new_tokens"):
        if not is_whole_number(section.get(name), 1):
            raise ConfigError(f"{where}: {name} must be a whole number of at least 1, got {section.get(name)!r}")


def load_experiment_config(path: str | Path) -> dict:
    from training.sft import check_training_overrides

    config = read_yaml_config(path, DEFAULTS, "experiment", STAGES)
    if config["reasoning_format"] not in ("qra", "qar", "multitask"):
        raise ConfigError("reasoning_format must be qra, qar or multitask")
    if not is_whole_number(config["n_train"], 1):
        raise ConfigError(f"n_train must be a whole number of at least 1; got {config['n_train']!r}")
    for stage in ("rgen", "qa", "qra"):
        check_training_overrides(config[stage] or {}, f"experiment section {stage!r}")
    check_augment_section(config["augment"], "experiment section 'augment'")
    return config


def _stage_hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _finished(run_dir: Path) -> bool:
    return rundir.read_json(run_dir / rundir.STATUS, {}).get("state") == "finished"


def _train_stage(task: str, run_dir: Path, base: dict, overrides: dict) -> Path:
    """Train (or resume) one stage. A stop request ends the whole pipeline there: the next stage would
    otherwise start on a run that has no adapter yet."""
    from training.sft import config_from_mapping, train

    resume = (run_dir / rundir.CONFIG).is_file()  # killed midway: continue from its last checkpoint
    train(config_from_mapping({**base, **overrides, "task": task, "output_dir": str(run_dir)}), resume=resume)
    if not _finished(run_dir):
        raise RunStopped(f"{task} training stopped at a checkpoint in {run_dir}; run the same command again to resume")
    return run_dir


def _move_legacy_store(old: Path, new: Path) -> None:
    """Experiments started before stores moved out of the export directory keep their Stage 2 rows."""
    if old.is_file() and not new.exists():
        new.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{old}{suffix}").exists():
                os.replace(f"{old}{suffix}", f"{new}{suffix}")


def run_experiment(config: dict, root: Path | None = None) -> dict:
    """Run (or resume) every stage; returns the evaluation report, with stage wall times."""
    from training.augment import augment_to_store, export_store
    from training.evaluate import EvalConfig, evaluate
    from training.generation import Decoding

    root = Path(root) if root else settings.workspace_dir() / "experiments" / config["name"]
    root.mkdir(parents=True, exist_ok=True)
    timings = rundir.read_json(root / "timings.json", {})
    common = {"base_model": config["base_model"], "seed": config["seed"]}

    def timed(stage: str, function):
        """Run a stage that is not cached, and keep its wall time (a resumed stage adds to it)."""
        started = time.time()
        result = function()
        timings[stage] = round(timings.get(stage, 0.0) + time.time() - started, 1)
        rundir.write_json(root / "timings.json", timings)
        return result

    rgen_key = _stage_hash(common, config["reasoning_dataset"], config["rgen"])
    rgen_dir = root / f"rgen-{rgen_key}"
    if not _finished(rgen_dir):
        timed("rgen", lambda: _train_stage("rgen", rgen_dir, {**common, "dataset": config["reasoning_dataset"]}, config["rgen"]))

    augment = config["augment"]
    augment_key = _stage_hash(rgen_key, config["dataset"], config["n_train"], augment)
    augmented_dir = root / f"augment-{augment_key}"
    if not (augmented_dir / "train.jsonl").is_file():
        # Into a store of its own (resumable row by row), then exported blind, as the paper trains:
        # every generated reasoning counts, reviewed or not.
        decoding = Decoding(max_new_tokens=augment["max_new_tokens"])
        store = root / f"store-{augment_key}" / "store.sqlite"  # beside the export: an export never writes over a store
        _move_legacy_store(augmented_dir / "store.sqlite", store)

        def stage2():
            augment_to_store(rgen_dir, config["dataset"], store, "train", config["n_train"], config["seed"], decoding, augment["batch_size"])
            export_store(store, augmented_dir, include_pending=True)

        timed("augment", stage2)

    qa_key = _stage_hash(common, config["dataset"], config["n_train"], config["qa"])
    qa_dir = root / f"qa-{qa_key}"
    if not _finished(qa_dir):
        timed("qa", lambda: _train_stage("qa", qa_dir, {**common, "dataset": config["dataset"], "limit": config["n_train"]}, config["qa"]))

    fmt = config["reasoning_format"]
    qra_key = _stage_hash(augment_key, common, fmt, config["qra"])
    qra_dir = root / f"{fmt}-{qra_key}"
    if not _finished(qra_dir):
        timed(fmt, lambda: _train_stage(fmt, qra_dir, {**common, "dataset": str(augmented_dir)}, config["qra"]))

    evaluation = config["evaluate"]
    eval_key = _stage_hash(qa_key, qra_key, evaluation)
    eval_dir = root / f"evaluate-{eval_key}"
    report = rundir.read_json(eval_dir / "metrics.json")
    if report is None:
        eval_config = EvalConfig(
            qa_run=str(qa_dir), qra_run=str(qra_dir), dataset=config["dataset"], output_dir=str(eval_dir), seed=config["seed"], **evaluation
        )
        report = timed("evaluate", lambda: evaluate(eval_config))
    report["stage_wall_s"] = timings
    report["stages"] = {"rgen": str(rgen_dir), "augment": str(augmented_dir), "qa": str(qa_dir), fmt: str(qra_dir), "evaluate": str(eval_dir)}
    rundir.write_json(root / "summary.json", report)
    return report
