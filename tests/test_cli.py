"""The command line: subcommands listed, data-info offline, one-line errors."""

import argparse
import dataclasses
import json
import subprocess
import sys

import pytest

from training.cli import COMMANDS, add_dataclass_arguments, build_parser, main

SUBCOMMANDS = ["train", "augment", "export", "evaluate", "experiment", "compare", "push", "bench", "data-info"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "training", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand():
    result = run_cli("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout


def test_help_loads_no_model_library():
    """`--help` and a subcommand's help answer at once: torch, transformers, PEFT and TRL (seconds to import) are
    loaded only by the commands that run models."""
    heavy = ("torch", "transformers", "peft", "trl", "datasets", "gradio")
    probe = (
        "import sys, contextlib, io\n"
        "from training.cli import main\n"
        "for args in (['--help'], ['train', '--help'], ['augment', '--help'], ['bench', '--help']):\n"
        "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "        main(args)\n"
        f"print(sorted(name for name in {heavy!r} if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


build_parser()  # registers every subcommand in COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_prints_its_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m training {name}")


def test_a_percent_sign_in_a_config_field_help_is_shown_as_written():
    @dataclasses.dataclass
    class Settings:
        share: float = dataclasses.field(default=0.3, metadata={"help": "~30% of the rows, not %(prog)s"})
        suffix: str = dataclasses.field(default="%d", metadata={"help": "a suffix"})

    parser = argparse.ArgumentParser(prog="p")
    add_dataclass_arguments(parser, Settings)
    text = " ".join(parser.format_help().split())  # argparse wraps lines to the terminal's width
    assert "~30% of the rows, not %(prog)s (default: 0.3)" in text
    assert "a suffix (default: %d)" in text


def test_data_info_prints_splits_and_label_counts(shared_data, capsys):
    assert main(["data-info", "--dataset", "dair-ai/emotion"]) == 0
    out = capsys.readouterr().out
    assert "train: 16000 rows" in out and "validation: 2000 rows" in out and "test: 2000 rows" in out
    assert "sadness=4666  joy=5362  love=1304  anger=2159  fear=1937  surprise=572" in out


def test_bad_input_is_one_line_on_stderr_not_a_traceback(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"sentence": "a", "label": "x"}\n')
    for args in (["--dataset", "/no/such/dir"], ["--dataset", str(tmp_path)]):
        result = run_cli("data-info", *args)
        assert result.returncode == 2
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr


def test_compare_report_only_on_a_fresh_root_says_nothing_has_run(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("name: c\nvariants: {qa: {task: qa}, qra: {task: qra, source: rgen}}\n")
    assert main(["compare", "--config", str(tmp_path / "c.yaml"), "--root", str(tmp_path / "root"), "--report-only"]) == 0
    out = capsys.readouterr().out
    assert "No job has finished yet." in out and "12 jobs not run yet" in out
    assert "Not run yet (12 jobs" in (tmp_path / "root" / "comparison.md").read_text()


def test_compare_with_a_broken_config_is_a_one_line_error(tmp_path):
    (tmp_path / "c.yaml").write_text("name: c\nvariants: {qra: {task: qra, source: rgen}}\n")
    result = run_cli("compare", "--config", str(tmp_path / "c.yaml"), "--root", str(tmp_path / "root"))
    assert result.returncode == 2 and "must include 'qa'" in result.stderr and "Traceback" not in result.stderr


def write_dataset(directory, splits):
    directory.mkdir()
    for split, rows in splits.items():
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return directory


def test_a_test_only_label_is_the_same_error_in_data_info_train_and_evaluate(tmp_path, capsys):
    rows = [{"text": "great", "label": "pos"}, {"text": "awful", "label": "neg"}]
    dataset = str(write_dataset(tmp_path / "data", {"train": rows, "test": [*rows, {"text": "so so", "label": "meh"}]}))
    run = tmp_path / "qa-run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"task": "qa", "dataset": dataset, "label_names": ["neg", "pos", "meh"]}))
    commands = {
        "data-info": ["data-info", "--dataset", dataset],
        "train": ["train", "--task", "qa", "--dataset", dataset, "--output-dir", str(tmp_path / "new-run")],
        "evaluate": ["evaluate", "--qa-run", str(run), "--output-dir", str(tmp_path / "eval")],
    }
    errors = {}
    for name, argv in commands.items():
        assert main(argv) == 2, name
        errors[name] = capsys.readouterr().err
    expected = (
        f"error: split 'test' of {dataset!r} has 1 row whose label is not one of ['neg', 'pos'] (taken from the train split): "
        "'meh' (1 row); fix or remove those rows, or declare every label (--labels a,b,c or labels.json)\n"
    )
    assert errors == dict.fromkeys(commands, expected)
    assert not (tmp_path / "new-run").exists() and not (tmp_path / "eval").exists()
