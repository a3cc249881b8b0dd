"""Overview tab: what the app is working with (dataset, labels, base model), found offline or on the Hub."""

from __future__ import annotations

import gradio as gr

from reasonapp.data import ClassificationData
from reasonapp.dataset_import import display_name
from reasonapp.models import resolve_base_model


def dataset_table(data: ClassificationData) -> list[list]:
    rows = []
    for split in data.splits:
        counts = data.label_counts(split)
        rows.append([split, len(data.splits[split]), *counts.values()])
    return rows


def dataset_line(data: ClassificationData) -> str:
    """The dataset, where it was read from, and its task (the app-wide switch replaces it)."""
    return f"**Dataset:** `{display_name(data.source)}` (from `{data.origin}`)  \n**Task:** {data.task_description}"


def build_overview_tab(data: ClassificationData, base_model: str) -> tuple[gr.Markdown, gr.Dataframe]:
    """The tab; returns (dataset line, splits table) for the app-wide dataset switch."""
    resolved = resolve_base_model(base_model)
    gr.Markdown(
        "Two-stage reasoning-infused classification ([arXiv 2507.00214](https://arxiv.org/abs/2507.00214)): "
        "an R-Gen model writes a reasoning for every training example, people review it, and a classifier "
        "learns text → reasoning → label (Q→RA) beside the plain text → label (Q→A)."
    )
    gr.Markdown(f"**Base model:** `{base_model}` (loaded from `{resolved}`)")
    line = gr.Markdown(dataset_line(data), elem_id="overview-dataset")
    table = gr.Dataframe(
        value=dataset_table(data),
        headers=["split", "rows", *data.label_names],
        label="Splits and label counts",
        interactive=False,
        elem_id="overview-splits",
    )
    return line, table
