"""The reasonapp Gradio Blocks app: one tab per concern, each built by its own module."""

from __future__ import annotations

import os

import gradio as gr

from reasonapp.data import DEFAULT_CLASSIFICATION_DATASET, load_classification_dataset
from reasonapp.models import DEFAULT_BASE_MODEL
from reasonapp.ui.compare import CompareHandlers, build_compare_tab
from reasonapp.ui.errors import guard_handlers
from reasonapp.ui.overview import build_overview_tab
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
) -> gr.Blocks:
    data = load_classification_dataset(dataset)
    demo = demo_mode() if demo is None else demo
    review = ReviewHandlers(store_path or os.environ.get("REASONAPP_STORE"), data.label_names, data.task_description, dataset)
    with gr.Blocks(title="reasonapp") as blocks:
        with gr.Row():
            gr.Markdown("# reasonapp — reasoning-infused classification workbench")
            if os.environ.get("SPACE_ID"):  # on a Space: HF OAuth login, whose token the Push button uses
                gr.LoginButton(scale=0)
        with gr.Tabs():
            with gr.Tab("Overview", id="overview"):
                build_overview_tab(data, base_model)
            with gr.Tab("Train", id="train"):
                build_train_tab(base_model, demo_mode=demo)
            with gr.Tab("Review", id="review"):
                build_review_tab(review, blocks)
            with gr.Tab("Compare", id="compare"):
                build_compare_tab(CompareHandlers(), data.label_names)
    guard_handlers(blocks)  # after every tab: no handler shows a bare "Error"
    return blocks


def launch_settings() -> dict:
    """What `launch()` needs besides the address: the keyboard-shortcut script (Gradio 6 takes it here)."""
    return {"head": SHORTCUT_SCRIPT}


def main() -> None:
    demo = build_app(
        dataset=os.environ.get("REASONAPP_DATASET", DEFAULT_CLASSIFICATION_DATASET),
        base_model=os.environ.get("REASONAPP_BASE_MODEL", DEFAULT_BASE_MODEL),
    )
    demo.queue(default_concurrency_limit=2).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_settings(),
    )
