"""Datasets tab and the app-wide dataset switch.

The tab reads an upload (one file, or one per split) or a Hub id / directory, shows a preview, the label counts per
split and how a single file is split, and saves it into the workspace (`reasonapp.dataset_import`); nothing is
written until Save, and a refused save writes nothing. The switch is the "Dataset" dropdown at the top of the page:
each page keeps its own choice (`gr.State`), and a change reaches the Overview, the Train tab's dataset field, the
Review tab's dataset filter and Stage 2 field, the Compare tab's gold labels and examples, and the Pipeline tab's YAML.
The browser remembers the choice (`gr.BrowserState`, in its localStorage): a reload, or the app served again, opens
on it through the same switch; another browser keeps its own.
"""

from __future__ import annotations

import hashlib

import gradio as gr
import pandas as pd

from reasonapp import dataset_import
from reasonapp.access import ADMIN
from reasonapp.data import DEFAULT_CLASSIFICATION_DATASET, ClassificationData, load_classification_dataset
from reasonapp.errors import ReasonappError
from reasonapp.ui.access import current_caller, current_policy
from reasonapp.ui.compare import example_texts, gold_choices
from reasonapp.ui.overview import dataset_line, dataset_table
from reasonapp.ui.train import dataset_after_switch, run_under_way
from training import launcher

UPLOAD_TYPES = list(dataset_import.UPLOAD_FORMATS)


def dataset_choices(app_dataset: str) -> list[tuple[str, str]]:
    """The switch's choices: the app's dataset, the default, then the workspace's imported datasets (by directory)."""
    values = [app_dataset, DEFAULT_CLASSIFICATION_DATASET, *map(str, dataset_import.workspace_datasets())]
    return dataset_import.display_choices(values)


def _listed(choice: str, app_dataset: str) -> bool:
    return choice in {value for _, value in dataset_choices(app_dataset)}


# -- the Datasets tab ---------------------------------------------------------------------------------


def _number(value, default: float) -> float:
    return default if value in (None, "") else float(value)


def _label_names(text: str | None) -> list[str] | None:
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    return names or None


def _raw(files, source):
    """The upload if there is one, else the Hub id or directory typed in."""
    paths = [getattr(f, "name", f) for f in files or []]
    if paths:
        return dataset_import.read_upload(paths)
    if (source or "").strip():
        return dataset_import.read_source(source)
    raise ReasonappError("Upload a file (CSV, JSONL, parquet), one per split, or type a Hub id or directory above.")


def counts_frame(plan: dataset_import.ImportPlan) -> pd.DataFrame:
    """Rows per label (one row each) and split (one column each), with a total row."""
    counts = plan.label_counts()
    rows = [[name, *(counts[split][name] for split in counts)] for name in plan.label_names]
    rows.append(["all labels", *(sum(counts[split].values()) for split in counts)])
    return pd.DataFrame(rows, columns=["label", *counts])


def inspect_dataset(files, source, text_column, label_column, label_names, validation_fraction, test_fraction, seed):
    """(text column, label column, preview, label counts, message): what Save would write, nothing written."""
    columns, preview = (gr.update(), gr.update()), pd.DataFrame()
    try:
        raw = _raw(files, source)
        columns = (
            gr.update(choices=raw.columns, value=text_column if text_column in raw.columns else raw.text_column),
            gr.update(choices=raw.columns, value=label_column if label_column in raw.columns else raw.label_column),
        )
        preview = raw.preview()
        plan = dataset_import.plan_import(
            raw,
            text_column if text_column in raw.columns else None,
            label_column if label_column in raw.columns else None,
            _label_names(label_names),
            _number(validation_fraction, dataset_import.DEFAULT_VALIDATION_FRACTION),
            _number(test_fraction, dataset_import.DEFAULT_TEST_FRACTION),
            int(_number(seed, 0)),
        )
    except ReasonappError as error:
        return *columns, preview, pd.DataFrame(), f"Not ready to save: {error}"
    kind = "integer ids" if plan.label_kind == "integer" else "names"
    message = f"{len(plan.label_names)} labels ({kind}): {', '.join(plan.label_names)}. {plan.split_note()} Name it and Save."
    return *columns, preview, counts_frame(plan), message


def read_dataset(files, source, label_names, validation_fraction, test_fraction, seed):
    """A new upload or source: its columns with the text and label columns guessed."""
    return inspect_dataset(files, source, None, None, label_names, validation_fraction, test_fraction, seed)


def suggested_name(files, source, typed: str | None, last_suggestion: str | None):
    """(name field, suggestion kept): the name follows the upload or source (`dataset_import.suggest_name`) unless the
    user typed one of their own, which is left alone."""
    if (typed or "").strip() and typed != last_suggestion:
        return gr.skip(), last_suggestion
    suggestion = dataset_import.suggest_name([getattr(f, "name", f) for f in files or []], source)
    return suggestion, suggestion


def save_dataset(files, source, text_column, label_column, label_names, validation_fraction, test_fraction, seed, name, home_dataset):
    """(message, the app's Dataset dropdown): saved under <workspace>/datasets/<name> and selected, or refused, writing nothing.

    `home_dataset` is the one the app opened on (first in the dropdown's choices)."""
    try:
        dataset_import.check_name(name)
        raw = _raw(files, source)
        plan = dataset_import.plan_import(
            raw, text_column or None, label_column or None, _label_names(label_names),
            _number(validation_fraction, dataset_import.DEFAULT_VALIDATION_FRACTION),
            _number(test_fraction, dataset_import.DEFAULT_TEST_FRACTION), int(_number(seed, 0)),
        )
        saved = dataset_import.save_import(plan, name)
    except ReasonappError as error:
        return f"Not saved: {error}", gr.skip()
    message = f"Saved {saved.name} to {saved}. {plan.split_note()} It is now the app's dataset."
    return message, gr.update(choices=dataset_choices(home_dataset), value=str(saved))


def build_datasets_tab(app_dataset_dropdown: gr.Dropdown, home_dataset: str) -> None:
    """The tab; a saved dataset is added to `app_dataset_dropdown` and selected there (which switches the page)."""
    gr.Markdown(
        "Bring your own classification data: **upload** one file (CSV, JSONL or parquet; it is split into train, validation "
        "and test by label with a seed) or one file per split named `train`, `validation`, `test`; or type a **Hub id** or a "
        "**directory** of split files. Check the preview and the label counts, choose the text and label columns, name it, "
        f"Save: it goes to `{dataset_import.datasets_root()}/<name>` and becomes the app's dataset. Files over "
        f"{dataset_import.max_file_bytes() / 1e6:g} MB are refused (REASONAPP_MAX_UPLOAD_MB)."
    )
    with gr.Row():
        files = gr.File(label="Upload", file_count="multiple", file_types=UPLOAD_TYPES, elem_id="dataset-files", scale=2)
        with gr.Column(scale=2):
            source = gr.Textbox(label="…or a Hub id or directory", max_lines=1, placeholder="dair-ai/emotion or /path/to/dir", elem_id="dataset-source")
            read = gr.Button("Read", elem_id="dataset-read")
    with gr.Row():
        text_column = gr.Dropdown([], label="Text column", elem_id="dataset-text-column")
        label_column = gr.Dropdown([], label="Label column", elem_id="dataset-label-column")
        label_names = gr.Textbox(
            label="Label names (optional)", max_lines=1, elem_id="dataset-label-names",
            info="comma-separated, in id order for integer labels (0, 1, …); empty: the labels name themselves",
        )
    with gr.Row():
        validation_fraction = gr.Number(dataset_import.DEFAULT_VALIDATION_FRACTION, label="Validation share (one file)", minimum=0, maximum=0.89, elem_id="dataset-validation-fraction")
        test_fraction = gr.Number(dataset_import.DEFAULT_TEST_FRACTION, label="Test share (one file)", minimum=0, maximum=0.89, elem_id="dataset-test-fraction")
        seed = gr.Number(0, label="Split seed", precision=0, elem_id="dataset-seed")
    with gr.Row():
        name = gr.Textbox(label="Name", max_lines=1, max_length=dataset_import.MAX_NAME_CHARS, elem_id="dataset-name",
                          info="letters, digits, '.', '_' and '-'; a name in use is refused")
        save = gr.Button("Save", variant="primary", elem_id="dataset-save")
    message = gr.Textbox(label="Message", interactive=False, lines=2, elem_id="dataset-message")
    preview = gr.Dataframe(label="Preview (first rows)", interactive=False, wrap=True, elem_id="dataset-preview")
    counts = gr.Dataframe(label="Label counts per split (as it would be saved)", interactive=False, elem_id="dataset-label-counts")

    settings = [label_names, validation_fraction, test_fraction, seed]
    shown = [text_column, label_column, preview, counts, message]
    suggestion = gr.State("")  # the name last suggested: replaced by the next one, unlike a name the user typed
    for event in (files.change, read.click, source.submit):
        event(read_dataset, [files, source, *settings], shown, api_visibility="private")
        event(suggested_name, [files, source, name, suggestion], [name, suggestion], api_visibility="private")
    chosen = [files, source, text_column, label_column, *settings]
    for component in (text_column, label_column):
        component.input(inspect_dataset, chosen, shown, api_visibility="private")
    for component in settings:  # typed values: read when the field is left or Enter pressed
        component.submit(inspect_dataset, chosen, shown, api_visibility="private")
        component.blur(inspect_dataset, chosen, shown, api_visibility="private")
    save.click(save_dataset, [*chosen, name, gr.State(home_dataset)], [message, app_dataset_dropdown], api_visibility="private")


# -- the app-wide switch ------------------------------------------------------------------------------


def remembered_dataset() -> gr.BrowserState:
    """Where a browser keeps its dataset choice: one key per workspace (two workspaces served on one address keep
    their own). The "secret" only scrambles the stored value (the browser holds it); it is fixed so that the choice
    outlives a restart of the app. A restored value is checked like any switch, so a forged one gains nothing."""
    from reasonapp import settings

    key = "reasonapp-dataset-" + hashlib.sha256(str(settings.workspace_dir().resolve()).encode()).hexdigest()[:12]
    return gr.BrowserState(None, storage_key=key, secret=key)


class DatasetSwitch:
    """Switches one page to another dataset: loads it, then updates every tab that shows or defaults to it."""

    def __init__(self, review_handlers):
        self.review = review_handlers  # the Review tab's: the store's datasets, the dataset the app opened on

    def load(self, choice: str) -> ClassificationData:
        """The dataset `choice` names; anyone may pick a listed one, an admin also any Hub id or directory."""
        if not _listed(choice, self.review.app_dataset) and current_policy().role(current_caller()) != ADMIN:
            raise ReasonappError(f"{choice[:200]!r} is not offered here: pick a dataset from the list (others are an admin's to open)")
        return load_classification_dataset(choice)

    def switch(self, choice: str | None, current: str, task: str | None, train_dataset: str | None, review_store: str | None = None):
        """(this page's dataset, what the browser remembers, dropdown, message, overview line, overview table, Train
        dataset, Review dataset filter, Stage 2 dataset, Compare gold labels, Compare examples); a bad choice keeps the
        current dataset. The Review filter lists the datasets of the store the page reviews (`review_store`)."""
        choice = (choice or "").strip()
        unchanged = (gr.skip(),) * 7
        if not choice or choice == current:
            return current, gr.skip(), gr.skip(), gr.skip(), *unchanged
        try:
            data = self.load(choice)
        except ReasonappError as error:
            return current, gr.skip(), gr.update(value=current), f"Kept {dataset_import.display_name(current)}: {error}", *unchanged
        held = self.review.dataset_choices(review_store)
        message = f"Dataset: {dataset_import.display_name(choice)}, {len(data.label_names)} labels: {', '.join(data.label_names)}."
        table = pd.DataFrame(dataset_table(data), columns=["split", "rows", *data.label_names])  # the columns are the new labels
        return (
            choice,
            choice,
            gr.skip(),
            message,
            dataset_line(data),
            table,
            dataset_after_switch(task, choice, train_dataset),
            gr.update(choices=dataset_import.display_choices([choice, *held]), value=choice),
            choice,
            gr.update(choices=gold_choices(data.label_names), value="all"),
            gr.update(samples=[[text] for text in example_texts(data)]),
        )

    def restore(self, remembered: str | None, current: str, task: str | None, train_dataset: str | None, review_store: str | None = None):
        """Page load: the dataset this browser chose last time, through `switch` (the same outputs); the dropdown lists the
        workspace's datasets as they are now. One that no longer loads (deleted, or not offered to this caller) is
        forgotten, and the page stays on the app's dataset saying why. While a training run or a Stage 2 job is under
        way, its tab's dataset field is left to that tab's reattach (the job's own settings)."""
        listed = dataset_choices(self.review.app_dataset)
        remembered = (remembered or "").strip()
        if not remembered or remembered == current:
            return current, gr.skip(), gr.update(choices=listed), gr.skip(), *(gr.skip(),) * 7
        switched = self.switch(remembered, current, task, train_dataset, review_store)
        if switched[0] != remembered:  # refused: `switch` said why after "Kept <current>: "
            reason = switched[3].removeprefix(f"Kept {dataset_import.display_name(current)}: ")
            message = f"The dataset this browser chose last time does not load now ({reason}): back on {dataset_import.display_name(current)}."
            return current, current, gr.update(choices=listed, value=current), message, *switched[4:]
        tabs = list(switched[4:])  # overview line and table, Train dataset, Review filter, Stage 2 dataset, Compare gold, examples
        # a job under way is reattached by its own tab with the settings it runs on: its field is left to that tab
        if run_under_way():
            tabs[2] = gr.skip()
        if any(launcher.stage2_state(job)["state"] == "running" for job in launcher.stage2_jobs()):
            tabs[4] = gr.skip()
        return (switched[0], switched[1], gr.update(choices=listed, value=remembered),
                f"{switched[3]} (this browser's choice, kept from its last visit)", *tabs)


def wire_dataset_switch(
    switch: DatasetSwitch, dropdown: gr.Dropdown, state: gr.State, remembered: gr.BrowserState, message, task, train_dataset, outputs: list,
    blocks: gr.Blocks, review_store: gr.Dropdown,
) -> None:
    """A pick switches the page and the browser remembers it; a page load restores it. `outputs`: overview line,
    overview table, Train dataset, Review dataset, Stage 2 dataset, Compare gold, Compare examples."""
    targets = [state, remembered, dropdown, message, *outputs]
    inputs = [state, task, train_dataset, review_store]
    dropdown.change(switch.switch, [dropdown, *inputs], targets, api_visibility="private")
    blocks.load(switch.restore, [remembered, *inputs], targets, api_visibility="private")
