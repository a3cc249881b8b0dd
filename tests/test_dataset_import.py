"""Importing one's own data: uploaded files (or a source) checked, split and saved as a workspace dataset that
`load_classification_dataset` reads; every bad upload is refused with a clear message and writes nothing."""

import csv
import json
import os
import random
from pathlib import Path

import pytest

from reasonapp import dataset_import
from reasonapp.data import load_classification_dataset
from reasonapp.errors import ReasonappError

TOPICS = {
    "billing": ["I was charged twice for my subscription", "Where is the refund for my last invoice", "My card payment failed at checkout"],
    "bug": ["The app crashes when I open settings", "Export button does nothing on Firefox", "Search returns an error page"],
    "praise": ["Thanks, the new dashboard is great", "Support solved my issue in minutes", "I love the dark mode"],
}


def ticket_rows(per_label: int = 20, seed: int = 1) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = [(f"{rng.choice(texts)} (ticket {label}-{i})", label) for label, texts in TOPICS.items() for i in range(per_label)]
    rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows, header=("message", "category")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def workspace() -> Path:
    from reasonapp import settings

    return settings.workspace_dir()


def test_a_single_csv_is_split_stratified_and_seeded_and_reads_back(tmp_path, workspace):
    upload = write_csv(tmp_path / "up" / "tickets.csv", ticket_rows())
    raw = dataset_import.read_upload([upload])
    assert (raw.text_column, raw.label_column) == ("message", "category")  # guessed from the usual names
    assert len(raw.preview()) == dataset_import.PREVIEW_ROWS

    saved = dataset_import.import_files([upload], "tickets", seed=7)
    assert saved == workspace / "datasets" / "tickets"
    loaded = load_classification_dataset(str(saved))
    assert loaded.label_names == ["billing", "bug", "praise"]
    for split, expected in (("train", 16), ("validation", 2), ("test", 2)):  # 10% / 10% of each label's 20 rows
        assert loaded.label_counts(split) == {name: expected for name in TOPICS}

    provenance = json.loads((saved / "provenance.json").read_text())
    assert provenance["files"] == [{"name": "tickets.csv", "split": "all", "bytes": upload.stat().st_size,
                                    "sha256": dataset_import._sha256(upload)}]
    assert provenance["split"] == {"method": "stratified", "validation_fraction": 0.1, "test_fraction": 0.1, "seed": 7}
    assert (provenance["text_column"], provenance["label_column"], provenance["label_kind"]) == ("message", "category", "string")
    assert provenance["rows"] == {"train": 48, "validation": 6, "test": 6} and provenance["created"]

    # the same seed gives the same split; another seed another one
    def test_texts(seed):
        plan = dataset_import.plan_import(dataset_import.read_upload([upload]), seed=seed)
        return list(plan.splits["test"]["text"])

    assert test_texts(7) == test_texts(7) == list(loaded.splits["test"]["text"])
    assert test_texts(8) != test_texts(7)
    assert dataset_import.workspace_datasets() == [saved]


def test_repeated_texts_stay_in_one_split_and_the_note_counts_them(tmp_path):
    """A file with a row twice put one copy in train and one in validation, silently: a test copy would then score an
    answer the model memorised."""
    rows = ticket_rows(10)
    repeated = rows + rows[:6] + [rows[0]]  # six texts twice, one three times
    for seed in range(5):
        plan = dataset_import.plan_import(dataset_import.read_upload([write_csv(tmp_path / f"up{seed}" / "t.csv", repeated)]), seed=seed)
        splits_of = {}
        for split, frame in plan.splits.items():
            for text in frame["text"]:
                splits_of.setdefault(text, set()).add(split)
        assert all(len(splits) == 1 for splits in splits_of.values()) and sum(len(f) for f in plan.splits.values()) == 37
        assert "7 rows repeat an earlier row's text: each is in its first copy's split." in plan.split_note()


def test_fractions_are_kept_per_label_and_every_label_keeps_training_rows():
    labels = ["a"] * 50 + ["b"] * 10 + ["c"] * 2
    parts = dataset_import.stratified_split(labels, 0.2, 0.3, seed=0)
    per_split = {split: sorted(labels[i] for i in rows) for split, rows in parts.items()}
    assert per_split["test"].count("a") == 15 and per_split["validation"].count("a") == 10
    assert per_split["test"].count("b") == 3 and per_split["validation"].count("b") == 2
    assert "c" in per_split["train"]  # two rows: one may leave, one trains
    assert sorted(i for rows in parts.values() for i in rows) == list(range(len(labels)))


def test_a_small_file_still_gets_its_share_of_validation_and_test_rows_across_labels():
    """10 rows of three labels at 10% / 10%: one test and one validation row, not none (rounding per label gave 0)."""
    labels = ["neg"] * 4 + ["neu"] * 3 + ["pos"] * 3
    parts = dataset_import.stratified_split(labels, 0.1, 0.1, seed=0)
    assert {split: len(rows) for split, rows in parts.items()} == {"train": 8, "validation": 1, "test": 1}
    assert {labels[i] for i in parts["train"]} == {"neg", "neu", "pos"}
    assert sorted(i for rows in parts.values() for i in rows) == list(range(len(labels)))
    labels = ["a"] * 34 + ["b"] * 33 + ["c"] * 33  # shares of the whole: 10 and 20 rows, each label within one of its own
    parts = dataset_import.stratified_split(labels, 0.2, 0.1, seed=3)
    assert (len(parts["test"]), len(parts["validation"])) == (10, 20)
    for name, count in (("a", 34), ("b", 33), ("c", 33)):
        assert abs(sum(labels[i] == name for i in parts["test"]) - count * 0.1) < 1


def test_a_file_too_small_to_split_says_it_has_no_test_split_before_it_is_saved(tmp_path):
    upload = write_csv(tmp_path / "tiny.csv", [("good", "pos"), ("bad", "neg"), ("fine", "neu")])
    plan = dataset_import.plan_import(dataset_import.read_upload([upload]))
    assert set(plan.splits) == {"train"}  # every label keeps its one training row
    assert "No validation and no test rows" in plan.split_note() and "Evaluate needs a test split" in plan.split_note()
    big = dataset_import.plan_import(dataset_import.read_upload([write_csv(tmp_path / "big.csv", ticket_rows())]))
    assert "No " not in big.split_note() and "no rows of" not in big.split_note()


def test_a_split_too_small_to_hold_every_label_names_the_labels_it_lacks(tmp_path, workspace, capsys):
    from training.cli import main

    upload = write_csv(tmp_path / "twelve.csv", ticket_rows(4))  # 12 rows, 10%: one test row, one validation row
    plan = dataset_import.plan_import(dataset_import.read_upload([upload]))
    (test_label,) = set(plan.splits["test"]["label"])
    lacking = ", ".join(sorted({"billing", "bug", "praise"} - {test_label}))
    assert f"The test split has no rows of {lacking} (too few rows of them to split off): its accuracy leaves them out" in plan.split_note()
    assert "The validation split has no rows of" in plan.split_note()

    assert main(["data-import", str(upload), "--name", "twelve", "--label-column", "category"]) == 0
    out = capsys.readouterr().out
    assert f"The test split has no rows of {lacking}" in out and "label 'category'\n" in out  # chosen, so not "guessed"


def test_one_file_per_split_keeps_the_splits_as_given(tmp_path):
    rows = ticket_rows(12)
    files = [
        write_csv(tmp_path / "up" / "train.csv", rows[:24]),
        write_csv(tmp_path / "up" / "validation.csv", [r for r in rows[24:] if r[1] != "praise"][:4] + [r for r in rows[24:] if r[1] == "praise"][:2]),
        write_csv(tmp_path / "up" / "test.csv", rows[30:]),
    ]
    saved = dataset_import.import_files(files, "tickets-by-split")
    loaded = load_classification_dataset(str(saved))
    assert {split: len(rows) for split, rows in loaded.splits.items()} == {"train": 24, "validation": 6, "test": 6}
    provenance = json.loads((saved / "provenance.json").read_text())
    assert [f["split"] for f in provenance["files"]] == ["train", "validation", "test"] and provenance["split"] == {"method": "one file per split"}


def test_integer_labels_are_kept_as_ids_or_named(tmp_path):
    records = [{"text": f"row {i} says {['no', 'maybe', 'yes'][i % 3]}", "label": i % 3} for i in range(30)]
    upload = write_jsonl(tmp_path / "up" / "answers.jsonl", records)
    plain = load_classification_dataset(str(dataset_import.import_files([upload], "ids")))
    assert plain.label_names == ["0", "1", "2"]
    named = load_classification_dataset(str(dataset_import.import_files([upload], "named", label_names=["no", "maybe", "yes"])))
    assert named.label_names == ["no", "maybe", "yes"]
    first = named.splits["train"][0]
    assert first["text"].endswith(named.label_names[first["label"]])  # id 2 is "yes", as in the file

    csv_upload = write_csv(tmp_path / "up2" / "answers.csv", [(r["text"], r["label"]) for r in records], header=("text", "label"))
    assert dataset_import.plan_import(dataset_import.read_upload([csv_upload])).label_kind == "integer"  # CSV cells "0", "1", "2"


def test_parquet_and_jsonl_uploads(tmp_path):
    import pandas as pd

    rows = ticket_rows(10)
    parquet = tmp_path / "up" / "tickets.parquet"
    parquet.parent.mkdir()
    pd.DataFrame(rows, columns=["body", "topic"]).to_parquet(parquet)
    jsonl = write_jsonl(tmp_path / "up2" / "tickets.jsonl", [{"body": t, "topic": label, "id": i} for i, (t, label) in enumerate(rows)])
    for upload, name in ((parquet, "from-parquet"), (jsonl, "from-jsonl")):
        loaded = load_classification_dataset(str(dataset_import.import_files([upload], name)))
        assert loaded.label_names == ["billing", "bug", "praise"] and sum(len(s) for s in loaded.splits.values()) == 30


def test_a_source_with_other_column_names_is_copied_with_text_and_label(tmp_path):
    source = tmp_path / "source"
    write_jsonl(source / "train.jsonl", [{"sentence": t, "tag": label} for t, label in ticket_rows(10)])
    write_jsonl(source / "test.jsonl", [{"sentence": t, "tag": label} for t, label in ticket_rows(2, seed=2)])
    raw = dataset_import.read_source(str(source))
    assert (raw.text_column, raw.label_column) == ("sentence", "tag")
    loaded = load_classification_dataset(str(dataset_import.import_source(str(source), "copied")))
    assert {split: len(rows) for split, rows in loaded.splits.items()} == {"train": 30, "test": 6}


# -- bad uploads: a clear message, and the workspace exactly as before --------------------------------


def bad_uploads(tmp_path: Path) -> dict:
    up = tmp_path / "bad"
    rows = ticket_rows(5)
    over = write_csv(up / "big" / "big.csv", rows * 400)
    return {
        "no text column": ([write_csv(up / "a" / "t.csv", [(label, label) for _, label in rows], header=("id", "category"))], {"text_column": "message"}, "has no text column 'message'"),
        "no label column": ([write_csv(up / "b" / "t.csv", [(t,) for t, _ in rows], header=("message",))], {"label_column": "category"}, "has no label column 'category'"),
        "one column only": ([write_csv(up / "k" / "t.csv", [(t,) for t, _ in rows], header=("text",))], {}, "has one column (['text']): it needs a text column and a label column"),
        "mixed label types": ([write_jsonl(up / "c" / "t.jsonl", [{"text": t, "label": 1 if i % 2 else label} for i, (t, label) in enumerate(rows)])], {},
                              "mixes integer ids"),
        "empty file": ([empty_file(up / "d" / "t.csv")], {}, "t.csv is empty"),
        "header only": ([write_csv(up / "e" / "t.csv", [])], {}, "has a header but no rows"),
        "over the size limit": ([over], {}, "over the limit of 0.01 MB"),
        "non-UTF-8 bytes": ([write_csv(up / "f" / "t.csv", rows)], {}, "t.csv is not valid UTF-8 (line 3)"),
        "label only in test": ([write_csv(up / "g" / "train.csv", rows), write_csv(up / "g" / "test.csv", [("Cancel my account please", "churn")] + rows[:3])], {},
                               "test.csv has labels that are not in train: 'churn' (1 row)"),
        "missing labels": ([write_jsonl(up / "h" / "t.jsonl", [{"text": t, "label": None if i == 3 else label} for i, (t, label) in enumerate(rows)])], {},
                           "1 row has no label in column 'label' (first: data row 4)"),
        "unnamed split files": ([write_csv(up / "i" / "train.csv", rows), write_csv(up / "i" / "more.csv", rows)], {}, "name each by its split"),
        "a fraction label": ([write_jsonl(up / "j" / "t.jsonl", [{"text": t, "label": 0.5} for t, _ in rows])], {}, "is a fraction"),
        "a comma in a label": ([write_csv(up / "l" / "t.csv", [(t, "bug, report" if label == "bug" else label) for t, label in rows])], {},
                               "label names may not contain a comma (they are listed comma-separated in prompts and fields): 'bug, report'"),
    }


def empty_file(path: Path) -> Path:
    path.parent.mkdir(parents=True)
    path.touch()
    return path


def corrupt_utf8(path: Path) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2] + b" caf\xe9"  # Latin-1, as a spreadsheet might save it
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(
    "case",
    ["no text column", "no label column", "one column only", "mixed label types", "empty file", "header only", "over the size limit", "non-UTF-8 bytes",
     "label only in test", "missing labels", "unnamed split files", "a fraction label", "a comma in a label"],
)
def test_a_bad_upload_is_refused_with_a_clear_message_and_writes_nothing(case, tmp_path, workspace, monkeypatch):
    dataset_import.import_files([write_csv(tmp_path / "ok" / "tickets.csv", ticket_rows(5))], "existing")
    files, columns, said = bad_uploads(tmp_path)[case]
    if case == "non-UTF-8 bytes":
        corrupt_utf8(files[0])
    if case == "over the size limit":
        monkeypatch.setenv("REASONAPP_MAX_UPLOAD_MB", "0.01")
    before = listing(workspace)
    with pytest.raises(ReasonappError) as refused:
        dataset_import.import_files(files, "new-set", **columns)
    assert said in str(refused.value), str(refused.value)
    assert "\n" not in str(refused.value)  # one line for the page
    assert listing(workspace) == before


def test_nothing_is_written_on_a_fresh_workspace_either(tmp_path, workspace):
    upload = write_jsonl(tmp_path / "t.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": "x"}])
    before = listing(workspace)
    with pytest.raises(ReasonappError, match="mixes integer ids"):
        dataset_import.import_files([upload], "fresh")
    assert listing(workspace) == before and not (workspace / "datasets").exists()


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("existing", "already in the workspace"),
        ("../escape", "not a plain name"),
        ("a/b", "not a plain name"),
        ("/tmp/x", "not a plain name"),
        ("..", "not a plain name"),
        ("a..b", "not a plain name"),
        ("nul\x00byte", "not a plain name"),
        (".hidden", "not a plain name"),
        ("x" * 65, "at most 64"),
        ("", "give the dataset a name"),
    ],
)
def test_a_taken_or_hostile_name_is_refused_and_nothing_is_overwritten(name, said, tmp_path, workspace):
    existing = dataset_import.import_files([write_csv(tmp_path / "ok" / "tickets.csv", ticket_rows(5))], "existing")
    kept = (existing / "train.jsonl").read_bytes()
    before = listing(workspace)
    with pytest.raises(ReasonappError, match=said):
        dataset_import.import_files([write_csv(tmp_path / "other" / "other.csv", ticket_rows(6, seed=3))], name)
    assert listing(workspace) == before and (existing / "train.jsonl").read_bytes() == kept


def test_a_failure_while_writing_removes_the_staging_folder(tmp_path, workspace, monkeypatch):
    upload = write_csv(tmp_path / "up" / "tickets.csv", ticket_rows(5))
    plan = dataset_import.plan_import(dataset_import.read_upload([upload]))
    before = listing(workspace)

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", disk_full)
    with pytest.raises(OSError):
        dataset_import.save_import(plan, "half-written")
    assert listing(workspace) == before


def test_the_size_limit_is_checked_before_the_file_is_read(tmp_path, monkeypatch):
    upload = write_csv(tmp_path / "up" / "tickets.csv", ticket_rows(5))
    monkeypatch.setenv("REASONAPP_MAX_UPLOAD_MB", "0.0001")
    monkeypatch.setattr(dataset_import, "_read_frame", lambda path: pytest.fail("read a file over the limit"))
    with pytest.raises(ReasonappError, match="over the limit"):
        dataset_import.read_upload([upload])


def test_the_cli_imports_the_same_way_and_refuses_a_bad_upload_with_exit_2(tmp_path, workspace, capsys):
    from training.cli import main

    upload = write_csv(tmp_path / "up" / "tickets.csv", ticket_rows(10))
    assert main(["data-import", str(upload), "--name", "tickets", "--seed", "3"]) == 0
    out, err = capsys.readouterr()
    assert "Map" not in err and "Casting" not in err  # no progress bars of datasets' own for a few dozen rows
    assert "labels billing, bug, praise; rows train 24, validation 3, test 3" in out and "seed 3" in out
    assert "columns: text 'message' (guessed; --text-column to choose another), label 'category' (guessed;" in out
    assert "the rest train. Rows: train 24, validation 3, test 3." in out and "no rows of" not in out
    assert load_classification_dataset(str(workspace / "datasets" / "tickets")).label_names == ["billing", "bug", "praise"]

    before = listing(workspace)
    assert main(["data-import", str(upload), "--name", "tickets"]) == 2
    assert "already in the workspace" in capsys.readouterr().err
    assert main(["data-import", str(upload), "--name", "other", "--text-column", "body"]) == 2
    assert "has no text column 'body'" in capsys.readouterr().err
    assert listing(workspace) == before

    assert main(["data-info", "--dataset", "tickets"]) == 0  # a workspace dataset by the name the app shows
    assert "billing" in capsys.readouterr().out
    assert main(["data-import", str(upload)]) == 0  # no --name: the file's, made free
    assert "(named tickets-2 after the file; --name to choose another)" in capsys.readouterr().out
    assert (workspace / "datasets" / "tickets-2" / "provenance.json").is_file()
    split_files = [write_csv(tmp_path / "splits" / f"{split}.csv", ticket_rows(4)) for split in ("train", "test")]
    before = listing(workspace)
    assert main(["data-import", *map(str, split_files)]) == 2
    assert "give it a name with --name" in capsys.readouterr().err and listing(workspace) == before


def test_a_suggested_name_comes_from_the_upload_or_the_source_and_is_free_and_plain(tmp_path):
    assert dataset_import.suggest_name([tmp_path / "Support tickets (2024).csv"]) == "Support-tickets-2024"
    assert dataset_import.suggest_name(source="dair-ai/emotion") == "emotion"
    assert dataset_import.suggest_name(source=str(tmp_path / "my data") + "/") == "my-data"
    for nothing in ([tmp_path / "train.csv"], [tmp_path / "a.csv", tmp_path / "b.csv"], None):
        assert dataset_import.suggest_name(nothing) == ""  # a split's name, several files, nothing: no clue
    assert dataset_import.suggest_name(source="../..") == ""
    (dataset_import.datasets_root() / "emotion").mkdir(parents=True)
    (dataset_import.datasets_root() / "emotion-2").mkdir()
    assert dataset_import.suggest_name(source="dair-ai/emotion") == "emotion-3"
    for path in ([tmp_path / ("x" * 200 + ".csv")], [tmp_path / "données..v2.csv"]):
        assert dataset_import.check_name(dataset_import.suggest_name(path))  # what it suggests, Save takes
