"""The reasonapp Gradio Blocks app: one tab per concern, each built by its own module."""

from __future__ import annotations

import os
from pathlib import Path

import gradio as gr

from reasonapp.data import DEFAULT_CLASSIFICATION_DATASET, load_classification_dataset
from reasonapp.models import DEFAULT_BASE_MODEL
from reasonapp.ui.access import enforce_access, who_is_here
from reasonapp.ui.compare import CompareHandlers, build_compare_tab, example_texts
from reasonapp.ui.datasets import (
    DatasetSwitch,
    build_datasets_tab,
    dataset_choices,
    remembered_dataset,
    wire_dataset_switch,
)
from reasonapp.ui.errors import guard_handlers
from reasonapp.ui.overview import build_overview_tab
from reasonapp.ui.pipeline import build_pipeline_tab
from reasonapp.ui.review import SHORTCUT_SCRIPT, ReviewHandlers, build_review_tab
from reasonapp.ui.train import build_train_tab


def demo_mode() -> bool:
    """`REASONAPP_DEMO=1` (for free CPU Spaces): review and predictions stay, starting training is off."""
    return os.environ.get("REASONAPP_DEMO", "0").lower() in {"1", "true", "yes"}


def build_app(
    dataset: str = DEFAULT_CLASSIFICATION_DATASET,
    base_model: str = DEFAULT_BASE_MODEL,
    store_path: str | None = None,
    demo: bool | None = None,
    notice: str | None = None,
    sync=None,
    log_decisions: bool = True,
    load_compare_runs_at_start: bool = False,
) -> gr.Blocks:
    """The app, opening on `dataset` (each page may switch to another); `notice` is a line under the title (e.g. that
    the demo is open). `load_compare_runs_at_start`: the Compare tab's preselected runs load while the server starts
    (the served app; off where apps are only built, as in tests)."""
    data = load_classification_dataset(dataset)
    demo = demo_mode() if demo is None else demo
    review = ReviewHandlers(
        store_path or os.environ.get("REASONAPP_STORE"), data.label_names, data.task_description, dataset, sync, log_decisions=log_decisions
    )
    on_space = bool(os.environ.get("SPACE_ID"))
    with gr.Blocks(title="reasonapp") as blocks:
        with gr.Row():
            gr.Markdown("# reasonapp — reasoning-infused classification workbench")
            if on_space:  # Sign in with Hugging Face: who reviews, and whose token a push uses
                gr.LoginButton(scale=0)
        identity = gr.Markdown(elem_id="app-identity")
        blocks.load(who_is_here, None, identity, api_visibility="private")
        if notice:
            gr.Markdown(notice, elem_id="app-notice")
        app_dataset = gr.State(dataset)  # this page's dataset: a switch here does not switch anyone else's page
        remembered = remembered_dataset()  # ...and this browser's, restored when the page (re)loads
        with gr.Row():
            chosen = gr.Dropdown(
                dataset_choices(dataset), value=dataset, label="Dataset", allow_custom_value=True, scale=2, elem_id="app-dataset",
                info="the whole app works on it: Overview, Train's default, the review queue, Compare's labels, the Pipeline; this browser remembers it",
            )
            switch_message = gr.Markdown(elem_id="app-dataset-message")
        with gr.Tabs():
            with gr.Tab("Overview", id="overview"):
                overview = build_overview_tab(data, base_model)
            with gr.Tab("Datasets", id="datasets"):
                build_datasets_tab(chosen, dataset)
            with gr.Tab("Train", id="train"):
                task, train_dataset = build_train_tab(base_model, demo_mode=demo, app_dataset=dataset, app_dataset_state=app_dataset)
            with gr.Tab("Review", id="review"):
                review_dataset, stage2_dataset, review_store = build_review_tab(review, blocks, signed_in_names=on_space, page_dataset=app_dataset)
            with gr.Tab("Compare", id="compare"):
                compare = build_compare_tab(
                    CompareHandlers({dataset: data.label_names}), data.label_names, example_texts(data), blocks,
                    load_at_start=load_compare_runs_at_start, page_dataset=app_dataset,
                )
            with gr.Tab("Pipeline", id="pipeline"):
                build_pipeline_tab(blocks, base_model, demo_mode=demo, app_dataset=dataset, app_dataset_state=app_dataset)
        switch = DatasetSwitch(review)
        wire_dataset_switch(
            switch, chosen, app_dataset, remembered, switch_message, task, train_dataset,
            [*overview, train_dataset, review_dataset, stage2_dataset, *compare], blocks, review_store,
        )
    guard_handlers(blocks)  # after every tab: no handler shows a bare "Error"
    enforce_access(blocks)  # and none runs for a caller whose role does not allow it (REASONAPP_ADMINS / _REVIEWERS)
    return blocks


def launch_settings() -> dict:
    """What `launch()` needs besides the address: the keyboard-shortcut script (Gradio 6 takes it here)."""
    return {"head": SHORTCUT_SCRIPT}


def open_demo_if_empty() -> tuple[str | None, str | None]:
    """(store, notice): on a workspace with nothing of its own, or with REASONAPP_DEMO=1, install the shipped demo
    (two small runs and a store of real generated reasonings) so there is something to try at once."""
    from training.demo import DEMO_ASSETS, demo_available, install_demo, workspace_is_empty

    if os.environ.get("REASONAPP_STORE") or not demo_available() or not (demo_mode() or workspace_is_empty()):
        return None, None
    from reasonapp.store import default_store_path

    demo_store = install_demo()
    store = None if default_store_path().exists() else str(demo_store)
    notice = (
        "**Demo open**: the Compare tab has two small demo runs (`demo-qa`, `demo-qra`) and the Review tab a queue of "
        f"real generated reasonings (`{DEMO_ASSETS.relative_to(DEMO_ASSETS.parents[1])}`, see its README). "
        "Your own runs and review store appear beside them as you make them."
    )
    return store, notice


def start_decision_sync(store_path: str | None):
    """(sync, note): with REASONAPP_SYNC_REPO, pull the decision log, replay what the store lacks, and sync from now on."""
    repo = os.environ.get("REASONAPP_SYNC_REPO")
    if not repo:
        return None, None
    import time

    from reasonapp.journal import journal_dir
    from reasonapp.store import default_store_path
    from training.hub import DecisionSync, HubError

    store = store_path or os.environ.get("REASONAPP_STORE")
    sync = DecisionSync(repo, journal_dir(), token=os.environ.get("HF_TOKEN"))
    try:
        restored = sync.restore(store)
    except HubError as error:
        if not Path(store or default_store_path()).is_file():  # a new disk: reviewing now would contradict the log
            raise SystemExit(
                f"error: {error}. The workspace has no review store of its own, so the app does not start without the decision "
                f"log: its decisions would contradict the logged ones. Start it again once {repo} can be reached."
            ) from None
        sync.start()
        return sync, (
            f"Decision log: {error}. This disk's review store is used as it is; new decisions are logged here and synced "
            "once the Hub answers (retried every round)."
        )
    sync.start()
    if restored["note"]:
        return sync, f"Decision log: {restored['note']}."
    newest = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(restored["newest"])) if restored["newest"] else "none"
    note = (
        f"Decision log: {restored['events']} logged changes (on this disk and in {repo}), {restored['applied']} restored into this store "
        f"(newest logged change: {newest}). Changes made after the last sync of a process that was killed are not in the log."
    )
    return sync, note


def main() -> None:
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a Space stops the app with SIGTERM: exit through atexit, which syncs
    sync, restored = start_decision_sync(None)  # first: restored review work makes the workspace the user's own again
    store, notice = open_demo_if_empty()
    if restored:
        print(restored, flush=True)
    demo = build_app(
        dataset=os.environ.get("REASONAPP_DATASET", DEFAULT_CLASSIFICATION_DATASET),
        base_model=os.environ.get("REASONAPP_BASE_MODEL", DEFAULT_BASE_MODEL),
        store_path=store,
        notice="\n\n".join(line for line in (notice, restored) if line) or None,
        sync=sync,
        log_decisions=store is None,  # the demo store's decisions are not synced into the user's own store
        load_compare_runs_at_start=True,
    )
    demo.queue(default_concurrency_limit=2).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_settings(),
    )
