"""Datasets: text classification sets and (question, answer, reasoning) sets, from the Hub or disk.

A source is a Hub id (`dair-ai/emotion`) or a local directory of `train/validation/test` files
(jsonl, json, csv or parquet). When the Hub is unreachable a Hub id resolves to its folder in the
local mirror (`settings.data_mirror()`). Every loader returns splits with the same column names, so
nothing downstream cares where the data came from:

- classification: `text` (str) and `label` (a `ClassLabel` with the label names);
- reasoning: `question`, `answer`, `reasoning` (all str).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from reasonapp import settings
from reasonapp.errors import DataError

logger = logging.getLogger(__name__)

SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class KnownDataset:
    """What we know about a Hub dataset that its local mirror files do not say themselves."""

    mirror_name: str
    label_names: tuple[str, ...] = ()
    task_description: str = ""


KNOWN_DATASETS = {
    "dair-ai/emotion": KnownDataset(
        mirror_name="emotion",
        label_names=("sadness", "joy", "love", "anger", "fear", "surprise"),
        task_description="Which emotion does the text express?",
    ),
    # The paper's Stage 1 set; offline, the mirror holds a public substitute with the same columns.
    "syvai/reasoning-gen": KnownDataset(mirror_name="reasoning"),
}
DEFAULT_CLASSIFICATION_DATASET = "dair-ai/emotion"
DEFAULT_REASONING_DATASET = "syvai/reasoning-gen"


@dataclass
class ClassificationData:
    """Splits with `text` and `label` columns, and the label names in label-id order."""

    splits: "datasets.DatasetDict"  # noqa: F821 - imported lazily
    label_names: list[str]
    source: str
    task_description: str = "Which label fits the text?"
    origin: str = field(default="")

    def label_counts(self, split: str) -> dict[str, int]:
        counts = Counter(self.splits[split]["label"])
        return {name: counts.get(index, 0) for index, name in enumerate(self.label_names)}


@dataclass
class ReasoningData:
    """Splits with `question`, `answer` and `reasoning` columns."""

    splits: "datasets.DatasetDict"  # noqa: F821
    source: str
    origin: str = ""


# ---------------------------------------------------------------------------------------------
# locating files


def _local_directory(source: str) -> Path | None:
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise DataError(f"dataset path {source!r} is a file; give the directory that holds train/validation/test files")
    return None


def _find_split_files(directory: Path) -> dict[str, str]:
    files: dict[str, str] = {}
    for split, aliases in SPLIT_ALIASES.items():
        for alias in aliases:
            matches = [directory / f"{alias}{ext}" for ext in FILE_BUILDERS if (directory / f"{alias}{ext}").is_file()]
            if matches:
                files[split] = str(matches[0])
                break
    if not files:
        raise DataError(
            f"no train/validation/test files in {directory} (expected e.g. train.jsonl, test.csv, validation.parquet)"
        )
    suffixes = {Path(f).suffix for f in files.values()}
    if len(suffixes) > 1:
        raise DataError(f"split files in {directory} mix formats {sorted(suffixes)}; use one format")
    return files


@contextlib.contextmanager
def _quiet_progress():
    """Reading local split files takes a moment; its progress bars would only clutter the CLI's output."""
    from datasets.utils import logging as datasets_logging

    was_enabled = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            datasets_logging.enable_progress_bar()


def check_utf8(path: str) -> None:
    """Fail early and precisely: pyarrow accepts invalid UTF-8 and crashes later when text is read."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                bad_line = line + chunk[: error.start].count(b"\n")
                raise DataError(f"{path} is not valid UTF-8 (line {bad_line}); re-save it as UTF-8") from None
            line += chunk.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not valid UTF-8 (it ends inside a character); re-save it as UTF-8") from None


def _load_directory(directory: Path) -> "datasets.DatasetDict":  # noqa: F821
    import datasets

    files = _find_split_files(directory)
    builder = FILE_BUILDERS[Path(next(iter(files.values()))).suffix]
    for split, path in files.items():
        if Path(path).stat().st_size == 0:
            raise DataError(f"the {split} file {path} is empty: the dataset has no rows")
        if builder != "parquet":
            check_utf8(path)
    try:
        with _quiet_progress():
            return datasets.load_dataset(builder, data_files=files)
    except (UnicodeDecodeError, ValueError, datasets.exceptions.DatasetGenerationError) as error:
        cause = error.__cause__ or error
        if builder == "json" and "column names don't match" in str(cause):
            # Rows with optional keys (e.g. e-SNLI's reasoning_alt) defeat arrow's schema inference;
            # pandas reads the union of keys and fills the gaps with nulls.
            return _load_json_with_pandas(files)
        raise DataError(f"could not read the files in {directory}: {type(cause).__name__}: {cause}") from error


def _load_json_with_pandas(files: dict[str, str]) -> "datasets.DatasetDict":  # noqa: F821
    import datasets
    import pandas as pd

    splits = {}
    for split, path in files.items():
        frame = pd.read_json(path, lines=path.endswith(".jsonl"), dtype=False)
        splits[split] = datasets.Dataset.from_pandas(frame, preserve_index=False)
    return datasets.DatasetDict(splits)


def load_source(source: str) -> tuple["datasets.DatasetDict", str]:  # noqa: F821
    """Load splits from a local directory, the Hub, or the mirror; returns the splits and where from."""
    import datasets

    directory = _local_directory(source)
    if directory is not None:
        return _load_directory(directory), str(directory)
    hub_error = None
    if settings.hub_reachable():
        from huggingface_hub.errors import HfHubHTTPError

        try:
            return datasets.load_dataset(source), f"hub:{source}"
        except (OSError, HfHubHTTPError, datasets.exceptions.DatasetNotFoundError) as error:  # OSError: FileNotFound, connection
            hub_error = error  # a mirror copy still serves (a Hub that answers but fails, or a private endpoint without it)
    mirror = settings.data_mirror()
    known = KNOWN_DATASETS.get(source)
    candidates = []
    if mirror is not None:
        candidates = [mirror / known.mirror_name] if known else []
        candidates.append(mirror / source.split("/")[-1])
    for candidate in candidates:
        if candidate.is_dir():
            logger.info("Hub %s: loading %s from the local mirror %s", f"failed ({hub_error})" if hub_error else "unreachable", source, candidate)
            return _load_directory(candidate), str(candidate)
    if hub_error is not None:
        raise DataError(f"dataset {source!r} not found on the Hub ({type(hub_error).__name__}) or as a local directory") from hub_error
    where = f"the mirror {mirror}" if mirror else "no mirror is configured (REASONAPP_DATA_MIRROR)"
    raise DataError(
        f"dataset {source!r} is not a local directory, the Hub is unreachable, and {where} has no copy of it"
    )


# ---------------------------------------------------------------------------------------------
# classification


def _read_label_file(directory: Path) -> list[str] | None:
    for name in ("labels.json", "labels.txt"):
        path = directory / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            labels = json.loads(text) if name.endswith(".json") else [line.strip() for line in text.splitlines()]
            return [label for label in labels if label]
    return None


def _resolve_label_names(splits, source: str, origin: str, label_column: str, labels: list[str] | None) -> tuple[list[str], str]:
    """The label names in id order, and where they came from (for messages).

    Declared names (a ClassLabel, `labels`, the known names of a Hub id, labels.json) come first. Otherwise
    string labels name themselves, sorted, and only the training split's count: a model can only learn
    the labels it trains on, so a label that appears only in another split is refused by
    `_check_label_values`, not made a class.
    """
    import datasets

    feature = splits[next(iter(splits))].features.get(label_column)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), "the dataset's ClassLabel"
    if labels:
        return list(labels), "declared"
    if source in KNOWN_DATASETS and KNOWN_DATASETS[source].label_names:
        return list(KNOWN_DATASETS[source].label_names), f"the known names of {source}"
    origin_dir = Path(origin) if Path(origin).is_dir() else None
    from_file = _read_label_file(origin_dir) if origin_dir else None
    if from_file:
        return from_file, "the dataset's labels file"
    if "train" in splits:
        values, names_from = set(splits["train"][label_column]), "taken from the train split"
    else:  # nothing to train on here: every split's labels are the set
        values = {value for split in splits.values() for value in split[label_column]}
        names_from = "taken from the label column"
    if all(isinstance(value, str) for value in values):
        names = sorted(values)
        logger.info("label names %s: %s", names_from, names)
        return names, names_from
    raise DataError(
        f"the labels of {source!r} are numbers without names; pass labels=[...] (--labels a,b,c) "
        "or put labels.json in the dataset directory"
    )


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _check_label_values(splits, label_names: list[str], label_column: str, source: str, names_from: str) -> None:
    """Every row's label is a name (any case) or an id of `label_names`; else name the split, the labels and their counts."""
    names = set(label_names)
    lowered = {name.lower() for name in label_names}

    def known(value) -> bool:
        if isinstance(value, bool) or value is None:
            return False
        if isinstance(value, int):
            return 0 <= value < len(label_names)
        return str(value) in names or str(value).lower() in lowered

    for split_name, split in splits.items():
        outside = Counter(repr(value) for value in split[label_column] if not known(value))
        if outside:
            listed = ", ".join(f"{label} ({_rows(count)})" for label, count in outside.most_common())
            raise DataError(
                f"split {split_name!r} of {source!r} has {_rows(outside.total())} whose label is not one of "
                f"{label_names} ({names_from}): {listed}; fix or remove those rows, or declare every label "
                "(--labels a,b,c or labels.json)"
            )


def _to_label_ids(splits, label_names: list[str], label_column: str) -> "datasets.DatasetDict":  # noqa: F821
    """The label column as ids of `label_names` (checked by `_check_label_values` first)."""
    import datasets

    index = {name: i for i, name in enumerate(label_names)}
    lowered = {name.lower(): i for i, name in enumerate(label_names)}

    def convert(batch):
        return {
            "label": [
                value if isinstance(value, int) else index.get(str(value), lowered.get(str(value).lower()))
                for value in batch[label_column]
            ]
        }

    converted = datasets.DatasetDict()
    with _quiet_progress():  # "Map" and "Casting the dataset" bars per split, on every load and dataset switch
        for split_name, split in splits.items():
            keep = split.map(convert, batched=True, remove_columns=[c for c in split.column_names if c == label_column])
            features = keep.features.copy()
            features["label"] = datasets.ClassLabel(names=label_names)
            converted[split_name] = keep.cast(features)
    return converted


def load_classification_dataset(
    source: str = DEFAULT_CLASSIFICATION_DATASET,
    *,
    text_column: str = "text",
    label_column: str = "label",
    labels: list[str] | None = None,
) -> ClassificationData:
    """Load a text-classification dataset; see the module docstring for where it is looked for."""
    splits, origin = load_source(source)
    for split_name, split in splits.items():
        missing = [c for c in (text_column, label_column) if c not in split.column_names]
        if missing:
            raise DataError(
                f"split {split_name!r} of {source!r} has no column {missing[0]!r} (columns: {split.column_names}); "
                f"pass --text-column / --label-column"
            )
    if text_column != "text":
        splits = splits.rename_column(text_column, "text")
    label_names, names_from = _resolve_label_names(splits, source, origin, label_column, labels)
    _check_label_values(splits, label_names, label_column, source, names_from)
    splits = _to_label_ids(splits, label_names, label_column)
    known = KNOWN_DATASETS.get(source)
    description = known.task_description if known and known.task_description else "Which label fits the text?"
    return ClassificationData(splits, label_names, source, description, origin)


# ---------------------------------------------------------------------------------------------
# reasoning


REASONING_COLUMNS = ("question", "answer", "reasoning")


def load_reasoning_dataset(source: str = DEFAULT_REASONING_DATASET) -> ReasoningData:
    """Load (question, answer, reasoning) triples for Stage 1 R-Gen training."""
    splits, origin = load_source(source)
    for split_name, split in splits.items():
        missing = [c for c in REASONING_COLUMNS if c not in split.column_names]
        if missing:
            raise DataError(
                f"split {split_name!r} of {source!r} lacks the reasoning columns {missing} "
                f"(columns: {split.column_names})"
            )
    return ReasoningData(splits, source, origin)


def sample_rows(split, limit: int | None, seed: int):
    """A fixed random sample of `limit` rows (all rows when limit is None or larger)."""
    if limit is None or limit >= len(split):
        return split
    if limit <= 0:
        raise DataError(f"sample limit must be positive, got {limit}")
    return split.shuffle(seed=seed).select(range(limit))
