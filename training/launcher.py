"""Start training and evaluation as separate processes, and read back how they are doing.

The app never trains inside its own worker: it writes the config as YAML into the run directory and
starts `python -m training train --config launch.yaml` in a new process session, with output going
to `train.log` there. Everything afterwards (progress, loss, failure, stop) goes through the run
directory's files, so a closed or reloaded browser never touches a run, and the UI reattaches to
any run by reading its directory.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from reasonapp import data, settings
from reasonapp.errors import ConfigError, DataError, RunDirError
from training import rundir
from training.augment import read_provenance
from training.sft import TrainConfig

LAUNCH_CONFIG = "launch.yaml"
TRAIN_LOG = "train.log"
EVAL_LOG = "eval.log"
EVALUATIONS = "evaluations"


def train_command(config: TrainConfig) -> list[str]:
    """The CLI command that runs this config: what "Show command" prints and what Start runs."""
    return [sys.executable, "-m", "training", "train", "--config", str(Path(config.output_dir) / LAUNCH_CONFIG)]


def show_command(config: TrainConfig) -> str:
    """The same run as flags, for a user to paste into a terminal."""
    defaults = TrainConfig(task=config.task, dataset=config.dataset, output_dir=config.output_dir)
    parts = ["python", "-m", "training", "train"]
    for spec in dataclasses.fields(TrainConfig):
        value = getattr(config, spec.name)
        if spec.name in ("task", "dataset", "output_dir") or value != getattr(defaults, spec.name):
            if isinstance(value, bool):
                parts.append(f"--{'' if value else 'no-'}{spec.name.replace('_', '-')}")
            elif value is not None:
                parts += [f"--{spec.name.replace('_', '-')}", str(value)]
    return shlex.join(parts)


def check_one_job_at_a_time() -> None:
    """On a Space (SPACE_ID set) one training, evaluation, Stage 2 or pipeline job runs at a time: a free CPU Space has 2 cores and 16 GB."""
    if not os.environ.get("SPACE_ID"):
        return
    busy = [path.name for path in sorted(rundir.runs_root().glob("*")) if path.is_dir() and run_state(path)["state"] in ("starting", "running")]
    busy += [path.name for path in sorted(rundir.runs_root().glob("*")) if path.is_dir() and evaluation_state(path).get("state") == "running"]
    busy += [Path(folder).name for folder in paired_evaluations() if evaluation_folder_state(folder)["state"] == "running"]
    busy += [Path(folder).name for folder in stage2_jobs() if stage2_state(folder)["state"] == "running"]
    busy += [Path(folder).name for folder in pipeline_jobs() if pipeline_state(folder)["state"] == "running"]
    if busy:
        raise RunDirError(f"{busy[0]} is running; on a Space one job runs at a time: wait for it or stop it first")


def start_training(config: TrainConfig) -> Path:
    """Launch a training process for `config`; returns its run directory at once."""
    check_one_job_at_a_time()
    run_dir = Path(config.output_dir)
    rundir.check_can_write(run_dir, config.to_dict(), resume=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:  # created exclusively: a second Start on the same directory (a double click) launches nothing
        with open(run_dir / LAUNCH_CONFIG, "x") as handle:
            handle.write(yaml.safe_dump(config.to_dict(), sort_keys=False))
    except FileExistsError:
        raise RunDirError(f"{run_dir} was already launched (see its {TRAIN_LOG}); choose another run directory") from None
    _spawn(train_command(config), run_dir / TRAIN_LOG, run_dir)
    return run_dir


def resume_training(run_dir: str | Path) -> Path:
    """Continue a stopped or killed run from its last checkpoint, in a new process; returns its run directory.

    A run started from the CLI has no launch.yaml: its settings come from the config.json it recorded.
    """
    check_one_job_at_a_time()
    run_dir = Path(run_dir)
    launched = launch_settings(run_dir)
    if not launched:
        recorded = rundir.read_json(run_dir / rundir.CONFIG)
        if recorded is None:
            raise RunDirError(f"nothing to resume in {run_dir}: it holds no run")
        known = {spec.name for spec in dataclasses.fields(TrainConfig)}
        launched = {key: value for key, value in recorded.items() if key in known}
        (run_dir / LAUNCH_CONFIG).write_text(yaml.safe_dump(launched, sort_keys=False))
    _spawn([*train_command(TrainConfig(**launched)), "--resume"], run_dir / TRAIN_LOG, run_dir)
    return run_dir


def stop_training(run_dir: str | Path) -> Path:
    """Ask a running run to save a checkpoint and end (its STOP file); refused for a run that is not running.

    A STOP file left in a finished or stopped run would mean nothing to it, and a run that is still
    starting clears it when its trainer begins.
    """
    run_dir = Path(run_dir)
    if not rundir.is_run_dir(run_dir):
        raise RunDirError(rundir.not_a_run_message(run_dir))
    state = run_state(run_dir)["state"]
    if state != "running":
        raise RunDirError(f"{run_dir.name} is {state}, not running: there is nothing to stop.")
    rundir.request_stop(run_dir)
    return run_dir


def default_evaluation_dataset(run_dir: str | Path) -> str:
    """The dataset a run is evaluated on unless told otherwise: the one its training rows came from.

    A run trained on an export (`python -m training export`: a train split only) names the export; the
    export's provenance.json names the dataset it was drawn from, whose test split the run has not seen.
    """
    config = rundir.read_config(Path(run_dir))
    dataset = config.get("dataset") or ""
    return config.get("source_dataset") or read_provenance(dataset).get("source_dataset") or dataset


def check_evaluation_data(run_dirs: list[str | Path], dataset: str, split: str) -> None:
    """Refuse, before anything launches, a dataset without the split or with other labels than the runs learned."""
    loaded = data.load_classification_dataset(dataset)
    if split not in loaded.splits:
        raise DataError(f"{dataset} has no split {split!r} (splits: {list(loaded.splits)})")
    for run_dir in run_dirs:
        labels = rundir.read_config(Path(run_dir)).get("label_names")
        if labels != loaded.label_names:
            raise DataError(f"{Path(run_dir).name} learned the labels {labels}; {dataset} has {loaded.label_names}")


def start_evaluation(
    qa_run: str | None, qra_run: str | None, limit: int | None, output_dir: Path, dataset: str | None = None, split: str = "test",
    overwrite: bool = False,
) -> Path:
    """Check the data and `output_dir` (`overwrite`: an earlier evaluation of these runs there may be replaced), then
    launch `python -m training evaluate` into it; `dataset` defaults to the first run's."""
    from training.evaluate import check_output_dir

    check_one_job_at_a_time()
    runs = [run for run in (qa_run, qra_run) if run]
    dataset = dataset or default_evaluation_dataset(runs[0])
    check_evaluation_data(runs, dataset, split)
    check_output_dir(output_dir, {name: str(run) for name, run in (("qa", qa_run), ("qra", qra_run)) if run}, overwrite)
    command = [sys.executable, "-m", "training", "evaluate", "--output-dir", str(output_dir), "--dataset", dataset, "--split", split]
    if overwrite:
        command.append("--overwrite")
    if qa_run:
        command += ["--qa-run", str(qa_run)]
    if qra_run:
        command += ["--qra-run", str(qra_run)]
    if limit:
        command += ["--limit", str(int(limit))]
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / EVAL_LOG).write_text("")  # this evaluation's log: an earlier attempt's error is not this one's
    _spawn(command, output_dir / EVAL_LOG, output_dir)
    return output_dir


def evaluation_settings(folder: str | Path) -> dict:
    """The runs and settings an evaluation was launched with (`start_evaluation`), read back from its process.json:
    what a reloaded page puts back into its form. Keys absent from the command are None (limit 0: all rows)."""
    command = rundir.read_json(Path(folder) / "process.json", {}).get("command") or []
    flags = dict(zip(command, command[1:], strict=False))
    return {
        "qa_run": flags.get("--qa-run"),
        "qra_run": flags.get("--qra-run"),
        "dataset": flags.get("--dataset"),
        "split": flags.get("--split"),
        "limit": int(flags.get("--limit", 0)),
    }


def _launched_at(folder: Path) -> float | None:
    """When an evaluation folder was last launched or reported (its process.json / report.md), None if neither is there."""
    marks = [path.stat().st_mtime for path in (folder / "process.json", folder / "report.md") if path.is_file()]
    return max(marks) if marks else None


def evaluation_state(run_dir: str | Path) -> dict:
    """The run's latest evaluation (a `<run>/eval-<split>` folder): its folder, state, error and log tail.

    state is None (never evaluated), "running", "finished" (its report.md is newer than its launch) or
    "failed": the process the app launched ended without a report, and `error` says why (from eval.log).
    """
    launches = [(mark, str(folder)) for folder in Path(run_dir).glob("eval-*") if (mark := _launched_at(folder)) is not None]
    if not launches:
        return {"dir": None, "state": None, "error": None, "log": ""}
    return evaluation_folder_state(max(launches)[1])


def evaluations_root() -> Path:
    """Where the app writes paired evaluations (a Q->A run and a Q->RA run together): <workspace>/evaluations."""
    return settings.workspace_dir() / EVALUATIONS


def paired_evaluation_dir(qa_run: str | Path, qra_run: str | Path, split: str) -> Path:
    """A directory no evaluation holds yet: evaluations/<qa-name>--<qra-name>-<split>, numbered -2, -3... when taken.

    Never a run's own `eval-<split>` folder (that one feeds the run's model card, and evaluate refuses it).
    """
    name = re.sub(r"[^\w.-]+", "_", f"{Path(qa_run).name}--{Path(qra_run).name}-{split}").strip("._") or "evaluation"
    candidate, number = evaluations_root() / name, 2
    while candidate.exists():
        candidate, number = evaluations_root() / f"{name}-{number}", number + 1
    return candidate


def paired_evaluations() -> list[str]:
    """The paired evaluations the app launched (or the CLI wrote there), newest launch first."""
    root = evaluations_root()
    folders = [(mark, str(folder)) for folder in root.iterdir() if folder.is_dir() and (mark := _launched_at(folder)) is not None] if root.is_dir() else []
    return [folder for _, folder in sorted(folders, reverse=True)]


def evaluation_folder_state(folder: str | Path) -> dict:
    """One evaluation folder's state ("running", "finished", "failed"; None when nothing was launched there), error and log tail."""
    folder = Path(folder)
    if _launched_at(folder) is None:
        return {"dir": str(folder), "state": None, "error": None, "log": ""}
    process_file, report = folder / "process.json", folder / "report.md"
    process = rundir.read_json(process_file, {})
    error = None
    if process and _alive(process.get("pid")):
        state = "running"
    elif report.is_file() and (not process_file.is_file() or report.stat().st_mtime >= process_file.stat().st_mtime):
        state = "finished"  # (a CLI evaluation has no process.json)
    else:
        state = "failed"
        error = _last_error(folder / EVAL_LOG) or f"the evaluation ended without a report (see {folder / EVAL_LOG})"
    return {"dir": str(folder), "state": state, "error": error, "log": log_tail(folder / EVAL_LOG, 3)}


def launch_settings(run_dir: str | Path) -> dict:
    """The settings a run was launched with (its launch.yaml), or {} where there is none: known before config.json is."""
    try:
        return yaml.safe_load((Path(run_dir) / LAUNCH_CONFIG).read_text()) or {}
    except FileNotFoundError:
        return {}


def _spawn(command: list[str], log_path: Path, workdir: Path) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(settings.PROJECT_ROOT)}
    with open(log_path, "a") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=settings.PROJECT_ROOT,
            env=env,
            start_new_session=True,  # outlives the app's worker and the browser session
        )
    rundir.write_json(workdir / "process.json", {"pid": process.pid, "command": command})
    threading.Thread(target=process.wait, name=f"reap-{process.pid}", daemon=True).start()  # no zombie once it ends
    return process.pid


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a finished child we started stays a zombie until reaped
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def log_tail(path: Path, lines: int = 30) -> str:
    if not path.is_file():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 64_000))
        text = handle.read().decode("utf-8", errors="replace")
    # progress bars rewrite their line with \r; keep what a terminal would show
    shown = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(shown[-lines:])


def run_state(run_dir: str | Path) -> dict:
    """Everything the Train tab shows about a run: state, progress, metrics, the error if it failed."""
    run_dir = Path(run_dir)
    status = rundir.read_json(run_dir / rundir.STATUS, {})
    process = rundir.read_json(run_dir / "process.json", {})
    pid = process.get("pid") or status.get("pid")  # the app's launch, else the training process itself (a CLI run)
    state = status.get("state", "starting")
    error = status.get("error")
    if state in ("starting", "running") and pid and not _alive(pid):  # gone, never said it finished
        state = "failed"
        error = error or _last_error(run_dir / TRAIN_LOG) or "the training process ended without saying why (see the log)"
    metrics = rundir.load_metrics(run_dir)
    step, total = status.get("step", 0), status.get("total_steps") or 0
    eta = None
    if metrics and total and step and state == "running":
        elapsed = metrics[-1]["elapsed_s"]
        eta = elapsed / step * (total - step)
    return {
        "run_dir": str(run_dir),
        "state": state,
        "step": step,
        "total_steps": total,
        "eta_s": eta,
        "error": error,
        "metrics": metrics,
        "final_metrics": rundir.read_json(run_dir / rundir.FINAL_METRICS),
        "config": rundir.read_json(run_dir / rundir.CONFIG) or launch_settings(run_dir),
        "log": log_tail(run_dir / TRAIN_LOG),
    }


def _last_error(log_path: Path) -> str | None:
    for line in reversed(log_tail(log_path, 200).splitlines()):
        if line.startswith("error:") or "Error" in line.split(":")[0]:
            return line.strip()
    return None


# ---------------------------------------------------------------------------------------------
# Stage 2 as a job: `python -m training augment` into the app's store, in its own process

JOBS = "jobs"
STAGE2_LOG = "stage2.log"
STAGE2_PROGRESS = "progress.json"
STAGE2_STOPPED = "STOPPED"


@dataclasses.dataclass
class Stage2Settings:
    """What a Stage 2 job runs: the source (a finished rgen run, base:<model>, or endpoint:<url>#<model> for an
    OpenAI-compatible teacher), the rows, the decoding."""

    source: str
    dataset: str
    store: str
    split: str = "train"
    limit: int = 0  # 0: every row of the split
    prompt_variant: str = "default"
    candidates: int = 1  # 1: greedy; K > 1: sample K a row and keep the one with the fewest quality flags
    batch_size: int = 32  # rows decoded together by a local R-Gen: 6.7 rows/s at 32 against 5.1 at 16 (256 Stage 2 rows)
    max_new_tokens: int = 64
    seed: int = 0
    api_key_env: str = ""  # an endpoint teacher's key: the NAME of the environment variable holding it, never the key
    concurrency: int = 8  # an endpoint teacher's requests in flight


class Stage2Progress:
    """The progress file a Stage 2 job writes (`augment --progress-file`): rows done of the sample, when, whether finished."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.record = {"total": None, "skipped": 0, "done": 0, "started_s": None, "updated_s": None, "finished": False}

    def plan(self, rows: int, skipped: int) -> None:
        now = time.time()
        self.record.update(total=rows, skipped=skipped, done=skipped, started_s=now, updated_s=now)
        rundir.write_json(self.path, self.record)

    def update(self, done_this_run: int) -> None:
        self.record.update(done=self.record["skipped"] + done_this_run, updated_s=time.time())
        rundir.write_json(self.path, self.record)

    def finish(self, failed: int = 0) -> None:
        total = self.record["total"] or 0
        self.record.update(done=total - failed, failed=failed, updated_s=time.time(), finished=True)
        rundir.write_json(self.path, self.record)


def jobs_root() -> Path:
    """Where the app's jobs live: <workspace>/jobs/stage2-<time> (Stage 2), <workspace>/jobs/pipeline-<time> (the whole method)."""
    return settings.workspace_dir() / JOBS


def is_workspace_job(job: str | Path, launch_file: str) -> bool:
    """Whether `job` is a job folder of this workspace that holds `launch_file` (LAUNCH_CONFIG for Stage 2,
    PIPELINE_CONFIG for a pipeline): the only folders the pages' job actions act on, whatever path a caller types."""
    return Path(job).resolve().is_relative_to(jobs_root().resolve()) and (Path(job) / launch_file).is_file()


def stage2_teacher(job: Stage2Settings):
    """The endpoint teacher an `endpoint:<url>#<model>` source names (checked as `augment --teacher-url` checks it), else None."""
    from training.teacher import ENDPOINT_PREFIX, TeacherConfig

    if not job.source.startswith(ENDPOINT_PREFIX):
        return None
    url, _, model = job.source[len(ENDPOINT_PREFIX) :].partition("#")
    return TeacherConfig(teacher_url=url, teacher_model=model, api_key_env=job.api_key_env.strip(), concurrency=job.concurrency)


def stage2_command(job: Stage2Settings, job_dir: Path) -> list[str]:
    teacher = stage2_teacher(job)
    source = ["--rgen-run", job.source]
    if teacher is not None:
        source = ["--teacher-url", teacher.endpoint, "--teacher-model", teacher.teacher_model, "--concurrency", str(teacher.concurrency)]
        source += ["--api-key-env", teacher.api_key_env] if teacher.api_key_env else []
    command = [
        sys.executable, "-m", "training", "augment", *source, "--prompt-variant", job.prompt_variant,
        "--dataset", job.dataset, "--split", job.split, "--store", job.store, "--batch-size", str(job.batch_size),
        "--candidates", str(job.candidates), "--max-new-tokens", str(job.max_new_tokens), "--seed", str(job.seed),
        "--progress-file", str(job_dir / STAGE2_PROGRESS),
    ]
    return command + (["--limit", str(job.limit)] if job.limit else [])


def teacher_key_allowed(name: str) -> bool:
    """Which environment variables a job launched from the app may send to an endpoint: TEACHER_* and REASONAPP_TEACHER_KEYS."""
    listed = {entry.strip() for entry in os.environ.get("REASONAPP_TEACHER_KEYS", "").split(",") if entry.strip()}
    return name in listed or name.startswith("TEACHER_")


def check_stage2_settings(job: Stage2Settings) -> None:
    """Refuse, before anything launches, a source that is not an R-Gen, an unknown prompt or split, or bad sizes."""
    from reasonapp.prompts import STAGE2_PROMPTS
    from training.augment import BASE_PREFIX, rgen_config

    if not (job.source or "").strip():
        raise RunDirError("choose the R-Gen source: a finished rgen run, base:<model>, or endpoint:<url>#<model>")
    if job.source.startswith(BASE_PREFIX) and not job.source[len(BASE_PREFIX) :].strip():
        raise RunDirError("base:<model> needs a model name or path after 'base:'")
    if stage2_teacher(job) is None:  # an endpoint teacher is checked by building its config
        rgen_config(job.source)
    elif job.api_key_env.strip() and not teacher_key_allowed(job.api_key_env.strip()):
        raise ConfigError(
            f"{job.api_key_env!r} may not be sent to a teacher from the app: name a variable starting with TEACHER_ "
            "or listed in REASONAPP_TEACHER_KEYS (the Space's own tokens never leave it)"
        )
    if job.prompt_variant not in STAGE2_PROMPTS:
        raise DataError(f"unknown Stage 2 prompt {job.prompt_variant!r}; choose one of {sorted(STAGE2_PROMPTS)}")
    if job.limit < 0 or job.candidates < 1 or job.batch_size < 1 or job.max_new_tokens < 1:
        raise DataError("rows must be 0 (all) or more; candidates, batch size and max new tokens at least 1")
    loaded = data.load_classification_dataset(job.dataset)
    if job.split not in loaded.splits:
        raise DataError(f"{job.dataset} has no split {job.split!r} (splits: {list(loaded.splits)})")


def start_stage2(job: Stage2Settings) -> Path:
    """Check the settings, then launch the job into a new <workspace>/jobs/stage2-<time>; returns that directory at once."""
    check_one_job_at_a_time()
    check_stage2_settings(job)
    job_dir = _new_job_dir("stage2")
    (job_dir / LAUNCH_CONFIG).write_text(yaml.safe_dump(dataclasses.asdict(job), sort_keys=False))
    _spawn(stage2_command(job, job_dir), job_dir / STAGE2_LOG, job_dir)
    return job_dir


def stage2_settings(job_dir: str | Path) -> Stage2Settings:
    launched = launch_settings(job_dir)
    if not launched:
        raise RunDirError(f"{job_dir} is not a Stage 2 job (no {LAUNCH_CONFIG})")
    return Stage2Settings(**launched)


def stop_stage2(job_dir: str | Path) -> Path:
    """End a running job (SIGTERM to its process group); the rows it wrote stay in the store, and Resume does the rest."""
    job_dir = Path(job_dir)
    state = stage2_state(job_dir)["state"]
    if state != "running":
        raise RunDirError(f"{job_dir.name} is {state}, not running: there is nothing to stop.")
    (job_dir / STAGE2_STOPPED).write_text("")
    pid = rundir.read_json(job_dir / "process.json", {}).get("pid")
    try:
        os.killpg(pid, signal.SIGTERM)  # started in a session of its own: its group is its pid
    except ProcessLookupError:
        pass
    return job_dir


def resume_stage2(job_dir: str | Path) -> Path:
    """Run a stopped or failed job again with the same settings: rows that have a reasoning are skipped."""
    check_one_job_at_a_time()
    job_dir = Path(job_dir)
    job = stage2_settings(job_dir)
    state = stage2_state(job_dir)["state"]
    if state in ("running", "finished"):
        raise RunDirError(f"{job_dir.name} is {state}: there is nothing to resume.")
    check_stage2_settings(job)
    (job_dir / STAGE2_STOPPED).unlink(missing_ok=True)
    (job_dir / STAGE2_PROGRESS).unlink(missing_ok=True)
    _spawn(stage2_command(job, job_dir), job_dir / STAGE2_LOG, job_dir)
    return job_dir


def stage2_jobs() -> list[str]:
    """The app's Stage 2 jobs, newest first."""
    root = jobs_root()
    folders = [folder for folder in root.glob("stage2-*") if (folder / LAUNCH_CONFIG).is_file()] if root.is_dir() else []
    return [str(folder) for folder in sorted(folders, key=lambda f: (f / LAUNCH_CONFIG).stat().st_mtime, reverse=True)]


def stage2_state(job_dir: str | Path) -> dict:
    """A job's state ("running", "finished", "stopped", "failed"), rows done/total, rows/s, ETA, error and log tail."""
    job_dir = Path(job_dir)
    process = rundir.read_json(job_dir / "process.json", {})
    progress = rundir.read_json(job_dir / STAGE2_PROGRESS, {}) or {}
    error = None
    if _alive(process.get("pid")):
        state = "running"
    elif progress.get("finished"):
        state = "finished"
    elif (job_dir / STAGE2_STOPPED).is_file():
        state = "stopped"
    else:
        state = "failed"
        error = _last_error(job_dir / STAGE2_LOG) or f"the job ended before it finished (see {job_dir / STAGE2_LOG})"
    done, total = progress.get("done", 0), progress.get("total")
    rate = eta = None
    elapsed = (progress.get("updated_s") or 0) - (progress.get("started_s") or 0)
    if elapsed > 0 and done > progress.get("skipped", 0):
        rate = (done - progress.get("skipped", 0)) / elapsed
        eta = (total - done) / rate if state == "running" and total else None
    return {"dir": str(job_dir), "state": state, "done": done, "total": total, "rows_per_s": rate, "eta_s": eta, "error": error,
            "log": log_tail(job_dir / STAGE2_LOG, 5)}


def stage2_line(state: dict) -> str:
    """One line for the page: state, rows done/total, rows/s, ETA."""
    if state["total"] is None:
        rows = "loading the R-Gen and the rows" if state["state"] == "running" else "no rows done"
    else:
        rows = f"{state['done']}/{state['total']} rows"
    parts = [f"{Path(state['dir']).name}: {state['state']}", rows]
    if state["rows_per_s"]:
        parts.append(f"{state['rows_per_s']:.2f} rows/s")
    if state["eta_s"] is not None:
        parts.append(f"ETA {state['eta_s']:.0f} s")
    if state["error"]:
        parts.append(state["error"])
    return " · ".join(parts)


# ---------------------------------------------------------------------------------------------
# The whole method as a job: `python -m training experiment` from one YAML, in its own process

PIPELINE_CONFIG = "experiment.yaml"
PIPELINE_LOG = "pipeline.log"
PIPELINE_STAGES = "stages.json"
PIPELINE_STOP = "STOP"  # beside the state file: the experiment ends between Stage 2 batches or before its next stage
PIPELINE_CONTINUED = "continued"  # Continue was clicked: a resumption goes on past the review pause too


def pipeline_command(job_dir: Path) -> list[str]:
    command = [sys.executable, "-m", "training", "experiment", "--config", str(job_dir / PIPELINE_CONFIG),
               "--state-file", str(job_dir / PIPELINE_STAGES)]
    return command + (["--continue"] if (job_dir / PIPELINE_CONTINUED).is_file() else [])


def pipeline_jobs() -> list[str]:
    """The app's pipeline jobs, newest first."""
    root = jobs_root()
    folders = [folder for folder in root.glob("pipeline-*") if (folder / PIPELINE_CONFIG).is_file()] if root.is_dir() else []
    return [str(folder) for folder in sorted(folders, key=lambda f: (f / PIPELINE_CONFIG).stat().st_mtime, reverse=True)]


def pipeline_settings(job_dir: str | Path) -> dict:
    """The YAML a job runs, as a mapping (what the Pipeline tab puts back into its form)."""
    try:
        values = yaml.safe_load((Path(job_dir) / PIPELINE_CONFIG).read_text())
    except (FileNotFoundError, NotADirectoryError):
        raise RunDirError(f"{job_dir} is not a pipeline job (no {PIPELINE_CONFIG})") from None
    return values if isinstance(values, dict) else {}


def start_pipeline(config: dict) -> Path:
    """Check the settings, then launch `experiment` on them into a new <workspace>/jobs/pipeline-<time>; returns it at once.

    The job directory holds the exact YAML it runs (experiment.yaml), its log (pipeline.log) and the experiment's
    per-stage state file (stages.json); the stages themselves live in <workspace>/experiments/<name>, cached by settings.
    """
    from training.experiment import experiment_config_from_mapping

    check_one_job_at_a_time()
    checked = experiment_config_from_mapping(config)
    busy = [Path(job).name for job in pipeline_jobs() if pipeline_state(job)["state"] == "running" and pipeline_settings(job).get("name", "experiment") == checked["name"]]
    if busy:
        raise RunDirError(f"{busy[0]} is running the experiment {checked['name']!r}: stop it first, or give this one another name")
    loaded = data.load_classification_dataset(checked["dataset"])  # a missing dataset is named before anything launches
    if "train" not in loaded.splits:
        raise DataError(f"{checked['dataset']} has no train split (splits: {list(loaded.splits)})")
    job_dir = _new_job_dir("pipeline")
    (job_dir / PIPELINE_CONFIG).write_text(yaml.safe_dump(config, sort_keys=False))
    _spawn(pipeline_command(job_dir), job_dir / PIPELINE_LOG, job_dir)
    return job_dir


def _new_job_dir(kind: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    job_dir, number = jobs_root() / f"{kind}-{stamp}", 2
    jobs_root().mkdir(parents=True, exist_ok=True)
    while True:
        try:
            job_dir.mkdir()
            return job_dir
        except FileExistsError:
            job_dir, number = jobs_root() / f"{kind}-{stamp}-{number}", number + 1


def stop_pipeline(job_dir: str | Path) -> Path:
    """End a running job: a training stage at its next step (a checkpoint), Stage 2 between batches, an evaluation at once.

    Resume runs the experiment again: finished stages are skipped, the stopped one resumes (an evaluation starts over).
    """
    job_dir = Path(job_dir)
    state = pipeline_state(job_dir)
    if state["state"] != "running":
        raise RunDirError(f"{job_dir.name} is {state['state']}, not running: there is nothing to stop.")
    (job_dir / PIPELINE_STOP).write_text("")
    running = next((stage for stage in state["stages"] if stage["state"] == "running"), None)
    if running and running["stage"] in ("rgen", "qa", "qra") and running.get("dir") and Path(running["dir"]).is_dir():
        rundir.request_stop(Path(running["dir"]))  # a stage still loading has no run folder yet: it watches the job's STOP
    elif running and running["stage"] == "evaluate":  # evaluation has no checkpoints: it ends now and starts over on Resume
        try:
            os.killpg(rundir.read_json(job_dir / "process.json", {}).get("pid"), signal.SIGTERM)
        except (ProcessLookupError, TypeError):
            pass
    return job_dir


def resume_pipeline(job_dir: str | Path) -> Path:
    """Run a stopped or failed job's experiment again: cached stages are skipped, the stopped one resumes."""
    check_one_job_at_a_time()
    job_dir = Path(job_dir)
    pipeline_settings(job_dir)
    state = pipeline_state(job_dir)["state"]
    if state in ("running", "finished"):
        raise RunDirError(f"{job_dir.name} is {state}: there is nothing to resume.")
    if state == "awaiting-review":
        raise RunDirError(f"{job_dir.name} waits for the review of its Stage 2 rows: review them, then Continue.")
    return _relaunch(job_dir)


def continue_pipeline(job_dir: str | Path) -> Path:
    """After the review pause: export the accepted and edited rows and go on (Q->RA on them, then evaluation)."""
    from training.experiment import reviewed_rows

    check_one_job_at_a_time()
    job_dir = Path(job_dir)
    state = pipeline_state(job_dir)
    if state["state"] != "awaiting-review":
        raise RunDirError(f"{job_dir.name} is {state['state']}, not waiting for a review: there is nothing to continue.")
    if not reviewed_rows(state["review_store"]):
        raise RunDirError(f"nothing is reviewed yet in {state['review_store']}: accept or edit some rows there first")
    (job_dir / PIPELINE_CONTINUED).write_text("")
    return _relaunch(job_dir)


def _relaunch(job_dir: Path) -> Path:
    (job_dir / PIPELINE_STOP).unlink(missing_ok=True)
    _spawn(pipeline_command(job_dir), job_dir / PIPELINE_LOG, job_dir)
    return job_dir


def _stage_progress(stage: dict) -> str:
    """A running or stopped stage's progress: training step/total from its status, Stage 2 rows done/total from its progress file."""
    if stage["stage"] in ("rgen", "qa", "qra") and stage.get("dir"):
        status = rundir.read_json(Path(stage["dir"]) / rundir.STATUS, {}) or {}
        if status.get("total_steps"):
            return f"step {status.get('step', 0)}/{status['total_steps']}"
        return "loading" if stage["state"] == "running" else ""
    if stage["stage"] == "augment" and stage.get("progress_file"):
        progress = rundir.read_json(Path(stage["progress_file"]), {}) or {}
        if progress.get("total") is not None:
            return f"{progress.get('done', 0)}/{progress['total']} rows"
        return "loading" if stage["state"] == "running" else ""
    return ""


def pipeline_state(job_dir: str | Path) -> dict:
    """A job's state (running, finished, stopped, failed, awaiting-review), each stage's state, progress and times, the log tail,
    and where its report and review store are."""
    job_dir = Path(job_dir)
    record = rundir.read_json(job_dir / PIPELINE_STAGES, {}) or {}
    process = rundir.read_json(job_dir / "process.json", {}) or {}
    alive = _alive(process.get("pid"))
    stopping = (job_dir / PIPELINE_STOP).is_file()
    state, error = record.get("state") or "starting", record.get("error")
    if alive:
        state = "running"
    elif state in ("starting", "running"):  # gone without saying how it ended: killed (a stop of an evaluation) or crashed
        state = "stopped" if stopping else "failed"
        error = None if stopping else (_last_error(job_dir / PIPELINE_LOG) or f"the job ended before it finished (see {job_dir / PIPELINE_LOG})")
    stages = []
    for name, entry in (record.get("stages") or {}).items():
        stage = {"stage": name, **entry}
        if stage["state"] == "running" and not alive:
            stage["state"] = state if state in ("stopped", "failed") else "stopped"
        stage["progress"] = _stage_progress(stage) if stage["state"] in ("running", "stopped") else ""
        if stage["state"] == "running" and stage.get("started"):
            stage["wall_s"] = round(time.time() - stage["started"], 1)
        stages.append(stage)
    if not stages:
        from training.experiment import STAGE_LABELS

        stages = [{"stage": name, "label": label, "state": "pending", "progress": ""} for name, label in STAGE_LABELS.items()]
    return {
        "dir": str(job_dir),
        "state": state,
        "stopping": alive and stopping,
        "error": error if state in ("failed", "awaiting-review", "stopped") else None,
        "stages": stages,
        "report": record.get("report") if state == "finished" else None,
        "review_store": record.get("review_store"),
        "reviewed_rows": record.get("reviewed_rows"),
        "root": record.get("root"),
        "log": log_tail(job_dir / PIPELINE_LOG, 12),
    }
