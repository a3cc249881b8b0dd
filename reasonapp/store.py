"""The reasoning store: every generated reasoning, its review status, and its full edit history.

One SQLite file (WAL mode, so the app can read while `augment` writes). One row per training
example: text, gold label, current reasoning, the generator that wrote it, status
(pending / accepted / edited / rejected), reviewer, timestamps, quality flags and a version number.
Every change appends to `history` first, so no edit is ever lost; a save names the version it edited,
and a save against a newer version is refused with the newer text (`ConflictError`), never applied.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from reasonapp import settings
from reasonapp.errors import ReasonappError
from reasonapp.quality import TEMPLATE_FLAG, TEMPLATE_MIN_ROWS, quality_flags, template_key

SCHEMA_VERSION = 1
MAX_REASONING_CHARS = 20_000


class StoreError(ReasonappError):
    """The store file cannot be used, or a change to it is not allowed."""


class ConflictError(StoreError):
    """Someone saved this row after you loaded it; `current` is the newer row."""

    def __init__(self, current: StoredRow):
        self.current = current
        super().__init__(
            f"row {current.id} was changed by {current.reviewer or 'someone else'} after you opened it "
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
class RowFilter:
    """What the review queue shows; every field optional."""

    status: str | None = None
    label: str | None = None
    search: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    flagged: bool | None = None
    generated_only: bool = True
    order: str = "id"  # "id" or "flags" (most flags first)


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
CREATE INDEX IF NOT EXISTS rows_status ON rows(status);
CREATE INDEX IF NOT EXISTS history_row ON history(row_id, version);
"""


def default_store_path() -> Path:
    return settings.workspace_dir() / "reasonings.sqlite"


class ReasoningStore:
    """Open (or create) a store file; safe to use from several processes at once."""

    def __init__(self, path: str | Path | None = None, label_names: Sequence[str] | None = None):
        self.path = Path(path) if path else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._check_file()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.executescript(_SCHEMA)
            self._check_schema()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise StoreError(f"{self.path} is not a reasonapp store ({error})") from error
        if label_names:
            self.set_label_names(label_names)
        else:
            self.label_names = self._meta_labels()

    # -- opening ---------------------------------------------------------------------------
    def _check_file(self) -> None:
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as handle:
                if handle.read(16) != b"SQLite format 3\x00":
                    raise StoreError(f"{self.path} is not a reasonapp store (not an SQLite database); it was left untouched")

    def _check_schema(self) -> None:
        found = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if found is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(found[0]) > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer reasonapp (store schema {found[0]}, this one reads {SCHEMA_VERSION}); upgrade reasonapp"
            )

    def _meta_labels(self) -> list[str]:
        found = self._db.execute("SELECT value FROM meta WHERE key = 'label_names'").fetchone()
        return json.loads(found[0]) if found else []

    def set_label_names(self, label_names: Sequence[str]) -> None:
        self.label_names = list(label_names)
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('label_names', ?)", (json.dumps(self.label_names),))

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self):
        self._db.execute("BEGIN IMMEDIATE")  # take the write lock up front: no lost updates between read and write
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def _row(record: sqlite3.Row) -> StoredRow:
        values = dict(record)
        values.pop("flag_count", None)
        values["generator"] = json.loads(values["generator"]) if values["generator"] else None
        values["flags"] = json.loads(values["flags"])
        return StoredRow(**values)

    def get(self, row_id: int) -> StoredRow:
        record = self._db.execute("SELECT * FROM rows WHERE id = ?", (row_id,)).fetchone()
        if record is None:
            raise StoreError(f"no row {row_id} in the store")
        return self._row(record)

    def history(self, row_id: int) -> list[dict]:
        records = self._db.execute("SELECT * FROM history WHERE row_id = ? ORDER BY id", (row_id,)).fetchall()
        return [dict(r) for r in records]

    def query_ids(self, row_filter: RowFilter | None = None, limit: int | None = None) -> list[int]:
        row_filter = row_filter or RowFilter()
        clauses, params = [], []
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
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "flag_count DESC, id" if row_filter.order == "flags" else "id"
        sql = f"SELECT id FROM rows {where} ORDER BY {order}" + (f" LIMIT {int(limit)}" if limit else "")
        return [r[0] for r in self._db.execute(sql, params).fetchall()]

    def counts(self) -> dict:
        by_status = dict(self._db.execute("SELECT status, count(*) FROM rows WHERE reasoning IS NOT NULL GROUP BY status").fetchall())
        by_label = {}
        for label, status, count in self._db.execute(
            "SELECT label, status, count(*) FROM rows WHERE reasoning IS NOT NULL GROUP BY label, status"
        ).fetchall():
            by_label.setdefault(label, {s.value: 0 for s in Status})[status] = count
        waiting = self._db.execute("SELECT count(*) FROM rows WHERE reasoning IS NULL").fetchone()[0]
        flagged = self._db.execute("SELECT count(*) FROM rows WHERE reasoning IS NOT NULL AND flag_count > 0").fetchone()[0]
        return {
            "status": {s.value: by_status.get(s.value, 0) for s in Status},
            "label": by_label,
            "not_generated": waiting,
            "flagged": flagged,
            "total": sum(by_status.values()),
        }

    # -- writing: generation ---------------------------------------------------------------
    def add_examples(self, dataset: str, split: str, examples: Iterable[tuple[int, str, str]]) -> int:
        """Register (row_index, text, label) rows to generate for; rows already present are kept as they are."""
        now = time.time()
        with self._transaction():
            before = self._db.total_changes
            self._db.executemany(
                "INSERT OR IGNORE INTO rows (dataset, split, row_index, text, label, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(dataset, split, int(i), text, label, now, now) for i, text, label in examples],
            )
            return self._db.total_changes - before

    def ids_needing_reasoning(self, dataset: str, split: str, row_indices: Sequence[int] | None = None) -> list[int]:
        rows = self._db.execute(
            "SELECT id, row_index FROM rows WHERE dataset = ? AND split = ? AND reasoning IS NULL AND status = 'pending' ORDER BY id",
            (dataset, split),
        ).fetchall()
        wanted = set(int(i) for i in row_indices) if row_indices is not None else None
        return [r[0] for r in rows if wanted is None or r[1] in wanted]

    def write_generated(self, results: Iterable[tuple[int, str]], generator: dict, overwrite_pending: bool = False) -> int:
        """Store freshly generated reasonings. A reviewed row (accepted/edited/rejected) is never overwritten."""
        now = time.time()
        written = 0
        generator_json = json.dumps(generator, sort_keys=True)
        with self._transaction():
            for row_id, reasoning in results:
                row = self.get(row_id)
                if row.status != Status.PENDING.value or (row.reasoning is not None and not overwrite_pending):
                    continue
                flags = quality_flags(reasoning, row.text, row.label, self.label_names)
                version = row.version + 1
                self._db.execute(
                    "UPDATE rows SET reasoning = ?, generator = ?, flags = ?, flag_count = ?, version = ?, updated_at = ? WHERE id = ?",
                    (reasoning, generator_json, json.dumps(flags), len(flags), version, now, row_id),
                )
                self._log(row_id, version, "generate", reasoning, Status.PENDING.value, None, generator_json, now)
                written += 1
        return written

    def mark_templates(self, min_rows: int = TEMPLATE_MIN_ROWS) -> int:
        """Flag reasonings that, label words masked, appear on `min_rows` or more rows; returns rows flagged.

        A corpus-level signal, so it is recomputed over the whole store (after a generation run).
        """
        records = self._db.execute("SELECT id, reasoning, flags FROM rows WHERE reasoning IS NOT NULL").fetchall()
        keys = {r["id"]: template_key(r["reasoning"], self.label_names) for r in records}
        counts: dict[str, int] = {}
        for key in keys.values():
            if key:
                counts[key] = counts.get(key, 0) + 1
        flagged = 0
        with self._transaction():
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

        `reasoning` given and different from the stored one makes it an edit (status `edited`).
        """
        status = Status(status).value
        reviewer = (reviewer or "").strip() or "anonymous"
        with self._change(row_id, expected_version) as row:
            text = row.reasoning if reasoning is None else reasoning
            if reasoning is not None and reasoning != row.reasoning:
                self._validate_reasoning(reasoning, status)
                if status == Status.ACCEPTED.value:
                    status = Status.EDITED.value
            elif status in (Status.ACCEPTED.value, Status.EDITED.value) and not (text or "").strip():
                raise StoreError("this reasoning is empty: edit it or reject the row")
            action = status if reasoning is None or reasoning == row.reasoning else "edit"
            self._apply(row, text, status, reviewer, action)
        return self.get(row_id)

    def undo(self, row_id: int, expected_version: int, reviewer: str) -> StoredRow:
        """Return a row to the state before its last change (itself recorded as a change: nothing is lost)."""
        reviewer = (reviewer or "").strip() or "anonymous"
        with self._change(row_id, expected_version) as row:
            states: list[dict] = []  # replay the history: each undo pops the change it undid
            for entry in self.history(row_id):
                if entry["action"] == "undo":
                    states.pop()
                else:
                    states.append(entry)
            if len(states) < 2:
                raise StoreError("nothing to undo on this row")
            target = states[-2]
            self._apply(row, target["reasoning"], target["status"], reviewer, "undo")
        return self.get(row_id)

    def bulk_accept(self, row_filter: RowFilter, reviewer: str) -> int:
        """Accept every pending row with a non-empty reasoning that the filter shows."""
        accepted = 0
        for row_id in self.query_ids(row_filter):
            row = self.get(row_id)
            if row.status == Status.PENDING.value and (row.reasoning or "").strip():
                try:
                    self.review(row_id, Status.ACCEPTED.value, row.version, reviewer)
                    accepted += 1
                except ConflictError:
                    continue  # changed meanwhile by someone else: theirs stands
        return accepted

    def _validate_reasoning(self, reasoning: str, status: str) -> None:
        if not reasoning.strip() and status != Status.REJECTED.value:
            raise StoreError("the edited reasoning is empty: write one, or reject the row")
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
        flags = quality_flags(reasoning, row.text, row.label, self.label_names)
        version = row.version + 1
        self._db.execute(
            "UPDATE rows SET reasoning = ?, status = ?, reviewer = ?, flags = ?, flag_count = ?, version = ?, updated_at = ? WHERE id = ?",
            (reasoning, status, reviewer, json.dumps(flags), len(flags), version, now, row.id),
        )
        self._log(row.id, version, action, reasoning, status, reviewer, None, now)

    def _log(self, row_id, version, action, reasoning, status, reviewer, generator, at) -> None:
        self._db.execute(
            "INSERT INTO history (row_id, version, action, reasoning, status, reviewer, generator, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row_id, version, action, reasoning, status, reviewer, generator, at),
        )

    # -- export ----------------------------------------------------------------------------
    def rows_for_export(self, include_pending: bool = False) -> list[StoredRow]:
        statuses = [Status.ACCEPTED.value, Status.EDITED.value] + ([Status.PENDING.value] if include_pending else [])
        marks = ", ".join("?" for _ in statuses)
        records = self._db.execute(
            f"SELECT * FROM rows WHERE reasoning IS NOT NULL AND status IN ({marks}) ORDER BY id", statuses
        ).fetchall()
        return [self._row(r) for r in records]
