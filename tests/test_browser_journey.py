"""The whole journey in a real browser, nothing but the page: a 3-label support-ticket CSV with string labels ->
a tiny R-Gen trained in the Train tab -> Stage 2 from the Review tab's panel -> review (an edit, an accept and a
reject by keyboard shortcut) -> export -> Q->A and Q->RA trained on the export -> their paired evaluation and a
prediction in Compare. The app runs as `make app` runs it (its own process, a throwaway workspace and store); a
screenshot per step lands in test-artifacts/journey-NN-<step>.png (the README's walk-through uses them)."""

from __future__ import annotations

import csv
import os
import re
import sys
import time
from contextlib import contextmanager

import pytest

from tests.ui_helpers import browser_page, free_port, screenshot, start_app_process, stop_jobs_under_way

LABELS = ["billing", "bug", "praise"]
TICKETS = {
    "billing": [
        "I was charged twice for my March subscription",
        "Why did my invoice go up by ten dollars this month?",
        "Please refund the annual plan I cancelled last week",
        "My card was declined but the money still left my account",
        "Can I get a receipt with our company VAT number on it?",
        "The trial ended and you billed me without any warning",
        "How do I switch from monthly to yearly billing?",
        "I was charged for three seats but we only have two users",
        "Your pricing page says 9 euros, my invoice says 12",
        "Please remove the old credit card from my account",
        "I need a copy of every invoice from last year for our accountant",
        "The discount code was accepted but not applied to the charge",
        "Why is there a pending charge after I downgraded my plan?",
        "I paid by bank transfer two weeks ago and the account still says unpaid",
        "Can you move my renewal date to the first of the month?",
        "We were billed in dollars although we chose euros",
        "The refund you promised has not reached my card yet",
        "How much will it cost to add five more team members?",
        "My payment failed and now my account is locked",
        "Please cancel my subscription and confirm there are no more charges",
    ],
    "bug": [
        "The app crashes every time I open the settings page",
        "Export to PDF produces an empty file",
        "Search returns nothing even for words I can see on screen",
        "After the last update I cannot log in on Android",
        "The save button does nothing when the title has an emoji",
        "Notifications arrive twice on my phone",
        "Dark mode makes the text in tables invisible",
        "The calendar shows my meetings one hour off since the clock change",
        "Uploading a photo larger than 5 MB freezes the page",
        "The password reset link says it has expired right away",
        "Sorting by date puts February before January",
        "The progress bar stays at 99 percent forever",
        "Copy and paste from Word loses all the line breaks",
        "The desktop app uses all my memory after an hour",
        "Clicking on a comment scrolls the page back to the top",
        "Two-factor codes from the app are always rejected",
        "The CSV import skips every row that has a comma in it",
        "Attachments disappear from drafts after I close the window",
        "The sidebar overlaps the editor on small screens",
        "The API returns a server error when the name has an accent",
    ],
    "praise": [
        "The new dashboard is beautiful, thank you!",
        "Your support team solved my problem in five minutes",
        "I love how fast the app has become since the update",
        "The offline mode saved my trip, great work",
        "Best note taking tool I have ever used",
        "Thanks for adding the keyboard shortcuts, they are perfect",
        "The onboarding was so clear that my whole team got it at once",
        "Really impressed by how smooth the sync is now",
        "Just wanted to say the new search is brilliant",
        "The mobile app is a joy to use on the train",
        "Thank you for listening to our feature request",
        "Your documentation is the clearest I have read",
        "The export to spreadsheets works flawlessly, love it",
        "Great job on the redesign, everything is easier to find",
        "Our team is so much more organised since we switched to you",
        "The templates save me an hour every week",
        "Lovely little touches everywhere in the latest release",
        "Kudos to whoever built the calendar view",
        "I recommended you to three friends already",
        "Fast, simple and reliable, exactly what I needed",
    ],
}
TIMEOUT_MS = 60_000  # a page's answer; a job's end gets JOB_MS
JOB_MS = 240_000


def write_tickets_csv(path) -> None:
    """60 tickets, the labels interleaved so any stratified split sees all three."""
    rows = [(TICKETS[label][i], label) for i in range(20) for label in LABELS]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ticket", "category"])
        writer.writerows(rows)


def field(elem_id: str) -> str:
    return f"#{elem_id} textarea, #{elem_id} input"


def value_of(page, elem_id: str) -> str:
    return page.locator(field(elem_id)).first.input_value()


def wait_until(page, elem_id: str, condition: str, timeout: int = TIMEOUT_MS) -> str:
    """Wait until the field's value satisfies `condition` (JavaScript over `v`); returns the value."""
    page.wait_for_function(
        f"() => {{ const e = document.querySelector('#{elem_id} textarea, #{elem_id} input'); const v = e ? e.value : ''; return {condition}; }}",
        timeout=timeout,
    )
    return value_of(page, elem_id)


def fill(page, elem_id: str, text) -> None:
    page.locator(field(elem_id)).first.fill(str(text))


def choose(page, elem_id: str, text: str) -> None:
    """A dropdown that takes typed values: type and press Enter."""
    box = page.locator(f"#{elem_id} input").first
    box.fill(text)
    box.press("Enter")
    page.wait_for_function(f"() => document.querySelector('#{elem_id} input')?.value === {text!r}")


@contextmanager
def shown_when_it_fails(page, name: str):
    """A screenshot of the page as it was when a step failed: the assertion says what, the picture shows where."""
    try:
        yield
    except Exception:
        screenshot(page, name)
        raise


def pick(page, elem_id: str, option: str) -> None:
    """A dropdown of fixed choices: open it and click the option."""
    page.locator(f"#{elem_id} input").first.click()
    page.locator(f"#{elem_id} [role=option]").filter(has_text=option).first.click()
    page.wait_for_function(f"() => document.querySelector('#{elem_id} input')?.value === {option!r}")


def open_accordion(page, title: str) -> None:
    page.get_by_text(title, exact=True).click()


def train_in_the_page(page, task: str, base_model: str, dataset: str, run_name: str, max_steps: int) -> str:
    """Fill the Train tab's form, Start, wait for the run to finish; returns the Status line."""
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-task").get_by_label(task, exact=True).check()  # (a task's change fills its default dataset: the field is set last)
    fill(page, "train-base-model", base_model)
    fill(page, "train-limit", 32)
    fill(page, "train-max-steps", max_steps)
    fill(page, "train-batch-size", 4)
    fill(page, "train-output-dir", run_name)
    fill(page, "train-dataset", dataset)
    assert value_of(page, "train-dataset") == dataset
    page.locator("#train-start").click()
    wait_until(page, "train-message", f"v.startsWith('Started') && v.endsWith('/{run_name}')")
    # the new run is selected, and its Status replaces the previous run's (a process takes seconds to import torch)
    wait_until(page, "train-run", f"v.startsWith('{run_name} · ')")  # the list shows 'name · task'
    wait_until(page, "train-status", "v.startsWith('starting') || v.startsWith('running')")
    status = wait_until(page, "train-status", "v.startsWith('finished') || v.startsWith('failed')", JOB_MS)
    assert status.startswith(f"finished · step {max_steps}/{max_steps}"), (status, value_of(page, "train-error"))
    return status


@pytest.fixture
def app(tmp_path, tiny_model_dir, shared_data):
    """The app in its own process on a fresh workspace and store; yields (url, workspace)."""
    port = free_port()
    workspace = tmp_path / "workspace"
    env = {
        **os.environ,
        "REASONAPP_WORKSPACE": str(workspace),
        "REASONAPP_STORE": str(tmp_path / "store.sqlite"),
        "GRADIO_SERVER_PORT": str(port),
    }
    for name in ("REASONAPP_DATASET", "REASONAPP_DEMO", "REASONAPP_ADMINS", "REASONAPP_REVIEWERS", "SPACE_ID"):
        env.pop(name, None)
    process = start_app_process([sys.executable, "app.py"], env, port)
    try:
        yield f"http://127.0.0.1:{port}/", workspace
    finally:
        stop_jobs_under_way()  # a step that failed may leave its job running
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.browser
def test_the_whole_journey_in_the_browser(app, tmp_path, tiny_model_dir):
    url, workspace = app
    upload = tmp_path / "support-tickets.csv"
    write_tickets_csv(upload)
    timings, started = {}, time.time()

    def step(name: str) -> None:
        timings[name] = round(time.time() - started, 1)
        screenshot(page, f"journey-{len(timings):02d}-{name}.png")

    with browser_page() as page, shown_when_it_fails(page, "journey-failed.png"):
        page.goto(url, wait_until="load")
        dataset = str(workspace / "datasets" / "tickets")

        # 1. upload the CSV on the Datasets tab: its own column names, string labels, split by the app
        page.get_by_role("tab", name="Datasets").click()
        page.locator("#dataset-files input[type=file]").set_input_files(str(upload))
        page.wait_for_function("() => (document.querySelector('#dataset-preview')?.innerText ?? '').includes('charged twice')")
        pick(page, "dataset-text-column", "ticket")
        pick(page, "dataset-label-column", "category")
        fill(page, "dataset-name", "tickets")
        page.wait_for_function(
            "() => ['billing', 'bug', 'praise'].every(l => (document.querySelector('#dataset-label-counts')?.innerText ?? '').includes(l))"
        )
        page.locator("#dataset-save").click()
        saved = wait_until(page, "dataset-message", "v.startsWith('Saved') || v.startsWith('Not saved')")
        assert saved.startswith(f"Saved tickets to {dataset}") and "train 48, validation 6, test 6" in saved, saved
        wait_until(page, "app-dataset", "v.startsWith('tickets')")  # the whole app works on it now
        step("upload")

        # 2. a tiny R-Gen (Stage 1) from the Train tab: the tiny model, on the reasoning set's default
        train_in_the_page(page, "rgen", tiny_model_dir, "", "rgen-journey", max_steps=2)
        rgen = str(workspace / "runs" / "rgen-journey")
        step("train-rgen")

        # 3. Stage 2 from the Review tab's panel: the R-Gen just trained writes reasonings for 12 tickets
        page.get_by_role("tab", name="Review").click()
        open_accordion(page, "Generate reasonings (Stage 2, admins)")
        choose(page, "stage2-source", rgen)
        assert value_of(page, "stage2-dataset") == dataset  # the app's dataset, switched by the upload
        fill(page, "stage2-rows", 12)
        fill(page, "stage2-batch", 4)
        page.locator("#stage2-start").click()
        line = wait_until(page, "stage2-state", "/: (finished|failed|stopped)/.test(v)", JOB_MS)
        assert "finished · 12/12 rows" in line, line
        step("stage2")

        # 4. review: edit one reasoning (Save edit), accept one with Alt+A, reject one with Alt+R
        page.locator("#review-apply").click()
        wait_until(page, "review-message", "v === '12 rows match'")
        assert value_of(page, "review-label") in LABELS
        first_text = value_of(page, "review-text")
        box = page.locator("#review-reasoning textarea")
        edit = f"The ticket says '{first_text[:30]}', which is about {value_of(page, 'review-label')}."
        box.fill(edit)
        page.locator("#review-save").click()
        wait_until(page, "review-message", "v.includes(': edited.')")
        wait_until(page, "review-progress", "v.startsWith('row 2 of 12')")  # a decision moves to the next row
        box.press("Alt+a")
        wait_until(page, "review-message", "v.includes(': accepted.')")
        wait_until(page, "review-progress", "v.startsWith('row 3 of 12')")
        box.press("Alt+r")
        wait_until(page, "review-message", "v.includes(': rejected.')")
        counts = page.locator("#review-counts").inner_text()
        assert re.search(r"all\s+9\s+1\s+1\s+1\s+12", counts), counts  # pending, accepted, edited, rejected, total
        step("review")

        # 5. export under a name: the reviewed rows and the ones nobody reviewed yet, the rejected one left out
        open_accordion(page, "Export the augmented training set")
        fill(page, "review-export-name", "tickets-reviewed")
        page.get_by_label("Include rows nobody reviewed yet").check()
        page.locator("#review-export").click()
        exported = wait_until(page, "review-export-message", "v.length > 0")
        export = str(workspace / "exports" / "tickets-reviewed")
        assert exported.startswith("Exported 11 rows") and export in exported, exported
        step("export")

        # 6. Q->A and Q->RA from the same base model, both on the export
        train_in_the_page(page, "qa", tiny_model_dir, export, "qa-journey", max_steps=3)
        step("train-qa")
        train_in_the_page(page, "qra", tiny_model_dir, export, "qra-journey", max_steps=3)
        step("train-qra")

        # 7. their paired evaluation in Compare, on the test split the app cut from the upload
        qa, qra = str(workspace / "runs" / "qa-journey"), str(workspace / "runs" / "qra-journey")
        page.get_by_role("tab", name="Compare").click()
        choose(page, "compare-qa-run", qa)
        choose(page, "compare-qra-run", qra)
        page.get_by_role("tab", name="Paired evaluation").click()
        wait_until(page, "compare-eval-dataset", f"v === {dataset!r}")  # the export's source dataset
        fill(page, "compare-eval-limit", 0)
        page.locator("#compare-evaluate").click()
        wait_until(page, "compare-eval-message", "v.startsWith('Evaluating')")
        state = wait_until(page, "compare-eval-state", "/: (finished|failed)/.test(v)", JOB_MS)
        assert state.endswith(": finished"), state
        page.wait_for_function("() => (document.querySelector('#compare-eval-report')?.innerText ?? '').includes('McNemar')")
        report = page.locator("#compare-eval-report").inner_text()
        assert "Q→A (label scoring)" in report and "Q→RA" in report
        step("paired-evaluation")

        # 8. one prediction: both sides answer with one of the ticket labels (Q->RA after its streamed reasoning)
        page.get_by_role("tab", name="One text").click()
        fill(page, "compare-text", "   ")  # an empty text is refused at the text box; no output fails
        page.locator("#compare-go").click()
        page.wait_for_function("() => document.querySelector('#compare-text .validation-error')?.innerText.includes('Type a text')")
        assert page.locator("#compare-qa-label .error").count() == 0  # no "Error" badge on the outputs
        fill(page, "compare-text", "I was billed twice for the same seat this month")
        page.locator("#compare-go").click()
        qa_label = wait_until(page, "compare-qa-label", "v.length > 0")
        qra_label = wait_until(page, "compare-qra-label", "v.length > 1 && v !== '…'", timeout=120_000)
        assert qa_label in LABELS and qra_label.split(" ")[0] in [*LABELS, "invalid"], (qa_label, qra_label)
        step("predict")
    print(f"journey: {timings} (seconds since the page opened)")
