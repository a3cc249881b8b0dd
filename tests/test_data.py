"""Loading classification and reasoning datasets from the Hub id (via the offline mirror) or disk."""

import json

import pytest

from reasonapp.data import load_classification_dataset, load_reasoning_dataset, sample_rows
from reasonapp.errors import DataError

EMOTIONS = ["sadness", "joy", "love", "anger", "fear", "surprise"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def test_emotion_by_hub_id_loads_from_the_mirror_offline(shared_data):
    data = load_classification_dataset("dair-ai/emotion")
    assert {split: len(rows) for split, rows in data.splits.items()} == {"train": 16000, "validation": 2000, "test": 2000}
    assert data.label_names == EMOTIONS
    assert list(data.label_counts("train").values()) == [4666, 5362, 1304, 2159, 1937, 572]
    assert data.splits["train"].features["label"].names == EMOTIONS


def test_reasoning_mix_loads_with_question_answer_reasoning(shared_data):
    data = load_reasoning_dataset("syvai/reasoning-gen")
    assert len(data.splits["train"]) == 52062
    row = data.splits["validation"][0]
    assert row["question"] and row["answer"] and row["reasoning"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_local_directory_with_string_labels_in_any_format(tmp_path, fmt):
    import pandas as pd

    rows = [{"text": "great stuff", "label": "pos"}, {"text": "awful", "label": "neg"}, {"text": "fine", "label": "pos"}]
    for split in ("train", "test"):
        frame = pd.DataFrame(rows)
        path = tmp_path / f"{split}.{fmt}"
        if fmt == "jsonl":
            write_jsonl(path, rows)
        elif fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path)
    data = load_classification_dataset(str(tmp_path))
    assert data.label_names == ["neg", "pos"]  # any label set works; sorted when the data does not order them
    assert data.splits["train"]["label"] == [1, 0, 1]


def test_label_names_from_an_argument_or_labels_json(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 1}])
    with pytest.raises(DataError, match="numbers without names"):
        load_classification_dataset(str(tmp_path))
    assert load_classification_dataset(str(tmp_path), labels=["spam", "ham"]).label_names == ["spam", "ham"]
    (tmp_path / "labels.json").write_text('["no", "yes"]')
    assert load_classification_dataset(str(tmp_path)).label_names == ["no", "yes"]


def test_custom_column_names(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"sentence": "a", "y": "x"}, {"sentence": "b", "y": "z"}])
    data = load_classification_dataset(str(tmp_path), text_column="sentence", label_column="y")
    assert data.splits["train"].column_names == ["text", "label"]


def test_missing_path_is_a_clear_error():
    with pytest.raises(DataError, match="not a local directory"):
        load_classification_dataset("/no/such/dataset")


def test_file_without_a_text_column_names_the_columns(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"sentence": "a", "label": "x"}])
    with pytest.raises(DataError, match=r"no column 'text' \(columns: \['sentence', 'label'\]\)"):
        load_classification_dataset(str(tmp_path))


def test_a_label_outside_the_declared_names_is_counted_and_named(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "joy"}, {"text": "b", "label": "rage"}, {"text": "c", "label": "meh"}])
    with pytest.raises(DataError, match=(
        r"split 'train' of '.+' has 2 rows whose label is not one of \['joy', 'sadness'\] \(declared\): "
        r"'rage' \(1 row\), 'meh' \(1 row\)"
    )):
        load_classification_dataset(str(tmp_path), labels=["joy", "sadness"])
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 7}])
    with pytest.raises(DataError, match=r"1 row whose label is not one of \['joy', 'sadness'\] \(declared\): 7 \(1 row\)"):
        load_classification_dataset(str(tmp_path), labels=["joy", "sadness"])


def test_the_label_set_comes_from_the_training_split(tmp_path):
    rows = [{"text": "great", "label": "pos"}, {"text": "awful", "label": "neg"}]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "validation.jsonl", rows)
    write_jsonl(tmp_path / "test.jsonl", [*rows, {"text": "so so", "label": "meh"}, {"text": "eh", "label": "meh"}])
    with pytest.raises(DataError, match=(
        r"split 'test' of '.+' has 2 rows whose label is not one of \['neg', 'pos'\] \(taken from the train split\): "
        r"'meh' \(2 rows\); fix or remove those rows, or declare every label \(--labels a,b,c or labels.json\)"
    )):
        load_classification_dataset(str(tmp_path))
    declared = load_classification_dataset(str(tmp_path), labels=["neg", "pos", "meh"])
    assert declared.label_counts("test") == {"neg": 1, "pos": 1, "meh": 2}


def test_non_utf8_bytes_are_a_clear_error(tmp_path):
    (tmp_path / "train.jsonl").write_bytes(b'{"text": "caf\xe9", "label": "a"}\n{"text": "b", "label": "b"}\n')
    with pytest.raises(DataError, match=r"train.jsonl is not valid UTF-8 \(line 1\)"):
        load_classification_dataset(str(tmp_path))


def test_sample_rows_is_a_fixed_sample(shared_data):
    train = load_classification_dataset("dair-ai/emotion").splits["train"]
    first = sample_rows(train, 50, seed=1)["text"]
    assert first == sample_rows(train, 50, seed=1)["text"] and len(first) == 50
    assert first != sample_rows(train, 50, seed=2)["text"]
    with pytest.raises(DataError):
        sample_rows(train, 0, seed=1)
