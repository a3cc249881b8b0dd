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
    store = ReasoningStore(path, LABELS)
    store.add_examples("dair-ai/emotion", "train", [(i, text, label) for i, text, label, _ in ROWS])
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
    nothing = client.predict(str(tmp_path / "export"), False, "keep-all", "remove", api_name="/review_export")
    assert nothing.startswith("Not exported") and "--include-pending" in nothing
    bulk = client.predict("ann", "pending", "all", "", 0, 0, "any", "in order", api_name="/review_bulk_accept")
    assert "Accepted 2 pending rows." in bulk[7]
    exported = client.predict(str(tmp_path / "export"), False, "keep-all", "remove", api_name="/review_export")
    assert exported.startswith("Exported 2 rows")
    reviewed = ReasoningStore(store_path)  # a reviewer's edit that only restates the label
    reviewed.review(1, "edited", reviewed.get(1).version, "ann", reasoning="Joy is a positive emotion.")
    filtered = client.predict(str(tmp_path / "clean"), False, "drop-label-restating", "blank", api_name="/review_export")
    assert "Exported 2 rows" in filtered and "1 reasonings dropped by drop-label-restating" in filtered and "train multitask" in filtered
    rows = [json.loads(line) for line in (tmp_path / "clean" / "train.jsonl").read_text().splitlines()]
    assert [row["reasoning"] for row in rows] == ["", "Missing the old dog is sadness."]
    store = ReasoningStore(store_path)
    assert store.counts()["status"] == {"pending": 0, "accepted": 1, "edited": 1, "rejected": 1}
    # the rejected row leaves the quality summary; the label-restating edit is flagged there
    overview = client.predict(api_name="/review_quality")
    assert overview.startswith("2 reasonings: 50% unflagged") and "50% cite nothing from the text" in overview
