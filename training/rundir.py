"""The run directory: how a training run talks to the CLI, the UI and later runs, through files.

    <run>/config.json         resolved config, label names, prompt version
    <run>/status.json         state (running / finished / stopped / failed), step, total, error, pid
    <run>/metrics.jsonl       one JSON line per log: step, epoch, loss, learning_rate, tokens_per_s, elapsed_s
    <run>/final_metrics.json  train loss, steps, runtime, tokens/s
    <run>/adapter/            LoRA adapter + tokenizer (or <run>/model/ for full fine-tuning)
    <run>/checkpoints/        Trainer checkpoints for --resume
    <run>/STOP                created by the UI's Stop button: the run saves a checkpoint and ends
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from reasonapp import settings
from reasonapp.errors import RunDirError

CONFIG = "config.json"
STATUS = "status.json"
METRICS = "metrics.jsonl"
FINAL_METRICS = "final_metrics.json"
ADAPTER = "adapter"
FULL_MODEL = "model"
CHECKPOINTS = "checkpoints"
STOP_FILE = "STOP"

# Files the app's launcher writes before the training process starts; they do not make a run.
LAUNCHER_FILES = {"launch.yaml", "train.log", "process.json"}

# Settings that may differ when resuming: they do not change what the finished run is.
RESUMABLE_DIFFERENCES = {"save_steps", "logging_steps", "output_dir"}


def runs_root() -> Path:
    return settings.workspace_dir() / "runs"


def default_run_dir(task: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return runs_root() / f"{task}-{stamp}"


def write_json(path: Path, value) -> None:
    """Write atomically, so a reader polling the file never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(value, indent=2, default=str))
    staging.replace(path)


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return default


def read_config(run_dir: Path) -> dict:
    config = read_json(Path(run_dir) / CONFIG)
    if config is None:
        raise RunDirError(f"{run_dir} is not a run directory (no {CONFIG})")
    return config


def write_config(run_dir: Path, config: dict) -> None:
    write_json(run_dir / CONFIG, config)


def is_run_dir(path: str | Path) -> bool:
    """Whether `path` holds a training run, launched or running or done: its config, status or launch record."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in (CONFIG, STATUS, *LAUNCHER_FILES))


def not_a_run_message(path: str | Path) -> str:
    return f"{path} is not a training run (no {CONFIG}, {STATUS} or launch record there)."


def check_can_write(run_dir: Path, config: dict, resume: bool) -> None:
    """Refuse to train into a directory that holds something else; allow resuming the same run."""
    if not run_dir.exists() or not any(p.name not in LAUNCHER_FILES for p in run_dir.iterdir()):
        if resume:
            raise RunDirError(f"nothing to resume in {run_dir}: it holds no run")
        return
    existing = read_json(run_dir / CONFIG)
    if existing is None:
        raise RunDirError(f"{run_dir} is not empty and holds no run; choose another --output-dir")
    if not resume:
        status = read_json(run_dir / STATUS, {}).get("state", "unknown")
        raise RunDirError(
            f"{run_dir} already holds a {existing.get('task')} run ({status}); pass --resume to continue it "
            "or choose another --output-dir"
        )
    changed = sorted(
        key for key, value in config.items() if key not in RESUMABLE_DIFFERENCES and existing.get(key) != value
    )
    if changed:
        raise RunDirError(f"cannot resume {run_dir} with different settings: {changed}")


def load_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            continue
    return rows


def drop_metrics_after(run_dir: Path, step: int) -> None:
    """Keep only the metric lines up to `step`: a resumed run trains the steps after its checkpoint again.

    A run killed after its last checkpoint had logged those steps already; kept, they would be
    appended a second time and the loss curve would draw them twice.
    """
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return
    kept = [row for row in load_metrics(run_dir) if row.get("step", 0) <= step]
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text("".join(json.dumps(row) + "\n" for row in kept))
    staging.replace(path)


def request_stop(run_dir: Path) -> None:
    (Path(run_dir) / STOP_FILE).touch()


def list_runs(root: Path | None = None) -> list[dict]:
    """Every run under the workspace's runs/ folder, newest first, with config, status and final metrics."""
    root = Path(root) if root else runs_root()
    runs = []
    for config_path in root.glob(f"*/{CONFIG}"):
        run_dir = config_path.parent
        runs.append(
            {
                "run_dir": str(run_dir),
                "config": read_json(config_path, {}),
                "status": read_json(run_dir / STATUS, {}),
                "final_metrics": read_json(run_dir / FINAL_METRICS),
                "modified": datetime.fromtimestamp(config_path.stat().st_mtime, tz=timezone.utc).isoformat(),
            }
        )
    return sorted(runs, key=lambda run: run["modified"], reverse=True)


def runs_signature(root: Path | None = None) -> tuple:
    """What the app's lists of runs show, cheaply: each run directory (launched or started), its state, whether it has a test evaluation.

    It changes when a run is launched, starts, ends or is evaluated, not at every step, so a page polling
    it refreshes its lists only then.
    """
    root = Path(root) if root else runs_root()
    signature = []
    for run_dir in sorted(path for path in root.glob("*") if path.is_dir()):
        if (run_dir / CONFIG).is_file() or (run_dir / "launch.yaml").is_file():
            state = read_json(run_dir / STATUS, {}).get("state")
            signature.append((run_dir.name, (run_dir / CONFIG).is_file(), state, (run_dir / "eval-test" / "metrics.json").is_file()))
    return tuple(signature)


def finished_runs(tasks: tuple[str, ...]) -> list[str]:
    """Run directories of finished runs of these tasks, newest first (what the app offers to pick from)."""
    return [run["run_dir"] for run in list_runs() if run["config"].get("task") in tasks and run["status"].get("state") == "finished"]
