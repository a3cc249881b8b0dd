"""The review store: nothing lost, conflicts caught, reviewed rows never overwritten, bad files refused."""

import json
import sqlite3
import threading

import pytest

from reasonapp.errors import RunDirError
from reasonapp.quality import quality_flags, quality_summary
from reasonapp.store import ConflictError, ReasoningStore, RowFilter, StoreError

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
GEN = {"rgen_run": "runs/rgen", "prompt_version": "1"}


@pytest.fixture
def store(tmp_path):
    store = ReasoningStore(tmp_path / "store.sqlite", LABELS)
    store.add_examples("dair-ai/emotion", "train", [(0, "i feel so happy today", "joy"), (1, "i am terrified of spiders", "fear"), (2, "i miss my old dog", "sadness")])
    ids = store.ids_needing_reasoning("dair-ai/emotion", "train")
    store.write_generated(zip(ids, ["Feeling happy today shows joy.", "Joy is a positive emotion.", "Missing the old dog is sadness."], strict=True), GEN)
    yield store
    store.close()


def test_generated_rows_are_pending_with_generator_and_flags(store):
    rows = [store.get(i) for i in store.query_ids()]
    assert [r.status for r in rows] == ["pending"] * 3
    assert rows[0].generator == GEN and rows[0].flags == []
    assert "argues for joy" in rows[1].flags  # a fear example whose reasoning argues for joy
    assert store.query_ids(RowFilter(order="flags"))[0] == rows[1].id


def test_every_change_is_kept_in_history(store):
    row = store.get(store.query_ids()[0])
    row = store.review(row.id, "accepted", row.version, "ann")
    row = store.review(row.id, "accepted", row.version, "bob", reasoning="The writer says they feel happy: joy.")
    assert row.status == "edited" and row.reviewer == "bob"
    actions = [(h["action"], h["reasoning"]) for h in store.history(row.id)]
    assert actions == [
        ("generate", "Feeling happy today shows joy."),
        ("accepted", "Feeling happy today shows joy."),
        ("edit", "The writer says they feel happy: joy."),
    ]


def test_second_reviewer_gets_a_conflict_with_the_newer_text(store):
    row = store.get(store.query_ids()[0])
    store.review(row.id, "accepted", row.version, "ann", reasoning="Ann's version.")
    with pytest.raises(ConflictError) as conflict:
        store.review(row.id, "accepted", row.version, "bob", reasoning="Bob's version.")
    assert conflict.value.current.reasoning == "Ann's version." and "ann" in str(conflict.value)
    assert store.get(row.id).reasoning == "Ann's version."


def test_concurrent_saves_from_two_connections_lose_nothing(tmp_path, store):
    row = store.get(store.query_ids()[0])
    results = []

    def save(name):
        other = ReasoningStore(store.path)
        try:
            other.review(row.id, "accepted", row.version, name, reasoning=f"{name} wrote this.")
            results.append(("saved", name))
        except ConflictError:
            results.append(("conflict", name))
        finally:
            other.close()

    threads = [threading.Thread(target=save, args=(name,)) for name in ("ann", "bob")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(kind for kind, _ in results) == ["conflict", "saved"]
    winner = next(name for kind, name in results if kind == "saved")
    assert store.get(row.id).reasoning == f"{winner} wrote this."


def test_undo_steps_back_through_changes(store):
    row = store.get(store.query_ids()[0])
    row = store.review(row.id, "accepted", row.version, "ann", reasoning="First edit.")
    row = store.review(row.id, "rejected", row.version, "ann")
    row = store.undo(row.id, row.version, "ann")
    assert (row.status, row.reasoning) == ("edited", "First edit.")
    row = store.undo(row.id, row.version, "ann")
    assert (row.status, row.reasoning) == ("pending", "Feeling happy today shows joy.")
    with pytest.raises(StoreError, match="nothing to undo"):
        store.undo(row.id, row.version, "ann")
    assert len(store.history(row.id)) == 5


def test_rerun_of_generation_never_overwrites_reviewed_rows(store):
    ids = store.query_ids()
    row = store.get(ids[0])
    store.review(row.id, "accepted", row.version, "ann", reasoning="Reviewed text.")
    assert store.ids_needing_reasoning("dair-ai/emotion", "train") == []
    assert store.write_generated([(ids[0], "new text"), (ids[2], "new text")], GEN, overwrite_pending=True) == 1
    assert store.get(ids[0]).reasoning == "Reviewed text."
    assert store.get(ids[2]).reasoning == "new text"


def test_empty_and_huge_edits_are_refused_and_nothing_changes(store):
    row = store.get(store.query_ids()[0])
    with pytest.raises(StoreError, match="empty"):
        store.review(row.id, "accepted", row.version, "ann", reasoning="   ")
    with pytest.raises(StoreError, match="100,000 characters; the limit is 20,000"):
        store.review(row.id, "accepted", row.version, "ann", reasoning="x" * 100_000)
    assert store.get(row.id).reasoning == "Feeling happy today shows joy." and store.get(row.id).version == row.version


def test_filters_counts_and_bulk_accept(store):
    assert store.query_ids(RowFilter(label="fear")) == [store.query_ids()[1]]
    assert len(store.query_ids(RowFilter(search="DOG"))) == 1
    assert len(store.query_ids(RowFilter(flagged=True))) == 1
    assert store.bulk_accept(RowFilter(flagged=False), "ann") == 2
    counts = store.counts()
    assert counts["status"] == {"pending": 1, "accepted": 2, "edited": 0, "rejected": 0}
    assert counts["label"]["fear"]["pending"] == 1


def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("my precious notes")
    with pytest.raises(StoreError, match="not an SQLite database"):
        ReasoningStore(path)
    assert path.read_text() == "my precious notes"


def test_a_store_from_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite"
    ReasoningStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer reasonapp"):
        ReasoningStore(path)


@pytest.mark.parametrize(
    ("reasoning", "text", "label", "flag"),
    [
        ("", "i feel great", "joy", "empty"),
        ("Joy is a positive emotion.", "i feel great", "joy", "restates the label without a cue"),
        ("This is anger, pure anger, not joy.", "i feel great", "joy", "argues for anger"),
        ("so so so so so so so so so so so so", "i feel great", "joy", "repetitive"),
        ("Joy.", "i feel great", "joy", "too short (1 words)"),
        ("The words feel great show a happy mood.", "i feel great", "joy", None),
    ],
)
def test_quality_flags_on_hand_written_reasonings(reasoning, text, label, flag):
    flags = quality_flags(reasoning, text, label, LABELS)
    assert (flag in flags) if flag else flags == []


def test_a_quality_summary_counts_the_rows_with_a_reasoning_and_finds_the_commonest():
    template = "Joy is a positive emotion."
    rows = [
        {"text": "i feel great", "label": "joy", "reasoning": template, "flags": ["restates the label without a cue", "cites nothing from the text", "template (shared by 3 rows)"]},
        {"text": "what a day", "label": "joy", "reasoning": template + " ", "flags": ["restates the label without a cue", "cites nothing from the text", "template (shared by 3 rows)"]},
        {"text": "so scared", "label": "fear", "reasoning": "Being scared of it shows anger, pure anger.", "flags": ["argues for anger"]},
        {"text": "i miss him", "label": "sadness", "reasoning": "Missing him hurts.", "flags": []},
        {"text": "blank one", "label": "love", "reasoning": "", "flags": ["empty"]},  # kept with its label only
    ]
    summary = quality_summary(rows)
    assert summary["rows"] == 5 and summary["with_reasoning"] == 4
    assert summary["unflagged"] == 0.25 and summary["names_gold_label"] == 0.5
    assert summary["cites_nothing"] == 0.5 and summary["template"] == 0.5 and summary["argues_other_label"] == 0.25
    assert summary["commonest"] == {"reasoning": template, "rows": 2}
    assert summary["mean_words"] == (5 + 5 + 8 + 3) / 4
    assert quality_summary([])["with_reasoning"] == 0


def test_export_keeps_accepted_and_edited_never_rejected(store, tmp_path):
    from reasonapp.data import load_classification_dataset
    from training.augment import export_store

    first, second, third = store.query_ids()
    store.review(first, "accepted", store.get(first).version, "ann")
    store.review(second, "rejected", store.get(second).version, "ann")
    store.review(third, "accepted", store.get(third).version, "ann", reasoning="Missing a dog one loved is sadness.")
    provenance = export_store(store.path, tmp_path / "export")
    assert provenance["rows"] == 2 and provenance["exported_status"] == {"accepted": 1, "edited": 1}
    loaded = load_classification_dataset(str(tmp_path / "export"))
    assert loaded.label_names == LABELS
    train = loaded.splits["train"]
    assert train["reasoning"] == ["Feeling happy today shows joy.", "Missing a dog one loved is sadness."]
    assert {"status", "reviewer", "generator", "flags"} <= set(train.column_names)
    assert json.loads(train["generator"][0]) == GEN
    assert (tmp_path / "export" / "train.parquet").is_file() and (tmp_path / "export" / "hf" / "dataset_dict.json").is_file()
    with_pending = export_store(store.path, tmp_path / "export2", include_pending=True)
    assert with_pending["rows"] == 2  # the only other row was rejected


def test_export_of_an_unreviewed_store_says_what_to_do(store, tmp_path):
    from reasonapp.errors import RunDirError
    from training.augment import export_store

    with pytest.raises(RunDirError, match="--include-pending"):
        export_store(store.path, tmp_path / "export")


def test_template_reasonings_are_flagged_across_rows(tmp_path):
    store = ReasoningStore(tmp_path / "s.sqlite", LABELS)
    texts = [(i, f"text number {i} about my day", "joy" if i % 2 else "fear") for i in range(7)]
    store.add_examples("d", "train", texts)
    ids = store.ids_needing_reasoning("d", "train")
    reasonings = ["Joy is a positive emotion." if i % 2 else "Fear is a positive emotion." for i in range(6)] + ["My day was fine, so joy."]
    store.write_generated(zip(ids, reasonings, strict=True), GEN)
    assert store.mark_templates(min_rows=5) == 6
    flags = store.get(ids[0]).flags
    assert "template (shared by 6 rows)" in flags
    assert not any(f.startswith("template") for f in store.get(ids[6]).flags)
    assert store.mark_templates(min_rows=5) == 6 and store.get(ids[0]).flags.count("template (shared by 6 rows)") == 1


def test_export_policy_drops_flagged_rows_and_records_it(store, tmp_path):
    from training.augment import export_store

    for row_id in store.query_ids():
        store.review(row_id, "accepted", store.get(row_id).version, "ann")
    provenance = export_store(store.path, tmp_path / "export", policy="drop-label-restating")
    assert provenance["rows"] == 2 and provenance["dropped_by_policy"] == 1 and provenance["policy"] == "drop-label-restating"
    assert provenance["quality"]["with_reasoning"] == 2 and provenance["quality"]["unflagged"] == 1.0  # of what was exported


def test_an_export_can_keep_the_labels_of_dropped_rows_with_blank_reasonings(store, tmp_path):
    from training.augment import export_store

    for row_id in store.query_ids():
        store.review(row_id, "accepted", store.get(row_id).version, "ann")
    export_store(store.path, tmp_path / "removed", policy="drop-label-restating")
    provenance = export_store(store.path, tmp_path / "blanked", policy="drop-label-restating", dropped="blank")
    assert provenance["rows"] == 3 and provenance["dropped_by_policy"] == 1 and provenance["dropped_rows"] == "blank"

    def rows(name):
        return [json.loads(line) for line in (tmp_path / name / "train.jsonl").read_text().splitlines()]

    blanked, removed = rows("blanked"), rows("removed")
    assert [(r["text"], r["reasoning"]) for r in blanked if r["reasoning"]] == [(r["text"], r["reasoning"]) for r in removed]
    assert [r["label"] for r in blanked if not r["reasoning"]] and len(blanked) == len(removed) + 1
    with pytest.raises(RunDirError, match="dropped rows are remove or blank"):
        export_store(store.path, tmp_path / "x", policy="drop-label-restating", dropped="keep")


def test_the_export_command_takes_the_policy_and_what_to_do_with_dropped_rows(store, tmp_path, capsys):
    from training.cli import main

    args = ["export", "--store", str(store.path), "--out", str(tmp_path / "out"), "--include-pending"]
    assert main([*args, "--policy", "drop-label-restating", "--dropped", "blank"]) == 0
    out = capsys.readouterr().out
    assert "exported 3 rows" in out and "2 reasonings: 100% unflagged" in out  # the blanked row has none
    provenance = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert provenance["policy"] == "drop-label-restating" and provenance["dropped_rows"] == "blank"
