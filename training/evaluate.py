"""Evaluation of Q->A and Q->RA runs on a split, with the classical baseline beside them.

    python -m training evaluate --qa-run workspace/runs/qa --qra-run workspace/runs/qra --split test

Writes to the output directory: `metrics.json`, `report.md`, `predictions.jsonl`, and PNG plots
(confusion matrices, per-class F1). Q->A is evaluated two ways: by scoring every label's completion
(constrained: always a valid label) and by parsing free generation; the report says which is which.
An invalid output counts as wrong. With two systems, McNemar's test on their paired correctness says
whether the difference is more than chance, and the verdict line says plainly which way it went.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from reasonapp import data
from reasonapp.dataset_import import display_name
from reasonapp.errors import ConfigError, DataError, RunDirError
from training import rundir
from training.generation import progress_bar

logger = logging.getLogger(__name__)

INVALID = "invalid"
# Which runs each side of the comparison takes: the evaluation, the Compare tab and their flags agree.
SIDE_TASKS = {"qa": ("qa",), "qra": ("qra", "qar", "multitask")}
SIDE_NAMES = {"qa": "Q→A (--qa-run)", "qra": "Q→RA (--qra-run)"}
SYSTEM_TITLES = {
    "qa_scored": "Q→A (label scoring)",
    "qa_generated": "Q→A (free generation)",
    "qra": "Q→RA",
    "qar": "Q→AR",
    "multitask": "Multi-task (label + rationale)",
    "tfidf": "TF-IDF + logistic regression",
}


# ---------------------------------------------------------------------------------------------
# metrics: pure functions, unit-tested on hand-built predictions


def classification_metrics(gold: list[int], predicted: list[int | None], label_names: list[str]) -> dict:
    """Accuracy, macro-F1, per-class P/R/F1, confusion matrix (with an `invalid` column), invalid rate."""
    import numpy as np
    from sklearn.metrics import precision_recall_fscore_support

    n_labels = len(label_names)
    if len(gold) != len(predicted):
        raise ValueError("gold and predicted differ in length")
    if not gold:
        raise ValueError("no rows to evaluate")
    pred = np.array([n_labels if p is None else p for p in predicted])  # invalid -> its own column
    true = np.array(gold)
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=list(range(n_labels)), zero_division=0
    )
    confusion = np.zeros((n_labels, n_labels + 1), dtype=int)
    np.add.at(confusion, (true, pred), 1)
    return {
        "rows": int(len(true)),
        "accuracy": float((true == pred).mean()),
        "macro_f1": float(f1.mean()),
        "invalid_rate": float((pred == n_labels).mean()),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion.tolist(),
        "confusion_columns": [*label_names, INVALID],
    }


def mcnemar(correct_a: list[bool], correct_b: list[bool]) -> dict:
    """McNemar's test on paired correctness: exact binomial p-value, and the chi-square statistic."""
    from scipy.stats import binomtest

    if len(correct_a) != len(correct_b):
        raise ValueError("McNemar needs paired predictions of equal length")
    only_a = sum(1 for a, b in zip(correct_a, correct_b, strict=True) if a and not b)
    only_b = sum(1 for a, b in zip(correct_a, correct_b, strict=True) if b and not a)
    discordant = only_a + only_b
    p_value = 1.0 if discordant == 0 else float(binomtest(only_a, discordant, 0.5).pvalue)
    statistic = 0.0 if discordant == 0 else (abs(only_a - only_b) - 1) ** 2 / discordant
    return {"only_a_correct": only_a, "only_b_correct": only_b, "chi2_continuity": statistic, "p_value": p_value, "method": "exact binomial"}


def tfidf_baseline(train_texts: list[str], train_labels: list[int], test_texts: list[str], seed: int = 0) -> list[int]:
    """The baseline a practitioner tries first: word 1-2-gram TF-IDF and logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        LogisticRegression(max_iter=2000, C=10.0, random_state=seed),
    )
    pipeline.fit(train_texts, train_labels)
    return [int(p) for p in pipeline.predict(test_texts)]


def verdict(metrics: dict, mcnemar_result: dict | None, reasoning_system: str, direct_system: str) -> str:
    """One plain sentence on whether reasoning helped, hurt, or made no significant difference."""
    a = metrics[direct_system]["accuracy"]
    b = metrics[reasoning_system]["accuracy"]
    diff = (b - a) * 100
    p = mcnemar_result["p_value"] if mcnemar_result else None
    name_b, name_a = SYSTEM_TITLES[reasoning_system], SYSTEM_TITLES[direct_system]
    significance = f"McNemar p = {p:.3g}" if p is not None else "no paired test"
    if p is not None and p < 0.05:
        direction = "helped" if diff > 0 else "hurt"
        return f"Reasoning {direction}: {name_b} is {abs(diff):.1f} points {'above' if diff > 0 else 'below'} {name_a} ({significance})."
    return f"No significant difference: {name_b} is {diff:+.1f} points against {name_a} ({significance})."


# ---------------------------------------------------------------------------------------------
# running an evaluation


@dataclass
class EvalConfig:
    """Which runs to evaluate on which rows, and where the report goes."""

    qa_run: str | None = field(default=None, metadata={"help": "run directory of a Q->A (qa) run"})
    qra_run: str | None = field(default=None, metadata={"help": "run directory of a reasoning-trained run (qra, qar or multitask)"})
    dataset: str | None = field(default=None, metadata={"help": "classification dataset; default: the one the runs used"})
    split: str = field(default="test", metadata={"help": "split to evaluate on"})
    labels: str | None = field(default=None, metadata={"help": "comma-separated label names, if the data lacks them (as train --labels)"})
    limit: int | None = field(default=None, metadata={"help": "evaluate a fixed random sample of this many rows"})
    seed: int = field(default=0, metadata={"help": "seed of that sample"})
    batch_size: int = field(default=16, metadata={"help": "rows per forward pass"})
    qa_mode: str = field(default="both", metadata={"help": "Q->A by label scoring, free generation, or both", "choices": ("both", "scored", "generated")})
    max_new_tokens: int = field(default=128, metadata={"help": "generation budget of reasoning runs"})
    output_dir: str = field(default="", metadata={"help": "report directory; default <run>/eval-<split>"})
    overwrite: bool = field(default=False, metadata={"help": "replace an earlier evaluation of these runs in the report directory"})

    def __post_init__(self):
        if not self.qa_run and not self.qra_run:
            raise ConfigError("give --qa-run and/or --qra-run")
        for name in ("batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.output_dir:
            self.output_dir = str(Path(self.qa_run or self.qra_run) / f"eval-{self.split}")


# A label-first run (qar) needs only its first line to be read: "Label: surprise" is under 8 tokens.
LABEL_LINE_TOKENS = 12


def predict_labels(
    classifiers, name: str, texts: list[str], batch_size: int = 16, max_new_tokens: int = 128
) -> tuple[list[int | None], list[dict]]:
    """Each text's predicted label index (None when invalid) and per-row details, the way the run's format answers.

    Label-only formats (qa, multitask) are scored over the label set; qra generates its reasoning, then
    the label; qar generates only its first line, where its label is.
    """
    from reasonapp.prompts import get_format
    from training.generation import Decoding

    task = classifiers.runs[name].task
    fmt = get_format(task)
    if fmt.answers_with_label_only:
        probs = classifiers.score(name, texts, batch_size, progress_bar(f"{task} scoring"))
        return [int(p.argmax()) for p in probs], [{"probabilities": [round(float(x), 4) for x in p]} for p in probs]
    budget = LABEL_LINE_TOKENS if fmt.layout == "label_reasoning" else max_new_tokens
    predictions = classifiers.predict(name, texts, Decoding(max_new_tokens=budget), batch_size, progress_bar(f"{task} generation"))
    details = [{"output": p.raw, "reasoning": p.reasoning, "status": p.status, "reason": p.reason} for p in predictions]
    return [p.label_index for p in predictions], details


def _source_dataset(config: EvalConfig, run_configs: dict[str, dict]) -> str:
    if config.dataset:
        return config.dataset
    if "qa" in run_configs:
        return run_configs["qa"]["dataset"]
    return run_configs["qra"].get("source_dataset") or data.DEFAULT_CLASSIFICATION_DATASET


def _training_rows_of(run_config: dict):
    """The exact rows a classifier run trained on, for the TF-IDF baseline's training."""
    labels = run_config.get("labels")
    loaded = data.load_classification_dataset(run_config["dataset"], labels=labels.split(",") if labels else None)
    return data.sample_rows(loaded.splits[run_config["split"]], run_config.get("limit"), run_config["seed"])


def check_same_labels(runs: dict[str, str]) -> None:
    """Refuse to compare a Q->A and a Q->RA run trained on different label sets (each run's config.json names them):
    their predictions would be scored against labels one of them never learned."""
    if len(runs) < 2:
        return
    labels = {side: rundir.read_json(Path(path) / rundir.CONFIG, {}).get("label_names") for side, path in runs.items()}
    if labels.get("qa") and labels.get("qra") and set(labels["qa"]) != set(labels["qra"]):
        raise ConfigError(
            f"These runs were trained on different label sets: the Q→A run {Path(runs['qa']).name} on {labels['qa']}, "
            f"the Q→RA run {Path(runs['qra']).name} on {labels['qra']}; compare runs trained on the same dataset's labels"
        )


def side_configs(runs: dict[str, str]) -> dict[str, dict]:
    """Each side's run config ({"qa": dir, "qra": dir}), checked against the tasks that side takes and, for a pair,
    for one label set."""
    configs = {}
    for side, path in runs.items():
        configs[side] = rundir.read_config(Path(path))
        task = configs[side].get("task")
        if task not in SIDE_TASKS[side]:
            raise ConfigError(f"{path} is a {task} run; the {SIDE_NAMES[side]} side takes {' or '.join(SIDE_TASKS[side])} runs")
    check_same_labels(runs)
    return configs


def check_output_dir(out: Path, runs: dict[str, str], overwrite: bool = False) -> None:
    """Refuse to write this evaluation of `runs` where it would replace the evaluation of other runs, or, unless
    `overwrite`, an earlier evaluation of these runs (its rows and sample may differ: a 20-row check replacing a
    300-row report without a word was what a user met).

    A directory inside a run directory (`<run>/eval-test`) is that run's: its report.md feeds the run's
    model card, so only an evaluation that includes the run may write there. Elsewhere a directory belongs
    to the runs its metrics.json names (the `runs` this function writes); a report.md without one is not ours.
    Runs are compared by resolved path.
    """
    out = Path(out)
    evaluated = {Path(path).resolve() for path in runs.values()}
    names = ", ".join(str(path) for path in runs.values())
    owner = out.resolve().parent
    previous = rundir.read_json(out / "metrics.json")
    if (owner / rundir.CONFIG).is_file():
        if owner not in evaluated:
            raise RunDirError(
                f"{out} is the evaluation directory of the run {owner}, which this evaluation (of {names}) does not include; "
                "its report.md feeds that run's model card: choose another --output-dir"
            )
        _check_replacing(out, previous, overwrite)
        return
    if isinstance(previous, dict) and isinstance(previous.get("runs"), dict):
        if {Path(path).resolve() for path in previous["runs"].values()} != evaluated:
            raise RunDirError(
                f"{out} holds the evaluation of other runs ({', '.join(map(str, previous['runs'].values()))}); this one evaluates "
                f"{names}: choose another --output-dir"
            )
    elif (out / "report.md").exists():
        raise RunDirError(f"{out} holds a report.md that is not an evaluation of these runs ({names}): choose another --output-dir")
    _check_replacing(out, previous, overwrite)


def _check_replacing(out: Path, previous, overwrite: bool) -> None:
    if isinstance(previous, dict) and not overwrite:
        rows = f" of {previous['rows']} rows" if isinstance(previous.get("rows"), int) else ""
        raise RunDirError(f"{out} already holds an evaluation{rows} of these runs; pass --overwrite to replace it, or choose another --output-dir")


def evaluate(config: EvalConfig) -> dict:
    """Evaluate the given runs (and TF-IDF) on the split; write the report; return metrics.json's content."""
    from training.predict import Classifiers

    runs = {"qa": config.qa_run, "qra": config.qra_run}
    runs = {name: path for name, path in runs.items() if path}
    run_configs = side_configs(runs)
    check_output_dir(Path(config.output_dir), runs, config.overwrite)

    source = _source_dataset(config, run_configs)
    loaded = data.load_classification_dataset(source, labels=config.labels.split(",") if config.labels else None)
    for name, run_config in run_configs.items():
        if run_config["label_names"] != loaded.label_names:
            raise DataError(f"the {name} run's labels {run_config['label_names']} differ from {source}'s {loaded.label_names}")
    if config.split not in loaded.splits:
        raise DataError(f"{source} has no split {config.split!r} (splits: {list(loaded.splits)})")
    rows = data.sample_rows(loaded.splits[config.split], config.limit, config.seed)
    texts, gold = list(rows["text"]), list(rows["label"])
    label_names = loaded.label_names

    systems: dict[str, list[int | None]] = {}
    details: dict[str, list[dict]] = {}
    timings: dict[str, float] = {}
    classifiers = Classifiers(runs)
    if "qa" in runs:
        if config.qa_mode in ("both", "scored"):
            started = time.time()
            systems["qa_scored"], details["qa_scored"] = predict_labels(classifiers, "qa", texts, config.batch_size)
            timings["qa_scored"] = time.time() - started
        if config.qa_mode in ("both", "generated"):
            started = time.time()
            predictions = classifiers.predict("qa", texts, batch_size=config.batch_size, progress=progress_bar("qa generation"))
            timings["qa_generated"] = time.time() - started
            systems["qa_generated"] = [p.label_index for p in predictions]
            details["qa_generated"] = [{"output": p.raw, "status": p.status} for p in predictions]
    reasoning_key = None
    if "qra" in runs:
        reasoning_key = run_configs["qra"]["task"]
        started = time.time()
        systems[reasoning_key], details[reasoning_key] = predict_labels(
            classifiers, "qra", texts, config.batch_size, config.max_new_tokens
        )
        timings[reasoning_key] = time.time() - started
    del classifiers

    started = time.time()
    train_rows = _training_rows_of(run_configs["qa"] if "qa" in run_configs else run_configs["qra"])
    training_rows = {side: len(train_rows) if side == ("qa" if "qa" in run_configs else "qra") else len(_training_rows_of(cfg))
                     for side, cfg in run_configs.items()}
    systems["tfidf"] = tfidf_baseline(list(train_rows["text"]), list(train_rows["label"]), texts, config.seed)
    timings["tfidf"] = time.time() - started

    metrics = {name: classification_metrics(gold, predicted, label_names) for name, predicted in systems.items()}
    for name in metrics:
        metrics[name]["wall_s"] = round(timings[name], 2)
        metrics[name]["rows_per_s"] = round(len(texts) / timings[name], 2) if timings[name] else None
    correct = {name: [p == g for p, g in zip(predicted, gold, strict=True)] for name, predicted in systems.items()}
    model_systems = [name for name in systems if name != "tfidf"]
    tests = {
        f"{a} vs {b}": mcnemar(correct[a], correct[b])
        for i, a in enumerate(model_systems)
        for b in model_systems[i + 1 :]
    }
    direct = "qa_scored" if "qa_scored" in systems else ("qa_generated" if "qa_generated" in systems else None)
    summary = None
    if direct and reasoning_key:
        summary = verdict(metrics, tests.get(f"{direct} vs {reasoning_key}"), reasoning_key, direct)

    report = {
        "dataset": source,
        "split": config.split,
        "rows": len(texts),
        "label_names": label_names,
        "runs": {name: str(path) for name, path in runs.items()},
        "tfidf_training_rows": len(train_rows),
        "training_rows": training_rows,  # each run's training rows: a Q→RA run trains on the reviewed export, often fewer
        "systems": metrics,
        "mcnemar": tests,
        "verdict": summary,
        "config": dataclasses.asdict(config),
    }
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_json(out / "metrics.json", report)
    _write_predictions(out / "predictions.jsonl", texts, gold, label_names, systems, details)
    (out / "report.md").write_text(markdown_report(report))
    plot_report(report, out)
    return report


def _write_predictions(path: Path, texts, gold, label_names, systems, details) -> None:
    with open(path, "w") as handle:
        for i, text in enumerate(texts):
            row = {"text": text, "gold": label_names[gold[i]]}
            for name, predicted in systems.items():
                row[name] = label_names[predicted[i]] if predicted[i] is not None else INVALID
                for key, value in details.get(name, [{}] * len(texts))[i].items():
                    row[f"{name}_{key}"] = value
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def training_rows_note(report: dict) -> str:
    """What each system trained on: TF-IDF on the Q→A run's rows (else the Q→RA run's), and whether the runs differ."""
    rows = report.get("training_rows") or {}
    tfidf_side = "Q→A" if "qa" in rows or not rows else "Q→RA"
    note = f"TF-IDF was trained on the {report['tfidf_training_rows']} training rows of the {tfidf_side} run"
    if len(rows) < 2:
        return note + "."
    if rows["qa"] != rows["qra"]:
        return f"{note}. The runs trained on different rows: Q→A on {rows['qa']}, Q→RA on {rows['qra']}, so the comparison is not like for like."
    return f"{note}; the Q→RA run trained on {rows['qra']} rows too."


def markdown_report(report: dict) -> str:
    lines = [
        f"# Evaluation on {display_name(report['dataset'])} / {report['split']} ({report['rows']} rows)",
        "",
        "| system | accuracy | macro-F1 | invalid | rows/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, m in report["systems"].items():
        lines.append(
            f"| {SYSTEM_TITLES.get(name, name)} | {m['accuracy'] * 100:.1f}% | {m['macro_f1'] * 100:.1f}% | "
            f"{m['invalid_rate'] * 100:.1f}% | {m['rows_per_s'] or '–'} |"
        )
    lines.append("")
    lines.append(training_rows_note(report))
    if report["verdict"]:
        lines += ["", f"**{report['verdict']}**"]
    if report["mcnemar"]:
        lines += ["", "| McNemar | only first correct | only second correct | p |", "| --- | ---: | ---: | ---: |"]
        for pair, test in report["mcnemar"].items():
            lines.append(f"| {pair} | {test['only_a_correct']} | {test['only_b_correct']} | {test['p_value']:.3g} |")
    lines += ["", "## Per-class F1", "", "| label | " + " | ".join(SYSTEM_TITLES.get(n, n) for n in report["systems"]) + " |"]
    lines.append("| --- |" + " ---: |" * len(report["systems"]))
    for label in report["label_names"]:
        cells = [f"{m['per_class'][label]['f1'] * 100:.1f}" for m in report["systems"].values()]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Plots: `confusion.png`, `per_class_f1.png`."]
    return "\n".join(lines) + "\n"


def plot_report(report: dict, out: Path) -> None:
    """Confusion matrices side by side, and per-class F1 bars grouped by system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    systems = report["systems"]
    labels = report["label_names"]
    fig, axes = plt.subplots(1, len(systems), figsize=(4.2 * len(systems), 4.2), squeeze=False)
    for ax, (name, m) in zip(axes[0], systems.items(), strict=True):
        matrix = np.array(m["confusion_matrix"])
        ax.imshow(matrix, cmap="Blues")
        ax.set_title(f"{SYSTEM_TITLES.get(name, name)}\nacc {m['accuracy'] * 100:.1f}%", fontsize=9)
        ax.set_xticks(range(len(m["confusion_columns"])), m["confusion_columns"], rotation=60, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("gold", fontsize=8)
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                ax.text(j, i, str(value), ha="center", va="center", fontsize=6, color="black" if value < matrix.max() / 2 else "white")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(labels)), 3.6))
    width = 0.8 / len(systems)
    for k, (name, m) in enumerate(systems.items()):
        values = [m["per_class"][label]["f1"] for label in labels]
        ax.bar(np.arange(len(labels)) + k * width, values, width, label=SYSTEM_TITLES.get(name, name))
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "per_class_f1.png", dpi=110)
    plt.close(fig)

