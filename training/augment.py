"""Stage 2: an R-Gen run writes a reasoning for every (text, label) of a classification split.

`generate_reasonings` is the shared core; `write_augmented_dataset` writes what the qra/qar training
tasks read: a directory with `train.jsonl` (text, label name, reasoning, provenance), `labels.json`
(label order) and `provenance.json` (source dataset, generator, prompt version, decoding).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from reasonapp import prompts
from reasonapp.errors import RunDirError
from training import rundir
from training.generation import Decoding, ProgressCallback, generate

PROVENANCE = "provenance.json"
REASONING_DECODING = Decoding(max_new_tokens=64)  # real reasonings are ~15-40 tokens


def load_rgen(run_dir: str | Path, device: str | None = None):
    """(model, tokenizer, config) of an R-Gen run, its adapter on the base model."""
    from reasonapp.models import load_with_adapters

    run_dir = Path(run_dir)
    config = rundir.read_config(run_dir)
    if config.get("task") != "rgen":
        raise RunDirError(f"{run_dir} is a {config.get('task')} run, not an R-Gen (rgen) run")
    adapter = run_dir / rundir.ADAPTER
    model, tokenizer = load_with_adapters(config["base_model"], {"rgen": adapter}, device)
    return model, tokenizer, config


def generate_reasonings(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[str],
    label_space: prompts.LabelSpace,
    decoding: Decoding = REASONING_DECODING,
    batch_size: int = 16,
    progress: ProgressCallback | None = None,
) -> list[str]:
    """One reasoning per (text, label): R-Gen explains why the gold label answers the text."""
    conversations = [
        prompts.rgen_messages(prompts.rgen_question(text, label_space), label) for text, label in zip(texts, labels, strict=True)
    ]
    return generate(model, tokenizer, conversations, decoding, batch_size, progress)


def write_augmented_dataset(
    out_dir: str | Path,
    texts: Sequence[str],
    labels: Sequence[str],
    reasonings: Sequence[str],
    label_names: Sequence[str],
    provenance: dict,
    extra_columns: dict[str, Sequence] | None = None,
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra_columns = extra_columns or {}
    with open(out / "train.jsonl.tmp", "w", encoding="utf-8") as handle:
        for i, (text, label, reasoning) in enumerate(zip(texts, labels, reasonings, strict=True)):
            row = {"text": text, "label": label, "reasoning": reasoning}
            row.update({name: values[i] for name, values in extra_columns.items()})
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "train.jsonl.tmp").replace(out / "train.jsonl")
    (out / "labels.json").write_text(json.dumps(list(label_names)))
    rundir.write_json(out / PROVENANCE, provenance)
    return out


def read_provenance(dataset_dir: str | Path) -> dict:
    return rundir.read_json(Path(dataset_dir) / PROVENANCE, {}) if Path(dataset_dir).is_dir() else {}


def augment_split(
    rgen_run: str | Path,
    source_dataset: str,
    out_dir: str | Path,
    limit: int | None,
    seed: int,
    split: str = "train",
    decoding: Decoding = REASONING_DECODING,
    batch_size: int = 16,
    progress: ProgressCallback | None = None,
) -> Path:
    """The plain batched Stage 2 pass: sample rows, generate reasonings, write the augmented dataset."""
    from reasonapp import data

    loaded = data.load_classification_dataset(source_dataset)
    rows = data.sample_rows(loaded.splits[split], limit, seed)
    label_space = prompts.LabelSpace(tuple(loaded.label_names), loaded.task_description)
    labels = [loaded.label_names[i] for i in rows["label"]]
    model, tokenizer, rgen_config = load_rgen(rgen_run)
    texts = list(rows["text"])
    reasonings = generate_reasonings(model, tokenizer, texts, labels, label_space, decoding, batch_size, progress)
    empty = [i for i, reasoning in enumerate(reasonings) if not reasoning.strip()]
    if empty:  # one more try with sampling; rows still empty are dropped and counted, never trained on
        retry = dataclasses.replace(decoding, do_sample=True)
        again = generate_reasonings(model, tokenizer, [texts[i] for i in empty], [labels[i] for i in empty], label_space, retry, batch_size)
        for i, reasoning in zip(empty, again, strict=True):
            reasonings[i] = reasoning
    keep = [i for i, reasoning in enumerate(reasonings) if reasoning.strip()]
    provenance = {
        "source_dataset": source_dataset,
        "split": split,
        "limit": limit,
        "seed": seed,
        "generator": {
            "rgen_run": str(rgen_run),
            "base_model": rgen_config["base_model"],
            "prompt_version": prompts.PROMPT_VERSION,
            "decoding": dataclasses.asdict(decoding),
        },
        "review": "none (plain batched pass)",
        "rows": len(keep),
        "dropped_empty_reasoning": len(reasonings) - len(keep),
    }
    return write_augmented_dataset(
        out_dir, [texts[i] for i in keep], [labels[i] for i in keep], [reasonings[i] for i in keep], loaded.label_names, provenance
    )
