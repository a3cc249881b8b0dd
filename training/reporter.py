"""The Trainer's reporter: writes a run's metrics.jsonl and status.json as it trains, and ends it on STOP or SIGTERM.

Apart from `training.rundir` (plain file helpers the CLI, the app and later runs read) because it subclasses
transformers' `TrainerCallback`: importing transformers costs seconds, which `--help` and the app's lists need not pay.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from transformers import TrainerCallback

from training.rundir import METRICS, STATUS, STOP_FILE, write_json


class RunReporter(TrainerCallback):
    """Appends metrics lines and keeps status.json current; ends training cleanly on STOP or SIGTERM."""

    def __init__(self, run_dir: Path, enabled: bool = True, stop_file: str | Path | None = None):
        self.run_dir = Path(run_dir)
        # A stale STOP of the run's own is cleared; `stop_file` is the caller's (a pipeline's), cleared by the caller.
        self.stop_files = [self.run_dir / STOP_FILE, *([Path(stop_file)] if stop_file else [])]
        self.enabled = enabled
        self.stop_requested = False
        self._started = time.time()
        self._last_time = self._started
        self._last_tokens = None
        self._rates: list[float] = []
        self._status: dict = {}
        (self.run_dir / STOP_FILE).unlink(missing_ok=True)

    # status ---------------------------------------------------------------------------------
    def mark(self, state: str, **fields) -> None:
        if not self.enabled:
            return
        self._status.update(state=state, pid=os.getpid(), updated=time.time(), **fields)
        write_json(self.run_dir / STATUS, self._status)

    def request_stop(self, *_signal_args) -> None:
        self.stop_requested = True

    def mean_tokens_per_second(self) -> float | None:
        rates = self._rates[1:] or self._rates  # the first interval includes start-up
        return round(sum(rates) / len(rates), 1) if rates else None

    # trainer events -------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self.mark("running", step=state.global_step, total_steps=state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        if any(path.exists() for path in self.stop_files):
            self.stop_requested = True
        if self.stop_requested:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.enabled or not logs or "loss" not in logs:
            return
        now = time.time()
        tokens = logs.get("num_tokens")
        rate = None
        if tokens is not None and self._last_tokens is not None and now > self._last_time:
            rate = (tokens - self._last_tokens) / (now - self._last_time)
            self._rates.append(rate)
        self._last_tokens, self._last_time = tokens, now
        row = {
            "step": state.global_step,
            "epoch": round(state.epoch or 0.0, 4),
            "loss": logs.get("loss"),
            "learning_rate": logs.get("learning_rate"),
            "tokens_per_s": round(rate, 1) if rate is not None else None,
            "elapsed_s": round(now - self._started, 2),
        }
        with open(self.run_dir / METRICS, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        self.mark("running", step=state.global_step, total_steps=state.max_steps)
