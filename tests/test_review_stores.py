"""The Review tab reviews any of the workspace's stores: the app's own, or an experiment's Stage 2 store.

A pipeline with the review pause writes its rows into `<workspace>/experiments/<name>/store-<hash>/store.sqlite`; the
Store list offers it (marked when its pipeline awaits the review), each page reviews the store it picked, and a store
value that is not listed is refused with nothing created or written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gradio as gr
import pytest
import yaml

from reasonapp import settings
from reasonapp.store import ReasoningStore, StoreError
from tests.ui_helpers import browser_page, launched, screenshot

LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
APP_ROWS = [(0, "i feel so happy today", "joy", "Feeling happy today shows joy."), (1, "i miss my old dog", "sadness", "Missing the dog: sadness.")]
TICKET_LABELS = ["billing", "bug", "feature"]
EXPERIMENT_ROWS = [
    (0, "the app crashes on start", "bug", "A crash on start is a bug."),
    (1, "i was charged twice", "billing", "Being charged twice is billing."),
    (2, "please add a dark mode", "feature", "Asking for dark mode is a feature."),
    (3, "the export button does nothing", "bug", "A button that does nothing is a bug."),
]
FILTERS = ["pending", "all", "", 0, 0, "any", "in order"]


def make_store(path: Path, dataset: str, rows, labels) -> Path:
    """A store with generated reasonings, as Stage 2 (`augment_to_store`) leaves it."""
    store = ReasoningStore(path, journal=False)
    store.add_examples(dataset, "train", [(i, text, label) for i, text, label, _ in rows], labels)
    ids = store.ids_needing_reasoning(dataset, "train")
    store.write_generated(zip(ids, [row[3] for row in rows], strict=True), {"rgen_run": "runs/rgen", "prompt_version": "1"})
    store.close()
    return path


def experiment_store(name: str = "tickets-review", folder: str = "store-0123456789") -> Path:
    path = settings.workspace_dir() / "experiments" / name / folder / "store.sqlite"
    return make_store(path, "tickets", EXPERIMENT_ROWS, TICKET_LABELS)


def pipeline_job(store: Path, name: str = "tickets-review", state: str = "awaiting-review", started: str = "20260101-000000") -> Path:
    """A pipeline job as `experiment --review --state-file` leaves it (training.experiment.StageLog): at the review pause,
    or ended in another state."""
    from training.experiment import AwaitingReview, StageLog

    job = settings.workspace_dir() / "jobs" / f"pipeline-{started}"
    job.mkdir(parents=True)
    (job / "experiment.yaml").write_text(yaml.safe_dump({"name": name, "review": True}))
    stamp = int(started.replace("-", "")) % 10**9  # jobs are listed newest first by when their YAML was written
    os.utime(job / "experiment.yaml", (stamp, stamp))
    log = StageLog(job / "stages.json")
    log.note(review_store=str(store))
    log.current = "augment"
    log.end(state, str(AwaitingReview("Stage 2 is done")) if state == "awaiting-review" else None, state)
    return job


def snapshot(store: Path) -> list[tuple]:
    reader = ReasoningStore(store, journal=False)
    try:
        return [(r.id, r.status, r.reasoning, r.reviewer, r.version) for r in (reader.get(i) for i in reader.query_ids())]
    finally:
        reader.close()


def listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root` with its size and modification time: what 'nothing written' compares."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture
def stores():
    """(app store, experiment store) in the throwaway workspace."""
    app = make_store(settings.workspace_dir() / "reasonings.sqlite", "dair-ai/emotion", APP_ROWS, LABELS)
    return app, experiment_store()


@pytest.fixture
def handlers(stores):
    from reasonapp.ui.review import ReviewHandlers

    return ReviewHandlers(str(stores[0]), LABELS, "emotion", "dair-ai/emotion")


def test_the_store_list_offers_the_app_store_first_then_each_experiment_store_marked_when_its_pipeline_awaits_review(handlers, stores):
    app, paused = stores
    choices = handlers.store_choices()
    assert choices[0] == ("workspace store (reasonings.sqlite)", str(app))
    assert choices[1] == ("experiment tickets-review (store-0123456789)", str(paused))

    pipeline_job(paused)
    other = experiment_store("sizes", "store-abcdef0123")  # an experiment run from the CLI without a job: no state
    labels = dict((value, label) for label, value in handlers.store_choices())
    assert labels[str(paused)] == "experiment tickets-review (store-0123456789) · awaiting review (then Continue in the Pipeline tab)"
    assert labels[str(other)] == "experiment sizes (store-abcdef0123)"
    assert list(labels) == [str(app), str(other), str(paused)]  # by experiment name, a stable order for the timer

    pipeline_job(paused, state="finished", started="20260102-000000")  # a newer job on it went past the pause
    assert dict((value, label) for label, value in handlers.store_choices())[str(paused)] == "experiment tickets-review (store-0123456789)"


def test_picking_an_experiment_store_offers_its_datasets_and_labels(handlers, stores):
    datasets, labels = handlers.choose_store(str(stores[1]))
    assert (datasets["choices"], datasets["value"]) == ([("tickets", "tickets")], "tickets")
    assert labels["choices"] == ["all", *TICKET_LABELS] and labels["value"] == "all"
    back, labels = handlers.choose_store(str(stores[0]))
    assert back["value"] == "dair-ai/emotion" and labels["choices"] == ["all", *LABELS]
    synced = handlers.sync_status(str(stores[1]))
    assert "(experiments/tickets-review/store-0123456789/store.sqlite)" in synced and "covers the app's own store" in synced
    assert "covers the app's own store" not in handlers.sync_status(str(stores[0]))


def test_the_review_filter_stays_on_the_pages_dataset_and_an_empty_queue_says_what_the_store_holds(stores):
    """An app opened on a dataset the app's store has no rows of reviews that dataset (an empty queue that says how to
    fill it), not the store's first dataset unasked: an export from the page would have exported that one."""
    from reasonapp.ui.review import ReviewHandlers

    tickets_app = ReviewHandlers(str(stores[0]), TICKET_LABELS, "tickets", "tickets")  # the store holds emotion rows only
    assert tickets_app.default_dataset() == "tickets" and tickets_app.dataset_choices(chosen="tickets") == ["tickets", "dair-ai/emotion"]
    session, *_, empty = tickets_app.load_queue(*FILTERS, "tickets", "ann", str(stores[0]))  # what the page shows
    assert session.queue == []
    assert empty.startswith("No rows of tickets in this store yet: generate its reasonings") and empty.endswith("in Dataset: dair-ai/emotion.")
    assert tickets_app.load_queue("pending", "all", "no such words", 0, 0, "any", "in order", "dair-ai/emotion", "ann", str(stores[0]))[-1] == (
        "No rows here. Generate reasonings with `python -m training augment`, or change the filters."
    )  # rows of the dataset, none these filters select

    # a store pick keeps the page's dataset where the store holds it, or on the app's store; an experiment's store
    # without it shows its own
    handlers = ReviewHandlers(str(stores[0]), LABELS, "emotion", "dair-ai/emotion")
    assert handlers.choose_store(str(stores[1]), "tickets")[0]["value"] == "tickets"
    assert handlers.choose_store(str(stores[1]), "dair-ai/emotion")[0]["value"] == "tickets"
    on_app_store, labels = handlers.choose_store(str(stores[0]), "tickets")  # a page switched to tickets
    assert on_app_store["value"] == "tickets" and [value for _, value in on_app_store["choices"]] == ["tickets", "dair-ai/emotion"] and labels["choices"] == ["all"]


def test_the_app_wide_dataset_switch_lists_the_datasets_of_the_store_the_page_reviews(handlers, stores, shared_data):
    from reasonapp.data import DEFAULT_CLASSIFICATION_DATASET
    from reasonapp.ui.datasets import DatasetSwitch

    switch = DatasetSwitch(handlers)  # a page on the tickets store switches the app to emotion
    review_filter = switch.switch(DEFAULT_CLASSIFICATION_DATASET, "tickets", "qa", "", str(stores[1]))[7]
    assert review_filter["value"] == DEFAULT_CLASSIFICATION_DATASET and [value for _, value in review_filter["choices"]] == [DEFAULT_CLASSIFICATION_DATASET, "tickets"]
    on_app_store = switch.switch(DEFAULT_CLASSIFICATION_DATASET, "tickets", "qa", "", str(stores[0]))[7]
    assert on_app_store["choices"] == [(DEFAULT_CLASSIFICATION_DATASET, DEFAULT_CLASSIFICATION_DATASET)]


def test_a_session_loaded_from_an_experiment_store_decides_there_and_leaves_the_app_store_alone(handlers, stores):
    from training.experiment import reviewed_rows

    app, paused = stores
    app_before = snapshot(app)
    session, text, label, *_, message = handlers.load_queue(*FILTERS, "tickets", "ana", str(paused))
    assert (session.store, text, label, message) == (str(paused), "the app crashes on start", "bug", "4 rows match")

    session, text, *_ = handlers.accept(session, "A crash on start is a bug.", "ana")
    assert text == "i was charged twice"
    session, *_ = handlers.save_edit(session, "'Charged twice' names a payment problem: billing.", "ana")
    session, *_, message = handlers.reject(session, "", "ana")
    assert message == "Row 2: rejected."
    session, *_, message = handlers.undo(session, "", "ana")  # the next row is untouched: step back to the rejected one
    assert message == "Undone: row 2 is pending again."
    session, *_, message = handlers.reject(session, "", "ana")
    session, *_, progress, counts, message = handlers.accept(session, "A button that does nothing is a bug.", "ana")
    assert "reviewed 4 of 4" in progress and counts[0] == ["all", 0, 2, 1, 1, 4]

    assert snapshot(app) == app_before
    decided = {row.row_index: (row.status, row.reasoning) for row in reviewed_rows(paused)}
    assert decided == {
        0: ("accepted", "A crash on start is a bug."),
        1: ("edited", "'Charged twice' names a payment problem: billing."),
        3: ("accepted", "A button that does nothing is a bug."),
    }


def test_export_bulk_accept_quality_and_agreement_use_the_chosen_store(handlers, stores):
    app, paused = stores
    assert handlers.quality_overview("tickets", str(paused)).startswith("4 reasonings")
    assert handlers.counts_table("tickets", str(paused))[0] == ["all", 4, 0, 0, 0, 4]
    assert handlers.bulk_preview(*FILTERS, "tickets", "ana", str(paused))[1] == "Accept all 4 pending rows in this filter?"
    session, *_, message = handlers.bulk_accept(handlers.load_queue(*FILTERS, "tickets", "ana", str(paused))[0], "ana", *FILTERS, "tickets", str(paused))
    assert message == "Accepted 4 pending rows." and session.store == str(paused)
    assert handlers.agreement("tickets", str(paused)).startswith("Team review is off")  # the experiment store's own setting

    said = handlers.export("tickets-reviewed", False, "keep-all", "remove", "tickets", False, str(paused))
    assert said.startswith("Exported 4 rows")
    exported = [json.loads(line) for line in (settings.workspace_dir() / "exports" / "tickets-reviewed" / "train.jsonl").read_text().splitlines()]
    assert sorted(row["text"] for row in exported) == sorted(row[1] for row in EXPERIMENT_ROWS)
    assert {row[1] for row in snapshot(app)} == {"pending"}


def test_two_sessions_on_two_stores_interleave_without_touching_each_other(handlers, stores):
    app, paused = stores
    on_app = handlers.load_queue(*FILTERS, "dair-ai/emotion", "ana", None)[0]
    on_experiment = handlers.load_queue(*FILTERS, "tickets", "bo", str(paused))[0]
    on_app, *_ = handlers.accept(on_app, "Feeling happy today shows joy.", "ana")
    on_experiment, *_ = handlers.reject(on_experiment, "", "bo")
    on_app, *_ = handlers.reject(on_app, "", "ana")
    on_experiment, *_ = handlers.accept(on_experiment, "Being charged twice is billing.", "bo")
    assert [(status, reviewer) for _, status, _, reviewer, _ in snapshot(app)] == [("accepted", "ana"), ("rejected", "ana")]
    assert [(status, reviewer) for _, status, _, reviewer, _ in snapshot(paused)][:2] == [("rejected", "bo"), ("accepted", "bo")]
    assert {row[1] for row in snapshot(paused)[2:]} == {"pending"}


def test_team_review_and_the_decision_log_are_the_app_stores_only(stores, monkeypatch):
    from reasonapp.journal import journal_dir, read_events
    from reasonapp.ui.review import ReviewHandlers

    app, paused = stores
    monkeypatch.setenv("REASONAPP_MIN_REVIEWS", "2")
    monkeypatch.setenv("REASONAPP_JOURNAL", "1")
    handlers = ReviewHandlers(str(app), LABELS, "emotion", "dair-ai/emotion")
    on_app = handlers.load_queue(*FILTERS, "dair-ai/emotion", "ana", None)[0]
    on_experiment = handlers.load_queue(*FILTERS, "tickets", "ana", str(paused))[0]
    assert handlers.accept(on_app, "Feeling happy today shows joy.", "ana")[-1] == "Row 0: your decision (accepted) is recorded (1 of 2 reviews)."
    assert handlers.accept(on_experiment, "A crash on start is a bug.", "ana")[-1] == "Row 0: accepted."  # its own setting: 1
    logged = read_events(journal_dir())
    assert [(event["dataset"], event["action"]) for event in logged] == [("dair-ai/emotion", "review")]


@pytest.mark.parametrize(
    "value",
    [
        "experiments/tickets-review/store-0123456789/store.sqlite",  # relative: not a listed value
        "{workspace}/experiments/tickets-review/store-0123456789/../store-0123456789/store.sqlite",  # a `..` path to a listed store
        "{workspace}/../outside.sqlite",  # a reasonapp store outside the workspace
        "{workspace}/notes.txt",  # a file that is not a store
        "{workspace}/experiments/new/store-ffffffffff/store.sqlite",  # where a store could be, but none is
        "/etc/passwd",
        "../../../../tmp/x.sqlite",
        42,  # an API caller may send any JSON
    ],
)
def test_a_store_that_is_not_listed_is_refused_with_nothing_created_or_written(handlers, stores, tmp_path, value):
    workspace = settings.workspace_dir()
    make_store(tmp_path / "outside.sqlite", "tickets", EXPERIMENT_ROWS, TICKET_LABELS)
    (workspace / "notes.txt").write_text("my notes")
    value = value.format(workspace=workspace) if isinstance(value, str) else value
    handlers.load_queue(*FILTERS, None, "ana", None)  # the app store is open and read, as a page has it
    before = listing(tmp_path)

    refused = "is not one of this workspace's review stores: pick one from the Store list"
    assert refused in handlers.load_queue(*FILTERS, "tickets", "ana", value)[-1]
    assert refused in handlers.quality_overview("tickets", value)
    assert refused in handlers.agreement("tickets", value)
    assert refused in handlers.export("hostile", True, "keep-all", "remove", None, False, value)
    for act in (
        lambda: handlers.counts_table("tickets", value),
        lambda: handlers.bulk_preview(*FILTERS, "tickets", "ana", value),
        lambda: handlers.bulk_accept(handlers.load_queue(*FILTERS)[0], "ana", *FILTERS, "tickets", value),
        lambda: handlers.disputes("tickets", value),
    ):
        with pytest.raises(StoreError, match="not one of this workspace's review stores"):
            act()
    assert handlers.choose_store(value) == (gr.skip(), gr.skip())  # the filters stay; the queue's reload says why
    assert handlers.dataset_choices(value) == [] and handlers.dataset_changed("tickets", value)["choices"] == ["all", *LABELS]
    assert refused in handlers.sync_status(value)

    assert listing(tmp_path) == before
    assert (workspace / "notes.txt").read_text() == "my notes"


@pytest.mark.browser
def test_browser_picks_a_paused_experiment_store_and_accepts_a_row_there_by_shortcut(stores, shared_data):
    from reasonapp.ui.app import build_app

    app, _ = stores
    with launched(build_app(store_path=str(app))) as url, browser_page() as page:
        page.goto(url, wait_until="load")
        page.get_by_role("tab", name="Review").click()
        page.wait_for_function("() => document.querySelector('#review-text textarea')?.value === 'i feel so happy today'")
        # a pipeline reaches its review pause while the page is open: its store joins the list (the tab's timer)
        paused = experiment_store("paused-now", "store-9999999999")
        pipeline_job(paused, "paused-now")
        page.locator("#review-store input").click()
        option = page.get_by_role("option", name="experiment paused-now (store-9999999999) · awaiting review", exact=False)
        option.wait_for(timeout=15_000)
        option.click()
        page.wait_for_function("() => document.querySelector('#review-text textarea')?.value === 'the app crashes on start'")
        assert page.locator("#review-dataset input").input_value() == "tickets"
        page.wait_for_function("() => document.querySelector('#review-sync')?.innerText.includes(\"covers the app's own store\")")
        page.locator("#review-reasoning textarea").press("Alt+a")
        page.wait_for_function("() => document.querySelector('#review-message textarea')?.value === 'Row 0: accepted.'")
        screenshot(page, "review-experiment-store.png")
    assert snapshot(paused)[0][1:3] == ("accepted", "A crash on start is a bug.")
    assert {row[1] for row in snapshot(app)} == {"pending"}


@pytest.mark.browser
def test_browser_another_dataset_in_the_filter_refreshes_the_quality_and_agreement_lines(stores, shared_data):
    """The figures beside the queue follow a dataset change (the filter, or the app-wide switch and its restore on reload,
    which set the same filter), not only Apply filters."""
    from reasonapp.ui.app import build_app

    app, experiment = stores
    with launched(build_app(store_path=str(app))) as url, browser_page() as page:
        page.goto(url, wait_until="load")
        page.get_by_role("tab", name="Review").click()
        page.wait_for_function("() => document.querySelector('#review-quality textarea')?.value.startsWith('2 reasonings')")
        field = page.locator("#review-dataset input")
        field.fill("tickets")  # a dataset the app store holds no rows of
        field.press("Enter")
        page.wait_for_function("() => document.querySelector('#review-quality textarea')?.value === 'No reasonings yet.'")
        page.wait_for_function("() => document.querySelector('#review-message textarea')?.value.startsWith('No rows of tickets in this store yet')")
