"""Stage 2: an R-Gen run writes a reasoning for every (text, label) of a classification split.

`generate_reasonings` is the shared core; `augment_to_store` runs it over a split into the review
store, and `export_store` writes what the qra/qar training tasks read: a directory with `train.jsonl`
and `train.parquet` (text, label name, reasoning, provenance columns), `labels.json` (label order)
and `provenance.json` (source dataset, review counts, prompt version).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

from reasonapp import prompts
from reasonapp.errors import ConfigError, RunDirError
from training import rundir
from training.generation import Decoding, ProgressCallback, generate, generate_as_finished, in_input_order
from training.teacher import TeacherConfig

PROVENANCE = "provenance.json"
REASONING_DECODING = Decoding(max_new_tokens=64)  # real reasonings are ~15-40 tokens


BASE_PREFIX = "base:"  # `--rgen-run base:<model>`: the instruct model itself as R-Gen, without Stage 1


def rgen_config(run_dir: str | Path) -> dict:
    """What an R-Gen source is, checked without loading it: a finished run's config, or `base:<model>` (no Stage 1)."""
    if str(run_dir).startswith(BASE_PREFIX):
        return {"task": "rgen", "base_model": str(run_dir)[len(BASE_PREFIX) :], "stage1": False}
    config = rundir.read_config(Path(run_dir))
    if config.get("task") != "rgen":
        raise RunDirError(f"{run_dir} is a {config.get('task')} run, not an R-Gen (rgen) run")
    return {**config, "stage1": True}


def load_rgen(run_dir: str | Path, device: str | None = None):
    """(model, tokenizer, config) of an R-Gen run, its adapter merged into float32 weights; or a bare base model."""
    from reasonapp.models import (
        load_base_model,
        load_with_adapters,
        merges_are_exact,
        pack_onednn_weights,
        use_onednn_linears,
    )

    config = rgen_config(run_dir)
    if not config["stage1"]:
        model, tokenizer = load_base_model(config["base_model"], device)
    else:
        model, tokenizer = load_with_adapters(config["base_model"], {"rgen": Path(run_dir) / rundir.ADAPTER}, device)
        # R-Gen only generates: folding the adapter into float32 weights once saves PEFT's per-layer LoRA work
        # at every decoding step (~50 ms a step on this CPU). bfloat16 weights (a GPU) would round it away.
        model = model.merge_and_unload() if merges_are_exact(model) else model
    use_onednn_linears(model)  # decoding steps 22-35% faster on the CPU (README)
    pack_onednn_weights(model)  # and its weights never change again: Stage 2 +4-11% more (README)
    return model, tokenizer, config


def generate_reasonings(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[str],
    label_space: prompts.LabelSpace,
    decoding: Decoding = REASONING_DECODING,
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
    prompt_variant: str = "default",
    candidates: int = 1,
) -> list[str]:
    """One reasoning per (text, label): R-Gen explains why the gold label answers the text.

    With `candidates` > 1, that many are sampled per row and the one with the fewest quality flags
    is kept (ties: the one sharing most words with the text, then the first).
    """
    finished = reasonings_as_finished(model, tokenizer, texts, labels, label_space, decoding, batch_size, prompt_variant, candidates)
    return in_input_order(finished, len(texts), batch_size, progress)


def reasonings_as_finished(
    model,
    tokenizer,
    texts: Sequence[str],
    labels: Sequence[str],
    label_space: prompts.LabelSpace,
    decoding: Decoding = REASONING_DECODING,
    batch_size: int = 32,
    prompt_variant: str = "default",
    candidates: int = 1,
) -> Iterator[tuple[int, str]]:
    """`generate_reasonings`' reasonings as (row, reasoning), each as soon as it is written: greedy rows as they
    finish decoding (new rows join the batch meanwhile), sampled candidates a group of rows at a time."""
    conversations = [
        prompts.stage2_messages(text, label, label_space, prompt_variant) for text, label in zip(texts, labels, strict=True)
    ]
    if candidates <= 1:
        yield from generate_as_finished(model, tokenizer, conversations, decoding, batch_size)
        return
    sampling = dataclasses.replace(decoding, do_sample=True)
    group = max(1, batch_size * 4 // candidates)
    for start in range(0, len(conversations), group):
        rows = range(start, min(start + group, len(conversations)))
        pool = generate(model, tokenizer, [conversations[i] for i in rows for _ in range(candidates)], sampling, batch_size)
        for k, i in enumerate(rows):
            yield i, best_candidate(pool[k * candidates : (k + 1) * candidates], texts[i], labels[i], label_space.names)


def best_candidate(options: Sequence[str], text: str, label: str, label_names: Sequence[str]) -> str:
    """The option the quality signals like best: fewest flags, then most words shared with the text."""
    from reasonapp.quality import content_words, quality_flags

    def rank(item):
        index, option = item
        return (len(quality_flags(option, text, label, label_names)), -len(content_words(option) & content_words(text)), index)

    return min(enumerate(options), key=rank)[1]


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


DATASET_FILES = ("train.jsonl", "train.parquet", "train.csv", "dataset_dict.json", "dataset_info.json")


def is_export(directory: Path) -> bool:
    """A directory `export` wrote (its provenance names the store it came from)."""
    return "store" in read_provenance(directory)


def latest_export() -> str | None:
    """The workspace's newest export (what a Q->RA run trains on next), or None."""
    from reasonapp import settings

    exports = [path for path in (settings.workspace_dir() / "exports").glob("*/" + PROVENANCE) if is_export(path.parent)]
    return str(max(exports, key=lambda path: path.stat().st_mtime).parent) if exports else None


def runs_trained_on(dataset_dir: Path) -> list[str]:
    """Runs in the workspace whose training data is this directory (their results depend on it staying as it is)."""
    from reasonapp import settings

    target = dataset_dir.resolve()
    found = []
    for config_path in settings.workspace_dir().rglob(rundir.CONFIG):
        config = rundir.read_json(config_path, {})
        dataset = config.get("dataset") if isinstance(config, dict) and config.get("task") else None
        if isinstance(dataset, str) and dataset and Path(dataset).expanduser().resolve() == target:
            found.append(str(config_path.parent))
    return found


EXPORT_NAME_CHARS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_EXPORT_NAME = 100


def workspace_export_dir(name: str) -> Path:
    """`<workspace>/exports/<name>`: where the app exports, by a plain name (never a path the caller chose)."""
    from reasonapp import settings

    name = (name or "").strip()
    if not name:
        raise RunDirError("give the export a name (letters, digits, '.', '_' or '-')")
    if "\x00" in name:
        raise RunDirError("the export name contains a NUL byte; use letters, digits, '.', '_' or '-'")
    if len(name) > MAX_EXPORT_NAME:
        raise RunDirError(f"the export name is {len(name):,} characters; names are at most {MAX_EXPORT_NAME}")
    if "/" in name or "\\" in name or ".." in name:
        raise RunDirError(f"{name!r} is a path; exports from the app go under the workspace by name only (e.g. reviewed-v2)")
    if not EXPORT_NAME_CHARS.fullmatch(name):
        raise RunDirError(f"{name!r} is not a valid export name: use letters, digits, '.', '_' or '-', starting with a letter or digit")
    return settings.workspace_dir() / "exports" / name


def check_export_target(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Refuse an export target that would lose something; returns the resolved directory.

    Never a file, a run directory or a source dataset; a non-empty directory only with `overwrite`,
    and then only an earlier export that no run was trained on.
    """
    out = Path(out_dir).expanduser()
    if "\x00" in str(out):
        raise RunDirError("the export directory name contains a NUL byte")
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out} is a file, not a directory: name a directory for the export")
    if not out.is_dir() or not any(out.iterdir()):
        return out
    if (out / rundir.CONFIG).is_file() or (out / rundir.STATUS).is_file():
        raise RunDirError(f"{out} is a run directory; an export never writes into a run. Choose another --out")
    if not is_export(out):
        kind = "a dataset" if any((out / name).exists() for name in DATASET_FILES) else "files that are not an export"
        raise RunDirError(f"{out} holds {kind}; an export never writes over it. Choose an empty or new --out")
    if not overwrite:
        raise RunDirError(f"{out} already holds an export; pass --overwrite to replace it, or choose another --out")
    trained = runs_trained_on(out)
    if trained:
        raise RunDirError(f"{out} is the training data of {', '.join(trained)}; replacing it would misdescribe those runs. Choose another --out")
    return out


def read_provenance(dataset_dir: str | Path) -> dict:
    return rundir.read_json(Path(dataset_dir) / PROVENANCE, {}) if Path(dataset_dir).is_dir() else {}


# ---------------------------------------------------------------------------------------------
# Stage 2 into the review store, and export of reviewed rows


def augment_to_store(
    rgen_run: str | Path | TeacherConfig,
    source_dataset: str,
    store_path: str | Path | None = None,
    split: str = "train",
    limit: int | None = None,
    seed: int = 0,
    decoding: Decoding = REASONING_DECODING,
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
    prompt_variant: str = "default",
    candidates: int = 1,
    planned: Callable[[int, int], None] | None = None,
) -> dict:
    """Write a reasoning for every sampled row into the store, batch by batch.

    `planned(rows, skipped)` is told, before any generation, how many rows the sample holds and how many of
    them already had a reasoning (a resumed job's progress starts there).

    `rgen_run` is an R-Gen run directory, `base:<model>`, or a `TeacherConfig`: a model behind an
    OpenAI-compatible endpoint (`training.teacher`), asked row by row with requests in flight concurrently,
    each reasoning written as it returns and each row that keeps failing recorded with the reason.
    Safe to kill and re-run: rows that already have a reasoning are skipped (failed ones are tried again),
    and reviewed rows are never touched. Returns counts of what was done.
    """
    from reasonapp import data
    from reasonapp.store import ReasoningStore

    teacher = rgen_run if isinstance(rgen_run, TeacherConfig) else None
    if teacher is not None:
        teacher.api_key()  # a key variable named but unset is an error before the store gains rows
    else:
        rgen_config(rgen_run)  # a wrong R-Gen run is an error before the store gains rows it cannot fill
    if prompt_variant not in prompts.STAGE2_PROMPTS:
        raise ConfigError(f"unknown Stage 2 prompt {prompt_variant!r}; choose one of {sorted(prompts.STAGE2_PROMPTS)}")
    if batch_size < 1 or candidates < 1:
        raise ConfigError(f"batch_size and candidates must be at least 1, got {batch_size} and {candidates}")
    loaded = data.load_classification_dataset(source_dataset)
    if split not in loaded.splits:
        raise RunDirError(f"{source_dataset} has no split {split!r}")
    split_rows = loaded.splits[split].add_column("row_index", list(range(len(loaded.splits[split]))))
    rows = data.sample_rows(split_rows, limit, seed)
    store = ReasoningStore(store_path)
    store.add_examples(
        source_dataset,
        split,
        zip(rows["row_index"], rows["text"], (loaded.label_names[i] for i in rows["label"]), strict=True),
        loaded.label_names,
    )
    todo = store.ids_needing_reasoning(source_dataset, split, rows["row_index"])
    skipped = len(rows) - len(todo)
    if planned:
        planned(len(rows), skipped)
    if not todo:
        return {"generated": 0, "skipped": skipped, "store": str(store.path)}

    label_space = prompts.LabelSpace(tuple(loaded.label_names), loaded.task_description)
    if teacher is not None:
        from training.teacher import fill_store

        try:
            counts = fill_store(teacher, store, todo, label_space, decoding, prompt_variant, candidates, progress)
            templates = store.mark_templates()
        finally:
            store.close()
        return {**counts, "skipped": skipped, "store": str(store.path), "template_rows": templates}

    model, tokenizer, source_config = load_rgen(rgen_run)
    generator = {
        "rgen_run": str(rgen_run),
        "base_model": source_config["base_model"],
        "stage1": source_config["stage1"],
        "prompt_version": prompts.PROMPT_VERSION,
        "prompt_variant": prompt_variant,
        "candidates": candidates,
        "selection": "fewest quality flags" if candidates > 1 else None,
        "decoding": dataclasses.asdict(decoding),
    }
    stored = [store.get(row_id) for row_id in todo]
    finished = reasonings_as_finished(
        model, tokenizer, [r.text for r in stored], [r.label for r in stored], label_space, decoding, batch_size,
        prompt_variant=prompt_variant, candidates=candidates,
    )
    generated, done, written = 0, 0, []
    for row, reasoning in finished:  # written 8 at a time: a kill loses at most those and the rows in flight
        written.append((todo[row], reasoning))
        if len(written) >= min(batch_size, 8) or done + len(written) == len(todo):  # progress the page shows early
            generated += store.write_generated(written, generator)
            done, written = done + len(written), []
            if progress:
                progress(done, len(todo))
    templates = store.mark_templates()
    store.close()
    return {"generated": generated, "skipped": skipped, "store": str(store.path), "template_rows": templates}


def export_store(
    store_path: str | Path | None,
    out_dir: str | Path,
    include_pending: bool = False,
    policy: str = "keep-all",
    source_rows: Collection[int] | None = None,
    dropped: str = "remove",
    dataset: str | None = None,
    overwrite: bool = False,
) -> dict:
    """Build the augmented training set from reviewed rows: accepted and edited (pending if asked), never rejected.

    `policy` (see `reasonapp.quality.EXPORT_POLICIES`) leaves out rows by their quality flags, or, with
    `dropped="blank"`, keeps their text and label with an empty reasoning (and rows whose reasoning is blank):
    the multitask format then learns every label and only the rationales that pass;
    `source_rows` keeps only those rows of the source split (one store serving several samples);
    `dataset` picks one dataset of a store that holds several (each keeps its own label set).
    With team review on (the store's `min_reviews` > 1) only final rows are taken: rows in dispute or with too few
    reviews are pending, and `include_pending` is refused.

    The target is checked first (`check_export_target`) and the export is written into a staging directory
    beside it that replaces it only when complete, so a failure leaves nothing half-written. Writes `train.jsonl` and `train.parquet` (what the qra task reads), a `datasets` directory under
    `hf/`, `labels.json` and `provenance.json` with the review statistics.
    """
    import datasets

    from reasonapp.quality import DROPPED_ROWS, EXPORT_POLICIES, quality_summary
    from reasonapp.store import ReasoningStore

    if policy not in EXPORT_POLICIES:
        raise RunDirError(f"unknown export policy {policy!r}; choose one of {sorted(EXPORT_POLICIES)}")
    if dropped not in DROPPED_ROWS:
        raise RunDirError(f"dropped rows are {' or '.join(DROPPED_ROWS)}, not {dropped!r}")
    keep = EXPORT_POLICIES[policy]
    out = check_export_target(out_dir, overwrite)
    from reasonapp.store import default_store_path

    if not Path(store_path or default_store_path()).is_file():  # opening it would create an empty store
        raise RunDirError(f"no review store at {store_path or default_store_path()}: run `augment` first, or name one with --store")
    store = ReasoningStore(store_path)
    try:
        min_reviews = store.min_reviews()
        if min_reviews > 1 and include_pending:
            raise RunDirError(
                f"{store.path} needs {min_reviews} agreeing reviews a row (team review): an export takes final rows only; "
                "leave out --include-pending (the Review tab's 'Include rows nobody reviewed yet')"
            )
        dataset = _export_dataset(store, dataset)
        label_names = store.label_names(dataset)
        candidates = store.rows_for_export(include_pending, dataset)
        counts = store.counts(dataset)
    finally:
        store.close()
    if source_rows is not None:
        wanted = set(source_rows)
        candidates = [row for row in candidates if row.row_index in wanted]
    nonblank = [row for row in candidates if (row.reasoning or "").strip()]  # a blank reasoning teaches nothing
    rows = [row for row in nonblank if keep(row.flags)]
    kept_ids = {id(row) for row in rows}
    if dropped == "blank":
        rows = candidates
    if not rows and min_reviews > 1:
        raise RunDirError(
            f"nothing to export from {store.path}: no final accepted or edited rows ({counts['awaiting_reviews']} rows wait for "
            f"more of the {min_reviews} reviews each needs, {counts['in_dispute']} are in dispute: an admin resolves them in the Review tab)"
        )
    if not rows:
        raise RunDirError(
            f"nothing to export from {store.path}: no accepted or edited rows"
            + ("" if include_pending else " (pass --include-pending to take unreviewed ones)")
        )
    extra = {
        "status": [r.status for r in rows],
        "reviewer": [r.reviewer for r in rows],
        "flags": [r.flags for r in rows],
        "generator": [json.dumps(r.generator, sort_keys=True) if r.generator else None for r in rows],
        "source_split": [r.split for r in rows],
        "source_row": [r.row_index for r in rows],
    }
    provenance = {
        "source_dataset": dataset,
        "store": str(store.path),
        "include_pending": include_pending,
        "rows": len(rows),
        "review": counts["status"],
        "exported_status": {s: extra["status"].count(s) for s in set(extra["status"])},
        "flagged_rows": sum(1 for r in rows if r.flags),
        "skipped_blank_reasoning": len(candidates) - len(nonblank),
        "policy": policy,
        "source_rows_filter": len(set(source_rows)) if source_rows is not None else None,
        "dropped_by_policy": len(nonblank) - len(kept_ids),
        "dropped_rows": dropped,
        "prompt_version": prompts.PROMPT_VERSION,
        "min_reviews": min_reviews,  # team review: > 1 means only rows whose reviewers agreed (or an admin resolved)
    }
    if min_reviews > 1:
        provenance["not_final"] = {"in_dispute": counts["in_dispute"], "awaiting_reviews": counts["awaiting_reviews"]}
    reasonings = [r.reasoning if id(r) in kept_ids else "" for r in rows]
    provenance["quality"] = quality_summary(
        [{"text": r.text, "label": r.label, "reasoning": reasoning, "flags": r.flags} for r, reasoning in zip(rows, reasonings, strict=True)]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        write_augmented_dataset(staging, [r.text for r in rows], [r.label for r in rows], reasonings, label_names, provenance, extra)
        table = datasets.Dataset.from_json(str(staging / "train.jsonl"))
        label_ids = {name: i for i, name in enumerate(label_names)}
        table = table.map(lambda batch: {"label": [label_ids[name] for name in batch["label"]]}, batched=True)
        table = table.cast_column("label", datasets.ClassLabel(names=label_names))
        table.to_parquet(str(staging / "train.parquet"))
        datasets.DatasetDict({"train": table}).save_to_disk(str(staging / "hf"))
        _replace_directory(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return provenance


def _export_dataset(store, dataset: str | None) -> str:
    """The one dataset an export takes: the one named, or the store's only one."""
    held = store.datasets()
    if dataset is None and len(held) == 1:
        return held[0]
    if dataset is None and not held:
        raise RunDirError(f"nothing to export from {store.path}: it holds no rows yet")
    if dataset is None:
        raise RunDirError(f"{store.path} holds rows of {len(held)} datasets ({', '.join(held)}); name the one to export (--dataset)")
    if dataset not in held:
        raise RunDirError(f"{store.path} holds no rows of {dataset}; it holds {', '.join(held) or 'none'}")
    return dataset


def _replace_directory(staging: Path, out: Path) -> None:
    """Put a finished export in place: an earlier one (already checked replaceable) moves aside and is removed after."""
    previous = None
    if out.exists():
        previous = out.with_name(f".{out.name}.{os.getpid()}.replaced")
        out.rename(previous)
    try:
        staging.rename(out)
    except OSError:
        if previous is not None:
            previous.rename(out)  # the earlier export stays where it was
        raise
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
