"""Review tab: read, fix, accept or reject generated reasonings, one row at a time.

Handlers are plain functions of (session state, inputs) over the store; each browser session keeps
its own queue in `gr.State`. Texts and reasonings are shown in textboxes, so any HTML or script in
them stays text. A save that conflicts with someone else's newer save shows their text instead of
overwriting it; a refused edit keeps the reviewer's text in the box.

With team review on (`min_reviews` > 1) the pending queue is the reviewer's own (rows they have not decided that
are neither final nor in dispute), a decision is theirs until enough agree, the Resolve view shows an admin the
rows in dispute with every reviewer's decision side by side, and the tab shows the team's agreement.
"""

from __future__ import annotations

import functools
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from reasonapp import settings
from reasonapp.access import ADMIN, MAX_NAME_CHARS, local_user
from reasonapp.agreement import DISPUTE, agreement_line, agreement_summary, outcome
from reasonapp.dataset_import import display_choices, display_name, with_display_names
from reasonapp.errors import ReasonappError
from reasonapp.models import DEFAULT_BASE_MODEL
from reasonapp.prompts import STAGE2_PROMPTS
from reasonapp.quality import DROPPED_ROWS, EXPORT_POLICIES, quality_line, quality_summary
from reasonapp.store import (
    ConflictError,
    ReasoningStore,
    RowFilter,
    Status,
    StoredRow,
    StoreError,
    default_store_path,
    min_reviews_from_environment,
)
from reasonapp.ui.access import current_caller, current_policy, reviewer_name
from reasonapp.ui.run_lists import (
    POLL_SECONDS,
    refresh_job_list,
    refresh_on_change,
    refresh_rgen_runs,
    rgen_run_choices,
)
from training import launcher, rundir
from training.augment import BASE_PREFIX, MAX_EXPORT_NAME

STATUS_CHOICES = ["pending", "accepted", "edited", "rejected", "all"]
SHORTCUTS = {"accept": "Alt+A", "reject": "Alt+R", "save": "Alt+S", "skip": "Alt+N", "undo": "Alt+Z", "regenerate": "Alt+G"}
GUIDELINES = """
**Accept** a reasoning that explains the gold label from cues *in the text*.
**Edit** it when the label is right but the reasoning is vague, restates the label ("Joy is a positive
emotion."), or cites words the text does not contain: name the words that carry the emotion.
**Reject** rows whose label itself looks wrong, or whose reasoning cannot be saved with a small edit.
Keep reasonings to one or two sentences; the classifier learns to write what you accept.
Flags (too short, cites nothing from the text, argues for another label, repetitive) are hints, not verdicts.
"""

# Shortcuts: a key listener that clicks the button whose elem_id matches; works while typing in the box.
SHORTCUT_SCRIPT = """
<script>
document.addEventListener("keydown", (event) => {
  if (!event.altKey) return;
  const targets = {a: "review-accept", r: "review-reject", s: "review-save", n: "review-skip", z: "review-undo", g: "review-regenerate"};
  const id = targets[event.key.toLowerCase()];
  if (!id) return;
  const element = document.getElementById(id);
  const button = element && (element.tagName === "BUTTON" ? element : element.querySelector("button"));
  if (button) { event.preventDefault(); button.click(); }
});
</script>
"""


@dataclass
class ReviewSession:
    """One browser session's queue: the row ids the filter selected, where the reviewer is, and the store they are
    rows of (None: the app's own; else a listed experiment store), so each page reviews the store it picked."""

    queue: list[int] = field(default_factory=list)
    position: int = 0
    version: int | None = None
    dataset: str | None = None
    store: str | None = None
    pending_only: bool = False  # a "pending" queue passes over rows decided (by others) since it was loaded

    @property
    def row_id(self) -> int | None:
        return self.queue[self.position] if 0 <= self.position < len(self.queue) else None


@dataclass
class ResolveSession(ReviewSession):
    """One admin's list of rows in dispute and where they are in it (the Resolve view)."""


STAGE2_DEFAULT_ROWS = 256  # a first job of minutes, not of hours: 0 (every row of dair-ai/emotion's 16,000) is a choice

# the export errors name the CLI's flags; the page has a checkbox and a name field for them
_CLI_TO_PAGE = {
    "pass --overwrite to replace it": "tick “Replace an earlier export of this name” to replace it",
    "an empty or new --out": "a new export name",
    "another --out": "another export name",
}


def in_page_words(message: str) -> str:
    """An export error as the Review tab's export form says it (its checkbox and name field, not CLI flags)."""
    for cli, page in _CLI_TO_PAGE.items():
        message = message.replace(cli, page)
    return message


def row_identity(row: StoredRow, version: int) -> str:
    """How the Row line and the Resolve line name the row and the version the page shows. A decision sends its line
    back, so a page still showing the row before a queue (or dispute list) reload cannot decide the row after it."""
    return f"{row.split} row {row.row_index} of {display_name(row.dataset)} · version {version}"


def unsaved_text(reasoning: str | None) -> str:
    """The reviewer's text that was not saved, for the message that says so."""
    return f" Your unsaved text: {reasoning[:300]!r}" if (reasoning or "").strip() else ""


VERSION_HEADERS = ["reviewer", "decision", "reasoning"]
DECODINGS = ["greedy", "best-of-K sampling"]


def stage2_source_choices() -> list[str]:
    """The R-Gen sources Stage 2 can use: finished rgen runs, newest first, then the base instruct model (no Stage 1)."""
    return [*rgen_run_choices(), f"{BASE_PREFIX}{DEFAULT_BASE_MODEL}"]


STAGE2_FORM_FIELDS = ("source", "prompt_variant", "dataset", "split", "limit", "decoding", "candidates", "batch_size", "api_key_env")


def stage2_form_values(job_dir: str) -> tuple:
    """The Generate reasonings form as the job was started (its launch.yaml: `launcher.stage2_settings`)."""
    job = launcher.stage2_settings(job_dir)
    sampled = job.candidates > 1
    return (
        job.source, job.prompt_variant, job.dataset, job.split, job.limit, DECODINGS[1] if sampled else DECODINGS[0],
        job.candidates if sampled else gr.skip(), job.batch_size, job.api_key_env,
    )


# Timer handler: the Stage 2 job list, a job launched here or from another page selected.
refresh_stage2_jobs = refresh_job_list(launcher.stage2_jobs)


# The Stage 2 panel's R-Gen sources: an rgen run that finishes while the page is open joins them.
refresh_stage2_sources = refresh_on_change(lambda: tuple(rgen_run_choices()), lambda: gr.update(choices=stage2_source_choices()))


# The stores a page may pick besides the app's own: each experiment's Stage 2 store (`training.experiment`), where
# a pipeline with the review pause waits for its rows to be reviewed.
EXPERIMENT_STORES = "experiments/*/store-*/store.sqlite"


def _in_workspace(path: str | Path) -> str:
    """A store's path as the page shows it: relative to the workspace when it is inside."""
    resolved, workspace = Path(path).resolve(), settings.workspace_dir().resolve()
    return str(resolved.relative_to(workspace) if resolved.is_relative_to(workspace) else path)


def experiment_store_paths() -> list[str]:
    """The experiment stores of the workspace (existing files only), in a stable order."""
    return [str(path) for path in sorted(settings.workspace_dir().glob(EXPERIMENT_STORES)) if path.is_file()]


def stores_awaiting_review() -> set[Path]:
    """The review stores whose pipeline job (the newest job naming each store) waits at the review pause.

    Each job's state file is read first and `launcher.pipeline_state` asked only about the jobs it says are paused,
    so the Review tab's timer does not read every job's log on each tick.
    """
    seen, waiting = set(), set()
    for job in launcher.pipeline_jobs():  # newest first: it decides a store's state
        record = rundir.read_json(Path(job) / launcher.PIPELINE_STAGES, {}) or {}
        store = record.get("review_store")
        if not store or Path(store).resolve() in seen:
            continue
        seen.add(Path(store).resolve())
        if record.get("state") == "awaiting-review" and launcher.pipeline_state(job)["state"] == "awaiting-review":
            waiting.add(Path(store).resolve())
    return waiting


def experiment_store_choices() -> list[tuple[str, str]]:
    """(label, path) of each experiment store: its experiment, its folder, and whether its pipeline awaits the review."""
    paths = experiment_store_paths()
    waiting = stores_awaiting_review() if paths else set()
    choices = []
    for path in paths:
        folder = Path(path).parent
        note = " · awaiting review (then Continue in the Pipeline tab)" if Path(path).resolve() in waiting else ""
        choices.append((f"experiment {folder.parent.name} ({folder.name}){note}", path))
    return choices


@functools.lru_cache(maxsize=1)
def _rgen_model(run_dir: str):
    from training.augment import load_rgen

    return load_rgen(run_dir)


class ReviewHandlers:
    """The Review tab's event handlers over the app's store and the workspace's experiment stores.

    The app's store is opened at start; a page may pick an experiment's Stage 2 store instead (`store_choices`), which
    is opened on first use and kept open. Handlers of a loaded queue act on the store the queue was loaded from (the
    session carries it); the others take the page's chosen store as their last input (None: the app's). A store value
    that is not listed is refused before anything is opened, so an API caller cannot make the app create or touch a file.
    Team review settings (REASONAPP_MIN_REVIEWS) and decision sync apply to the app's store only.

    A store file that cannot be opened (not a store, a newer schema) does not stop the app: the tab
    shows why, every decision is refused with that message, and the file is left untouched.
    """

    def __init__(self, store_path: str | None, label_names: list[str], task_description: str, dataset: str | None = None, sync=None, log_decisions: bool = True):
        self.label_names = label_names
        self.sync = sync  # training.hub.DecisionSync when REASONAPP_SYNC_REPO is set
        self.task_description = task_description
        self.app_dataset = dataset
        self.app_store = str(Path(store_path) if store_path else default_store_path())  # its value in the Store list
        self._store: ReasoningStore | None = None
        self._stores: dict[str, ReasoningStore] = {}  # experiment stores pages picked, one open store per path
        self._stores_lock = threading.Lock()
        self.open_error: str | None = None
        try:
            min_reviews = min_reviews_from_environment()  # REASONAPP_MIN_REVIEWS: team review's overlap, kept in the store
            self._store = ReasoningStore(self.app_store, journal=log_decisions)
            if min_reviews is not None:
                self._store.set_min_reviews(min_reviews)
        except StoreError as error:
            self.open_error = f"The review store cannot be used: {error}"

    @property
    def store(self) -> ReasoningStore:
        """The app's own store."""
        if self._store is None:
            raise StoreError(self.open_error or "the review store is not open")
        return self._store

    # -- which store -----------------------------------------------------------------------
    def store_choices(self) -> list[tuple[str, str]]:
        """(label, value) of the stores a page may review: the app's first, the workspace's other own store (demo or
        workspace), then each experiment store."""
        here = Path(self.app_store).resolve()
        companion = self.companion_store()
        others = [(label, path) for label, path in experiment_store_choices() if Path(path).resolve() != here]
        return [(self._store_label(self.app_store), self.app_store), *([(self._store_label(companion), companion)] if companion else []), *others]

    @staticmethod
    def _store_label(path: str) -> str:
        from training.demo import demo_store_path

        kind = "demo" if Path(path).resolve() == demo_store_path().resolve() else "workspace"
        return f"{kind} store ({_in_workspace(path)})"

    def shows_demo_store(self) -> bool:
        from training.demo import demo_store_path

        return Path(self.app_store).resolve() == demo_store_path().resolve()

    def own_store(self) -> str:
        """Where the user's own rows go (Generate reasonings): the app's store, or the workspace's own one beside the demo."""
        return str(default_store_path()) if self.shows_demo_store() else self.app_store

    def companion_store(self) -> str | None:
        """The workspace's other own store, once it exists: its own store while the app shows the demo (a first Stage 2 job
        writes there), the demo store while it shows its own (review started on the demo stays reachable)."""
        from training.demo import demo_store_path

        if self.shows_demo_store():
            other = default_store_path()
        elif Path(self.app_store).resolve() == default_store_path().resolve():
            other = demo_store_path()
        else:
            return None
        return str(other) if other.is_file() else None

    def _companion_holding(self, dataset: str, shown: ReasoningStore) -> str | None:
        """The companion store, if it is not the one shown and holds generated rows of `dataset`."""
        companion = self.companion_store()
        if not companion or Path(companion).resolve() == Path(shown.path).resolve():
            return None
        return companion if self.open_store(companion).counts(dataset)["total"] else None

    def is_app_store(self, choice: str | None) -> bool:
        return not choice or choice == self.app_store

    def open_store(self, choice: str | None) -> ReasoningStore:
        """The store a page chose: the app's (None or its value) or a listed experiment store, opened once.

        Anything else (another path, a `..` path, a file that is not listed or does not exist) is refused before it is
        opened: nothing is created or written. Experiment stores are not in the decision log (it syncs the app's store).
        """
        if self.is_app_store(choice):
            return self.store
        companion = self.companion_store()
        if not isinstance(choice, str) or choice not in [*experiment_store_paths(), *([companion] if companion else [])]:
            shown = repr(choice)[:200]
            raise StoreError(f"{shown} is not one of this workspace's review stores: pick one from the Store list")
        with self._stores_lock:
            if choice not in self._stores:  # the user's own store is in the decision log; demo and experiment stores are not
                self._stores[choice] = ReasoningStore(choice, journal=choice == str(default_store_path()))
            return self._stores[choice]

    def _session_store(self, session: ReviewSession) -> ReasoningStore:
        return self.open_store(session.store)

    def choose_store(self, store: str | None, page_dataset: str | None = None):
        """A page picks a store: the Dataset filter offers that store's datasets and the Label filter their labels (the
        queue reloads next), on the page's dataset where `default_dataset` keeps it. A refused store changes neither;
        the queue's reload says why."""
        try:
            opened = self.open_store(store)
        except StoreError:
            return gr.skip(), gr.skip()
        chosen = self.default_dataset(store, page_dataset)
        labels = opened.label_names(chosen) if chosen else self.label_names
        return gr.update(choices=display_choices(self.dataset_choices(store, chosen)), value=chosen), gr.update(choices=["all", *labels], value="all")

    def sync_status(self, store: str | None = None) -> str:
        """Where decisions persist: the sync repo and when it was last written, or the store's file alone."""
        own = str(default_store_path())
        if self.is_app_store(store) and self.shows_demo_store():
            return (
                "Decisions on the demo store are kept in its file only, not in the decision log: its rows are a shipped sample. "
                f"Your own rows (Generate reasonings) go into the workspace store ({_in_workspace(own)})"
                + (f", which is: {self.sync.status_line()}" if self.sync is not None else ".")
            )
        if store == own and self.sync is not None:
            return self.sync.status_line()
        if not self.is_app_store(store):
            try:
                path = self.open_store(store).path
            except StoreError as error:
                return str(error)
            return (
                f"Decisions on this store are kept in its file only ({_in_workspace(path)}): decision sync (REASONAPP_SYNC_REPO) covers the "
                "app's own store, so on a Space a restart loses them."
            )
        if self.sync is not None:
            return self.sync.status_line()
        where = self._store.path if self._store else "the store"
        return f"Decisions are kept in {where} only; on a Space set REASONAPP_SYNC_REPO so they survive a restart (see README)."

    def dataset_choices(self, store: str | None = None, chosen: str | None = None) -> list[str]:
        """The store's datasets, the app's own first (its rows are what the other tabs show); `chosen` first of all,
        held or not (the filter's value)."""
        try:
            held = self.open_store(store).datasets()
        except StoreError:
            held = []
        first = [d for d in dict.fromkeys([chosen, self.app_dataset]) if d and (d == chosen or d in held)]
        return first + [d for d in held if d not in first]

    def default_dataset(self, store: str | None = None, page_dataset: str | None = None) -> str | None:
        """The Review filter's dataset on `store`: the page's dataset (the app's, unless this page switched) wherever
        the store holds its rows, and always on the app's own store, since Stage 2 writes the page's dataset there
        (an empty queue says so, rather than showing another dataset's rows unasked); otherwise, on an experiment's
        store, the store's first dataset."""
        wanted = page_dataset or self.app_dataset
        held = self.dataset_choices(store)
        if wanted and (wanted in held or self.is_app_store(store)):
            return wanted
        return held[0] if held else wanted

    def dataset_changed(self, dataset: str | None, store: str | None = None):
        """The Label filter offers the chosen dataset's labels."""
        try:
            labels = self.open_store(store).label_names(dataset) if dataset else self.label_names
        except StoreError:
            labels = self.label_names
        return gr.update(choices=["all", *labels], value="all")

    # -- views ---------------------------------------------------------------------------
    def counts_table(self, dataset: str | None = None, store: str | None = None) -> list[list]:
        return self._counts_table(self.open_store(store), dataset)

    @staticmethod
    def _counts_table(store: ReasoningStore, dataset: str | None) -> list[list]:
        counts = store.counts(dataset)
        rows = [["all", *counts["status"].values(), counts["total"]]]
        for label, by_status in sorted(counts["label"].items()):
            rows.append([label, *by_status.values(), sum(by_status.values())])
        return rows

    def quality_overview(self, dataset: str | None = None, store: str | None = None) -> str:
        """The dataset's reasonings (all but rejected) by the quality flags: a set of templates shows here first."""
        try:
            opened = self.open_store(store)
        except StoreError as error:
            return str(error)
        rows = opened.rows_for_export(include_pending=True, dataset=dataset or None)
        return quality_line(quality_summary([{"text": r.text, "label": r.label, "reasoning": r.reasoning, "flags": r.flags} for r in rows]))

    def progress_line(self, session: ReviewSession) -> str:
        store = self._session_store(session)
        counts = store.counts(session.dataset)
        if counts["total"] == 0:  # not "reviewed 0 of 0 · not generated yet 0" for a dataset Stage 2 has not reached
            return f"no rows of {display_name(session.dataset) or 'this dataset'} in this store"
        reviewed = counts["total"] - counts["status"]["pending"]
        position = f"row {session.position + 1} of {len(session.queue)} in this queue" if session.row_id else "queue is empty"
        line = f"{position} · reviewed {reviewed} of {counts['total']} · flagged {counts['flagged']} · not generated yet {counts['not_generated']}"
        min_reviews = store.min_reviews()
        if min_reviews > 1:
            line += f" · team review, {min_reviews} a row: {counts['awaiting_reviews']} need more reviews, {counts['in_dispute']} in dispute"
        return line

    def view(self, session: ReviewSession, message: str = "", row: StoredRow | None = None):
        """(state, text, label, reasoning, flags, meta, progress, counts, message) for the current row."""
        store = self._session_store(session)
        if row is None and session.row_id is not None:
            row = store.get(session.row_id)
        if row is None:
            session.version = None
            if session.queue and session.position >= len(session.queue):  # skipped past the last row
                empty = f"End of this queue of {len(session.queue)} rows; rows you skipped are as they were: Apply filters to load the queue again."
            elif session.dataset and store.counts(session.dataset)["total"] == 0 and (holder := self._companion_holding(session.dataset, store)):
                empty = f"No rows of {display_name(session.dataset)} in this store: they are in the {self._store_label(holder)}. Pick it in Store."
            elif session.dataset and store.counts(session.dataset)["total"] == 0:
                others = [display_name(d) for d in store.datasets() if d != session.dataset]
                empty = (
                    f"No rows of {display_name(session.dataset)} in this store yet: generate its reasonings (Generate reasonings, below, or "
                    f"`python -m training augment --dataset {session.dataset}`)"
                    + (f", or pick a dataset this store holds in Dataset: {', '.join(others)}." if others else ".")
                )
            else:
                empty = "No rows here. Generate reasonings with `python -m training augment`, or change the filters."
            return session, "", "", "", "", "", self.progress_line(session), self._counts_table(store, session.dataset), message or empty
        session.version = row.version
        generator = row.generator or {}
        meta = (
            f"status: {row.status} · reviewer: {row.reviewer or '–'} · "
            f"{row_identity(row, row.version)} · generator: {generator.get('rgen_run', '–')} "
            f"(prompt v{generator.get('prompt_version', '?')})"
        )
        min_reviews = store.min_reviews()
        if min_reviews > 1 and row.status == Status.PENDING.value:
            decisions = store.decisions(row.id)
            disputed = " (in dispute: an admin resolves it)" if outcome(decisions, min_reviews).state == DISPUTE else ""
            meta += f" · reviews {len(decisions)} of {min_reviews}{disputed}"
        flags = "; ".join(row.flags) if row.flags else "none"
        return session, row.text, row.label, row.reasoning or "", flags, meta, self.progress_line(session), self._counts_table(store, session.dataset), message

    # -- queue ---------------------------------------------------------------------------
    def load_queue(
        self, status: str, label: str, search: str, min_length, max_length, flagged: str, order: str, dataset: str | None = None,
        reviewer: str | None = None, store: str | None = None,
    ):
        """The rows the filters select in the chosen store; with team review on, "pending" is the reviewer's own queue."""
        try:
            opened = self.open_store(store)
        except StoreError as error:
            return ReviewSession(), "", "", "", "", "", "", [], str(error)
        row_filter = self._filter(opened, status, label, search, min_length, max_length, flagged, order, dataset, reviewer)
        session = ReviewSession(
            queue=opened.query_ids(row_filter), dataset=row_filter.dataset, store=None if self.is_app_store(store) else store,
            pending_only=row_filter.status == Status.PENDING.value,
        )
        matched = len(session.queue)  # none: the view says why (no rows of the dataset yet, or the filters)
        return self.view(session, f"{matched} row{'s match' if matched != 1 else ' matches'}" if matched else "")

    @staticmethod
    def _filter(store: ReasoningStore, status, label, search, min_length, max_length, flagged, order, dataset=None, reviewer=None) -> RowFilter:
        mine = status == Status.PENDING.value and store.min_reviews() > 1  # team review: rows this reviewer has not decided
        return RowFilter(
            dataset=(dataset or "").strip() or None,
            status=None if status in (None, "all") else status,
            needs_review_by=reviewer_name(reviewer) if mine else None,
            label=None if label in (None, "", "all") else label,
            search=(search or "").strip() or None,
            min_length=int(min_length) if min_length not in (None, "") and min_length > 0 else None,
            max_length=int(max_length) if max_length not in (None, "") and max_length > 0 else None,
            flagged={"flagged only": True, "unflagged only": False}.get(flagged),
            order="flags" if order == "most flags first" else "id",
        )

    def skip(self, session: ReviewSession):
        return self.view(session, self._advance(session))

    def _advance(self, session: ReviewSession) -> str:
        """Move to the queue's next row; a "pending" queue passes over rows someone decided since it was loaded (two
        reviewers on one queue were each served the other's decided rows, and a click replaced the other's decision)."""
        if not session.queue:
            return ""
        session.position = min(session.position + 1, len(session.queue))
        store, passed = self._session_store(session), 0
        while session.pending_only and session.row_id is not None and store.get(session.row_id).status != Status.PENDING.value:
            session.position += 1
            passed += 1
        return f"Passed over {passed} row{'s' if passed != 1 else ''} decided by someone else since this queue was loaded." if passed else ""

    # -- decisions -------------------------------------------------------------------------
    def _page_behind(self, session: ReviewSession, shown_line: str | None) -> bool:
        """True when the page's Row or Resolve line (sent with a decision) names another row or version than the one
        this session is at: a reload of the queue or dispute list (another store, filter or dataset) reached the server
        while the page still showed the row before it. Without the line (an API caller) there is nothing to compare."""
        if not shown_line or session.row_id is None or session.version is None:
            return False
        shown = row_identity(self._session_store(session).get(session.row_id), session.version)
        return re.search(re.escape(shown) + r"\b", shown_line) is None  # \b: version 1 is not version 12

    def _behind_view(self, session: ReviewSession, reasoning: str | None):
        """Nothing decided: the queue's current row, and the reviewer's unsaved text in the message."""
        message = "Not saved: the queue changed while this page still showed the row before it; nothing was decided. Here is the queue's current row."
        return self.view(session, message + unsaved_text(reasoning))

    def _decide(
        self, session: ReviewSession, reviewer: str, status: str, reasoning: str | None, advance: bool = True, shown_meta: str | None = None
    ):
        if session.row_id is None:
            return self.view(session, "Nothing to review here.")
        if self._page_behind(session, shown_meta):
            return self._behind_view(session, reasoning)
        store = self._session_store(session)
        before = store.get(session.row_id)
        try:
            row = store.review(session.row_id, status, session.version, reviewer_name(reviewer), reasoning)
        except ConflictError as conflict:
            gr.Warning(str(conflict))
            current = conflict.current
            if status != Status.EDITED.value or reasoning is None or reasoning == current.reasoning:
                return self.view(session, f"Not saved: {conflict}", row=current)
            state, *rest = self.view(  # the reviewer's own edit stays in the box, theirs in the message
                session,
                f"Not saved: row {current.row_index} was changed by {current.reviewer or 'someone else'} after you opened it "
                f"(now {current.status}: “{current.reasoning or ''}”). Your edit is still in the box: Save edit again to put it in "
                "place of theirs.",
                row=current,
            )
            rest[2] = reasoning
            return (state, *rest)
        except ReasonappError as error:
            gr.Warning(str(error))
            state, *rest = self.view(session, f"Not saved: {error}")
            rest[2] = reasoning if reasoning is not None else rest[2]  # keep the reviewer's text in the box
            return (state, *rest)
        message = self._decision_message(store, row)
        if before.status != Status.PENDING.value and before.reviewer and before.reviewer != row.reviewer and store.min_reviews() <= 1:
            message = f"{message[:-1]} (replacing {before.reviewer}'s decision: {before.status})."
        if advance:
            passed = self._advance(session)
            return self.view(session, f"{message} {passed}".strip())
        return self.view(session, message, row=row)

    @staticmethod
    def _decision_message(store: ReasoningStore, row: StoredRow) -> str:
        """What a decision did: the row's status, or with team review on, where the row stands now."""
        min_reviews = store.min_reviews()
        last = store.history(row.id)[-1]["action"]
        if min_reviews <= 1 or last not in ("review", "agree"):
            return f"Row {row.row_index}: {row.status}."
        decisions = store.decisions(row.id)
        if last == "agree":
            return f"Row {row.row_index}: {row.status} ({len(decisions)} reviewers agree)."
        mine = next((d.decision for d in decisions if d.reviewer == row.reviewer), row.status)
        if outcome(decisions, min_reviews).state == DISPUTE:
            return f"Row {row.row_index}: your decision ({mine}) is recorded; reviewers disagree, so the row waits for an admin (Resolve)."
        return f"Row {row.row_index}: your decision ({mine}) is recorded ({len(decisions)} of {min_reviews} reviews)."

    def accept(self, session, reasoning: str, reviewer: str, shown_meta: str | None = None):
        return self._decide(session, reviewer, Status.ACCEPTED.value, reasoning, shown_meta=shown_meta)

    def reject(self, session, reasoning: str, reviewer: str, shown_meta: str | None = None):
        return self._decide(session, reviewer, Status.REJECTED.value, None, shown_meta=shown_meta)

    def save_edit(self, session, reasoning: str, reviewer: str, shown_meta: str | None = None):
        if self._page_behind(session, shown_meta):
            return self._behind_view(session, reasoning)
        if session.row_id is not None and (reasoning is None or self._session_store(session).get(session.row_id).reasoning == reasoning):
            return self.view(session, "No change to save: edit the reasoning first, or accept it as it is.")  # None: an API caller's
        return self._decide(session, reviewer, Status.EDITED.value, reasoning, shown_meta=shown_meta)

    def undo(self, session, reasoning: str, reviewer: str, shown_meta: str | None = None):
        # Undo the current row's last change, or else step back to the row just decided.
        if self._page_behind(session, shown_meta):
            return self._behind_view(session, None)
        store = self._session_store(session)
        target = session.row_id
        if target is None or store.get(target).status == Status.PENDING.value and len(store.history(target)) <= 1:
            if session.position > 0:
                session.position -= 1
                target = session.row_id
        if target is None:
            return self.view(session, "Nothing to undo.")
        try:
            if store.history(target)[-1]["action"] == "resolve":  # an admin's resolution is undone by an admin only
                current_policy().check(current_caller(), "resolve")
            others = current_policy().role(current_caller()) == ADMIN  # a reviewer takes back only their own decisions
            row = store.undo(target, store.get(target).version, reviewer_name(reviewer), others=others)
        except ReasonappError as error:
            return self.view(session, str(error))
        return self.view(session, f"Undone: row {row.row_index} is {row.status} again.", row=row)

    def regenerate(self, session, rgen_run: str | None):
        """A fresh sampled candidate in the box; nothing is stored until the reviewer accepts or saves it."""
        from reasonapp.prompts import LabelSpace
        from training.augment import generate_reasonings
        from training.generation import Decoding

        if session.row_id is None:
            return self.view(session, "Nothing to regenerate.")
        if not rgen_run:
            return self.view(session, "Pick an R-Gen run to regenerate with (train one with `--task rgen`).")
        store = self._session_store(session)
        row = store.get(session.row_id)
        if rgen_run not in rgen_run_choices() and current_policy().role(current_caller()) != ADMIN:
            return self.view(session, "Pick an R-Gen run from the list (other models are an admin's to load).", row=row)
        try:
            model, tokenizer, _ = _rgen_model(rgen_run)
        except ReasonappError as error:
            return self.view(session, str(error), row=row)
        labels = LabelSpace(tuple(store.label_names(row.dataset) or self.label_names), self.task_description)
        decoding = Decoding(max_new_tokens=64, do_sample=True)
        candidate = generate_reasonings(model, tokenizer, [row.text], [row.label], labels, decoding, batch_size=1)[0]
        state, *rest = self.view(session, "New candidate in the box: accept or save it to keep it.", row=row)
        rest[2] = candidate
        return (state, *rest)

    def bulk_accept(self, session, reviewer, status, label, search, min_length, max_length, flagged, order, dataset=None, store=None):
        """Accept every pending row the filters select in the chosen store; the queue reloads on it."""
        opened = self.open_store(store)
        row_filter = self._filter(opened, status, label, search, min_length, max_length, flagged, order, dataset, reviewer)
        result = opened.bulk_accept(row_filter, reviewer_name(reviewer))
        session = ReviewSession(queue=opened.query_ids(row_filter), dataset=row_filter.dataset, store=None if self.is_app_store(store) else store)
        message = f"Accepted {result.accepted} pending rows."
        if result.refused:
            reasons = sorted(set(result.refused.values()))
            message += f" {len(result.refused)} left pending, to edit or reject one by one: {'; '.join(reasons)}"
        return self.view(session, message)

    def export(
        self, name: str, include_pending: bool, policy: str = "keep-all", dropped: str = "remove", dataset: str | None = None,
        overwrite: bool = False, store: str | None = None,
    ) -> str:
        """Build the augmented training set of the chosen store under `<workspace>/exports/<name>` (the same as
        `python -m training export`)."""
        from training.augment import export_store, workspace_export_dir

        try:
            source = self.open_store(store).path  # first: a refused store writes no export folder either
            out = workspace_export_dir((name or "").strip() or "reviewed")
            provenance = export_store(source, out, include_pending, policy, dropped=dropped, dataset=dataset or None, overwrite=overwrite)
        except ReasonappError as error:
            return f"Not exported: {with_display_names(in_page_words(str(error)))}"
        dropped_note = f"; {provenance['dropped_by_policy']} reasonings dropped by {policy}" if policy != "keep-all" else ""
        task = "multitask" if dropped == "blank" else "Q→RA"
        return f"Exported {provenance['rows']} rows ({provenance['exported_status']}{dropped_note}) to {out}; train {task} on it with --dataset {out}"

    def bulk_preview(self, status, label, search, min_length, max_length, flagged, order, dataset=None, reviewer=None, store=None):
        opened = self.open_store(store)
        row_filter = self._filter(opened, status, label, search, min_length, max_length, flagged, order, dataset, reviewer)
        pending = sum(1 for i in opened.query_ids(row_filter) if opened.get(i).status == Status.PENDING.value)
        return gr.update(visible=True), f"Accept all {pending} pending rows in this filter?"

    # -- Stage 2 as a job: "Generate reasonings" -----------------------------------------------
    def stage2_start(self, source, prompt_variant, dataset, split, rows, decoding, candidates, batch_size, api_key_env=""):
        """Launch `python -m training augment` into this store as its own process (training.launcher.start_stage2)."""
        if self._store is None:
            return gr.skip(), self.open_error
        try:
            k = int(candidates or 1) if decoding == DECODINGS[1] else 1
            job = launcher.Stage2Settings(
                source=(source or "").strip(), dataset=(dataset or "").strip() or self.app_dataset or "", store=self.own_store(),
                split=(split or "").strip(), limit=int(rows or 0), prompt_variant=prompt_variant or "default", candidates=k,
                batch_size=int(batch_size or 1), api_key_env=(api_key_env or "").strip(),
            )
            job_dir = launcher.start_stage2(job)
        except (ReasonappError, ValueError) as error:
            return gr.skip(), f"Not started: {error}"
        return gr.update(choices=launcher.stage2_jobs(), value=str(job_dir)), self.stage2_state(str(job_dir))

    def stage2_state(self, job: str | None) -> str:
        """The job's line: state, rows done/total, rows/s, ETA (or why it failed)."""
        if not job:
            return "No Stage 2 job yet: choose the source and rows, then Start."
        if not launcher.is_workspace_job(job, launcher.LAUNCH_CONFIG):
            return "Not a Stage 2 job of this workspace: pick one from the list."
        line = launcher.stage2_line(launcher.stage2_state(job))
        into = launcher.launch_settings(job).get("store")
        if into and not self.is_app_store(into):  # the demo is shown: its rows are reviewed in the workspace store
            line += f" · into the {self._store_label(into)}: pick it in Store to review its rows"
        return line

    def stage2_stop(self, job: str | None) -> str:
        """SIGTERM to the job's processes: the rows it wrote stay in the store; Resume does the rest."""
        return self._stage2_act(launcher.stop_stage2, job, "Stopped: the rows written so far stay; Resume does the rest.")

    def stage2_resume(self, job: str | None) -> str:
        """The same settings again: rows that already have a reasoning are skipped."""
        return self._stage2_act(launcher.resume_stage2, job, "Resumed.")

    def _stage2_act(self, action, job: str | None, done: str) -> str:
        checked = self.stage2_state(job)
        if not job or checked.startswith(("No Stage 2", "Not a Stage 2")):
            return checked
        try:
            action(job)
        except ReasonappError as error:
            return f"{checked} · {error}"
        return f"{done} {self.stage2_state(job)}"

    def stage2_reattach(self):
        """After a page load: the list of jobs with the one under way selected (else the newest), its line, and the
        settings it was started with back in the form (the form keeps its values when no job runs)."""
        jobs = launcher.stage2_jobs()
        running = next((job for job in jobs if launcher.stage2_state(job)["state"] == "running"), None)
        chosen = running or (jobs[0] if jobs else None)
        form = stage2_form_values(running) if running else (gr.skip(),) * len(STAGE2_FORM_FIELDS)
        return gr.update(choices=jobs, value=chosen), self.stage2_state(chosen), *form

    # -- team review: agreement and the Resolve view ----------------------------------------
    def agreement(self, dataset: str | None = None, store: str | None = None) -> str:
        """The team's agreement and each reviewer's progress on the dataset (`reasonapp.agreement`)."""
        try:
            opened = self.open_store(store)
        except StoreError as error:
            return str(error)
        dataset = dataset or None
        summary = agreement_summary(opened.team_decisions(dataset))
        return agreement_line(summary, opened.min_reviews(), opened.counts(dataset)["in_dispute"])

    def disputes(self, dataset: str | None = None, store: str | None = None):
        """The rows in dispute (of the chosen dataset and store), the first one shown."""
        opened = self.open_store(store)
        queue = opened.query_ids(RowFilter(dataset=dataset or None, disputed=True))
        return self.dispute_view(ResolveSession(queue=queue, dataset=dataset or None, store=None if self.is_app_store(store) else store))

    def dispute_view(self, session: ResolveSession, message: str = ""):
        """(state, text, gold label, versions side by side, version picker, final reasoning, message) for the current dispute."""
        store = self._session_store(session)
        row = store.get(session.row_id) if session.row_id is not None else None
        if row is None:
            session.version = None
            done = f"{len(session.queue)} rows were in dispute; none is left here." if session.queue else "No rows in dispute."
            empty = {"headers": VERSION_HEADERS, "data": []}
            return session, "", "", empty, gr.update(choices=[], value=None), "", " ".join(filter(None, [message, done]))
        session.version = row.version
        decisions = store.decisions(row.id)
        versions = [["(generated)", "–", row.reasoning or ""]]
        versions += [[d.reviewer, d.decision, d.reasoning if d.reasoning is not None else "(rejected: no version)"] for d in decisions]
        kept = [d for d in decisions if d.reasoning is not None]
        choices = ["(generated)", *(d.reviewer for d in kept)]
        start = kept[0] if kept else None
        where = f"Dispute {session.position + 1} of {len(session.queue)}, {row_identity(row, row.version)}: "
        where += ", ".join(f"{d.reviewer} {d.decision}" for d in decisions) + "."
        return (
            session, row.text, row.label, {"headers": VERSION_HEADERS, "data": versions},
            gr.update(choices=choices, value=start.reviewer if start else "(generated)"),
            start.reasoning if start else row.reasoning or "", " ".join(filter(None, [message, where])),
        )

    def pick_version(self, session: ResolveSession, choice: str | None) -> str:
        """The chosen reviewer's version (or the generated one) in the box, to keep as it is or edit."""
        if session.row_id is None:
            return ""
        store = self._session_store(session)
        if choice and choice != "(generated)":
            for decision in store.decisions(session.row_id):
                if decision.reviewer == choice and decision.reasoning is not None:
                    return decision.reasoning
        return store.generated_reasoning(session.row_id) or ""

    def next_dispute(self, session: ResolveSession):
        if session.queue:
            session.position = min(session.position + 1, len(session.queue))
        return self.dispute_view(session)

    def _resolve(self, session: ResolveSession, reviewer: str, status: str, reasoning: str | None, shown_line: str | None = None):
        if session.row_id is None:
            return self.dispute_view(session, "Nothing to resolve here.")
        if self._page_behind(session, shown_line):
            return self.dispute_view(
                session,
                "Not resolved: the list of disputes changed while this page still showed another row; nothing was "
                "decided. Here is the list's current row." + unsaved_text(reasoning),
            )
        try:
            row = self._session_store(session).resolve(session.row_id, session.version, reviewer_name(reviewer), status, reasoning)
        except ConflictError as conflict:
            gr.Warning(str(conflict))
            return self.dispute_view(session, f"Not resolved: {conflict}")
        except ReasonappError as error:
            gr.Warning(str(error))
            state, *rest = self.dispute_view(session, f"Not resolved: {error}")
            rest[4] = reasoning if reasoning is not None else rest[4]  # keep the admin's text in the box
            return (state, *rest)
        session.position += 1
        return self.dispute_view(session, f"Row {row.row_index}: {row.status}, resolved by {row.reviewer}.")

    def resolve(self, session: ResolveSession, reasoning: str, reviewer: str, shown_line: str | None = None):
        """Finalise the row with the reasoning in the box: a reviewer's version, the generated one, or an admin's edit.

        `shown_line`: the page's Resolve line, sent back as with the review decisions (`row_identity`), so a page still
        showing the dispute before a reload of the list resolves nothing."""
        return self._resolve(session, reviewer, Status.ACCEPTED.value, reasoning, shown_line)

    def resolve_reject(self, session: ResolveSession, reviewer: str, shown_line: str | None = None):
        return self._resolve(session, reviewer, Status.REJECTED.value, None, shown_line)


def build_review_tab(
    handlers: ReviewHandlers, demo: gr.Blocks, signed_in_names: bool = False, page_dataset: gr.State | None = None
) -> tuple[gr.Dropdown, gr.Textbox, gr.Dropdown]:
    """The tab; with `signed_in_names` (a Space) decisions carry the signed-in user's name and no name field shows;
    `page_dataset` (the page's dataset, a State) is the one a store pick keeps in the Dataset filter where it can.

    Returns (dataset filter, Stage 2 dataset, Store) for the app-wide dataset switch; a new dataset filter reloads the queue.
    """
    session = gr.State(ReviewSession())
    first_dataset = handlers.default_dataset()
    with gr.Row():
        with gr.Column(scale=3):
            # choices are (label, path); allow_custom_value: a store that appeared after start is checked by the handlers
            store = gr.Dropdown(
                handlers.store_choices(), value=handlers.app_store, label="Store", allow_custom_value=True, elem_id="review-store",
                info="the app's own store, or an experiment's Stage 2 store (a pipeline paused for review waits on its store)",
            )
            with gr.Row():
                dataset = gr.Dropdown(
                    display_choices(handlers.dataset_choices(chosen=first_dataset)), value=first_dataset, label="Dataset", allow_custom_value=True,
                    elem_id="review-dataset", info="rows of this dataset only",
                )
                status = gr.Radio(STATUS_CHOICES, value="pending", label="Status")
                label = gr.Dropdown(["all", *handlers.label_names], value="all", label="Label")
                flagged = gr.Radio(["any", "flagged only", "unflagged only"], value="any", label="Flags")
            with gr.Row():
                search = gr.Textbox(label="Search text or reasoning", max_lines=1)
                min_length = gr.Number(label="Min reasoning chars", value=0, precision=0, minimum=0)
                max_length = gr.Number(label="Max reasoning chars", value=0, precision=0, minimum=0, info="0 = no limit")
                order = gr.Radio(["in order", "most flags first"], value="in order", label="Sort")
                apply = gr.Button("Apply filters", elem_id="review-apply")
            progress = gr.Textbox(label="Progress", interactive=False, elem_id="review-progress")
            text = gr.Textbox(label="Text", interactive=False, lines=3, elem_id="review-text")
            gold = gr.Textbox(label="Gold label", interactive=False, max_lines=1, elem_id="review-label")
            reasoning = gr.Textbox(label="Reasoning (editable)", lines=4, max_lines=12, elem_id="review-reasoning")
            flags = gr.Textbox(label="Quality flags", interactive=False, max_lines=2, elem_id="review-flags")
            meta = gr.Textbox(label="Row", interactive=False, max_lines=2, elem_id="review-meta")
            with gr.Row():
                accept = gr.Button(f"Accept ({SHORTCUTS['accept']})", variant="primary", elem_id="review-accept")
                save = gr.Button(f"Save edit ({SHORTCUTS['save']})", elem_id="review-save")
                reject = gr.Button(f"Reject ({SHORTCUTS['reject']})", variant="stop", elem_id="review-reject")
                skip = gr.Button(f"Skip ({SHORTCUTS['skip']})", elem_id="review-skip")
                undo = gr.Button(f"Undo ({SHORTCUTS['undo']})", elem_id="review-undo")
            message = gr.Textbox(label="Message", interactive=False, max_lines=3, elem_id="review-message")
            # in the wide column: six columns do not fit beside the guidelines
            counts = gr.Dataframe(
                headers=["label", *[s.value for s in Status], "total"], label="Counts", interactive=False, elem_id="review-counts"
            )
            with gr.Accordion("Resolve: rows where reviewers disagree (admins)", open=False, elem_id="review-resolve"):
                gr.Markdown(
                    "With team review on (`REASONAPP_MIN_REVIEWS` > 1), a row whose reviewers disagree waits here. Pick a "
                    "version to start from, edit it if needed, and keep it, or reject the row: that finalises it."
                )
                resolve_session = gr.State(ResolveSession())
                show_disputes = gr.Button("Show rows in dispute", elem_id="resolve-load")
                resolve_text = gr.Textbox(label="Text", interactive=False, lines=2, elem_id="resolve-text")
                resolve_gold = gr.Textbox(label="Gold label", interactive=False, max_lines=1, elem_id="resolve-label")
                versions = gr.Dataframe(
                    headers=VERSION_HEADERS, label="Each reviewer's decision", interactive=False, wrap=True, elem_id="resolve-versions"
                )
                pick = gr.Radio([], label="Start from the version of", elem_id="resolve-pick")
                final_reasoning = gr.Textbox(label="Final reasoning (editable)", lines=3, max_lines=12, elem_id="resolve-reasoning")
                with gr.Row():
                    keep = gr.Button("Keep this reasoning", variant="primary", elem_id="resolve-keep")
                    reject_row = gr.Button("Reject the row", variant="stop", elem_id="resolve-reject")
                    next_dispute = gr.Button("Next", elem_id="resolve-next")
                resolve_message = gr.Textbox(label="Resolve", interactive=False, max_lines=3, elem_id="resolve-message")
        with gr.Column(scale=1):
            reviewer = gr.Textbox(
                label="Reviewer name", value=local_user(), max_lines=1, max_length=MAX_NAME_CHARS, elem_id="review-reviewer",
                visible=not signed_in_names, info="signed in on a Space, your Hugging Face name is used",
            )
            with gr.Accordion("Guidelines", open=True):
                gr.Markdown(GUIDELINES)
            rgen_run = gr.Dropdown(rgen_run_choices(), label="R-Gen run for regenerate", allow_custom_value=True)
            rgen_seen = gr.State(None)  # the list keeps itself current as R-Gen runs finish
            gr.Timer(POLL_SECONDS).tick(refresh_rgen_runs, rgen_seen, [rgen_run, rgen_seen], api_visibility="private", show_progress="hidden")
            regenerate = gr.Button(f"Regenerate ({SHORTCUTS['regenerate']})", elem_id="review-regenerate")
            bulk = gr.Button("Accept all pending in this filter…", elem_id="review-bulk")
            with gr.Group(visible=False) as confirm_box:
                confirm_text = gr.Textbox(show_label=False, interactive=False)
                with gr.Row():
                    confirm = gr.Button("Yes, accept them", variant="primary", elem_id="review-bulk-confirm")
                    cancel = gr.Button("Cancel")
            sync_line = gr.Markdown(elem_id="review-sync")
            gr.Timer(10).tick(handlers.sync_status, store, sync_line, api_visibility="private", show_progress="hidden")
            demo.load(handlers.sync_status, store, sync_line, api_visibility="private")
            quality = gr.Textbox(label="Reasoning quality (all but rejected rows; Apply filters refreshes it)", interactive=False, lines=3, elem_id="review-quality")
            agreement = gr.Textbox(label="Team review: agreement and progress", interactive=False, lines=3, elem_id="review-agreement")
            with gr.Accordion("Generate reasonings (Stage 2, admins)", open=False, elem_id="review-stage2"):
                gr.Markdown(
                    "Runs `python -m training augment` into the app's own store (the first in the Store list, whichever store "
                    "you review) as its own process: rows appear in its queue as they are written (Apply filters). Stop keeps "
                    "the rows written; Resume runs the same settings and skips them."
                )
                stage2_source = gr.Dropdown(
                    stage2_source_choices(), value=stage2_source_choices()[0], label="R-Gen source", allow_custom_value=True,
                    elem_id="stage2-source",
                    info="a finished rgen run, base:<model> (an instruct model without Stage 1), or endpoint:<url>#<model> "
                    "(an OpenAI-compatible teacher: vLLM, SGLang, llama.cpp, Ollama, a hosted API)",
                )
                stage2_key_env = gr.Textbox(
                    "", label="API key variable (endpoint teacher)", max_lines=1, elem_id="stage2-key-env",
                    info="the NAME of the server's environment variable holding the key; the key itself never enters the page",
                )
                stage2_prompt = gr.Dropdown(list(STAGE2_PROMPTS), value="default", label="Prompt variant", elem_id="stage2-prompt")
                with gr.Row():
                    stage2_dataset = gr.Textbox(value=handlers.app_dataset or "", label="Dataset", max_lines=1, elem_id="stage2-dataset")
                    stage2_split = gr.Textbox(value="train", label="Split", max_lines=1, elem_id="stage2-split")
                with gr.Row():
                    stage2_rows = gr.Number(
                        value=STAGE2_DEFAULT_ROWS, precision=0, minimum=0, label="Rows",
                        info="a fixed random sample of this many; 0 = every row of the split (dair-ai/emotion's 16,000: hours on a CPU)", elem_id="stage2-rows",
                    )
                    stage2_batch = gr.Number(value=32, precision=0, minimum=1, label="Batch size", elem_id="stage2-batch")
                with gr.Row():
                    stage2_decoding = gr.Radio(DECODINGS, value="greedy", label="Decoding", elem_id="stage2-decoding")
                    stage2_k = gr.Number(value=4, precision=0, minimum=2, label="K (best-of-K)", elem_id="stage2-k",
                                         info="keeps the candidate with the fewest quality flags")
                stage2_job = gr.Dropdown(launcher.stage2_jobs(), label="Job", allow_custom_value=True, elem_id="stage2-job")
                with gr.Row():
                    stage2_start = gr.Button("Start", variant="primary", elem_id="stage2-start")
                    stage2_stop = gr.Button("Stop", variant="stop", elem_id="stage2-stop")
                    stage2_resume = gr.Button("Resume", elem_id="stage2-resume")
                stage2_line = gr.Textbox(label="Stage 2 job", interactive=False, max_lines=3, elem_id="stage2-state")
            with gr.Accordion("Export the augmented training set", open=False):
                export_dir = gr.Textbox(
                    label="Export name", placeholder="reviewed", max_lines=1, max_length=MAX_EXPORT_NAME, elem_id="review-export-name",
                    info="written to <workspace>/exports/<name>; letters, digits, '.', '_' and '-'",
                )
                with gr.Row():
                    include_pending = gr.Checkbox(label="Include rows nobody reviewed yet", value=False)
                    overwrite = gr.Checkbox(label="Replace an earlier export of this name", value=False)
                with gr.Row():
                    policy = gr.Dropdown(list(EXPORT_POLICIES), value="keep-all", label="Quality policy (by flags)")
                    dropped = gr.Radio(
                        list(DROPPED_ROWS), value="remove", label="Rows it drops",
                        info="blank: keep their text and label without the reasoning (for multitask)",
                    )
                export = gr.Button("Export accepted + edited rows", elem_id="review-export")
                export_message = gr.Textbox(label="Export", interactive=False, elem_id="review-export-message")

    # The store is every store-wide handler's last input; a loaded queue's handlers use the store it was loaded from.
    filters = [status, label, search, min_length, max_length, flagged, order, dataset]
    outputs = [session, text, gold, reasoning, flags, meta, progress, counts, message]
    apply.click(handlers.load_queue, [*filters, reviewer, store], outputs, api_name="review_queue")
    demo.load(handlers.load_queue, [*filters, reviewer, store], outputs, api_visibility="private")
    apply.click(handlers.quality_overview, [dataset, store], quality, api_name="review_quality")  # on load and on each filter apply
    demo.load(handlers.quality_overview, [dataset, store], quality, api_visibility="private")
    apply.click(handlers.agreement, [dataset, store], agreement, api_name="review_agreement")
    demo.load(handlers.agreement, [dataset, store], agreement, api_visibility="private")
    # Another dataset (this filter, or the app-wide switch and its restore on reload): its labels, queue and figures.
    chosen = dataset.change(handlers.dataset_changed, [dataset, store], label, api_visibility="private")
    chosen.then(handlers.load_queue, [*filters, reviewer, store], outputs, api_visibility="private")
    chosen.then(handlers.quality_overview, [dataset, store], quality, api_visibility="private")
    chosen.then(handlers.agreement, [dataset, store], agreement, api_visibility="private")
    # Another store: its datasets and labels in the filters, its queue, figures and where its decisions persist.
    picked = store.input(handlers.choose_store, [store, *([page_dataset] if page_dataset is not None else [])], [dataset, label], api_visibility="private")
    picked.then(handlers.load_queue, [*filters, reviewer, store], outputs, api_visibility="private")
    picked.then(handlers.quality_overview, [dataset, store], quality, api_visibility="private")
    picked.then(handlers.agreement, [dataset, store], agreement, api_visibility="private")
    picked.then(handlers.sync_status, store, sync_line, api_visibility="private")
    # the Row line goes back with a decision: a page still showing the row before a queue reload decides nothing
    accept.click(handlers.accept, [session, reasoning, reviewer, meta], outputs, api_name="review_accept")
    save.click(handlers.save_edit, [session, reasoning, reviewer, meta], outputs, api_name="review_save")
    reject.click(handlers.reject, [session, reasoning, reviewer, meta], outputs, api_name="review_reject")
    skip.click(handlers.skip, [session], outputs, api_name="review_skip")
    undo.click(handlers.undo, [session, reasoning, reviewer, meta], outputs, api_name="review_undo")
    regenerate.click(handlers.regenerate, [session, rgen_run], outputs, api_name="review_regenerate")
    bulk.click(handlers.bulk_preview, [*filters, reviewer, store], [confirm_box, confirm_text], api_visibility="private")
    confirm.click(handlers.bulk_accept, [session, reviewer, *filters, store], outputs, api_name="review_bulk_accept").then(
        lambda: gr.update(visible=False), None, confirm_box, api_visibility="private"
    )
    cancel.click(lambda: gr.update(visible=False), None, confirm_box, api_visibility="private")
    export.click(
        handlers.export, [export_dir, include_pending, policy, dropped, dataset, overwrite, store], export_message, api_name="review_export"
    )

    resolve_outputs = [resolve_session, resolve_text, resolve_gold, versions, pick, final_reasoning, resolve_message]
    show_disputes.click(handlers.disputes, [dataset, store], resolve_outputs, api_name="review_disputes")
    pick.input(handlers.pick_version, [resolve_session, pick], final_reasoning, api_visibility="private")
    keep.click(handlers.resolve, [resolve_session, final_reasoning, reviewer, resolve_message], resolve_outputs, api_name="review_resolve")
    reject_row.click(handlers.resolve_reject, [resolve_session, reviewer, resolve_message], resolve_outputs, api_name="review_resolve_reject")
    next_dispute.click(handlers.next_dispute, resolve_session, resolve_outputs, api_visibility="private")

    stage2_form = [stage2_source, stage2_prompt, stage2_dataset, stage2_split, stage2_rows, stage2_decoding, stage2_k, stage2_batch, stage2_key_env]
    stage2_start.click(handlers.stage2_start, stage2_form, [stage2_job, stage2_line], api_name="review_stage2_start")
    stage2_stop.click(handlers.stage2_stop, stage2_job, stage2_line, api_name="review_stage2_stop")
    stage2_resume.click(handlers.stage2_resume, stage2_job, stage2_line, api_name="review_stage2_resume")
    stage2_job.change(handlers.stage2_state, stage2_job, stage2_line, api_name="review_stage2_state")
    stage2_timer = gr.Timer(POLL_SECONDS)
    stage2_timer.tick(handlers.stage2_state, stage2_job, stage2_line, api_visibility="private", show_progress="hidden")
    # the lists keep themselves current: an R-Gen run that finishes, a job launched from another page (selected)
    sources_seen, jobs_seen = gr.State(None), gr.State(None)
    stage2_timer.tick(refresh_stage2_sources, sources_seen, [stage2_source, sources_seen], api_visibility="private", show_progress="hidden")
    stage2_timer.tick(refresh_stage2_jobs, jobs_seen, [stage2_job, jobs_seen], api_visibility="private", show_progress="hidden")
    # the Store list too: an experiment that reaches its review pause while the page is open appears, marked so
    stores_seen = gr.State(None)
    refresh_stores = refresh_on_change(lambda: tuple(handlers.store_choices()), lambda: gr.update(choices=handlers.store_choices()))
    stage2_timer.tick(refresh_stores, stores_seen, [store, stores_seen], api_visibility="private", show_progress="hidden")
    # a page load (a reload) reattaches to the job under way: selected, its settings back in the form
    demo.load(handlers.stage2_reattach, None, [stage2_job, stage2_line, *stage2_form], api_visibility="private")
    return dataset, stage2_dataset, store
