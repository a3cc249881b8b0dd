"""The review pause, in one page: the Pipeline tab runs to Stage 2 and waits, the Review tab reviews that experiment's
store (picked in its Store list, no restart), and Continue trains Q→RA on exactly the rows accepted or edited there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reasonapp.store import ReasoningStore
from tests.ui_helpers import browser_page, launched, screenshot
from training import launcher, rundir

JOB_MS = 300_000


def wait_for_value(page, elem_id: str, condition: str, timeout: int = 60_000) -> str:
    """Wait until the textbox's value `v` satisfies the JavaScript `condition`; returns the value."""
    script = f"() => {{ const v = document.querySelector('#{elem_id} textarea, #{elem_id} input')?.value || ''; return {condition}; }}"
    page.wait_for_function(script, timeout=timeout)
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first.input_value()


@pytest.mark.browser
def test_browser_pipeline_pauses_for_review_the_review_tab_reviews_its_store_and_continue_trains_on_it(tiny_model_dir, shared_data, tmp_path):
    from reasonapp.ui.app import build_app

    app_store = tmp_path / "app-store.sqlite"
    with launched(build_app(base_model=tiny_model_dir, store_path=str(app_store))) as url, browser_page() as page:
        page.goto(url, wait_until="load")
        page.get_by_role("tab", name="Pipeline").click()
        field = page.locator("#pipeline-config input")
        field.fill("tiny-smoke")
        field.press("Enter")
        page.wait_for_function("() => document.querySelector('#pipeline-yaml')?.innerText.includes('name: tiny-smoke')")
        page.locator("#pipeline-base-model textarea, #pipeline-base-model input").first.fill(tiny_model_dir)
        for elem_id, number in (("pipeline-n-train", "6"), ("pipeline-eval-rows", "8")):
            page.locator(f"#{elem_id} input").fill(number)
            page.locator(f"#{elem_id} input").press("Tab")
        page.locator("#pipeline-review input").check()
        page.wait_for_function("() => document.querySelector('#pipeline-yaml')?.innerText.includes('review: true')")
        page.locator("#pipeline-start").click()
        wait_for_value(page, "pipeline-state", "v.includes('awaiting-review') && v.includes('Store list')", JOB_MS)
        screenshot(page, "pipeline-review-paused.png")
        job = launcher.pipeline_jobs()[0]
        paused_store = launcher.pipeline_state(job)["review_store"]

        # the Review tab, same page: the experiment's store is in the Store list, marked as awaiting the review
        page.get_by_role("tab", name="Review").click()
        page.locator("#review-store input").click()
        option = page.get_by_role("option", name="awaiting review", exact=False)
        option.wait_for(timeout=15_000)
        option.click()
        wait_for_value(page, "review-progress", "v.includes('reviewed 0 of 6')")
        first = wait_for_value(page, "review-text", "v.length > 0")
        page.locator("#review-reasoning textarea").press("Alt+a")  # accept the first row
        wait_for_value(page, "review-message", "v.endsWith(': accepted.')")
        wait_for_value(page, "review-text", f"v.length > 0 && v !== {json.dumps(first)}")
        page.locator("#review-reasoning textarea").fill("The words of the text carry this label.")
        page.locator("#review-reasoning textarea").press("Alt+s")  # edit the second
        wait_for_value(page, "review-message", "v.endsWith(': edited.')")
        page.locator("#review-reasoning textarea").press("Alt+r")  # reject the third
        wait_for_value(page, "review-message", "v.endsWith(': rejected.')")
        screenshot(page, "pipeline-review-reviewed.png")
        assert ReasoningStore(app_store, journal=False).query_ids() == []  # the app's own store got none of it

        store = ReasoningStore(paused_store, journal=False)
        decided = {row.row_index: row.status for row in (store.get(i) for i in store.query_ids()) if row.status != "pending"}
        store.close()
        assert sorted(decided.values()) == ["accepted", "edited", "rejected"]

        page.get_by_role("tab", name="Pipeline").click()
        page.locator("#pipeline-continue").click()
        page.wait_for_function("() => document.querySelector('#pipeline-report')?.innerText.includes('McNemar')", timeout=JOB_MS)
        screenshot(page, "pipeline-review-report.png")

    state = launcher.pipeline_state(job)
    assert state["state"] == "finished" and state["reviewed_rows"] == 2
    qra = next(entry for entry in state["stages"] if entry["stage"] == "qra")
    exported = (Path(rundir.read_config(Path(qra["dir"]))["dataset"]) / "train.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in exported]
    kept = {index for index, status in decided.items() if status in ("accepted", "edited")}
    assert {row["source_row"] for row in rows} == kept
    assert "The words of the text carry this label." in {row["reasoning"] for row in rows}
