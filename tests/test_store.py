"""The review store: nothing lost, conflicts caught, reviewed rows never overwritten, bad files refused."""

import json
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from reasonapp.errors import RunDirError
from reasonapp.quality import quality_flags, quality_summary
from reasonapp.store import ConflictError, ReasoningStore, RowFilter, StoreError

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
GEN = {"rgen_run": "runs/rgen", "prompt_version": "1"}


@pytest.fixture
def store(tmp_path):
    store = ReasoningStore(tmp_path / "store.sqlite")
    store.add_examples(
        "dair-ai/emotion", "train", [(0, "i feel so happy today", "joy"), (1, "i am terrified of spiders", "fear"), (2, "i miss my old dog", "sadness")], LABELS
    )
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
    assert str(conflict.value).startswith(f"row {row.row_index} of {row.dataset}/{row.split} was changed by ann")  # as the page names it
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
    assert store.bulk_accept(RowFilter(flagged=False), "ann").accepted == 2
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
    store = ReasoningStore(tmp_path / "s.sqlite")
    texts = [(i, f"text number {i} about my day", "joy" if i % 2 else "fear") for i in range(7)]
    store.add_examples("d", "train", texts, LABELS)
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


# -- safety across threads and processes (issue 19: acknowledged decisions were lost) -----------


def _on_disk(path, row_id):
    """A row as a fresh process would see it after a restart."""
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT status, reasoning, version FROM rows WHERE id = ?", (row_id,)).fetchone()
    finally:
        db.close()


def _open_and_close_in_another_process(path):
    import subprocess

    code = "import sys; from reasonapp.store import ReasoningStore; ReasoningStore(sys.argv[1]).close()"
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=Path(__file__).resolve().parents[1])


def test_a_second_handle_in_the_app_process_does_not_lose_the_apps_later_decisions(store):
    # The trigger found: an Export in the app opened (and closed) the store file a second time in the same
    # process, which dropped the app's SQLite locks; the next process to close the store then deleted the
    # WAL the app still wrote to. The page said "accepted"; on disk the row stayed pending.
    ReasoningStore(store.path).close()
    _open_and_close_in_another_process(store.path)
    row = store.get(store.query_ids()[0])
    acknowledged = store.review(row.id, "accepted", row.version, "ann", reasoning="Kept after all.")
    assert _on_disk(store.path, row.id) == ("edited", "Kept after all.", acknowledged.version)


def test_worker_threads_sharing_one_store_lose_no_acknowledged_decision(tmp_path):
    store = ReasoningStore(tmp_path / "store.sqlite")
    store.add_examples("d", "train", [(i, f"i feel happy about thing {i}", "joy") for i in range(40)], LABELS)
    ids = store.ids_needing_reasoning("d", "train")
    store.write_generated(((i, f"Thing {i} makes them happy: joy.") for i in ids), GEN)
    acknowledged, failures = {}, []

    def reviewer(name, rows):
        for row_id in rows:
            try:
                row = store.get(row_id)
                done = store.review(row_id, "accepted", row.version, name, reasoning=f"{name} saw thing {row_id}: joy.")
                acknowledged[row_id] = done.reasoning
            except Exception as error:  # noqa: BLE001 - every failure is the finding
                failures.append(repr(error))

    threads = [threading.Thread(target=reviewer, args=(f"r{k}", ids[k::4])) for k in range(4)]
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as Gradio's busy workers might, inside transactions too
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch_interval)
    assert failures == [] and len(acknowledged) == 40
    assert all(_on_disk(store.path, row_id)[1] == text for row_id, text in acknowledged.items())


@pytest.mark.slow
def test_review_in_threads_while_augment_runs_in_another_process_on_the_same_and_a_new_dataset(tmp_path, tiny_model_dir, shared_data):
    import subprocess

    new_dataset = tmp_path / "tickets"
    new_dataset.mkdir()
    (new_dataset / "train.jsonl").write_text(
        "".join(json.dumps({"text": f"ticket {i} about my bill", "label": ["billing", "bug", "praise"][i % 3]}) + "\n" for i in range(12))
    )
    path = tmp_path / "store.sqlite"
    store = ReasoningStore(path)  # the app's handle, open throughout
    store.add_examples("dair-ai/emotion", "train", [(i, f"i feel happy today {i}", "joy") for i in range(30)], LABELS)
    ids = store.ids_needing_reasoning("dair-ai/emotion", "train")
    store.write_generated(((i, f"Happy today {i}: joy.") for i in ids), GEN)
    root = Path(__file__).resolve().parents[1]

    def augment(dataset):
        command = [sys.executable, "-m", "training", "augment", "--rgen-run", f"base:{tiny_model_dir}", "--dataset", str(dataset),
                   "--limit", "8", "--store", str(path), "--max-new-tokens", "4", "--batch-size", "4"]
        return subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    acknowledged, failures = {}, []

    def reviewer(name, rows):
        for row_id in rows:
            try:
                row = store.get(row_id)
                acknowledged[row_id] = store.review(row_id, "accepted", row.version, name, reasoning=f"{name} on {row_id}: joy.").reasoning
                ReasoningStore(path).close()  # what an Export or a second tab does in the same process
            except Exception as error:  # noqa: BLE001
                failures.append(repr(error))

    for dataset in ("dair-ai/emotion", new_dataset):
        process = augment(dataset)
        threads = [threading.Thread(target=reviewer, args=(f"r{k}", ids[k::3][:5])) for k in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        output = process.communicate(timeout=600)[0]
        assert process.returncode == 0, output
        ids = [i for i in ids if i not in acknowledged]
    store.close()
    assert failures == [] and len(acknowledged) == 30
    after_restart = ReasoningStore(path)
    assert all(after_restart.get(row_id).reasoning == text for row_id, text in acknowledged.items())
    assert after_restart.datasets() == sorted(["dair-ai/emotion", str(new_dataset)])
    assert after_restart.label_names("dair-ai/emotion") == LABELS  # the second dataset did not replace the first one's labels
    assert after_restart.label_names(str(new_dataset)) == ["billing", "bug", "praise"]


def test_a_store_file_deleted_under_an_open_store_refuses_writes_and_a_replaced_one_is_reopened(store, tmp_path):
    row = store.get(store.query_ids()[0])
    moved = tmp_path / "moved.sqlite"
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{store.path}{suffix}").exists():
            Path(f"{store.path}{suffix}").rename(f"{moved}{suffix}")
    with pytest.raises(StoreError, match="deleted or moved"):
        store.review(row.id, "accepted", row.version, "ann")
    replacement = ReasoningStore(store.path)
    replacement.add_examples("other", "train", [(0, "a new file", "joy")], LABELS)
    replacement.close()
    store.add_examples("other", "train", [(1, "written after the swap", "joy")])
    assert sorted(ReasoningStore(store.path).datasets()) == ["other"]


def test_an_sqlite_file_of_another_program_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (body TEXT)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="something else .*notes.*left untouched"):
        ReasoningStore(path)
    assert path.read_bytes() == before


# -- one store, several datasets ------------------------------------------------------------------


def test_a_second_dataset_keeps_its_own_labels_and_the_first_ones_rows_and_labels_stay(store, tmp_path):
    from training.augment import export_store

    store.add_examples("tickets", "train", [(0, "the app crashes on start", "bug"), (1, "you charged me twice", "billing")], ["billing", "bug"])
    store.write_generated(((i, "It crashes: bug.") for i in store.ids_needing_reasoning("tickets", "train")), GEN)
    assert store.label_names("dair-ai/emotion") == LABELS and store.label_names("tickets") == ["billing", "bug"]
    assert len(store.query_ids(RowFilter(dataset="tickets"))) == 2 and len(store.query_ids(RowFilter(dataset="dair-ai/emotion"))) == 3
    assert store.counts("tickets")["total"] == 2 and store.counts()["total"] == 5
    with pytest.raises(StoreError, match="labels"):
        store.add_examples("tickets", "train", [(2, "x", "bug")], ["bug", "billing", "praise"])
    with pytest.raises(RunDirError, match="2 datasets .*--dataset"):
        export_store(store.path, tmp_path / "both", include_pending=True)
    assert not (tmp_path / "both").exists()
    export_store(store.path, tmp_path / "emotion", include_pending=True, dataset="dair-ai/emotion")
    export_store(store.path, tmp_path / "tickets", include_pending=True, dataset="tickets")
    assert json.loads((tmp_path / "emotion" / "labels.json").read_text()) == LABELS
    assert json.loads((tmp_path / "tickets" / "labels.json").read_text()) == ["billing", "bug"]
    assert [json.loads(line)["label"] for line in (tmp_path / "tickets" / "train.jsonl").read_text().splitlines()] == ["bug", "billing"]


def test_a_store_with_one_label_list_for_all_rows_gives_it_to_each_dataset_when_opened(tmp_path):
    path = tmp_path / "old.sqlite"
    ReasoningStore(path).close()
    with sqlite3.connect(path) as db:  # the layout before datasets kept their own labels
        db.execute("INSERT INTO meta VALUES ('label_names', ?)", (json.dumps(LABELS),))
        db.execute("INSERT INTO rows (dataset, split, row_index, text, label, created_at, updated_at) VALUES ('dair-ai/emotion', 'train', 0, 't', 'joy', 0, 0)")
    assert ReasoningStore(path).label_names("dair-ai/emotion") == LABELS


def test_labels_written_by_another_process_after_opening_are_used_for_the_flags_of_an_edit(tmp_path):
    app = ReasoningStore(tmp_path / "store.sqlite")  # the app opened an empty store at start
    cli = ReasoningStore(app.path)  # then `augment` filled it
    cli.add_examples("dair-ai/emotion", "train", [(0, "i am terrified of spiders", "fear")], LABELS)
    cli.write_generated([(1, "Spiders are terrifying, so fear.")], GEN)
    row = app.get(1)
    edited = app.review(row.id, "accepted", row.version, "ann", reasoning="The spiders make them so happy: joy, joy.")
    generated_same_text = quality_flags(edited.reasoning, row.text, row.label, LABELS)
    assert "argues for joy" in edited.flags and edited.flags == generated_same_text


def test_bulk_accept_holds_reasonings_to_the_same_limit_as_a_single_accept(store):
    ids = store.query_ids()
    huge = "cues " * 5_000
    store.write_generated([(ids[2], huge)], GEN, overwrite_pending=True)
    result = store.bulk_accept(RowFilter(), "ann")
    assert result.accepted == 2 and list(result.refused) == [ids[2]] and "limit is 20,000" in result.refused[ids[2]]
    assert store.get(ids[2]).status == "pending"
    with pytest.raises(StoreError, match="limit is 20,000"):
        store.review(ids[2], "accepted", store.get(ids[2]).version, "ann")


# -- export targets: nothing is ever overwritten by surprise --------------------------------------


@pytest.fixture
def reviewed(store):
    for row_id in store.query_ids()[:2]:
        store.review(row_id, "accepted", store.get(row_id).version, "ann")
    return store


@pytest.mark.parametrize(
    ("prepare", "said"),
    [
        (lambda d: (d / "train.jsonl").write_text('{"text": "mine", "label": 0}\n'), "holds a dataset"),
        (lambda d: (d / "config.json").write_text('{"task": "qra"}'), "is a run directory"),
        (lambda d: (d / "notes.txt").write_text("mine"), "files that are not an export"),
    ],
)
def test_export_never_writes_into_a_dataset_a_run_or_a_folder_of_other_files(reviewed, tmp_path, prepare, said):
    from training.augment import export_store

    target = tmp_path / "target"
    target.mkdir()
    prepare(target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    for overwrite in (False, True):
        with pytest.raises(RunDirError, match=said):
            export_store(reviewed.path, target, overwrite=overwrite)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before


def test_an_earlier_export_is_replaced_only_with_overwrite_and_never_when_a_run_trained_on_it(reviewed, tmp_path):
    from training import rundir
    from training.augment import export_store

    out = tmp_path / "workspace" / "exports" / "reviewed"
    export_store(reviewed.path, out)
    with pytest.raises(RunDirError, match="already holds an export; pass --overwrite"):
        export_store(reviewed.path, out)
    reviewed.review(reviewed.query_ids()[2], "accepted", reviewed.get(reviewed.query_ids()[2]).version, "ann")
    assert export_store(reviewed.path, out, overwrite=True)["rows"] == 3
    assert len((out / "train.jsonl").read_text().splitlines()) == 3 and not list(out.parent.glob(".reviewed*"))
    rundir.write_config(rundir.runs_root() / "qra-1", {"task": "qra", "dataset": str(out)})
    with pytest.raises(RunDirError, match="training data of .*qra-1"):
        export_store(reviewed.path, out, overwrite=True)
    assert len((out / "train.jsonl").read_text().splitlines()) == 3


def test_a_file_as_export_target_is_refused(reviewed, tmp_path):
    from training.augment import export_store

    target = tmp_path / "train.jsonl"
    target.write_text("mine\n")
    with pytest.raises(RunDirError, match="is a file"):
        export_store(reviewed.path, target)
    assert target.read_text() == "mine\n"


def test_an_export_that_fails_midway_leaves_nothing_half_written(reviewed, tmp_path, monkeypatch):
    import datasets

    from training.augment import export_store

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datasets.DatasetDict, "save_to_disk", disk_full)
    with pytest.raises(OSError):
        export_store(reviewed.path, tmp_path / "out")
    assert list(tmp_path.glob("*out*")) == []


def test_the_export_command_refuses_a_taken_directory_in_one_line(reviewed, tmp_path, capsys):
    from training.cli import main

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("{}\n")
    assert main(["export", "--store", str(reviewed.path), "--out", str(tmp_path / "data")]) == 2
    assert capsys.readouterr().err.startswith("error: ") and (tmp_path / "data" / "train.jsonl").read_text() == "{}\n"
    assert main(["export", "--store", str(reviewed.path), "--out", str(tmp_path / "new")]) == 0
    assert main(["export", "--store", str(reviewed.path), "--out", str(tmp_path / "new"), "--overwrite"]) == 0


def test_export_without_a_store_says_so_and_creates_none(tmp_path):
    from reasonapp.store import default_store_path
    from training.augment import export_store

    with pytest.raises(RunDirError, match="no review store at .*run `augment` first"):
        export_store(None, tmp_path / "out")
    assert not default_store_path().exists() and not (tmp_path / "out").exists()


def test_a_reviewer_may_undo_only_their_own_last_change(store):
    row_id = store.query_ids()[0]
    store.review(row_id, "accepted", store.get(row_id).version, "ann")
    with pytest.raises(StoreError, match="ann's; you may undo only your own"):
        store.undo(row_id, store.get(row_id).version, "bob", others=False)
    assert store.get(row_id).status == "accepted"
    assert store.undo(row_id, store.get(row_id).version, "ann", others=False).status == "pending"


def test_a_failed_swap_puts_the_earlier_export_back(reviewed, tmp_path, monkeypatch):
    from training.augment import export_store

    out = tmp_path / "out"
    export_store(reviewed.path, out)
    before = (out / "train.jsonl").read_text()
    real_rename = Path.rename

    def rename(self, target):
        if self.name.endswith(".partial"):
            raise OSError(28, "No space left on device")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError):
        export_store(reviewed.path, out, overwrite=True)
    assert (out / "train.jsonl").read_text() == before and not list(tmp_path.glob(".out*"))
