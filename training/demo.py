"""The demo the app opens on an empty workspace: real reasonings and two small adapters, made by this project's commands.

    make demo-assets          # python -m training.demo --out assets/demo (about 20 min on 2 CPU cores)

`build_demo_assets` runs the method at a small size through the same functions as the CLI:

1. Stage 2 (`augment --rgen-run base:<model> --prompt-variant cue`): the base instruct model writes a reasoning
   for each of N emotion training rows (no Stage 1, so the build needs no R-Gen run);
2. exports them all, unreviewed, as the paper trains, and trains Q->RA on them and Q->A on the same rows (LoRA r=4);
3. evaluates both on a fixed sample of the test split (paired, with McNemar's test).

What it keeps is small enough for the repository (adapters in float16, a few MB each):

    <out>/reasonings.jsonl     every generated reasoning with its generator and quality flags
    <out>/runs/{qa,qra}/       config.json, status.json, final_metrics.json, eval-test/metrics.json, adapter/
    <out>/README.md            the card: the command, the sizes and the test metrics

`install_demo` copies them into a workspace (runs under runs/demo-*, the reasonings into a store of their own),
which the app does at start when the workspace has nothing of its own, or with REASONAPP_DEMO=1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from reasonapp import settings
from reasonapp.errors import ReasonappError
from reasonapp.models import DEFAULT_BASE_MODEL
from training import rundir

DEMO_ASSETS = settings.PROJECT_ROOT / "assets" / "demo"
DEMO_DATASET = "dair-ai/emotion"
DEMO_RUNS = ("qa", "qra")
REASONINGS = "reasonings.jsonl"
KEPT_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")  # the tokenizer comes with the base model


def build_demo_assets(
    out: str | Path = DEMO_ASSETS,
    n_train: int = 800,
    n_test: int = 300,
    base_model: str = DEFAULT_BASE_MODEL,
    lora_r: int = 4,
    seed: int = 0,
) -> dict:
    """Run Stage 2, train Q->A and Q->RA and evaluate them; keep the small results in `out`. Returns the test metrics."""
    from training.augment import augment_to_store, export_store
    from training.evaluate import EvalConfig, evaluate
    from training.generation import Decoding, progress_bar
    from training.sft import TrainConfig, train

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="reasonapp-demo-") as scratch:
        scratch = Path(scratch)
        store = scratch / "store.sqlite"
        augment_to_store(
            f"base:{base_model}", DEMO_DATASET, store, "train", n_train, seed, Decoding(max_new_tokens=64), 16,
            progress_bar("Stage 2"), prompt_variant="cue",
        )
        export_store(store, scratch / "augmented", include_pending=True)
        common = {"base_model": base_model, "lora_r": lora_r, "lora_alpha": 2 * lora_r, "seed": seed, "save_steps": 10_000}
        qa = train(TrainConfig(task="qa", dataset=DEMO_DATASET, limit=n_train, output_dir=str(scratch / "qa"), **common))
        qra = train(TrainConfig(task="qra", dataset=str(scratch / "augmented"), output_dir=str(scratch / "qra"), **common))
        report = evaluate(EvalConfig(qa_run=str(qa), qra_run=str(qra), dataset=DEMO_DATASET, limit=n_test, seed=seed,
                                     qa_mode="scored", output_dir=str(scratch / "eval")))
        if out.exists():
            shutil.rmtree(out)
        (out / "runs").mkdir(parents=True)
        for name, run in (("qa", qa), ("qra", qra)):
            _keep_run(run, out / "runs" / name, report, name)
        _keep_reasonings(store, out / REASONINGS)
    card = demo_card(report, n_train, n_test, base_model, lora_r, seed)
    (out / "README.md").write_text(card)
    return report


def _keep_run(run: Path, target: Path, report: dict, side: str) -> None:
    """A run's small files and its adapter in float16; the paired test metrics as its eval-test/metrics.json."""
    import torch
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True)
    for name in (rundir.CONFIG, rundir.STATUS, rundir.FINAL_METRICS):
        values = rundir.read_json(run / name)
        if name == rundir.STATUS:  # no pid or host of the build machine
            values = {"state": values["state"], "step": values.get("step"), "total_steps": values.get("total_steps")}
        if name == rundir.CONFIG:
            values = keep_config(values)
        rundir.write_json(target / name, values)
    (target / rundir.ADAPTER).mkdir()
    shutil.copy(run / rundir.ADAPTER / "adapter_config.json", target / rundir.ADAPTER / "adapter_config.json")
    weights = load_file(str(run / rundir.ADAPTER / "adapter_model.safetensors"))
    save_file({k: v.to(torch.float16) for k, v in weights.items()}, str(target / rundir.ADAPTER / "adapter_model.safetensors"))
    systems = {k: v for k, v in report["systems"].items() if k == side or k.startswith(side + " ") or k.startswith(side + "_")}
    rundir.write_json(target / "eval-test" / "metrics.json", {"systems": systems, "rows": report.get("rows"), "verdict": report.get("verdict")})


def keep_config(config: dict) -> dict:
    """A run's config as shipped: Q->RA's training set was a scratch export, so it names what that export was made from."""
    config = dict(config)
    if config.get("task") != "qa":
        config["source_dataset"] = DEMO_DATASET  # what the Train tab evaluates it on by default
        config["dataset"] = f"{REASONINGS} (all {DEMO_DATASET} rows of it, exported unreviewed)"
    return config


def _keep_reasonings(store_path: Path, target: Path) -> None:
    from reasonapp.store import ReasoningStore

    store = ReasoningStore(store_path)
    try:
        rows = [store.get(row_id) for row_id in store.query_ids()]
        labels = store.label_names(DEMO_DATASET)
    finally:
        store.close()
    with open(target, "w", encoding="utf-8") as handle:
        for row in rows:
            record = {k: getattr(row, k) for k in ("dataset", "split", "row_index", "text", "label", "reasoning", "generator", "flags")}
            handle.write(json.dumps({**record, "label_names": labels}, ensure_ascii=False) + "\n")


def demo_card(report: dict, n_train: int, n_test: int, base_model: str, lora_r: int, seed: int) -> str:
    lines = [
        "# reasonapp demo assets",
        "",
        "What the app opens on an empty workspace (or with `REASONAPP_DEMO=1`): a review queue of real generated",
        "reasonings, and a small Q→A and Q→RA pair for the Compare tab. Rebuild with `make demo-assets`",
        f"(`python -m training.demo --out assets/demo --n-train {n_train} --n-test {n_test}`).",
        "",
        f"- Base model: `{base_model}` (the offline default, SmolLM2-135M-Instruct), LoRA r={lora_r} on all linear layers,",
        "  adapters stored in float16.",
        f"- Stage 2: the base instruct model as R-Gen (no Stage 1), `cue` prompt, greedy, on {n_train} rows of",
        f"  `{DEMO_DATASET}` train (seed {seed}); every reasoning exported unreviewed, as the paper trains.",
        f"- Q→A and Q→RA trained on the same {n_train} rows, one epoch; evaluated on {n_test} test rows (seed {seed}).",
        "",
        "| system | accuracy | macro-F1 |",
        "|---|---|---|",
    ]
    for name, metrics in report["systems"].items():
        lines.append(f"| {name} | {metrics['accuracy'] * 100:.1f}% | {metrics['macro_f1'] * 100:.1f}% |")
    if report.get("verdict"):
        lines += ["", report["verdict"]]
    lines += [
        "",
        "These are small demo models, not results: see `docs/compare-small` for the measured comparison.",
        "The reasonings are unreviewed model output; the Review tab is where people check them.",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# into a workspace


def demo_available(assets: Path = DEMO_ASSETS) -> bool:
    return (assets / REASONINGS).is_file() and all((assets / "runs" / name / rundir.ADAPTER).is_dir() for name in DEMO_RUNS)


def demo_store_path() -> Path:
    return settings.workspace_dir() / "demo" / "reasonings.sqlite"


def workspace_is_empty() -> bool:
    """Nothing of the user's own yet: no runs and no review store (what a fresh clone or a new Space has)."""
    from reasonapp.store import default_store_path

    own_runs = [run for run in rundir.list_runs() if not Path(run["run_dir"]).name.startswith("demo-")]
    return not own_runs and not default_store_path().exists()


def install_demo(assets: Path = DEMO_ASSETS) -> Path:
    """Copy the demo runs into `<workspace>/runs/demo-*` and its reasonings into a demo store; returns the store path.

    Idempotent: what is already installed is kept (a reviewer's decisions in the demo store stay).
    """
    from reasonapp.store import ReasoningStore

    if not demo_available(assets):
        raise ReasonappError(f"no demo assets in {assets}: run `make demo-assets` to build them")
    for name in DEMO_RUNS:
        target = rundir.runs_root() / f"demo-{name}"
        if not (target / rundir.CONFIG).is_file():
            staging = target.with_name(f".{target.name}.partial")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(assets / "runs" / name, staging)
            staging.rename(target)
    store_path = demo_store_path()
    store = ReasoningStore(store_path, journal=False)  # demo rows are no review work: nothing for the decision log
    try:
        if not store.datasets():
            records = [json.loads(line) for line in (assets / REASONINGS).read_text(encoding="utf-8").splitlines() if line.strip()]
            for (dataset, split), group in _grouped(records).items():
                store.add_examples(dataset, split, [(r["row_index"], r["text"], r["label"]) for r in group], group[0]["label_names"])
                ids = dict(zip((r["row_index"] for r in group), store.ids_needing_reasoning(dataset, split), strict=True))
                by_generator: dict[str, list[dict]] = {}
                for record in group:
                    by_generator.setdefault(json.dumps(record["generator"], sort_keys=True), []).append(record)
                for generator, same in by_generator.items():
                    store.write_generated([(ids[r["row_index"]], r["reasoning"]) for r in same], json.loads(generator))
            store.mark_templates()
    finally:
        store.close()
    return store_path


def _grouped(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for record in sorted(records, key=lambda r: r["row_index"]):
        groups.setdefault((record["dataset"], record["split"]), []).append(record)
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEMO_ASSETS), help="where the demo assets go (replaced)")
    parser.add_argument("--n-train", type=int, default=800, help="training rows (Stage 2, Q->A and Q->RA)")
    parser.add_argument("--n-test", type=int, default=300, help="test rows evaluated")
    parser.add_argument("--base-model", default=DEFAULT_BASE_MODEL)
    parser.add_argument("--lora-r", type=int, default=4)
    args = parser.parse_args(argv)
    report = build_demo_assets(args.out, args.n_train, args.n_test, args.base_model, args.lora_r)
    print(json.dumps({name: round(m["accuracy"], 4) for name, m in report["systems"].items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
