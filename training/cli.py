"""`python -m training <command>`: the command line of reasonapp; the UI calls the same functions.

    python -m training data-info --dataset dair-ai/emotion
    python -m training data-import tickets.csv --name tickets
    python -m training train --task qa --limit 2000 --output-dir workspace/runs/qa
    python -m training evaluate --qa-run workspace/runs/qa --qra-run workspace/runs/qra
    python -m training experiment --config configs/cpu-small.yaml
    python -m training compare --config configs/compare-small.yaml --hours 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from reasonapp.errors import ConfigError, ReasonappError, RunStopped

SUBPARSERS: dict[str, argparse.ArgumentParser] = {}
COMMANDS: dict[str, tuple[str, Callable]] = {}


def command(name: str, help_text: str, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None):
    """Register `function(args) -> int` as a subcommand whose flags `add_arguments(parser)` declares."""

    def register(function):
        function.add_arguments = add_arguments
        COMMANDS[name] = (help_text, function)
        return function

    return register


def not_built(name: str, issue: str, help_text: str) -> None:
    def run(_args) -> int:
        print(f"error: `{name}` is not built yet ({issue})", file=sys.stderr)
        return 3

    command(name, f"{help_text} [not built yet]")(run)


def _flag_type(annotation) -> type:
    """int, float or str from a field's annotation (a string under `from __future__ import annotations`)."""
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    base = next((part.strip() for part in name.split("|") if part.strip() != "None"), "str")
    return {"int": int, "float": float}.get(base, str)


def add_dataclass_arguments(parser: argparse.ArgumentParser, config_class) -> None:
    """One flag per config field (`--lora-r`), typed from its default, help from its metadata.

    argparse reads help strings as %-formats; a field's help and default are plain text ("~30% more"),
    so their `%` signs are escaped here, where the help string is built.
    """
    for spec in dataclasses.fields(config_class):
        flag = "--" + spec.name.replace("_", "-")
        help_text = f"{spec.metadata.get('help', '')} (default: {spec.default})".replace("%", "%%")
        kwargs = {"dest": spec.name, "default": spec.default, "help": help_text}
        if "choices" in spec.metadata:
            kwargs["choices"] = spec.metadata["choices"]
        if isinstance(spec.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            parser.add_argument(flag, type=_flag_type(spec.type), **kwargs)
    parser.add_argument("--config", help="YAML file of settings; flags given here override it")
    parser.set_defaults(config_fills_flags=True)


def config_from_args(args: argparse.Namespace, config_class):
    values = {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(config_class)}
    return config_class(**values)


def _yaml_defaults(path: str, parser: argparse.ArgumentParser) -> dict:
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"could not read config {path}: {error}") from error
    if not isinstance(values, dict):
        raise ConfigError(f"config {path} must be a mapping of settings")
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config {path} has unknown settings {unknown}")
    return values


# ---------------------------------------------------------------------------------------------
# data-info


def _add_data_info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="dair-ai/emotion", help="Hub id or local directory")
    parser.add_argument("--kind", choices=["classification", "reasoning"], default="classification")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--labels", help="comma-separated label names, if the data lacks them (as train and evaluate --labels)")


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


command("data-info", "print the splits, sizes and label distribution of a dataset", _add_data_info_arguments)(data_info)


def _add_data_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", help="one CSV/JSONL/parquet file (split by label), or one per split named train/validation/test")
    parser.add_argument("--source", help="a Hub id or directory of split files instead of FILES")
    parser.add_argument("--name", help="the dataset's name in <workspace>/datasets/ (a name in use is refused); default: the file's or source's name, made free")
    parser.add_argument("--text-column", help="default: guessed (text, sentence, content, ...)")
    parser.add_argument("--label-column", help="default: guessed (label, class, category, ...)")
    parser.add_argument("--labels", help="comma-separated label names (in id order for integer labels)")
    parser.add_argument("--validation-fraction", type=float, default=0.1, help="one file: share of each label for validation")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="one file: share of each label for test")
    parser.add_argument("--seed", type=int, default=0, help="one file: the split's seed")


def data_import(args) -> int:
    """Save files or a source as a workspace dataset, as the app's Datasets tab does (reasonapp.dataset_import)."""
    from reasonapp import dataset_import

    if bool(args.files) == bool(args.source):
        raise ConfigError("give FILES or --source (one of them)")
    settings = {
        "text_column": args.text_column, "label_column": args.label_column, "label_names": args.labels.split(",") if args.labels else None,
        "validation_fraction": args.validation_fraction, "test_fraction": args.test_fraction, "seed": args.seed,
    }
    name = args.name or dataset_import.suggest_name(args.files, args.source)
    if not name:
        raise ConfigError("nothing to name the dataset after (per-split files say nothing of the data): give it a name with --name")
    if args.source:
        saved = dataset_import.import_source(args.source, name, **settings)
    else:
        saved = dataset_import.import_files(args.files, name, **settings)
    provenance = json.loads((saved / dataset_import.PROVENANCE).read_text(encoding="utf-8"))
    rows = ", ".join(f"{split} {count}" for split, count in provenance["rows"].items())
    columns = ", ".join(
        f"{role} {provenance[f'{role}_column']!r}{'' if given else ' (guessed; --' + role + '-column to choose another)'}"
        for role, given in (("text", args.text_column), ("label", args.label_column))
    )
    print(f"saved {saved}: labels {', '.join(provenance['label_names'])}; rows {rows}; columns: {columns}")
    print(dataset_import.split_note(provenance["split"], provenance["label_counts"]))
    print(f"use it with --dataset {saved}" + ("" if args.name else f" (named {name} after {'the source' if args.source else 'the file'}; --name to choose another)"))
    return 0


command("data-import", "save files or a Hub id/directory as a workspace dataset (checked, split, with provenance)", _add_data_import_arguments)(data_import)


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
    for name, (help_text, function) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if function.add_arguments:
            function.add_arguments(sub)
        sub.set_defaults(handler=function)
        SUBPARSERS[name] = sub
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "config_fills_flags", False) and args.config:
            subparser = SUBPARSERS[args.command]
            subparser.set_defaults(**_yaml_defaults(args.config, subparser))
            args = parser.parse_args(argv)
        if isinstance(getattr(args, "dataset", None), str):
            from reasonapp.dataset_import import workspace_dataset_path

            args.dataset = workspace_dataset_path(args.dataset)  # "tickets": the workspace's, as the app names it
        return int(args.handler(args) or 0)
    except RunStopped as error:
        print(f"stopped: {error}", file=sys.stderr)
        return 3
    except ReasonappError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
