"""The reasoning store: every generated reasoning, its review status, and its full edit history.

One SQLite file (WAL mode, so the app can read while `augment` writes). One row per training
example: its dataset, text, gold label, current reasoning, the generator that wrote it, status
(pending / accepted / edited / rejected), reviewer, timestamps, quality flags and a version number.
Each dataset keeps its own label set, so one store can hold several datasets without mixing them.
Every change appends to `history` first, so no edit is ever lost; a save names the version it edited,
and a save against a newer version is refused with the newer text (`ConflictError`), never applied.

Team review (optional overlap, `min_reviews` > 1, in `meta`): a reviewer's accept, edit or reject is then their own
decision on the row (table `reviews`, one per reviewer and row), and the row becomes final only when `min_reviews`
decisions agree (`reasonapp.agreement`); when two disagree it is in dispute until an admin resolves it. Each such
decision is a change like any other: it bumps the row's version, appends to `history` (with the row's decisions
after it) and to the decision log, and undo and replay bring the decisions back with the row.

Safety across threads and processes: one connection per store object, used under a lock (a Gradio app
calls it from several worker threads, and SQLite transactions belong to the connection, not the thread);
the file is only ever opened through SQLite (a plain `open()` + `close()` of the database file would drop
this process's SQLite locks, and the next process to close its connection would then delete the WAL that
this one still writes to); and a file deleted or replaced under an open store is noticed before a write.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from reasonapp import settings
from reasonapp.access import clean_name
from reasonapp.agreement import DISPUTE, FINAL, Decision, outcome
from reasonapp.errors import ReasonappError
from reasonapp.journal import DecisionLog, process_log
from reasonapp.quality import TEMPLATE_FLAG, TEMPLATE_MIN_ROWS, quality_flags, template_key

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_REASONING_CHARS = 20_000
MAX_MIN_REVIEWS = 10


class StoreError(ReasonappError):
    """The store file cannot be used, or a change to it is not allowed."""


class ConflictError(StoreError):
    """Someone saved this row after you loaded it; `current` is the newer row, named as the Row line names it."""

    def __init__(self, current: StoredRow):
        self.current = current
        super().__init__(
            f"row {current.row_index} of {current.dataset}/{current.split} was changed by {current.reviewer or 'someone else'} after you opened it "
            f"(now version {current.version}, {current.status}); their text is shown, re-apply your edit to it"
        )


class Status(str, enum.Enum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    EDITED = "edited"
    REJECTED = "rejected"


@dataclass
class StoredRow:
    id: int
    dataset: str
    split: str
    row_index: int
    text: str
    label: str
    reasoning: str | None
    generator: dict | None
    status: str
    reviewer: str | None
    flags: list[str]
    version: int
    created_at: float
    updated_at: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BulkResult:
    """What a bulk accept did: rows accepted, and rows left pending with the reason (e.g. a reasoning over the limit)."""

    accepted: int = 0
    refused: dict[int, str] = field(default_factory=dict)


@dataclass
class RowFilter:
    """What the review queue shows; every field optional."""

    dataset: str | None = None
    status: str | None = None
    label: str | None = None
    search: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    flagged: bool | None = None
    generated_only: bool = True
    order: str = "id"  # "id" or "flags" (most flags first)
    needs_review_by: str | None = None  # a reviewer's own queue: rows they have not decided that are neither final nor in dispute
    disputed: bool | None = None  # True: rows whose reviewers disagree (waiting for an admin); False: all others


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    id INTEGER PRIMARY KEY,
    dataset TEXT NOT NULL,
    split TEXT NOT NULL,
    row_index INTEGER NOT NULL,
    text TEXT NOT NULL,
    label TEXT NOT NULL,
    reasoning TEXT,
    generator TEXT,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'edited', 'rejected')),
    reviewer TEXT,
    flags TEXT NOT NULL DEFAULT '[]',
    flag_count INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (dataset, split, row_index)
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    row_id INTEGER NOT NULL REFERENCES rows(id),
    version INTEGER NOT NULL,
    action TEXT NOT NULL,
    reasoning TEXT,
    status TEXT NOT NULL,
    reviewer TEXT,
    generator TEXT,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reviews (
    row_id INTEGER NOT NULL REFERENCES rows(id),
    reviewer TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('accepted', 'edited', 'rejected')),
    reasoning TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (row_id, reviewer)
);
CREATE INDEX IF NOT EXISTS rows_status ON rows(status);
CREATE INDEX IF NOT EXISTS history_row ON history(row_id, version);
"""
# Decisions that agree have equal keys (reasonapp.agreement.agreement_key); a row whose decisions have two is in dispute.
_DISPUTED = (
    "(SELECT count(DISTINCT CASE v.decision WHEN 'edited' THEN 'edited:' || v.reasoning ELSE v.decision END) "
    "FROM reviews v WHERE v.row_id = rows.id) > 1"
)


def _labels_key(dataset: str) -> str:
    return f"labels:{dataset}"


def default_store_path() -> Path:
    return settings.workspace_dir() / "reasonings.sqlite"


def parse_min_reviews(value) -> int:
    """A `min_reviews` setting: a whole number from 1 (no overlap) to MAX_MIN_REVIEWS."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_MIN_REVIEWS:
        raise StoreError(f"min_reviews is a whole number from 1 (one decision finalises a row) to {MAX_MIN_REVIEWS}, not {value!r}")
    return number


def min_reviews_from_environment() -> int | None:
    """REASONAPP_MIN_REVIEWS, the reviews a row needs (the app writes it into its store at start); None when unset."""
    value = os.environ.get("REASONAPP_MIN_REVIEWS", "").strip()
    return parse_min_reviews(value) if value else None


class ReasoningStore:
    """Open (or create) a store file; safe to use from several threads and processes at once."""

    def __init__(self, path: str | Path | None = None, journal: DecisionLog | bool | None = True):
        """`journal`: where committed changes are also logged: True (default) this process's log when one is configured,
        a DecisionLog, or None/False for none (a replay, the demo store)."""
        self.path = Path(path) if path else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._journal = process_log() if journal is True else (journal or None)
        self.journal_error: str | None = None  # the last failure to log a committed change (kept and retried)
        self._unlogged: list[dict] = []
        self._pending: list[dict] = []  # events of the open transaction, logged once it commits
        self._connect()

    # -- opening ---------------------------------------------------------------------------
    def _connect(self) -> None:
        """Open the file through SQLite only, refusing (untouched) anything that is not a reasonapp store."""
        self._check_file()
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            self._db = db
            self._identity = self._file_identity()
            self._check_schema()
        except sqlite3.DatabaseError as error:
            db.close()
            self._db = None
            raise StoreError(f"{self.path} is not a reasonapp store ({error}); it was left untouched") from error

    def _check_file(self) -> None:
        """Look inside an existing file read-only, through SQLite: never with open(), whose close() drops SQLite's locks."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a store file")
        try:
            probe = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            try:
                tables = {r[0] for r in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                probe.close()
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{self.path} is not a reasonapp store (not an SQLite database: {error}); it was left untouched") from error
        if tables and not {"meta", "rows", "history"} <= tables:
            raise StoreError(
                f"{self.path} is an SQLite database of something else (tables: {', '.join(sorted(tables))}), "
                "not a reasonapp store; it was left untouched. Point REASONAPP_STORE or --store at another file"
            )

    def _check_schema(self) -> None:
        found = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if found is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(found[0]) > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer reasonapp (store schema {found[0]}, this one reads {SCHEMA_VERSION}); upgrade reasonapp"
            )
        if not self._history_has_reviews():  # stores from before team review: history gains the row's decisions
            with self._transaction():
                if not self._history_has_reviews():  # another process may have added it meanwhile
                    self._db.execute("ALTER TABLE history ADD COLUMN reviews TEXT")
        legacy = self._db.execute("SELECT value FROM meta WHERE key = 'label_names'").fetchone()
        if legacy is not None:  # one label list for the whole store (before datasets kept their own): give it to each dataset
            with self._transaction():
                for (dataset,) in self._db.execute("SELECT DISTINCT dataset FROM rows").fetchall():
                    self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (_labels_key(dataset), legacy[0]))
                self._db.execute("DELETE FROM meta WHERE key = 'label_names'")

    def _history_has_reviews(self) -> bool:
        return any(column[1] == "reviews" for column in self._db.execute("PRAGMA table_info(history)"))

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (stat.st_dev, stat.st_ino)

    def _ensure_same_file(self) -> None:
        """Before a write: the file must still be the one this connection opened. Replaced: reopen; deleted: refuse."""
        identity = self._file_identity()
        if identity == self._identity:
            return
        if identity is None:
            raise StoreError(
                f"the store file {self.path} was deleted or moved while it was open; nothing was saved. "
                "Restore the file, or restart to start a new store"
            )
        self._db.close()
        self._connect()

    def datasets(self) -> list[str]:
        """The datasets this store holds rows of."""
        return [r[0] for r in self._query("SELECT DISTINCT dataset FROM rows ORDER BY dataset")]

    def label_names(self, dataset: str) -> list[str]:
        """The label set of one dataset's rows (read from the file, so a label set another process wrote is seen)."""
        found = self._query("SELECT value FROM meta WHERE key = ?", (_labels_key(dataset),))
        return json.loads(found[0][0]) if found else []

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _query(self, sql: str, params: Sequence = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    @contextmanager
    def _transaction(self):
        """One write transaction of this store object's connection; other threads wait for it to end."""
        with self._lock:
            self._ensure_same_file()
            self._db.execute("BEGIN IMMEDIATE")  # take the write lock up front: no lost updates between read and write
            self._pending = []
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                self._pending = []
                raise
            self._db.execute("COMMIT")  # a change is reported done only after this returns
            if self._journal is not None and (self._pending or self._unlogged):
                events, self._pending = self._unlogged + self._pending, []
                try:
                    self._journal.append(events)
                    self._unlogged, self.journal_error = [], None
                except OSError as error:  # committed all the same: keep the events, retry at the next change
                    self._unlogged, self.journal_error = events, f"{len(events)} changes not yet in the decision log ({error})"
                    logger.error("decision log: %s", self.journal_error)
            self._pending = []

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def _row(record: sqlite3.Row) -> StoredRow:
        values = dict(record)
        values.pop("flag_count", None)
        values["generator"] = json.loads(values["generator"]) if values["generator"] else None
        values["flags"] = json.loads(values["flags"])
        return StoredRow(**values)

    def get(self, row_id: int) -> StoredRow:
        records = self._query("SELECT * FROM rows WHERE id = ?", (row_id,))
        if not records:
            raise StoreError(f"no row {row_id} in the store")
        return self._row(records[0])

    def history(self, row_id: int) -> list[dict]:
        return [dict(r) for r in self._query("SELECT * FROM history WHERE row_id = ? ORDER BY id", (row_id,))]

    # -- team review -----------------------------------------------------------------------
    def min_reviews(self) -> int:
        """Reviews a row needs before it is final (1: no overlap, one decision finalises it, the default)."""
        found = self._query("SELECT value FROM meta WHERE key = 'min_reviews'")
        return int(found[0][0]) if found else 1

    def set_min_reviews(self, min_reviews: int) -> int:
        """Set the overlap; rows whose decisions now suffice and agree become final. Returns how many did.

        Final rows stay final when it is raised; a row in dispute stays in dispute when it is lowered.
        """
        min_reviews = parse_min_reviews(min_reviews)
        finalised = 0
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('min_reviews', ?)", (str(min_reviews),))
            waiting = self._db.execute(
                "SELECT DISTINCT r.id FROM rows r JOIN reviews v ON v.row_id = r.id WHERE r.status = 'pending' ORDER BY r.id"
            ).fetchall()
            for (row_id,) in waiting:
                decisions = self.decisions(row_id)
                state = outcome(decisions, min_reviews)
                if state.state == FINAL:
                    row = self.get(row_id)
                    last = max(decisions, key=lambda d: d.at)
                    self._apply(row, *self._agreed(row, state.agreed), last.reviewer, "agree")
                    finalised += 1
        return finalised

    def decisions(self, row_id: int) -> list[Decision]:
        """Each reviewer's decision on a row (team review), oldest first."""
        records = self._query("SELECT reviewer, decision, reasoning, at FROM reviews WHERE row_id = ? ORDER BY at, reviewer", (row_id,))
        return [Decision(**dict(r)) for r in records]

    def team_decisions(self, dataset: str | None = None) -> dict[int, list[Decision]]:
        """Every row with reviewers' decisions (of one dataset, or of all): row id -> its decisions, oldest first."""
        where, params = ("WHERE r.dataset = ?", (dataset,)) if dataset else ("", ())
        found: dict[int, list[Decision]] = {}
        for record in self._query(
            f"SELECT v.row_id, v.reviewer, v.decision, v.reasoning, v.at FROM reviews v JOIN rows r ON r.id = v.row_id {where} "
            "ORDER BY v.row_id, v.at, v.reviewer",
            params,
        ):
            values = dict(record)
            found.setdefault(values.pop("row_id"), []).append(Decision(**values))
        return found

    def query_ids(self, row_filter: RowFilter | None = None, limit: int | None = None) -> list[int]:
        row_filter = row_filter or RowFilter()
        clauses, params = [], []
        if row_filter.dataset:
            clauses.append("dataset = ?")
            params.append(row_filter.dataset)
        if row_filter.generated_only:
            clauses.append("reasoning IS NOT NULL")
        if row_filter.status:
            clauses.append("status = ?")
            params.append(Status(row_filter.status).value)
        if row_filter.label:
            clauses.append("label = ?")
            params.append(row_filter.label)
        if row_filter.search:
            clauses.append("(instr(lower(text), lower(?)) > 0 OR instr(lower(coalesce(reasoning, '')), lower(?)) > 0)")
            params += [row_filter.search, row_filter.search]
        if row_filter.min_length is not None:
            clauses.append("length(coalesce(reasoning, '')) >= ?")
            params.append(row_filter.min_length)
        if row_filter.max_length is not None:
            clauses.append("length(coalesce(reasoning, '')) <= ?")
            params.append(row_filter.max_length)
        if row_filter.flagged is not None:
            clauses.append("flag_count > 0" if row_filter.flagged else "flag_count = 0")
        if row_filter.needs_review_by is not None:
            clauses.append(f"status = 'pending' AND NOT {_DISPUTED} AND NOT EXISTS (SELECT 1 FROM reviews v WHERE v.row_id = rows.id AND v.reviewer = ?)")
            params.append(clean_name(row_filter.needs_review_by, "anonymous"))
        if row_filter.disputed is not None:
            clauses.append(f"status = 'pending' AND {_DISPUTED}" if row_filter.disputed else f"NOT (status = 'pending' AND {_DISPUTED})")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "flag_count DESC, id" if row_filter.order == "flags" else "id"
        sql = f"SELECT id FROM rows {where} ORDER BY {order}" + (f" LIMIT {int(limit)}" if limit else "")
        return [r[0] for r in self._query(sql, params)]

    def counts(self, dataset: str | None = None) -> dict:
        """Rows by status and by label (of one dataset, or of all), with those waiting for a reasoning and those flagged."""
        where, params = ("AND dataset = ?", (dataset,)) if dataset else ("", ())
        by_status = dict(self._query(f"SELECT status, count(*) FROM rows WHERE reasoning IS NOT NULL {where} GROUP BY status", params))
        by_label = {}
        for label, status, count in self._query(
            f"SELECT label, status, count(*) FROM rows WHERE reasoning IS NOT NULL {where} GROUP BY label, status", params
        ):
            by_label.setdefault(label, {s.value: 0 for s in Status})[status] = count
        waiting = self._query(f"SELECT count(*) FROM rows WHERE reasoning IS NULL {where}", params)[0][0]
        flagged = self._query(f"SELECT count(*) FROM rows WHERE reasoning IS NOT NULL AND flag_count > 0 {where}", params)[0][0]
        disputed, reviewed = self._query(
            f"SELECT coalesce(sum({_DISPUTED}), 0), count(*) FROM rows WHERE status = 'pending' "
            f"AND EXISTS (SELECT 1 FROM reviews v WHERE v.row_id = rows.id) {where}",
            params,
        )[0]
        return {
            "status": {s.value: by_status.get(s.value, 0) for s in Status},
            "label": by_label,
            "not_generated": waiting,
            "flagged": flagged,
            "total": sum(by_status.values()),
            "in_dispute": disputed,  # team review: pending rows whose reviewers disagree
            "awaiting_reviews": reviewed - disputed,  # pending rows with some decisions, too few yet
        }

    # -- writing: generation ---------------------------------------------------------------
    def add_examples(
        self, dataset: str, split: str, examples: Iterable[tuple[int, str, str]], label_names: Sequence[str] | None = None
    ) -> int:
        """Register (row_index, text, label) rows to generate for; rows already present are kept as they are.

        `label_names` is the dataset's label set (needed once per dataset): a dataset already in the store
        with another label set is refused, so a second dataset never changes the first one's labels.
        """
        examples = list(examples)
        now = time.time()
        with self._transaction():
            known = self._db.execute("SELECT value FROM meta WHERE key = ?", (_labels_key(dataset),)).fetchone()
            if label_names is not None:
                names = [str(name) for name in label_names]
                if known is not None and json.loads(known[0]) != names:
                    raise StoreError(
                        f"this store holds {dataset} with the labels {json.loads(known[0])}, not {names}; "
                        "use another store (--store) for a different label set"
                    )
                self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (_labels_key(dataset), json.dumps(names)))
            elif known is None:
                raise StoreError(f"{dataset} is new to this store: give its label names")
            names = label_names if label_names is not None else json.loads(known[0])
            unknown = sorted({label for _, _, label in examples} - set(names))
            if unknown:
                raise StoreError(f"labels {unknown} are not in {dataset}'s label set {list(names)}")
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO rows (dataset, split, row_index, text, label, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(dataset, split, int(i), text, label, now, now) for i, text, label in examples],
            )
            return self._db.total_changes - before

    def ids_needing_reasoning(self, dataset: str, split: str, row_indices: Sequence[int] | None = None) -> list[int]:
        rows = self._query(
            "SELECT id, row_index FROM rows WHERE dataset = ? AND split = ? AND reasoning IS NULL AND status = 'pending' ORDER BY id",
            (dataset, split),
        )
        wanted = set(int(i) for i in row_indices) if row_indices is not None else None
        return [r[0] for r in rows if wanted is None or r[1] in wanted]

    def write_generated(self, results: Iterable[tuple[int, str]], generator: dict, overwrite_pending: bool = False) -> int:
        """Store freshly generated reasonings. A reviewed row (accepted/edited/rejected, or with reviewers' decisions) is never overwritten."""
        now = time.time()
        written = 0
        generator_json = json.dumps(generator, sort_keys=True)
        with self._transaction():
            for row_id, reasoning in results:
                row = self.get(row_id)
                if row.status != Status.PENDING.value or (row.reasoning is not None and not overwrite_pending):
                    continue
                if self._db.execute("SELECT 1 FROM reviews WHERE row_id = ?", (row_id,)).fetchone():
                    continue  # reviewers decided on this text: a new one would change what they agreed to
                flags = quality_flags(reasoning, row.text, row.label, self.label_names(row.dataset))
                version = row.version + 1
                self._db.execute(
                    "UPDATE rows SET reasoning = ?, generator = ?, flags = ?, flag_count = ?, version = ?, updated_at = ? WHERE id = ?",
                    (reasoning, generator_json, json.dumps(flags), len(flags), version, now, row_id),
                )
                self._log(row_id, version, "generate", reasoning, Status.PENDING.value, None, generator_json, now)
                written += 1
        return written

    def mark_templates(self, min_rows: int = TEMPLATE_MIN_ROWS) -> int:
        """Flag reasonings that, label words masked, appear on `min_rows` or more rows of their dataset; returns rows flagged.

        A corpus-level signal, so it is recomputed over the whole store (after a generation run).
        """
        with self._transaction():
            records = self._db.execute("SELECT id, dataset, reasoning, flags FROM rows WHERE reasoning IS NOT NULL").fetchall()
            labels = {dataset: self.label_names(dataset) for dataset in {r["dataset"] for r in records}}
            keys = {r["id"]: (r["dataset"], template_key(r["reasoning"], labels[r["dataset"]])) for r in records}
            counts = Counter(key for key in keys.values() if key[1])
            flagged = 0
            for record in records:
                flags = [f for f in json.loads(record["flags"]) if not f.startswith("template")]
                count = counts.get(keys[record["id"]], 0)
                if count >= min_rows:
                    flags.append(TEMPLATE_FLAG.format(count=count))
                    flagged += 1
                self._db.execute("UPDATE rows SET flags = ?, flag_count = ? WHERE id = ?", (json.dumps(flags), len(flags), record["id"]))
        return flagged

    # -- writing: review -------------------------------------------------------------------
    def review(self, row_id: int, status: str, expected_version: int, reviewer: str, reasoning: str | None = None) -> StoredRow:
        """Accept, reject or edit a row you loaded at `expected_version`.

        `reasoning` given and different from the stored one makes it an edit (status `edited`). An accepted
        or edited reasoning is checked the same way however it got there (a single save or a bulk accept).

        With team review on (`min_reviews` > 1) this is the reviewer's own decision (`_decide_as_reviewer`):
        the row is final only once enough decisions agree.
        """
        status = Status(status).value
        reviewer = clean_name(reviewer, "anonymous")  # one printable line, bounded, whoever calls
        with self._transaction():
            min_reviews = self.min_reviews()
            row = self.get(row_id)
            if min_reviews > 1:
                self._check_version_for_decision(row, expected_version, reviewer)
            elif row.version != expected_version:
                raise ConflictError(row)
            edited = reasoning is not None and reasoning != row.reasoning
            text = reasoning if edited else row.reasoning
            if edited and status == Status.ACCEPTED.value:
                status = Status.EDITED.value
            if edited or status != Status.REJECTED.value:
                self._validate_reasoning(text or "", status)
            if min_reviews > 1:
                self._decide_as_reviewer(row, reviewer, status, text, edited, min_reviews)
            else:
                self._apply(row, text, status, reviewer, "edit" if edited else status)
        return self.get(row_id)

    def _check_version_for_decision(self, row: StoredRow, expected_version: int, reviewer: str) -> None:
        """The conflict rule of team review: a decision made on `expected_version` stands unless what the reviewer saw
        changed since, i.e. unless a later change is anything but another reviewer's decision that left the row pending
        (the text, the status or this reviewer's own decision changed: `ConflictError`, as for a single reviewer)."""
        if row.version == expected_version:
            return
        later = self._db.execute(
            "SELECT action, reviewer FROM history WHERE row_id = ? AND version > ? ORDER BY version", (row.id, expected_version)
        ).fetchall()
        if expected_version > row.version or not later or any(action != "review" or name == reviewer for action, name in later):
            raise ConflictError(row)

    def _decide_as_reviewer(self, row: StoredRow, reviewer: str, status: str, text: str | None, edited: bool, min_reviews: int) -> None:
        """Record one reviewer's decision (replacing their earlier one); finalise the row when `min_reviews` agree."""
        if status == Status.PENDING.value:
            raise StoreError("a review decision is accepted, edited or rejected")
        if row.status != Status.PENDING.value:
            raise StoreError(
                f"row {row.id} is final ({row.status}, last by {row.reviewer}); with {min_reviews} reviews a row, "
                "only an admin changes it now (Resolve)"
            )
        decisions = {d.reviewer: d for d in self.decisions(row.id)}
        if outcome(list(decisions.values()), min_reviews).state == DISPUTE and reviewer not in decisions:
            raise StoreError(
                f"row {row.id} is in dispute between {', '.join(sorted(decisions))}: it waits for an admin to resolve it, "
                "and takes no more reviews"
            )
        if status == Status.EDITED.value and not edited:
            status = Status.ACCEPTED.value  # the generated text kept as it is: an accept, whatever the button said
        mine = Decision(reviewer, status, None if status == Status.REJECTED.value else text, time.time())
        self._db.execute(
            "INSERT OR REPLACE INTO reviews (row_id, reviewer, decision, reasoning, at) VALUES (?, ?, ?, ?, ?)",
            (row.id, mine.reviewer, mine.decision, mine.reasoning, mine.at),
        )
        decisions[reviewer] = mine
        state = outcome(sorted(decisions.values(), key=lambda d: d.at), min_reviews)
        if state.state == FINAL:
            self._apply(row, *self._agreed(row, state.agreed), reviewer, "agree")
        else:
            self._apply(row, row.reasoning, Status.PENDING.value, reviewer, "review")

    def _agreed(self, row: StoredRow, agreed: Decision) -> tuple[str | None, str]:
        """(reasoning, status) of a row whose reviewers agree on `agreed`."""
        if agreed.decision == Status.REJECTED.value:
            return row.reasoning, Status.REJECTED.value
        return agreed.reasoning, agreed.decision

    def resolve(self, row_id: int, expected_version: int, reviewer: str, status: str, reasoning: str | None = None) -> StoredRow:
        """An admin's final word on a row (one in dispute, or any other): keep `reasoning` or reject the row.

        The kept text is `accepted` when it is the generated reasoning, else `edited`; the change is recorded as
        action `resolve` under the admin's name. The reviewers' own decisions stay as they were (they are the
        agreement figures). Any change since `expected_version`, a new decision included, is a conflict.
        """
        status = Status(status).value
        if status == Status.PENDING.value:
            raise StoreError("a resolution keeps a reasoning (accepted or edited) or rejects the row")
        reviewer = clean_name(reviewer, "anonymous")
        with self._change(row_id, expected_version) as row:
            if status == Status.REJECTED.value:
                text = row.reasoning
            else:
                text = reasoning if reasoning is not None else row.reasoning
                status = Status.ACCEPTED.value if text == self.generated_reasoning(row.id) else Status.EDITED.value
                self._validate_reasoning(text or "", status)
            self._apply(row, text, status, reviewer, "resolve")
        return self.get(row_id)

    def generated_reasoning(self, row_id: int) -> str | None:
        """The reasoning as last generated for the row (before any reviewer changed it)."""
        found = self._query("SELECT reasoning FROM history WHERE row_id = ? AND action = 'generate' ORDER BY version DESC LIMIT 1", (row_id,))
        return found[0][0] if found else self.get(row_id).reasoning

    def undo(self, row_id: int, expected_version: int, reviewer: str, others: bool = True) -> StoredRow:
        """Return a row to the state before its last change (itself recorded as a change: nothing is lost).

        `others=False` (a reviewer, not an admin): only the reviewer's own last change may be undone, checked
        under the write lock, so nobody can take back a colleague's decision.
        """
        reviewer = clean_name(reviewer, "anonymous")  # one printable line, bounded, whoever calls
        with self._change(row_id, expected_version) as row:
            states: list[dict] = []  # replay the history: each undo pops the change it undid
            for entry in self.history(row_id):
                if entry["action"] == "undo":
                    states.pop()
                else:
                    states.append(entry)
            if len(states) < 2:
                raise StoreError("nothing to undo on this row")
            if not others and states[-1]["reviewer"] != reviewer:
                raise StoreError(f"the last change to this row is {states[-1]['reviewer'] or 'generation'}'s; you may undo only your own")
            target = states[-2]
            self._set_decisions(row_id, [Decision(**d) for d in json.loads(target.get("reviews") or "[]")])
            self._apply(row, target["reasoning"], target["status"], reviewer, "undo")
        return self.get(row_id)

    def _set_decisions(self, row_id: int, decisions: Iterable[Decision]) -> None:
        """Replace a row's reviewers' decisions (undo and replay bring back those of an earlier state)."""
        self._db.execute("DELETE FROM reviews WHERE row_id = ?", (row_id,))
        self._db.executemany(
            "INSERT INTO reviews (row_id, reviewer, decision, reasoning, at) VALUES (?, ?, ?, ?, ?)",
            [(row_id, d.reviewer, d.decision, d.reasoning, d.at) for d in decisions],
        )

    def bulk_accept(self, row_filter: RowFilter, reviewer: str) -> BulkResult:
        """Accept every pending row the filter shows whose reasoning passes the same checks as a single accept.

        With team review on, the reviewer's accept of each row in their own queue (rows they have not decided).
        """
        result = BulkResult()
        if self.min_reviews() > 1:
            row_filter = replace(row_filter, needs_review_by=reviewer)
        for row_id in self.query_ids(row_filter):
            row = self.get(row_id)
            if row.status != Status.PENDING.value:
                continue
            try:
                self.review(row_id, Status.ACCEPTED.value, row.version, reviewer)
                result.accepted += 1
            except ConflictError:
                continue  # changed meanwhile by someone else: theirs stands
            except StoreError as error:
                result.refused[row_id] = str(error)
        return result

    def _validate_reasoning(self, reasoning: str, status: str) -> None:
        if not reasoning.strip() and status != Status.REJECTED.value:
            raise StoreError("this reasoning is empty: write one, or reject the row")
        if len(reasoning) > MAX_REASONING_CHARS:
            raise StoreError(
                f"the reasoning is {len(reasoning):,} characters; the limit is {MAX_REASONING_CHARS:,} (reasonings are a few sentences)"
            )

    @contextmanager
    def _change(self, row_id: int, expected_version: int):
        """The row under the write lock, provided nobody changed it since `expected_version` was read."""
        with self._transaction():
            row = self.get(row_id)
            if row.version != expected_version:
                raise ConflictError(row)
            yield row

    def _apply(self, row: StoredRow, reasoning: str | None, status: str, reviewer: str, action: str) -> None:
        """Write a reviewer's change to a row, re-flag it, bump its version, and record it in the history."""
        now = time.time()
        flags = quality_flags(reasoning, row.text, row.label, self.label_names(row.dataset))
        version = row.version + 1
        self._db.execute(
            "UPDATE rows SET reasoning = ?, status = ?, reviewer = ?, flags = ?, flag_count = ?, version = ?, updated_at = ? WHERE id = ?",
            (reasoning, status, reviewer, json.dumps(flags), len(flags), version, now, row.id),
        )
        self._log(row.id, version, action, reasoning, status, reviewer, None, now)

    def _log(self, row_id, version, action, reasoning, status, reviewer, generator, at) -> None:
        """Append the change to `history` (with the row's reviewers' decisions after it) and to the decision log."""
        decisions = [d.to_dict() for d in self.decisions(row_id)]
        self._db.execute(
            "INSERT INTO history (row_id, version, action, reasoning, status, reviewer, generator, at, reviews) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row_id, version, action, reasoning, status, reviewer, generator, at, json.dumps(decisions, sort_keys=True) if decisions else None),
        )
        if self._journal is not None:
            row = self.get(row_id)
            self._pending.append(
                {
                    "dataset": row.dataset, "split": row.split, "row_index": row.row_index, "text": row.text, "label": row.label,
                    "label_names": self.label_names(row.dataset), "version": version, "action": action, "reasoning": reasoning,
                    "status": status, "reviewer": reviewer, "generator": generator, "at": at, "reviews": decisions,
                }
            )

    # -- restoring from the decision log ---------------------------------------------------
    def restore_event(self, event: dict) -> int:
        """Apply one logged change if this store does not have it yet (its row is older); 1 if applied, else 0.

        An event's `reviews` (the row's reviewers' decisions after the change) replace the row's; an event logged
        before team review has none and leaves them as they are.
        """
        with self._transaction():
            found = self._db.execute(
                "SELECT id, version FROM rows WHERE dataset = ? AND split = ? AND row_index = ?",
                (event["dataset"], event["split"], event["row_index"]),
            ).fetchone()
            if found is None:
                self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (_labels_key(event["dataset"]), json.dumps(event["label_names"])))
                cursor = self._db.execute(
                    "INSERT INTO rows (dataset, split, row_index, text, label, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (event["dataset"], event["split"], event["row_index"], event["text"], event["label"], event["at"], event["at"]),
                )
                row_id, version = cursor.lastrowid, 0
            else:
                row_id, version = found
            if version >= event["version"]:
                return 0
            row = self.get(row_id)
            flags = quality_flags(event["reasoning"], row.text, row.label, self.label_names(row.dataset))
            self._db.execute(
                "UPDATE rows SET reasoning = ?, status = ?, reviewer = ?, generator = coalesce(?, generator), flags = ?, flag_count = ?, "
                "version = ?, updated_at = ? WHERE id = ?",
                (event["reasoning"], event["status"], event["reviewer"], event["generator"], json.dumps(flags), len(flags),
                 event["version"], event["at"], row_id),
            )
            if "reviews" in event:
                self._set_decisions(row_id, [Decision(**d) for d in event["reviews"]])
            self._db.execute(
                "INSERT INTO history (row_id, version, action, reasoning, status, reviewer, generator, at, reviews) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (row_id, event["version"], event["action"], event["reasoning"], event["status"], event["reviewer"], event["generator"],
                 event["at"], json.dumps(event["reviews"], sort_keys=True) if event.get("reviews") else None),
            )
        return 1

    # -- export ----------------------------------------------------------------------------
    def rows_for_export(self, include_pending: bool = False, dataset: str | None = None) -> list[StoredRow]:
        statuses = [Status.ACCEPTED.value, Status.EDITED.value] + ([Status.PENDING.value] if include_pending else [])
        marks = ", ".join("?" for _ in statuses)
        where, params = ("AND dataset = ?", [dataset]) if dataset else ("", [])
        records = self._query(
            f"SELECT * FROM rows WHERE reasoning IS NOT NULL AND status IN ({marks}) {where} ORDER BY id", [*statuses, *params]
        )
        return [self._row(r) for r in records]
