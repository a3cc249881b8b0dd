"""The paper end to end, from one YAML file, each stage cached by its settings.

    python -m training experiment --config configs/cpu-small.yaml

Stages: R-Gen on the reasoning data -> Stage 2 reasonings for N training rows -> Q->A and Q->RA on
those same N rows -> evaluation of both (and TF-IDF) on the test split. Each stage lives in
`<workspace>/experiments/<name>/<stage>-<hash>/`, where the hash covers the stage's own settings and
those of the stages it depends on. A re-run skips finished stages; a run killed midway resumes the
unfinished stage from its last checkpoint. Changing a setting re-runs that stage and what follows.

With `review: true` (or `experiment --review`) the run pauses after Stage 2 (state awaiting-review): people review
the experiment's store in the Review tab, and `experiment --continue` exports the accepted and edited rows and trains
Q->RA on them. The export's content is part of the Q->RA hash, so a changed review trains Q->RA again.

As a job (`training.launcher.start_pipeline`) the run keeps a state file (`--state-file`): each stage's state,
start and end times, wall time and directory, which the app's Pipeline tab polls; a STOP file beside it ends the
run between Stage 2 batches or before the next stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

from reasonapp import settings
from reasonapp.errors import ConfigError, RunStopped
from training import rundir

logger = logging.getLogger(__name__)

STAGES = ("rgen", "augment", "qa", "qra", "evaluate")
STAGE_LABELS = {"rgen": "R-Gen (Stage 1)", "augment": "Stage 2 (reasonings)", "qa": "Q->A", "qra": "Q->RA", "evaluate": "Evaluation"}
DEFAULTS = {
    "name": "experiment",
    "review": False,  # pause after Stage 2 until the store is reviewed and the run is continued
    "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "dataset": "dair-ai/emotion",
    "reasoning_dataset": "syvai/reasoning-gen",
    "seed": 0,
    "n_train": 1000,
    "reasoning_format": "qra",
    "rgen": {},
    "augment": {"batch_size": 16, "max_new_tokens": 64},  # 16, not the CLI's 32: the Stage 2 cache key hashes this section
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
    return merge_config(values, defaults, kind, path, sections)


def merge_config(values, defaults: dict, kind: str, path: str | Path, sections: tuple[str, ...] = ()) -> dict:
    """`values` (a config file's mapping) over `defaults`, as `read_yaml_config` merges them; `path` names it in errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{kind} config {path} must be a mapping of settings, got {type(values).__name__}")
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
    return check_experiment_config(read_yaml_config(path, DEFAULTS, "experiment", STAGES))


def experiment_config_from_mapping(values: dict, where: str = "the form") -> dict:
    """The settings a config file would hold (e.g. the Pipeline tab's YAML), merged and checked as `load_experiment_config` does."""
    return check_experiment_config(merge_config(values, DEFAULTS, "experiment", where, STAGES))


def check_experiment_config(config: dict) -> dict:
    """Refuse settings any stage would refuse, before the first stage runs."""
    from training.sft import check_training_overrides

    if not isinstance(config["review"], bool):
        raise ConfigError(f"review must be true or false; got {config['review']!r}")
    if not isinstance(config["name"], str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", config["name"]):
        raise ConfigError(f"name must be a plain name (letters, digits, '.', '_' or '-'); got {config['name']!r}")
    if config["reasoning_format"] not in ("qra", "qar", "multitask"):
        raise ConfigError("reasoning_format must be qra, qar or multitask")
    if not is_whole_number(config["n_train"], 1):
        raise ConfigError(f"n_train must be a whole number of at least 1; got {config['n_train']!r}")
    for stage in ("rgen", "qa", "qra"):
        check_training_overrides(config[stage] or {}, f"experiment section {stage!r}")
    check_augment_section(config["augment"], "experiment section 'augment'")
    return config


class AwaitingReview(RunStopped):
    """Stage 2 is done and the review pause is on: the run ends here until it is continued (`--continue`)."""


class StageLog:
    """The state file a pipeline job's page polls (`--state-file`): the run's state and each stage's state, times and directory.

    Stage states: pending, running, finished (cached: done by an earlier run), stopped, failed, awaiting-review.
    A STOP file beside the state file asks the run to end between Stage 2 batches or before its next stage.
    Without a path nothing is written and nothing asks to stop.
    """

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        earlier = (rundir.read_json(self.path, {}) if self.path else {}) or {}
        stages = earlier.get("stages") or {}
        self.record = {
            **earlier,
            "state": "running",
            "error": None,
            "pid": os.getpid(),
            "started": time.time(),
            "stages": {stage: {"label": STAGE_LABELS[stage], **(stages.get(stage) or {})} for stage in STAGES},
        }
        for entry in self.record["stages"].values():  # a resumed run's finished stages stay finished (cached) on the page
            if entry.get("state") != "finished":
                entry["state"] = "pending"
        self.current: str | None = None
        self.write()

    def write(self) -> None:
        if self.path:
            rundir.write_json(self.path, self.record)

    @property
    def stop_file(self) -> Path | None:
        """The job's STOP file: a training stage also watches it, so a Stop sent while the stage loads is not lost."""
        return self.path.parent / "STOP" if self.path else None

    def stop_requested(self) -> bool:
        return self.stop_file is not None and self.stop_file.is_file()

    def check_stop(self) -> None:
        if self.stop_requested():
            raise RunStopped("stopped on request before its next stage; run the same command again to resume")

    def note(self, **fields) -> None:
        self.record.update(fields)
        self.write()

    def begin(self, stage: str, directory: Path, **fields) -> None:
        self.check_stop()
        self.current = stage
        self.record["stages"][stage].update(state="running", dir=str(directory), started=time.time(), finished=None, cached=False, **fields)
        self.write()

    def finish(self, stage: str, directory: Path, wall_s: float | None, cached: bool = False, **fields) -> None:
        entry = self.record["stages"][stage]
        if cached and entry.get("finished") is None:
            entry["started"] = None
        entry.update(state="finished", dir=str(directory), wall_s=wall_s, cached=cached, **fields)
        if not cached or entry.get("finished") is None:
            entry["finished"] = time.time()
        self.current = None
        self.write()

    def end(self, state: str, error: str | None = None, stage_state: str | None = None, **fields) -> None:
        """The run's end: its state and, for the stage it was in, `stage_state` (stopped, failed, awaiting-review)."""
        if self.current and stage_state:
            self.record["stages"][self.current].update(state=stage_state, finished=time.time())
        self.record.update(state=state, error=error, ended=time.time(), **fields)
        self.write()


def _stage_hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _finished(run_dir: Path) -> bool:
    return rundir.read_json(run_dir / rundir.STATUS, {}).get("state") == "finished"


def _train_stage(task: str, run_dir: Path, base: dict, overrides: dict, stop_file: Path | None = None) -> Path:
    """Train (or resume) one stage. A stop request ends the whole pipeline there: the next stage would
    otherwise start on a run that has no adapter yet."""
    from training.sft import config_from_mapping, train

    resume = (run_dir / rundir.CONFIG).is_file()  # killed midway: continue from its last checkpoint
    train(config_from_mapping({**base, **overrides, "task": task, "output_dir": str(run_dir)}), resume=resume, stop_file=stop_file)
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


def run_experiment(
    config: dict, root: Path | None = None, state_file: str | Path | None = None, proceed: bool = False
) -> dict:
    """Run (or resume) every stage; returns the evaluation report, with stage wall times.

    `state_file` keeps each stage's state for a page to poll (see `StageLog`). With `config["review"]` the run stops
    after Stage 2 (`AwaitingReview`) unless `proceed` (`--continue`): then Q->RA trains on the reviewed rows.
    """
    log = StageLog(state_file)
    try:
        report = _run_stages(config, root, log, proceed)
    except AwaitingReview as paused:
        log.end("awaiting-review", str(paused), "awaiting-review")
        raise
    except RunStopped as stopped:
        log.end("stopped", str(stopped), "stopped")
        raise
    except BaseException as error:
        log.end("failed", f"{type(error).__name__}: {error}", "failed")
        raise
    log.end("finished", report=report["stages"]["evaluate"])
    return report


def reviewed_rows(store_path: str | Path) -> list:
    """The rows an export of the store takes (accepted and edited, reasoning not blank): what Q->RA learns after a review."""
    from reasonapp.store import ReasoningStore

    store = ReasoningStore(store_path, journal=False)
    try:
        rows = [row for dataset in store.datasets() for row in store.rows_for_export(False, dataset)]
    finally:
        store.close()
    return [row for row in rows if (row.reasoning or "").strip()]


def _run_stages(config: dict, root: Path | None, log: StageLog, proceed: bool) -> dict:
    from training.augment import augment_to_store, export_store
    from training.evaluate import EvalConfig, evaluate
    from training.generation import Decoding
    from training.launcher import Stage2Progress

    root = Path(root) if root else settings.workspace_dir() / "experiments" / config["name"]
    root.mkdir(parents=True, exist_ok=True)
    log.note(root=str(root), review=config["review"])
    timings = rundir.read_json(root / "timings.json", {})
    common = {"base_model": config["base_model"], "seed": config["seed"]}

    def timed(stage: str, function):
        """Run a stage that is not cached, and keep its wall time (a resumed stage adds to it)."""
        started = time.time()
        try:
            return function()
        finally:  # a stopped stage's time counts too: its resumption adds to it
            timings[stage] = round(timings.get(stage, 0.0) + time.time() - started, 1)
            rundir.write_json(root / "timings.json", timings)

    def run_stage(stage: str, directory: Path, done, function, key: str | None = None, **fields) -> None:
        """A stage: skipped when `done()` (cached), else run and timed; its state and times go to the log."""
        if done():
            log.finish(stage, directory, timings.get(key or stage), cached=True, **fields)
            return
        log.begin(stage, directory, **fields)
        timed(key or stage, function)
        log.finish(stage, directory, timings.get(key or stage), **fields)

    rgen_key = _stage_hash(common, config["reasoning_dataset"], config["rgen"])
    rgen_dir = root / f"rgen-{rgen_key}"
    rgen_base = {**common, "dataset": config["reasoning_dataset"]}
    run_stage("rgen", rgen_dir, lambda: _finished(rgen_dir), lambda: _train_stage("rgen", rgen_dir, rgen_base, config["rgen"], log.stop_file))

    augment = config["augment"]
    augment_key = _stage_hash(rgen_key, config["dataset"], config["n_train"], augment)
    augmented_dir = root / f"augment-{augment_key}"
    store = root / f"store-{augment_key}" / "store.sqlite"  # beside the export: an export never writes over a store
    generated = store.parent / "generated.json"  # every sampled row has a reasoning
    progress_file = store.parent / "progress.json"

    def stage2():
        # Into a store of its own (resumable row by row). Without the review pause it is exported blind, as the
        # paper trains: every generated reasoning counts, reviewed or not.
        _move_legacy_store(augmented_dir / "store.sqlite", store)
        progress = Stage2Progress(progress_file)

        def planned(rows: int, skipped: int) -> None:
            progress.plan(rows, skipped)
            log.check_stop()

        def batch_done(done: int, total: int) -> None:
            progress.update(done)
            if log.stop_requested():
                raise RunStopped("Stage 2 stopped between batches; the rows written stay, run the same command again to resume")

        decoding = Decoding(max_new_tokens=augment["max_new_tokens"])
        counts = augment_to_store(
            rgen_dir, config["dataset"], store, "train", config["n_train"], config["seed"], decoding, augment["batch_size"], batch_done,
            planned=planned,
        )
        progress.finish()
        rundir.write_json(generated, counts)
        if not config["review"]:
            export_store(store, augmented_dir, include_pending=True)

    def stage2_done() -> bool:
        return (augmented_dir / "train.jsonl").is_file() if not config["review"] else generated.is_file() or (augmented_dir / "train.jsonl").is_file()

    stage2_fields = {"store": str(store), "progress_file": str(progress_file)}
    run_stage("augment", augmented_dir if not config["review"] else store.parent, stage2_done, stage2, **stage2_fields)

    qra_source_key = augment_key
    if config["review"]:
        log.note(review_store=str(store))
        log.current = "augment"  # a pause (or a failed export) is Stage 2's state on the page
        if not proceed:
            raise AwaitingReview(
                f"Stage 2 is done; review its reasonings in {store} (in the app: choose this store in the Review tab's Store "
                "list), then continue (`experiment --continue`, or Continue in the Pipeline tab)"
            )
        rows = reviewed_rows(store)
        if not rows:
            raise AwaitingReview(f"nothing is reviewed yet in {store}: accept or edit rows there, then continue")
        # the reviewed rows are part of the hash: another review is another export, and Q->RA trains again
        qra_source_key = _stage_hash(augment_key, [(row.dataset, row.row_index, row.status, row.reasoning) for row in rows])
        augmented_dir = root / f"reviewed-{qra_source_key}"
        if not (augmented_dir / "train.jsonl").is_file():
            export_store(store, augmented_dir, include_pending=False, overwrite=augmented_dir.is_dir())
        log.note(reviewed_export=str(augmented_dir), reviewed_rows=len(rows))

    qa_key = _stage_hash(common, config["dataset"], config["n_train"], config["qa"])
    qa_dir = root / f"qa-{qa_key}"
    qa_base = {**common, "dataset": config["dataset"], "limit": config["n_train"]}
    run_stage("qa", qa_dir, lambda: _finished(qa_dir), lambda: _train_stage("qa", qa_dir, qa_base, config["qa"], log.stop_file))

    fmt = config["reasoning_format"]
    qra_key = _stage_hash(qra_source_key, common, fmt, config["qra"])
    qra_dir = root / f"{fmt}-{qra_key}"
    qra_base = {**common, "dataset": str(augmented_dir)}
    run_stage("qra", qra_dir, lambda: _finished(qra_dir), lambda: _train_stage(fmt, qra_dir, qra_base, config["qra"], log.stop_file), key=fmt)

    evaluation = config["evaluate"]
    eval_key = _stage_hash(qa_key, qra_key, evaluation)
    eval_dir = root / f"evaluate-{eval_key}"
    eval_config = EvalConfig(
        qa_run=str(qa_dir), qra_run=str(qra_dir), dataset=config["dataset"], output_dir=str(eval_dir), seed=config["seed"], overwrite=True,
        **evaluation,
    )  # its own directory, keyed by what it evaluates: a stage cut short is done again
    run_stage("evaluate", eval_dir, lambda: (eval_dir / "report.md").is_file(), lambda: evaluate(eval_config))
    report = rundir.read_json(eval_dir / "metrics.json")
    report["stage_wall_s"] = timings
    report["stages"] = {"rgen": str(rgen_dir), "augment": str(augmented_dir), "qa": str(qa_dir), fmt: str(qra_dir), "evaluate": str(eval_dir)}
    if config["review"]:
        report["review_store"] = str(store)
    rundir.write_json(root / "summary.json", report)
    return report
