"""The Review tab through its public API (gradio_client) and in a real browser (headless chromium)."""

import json

import pytest

from reasonapp.store import ReasoningStore
from tests.ui_helpers import browser_page, launched, screenshot

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
ROWS = [
    (0, "i feel so happy today", "joy", "Feeling happy today shows joy."),
    (1, "<script>alert('x')</script> i am <b>terrified</b> of spiders", "fear", "<img src=x onerror=alert(1)> fear of spiders."),
    (2, "i miss my old dog", "sadness", "Missing the old dog is sadness."),
]


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "store.sqlite"
    store = ReasoningStore(path)
    store.add_examples("dair-ai/emotion", "train", [(i, text, label) for i, text, label, _ in ROWS], LABELS)
    ids = store.ids_needing_reasoning("dair-ai/emotion", "train")
    store.write_generated(zip(ids, [r[3] for r in ROWS], strict=True), {"rgen_run": "runs/rgen", "prompt_version": "1"})
    store.close()
    return path


@pytest.fixture
def app_url(store_path, shared_data):
    from reasonapp.ui.app import build_app

    with launched(build_app(store_path=str(store_path))) as url:
        yield url


FILTERS = ["pending", "all", "", 0, 0, "any", "in order"]


def test_review_endpoints_accept_edit_conflict_and_undo(app_url, store_path):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    # outputs as the client sees them (per-session state stays on the server)
    text, label, reasoning, flags, meta, progress, counts, message = client.predict(*FILTERS, api_name="/review_queue")
    assert (text, label, reasoning) == ("i feel so happy today", "joy", "Feeling happy today shows joy.")
    assert message == "3 rows match" and "row 1 of 3" in progress
    overview = client.predict(api_name="/review_quality")
    assert overview.startswith("3 reasonings: 100% unflagged · 100% name the gold label")

    result = client.predict("The writer says they feel so happy: joy.", "ann", api_name="/review_accept")
    assert result[0].startswith("<script>") and "Row 0: edited." in result[7]  # moved to the next row, shown as text
    row = ReasoningStore(store_path).get(1)
    assert (row.status, row.reasoning, row.reviewer) == ("edited", "The writer says they feel so happy: joy.", "ann")

    result = client.predict("   ", "ann", api_name="/review_save")
    assert "Not saved" in result[7] and result[2] == "   "  # the reviewer's text stays in the box
    undone = client.predict("", "ann", api_name="/review_undo")
    assert "Undone: row 0 is pending again." in undone[7]


def test_bad_edits_are_refused_with_a_message(app_url, store_path):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    client.predict(*FILTERS, api_name="/review_queue")
    result = client.predict("x" * 100_000, "ann", api_name="/review_save")
    assert "limit is 20,000" in result[7]
    assert ReasoningStore(store_path).get(1).reasoning == "Feeling happy today shows joy."
    result = client.predict(None, "ann", api_name="/review_save")  # an API caller sending no reasoning: no edit made
    assert "No change to save" in result[7] and ReasoningStore(store_path).get(1).status == "pending"


@pytest.mark.browser
def test_edit_accept_with_shortcut_then_reload_finds_it_persisted(app_url, store_path):
    edit = "The words 'so happy' carry the joy."
    with browser_page() as page:
        page.goto(app_url)
        page.get_by_role("tab", name="Review").click()
        box = page.locator("#review-reasoning textarea")
        page.wait_for_function("() => document.querySelector('#review-reasoning textarea')?.value.includes('Feeling happy')")
        assert "Accept (Alt+A)" in page.locator("#review-accept").inner_text()
        box.fill(edit)
        box.press("Alt+a")
        page.wait_for_function("() => document.querySelector('#review-message textarea')?.value.includes('edited')")
        # the next row holds HTML and script: it must show as text, not run or render
        assert "<script>" in page.locator("#review-text textarea").input_value()
        assert page.locator("#review-text b").count() == 0
        screenshot(page, "review-tab.png")

        page.reload()
        page.get_by_role("tab", name="Review").click()
        page.get_by_label("edited", exact=True).check()
        page.locator("#review-apply").click()
        page.wait_for_function("() => document.querySelector('#review-meta textarea')?.value.includes('status: edited')")
        assert box.input_value() == edit
    row = ReasoningStore(store_path).get(1)
    assert (row.status, row.reasoning) == ("edited", edit)


def test_regenerate_puts_a_new_candidate_in_the_box_without_saving(tiny_model_dir, store_path, tmp_path, shared_data):
    from gradio_client import Client

    from reasonapp.ui.app import build_app
    from tests.test_training import FAST
    from training.sft import TrainConfig, train

    rgen = train(TrainConfig(task="rgen", base_model=tiny_model_dir, output_dir=str(tmp_path / "rgen"), **{**FAST, "max_steps": 1}))
    with launched(build_app(store_path=str(store_path))) as url:
        client = Client(url, verbose=False)
        client.predict(*FILTERS, api_name="/review_queue")
        result = client.predict(str(rgen), api_name="/review_regenerate")
        assert "New candidate in the box" in result[7] and result[2] != "Feeling happy today shows joy."
        missing = client.predict("", api_name="/review_regenerate")
        assert "Pick an R-Gen run" in missing[7]
    assert ReasoningStore(store_path).get(1).reasoning == "Feeling happy today shows joy."  # nothing stored until accepted


def test_skip_reject_bulk_accept_and_export_endpoints(app_url, store_path, tmp_path):
    from gradio_client import Client

    client = Client(app_url, verbose=False)
    client.predict(*FILTERS, api_name="/review_queue")
    skipped = client.predict(api_name="/review_skip")
    assert skipped[0].startswith("<script>") and "row 2 of 3" in skipped[5]
    rejected = client.predict("", "ann", api_name="/review_reject")
    assert "Row 1: rejected." in rejected[7]
    past_the_end = client.predict(api_name="/review_skip")  # the queue held 3 rows: skipped, rejected, skipped
    assert past_the_end[7].startswith("End of this queue of 3 rows") and "Apply filters" in past_the_end[7]
    nothing = client.predict("export", False, "keep-all", "remove", api_name="/review_export")
    assert nothing.startswith("Not exported") and "--include-pending" in nothing
    bulk = client.predict("ann", "pending", "all", "", 0, 0, "any", "in order", api_name="/review_bulk_accept")
    assert "Accepted 2 pending rows." in bulk[7]
    exported = client.predict("export", False, "keep-all", "remove", api_name="/review_export")
    assert exported.startswith("Exported 2 rows") and str(tmp_path / "workspace" / "exports" / "export") in exported
    again = client.predict("export", False, "keep-all", "remove", api_name="/review_export")
    assert again.startswith("Not exported") and "already holds an export" in again
    assert "tick “Replace an earlier export of this name”" in again and "another export name" in again and "--" not in again
    reviewed = ReasoningStore(store_path)  # a reviewer's edit that only restates the label
    reviewed.review(1, "edited", reviewed.get(1).version, "ann", reasoning="Joy is a positive emotion.")
    filtered = client.predict("clean", False, "drop-label-restating", "blank", api_name="/review_export")
    assert "Exported 2 rows" in filtered and "1 reasonings dropped by drop-label-restating" in filtered and "train multitask" in filtered
    rows = [json.loads(line) for line in (tmp_path / "workspace" / "exports" / "clean" / "train.jsonl").read_text().splitlines()]
    assert [row["reasoning"] for row in rows] == ["", "Missing the old dog is sadness."]
    store = ReasoningStore(store_path)
    assert store.counts()["status"] == {"pending": 0, "accepted": 1, "edited": 1, "rejected": 1}
    # the rejected row leaves the quality summary; the label-restating edit is flagged there
    overview = client.predict(api_name="/review_quality")
    assert overview.startswith("2 reasonings: 50% unflagged") and "50% cite nothing from the text" in overview


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("../../etc", "is a path"),
        ("/tmp/elsewhere", "is a path"),
        ("a\x00b", "NUL byte"),
        ("x" * 20_000, "20,000 characters"),
        ("<b>bold", "not a valid export name"),
        ("<script>alert(1)</script>", "is a path"),
    ],
)
def test_export_from_the_page_takes_a_plain_name_and_writes_nothing_for_a_bad_one(store_path, tmp_path, name, said):
    from reasonapp.ui.review import ReviewHandlers

    handlers = ReviewHandlers(str(store_path), LABELS, "emotion", "dair-ai/emotion")
    message = handlers.export(name, True)
    assert message.startswith("Not exported") and said in message
    assert not (tmp_path / "workspace" / "exports").exists() or not any((tmp_path / "workspace" / "exports").iterdir())
    assert not (tmp_path / "elsewhere").exists()


def test_the_app_starts_on_a_file_that_is_not_a_store_shows_why_and_leaves_it_untouched(tmp_path, shared_data):
    from gradio_client import Client

    from reasonapp.ui.app import build_app

    notes = tmp_path / "notes.sqlite"
    notes.write_text("my precious notes")
    with launched(build_app(store_path=str(notes))) as url:
        client = Client(url, verbose=False)
        queue = client.predict(*FILTERS, api_name="/review_queue")
        assert "review store cannot be used" in queue[7] and "not a reasonapp store" in queue[7]
        assert "review store cannot be used" in client.predict(api_name="/review_quality")
        with pytest.raises(Exception, match="not a reasonapp store"):
            client.predict("A reasoning.", "ann", api_name="/review_accept")
    assert notes.read_text() == "my precious notes"


def test_an_unexpected_failure_in_a_handler_reaches_the_page_as_a_message_not_a_bare_error(app_url, monkeypatch):
    import sqlite3

    from gradio_client import Client

    from reasonapp.store import ReasoningStore

    client = Client(app_url, verbose=False)
    client.predict(*FILTERS, api_name="/review_queue")

    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(ReasoningStore, "review", broken)
    with pytest.raises(Exception) as failure:
        client.predict("A reasoning.", "ann", api_name="/review_accept")
    assert "review store could not be used (disk I/O error)" in str(failure.value) and "Nothing from this action was saved" in str(failure.value)


def test_the_queue_shows_one_dataset_at_a_time(store_path, shared_data):
    from gradio_client import Client

    from reasonapp.ui.app import build_app

    store = ReasoningStore(store_path)
    store.add_examples("tickets", "train", [(0, "the app crashes", "bug")], ["billing", "bug"])
    store.write_generated([(store.ids_needing_reasoning("tickets", "train")[0], "It crashes: bug.")], {"rgen_run": "r"})
    store.close()
    with launched(build_app(store_path=str(store_path))) as url:
        client = Client(url, verbose=False)
        emotion = client.predict(*FILTERS, api_name="/review_queue")
        assert emotion[7] == "3 rows match" and "reviewed 0 of 3" in emotion[5]
        tickets = client.predict(*FILTERS, "tickets", api_name="/review_queue")
        assert tickets[7] == "1 row matches" and tickets[0] == "the app crashes" and "reviewed 0 of 1" in tickets[5]
        exported = client.predict("tickets-export", True, "keep-all", "remove", "tickets", api_name="/review_export")
        assert exported.startswith("Exported 1 rows")


def test_a_decision_from_a_page_still_showing_the_row_before_a_queue_reload_decides_nothing(store_path):
    """The page sends its Row line with a decision. If a queue reload (another store, filter or dataset) reached the server
    while the page still showed the row before it, the decision and its text would land on a row the reviewer never saw."""
    from reasonapp.ui.review import ReviewHandlers

    handlers = ReviewHandlers(str(store_path), LABELS, "emotion", "dair-ai/emotion")
    shown = handlers.load_queue(*FILTERS, "dair-ai/emotion", "ann")
    seen_meta, seen_reasoning = shown[5], shown[3]  # the page shows row 0
    session = handlers.load_queue("pending", "fear", "", 0, 0, "any", "in order", "dair-ai/emotion", "ann")[0]  # reload: row 1
    before = [(r.id, r.status, r.reasoning, r.version) for r in map(ReasoningStore(store_path).get, ReasoningStore(store_path).query_ids())]

    for decide in (handlers.accept, handlers.save_edit, handlers.reject, handlers.undo):
        result = decide(session, seen_reasoning + " edited", "ann", seen_meta)
        assert result[-1].startswith("Not saved: the queue changed while this page still showed the row before it")
        assert result[1] == ROWS[1][1]  # the queue's current row is shown now
    after = [(r.id, r.status, r.reasoning, r.version) for r in map(ReasoningStore(store_path).get, ReasoningStore(store_path).query_ids())]
    assert after == before

    current_meta = handlers.view(session)[5]  # once the page shows row 1, the decision is its own
    assert handlers.accept(session, ROWS[1][3], "ann", current_meta)[-1] == "Row 1: accepted."
    assert handlers.accept(handlers.load_queue(*FILTERS, "dair-ai/emotion", "ann")[0], ROWS[0][3], "ann")[-1] == "Row 0: accepted."  # API: no line


def test_two_reviewers_on_one_queue_keep_their_edits_see_overrides_and_pass_over_each_others_rows(store_path):
    """Bob and Carol review the same pending queue. Carol's edit refused because Bob decided the row meanwhile stays in
    her box; saving it again replaces Bob's decision and says so; her queue then passes over the row Bob decided next."""
    from reasonapp.ui.review import ReviewHandlers

    handlers = ReviewHandlers(str(store_path), LABELS, "emotion", "dair-ai/emotion")
    bob = handlers.load_queue(*FILTERS, "dair-ai/emotion", "bob")[0]
    carol = handlers.load_queue(*FILTERS, "dair-ai/emotion", "carol")[0]
    assert handlers.accept(bob, ROWS[0][3], "bob")[-1] == "Row 0: accepted."
    assert handlers.reject(bob, "", "bob")[-1] == "Row 1: rejected."

    refused = handlers.save_edit(carol, "Carol's reading: so happy, joy.", "carol")
    assert refused[-1].startswith("Not saved: row 0 was changed by bob after you opened it (now accepted: “")
    assert "Your edit is still in the box" in refused[-1] and refused[3] == "Carol's reading: so happy, joy."
    saved = handlers.save_edit(carol, "Carol's reading: so happy, joy.", "carol")
    assert saved[-1].startswith("Row 0: edited (replacing bob's decision: accepted). Passed over 1 row decided by someone else")
    assert saved[1] == ROWS[2][1]  # row 1, which Bob rejected, was passed over
    store = ReasoningStore(store_path)
    assert [(store.get(i).status, store.get(i).reviewer) for i in store.query_ids()][:2] == [("edited", "carol"), ("rejected", "bob")]
