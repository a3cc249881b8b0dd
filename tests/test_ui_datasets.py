"""The Datasets tab and the app-wide dataset switch: upload, preview, save through the tab's handlers; the switch
reaching Overview, Train, Review and Compare; Compare refusing runs of different label sets; and the same in a browser."""

import contextvars
import json
import os
import re

import gradio as gr
import pytest

from reasonapp import dataset_import
from reasonapp.access import Policy
from reasonapp.data import DEFAULT_CLASSIFICATION_DATASET
from tests.test_dataset_import import listing, ticket_rows, write_csv, write_jsonl
from tests.ui_helpers import browser_page, launched, screenshot

SETTINGS = ["", 0.1, 0.1, 0]  # label names, validation share, test share, seed


@pytest.fixture
def workspace():
    from reasonapp import settings

    return settings.workspace_dir()


@pytest.fixture
def tickets_csv(tmp_path):
    return write_csv(tmp_path / "upload" / "tickets.csv", ticket_rows(20))


def test_upload_preview_then_save_selects_it(tickets_csv, workspace):
    from reasonapp.ui.datasets import read_dataset, save_dataset

    text_column, label_column, preview, counts, message = read_dataset([str(tickets_csv)], "", *SETTINGS)
    assert (text_column["value"], label_column["value"]) == ("message", "category")
    assert text_column["choices"] == ["message", "category"] and len(preview) == dataset_import.PREVIEW_ROWS
    assert counts.to_dict("records") == [
        {"label": "billing", "train": 16, "validation": 2, "test": 2},
        {"label": "bug", "train": 16, "validation": 2, "test": 2},
        {"label": "praise", "train": 16, "validation": 2, "test": 2},
        {"label": "all labels", "train": 48, "validation": 6, "test": 6},
    ]
    assert "3 labels (names): billing, bug, praise" in message
    assert "split by label (stratified), seed 0: validation 10%, test 10%" in message
    assert not (workspace / "datasets").exists()  # reading writes nothing

    message, dropdown = save_dataset([str(tickets_csv)], "", "message", "category", *SETTINGS, "tickets", DEFAULT_CLASSIFICATION_DATASET)
    saved = workspace / "datasets" / "tickets"
    assert message.startswith(f"Saved tickets to {saved}. One file split by label (stratified), seed 0") and (saved / "provenance.json").is_file()
    assert "Rows: train 48, validation 6, test 6." in message
    assert dropdown["value"] == str(saved) and ("tickets (workspace)", str(saved)) in dropdown["choices"]


def test_the_name_field_suggests_the_uploads_name_and_keeps_a_typed_one(tickets_csv, tmp_path, workspace):
    from reasonapp.ui.datasets import suggested_name

    assert suggested_name([str(tickets_csv)], "", "", "") == ("tickets", "tickets")
    dataset_import.import_files([tickets_csv], "tickets")
    assert suggested_name([str(tickets_csv)], "", "tickets", "tickets") == ("tickets-2", "tickets-2")  # taken now
    assert suggested_name([], "dair-ai/emotion", "tickets-2", "tickets-2") == ("emotion", "emotion")  # follows the source
    assert suggested_name([], "dair-ai/emotion", "my-emotions", "emotion") == (gr.skip(), "emotion")  # typed: left alone
    assert suggested_name([str(tmp_path / "train.csv"), str(tmp_path / "test.csv")], "", "", "") == ("", "")  # split files: no clue


def test_a_bad_upload_shows_why_in_the_message_and_save_writes_nothing(tmp_path, workspace):
    from reasonapp.ui.datasets import read_dataset, save_dataset

    mixed = write_jsonl(tmp_path / "up" / "mixed.jsonl", [{"text": t, "label": 2 if i % 3 == 0 else label} for i, (t, label) in enumerate(ticket_rows(5))])
    *_, counts, message = read_dataset([str(mixed)], "", *SETTINGS)
    assert message.startswith("Not ready to save: the label column 'label' mixes integer ids") and counts.empty
    before = listing(workspace)
    message, dropdown = save_dataset([str(mixed)], "", "text", "label", *SETTINGS, "mixed", DEFAULT_CLASSIFICATION_DATASET)
    assert message.startswith("Not saved: the label column 'label' mixes integer ids")
    assert listing(workspace) == before

    text_only = write_csv(tmp_path / "up2" / "notes.csv", [(t,) for t, _ in ticket_rows(3)], header=("note",))
    *_, message = read_dataset([str(text_only)], "", *SETTINGS)
    assert message == "Not ready to save: the data has one column (['note']): it needs a text column and a label column"


def review_handlers(store_path=None):
    from reasonapp.data import load_classification_dataset
    from reasonapp.ui.review import ReviewHandlers

    data = load_classification_dataset(DEFAULT_CLASSIFICATION_DATASET)
    return ReviewHandlers(store_path, data.label_names, data.task_description, DEFAULT_CLASSIFICATION_DATASET)


def test_the_switch_reaches_every_tab_and_a_bad_choice_keeps_the_dataset(tickets_csv, shared_data, tmp_path):
    from reasonapp.ui.datasets import DatasetSwitch

    saved = str(dataset_import.import_files([tickets_csv], "tickets"))
    switch = DatasetSwitch(review_handlers(str(tmp_path / "store.sqlite")))
    state, remembered, dropdown, message, overview, table, train, review, stage2, gold, examples = switch.switch(saved, DEFAULT_CLASSIFICATION_DATASET, "qa", "")
    assert state == remembered == saved and message == "Dataset: tickets (workspace), 3 labels: billing, bug, praise."
    assert f"`{saved}`" in overview and list(table.columns) == ["split", "rows", "billing", "bug", "praise"]
    assert table.values.tolist() == [["train", 48, 16, 16, 16], ["validation", 6, 2, 2, 2], ["test", 6, 2, 2, 2]]
    assert train == saved  # a qa run trains on it
    assert review["value"] == saved and review["choices"][0] == ("tickets (workspace)", saved) and stage2 == saved  # named, valued by path
    assert gold["choices"] == ["all", "billing", "bug", "praise"]
    test_texts = set(json.loads(line)["text"] for line in (tmp_path / "workspace" / "datasets" / "tickets" / "test.jsonl").read_text().splitlines())
    assert len(examples["samples"]) == 3 and {sample[0] for sample in examples["samples"]} <= test_texts  # one per label, from its test split

    # other tasks keep what is typed in the Train tab's dataset field
    assert switch.switch(saved, DEFAULT_CLASSIFICATION_DATASET, "qra", "workspace/exports/reviewed")[6] == "workspace/exports/reviewed"

    state, remembered, dropdown, message, *rest = switch.switch(str(tmp_path / "nowhere"), saved, "qa", saved)
    assert state == saved and dropdown["value"] == saved  # the dropdown goes back to the page's dataset
    assert remembered == gr.skip()  # and the browser keeps remembering the page's dataset
    assert message.startswith("Kept tickets (workspace): ") and "is not a local directory" in message
    assert rest == [gr.skip()] * 7  # nothing else changes


def test_a_workspace_dataset_is_named_not_pathed_wherever_the_page_shows_it(tickets_csv, shared_data, tmp_path):
    """Its value stays the directory (what the tabs and the CLI read); what a person reads is "tickets (workspace)":
    the switch, the Review filter, an empty queue's explanation (its command keeps the path), an export's refusal."""
    from reasonapp.ui.datasets import DatasetSwitch
    from tests.test_review_stores import FILTERS, make_store

    saved = str(dataset_import.import_files([tickets_csv], "tickets"))
    assert dataset_import.display_name(saved) == "tickets (workspace)"
    for as_given in (DEFAULT_CLASSIFICATION_DATASET, str(tmp_path / "elsewhere"), "", str(tmp_path / "workspace" / "datasets")):
        assert dataset_import.display_name(as_given) == as_given  # a Hub id, another directory, nothing, the root itself

    store = make_store(tmp_path / "store.sqlite", DEFAULT_CLASSIFICATION_DATASET, [(0, "i feel fine", "joy", "They feel fine.")], ["sadness", "joy"])
    handlers = review_handlers(str(store))
    *_, review, _, _, _ = DatasetSwitch(handlers).switch(saved, DEFAULT_CLASSIFICATION_DATASET, "qa", "")
    assert review["choices"] == [("tickets (workspace)", saved), (DEFAULT_CLASSIFICATION_DATASET, DEFAULT_CLASSIFICATION_DATASET)]
    assert handlers.choose_store(str(store), saved)[0]["choices"][0] == ("tickets (workspace)", saved)

    shown = handlers.load_queue(*FILTERS, saved, "ann", str(store))
    empty, progress = shown[-1], shown[-3]
    assert progress == "no rows of tickets (workspace) in this store"  # not "reviewed 0 of 0 · not generated yet 0"
    assert empty.startswith("No rows of tickets (workspace) in this store yet") and f"--dataset {saved}`" in empty
    refused = handlers.export("from-tickets", True, dataset=saved, store=str(store))
    assert refused.startswith("Not exported: ") and "holds no rows of tickets (workspace); it holds dair-ai/emotion" in refused

    opened = handlers.open_store(str(store))
    opened.add_examples(saved, "train", [(0, "the app crashes", "bug")], ["billing", "bug"])
    opened.write_generated([(opened.ids_needing_reasoning(saved, "train")[0], "It crashes: bug.")], {"rgen_run": "r"})
    row_line = handlers.load_queue(*FILTERS, saved, "ann", str(store))[5]
    assert "train row 0 of tickets (workspace) · version 1" in row_line and saved not in row_line

    from training.evaluate import markdown_report

    report = {"dataset": saved, "split": "test", "rows": 3, "systems": {}, "tfidf_training_rows": 5, "verdict": None, "mcnemar": {}, "label_names": []}
    assert markdown_report(report).startswith("# Evaluation on tickets (workspace) / test (3 rows)")


def test_a_visitor_picks_listed_datasets_only(tickets_csv, shared_data, tmp_path):
    from reasonapp.ui import access
    from reasonapp.ui.datasets import DatasetSwitch

    saved = str(dataset_import.import_files([tickets_csv], "tickets"))
    other = tmp_path / "elsewhere"
    write_jsonl(other / "train.jsonl", [{"text": t, "label": label} for t, label in ticket_rows(3)])
    switch = DatasetSwitch(review_handlers())

    def as_visitor(choice):
        def call():
            access._policy.set(Policy(on_space=True))  # on a Space, anonymous: a visitor
            return switch.switch(choice, DEFAULT_CLASSIFICATION_DATASET, "qa", "")

        return contextvars.copy_context().run(call)

    assert as_visitor(saved)[0] == saved
    state, _, _, message, *_ = as_visitor(str(other))
    assert state == DEFAULT_CLASSIFICATION_DATASET and "is not offered here: pick a dataset from the list" in message


def test_a_reload_restores_the_browsers_dataset_through_the_switch_and_a_deleted_one_falls_back(tickets_csv, shared_data, tmp_path):
    import shutil

    from reasonapp.ui.datasets import DatasetSwitch

    saved = str(dataset_import.import_files([tickets_csv], "tickets"))
    switch = DatasetSwitch(review_handlers(str(tmp_path / "store.sqlite")))
    picked = switch.switch(saved, DEFAULT_CLASSIFICATION_DATASET, "qa", "")

    # a new page (a reload) starts on the app's dataset; the browser's choice brings every tab to it, as the pick did
    state, remembered, dropdown, message, *tabs = switch.restore(saved, DEFAULT_CLASSIFICATION_DATASET, "qa", "")
    assert state == remembered == dropdown["value"] == saved
    assert ("tickets (workspace)", saved) in dropdown["choices"]  # the list as the workspace is now
    assert message == "Dataset: tickets (workspace), 3 labels: billing, bug, praise. (this browser's choice, kept from its last visit)"
    assert [str(part) for part in tabs] == [str(part) for part in picked[4:]]  # Overview, Train, Review, Stage 2, Compare

    # a training run and a Stage 2 job under way keep the dataset fields their own tabs put back (their settings)
    from reasonapp import settings
    from training import rundir

    alive = {"pid": os.getpid(), "command": ["python"]}
    run = settings.workspace_dir() / "runs" / "qa-running"
    rundir.write_config(run, {"task": "qa", "label_names": ["anger"], "base_model": "base"})
    rundir.write_json(run / rundir.STATUS, {"state": "running"})
    rundir.write_json(run / "process.json", alive)
    job = settings.workspace_dir() / "jobs" / "stage2-running"
    job.mkdir(parents=True)
    (job / "launch.yaml").write_text("dataset: dair-ai/emotion\n")
    rundir.write_json(job / "process.json", alive)
    *_, train, review, stage2, _, _ = switch.restore(saved, DEFAULT_CLASSIFICATION_DATASET, "qa", "")
    assert train == stage2 == gr.skip() and review["value"] == saved
    shutil.rmtree(run)
    shutil.rmtree(job)

    # nothing remembered, or the app's own dataset: the page stays as it opened, its list current
    for nothing in (None, "", DEFAULT_CLASSIFICATION_DATASET):
        state, remembered, dropdown, message, *tabs = switch.restore(nothing, DEFAULT_CLASSIFICATION_DATASET, "qa", "")
        assert state == DEFAULT_CLASSIFICATION_DATASET and "value" not in dropdown and ("tickets (workspace)", saved) in dropdown["choices"]
        assert remembered == message == gr.skip() and tabs == [gr.skip()] * 7

    # deleted since: the page stays on the app's dataset, says why, and the browser forgets it
    shutil.rmtree(saved)
    state, remembered, dropdown, message, *tabs = switch.restore(saved, DEFAULT_CLASSIFICATION_DATASET, "qa", "")
    assert state == remembered == dropdown["value"] == DEFAULT_CLASSIFICATION_DATASET and ("tickets (workspace)", saved) not in dropdown["choices"]
    assert message.startswith(f"The dataset this browser chose last time does not load now (dataset '{saved}' is not a local directory")
    assert message.endswith(f"): back on {DEFAULT_CLASSIFICATION_DATASET}.") and tabs == [gr.skip()] * 7


def test_the_train_tabs_dataset_field_follows_the_task(workspace):
    import os

    from reasonapp.ui.train import start, task_dataset

    assert task_dataset("rgen", "/ws/datasets/tickets", "/ws/datasets/tickets") == ""  # Stage 1 reads a reasoning set
    assert task_dataset("qa", "/ws/datasets/tickets", "") == "/ws/datasets/tickets"
    assert task_dataset("qra", "/ws/datasets/tickets", "/ws/exports/reviewed") == "/ws/exports/reviewed"  # typed: kept
    assert task_dataset("qra", "/ws/datasets/tickets", "/ws/datasets/tickets") == ""  # no export yet
    refused = start("qra", "base", "", 0, 1, -1, 2e-4, 8, 16, 0, "")[1]
    assert refused.startswith("Not started: task qra needs a Dataset: the folder of an export of reviewed reasonings (Review tab → Export)")
    assert "--dataset" not in refused

    for age, name in ((200, "older"), (100, "newer")):  # a Q→RA run trains on an export: the newest is offered
        folder = workspace / "exports" / name
        folder.mkdir(parents=True)
        (folder / "provenance.json").write_text('{"store": "reasonings.sqlite"}')
        os.utime(folder / "provenance.json", (1e9 - age, 1e9 - age))
    assert task_dataset("qra", "/ws/datasets/tickets", "") == str(workspace / "exports" / "newer")
    assert task_dataset("qar", "/ws/datasets/tickets", "/ws/datasets/tickets") == str(workspace / "exports" / "newer")


def test_compare_refuses_a_qa_and_a_qra_run_of_different_label_sets(workspace):
    from reasonapp.errors import ReasonappError
    from reasonapp.ui.compare import CompareHandlers, start_paired_evaluation
    from training import rundir
    from training.evaluate import check_same_labels, side_configs

    runs = {}
    for name, task, labels in (("qa-emotion", "qa", ["sadness", "joy"]), ("qra-tickets", "qra", ["billing", "bug"]), ("qra-emotion", "qra", ["joy", "sadness"])):
        runs[name] = workspace / "runs" / name
        rundir.write_config(runs[name], {"task": task, "label_names": labels, "base_model": "base"})
        rundir.write_json(runs[name] / rundir.STATUS, {"state": "finished"})
    said = "These runs were trained on different label sets: the Q→A run qa-emotion on ['sadness', 'joy'], the Q→RA run qra-tickets on ['billing', 'bug']"
    _, message = start_paired_evaluation(str(runs["qa-emotion"]), str(runs["qra-tickets"]), "", "test", 10)
    assert message.startswith(f"Not evaluated: {said}")
    with pytest.raises(ReasonappError, match=re.escape(said)):
        CompareHandlers().classifiers(str(runs["qa-emotion"]), str(runs["qra-tickets"]))
    with pytest.raises(ReasonappError, match=re.escape(said)):  # `evaluate --qa-run --qra-run` checks the same
        side_configs({"qa": str(runs["qa-emotion"]), "qra": str(runs["qra-tickets"])})
    check_same_labels({"qa": str(runs["qa-emotion"]), "qra": str(runs["qra-emotion"])})  # same set, other order: fine


# -- in a browser ------------------------------------------------------------------------------------


def options_of(page, elem_id: str) -> list[str]:
    """A Gradio dropdown's choices, as its list shows them when opened."""
    page.locator(f"#{elem_id} input").click()
    options = page.locator("ul[role='listbox'] li")
    options.first.wait_for()
    texts = [text.replace("✓", "").strip() for text in options.all_inner_texts()]  # ✓ marks the selected one
    page.keyboard.press("Escape")
    return texts


@pytest.mark.browser
def test_browser_upload_save_and_switch_reaches_review_and_compare(tickets_csv, tmp_path, shared_data, workspace):
    from reasonapp.ui.app import build_app

    mixed = write_jsonl(tmp_path / "bad" / "mixed.jsonl", [{"text": t, "label": 1 if i % 2 else label} for i, (t, label) in enumerate(ticket_rows(4))])
    with launched(build_app(store_path=str(tmp_path / "store.sqlite"))) as url, browser_page() as page:
        page.goto(url, wait_until="load")
        page.get_by_role("tab", name="Datasets").click()

        # a bad upload: the message says why, and nothing reaches the workspace
        before = listing(workspace)
        page.locator("#dataset-files input[type='file']").set_input_files(str(mixed))
        page.wait_for_function("() => document.querySelector('#dataset-message textarea')?.value.includes('mixes integer ids')")
        page.locator("#dataset-name textarea, #dataset-name input").first.fill("mixed")
        page.locator("#dataset-save").click()
        page.wait_for_function("() => document.querySelector('#dataset-message textarea')?.value.startsWith('Not saved:')")
        screenshot(page, "datasets-bad-upload.png")
        assert listing(workspace) == before

        page.locator("#dataset-files input[type='file']").set_input_files(str(tickets_csv))  # added beside the first file
        page.wait_for_function("() => document.querySelector('#dataset-message textarea')?.value.includes('name each by its split')")
        page.locator("#dataset-files button[aria-label='Clear']").click()
        page.wait_for_function("() => document.querySelector('#dataset-message textarea')?.value.includes('Upload a file')")
        page.locator("#dataset-files input[type='file']").set_input_files(str(tickets_csv))
        page.wait_for_function("() => document.querySelector('#dataset-message textarea')?.value.includes('3 labels (names): billing, bug, praise')")
        assert "stratified" in page.locator("#dataset-message textarea").input_value()
        assert "billing" in page.locator("#dataset-label-counts").inner_text() and "message" in page.locator("#dataset-preview").inner_text()
        assert page.locator("#dataset-text-column input").input_value() == "message"
        page.wait_for_function("() => document.querySelector('#dataset-name textarea, #dataset-name input')?.value === 'tickets'")  # from tickets.csv
        page.locator("#dataset-save").click()
        page.wait_for_function("() => document.querySelector('#dataset-message textarea')?.value.startsWith('Saved tickets')")
        saved = str(workspace / "datasets" / "tickets")
        page.wait_for_function("() => document.querySelector('#app-dataset-message')?.innerText.includes('3 labels: billing, bug, praise')")
        assert page.locator("#app-dataset input").input_value() == "tickets (workspace)"
        screenshot(page, "datasets-saved.png")

        page.get_by_role("tab", name="Overview").click()
        page.wait_for_function("() => /billing/.test(document.querySelector('#overview-splits')?.innerText ?? '')")
        assert re.search(r"\btrain\s+48\b", page.locator("#overview-splits").inner_text())

        page.get_by_role("tab", name="Review").click()
        assert page.locator("#review-dataset input").input_value() == "tickets (workspace)"  # by name; its value is the path
        page.get_by_text("Generate reasonings (Stage 2, admins)").click()
        assert page.locator("#stage2-dataset textarea, #stage2-dataset input").first.input_value() == saved

        page.get_by_role("tab", name="Compare").click()
        example = page.locator("#compare-examples").get_by_text(re.compile(r"\(ticket \w+-\d+\)")).first  # its examples are the tickets' test texts now
        chosen_text = example.inner_text()
        example.click()
        page.wait_for_function("() => document.querySelector('#compare-text textarea')?.value.includes('(ticket')")
        assert page.locator("#compare-text textarea").input_value() == chosen_text
        page.get_by_role("tab", name="Disagreements").click()
        assert options_of(page, "compare-gold") == ["all", "billing", "bug", "praise"]
        screenshot(page, "datasets-compare-gold.png")

        # another page (another user) still works on the dataset the app opened on
        other = page.context.browser.new_page()
        other.goto(url, wait_until="load")
        other.wait_for_function("() => /sadness/.test(document.querySelector('#overview-splits')?.innerText ?? '')")
        assert other.locator("#app-dataset input").input_value() == DEFAULT_CLASSIFICATION_DATASET


def test_a_directory_typed_in_is_read_and_saved_with_its_own_splits(tmp_path, workspace):
    from reasonapp.ui.datasets import read_dataset, save_dataset

    source = tmp_path / "source"
    write_jsonl(source / "train.jsonl", [{"sentence": t, "tag": label} for t, label in ticket_rows(8)])
    write_jsonl(source / "test.jsonl", [{"sentence": t, "tag": label} for t, label in ticket_rows(2, seed=5)])
    text_column, label_column, _, counts, message = read_dataset([], str(source), *SETTINGS)
    assert (text_column["value"], label_column["value"]) == ("sentence", "tag")
    assert "Splits as given (as in the source). Rows: train 24, test 6." in message and list(counts.columns) == ["label", "train", "test"]
    message, dropdown = save_dataset([], str(source), "sentence", "tag", *SETTINGS, "from-dir", DEFAULT_CLASSIFICATION_DATASET)
    assert message.startswith("Saved from-dir") and dropdown["value"] == str(workspace / "datasets" / "from-dir")
    assert json.loads((workspace / "datasets" / "from-dir" / "provenance.json").read_text())["source"] == str(source)


@pytest.mark.browser
def test_browser_a_reload_keeps_the_switched_dataset_and_another_browser_keeps_its_own(tickets_csv, tmp_path, shared_data):
    import shutil

    from reasonapp.ui.app import build_app
    from tests.test_browser_journey import pick, shown_when_it_fails, value_of

    saved = str(dataset_import.import_files([tickets_csv], "tickets"))

    def on_tickets(page) -> None:
        """Every tab that follows the switch is on the tickets."""
        assert value_of(page, "app-dataset") == "tickets (workspace)"
        page.get_by_role("tab", name="Overview").click()
        page.wait_for_function("() => /billing/.test(document.querySelector('#overview-splits')?.innerText ?? '')")
        page.get_by_role("tab", name="Train").click()
        assert value_of(page, "train-dataset") == saved
        page.get_by_role("tab", name="Review").click()
        assert value_of(page, "review-dataset") == "tickets (workspace)"
        page.get_by_role("tab", name="Compare").click()
        page.get_by_role("tab", name="Disagreements").click()
        assert options_of(page, "compare-gold") == ["all", "billing", "bug", "praise"]
        page.get_by_role("tab", name="Pipeline").click()
        page.wait_for_function(f"() => document.querySelector('#pipeline-yaml')?.innerText.includes({f'dataset: {saved}'!r})")

    def on_the_default(page) -> None:
        page.get_by_role("tab", name="Overview").click()
        page.wait_for_function("() => /sadness/.test(document.querySelector('#overview-splits')?.innerText ?? '')")
        assert value_of(page, "app-dataset") == DEFAULT_CLASSIFICATION_DATASET
        page.get_by_role("tab", name="Pipeline").click()
        page.wait_for_function("() => document.querySelector('#pipeline-yaml')?.innerText.includes('dataset: dair-ai/emotion')")

    with launched(build_app(store_path=str(tmp_path / "store.sqlite"))) as url, browser_page() as page, shown_when_it_fails(page, "dataset-reload-failed.png"):
        page.goto(url, wait_until="load")
        on_the_default(page)
        pick(page, "app-dataset", "tickets (workspace)")
        page.wait_for_function("() => document.querySelector('#app-dataset-message')?.innerText.includes('3 labels: billing, bug, praise')")
        on_tickets(page)  # the switch, Pipeline's YAML included

        page.reload(wait_until="load")
        page.wait_for_function("() => document.querySelector('#app-dataset-message')?.innerText.includes('kept from its last visit')")
        on_tickets(page)
        screenshot(page, "dataset-reloaded.png")

        other = page.context.browser.new_page()  # a context of its own: another browser's storage
        other.goto(url, wait_until="load")
        on_the_default(other)
        assert other.locator("#app-dataset-message").inner_text().strip() == ""

        shutil.rmtree(saved)  # deleted since: the next load says so and stays on the app's dataset
        page.reload(wait_until="load")
        page.wait_for_function("() => document.querySelector('#app-dataset-message')?.innerText.includes('does not load now')")
        assert f"'{saved}' is not a local directory" in page.locator("#app-dataset-message").inner_text()
        on_the_default(page)
        screenshot(page, "dataset-reload-deleted.png")
        page.reload(wait_until="load")  # ...and forgets it
        on_the_default(page)
        assert page.locator("#app-dataset-message").inner_text().strip() == ""


@pytest.mark.browser
def test_browser_the_remembered_dataset_outlives_a_restart_of_the_app(tickets_csv, tmp_path, shared_data):
    from contextlib import contextmanager

    from reasonapp.ui.app import build_app, launch_settings
    from tests.test_browser_journey import pick, value_of
    from tests.ui_helpers import free_port

    dataset_import.import_files([tickets_csv], "tickets")
    port = free_port()  # the same address each time: a browser's storage is per address

    @contextmanager
    def served():
        demo = build_app(store_path=str(tmp_path / "store.sqlite"))
        demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_settings())
        try:
            yield demo.local_url
        finally:
            demo.close()

    with browser_page() as page:
        with served() as url:
            page.goto(url, wait_until="load")
            pick(page, "app-dataset", "tickets (workspace)")
            page.wait_for_function("() => document.querySelector('#app-dataset-message')?.innerText.includes('3 labels: billing, bug, praise')")
        with served() as url:  # the app served again (a new process would build the same way)
            page.goto(url, wait_until="load")
            page.wait_for_function("() => document.querySelector('#app-dataset-message')?.innerText.includes('kept from its last visit')")
            assert value_of(page, "app-dataset") == "tickets (workspace)"
