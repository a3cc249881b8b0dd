"""`python -m training <command>`: the command line of reasonapp; the UI calls the same functions.

    python -m training data-info --dataset dair-ai/emotion
    python -m training train --task qa --limit 2000 --output-dir workspace/runs/qa
    python -m training evaluate --qa-run workspace/runs/qa --qra-run workspace/runs/qra
    python -m training experiment --config configs/cpu-small.yaml
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from reasonapp.errors import ReasonappError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None] | None, Callable | None]] = {}


def command(name: str, help_text: str):
    """Register `function(args) -> int` as a subcommand; `add_arguments(parser)` is set on it later."""

    def register(function):
        COMMANDS[name] = (help_text, getattr(function, "add_arguments", None), function)
        return function

    return register


def not_built(name: str, issue: str, help_text: str) -> None:
    def run(_args) -> int:
        print(f"error: `{name}` is not built yet ({issue})", file=sys.stderr)
        return 3

    COMMANDS[name] = (f"{help_text} [not built yet]", None, run)


# ---------------------------------------------------------------------------------------------
# data-info


def _add_data_info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="dair-ai/emotion", help="Hub id or local directory")
    parser.add_argument("--kind", choices=["classification", "reasoning"], default="classification")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--labels", help="comma-separated label names, when the data does not name them")


def data_info(args) -> int:
    """Print the splits, their sizes and the label distribution of a dataset."""
    from reasonapp import data

    if args.kind == "reasoning":
        loaded = data.load_reasoning_dataset(args.dataset)
        print(f"dataset: {args.dataset} (from {loaded.origin})")
        for split, rows in loaded.splits.items():
            print(f"  {split}: {len(rows)} rows")
        return 0
    labels = args.labels.split(",") if args.labels else None
    loaded = data.load_classification_dataset(
        args.dataset, text_column=args.text_column, label_column=args.label_column, labels=labels
    )
    print(f"dataset: {args.dataset} (from {loaded.origin})")
    print(f"labels ({len(loaded.label_names)}): {', '.join(loaded.label_names)}")
    for split in loaded.splits:
        counts = loaded.label_counts(split)
        distribution = "  ".join(f"{name}={count}" for name, count in counts.items())
        print(f"  {split}: {len(loaded.splits[split])} rows  {distribution}")
    return 0


data_info.add_arguments = _add_data_info_arguments
command("data-info", "print the splits, sizes and label distribution of a dataset")(data_info)


# ---------------------------------------------------------------------------------------------
# entry point


def _register_all() -> None:
    # Each module registers its own subcommands; importing them is cheap (heavy imports are lazy).
    from training import commands  # noqa: F401


def build_parser() -> argparse.ArgumentParser:
    _register_all()
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_arguments, function) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if add_arguments:
            add_arguments(sub)
        sub.set_defaults(handler=function)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except ReasonappError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
