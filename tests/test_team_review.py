"""Team review (issue 21, item 4): with `min_reviews` > 1 several reviewers decide each row, a row is final when
enough decisions agree, an admin resolves the rows where they disagree, export takes final rows only, and the
Review tab shows the team's agreement. The library, the store, the decision log, the tab, and the app as a Space."""

import json
import os
import sys
from pathlib import Path

import pytest

from reasonapp.agreement import (
    DISPUTE,
    FINAL,
    OPEN,
    Decision,
    agree,
    agreement_line,
    agreement_summary,
    cohen_kappa,
    levenshtein,
    outcome,
)
from reasonapp.journal import DecisionLog, read_events, replay
from reasonapp.store import ConflictError, ReasoningStore, RowFilter, StoreError

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
GEN = {"rgen_run": "runs/rgen", "prompt_version": "1"}

# The hand-built case: bob and carol on six rows, carol alone on a seventh.
#   row 1  bob accepted          carol accepted            agree      both keep the generated text: distance 0
#   row 2  bob accepted          carol edited "sitting"    disagree   "kitten" -> "sitting": distance 3
#   row 3  bob rejected          carol rejected            agree      no versions
#   row 4  bob accepted          carol rejected            disagree   carol kept no version
#   row 5  bob edited "abc"      carol edited "abd"        disagree   distance 1
#   row 6  bob rejected          carol accepted            disagree   bob kept no version
#   row 7                        carol accepted            (one decision: counts for progress only)
GENERATED = ["Feeling happy shows joy.", "kitten", "Sad words: sadness.", "Angry words: anger.", "Scared words: fear.", "Love words: love.", "Joy words: joy."]
HAND_BUILT = [
    (("accepted", None), ("accepted", None)),
    (("accepted", None), ("edited", "sitting")),
    (("rejected", None), ("rejected", None)),
    (("accepted", None), ("rejected", None)),
    (("edited", "abc"), ("edited", "abd")),
    (("rejected", None), ("accepted", None)),
    (None, ("accepted", None)),
]


def hand_built_decisions() -> dict[int, list[Decision]]:
    """The case as Decision objects: an accept keeps the generated text, an edit the reviewer's, a reject none."""
    rows = {}
    for row, (generated, pair) in enumerate(zip(GENERATED, HAND_BUILT, strict=True), 1):
        rows[row] = []
        for name, choice in zip(("bob", "carol"), pair, strict=True):
            if choice:
                decision, text = choice
                rows[row].append(Decision(name, decision, None if decision == "rejected" else text or generated))
    return rows


# -- the library: agreement, outcome and the team's figures ---------------------------------------


def test_two_decisions_agree_when_they_are_the_same_decision_and_for_edits_the_same_text():
    accepted, rejected = Decision("bob", "accepted", "Happy: joy."), Decision("carol", "rejected", None)
    edit, same_edit, other_edit = Decision("bob", "edited", "The words so happy: joy."), Decision("carol", "edited", "The words so happy: joy."), Decision("dan", "edited", "So happy: joy.")
    assert agree(accepted, Decision("carol", "accepted", "Happy: joy.")) and agree(rejected, Decision("bob", "rejected", None))
    assert agree(edit, same_edit) and not agree(edit, other_edit)
    assert not agree(accepted, rejected) and not agree(accepted, Decision("carol", "edited", "Happy: joy!"))


def test_a_row_is_final_when_min_reviews_decisions_agree_and_in_dispute_as_soon_as_two_disagree():
    bob, carol = Decision("bob", "accepted", "Happy: joy."), Decision("carol", "accepted", "Happy: joy.")
    assert outcome([], 2).state == OPEN and outcome([bob], 2).state == OPEN
    assert outcome([bob], 1).state == FINAL
    assert outcome([bob, carol], 2).state == FINAL and outcome([bob, carol], 2).agreed.decision == "accepted"
    assert outcome([bob, carol], 3).state == OPEN  # agreeing, but too few yet
    assert outcome([bob, Decision("carol", "rejected", None)], 3).state == DISPUTE  # no third review can mend it


def test_levenshtein_counts_characters_inserted_deleted_or_substituted():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("flaw", "lawn") == 2
    assert levenshtein("", "abc") == levenshtein("abc", "") == 3
    assert levenshtein("The words show joy.", "The words show joy.") == 0
    assert levenshtein("The words so happy show joy.", "The words so sad show joy.") == 4


def test_the_agreement_figures_on_the_hand_built_case_are_the_ones_worked_out_by_hand():
    summary = agreement_summary(hand_built_decisions())
    # Six rows have two decisions; rows 1 and 3 agree.
    assert summary["rows_multiply_reviewed"] == 6 and summary["rows_agreeing"] == 2
    assert summary["share_agreeing"] == pytest.approx(2 / 6)
    # Kappa on accept (accepted or edited) vs reject, bob as rater A (his name sorts first):
    #   bob   A A R A A R     accepts 4 of 6
    #   carol A A R R A A     accepts 4 of 6
    #   observed agreement p_o = 4/6 (rows 1, 2, 3, 5)
    #   chance agreement p_e = (4/6)(4/6) + (2/6)(2/6) = 20/36 = 5/9
    #   kappa = (p_o - p_e) / (1 - p_e) = (6/9 - 5/9) / (4/9) = 1/4
    assert summary["pairs"] == 6 and summary["kappa"] == pytest.approx(0.25)
    # Edit distance over the pairs where both kept a version: rows 1 (0), 2 (3), 5 (1).
    assert summary["edit_pairs"] == 3 and summary["mean_edit_distance"] == pytest.approx(4 / 3)
    assert summary["per_reviewer"] == {"carol": 7, "bob": 6}
    line = agreement_line(summary, 2, in_dispute=4)
    assert "33% of 6 rows reviewed twice or more agree" in line and "Cohen's κ (accept vs reject) 0.25 over 6 pairs" in line
    assert "mean edit distance 1.3 characters over 3 pairs" in line and "rows reviewed: carol 7, bob 6" in line


def test_kappa_is_undefined_when_every_decision_is_in_one_class_and_three_reviewers_make_three_pairs():
    assert cohen_kappa([(True, True), (True, True)]) is None and cohen_kappa([]) is None
    assert cohen_kappa([(True, True), (False, False)]) == 1.0
    three = [Decision("bob", "accepted", "x"), Decision("carol", "accepted", "x"), Decision("dan", "rejected", None)]
    summary = agreement_summary({1: three})
    assert summary["pairs"] == 3 and summary["edit_pairs"] == 1 and summary["share_agreeing"] == 0.0


def test_with_team_review_off_the_line_says_how_to_turn_it_on():
    assert "REASONAPP_MIN_REVIEWS=2" in agreement_line(agreement_summary({}), 1)


# -- the store ----------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    store = ReasoningStore(tmp_path / "store.sqlite", journal=None)
    texts = ["i feel so happy today", "i miss my old dog", "i am so sad", "this makes me furious", "i am terrified", "i adore you", "what a lovely day"]
    labels = ["joy", "sadness", "sadness", "anger", "fear", "love", "joy"]
    store.add_examples("dair-ai/emotion", "train", [(i, t, lb) for i, (t, lb) in enumerate(zip(texts, labels, strict=True))], LABELS)
    store.write_generated(zip(store.ids_needing_reasoning("dair-ai/emotion", "train"), GENERATED, strict=True), GEN)
    store.set_min_reviews(2)
    yield store
    store.close()


def decide(store, row_id, reviewer, decision, reasoning=None):
    """A reviewer's decision on the row as they loaded it."""
    return store.review(row_id, decision, store.get(row_id).version, reviewer, reasoning)


def test_one_decision_finalises_a_row_by_default_and_records_no_team_decision(tmp_path):
    store = ReasoningStore(tmp_path / "plain.sqlite", journal=None)
    store.add_examples("d", "train", [(0, "i feel so happy", "joy")], LABELS)
    store.write_generated([(1, "So happy: joy.")], GEN)
    assert store.min_reviews() == 1
    assert decide(store, 1, "bob", "accepted").status == "accepted"
    assert store.team_decisions() == {} and store.history(1)[-1]["reviews"] is None


def test_two_agreeing_reviews_finalise_a_row_and_the_first_leaves_it_in_the_other_reviewers_queue_only(store):
    first = decide(store, 1, "bob", "accepted")
    assert first.status == "pending" and [d.reviewer for d in store.decisions(1)] == ["bob"]
    assert 1 not in store.query_ids(RowFilter(needs_review_by="bob")) and 1 in store.query_ids(RowFilter(needs_review_by="carol"))
    final = decide(store, 1, "carol", "accepted")
    assert (final.status, final.reasoning) == ("accepted", GENERATED[0])
    assert 1 not in store.query_ids(RowFilter(needs_review_by="carol")) and 1 not in store.query_ids(RowFilter(needs_review_by="dan"))
    assert [(h["action"], h["status"], h["reviewer"]) for h in store.history(1)] == [
        ("generate", "pending", None), ("review", "pending", "bob"), ("agree", "accepted", "carol")
    ]


def test_an_edit_agrees_only_with_the_same_text_and_two_equal_edits_finalise_it_as_edited(store):
    decide(store, 1, "bob", "edited", "The words so happy carry the joy.")
    assert decide(store, 1, "carol", "edited", "The words so happy carry the joy.").reasoning == "The words so happy carry the joy."
    assert store.get(1).status == "edited"
    decide(store, 2, "bob", "edited", "Missing the dog is sadness.")
    decide(store, 2, "carol", "edited", "Missing the old dog is sadness.")
    assert store.get(2).status == "pending" and store.query_ids(RowFilter(disputed=True)) == [2]


def test_disagreeing_reviews_put_the_row_in_dispute_out_of_every_queue_until_an_admin_resolves_it(store):
    decide(store, 2, "bob", "accepted")
    decide(store, 2, "carol", "rejected")
    assert store.get(2).status == "pending" and store.query_ids(RowFilter(disputed=True)) == [2]
    assert all(2 not in store.query_ids(RowFilter(needs_review_by=name)) for name in ("bob", "carol", "dan"))
    assert store.counts()["in_dispute"] == 1
    with pytest.raises(StoreError, match="in dispute between bob, carol"):
        decide(store, 2, "dan", "accepted")
    resolved = store.resolve(2, store.get(2).version, "alice", "accepted", "Missing the old dog is sadness.")
    assert (resolved.status, resolved.reasoning, resolved.reviewer) == ("edited", "Missing the old dog is sadness.", "alice")
    assert store.history(2)[-1]["action"] == "resolve" and store.query_ids(RowFilter(disputed=True)) == []
    assert [(d.reviewer, d.decision) for d in store.decisions(2)] == [("bob", "accepted"), ("carol", "rejected")]  # kept for the figures


def test_a_reviewer_may_change_their_own_decision_before_the_row_is_final_and_so_end_a_dispute(store):
    decide(store, 2, "bob", "accepted")
    decide(store, 2, "carol", "rejected")
    assert decide(store, 2, "carol", "accepted").status == "accepted"
    assert [(d.reviewer, d.decision) for d in store.decisions(2)] == [("bob", "accepted"), ("carol", "accepted")]


def test_a_decision_on_a_final_row_is_refused_and_an_admin_resolution_picks_the_generated_text_as_accepted(store):
    decide(store, 1, "bob", "rejected")
    decide(store, 1, "carol", "rejected")
    with pytest.raises(StoreError, match="final .*only an admin changes it"):
        decide(store, 1, "dan", "accepted")
    assert store.resolve(1, store.get(1).version, "alice", "accepted", GENERATED[0]).status == "accepted"
    assert store.resolve(1, store.get(1).version, "alice", "rejected").status == "rejected"


def test_another_reviewers_decision_is_no_conflict_but_anything_that_changes_what_you_saw_is(store):
    loaded = store.get(2).version  # bob, carol and dan all open row 2
    store.review(2, "accepted", loaded, "bob")
    assert store.review(2, "accepted", loaded, "carol").status == "accepted"  # bob's decision did not change what carol saw
    with pytest.raises(ConflictError) as conflict:
        store.review(2, "rejected", loaded, "dan")  # the row became final meanwhile
    assert conflict.value.current.status == "accepted"
    loaded = store.get(3).version
    store.review(3, "accepted", loaded, "bob")
    with pytest.raises(ConflictError):
        store.review(3, "rejected", loaded, "bob")  # bob's own decision changed since (another tab): he sees it first
    store.review(4, "accepted", store.get(4).version, "bob")
    seen_by_admin = store.get(4).version
    store.review(4, "rejected", seen_by_admin, "carol")
    with pytest.raises(ConflictError):
        store.resolve(4, seen_by_admin, "alice", "accepted")  # a resolution is made on every decision there is


def test_undo_brings_back_the_decisions_of_the_state_before_the_last_change(store):
    decide(store, 2, "bob", "accepted")
    decide(store, 2, "carol", "rejected")
    undone = store.undo(2, store.get(2).version, "carol")
    assert undone.status == "pending" and [d.reviewer for d in store.decisions(2)] == ["bob"]
    assert 2 in store.query_ids(RowFilter(needs_review_by="carol"))
    decide(store, 2, "carol", "accepted")
    assert store.get(2).status == "accepted"
    store.undo(2, store.get(2).version, "alice")
    assert store.get(2).status == "pending" and [d.reviewer for d in store.decisions(2)] == ["bob"]


def test_lowering_min_reviews_finalises_rows_whose_decisions_now_suffice_and_bad_values_are_refused(store):
    decide(store, 1, "bob", "edited", "So happy today: joy.")
    decide(store, 2, "bob", "accepted")
    decide(store, 2, "carol", "rejected")
    assert store.set_min_reviews(1) == 1
    assert (store.get(1).status, store.get(1).reasoning) == ("edited", "So happy today: joy.")
    assert store.get(2).status == "pending" and store.query_ids(RowFilter(disputed=True)) == [2]  # a dispute stays one
    for bad in (0, "two", 11):
        with pytest.raises(StoreError, match="whole number from 1"):
            store.set_min_reviews(bad)
    assert store.min_reviews() == 1


def test_generation_never_overwrites_a_row_reviewers_have_decided_on(store):
    decide(store, 1, "bob", "accepted")
    assert store.write_generated([(1, "A new text."), (2, "A new text.")], GEN, overwrite_pending=True) == 1
    assert store.get(1).reasoning == GENERATED[0] and store.get(2).reasoning == "A new text."


def test_bulk_accept_with_team_review_is_the_reviewers_accept_of_their_own_queue(store):
    decide(store, 1, "bob", "rejected")
    result = store.bulk_accept(RowFilter(), "bob")
    assert result.accepted == 6  # every row but the one he rejected
    assert store.decisions(1)[0].decision == "rejected" and all(store.get(i).status == "pending" for i in range(1, 8))
    assert store.bulk_accept(RowFilter(), "carol").accepted == 7
    assert store.counts()["status"]["accepted"] == 6 and store.query_ids(RowFilter(disputed=True)) == [1]


def test_the_hand_built_case_through_the_store_gives_the_same_figures(store):
    for row, pair in enumerate(HAND_BUILT, 1):
        for name, choice in zip(("bob", "carol"), pair, strict=True):
            if choice:
                decide(store, row, name, choice[0], choice[1])
    assert agreement_summary(store.team_decisions()) == agreement_summary(hand_built_decisions())
    assert store.query_ids(RowFilter(disputed=True)) == [2, 4, 5, 6]
    assert (store.get(1).status, store.get(3).status, store.get(7).status) == ("accepted", "rejected", "pending")
    counts = store.counts()
    assert counts["in_dispute"] == 4 and counts["awaiting_reviews"] == 1


# -- export: final rows only --------------------------------------------------------------------------


def test_export_with_team_review_takes_final_rows_only_and_the_resolved_version(store, tmp_path):
    from reasonapp.errors import RunDirError
    from training.augment import export_store

    decide(store, 1, "bob", "accepted")
    decide(store, 1, "carol", "accepted")  # final: accepted
    decide(store, 2, "bob", "edited", "Missing the old dog is sadness.")
    decide(store, 2, "carol", "rejected")  # in dispute, then resolved below
    decide(store, 3, "bob", "accepted")
    decide(store, 3, "carol", "rejected")  # in dispute, left so
    decide(store, 4, "bob", "accepted")  # too few reviews
    store.resolve(2, store.get(2).version, "alice", "accepted", "Missing the old dog he loved is sadness.")
    provenance = export_store(store.path, tmp_path / "export")
    rows = [json.loads(line) for line in (tmp_path / "export" / "train.jsonl").read_text().splitlines()]
    assert [(r["text"], r["reasoning"]) for r in rows] == [
        ("i feel so happy today", GENERATED[0]), ("i miss my old dog", "Missing the old dog he loved is sadness.")
    ]
    assert provenance["min_reviews"] == 2 and provenance["not_final"] == {"in_dispute": 1, "awaiting_reviews": 1}
    with pytest.raises(RunDirError, match="final rows only; leave out --include-pending"):
        export_store(store.path, tmp_path / "with-pending", include_pending=True)


def test_an_export_with_no_final_row_says_what_waits(store, tmp_path):
    from reasonapp.errors import RunDirError
    from training.augment import export_store

    decide(store, 1, "bob", "accepted")
    with pytest.raises(RunDirError, match="1 rows wait for more of the 2 reviews each needs, 0 are in dispute"):
        export_store(store.path, tmp_path / "export")


# -- the decision log: a restored store has every reviewer's decision ---------------------------------


def team_snapshot(store):
    """Each row's state, history and reviewers' decisions (what a restore must bring back)."""
    rows = {}
    for row_id in store.query_ids(RowFilter(generated_only=False)):
        row = store.get(row_id)
        history = [(h["version"], h["action"], h["reasoning"], h["status"], h["reviewer"], h["reviews"]) for h in store.history(row_id)]
        rows[row.row_index] = (row.reasoning, row.status, row.reviewer, row.version, history, store.decisions(row_id))
    return rows


def test_a_store_rebuilt_from_the_log_has_every_reviewers_decision_dispute_and_resolution(tmp_path):
    store = ReasoningStore(tmp_path / "store.sqlite", journal=DecisionLog(tmp_path / "decisions"))
    store.add_examples("dair-ai/emotion", "train", [(i, f"i feel so happy about day {i}", "joy") for i in range(4)], LABELS)
    store.write_generated(((i, f"Day {i} makes them happy: joy.") for i in store.ids_needing_reasoning("dair-ai/emotion", "train")), GEN)
    store.set_min_reviews(2)
    decide(store, 1, "bob", "accepted")
    decide(store, 1, "carol", "accepted")
    decide(store, 2, "bob", "edited", "Happy about day two: joy.")
    decide(store, 2, "carol", "rejected")
    store.resolve(2, store.get(2).version, "alice", "accepted", "Happy about day two, so joy.")
    decide(store, 3, "bob", "accepted")
    decide(store, 3, "carol", "rejected")
    decide(store, 4, "carol", "accepted")
    decide(store, 4, "carol", "rejected")  # she changed her mind
    before = team_snapshot(store)
    store.close()

    rebuilt = ReasoningStore(tmp_path / "rebuilt.sqlite", journal=None)
    rebuilt.set_min_reviews(2)  # the setting is the app's (REASONAPP_MIN_REVIEWS), not a logged change
    replay(rebuilt, read_events(tmp_path / "decisions"))
    assert team_snapshot(rebuilt) == before
    assert rebuilt.query_ids(RowFilter(disputed=True)) == [3] and rebuilt.query_ids(RowFilter(needs_review_by="bob")) == [4]
    assert agreement_summary(rebuilt.team_decisions())["rows_agreeing"] == 1


def test_events_and_store_files_from_before_team_review_still_replay_and_open(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # a store as written before team review: no reviews table, no history.reviews
        db.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE rows (id INTEGER PRIMARY KEY, dataset TEXT NOT NULL, split TEXT NOT NULL, row_index INTEGER NOT NULL,
                text TEXT NOT NULL, label TEXT NOT NULL, reasoning TEXT, generator TEXT, status TEXT NOT NULL DEFAULT 'pending',
                reviewer TEXT, flags TEXT NOT NULL DEFAULT '[]', flag_count INTEGER NOT NULL DEFAULT 0, version INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL, updated_at REAL NOT NULL, UNIQUE (dataset, split, row_index));
            CREATE TABLE history (id INTEGER PRIMARY KEY, row_id INTEGER NOT NULL, version INTEGER NOT NULL, action TEXT NOT NULL,
                reasoning TEXT, status TEXT NOT NULL, reviewer TEXT, generator TEXT, at REAL NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            """
        )
    old_events = [
        {"dataset": "d", "split": "train", "row_index": 0, "text": "i feel so happy", "label": "joy", "label_names": LABELS, "version": 1,
         "action": "generate", "reasoning": "So happy: joy.", "status": "pending", "reviewer": None, "generator": json.dumps(GEN), "at": 1.0},
        {"dataset": "d", "split": "train", "row_index": 0, "text": "i feel so happy", "label": "joy", "label_names": LABELS, "version": 2,
         "action": "accepted", "reasoning": "So happy: joy.", "status": "accepted", "reviewer": "ann", "generator": None, "at": 2.0},
    ]
    store = ReasoningStore(path, journal=None)
    assert replay(store, old_events) == 2
    assert (store.get(1).status, store.get(1).reviewer, store.decisions(1)) == ("accepted", "ann", [])
    undone = store.undo(1, store.get(1).version, "ann")  # history written before the column existed still undoes
    assert undone.status == "pending"


# -- the Review tab, locally (one user, names typed) -----------------------------------------------------

FILTERS = ["pending", "all", "", 0, 0, "any", "in order", "dair-ai/emotion"]


@pytest.fixture
def team_store(tmp_path):
    path = tmp_path / "store.sqlite"
    store = ReasoningStore(path, journal=None)
    rows = [(0, "i feel so happy today", "joy"), (1, "i miss my old dog", "sadness"), (2, "i am so sad", "sadness")]
    store.add_examples("dair-ai/emotion", "train", rows, LABELS)
    store.write_generated(zip(store.ids_needing_reasoning("dair-ai/emotion", "train"), GENERATED[:3], strict=True), GEN)
    store.close()
    return path


def test_two_reviewers_disagree_in_the_review_tab_and_the_admin_resolves_it_there(team_store, tmp_path, shared_data, monkeypatch):
    from gradio_client import Client

    from reasonapp.ui.app import build_app
    from tests.ui_helpers import launched

    monkeypatch.setenv("REASONAPP_MIN_REVIEWS", "2")
    with launched(build_app(store_path=str(team_store))) as url:
        bob, carol, admin = (Client(url, verbose=False) for _ in range(3))
        queue = bob.predict(*FILTERS, "bob", api_name="/review_queue")
        assert queue[7] == "3 rows match" and "reviews 0 of 2" in queue[4] and "team review, 2 a row" in queue[5]
        assert "recorded (1 of 2 reviews)" in bob.predict(queue[2], "bob", api_name="/review_accept")[7]
        bob.predict("Missing the old dog is sadness.", "bob", api_name="/review_save")
        bob.predict("", "bob", api_name="/review_reject")
        assert "queue is empty" in bob.predict(*FILTERS, "bob", api_name="/review_queue")[5]

        queue = carol.predict(*FILTERS, "carol", api_name="/review_queue")
        assert queue[7] == "3 rows match"
        assert "Row 0: accepted (2 reviewers agree)." in carol.predict(queue[2], "carol", api_name="/review_accept")[7]
        disputed = carol.predict("", "carol", api_name="/review_reject")
        assert "reviewers disagree, so the row waits for an admin" in disputed[7]
        assert "Row 2: rejected (2 reviewers agree)." in carol.predict("", "carol", api_name="/review_reject")[7]

        state_text, gold, versions, pick, reasoning, message = admin.predict("dair-ai/emotion", api_name="/review_disputes")
        assert (state_text, gold) == ("i miss my old dog", "sadness") and "Dispute 1 of 1" in message
        assert versions["headers"] == ["reviewer", "decision", "reasoning"]
        assert versions["data"] == [
            ["(generated)", "–", "kitten"], ["bob", "edited", "Missing the old dog is sadness."], ["carol", "rejected", "(rejected: no version)"]
        ]
        assert pick["value"] == "bob" and [name for name, _ in pick["choices"]] == ["(generated)", "bob"]  # a rejection has no version
        assert reasoning == "Missing the old dog is sadness."
        resolved = admin.predict("Missing the old dog he loved is sadness.", "alice", api_name="/review_resolve")
        assert "Row 1: edited, resolved by alice." in resolved[5] and "none is left here" in resolved[5]

        figures = admin.predict("dair-ai/emotion", api_name="/review_agreement")
        # bob A A R, carol A R R: p_o = 2/3, p_e = (2/3)(1/3) + (1/3)(2/3) = 4/9, kappa = (2/9) / (5/9) = 0.4
        assert "67% of 3 rows reviewed twice or more agree" in figures and "κ (accept vs reject) 0.40 over 3 pairs" in figures
        assert "mean edit distance 0.0 characters over 1 pairs" in figures and "rows reviewed: bob 3, carol 3" in figures
        exported = admin.predict("team", False, "keep-all", "remove", api_name="/review_export")
        assert exported.startswith("Exported 2 rows")  # row 0 agreed, row 1 resolved; row 2 agreed on rejecting it
    rows = [json.loads(line) for line in (tmp_path / "workspace" / "exports" / "team" / "train.jsonl").read_text().splitlines()]
    assert [r["reasoning"] for r in rows] == [GENERATED[0], "Missing the old dog he loved is sadness."]


# -- the app as a Space: reviewers decide under their signed-in names, only an admin resolves ------------


@pytest.fixture(scope="module")
def team_space(tmp_path_factory, shared_data):
    """The app in its own process as a Space with REASONAPP_MIN_REVIEWS=2: alice admin, bob and carol reviewers."""
    from tests.test_access import OAUTH_SECRET
    from tests.ui_helpers import free_port, start_app_process

    root = tmp_path_factory.mktemp("team-space")
    store = ReasoningStore(root / "store.sqlite", journal=None)
    store.add_examples("dair-ai/emotion", "train", [(0, "i feel so happy today", "joy"), (1, "i miss my old dog", "sadness")], LABELS)
    store.write_generated(zip(store.ids_needing_reasoning("dair-ai/emotion", "train"), GENERATED[:2], strict=True), GEN)
    store.close()
    port = free_port()
    env = {
        **os.environ, "SYSTEM": "spaces", "SPACE_ID": "team/reasonapp", "OAUTH_CLIENT_ID": "client-id", "OAUTH_CLIENT_SECRET": OAUTH_SECRET,
        "OPENID_PROVIDER_URL": "http://127.0.0.1:9", "OAUTH_SCOPES": "openid profile write-repos",
        "REASONAPP_ADMINS": "alice", "REASONAPP_REVIEWERS": "bob,carol", "REASONAPP_MIN_REVIEWS": "2",
        "REASONAPP_WORKSPACE": str(root / "workspace"), "REASONAPP_STORE": str(root / "store.sqlite"),
        "HF_HOME": str(root / "hf-home"), "GRADIO_SERVER_PORT": str(port),
    }
    code = "from reasonapp.ui.app import build_app, launch_settings; build_app().queue().launch(server_name='127.0.0.1', **launch_settings())"
    process = start_app_process([sys.executable, "-c", code], env, port)
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "store": root / "store.sqlite", "workspace": root / "workspace"}
    finally:
        process.terminate()
        process.wait(timeout=30)


def as_user(space, user=None):
    from gradio_client import Client

    from tests.test_access import session_cookie

    headers = {"Cookie": session_cookie(user, f"oauth-token-of-{user}")} if user else None
    return Client(space["url"], verbose=False, headers=headers)


@pytest.mark.slow
def test_on_a_space_reviewers_decide_under_their_names_only_the_admin_resolves_and_exports_the_resolved_version(team_space):
    from tests.test_access import refused

    bob, carol, alice = as_user(team_space, "bob"), as_user(team_space, "carol"), as_user(team_space, "alice")
    bob.predict(*FILTERS, api_name="/review_queue")
    bob.predict(GENERATED[0], "typed names are ignored", api_name="/review_accept")
    bob.predict("Missing the old dog is sadness.", "", api_name="/review_save")
    carol.predict(*FILTERS, api_name="/review_queue")
    carol.predict(GENERATED[0], "", api_name="/review_accept")
    assert "waits for an admin" in carol.predict("", "", api_name="/review_reject")[7]
    store = ReasoningStore(team_space["store"], journal=None)
    assert [(d.reviewer, d.decision) for d in store.decisions(2)] == [("bob", "edited"), ("carol", "rejected")]

    refused(lambda: bob.predict("dair-ai/emotion", api_name="/review_disputes"), "needs the admin role")
    refused(lambda: bob.predict("mine", "", api_name="/review_resolve"), "needs the admin role")
    refused(lambda: as_user(team_space).predict("dair-ai/emotion", api_name="/review_disputes"), "you are not signed in")
    refused(lambda: as_user(team_space).predict("", api_name="/review_resolve_reject"), "you are not signed in")
    assert "rows reviewed: bob 2, carol 2" in as_user(team_space).predict("dair-ai/emotion", api_name="/review_agreement")

    text, _, versions, _, _, _ = alice.predict("dair-ai/emotion", api_name="/review_disputes")
    assert text == "i miss my old dog" and [row[:2] for row in versions["data"][1:]] == [["bob", "edited"], ["carol", "rejected"]]
    alice.predict("Missing the old dog he loved is sadness.", "typed names are ignored", api_name="/review_resolve")
    row = store.get(2)
    assert (row.status, row.reviewer, store.history(2)[-1]["action"]) == ("edited", "alice", "resolve")

    bob.predict("all", "all", "old dog", 0, 0, "any", "in order", "dair-ai/emotion", api_name="/review_queue")
    assert "needs the admin role" in bob.predict("", "", api_name="/review_undo")[7]  # a resolution is undone by an admin only
    assert store.get(2).status == "edited"

    exported = alice.predict("team", False, "keep-all", "remove", api_name="/review_export")
    assert exported.startswith("Exported 2 rows"), exported
    rows = [json.loads(line) for line in (team_space["workspace"] / "exports" / "team" / "train.jsonl").read_text().splitlines()]
    assert [r["reasoning"] for r in rows] == [GENERATED[0], "Missing the old dog he loved is sadness."]


def two_disputes(team_store, monkeypatch):
    """Review handlers on a team store (two reviews each) where bob and carol edited rows 1 and 2 differently."""
    from reasonapp.ui.review import ReviewHandlers

    monkeypatch.setenv("REASONAPP_MIN_REVIEWS", "2")
    handlers = ReviewHandlers(str(team_store), LABELS, "emotion", "dair-ai/emotion")
    for row_id in (1, 2):
        decide(handlers.store, row_id, "bob", "edited", f"Bob's version of row {row_id}.")
        decide(handlers.store, row_id, "carol", "edited", f"Carol's version of row {row_id}.")
    return handlers, handlers.store


def test_the_resolve_view_starts_from_any_reviewers_version_or_the_generated_one_and_steps_through_disputes(team_store, monkeypatch):
    handlers, store = two_disputes(team_store, monkeypatch)
    session, *shown = handlers.disputes("dair-ai/emotion")
    assert session.queue == [1, 2] and shown[4] == "Bob's version of row 1." and "Dispute 1 of 2" in shown[5]
    assert handlers.pick_version(session, "carol") == "Carol's version of row 1."
    assert handlers.pick_version(session, "(generated)") == GENERATED[0]
    session, *shown = handlers.next_dispute(session)
    assert shown[0] == "i miss my old dog" and "Dispute 2 of 2" in shown[5]
    session, *shown = handlers.resolve_reject(session, "alice")
    assert "Row 1: rejected, resolved by alice." in shown[5] and store.get(2).status == "rejected"


def test_a_resolve_page_still_showing_the_dispute_before_a_reload_of_the_list_resolves_nothing(team_store, monkeypatch):
    handlers, store = two_disputes(team_store, monkeypatch)
    session, *shown = handlers.disputes("dair-ai/emotion")
    line_of_the_first = shown[5]
    before = {row_id: (store.get(row_id).status, store.get(row_id).version, len(store.history(row_id))) for row_id in (1, 2)}
    handlers.next_dispute(session)  # the server's list moved on (another page action) before this page re-rendered
    for act, arguments in ((handlers.resolve, ("Bob's version of row 1.", "alice")), (handlers.resolve_reject, ("alice",))):
        session, *shown = act(session, *arguments, line_of_the_first)
        assert shown[5].startswith("Not resolved: the list of disputes changed while this page still showed another row")
        assert {row_id: (store.get(row_id).status, store.get(row_id).version, len(store.history(row_id))) for row_id in (1, 2)} == before
    unsaved = handlers.resolve(session, "Bob's version of row 1.", "alice", line_of_the_first)[6]
    assert "Your unsaved text: \"Bob's version of row 1.\"" in unsaved and "Dispute 2 of 2, train row " in unsaved

    session, *shown = handlers.resolve(session, "Carol's version of row 2.", "alice", shown[5])  # the line it does show
    assert store.get(2).status == "edited" and store.get(2).reasoning == "Carol's version of row 2."
    assert handlers.resolve_reject(session, "alice")[6] == "Nothing to resolve here. 2 rows were in dispute; none is left here."  # API callers send no line


def test_a_bad_min_reviews_setting_keeps_the_store_closed_and_the_tab_says_why(team_store, monkeypatch):
    from reasonapp.ui.review import ReviewHandlers

    monkeypatch.setenv("REASONAPP_MIN_REVIEWS", "two")
    handlers = ReviewHandlers(str(team_store), LABELS, "emotion", "dair-ai/emotion")
    assert "whole number from 1" in handlers.open_error and "'two'" in handlers.open_error
    assert ReasoningStore(team_store, journal=None).min_reviews() == 1
