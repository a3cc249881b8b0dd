"""The decision log: every committed change to the review store, also appended to a JSON Lines file.

A Space's disk is ephemeral: the store goes with the container. The log is what survives. Each process
appends to a file of its own (`<host>-<pid>-<start>.jsonl`, so processes never write one file), which
`training.hub.DecisionSync` uploads to a private dataset repo every few minutes and at shutdown. At start,
the files pulled back are replayed into the store: statuses, edits, history and reviewers return.

An event carries what rebuilding the row needs (dataset, split, row index, text, label, label set) and the
change itself (version, action, reasoning, status, reviewer, generator, time). Replay is idempotent: a row
already at or past an event's version keeps what it has.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from reasonapp import settings


def journal_dir() -> Path | None:
    """Where this process logs decisions: `<workspace>/decisions` when syncing (REASONAPP_SYNC_REPO) or REASONAPP_JOURNAL=1."""
    if os.environ.get("REASONAPP_SYNC_REPO") or os.environ.get("REASONAPP_JOURNAL", "0").lower() in {"1", "true", "yes"}:
        return settings.workspace_dir() / "decisions"
    return None


class DecisionLog:
    """Appends events to this process's own file; each line is flushed and fsynced before the call returns."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.path = self.directory / f"{socket.gethostname()}-{os.getpid()}-{stamp}.jsonl"
        self._lock = threading.Lock()

    def append(self, events: Iterable[dict]) -> None:
        lines = "".join(json.dumps(event, ensure_ascii=False, sort_keys=True) + "\n" for event in events)
        if not lines:
            return
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(lines)
            handle.flush()
            os.fsync(handle.fileno())


_logs: dict[Path, DecisionLog] = {}
_logs_lock = threading.Lock()


def process_log() -> DecisionLog | None:
    """This process's decision log, if decisions are logged here (one file per process, shared by its stores)."""
    directory = journal_dir()
    if directory is None:
        return None
    with _logs_lock:
        if directory not in _logs:
            _logs[directory] = DecisionLog(directory)
        return _logs[directory]


def merge_pulled_logs(pulled: str | Path, directory: str | Path) -> int:
    """Bring log files pulled from the sync repo into `directory` without losing a line of either; returns files changed.

    A pulled file can be older than the one on disk (a process killed after its last sync, restarted on the same
    disk), so it never replaces it: lines the local file lacks are appended to it, in the pulled order. A file
    only the repo has is copied in. Each file is rewritten whole and renamed into place, so a kill leaves one or
    the other.
    """
    changed = 0
    for source in sorted(Path(pulled).glob("*.jsonl")):
        target = Path(directory) / source.name
        pulled_lines = source.read_text(encoding="utf-8").splitlines()
        local_lines = target.read_text(encoding="utf-8").splitlines() if target.exists() else []
        known = set(local_lines)
        missing = [line for line in pulled_lines if line.strip() and line not in known]
        if not missing:
            continue
        staging = target.with_name(f".{target.name}.merging")
        staging.write_text("".join(line + "\n" for line in [*local_lines, *missing]), encoding="utf-8")
        os.replace(staging, target)
        changed += 1
    return changed


def read_events(directory: str | Path) -> list[dict]:
    """Every event of every log file in `directory`, oldest first (a line cut by a kill is skipped)."""
    events = []
    for path in sorted(Path(directory).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return sorted(events, key=lambda event: (event["at"], event["version"]))


def replay(store, events: Iterable[dict]) -> int:
    """Apply logged changes the store does not have yet; returns how many were applied."""
    applied = 0
    for event in events:
        applied += store.restore_event(event)
    return applied
