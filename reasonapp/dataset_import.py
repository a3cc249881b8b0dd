"""Datasets of one's own: read uploaded files (or a Hub id / directory), check them, save them into the workspace.

An import goes in three steps, so that a page can show what will be saved before anything is written:

- `read_upload(paths)` / `read_source(source)`: the raw rows, their columns, a preview, and guessed text/label columns;
  an upload's files are checked (format, size limit, empty, UTF-8) before pandas reads them;
- `plan_import(raw, text_column, label_column, ...)`: the rows as `text` + `label` per split, the labels checked
  (none missing, not integers and names mixed, none only in validation/test), a single file split stratified by
  label with a seed; nothing is written;
- `save_import(plan, name)`: written to `<workspace>/datasets/<name>/` as a directory `load_classification_dataset`
  reads (train/validation/test.jsonl, labels.json, provenance.json), through a staging folder that the loader reads
  back before one rename puts it in place. A failure at any step leaves the workspace as it was.

`import_files` and `import_source` do all three (the CLI's `data-import` and the tests call them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from reasonapp import settings
from reasonapp.data import SPLIT_ALIASES, check_utf8, load_classification_dataset, load_source
from reasonapp.errors import ConfigError, DataError

UPLOAD_FORMATS = (".csv", ".jsonl", ".json", ".parquet")
DEFAULT_MAX_FILE_MB = 50.0
MAX_NAME_CHARS = 64
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PROVENANCE = "provenance.json"
LABELS_FILE = "labels.json"
SPLITS = ("train", "validation", "test")
DEFAULT_VALIDATION_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.1
PREVIEW_ROWS = 8
PREVIEW_CHARS = 300
TEXT_GUESSES = ("text", "sentence", "content", "review", "body", "message", "question", "input", "document", "tweet", "utterance")
LABEL_GUESSES = ("label", "labels", "class", "category", "target", "intent", "emotion", "sentiment", "topic", "answer", "gold")
INTEGER = re.compile(r"-?\d+")


def max_file_bytes() -> int:
    """The size limit of one uploaded file: REASONAPP_MAX_UPLOAD_MB (default 50 MB), checked before a file is read."""
    configured = os.environ.get("REASONAPP_MAX_UPLOAD_MB")
    try:
        megabytes = float(configured) if configured else DEFAULT_MAX_FILE_MB
    except ValueError:
        raise ConfigError(f"REASONAPP_MAX_UPLOAD_MB={configured!r} is not a number of megabytes") from None
    return int(megabytes * 1_000_000)


def datasets_root() -> Path:
    """Where imported datasets live (not created until one is saved)."""
    return settings.workspace_dir() / "datasets"


def display_name(dataset: str | None) -> str:
    """How a page names a dataset: an imported one by its name and "(workspace)" (its value is a directory path that
    says little and can be long), anything else (a Hub id, another directory) as given."""
    dataset = dataset or ""
    try:
        path = Path(dataset).resolve()
    except (OSError, ValueError):
        return dataset
    if dataset and path.parent == datasets_root().resolve() and (path / PROVENANCE).is_file():
        return f"{path.name} (workspace)"
    return dataset


def display_choices(datasets: list[str]) -> list[tuple[str, str]]:
    """(what a page shows, value) for each dataset, once each, in the given order: a dropdown's choices."""
    return [(display_name(dataset), dataset) for dataset in dict.fromkeys(datasets) if dataset]


def with_display_names(message: str) -> str:
    """A library message as a page says it: each workspace dataset's path in it by its `display_name`."""
    for path in sorted(map(str, workspace_datasets()), key=len, reverse=True):  # longest first: one may prefix another
        message = message.replace(path, display_name(path))
    return message


def workspace_dataset_path(dataset: str) -> str:
    """A workspace dataset's directory when `dataset` is only its name (the app shows "tickets (workspace)"); anything
    else (a path that exists, a Hub id) as given."""
    candidate = datasets_root() / dataset
    if NAME_PATTERN.fullmatch(dataset) and ".." not in dataset and not Path(dataset).exists() and (candidate / PROVENANCE).is_file():
        return str(candidate)
    return dataset


def workspace_datasets() -> list[Path]:
    """The workspace's imported datasets by name: complete ones only (a staging folder has no provenance yet)."""
    root = datasets_root()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / PROVENANCE).is_file())


def check_name(name: str | None) -> str:
    """A plain name for a new workspace dataset: letters, digits, '.', '_', '-', not taken; returns it stripped."""
    name = (name or "").strip()
    if not name:
        raise DataError("give the dataset a name (letters, digits, '.', '_' and '-')")
    if len(name) > MAX_NAME_CHARS:
        raise DataError(f"the name is {len(name)} characters; at most {MAX_NAME_CHARS}")
    if not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise DataError(f"{name[:80]!r} is not a plain name: use letters, digits, '.', '_' and '-' (no path, no '..'), starting with a letter or digit")
    if (datasets_root() / name).exists():
        raise DataError(f"a dataset named {name!r} is already in the workspace; choose another name (nothing is overwritten)")
    return name


def suggest_name(paths: list[str | Path] | None = None, source: str | None = None) -> str:
    """A free name for what is being imported, from the one uploaded file's name (`tickets.csv` -> tickets) or the
    source's last part (a Hub id's name, a directory's); "-2", "-3", … if taken. "" when there is nothing to go by
    (per-split files named train/test say nothing of the data)."""
    if paths:
        given = Path(str(paths[0])).stem if len(paths) == 1 and _split_of(Path(str(paths[0]))) is None else ""
    else:
        given = (source or "").strip().replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    base = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", given)).strip("-._")[: MAX_NAME_CHARS - 4]
    if not base:
        return ""
    root = datasets_root()
    taken = {path.name for path in root.iterdir()} if root.is_dir() else set()
    candidates = (base if n == 1 else f"{base}-{n}" for n in range(1, len(taken) + 2))
    return next(name for name in candidates if name not in taken)


# ---------------------------------------------------------------------------------------------
# reading


@dataclass
class RawData:
    """Rows as read, before columns are chosen: per split (`all` for one file that is split later)."""

    frames: dict  # split -> pandas.DataFrame
    origin: dict  # {"files": [{name, split, bytes, sha256}]} or {"source": id, "from": where}
    columns: list[str] = field(default_factory=list)
    text_column: str | None = None  # the guesses
    label_column: str | None = None

    def preview(self, rows: int = PREVIEW_ROWS):
        """The first rows of the first split, long texts cut, for a table on the page."""
        frame = next(iter(self.frames.values())).head(rows).copy()
        for column in frame.columns:
            frame[column] = [_cut(value) for value in frame[column]]
        return frame

    @property
    def is_source(self) -> bool:
        return "source" in self.origin


def _cut(value):
    text = value if isinstance(value, str) else None
    return text[:PREVIEW_CHARS] + "…" if text and len(text) > PREVIEW_CHARS else value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _split_of(path: Path) -> str | None:
    stem = path.stem.lower()
    return next((split for split, aliases in SPLIT_ALIASES.items() if stem in aliases), None)


def _check_file(path: Path) -> None:
    """Before reading: a format we read, within the size limit, not empty, UTF-8 text."""
    name = path.name
    if path.suffix.lower() not in UPLOAD_FORMATS:
        raise DataError(f"{name}: not a file format read here; upload {', '.join(UPLOAD_FORMATS)}")
    if not path.is_file():
        raise DataError(f"{name}: no such file")
    size, limit = path.stat().st_size, max_file_bytes()
    if size > limit:
        raise DataError(f"{name} is {size / 1e6:.1f} MB, over the limit of {limit / 1e6:g} MB a file (REASONAPP_MAX_UPLOAD_MB)")
    if size == 0:
        raise DataError(f"{name} is empty: it has no rows")
    if path.suffix.lower() != ".parquet":
        try:
            check_utf8(str(path))
        except DataError as error:
            raise DataError(str(error).replace(str(path), name)) from None


def _read_frame(path: Path):
    """One file as a DataFrame: CSV cells as strings (integer labels are recognised later), JSON values as typed."""
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            lines = suffix == ".jsonl" or path.read_text(encoding="utf-8").lstrip()[:1] != "["
            frame = pd.read_json(path, lines=lines, dtype=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path.name} is empty: it has no rows") from None
    except (ValueError, OSError, pd.errors.ParserError) as error:  # pyarrow's errors are ValueErrors or OSErrors
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(f"could not read {path.name} as {suffix[1:].upper()}: {first_line}") from None
    if len(frame) == 0:
        raise DataError(f"{path.name} has a header but no rows")
    frame.columns = [str(column) for column in frame.columns]
    return frame


def _guess_columns(frames: dict) -> tuple[str | None, str | None]:
    """(text, label) columns: a usual name first; else the text is the column with the longest strings and the
    label one with few distinct values."""
    frame = next(iter(frames.values()))
    lowered = {column.lower(): column for column in frame.columns}
    text = next((lowered[name] for name in TEXT_GUESSES if name in lowered), None)
    label = next((lowered[name] for name in LABEL_GUESSES if name in lowered and lowered[name] != text), None)
    if text is None:
        strings = [c for c in frame.columns if c != label and frame[c].map(lambda v: isinstance(v, str)).all()]
        text = max(strings, key=lambda c: frame[c].str.len().mean(), default=None)
    if label is None:
        candidates = [c for c in frame.columns if c != text]
        distinct = {c: frame[c].astype(str).nunique() for c in candidates}
        few = [c for c in candidates if distinct[c] <= max(2, len(frame) // 2)]
        label = min(few, key=lambda c: distinct[c], default=None)
    return text, label


def read_upload(paths: list[str | os.PathLike]) -> RawData:
    """Uploaded files: one file (split later), or one per split named train/validation/test (e.g. train.csv, test.csv)."""
    files = [Path(p) for p in paths or [] if p]
    if not files:
        raise DataError("upload a CSV, JSONL or parquet file, or one per split (train, validation, test)")
    for path in files:
        _check_file(path)
    if len(files) == 1:
        named = {"all": files[0]}
    else:
        named = {}
        for path in files:
            split = _split_of(path)
            if split is None:
                raise DataError(
                    f"{path.name}: with several files, name each by its split (train, validation, test), e.g. train.csv; "
                    "to read another single file instead, clear the upload first"
                )
            if split in named:
                raise DataError(f"two files for the {split} split: {named[split].name} and {path.name}")
            named[split] = path
        if "train" not in named:
            raise DataError(f"no train file among {', '.join(p.name for p in files)}: a model needs training rows")
        named = {split: named[split] for split in SPLITS if split in named}
    frames = {split: _read_frame(path) for split, path in named.items()}
    origin = {"files": [{"name": path.name, "split": split, "bytes": path.stat().st_size, "sha256": _sha256(path)} for split, path in named.items()]}
    columns = list(next(iter(frames.values())).columns)
    return RawData(frames, origin, columns, *_guess_columns(frames))


def read_source(source: str) -> RawData:
    """A Hub id (or its offline mirror) or a directory of split files, as `load_classification_dataset` finds it."""
    source = (source or "").strip()
    if not source:
        raise DataError("give a Hub id (e.g. dair-ai/emotion) or a directory of train/validation/test files")
    splits, where = load_source(source)
    frames = {name: split.to_pandas() for name, split in splits.items()}
    frames = {name: frame for name, frame in frames.items() if len(frame)}
    if not frames:
        raise DataError(f"{source!r} has no rows")
    columns = list(next(iter(frames.values())).columns)
    return RawData(frames, {"source": source, "from": where}, columns, *_guess_columns(frames))


# ---------------------------------------------------------------------------------------------
# planning: columns, labels, splits (nothing written)


@dataclass
class ImportPlan:
    """What `save_import` writes: `text` and `label` (a label name) per split, the label names in id order."""

    splits: dict  # split -> pandas.DataFrame with text, label
    label_names: list[str]
    label_kind: str  # "string" or "integer"
    text_column: str
    label_column: str
    split_method: dict  # {"method": ..., "validation_fraction", "test_fraction", "seed"}
    origin: dict

    def label_counts(self) -> dict[str, dict[str, int]]:
        """Rows per label in each split (0 where a label has none)."""
        counts = {}
        for split, frame in self.splits.items():
            here = Counter(frame["label"])
            counts[split] = {name: here.get(name, 0) for name in self.label_names}
        return counts

    def split_note(self) -> str:
        """One line for the page and the CLI: how the splits were made and their sizes."""
        return split_note(self.split_method, self.label_counts())


def split_note(method: dict, label_counts: dict[str, dict[str, int]]) -> str:
    """How a dataset's splits were made (`ImportPlan.split_method`, or the provenance's `split`) and their sizes, with a
    warning where a stratified split left a split, or a label in a split, without rows: too few rows to cut them."""
    sizes = ", ".join(f"{split} {sum(counts.values())}" for split, counts in label_counts.items())
    if method["method"] != "stratified":
        return f"Splits as given ({method['method']}). Rows: {sizes}."
    missing = [s for s in ("validation", "test") if method[f"{s}_fraction"] > 0 and s not in label_counts]
    warnings = []
    if missing:
        warnings.append(
            f" No {' and no '.join(missing)} rows: too few rows to split off {' or '.join(missing)} and keep a training row "
            "of every label; Evaluate needs a test split, so add rows or import separate split files."
        )
    for split in ("test", "validation"):
        absent = [label for label, count in label_counts.get(split, {}).items() if count == 0]
        if absent:
            warnings.append(
                f" The {split} split has no rows of {', '.join(absent)} (too few rows of {'it' if len(absent) == 1 else 'them'} "
                f"to split off){': its accuracy leaves them out' if split == 'test' else ''}; add rows or import separate split files."
            )
    repeated = method.get("repeated_rows", 0)
    if repeated:
        warnings.append(f" {_rows_word(repeated)} repeat{'s' if repeated == 1 else ''} an earlier row's text: each is in its first copy's split.")
    return (
        f"One file split by label (stratified), seed {method['seed']}: validation {method['validation_fraction']:.0%}, "
        f"test {method['test_fraction']:.0%}, the rest train. Rows: {sizes}.{''.join(warnings)}"
    )


def _is_missing(value) -> bool:
    import pandas as pd

    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or dict cell
        return False


def _label_kind(value, from_csv: bool) -> str:
    import numpy as np

    if isinstance(value, bool | np.bool_):
        return "string"
    if isinstance(value, int | np.integer):
        return "integer"
    if isinstance(value, float | np.floating):
        if float(value).is_integer():
            return "integer"
        raise DataError(f"the label {value!r} is a fraction: labels are names or whole-number ids")
    if isinstance(value, str) and from_csv and INTEGER.fullmatch(value.strip()):
        return "integer"
    if isinstance(value, str):
        return "string"
    raise DataError(f"the label {str(value)[:60]!r} is a {type(value).__name__}: labels are names or whole-number ids")


def _rows_word(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _rows_have(count: int) -> str:
    return f"{_rows_word(count)} {'has' if count == 1 else 'have'}"


def _where(split: str, raw: RawData) -> str:
    files = [f["name"] for f in raw.origin.get("files", []) if f["split"] == split]
    return files[0] if files else f"the {split} split"


def _labels_of_upload(raw: RawData, label_column: str, label_names: list[str] | None) -> tuple[dict, list[str], str]:
    """Each split's labels as names, the names in id order, and the kind; every check names the file and the rows."""
    from_csv = {f["split"]: f["name"].lower().endswith(".csv") for f in raw.origin.get("files", [])}
    kinds: dict[str, list] = {"integer": [], "string": []}
    for split, frame in raw.frames.items():
        missing = [i for i, value in enumerate(frame[label_column]) if _is_missing(value)]
        if missing:
            raise DataError(
                f"{_where(split, raw)}: {_rows_have(len(missing))} no label in column {label_column!r} (first: data row {missing[0] + 1}); "
                "fill or remove them"
            )
        for value in frame[label_column]:
            kinds[_label_kind(value, from_csv.get(split, False))].append(value)
    if kinds["integer"] and kinds["string"]:
        raise DataError(
            f"the label column {label_column!r} mixes integer ids ({_rows_word(len(kinds['integer']))}, e.g. {kinds['integer'][0]!r}) and "
            f"names ({_rows_word(len(kinds['string']))}, e.g. {kinds['string'][0]!r}); use one kind for every row"
        )
    kind = "integer" if kinds["integer"] else "string"

    def name_of(value) -> str:
        if kind == "integer":
            number = int(float(value)) if not isinstance(value, str) else int(value.strip())
            return label_names[number] if label_names else str(number)
        return str(value).strip()

    if kind == "integer" and label_names:
        ids = {int(float(v)) if not isinstance(v, str) else int(v.strip()) for v in kinds["integer"]}
        outside = sorted(i for i in ids if not 0 <= i < len(label_names))
        if outside:
            raise DataError(f"label ids {outside[:10]} have no name among the {len(label_names)} names given (ids run from 0 to {len(label_names) - 1})")
    named = {split: [name_of(v) for v in frame[label_column]] for split, frame in raw.frames.items()}
    if label_names:
        names = list(label_names)
        unknown = Counter(v for values in named.values() for v in values if v not in set(names))
        if unknown:
            listed = ", ".join(f"{label!r} ({_rows_word(c)})" for label, c in unknown.most_common(10))
            raise DataError(f"labels not among the names given {names}: {listed}")
    else:
        train = named.get("train", named.get("all"))
        values = set(train)
        names = sorted(values, key=int) if kind == "integer" else sorted(values)
        for split, values_here in named.items():
            only_here = Counter(v for v in values_here if v not in values)
            if only_here:
                listed = ", ".join(f"{label!r} ({_rows_word(c)})" for label, c in only_here.most_common(10))
                raise DataError(
                    f"{_where(split, raw)} has labels that are not in train: {listed}; a model learns only the labels it trains "
                    "on: add training rows for them or remove those rows"
                )
    if len(names) < 2:
        raise DataError(f"the label column {label_column!r} has one label ({names[0]!r}): a classifier needs two or more")
    return named, names, kind


def _check_label_names(names: list[str]) -> None:
    """Label names are listed comma-separated (the prompts' label list, the page's Label names field, `--labels`): a
    name with a comma would read as two labels, and a model's answer naming it would not parse."""
    with_comma = [name for name in names if "," in name]
    if with_comma:
        listed = ", ".join(repr(name) for name in with_comma[:5])
        raise DataError(
            f"label names may not contain a comma (they are listed comma-separated in prompts and fields): {listed}; "
            f"rename {'it' if len(with_comma) == 1 else 'them'} in the file, e.g. {with_comma[0].replace(',', ' /')!r}"
        )


def _split_keeping_repeats_together(
    texts: list[str], labels: list[str], validation_fraction: float, test_fraction: float, seed: int
) -> tuple[dict[str, list[int]], int]:
    """`stratified_split` over each text's first row; a row repeating an earlier text joins that row's split (a copy in
    test and one in train would score a memorised answer). Returns the parts and how many rows were repeats."""
    first: dict[str, int] = {}
    for index, text in enumerate(texts):
        first.setdefault(text, index)
    unique = sorted(first.values())
    parts = stratified_split([labels[i] for i in unique], validation_fraction, test_fraction, seed)
    split_of = {unique[k]: split for split, rows in parts.items() for k in rows}
    together: dict[str, list[int]] = {split: [] for split in parts}
    for index, text in enumerate(texts):
        together[split_of[first[text]]].append(index)
    return together, len(texts) - len(unique)


def stratified_split(labels: list[str], validation_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Row indices per split, each label's rows shuffled with `seed` and cut by the fractions; every label keeps at
    least one training row. Rows keep their file order within a split.

    Each split's size is its share of all rows, rounded (10 rows at 10%: one row), handed to the labels by their
    shares, the largest remainders first: rounding each label on its own gave a 10-row file of three labels no
    validation or test row at all.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    names = sorted(by_label)
    spare = {label: len(by_label[label]) - 1 for label in names}  # train keeps one row of every label
    taken: dict[str, dict[str, int]] = {}
    for split, fraction in (("test", test_fraction), ("validation", validation_fraction)):
        wanted = {label: len(by_label[label]) * fraction for label in names}
        counts = {label: min(int(wanted[label]), spare[label]) for label in names}
        left = min(int(len(labels) * fraction + 0.5), sum(spare.values())) - sum(counts.values())
        for label in sorted(names, key=lambda name: (-(wanted[name] - int(wanted[name])), names.index(name))):
            if left <= 0:
                break
            if counts[label] < spare[label]:
                counts[label] += 1
                left -= 1
        for label in names:
            spare[label] -= counts[label]
        taken[split] = counts
    parts: dict[str, list[int]] = {split: [] for split in SPLITS}
    for label in names:
        indices = np.array(by_label[label])
        rng.shuffle(indices)
        n_test, n_validation = taken["test"][label], taken["validation"][label]
        parts["test"] += indices[:n_test].tolist()
        parts["validation"] += indices[n_test : n_test + n_validation].tolist()
        parts["train"] += indices[n_test + n_validation :].tolist()
    return {split: sorted(rows) for split, rows in parts.items() if rows}


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    for what, value in (("validation", validation_fraction), ("test", test_fraction)):
        if not 0 <= value < 1:
            raise ConfigError(f"the {what} fraction is {value}; give a share between 0 and 1 (e.g. 0.1)")
    if validation_fraction + test_fraction >= 0.9:
        raise ConfigError(f"validation {validation_fraction} + test {test_fraction} leave too little to train on; keep their sum under 0.9")


def plan_import(
    raw: RawData,
    text_column: str | None = None,
    label_column: str | None = None,
    label_names: list[str] | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
) -> ImportPlan:
    """The rows as text + label per split, checked; one file (or a source with one split) is split stratified."""
    import pandas as pd

    text_column = text_column or raw.text_column
    label_column = label_column or raw.label_column
    if not text_column or not label_column:
        if len(raw.columns) < 2:
            raise DataError(f"the data has one column ({raw.columns}): it needs a text column and a label column")
        raise DataError(f"choose the text column and the label column (columns: {raw.columns})")
    if text_column == label_column:
        raise DataError(f"the text and the label are both {text_column!r}: choose two different columns")
    for split, frame in raw.frames.items():
        for role, column in (("text", text_column), ("label", label_column)):
            if column not in frame.columns:
                raise DataError(f"{_where(split, raw)} has no {role} column {column!r} (columns: {list(frame.columns)}); choose the {role} column")
    label_names = [n.strip() for n in label_names or [] if n.strip()] or None
    if raw.is_source:
        loaded = load_classification_dataset(raw.origin["source"], text_column=text_column, label_column=label_column, labels=label_names)
        names, kind = list(loaded.label_names), "string"
        texts = {split: list(loaded.splits[split]["text"]) for split in loaded.splits}
        named = {split: [names[i] for i in loaded.splits[split]["label"]] for split in loaded.splits}
    else:
        named, names, kind = _labels_of_upload(raw, label_column, label_names)
        texts = {}
        for split, frame in raw.frames.items():
            empty = [i for i, value in enumerate(frame[text_column]) if _is_missing(value)]
            if empty:
                raise DataError(
                    f"{_where(split, raw)}: {_rows_have(len(empty))} no text in column {text_column!r} (first: data row {empty[0] + 1}); "
                    "fill or remove them"
                )
            texts[split] = [value if isinstance(value, str) else str(value) for value in frame[text_column]]
    _check_label_names(names)
    if set(texts) <= {"all", "train"} and len(texts) == 1:  # one file, or a source with only a train split
        _check_fractions(validation_fraction, test_fraction)
        (only,) = texts
        parts, repeated = _split_keeping_repeats_together(texts[only], named[only], validation_fraction, test_fraction, seed)
        splits = {split: pd.DataFrame({"text": [texts[only][i] for i in rows], "label": [named[only][i] for i in rows]}) for split, rows in parts.items()}
        method = {"method": "stratified", "validation_fraction": validation_fraction, "test_fraction": test_fraction, "seed": seed}
        if repeated:
            method["repeated_rows"] = repeated
    else:
        splits = {split: pd.DataFrame({"text": texts[split], "label": named[split]}) for split in SPLITS if split in texts}
        method = {"method": "as in the source" if raw.is_source else "one file per split"}
    return ImportPlan(splits, names, kind, text_column, label_column, method, raw.origin)


# ---------------------------------------------------------------------------------------------
# saving


def save_import(plan: ImportPlan, name: str) -> Path:
    """Write the plan to `<workspace>/datasets/<name>/` (never over an existing one); returns the directory.

    Written into a hidden staging folder beside it, read back by `load_classification_dataset`, then renamed into
    place: a failure removes the staging folder (and a datasets folder this call created), so nothing is left.
    """
    name = check_name(name)
    root = datasets_root()
    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{name}-{uuid.uuid4().hex[:8]}"
    target = root / name
    try:
        staging.mkdir()
        for split, frame in plan.splits.items():
            with open(staging / f"{split}.jsonl", "w", encoding="utf-8") as handle:
                for text, label in zip(frame["text"], frame["label"], strict=True):
                    handle.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
        (staging / LABELS_FILE).write_text(json.dumps(plan.label_names, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        try:
            loaded = load_classification_dataset(str(staging))
        except DataError as error:
            raise DataError(str(error).replace(str(staging), name)) from None
        provenance = {
            "name": name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **plan.origin,
            "text_column": plan.text_column,
            "label_column": plan.label_column,
            "label_kind": plan.label_kind,
            "label_names": loaded.label_names,
            "split": plan.split_method,
            "rows": {split: len(rows) for split, rows in loaded.splits.items()},
            "label_counts": plan.label_counts(),
        }
        (staging / PROVENANCE).write_text(json.dumps(provenance, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        os.rename(staging, target)  # fails rather than replace a directory that appeared meanwhile (unless empty)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_root:
            with_contents = any(root.iterdir()) if root.is_dir() else True
            if not with_contents:
                root.rmdir()
        raise
    return target


def import_files(
    paths: list[str | os.PathLike],
    name: str,
    text_column: str | None = None,
    label_column: str | None = None,
    label_names: list[str] | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
) -> Path:
    """Read, check and save uploaded files as the workspace dataset `name` (the name is checked first)."""
    return _import(lambda: read_upload(paths), name, text_column, label_column, label_names, validation_fraction, test_fraction, seed)


def import_source(
    source: str,
    name: str,
    text_column: str | None = None,
    label_column: str | None = None,
    label_names: list[str] | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
) -> Path:
    """A Hub id or directory copied into the workspace as `name`, with `text`/`label` columns (split if it has one split)."""
    return _import(lambda: read_source(source), name, text_column, label_column, label_names, validation_fraction, test_fraction, seed)


def _import(read, name: str, *plan_settings) -> Path:
    """The three steps for both entry points: the name checked before anything is read, then read, plan, save."""
    check_name(name)
    return save_import(plan_import(read(), *plan_settings), name)
