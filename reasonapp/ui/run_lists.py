"""Lists of runs that keep themselves current: a `gr.Timer` asks each tick whether what a list shows has changed.

A dropdown built with `finished_runs(...)` holds the runs that existed when the app started; a run launched,
finished or failed later would show only after a Refresh or a restart. `refresh_on_change` makes a timer
handler that compares a cheap signature of the runs with the one the page last received (kept per session in
a `gr.State`) and sends new choices only when it differs, so an idle page costs a few small file reads.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import gradio as gr

from training.rundir import finished_runs

POLL_SECONDS = 3.0


def refresh_on_change(signature: Callable[[], Hashable], *updates: Callable[[], Any]) -> Callable:
    """A timer handler `tick(seen) -> (*updates, signature)`: each update when `signature()` differs from `seen`, else skips.

    Wire it with the signature's `gr.State(None)` as input and as the last output; None makes the first tick
    of a page replace what the page was built with.
    """

    def tick(seen):
        current = signature()
        if current == seen:
            return (*(gr.skip() for _ in updates), seen)
        return (*(update() for update in updates), current)

    return tick


def refresh_job_list(list_jobs: Callable[[], list[str]]) -> Callable:
    """A timer handler `tick(seen) -> (dropdown update, jobs)` for a list of jobs, newest first: new choices when the list
    changed, and a job that appeared since the last tick (launched here or from another page) selected."""

    def tick(seen):
        current = tuple(list_jobs())
        if current == seen:
            return gr.skip(), seen
        if seen is not None and current and current[0] not in seen:
            return gr.update(choices=list(current), value=current[0]), current
        return gr.update(choices=list(current)), current

    return tick


def rgen_run_choices() -> list[str]:
    """The R-Gen runs a regenerate can use: finished `rgen` runs, newest first."""
    return finished_runs(("rgen",))


# The Review tab's "R-Gen run for regenerate" dropdown:
#     seen = gr.State(None)
#     gr.Timer(POLL_SECONDS).tick(refresh_rgen_runs, seen, [rgen_run, seen], api_visibility="private", show_progress="hidden")
refresh_rgen_runs = refresh_on_change(lambda: tuple(rgen_run_choices()), lambda: gr.update(choices=rgen_run_choices()))
