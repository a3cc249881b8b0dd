"""The subcommands beyond data-info; each is a thin layer over an importable function."""

from __future__ import annotations

import argparse
import json

from training.cli import add_dataclass_arguments, command, config_from_args
from training.evaluate import EvalConfig
from training.sft import TrainConfig


def _add_train_arguments(parser) -> None:
    add_dataclass_arguments(parser, TrainConfig)
    parser.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its last checkpoint")


@command(
    "train",
    "fine-tune R-Gen (rgen), Q->A (qa) or Q->RA (qra/qar) with LoRA on prompt/completion pairs",
    _add_train_arguments,
)
def train_command(args) -> int:
    from training.sft import train

    run_dir = train(config_from_args(args, TrainConfig), resume=args.resume)
    print(f"run finished: {run_dir}")
    return 0



def _add_evaluate_arguments(parser) -> None:
    add_dataclass_arguments(parser, EvalConfig)


@command("evaluate", "evaluate Q->A and/or Q->RA runs on a split, beside a TF-IDF baseline", _add_evaluate_arguments)
def evaluate_command(args) -> int:
    from training.evaluate import evaluate

    config = config_from_args(args, EvalConfig)
    _print_report(evaluate(config), config.output_dir)
    return 0


def _print_report(report: dict, report_dir: str) -> None:
    for name, metrics in report["systems"].items():
        print(f"{name:>14}: accuracy {metrics['accuracy'] * 100:5.1f}%  macro-F1 {metrics['macro_f1'] * 100:5.1f}%  invalid {metrics['invalid_rate'] * 100:4.1f}%")
    if report["verdict"]:
        print(report["verdict"])
    print(f"report: {report_dir}/report.md")


def _add_augment_arguments(parser) -> None:
    from reasonapp.prompts import STAGE2_PROMPTS
    from training.teacher import TeacherConfig

    parser.add_argument("--rgen-run", help="run directory of a trained R-Gen (task rgen), or base:<model> to use an instruct model without Stage 1; or --teacher-url")
    parser.add_argument(
        "--prompt-variant", choices=list(STAGE2_PROMPTS), default="default",
        help="; ".join(f"{name}: {prompt.summary}" for name, prompt in STAGE2_PROMPTS.items()),
    )
    parser.add_argument("--candidates", type=int, default=1, help="sample this many per row and keep the one with the fewest quality flags")
    parser.add_argument("--dataset", default="dair-ai/emotion", help="classification dataset to augment")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, help="a fixed random sample of this many rows (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", help="review store file (default: <workspace>/reasonings.sqlite)")
    parser.add_argument("--batch-size", type=int, default=32, help="rows decoded together by a local R-Gen (an endpoint takes --concurrency)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="the most tokens of one reasoning (an endpoint's max_tokens)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--progress-file", help="keep rows done/total, rows/s and whether it finished in this JSON file (the app's Stage 2 jobs read it)")
    group = parser.add_argument_group("an endpoint as the teacher (any OpenAI-compatible Chat Completions server)")
    add_dataclass_arguments(group, TeacherConfig)


@command("augment", "Stage 2: write a reasoning for every training row into the review store (resumable)", _add_augment_arguments)
def augment_command(args) -> int:
    from reasonapp.errors import ConfigError
    from training.augment import augment_to_store
    from training.generation import Decoding, progress_bar
    from training.launcher import Stage2Progress
    from training.teacher import TeacherConfig

    if bool(args.rgen_run) == bool(args.teacher_url):
        raise ConfigError("name the source of the reasonings: --rgen-run (a run directory or base:<model>) or --teacher-url, not both")
    source = config_from_args(args, TeacherConfig) if args.teacher_url else args.rgen_run
    decoding = Decoding(max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature)
    bar = progress_bar("Stage 2")
    recorder = Stage2Progress(args.progress_file) if args.progress_file else None

    def progress(done: int, total: int) -> None:
        bar(done, total)
        if recorder:
            recorder.update(done)

    result = augment_to_store(
        source, args.dataset, args.store, args.split, args.limit, args.seed, decoding, args.batch_size, progress,
        prompt_variant=args.prompt_variant, candidates=args.candidates, planned=recorder.plan if recorder else None,
    )
    if recorder:
        recorder.finish(result.get("failed", 0))
    print(f"generated {result['generated']} reasonings, {result['skipped']} rows already had one; store: {result['store']}")
    if result.get("failed"):
        from collections import Counter

        from training.teacher import failed_rows

        reasons = Counter(reason.split(" (attempt")[0] for reason in failed_rows(result["store"]).values())
        print(f"{result['failed']} rows failed, run the same command again to retry them; commonest reasons: "
              + "; ".join(f"{reason} ({count} rows)" for reason, count in reasons.most_common(3)))
    return 0


def _add_export_arguments(parser) -> None:
    parser.add_argument("--store", help="review store file (default: <workspace>/reasonings.sqlite)")
    parser.add_argument("--out", required=True, help="directory for the augmented dataset (new or empty, or an earlier export with --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out (never a run, a source dataset, or an export a run was trained on)")
    parser.add_argument("--dataset", help="the dataset to export, when the store holds rows of several")
    parser.add_argument("--include-pending", action="store_true", help="also export rows nobody reviewed yet")
    from reasonapp.quality import DROPPED_ROWS, EXPORT_POLICIES

    parser.add_argument("--policy", default="keep-all", choices=list(EXPORT_POLICIES), help="leave out rows by their quality flags (recorded in provenance.json)")
    parser.add_argument("--dropped", default="remove", choices=DROPPED_ROWS, help="rows the policy drops: left out, or kept with an empty reasoning (for multitask: every label, only the good rationales)")


@command("export", "build the augmented training set (accepted + edited rows) from the review store", _add_export_arguments)
def export_command(args) -> int:
    from reasonapp.quality import quality_line
    from training.augment import export_store

    provenance = export_store(
        args.store, args.out, args.include_pending, args.policy, dropped=args.dropped, dataset=args.dataset, overwrite=args.overwrite
    )
    print(f"exported {provenance['rows']} rows ({provenance['exported_status']}) to {args.out}")
    print(quality_line(provenance["quality"]))
    return 0



def _add_experiment_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="experiment YAML (see configs/)")
    parser.add_argument("--root", help="stage directory; default <workspace>/experiments/<name>")
    parser.add_argument("--review", action="store_true", help="pause after Stage 2 until its store is reviewed (as `review: true` in the config)")
    parser.add_argument("--continue", dest="proceed", action="store_true",
                        help="after the review pause: export the accepted and edited rows and train Q->RA on them")
    parser.add_argument("--state-file", help="keep each stage's state and times in this JSON file (what the app's Pipeline tab reads)")


@command("experiment", "run the paper end to end (R-Gen, Stage 2, Q->A, Q->RA, evaluation), resumable", _add_experiment_arguments)
def experiment_command(args) -> int:
    from training.experiment import load_experiment_config, run_experiment

    config = load_experiment_config(args.config)
    config["review"] = config["review"] or args.review
    report = run_experiment(config, args.root, args.state_file, proceed=args.proceed)
    _print_report(report, report["stages"]["evaluate"])
    print("stage wall times (s):", json.dumps(report["stage_wall_s"]))
    return 0



def _add_compare_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="comparison YAML (see configs/compare-small.yaml)")
    parser.add_argument("--root", help="cache directory; default <workspace>/experiments/<name>")
    parser.add_argument("--max-jobs", type=int, help="stop after this many (variant, N, seed) jobs")
    parser.add_argument("--hours", type=float, help="start no new job after this many hours")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from finished jobs, run nothing")
    parser.add_argument(
        "--only", type=_names, help="run only these variants' jobs first, comma-separated (qa always runs: it is the baseline)"
    )
    parser.add_argument("--n-train", type=_sizes, help="run only these training sizes first, comma-separated")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _sizes(text: str) -> list[int]:
    try:
        return [int(size) for size in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


@command("compare", "Q->A against reasoning variants over N and seeds; resumable, one report (md + PNG)", _add_compare_arguments)
def compare_command(args) -> int:
    import time

    from training.comparison import Comparison, load_comparison_config

    comparison = Comparison(load_comparison_config(args.config), args.root)
    if args.report_only:
        report = comparison.write_report()
    else:
        deadline = time.time() + args.hours * 3600 if args.hours else None
        report = comparison.run(max_jobs=args.max_jobs, deadline=deadline, only=args.only, n_train=args.n_train)
    print(report["choice"]["verdict"])
    if report["missing"]:
        print(f"{len(report['missing'])} jobs not run yet; run the same command again to continue")
    print(f"report: {comparison.root / 'comparison.md'}")
    return 0



def _add_push_arguments(parser) -> None:
    parser.add_argument("path", help="a run directory, or a dataset directory made by `export`")
    parser.add_argument("--repo-id", required=True, help="user-or-org/name on the Hub")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--merged", action="store_true", help="push the adapter merged into its base model")


@command("push", "push a run (adapter or merged model, config, metrics, card) or an exported dataset to the Hub", _add_push_arguments)
def push_command(args) -> int:
    from training.hub import push

    result = push(args.path, args.repo_id, private=args.private, merged=args.merged)
    print(f"pushed {len(result['files'])} files: {result['commit_url']}")
    return 0



def _add_bench_arguments(parser) -> None:
    parser.add_argument("--experiment", help="take the runs below from an experiment directory's summary.json")
    parser.add_argument("--rgen-run", help="R-Gen run (Stage 2 workload)")
    parser.add_argument("--qa-run", help="Q->A run (prediction workloads)")
    parser.add_argument("--qra-run", help="Q->RA run (prediction and memory workloads)")
    parser.add_argument("--augmented", help="augmented dataset (training workload)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a run of a few minutes")
    parser.add_argument("--only", help="comma-separated workloads: stage2, training, training_memory, predictions, memory, compare_pick (the default set), stage2_endpoint")
    parser.add_argument("--output", default="docs/bench.json", help="where to write the JSON too")


@command("bench", "benchmark Stage 2, LoRA training, predictions and memory on the real model; prints JSON", _add_bench_arguments)
def bench_command(args) -> int:
    from pathlib import Path

    from training.bench import run_bench
    from training.rundir import read_json, write_json

    runs = {"rgen": args.rgen_run, "qa": args.qa_run, "qra": args.qra_run, "augment": args.augmented}
    if args.experiment:
        stages = (read_json(Path(args.experiment) / "summary.json") or {}).get("stages", {})
        for name in runs:
            runs[name] = runs[name] or stages.get(name) or stages.get("qar" if name == "qra" else name)
    only = [w.strip() for w in args.only.split(",")] if args.only else None
    results = run_bench(runs["rgen"], runs["qa"], runs["qra"], runs["augment"], quick=args.quick, only=only)
    write_json(Path(args.output), results)
    print(json.dumps(results, indent=2))
    return 0

