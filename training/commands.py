"""The subcommands beyond data-info; each is a thin layer over an importable function."""

from __future__ import annotations

import json

from training.cli import add_dataclass_arguments, command, config_from_args, not_built
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
    report = evaluate(config)
    for name, metrics in report["systems"].items():
        print(f"{name:>14}: accuracy {metrics['accuracy'] * 100:5.1f}%  macro-F1 {metrics['macro_f1'] * 100:5.1f}%  invalid {metrics['invalid_rate'] * 100:4.1f}%")
    if report["verdict"]:
        print(report["verdict"])
    print(f"report: {config.output_dir}/report.md")
    return 0


not_built("augment", "issue 4: Stage 2 and review", "Stage 2: write a reasoning for every training row")
not_built("export", "issue 4: Stage 2 and review", "build the augmented training set from the review store")


def _add_experiment_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="experiment YAML (see configs/)")
    parser.add_argument("--root", help="stage directory; default <workspace>/experiments/<name>")


@command("experiment", "run the paper end to end (R-Gen, Stage 2, Q->A, Q->RA, evaluation), resumable", _add_experiment_arguments)
def experiment_command(args) -> int:
    from training.experiment import load_experiment_config, run_experiment

    report = run_experiment(load_experiment_config(args.config), args.root)
    for name, metrics in report["systems"].items():
        print(f"{name:>14}: accuracy {metrics['accuracy'] * 100:5.1f}%  macro-F1 {metrics['macro_f1'] * 100:5.1f}%")
    print(report["verdict"] or "")
    print("stage wall times (s):", json.dumps(report["stage_wall_s"]))
    print(f"report: {report['stages']['evaluate']}/report.md")
    return 0

not_built("push", "issue 6: Hub and Spaces", "push a run or dataset to the Hugging Face Hub")
not_built("bench", "issue 7: performance", "benchmark generation, training and prediction")
