"""Does reasoning help? Q->A against reasoning variants, over training sizes and seeds, from one YAML file.

    python -m training compare --config configs/compare-small.yaml

One R-Gen (Stage 1) serves every variant. Each *reasoning source* (R-Gen or the bare base model, a prompt
variant, sampled candidates, an export policy) has one review store that grows as samples need rows.
Each *job* is a (variant, N, seed): it trains on the first N rows of the training split shuffled with
that seed (so N=500 is part of N=2000), then predicts a fixed validation sample and the test split.
Every step is cached on disk, so the run can be killed and continued in a later session; the report is
rewritten after each job from whatever has finished, and lists what has not.

The best variant is chosen on validation accuracy only; its test result is then set against Q->A with
McNemar's test on the same test rows, per seed.
"""

from __future__ import annotations

import functools
import json
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from reasonapp import settings
from reasonapp.errors import ConfigError, RunDirError, RunStopped
from training import rundir
from training.experiment import (
    _finished,
    _stage_hash,
    _train_stage,
    check_augment_section,
    is_whole_number,
    read_yaml_config,
)

logger = logging.getLogger(__name__)

DIRECT = "qa"
DEFAULTS = {
    "name": "comparison",
    "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "dataset": "dair-ai/emotion",
    "reasoning_dataset": "syvai/reasoning-gen",
    "n_train": [500, 2000],
    "seeds": [0, 1, 2],
    "rgen": {},
    "augment": {"batch_size": 32, "max_new_tokens": 64},
    "sources": {"rgen": {}},
    "variants": {"qa": {"task": "qa"}, "qra": {"task": "qra", "source": "rgen"}},
    "train": {},
    "evaluate": {"validation_rows": 500, "test_rows": None, "batch_size": 16, "max_new_tokens": 96},
}
SOURCE_KEYS = {"rgen": "stage1", "prompt_variant": "default", "candidates": 1, "policy": "keep-all"}
# Keys added later: filled in only where read, so the sources written before them keep their cache keys.
OPTIONAL_SOURCE_KEYS = {"dropped": "remove"}


@dataclass(frozen=True)
class Job:
    variant: str
    n_train: int
    seed: int

    @property
    def label(self) -> str:
        return f"{self.variant} N={self.n_train} seed={self.seed}"


def _dropped(source: dict) -> str:
    return source.get("dropped", OPTIONAL_SOURCE_KEYS["dropped"])


def load_comparison_config(path: str | Path) -> dict:
    """Read and check a comparison YAML; unknown keys and dangling names are errors, not surprises."""
    from reasonapp.prompts import CLASSIFIER_FORMATS, RGEN_INSTRUCTIONS, get_format
    from reasonapp.quality import DROPPED_ROWS, EXPORT_POLICIES
    from training.sft import check_training_overrides

    config = read_yaml_config(path, DEFAULTS, "comparison", ("augment", "evaluate"))
    sources = {}
    for name, source in (config["sources"] or {}).items():
        known = {**SOURCE_KEYS, **OPTIONAL_SOURCE_KEYS}
        extra = sorted(set(source or {}) - set(known))
        if extra:
            raise ConfigError(f"reasoning source {name!r} has unknown keys {extra}; known: {sorted(known)}")
        source = {**SOURCE_KEYS, **(source or {})}
        if source["rgen"] != "stage1" and not str(source["rgen"]).startswith("base"):
            raise ConfigError(f"source {name!r}: rgen is 'stage1' (the trained R-Gen) or 'base' (the instruct model as is)")
        if source["prompt_variant"] not in RGEN_INSTRUCTIONS:
            raise ConfigError(f"source {name!r}: prompt_variant must be one of {sorted(RGEN_INSTRUCTIONS)}")
        if source["policy"] not in EXPORT_POLICIES:
            raise ConfigError(f"source {name!r}: policy must be one of {sorted(EXPORT_POLICIES)}")
        if _dropped(source) not in DROPPED_ROWS:
            raise ConfigError(f"source {name!r}: dropped must be one of {list(DROPPED_ROWS)}")
        sources[name] = source
    config["sources"] = sources
    if DIRECT not in config["variants"]:
        raise ConfigError(f"the variants must include {DIRECT!r}: every variant is compared with Q->A")
    for name, variant in config["variants"].items():
        task = (variant or {}).get("task")
        if task not in CLASSIFIER_FORMATS:
            raise ConfigError(f"variant {name!r}: task must be one of {list(CLASSIFIER_FORMATS)}")
        if get_format(task).uses_reasoning and variant.get("source") not in sources:
            raise ConfigError(f"variant {name!r} ({task}) needs a source, one of {sorted(sources)}")
        blanked = get_format(task).uses_reasoning and _dropped(sources[variant["source"]]) == "blank"
        if blanked and not get_format(task).answers_with_label_only:
            raise ConfigError(f"variant {name!r}: {task} writes a reasoning for every row; its source cannot keep rows with blank ones")
    if not config["n_train"] or not config["seeds"]:
        raise ConfigError("n_train and seeds must each list at least one value")
    check_training_overrides(config["train"] or {}, "comparison section 'train'")
    check_augment_section(config["augment"], "comparison section 'augment'")
    for key, smallest in (("n_train", 1), ("seeds", 0)):  # found now, not hours later at the job that uses it
        if not isinstance(config[key], list) or not all(is_whole_number(value, smallest) for value in config[key]):
            raise ConfigError(f"{key} must be a list of whole numbers of at least {smallest}; got {config[key]!r}")
    return config


def plan(config: dict, only: list[str] | None = None, n_train: list[int] | None = None) -> list[Job]:
    """Jobs in the order they run: seed by seed (a full seed is worth more than a half of three),
    largest N first within a seed (the question is asked at the largest N), Q->A first.

    `only` and `n_train` narrow the plan so the jobs that decide the question can run first (e.g. the
    leading variant's seeds at the largest N); Q->A stays in, since every variant is measured against it.
    """
    unknown = sorted(set(only or []) - set(config["variants"])) + sorted(set(n_train or []) - set(config["n_train"]))
    if unknown:
        raise ConfigError(
            f"not in this comparison: {unknown}; variants: {list(config['variants'])}, n_train: {config['n_train']}"
        )
    variants = [DIRECT] + [name for name in config["variants"] if name != DIRECT and (not only or name in only)]
    sizes = [n for n in config["n_train"] if not n_train or n in n_train]
    return [Job(variant, n, seed) for seed in config["seeds"] for n in sorted(sizes, reverse=True) for variant in variants]


class Comparison:
    """The cached steps of one comparison under `root`; `run()` does what is missing, job by job."""

    def __init__(self, config: dict, root: str | Path | None = None):
        self.config = config
        self.root = Path(root) if root else settings.workspace_dir() / "experiments" / config["name"]
        self.root.mkdir(parents=True, exist_ok=True)
        self.common = {"base_model": config["base_model"], "seed": 0}
        # R-Gen is shared by every variant and seed; its hash is the experiment module's, so an
        # `experiment` R-Gen with the same settings can be copied in and reused.
        self.rgen_key = _stage_hash(self.common, config["reasoning_dataset"], config["rgen"])
        self.rgen_dir = self.root / f"rgen-{self.rgen_key}"

    @functools.cached_property
    def dataset(self):
        """The classification dataset, read once: every sample, evaluation and report uses it."""
        from reasonapp import data

        return data.load_classification_dataset(self.config["dataset"])

    # ---- steps

    def ensure_rgen(self) -> Path:
        if not _finished(self.rgen_dir):
            base = {**self.common, "dataset": self.config["reasoning_dataset"]}
            _train_stage("rgen", self.rgen_dir, base, self.config["rgen"])
        return self.rgen_dir

    def _source_key(self, name: str) -> str:
        source = self.config["sources"][name]
        generator = self.rgen_key if source["rgen"] == "stage1" else source["rgen"]
        return _stage_hash(generator, self.config["dataset"], source["prompt_variant"], source["candidates"], self.config["augment"])

    def ensure_dataset(self, source_name: str, n_train: int, seed: int) -> Path:
        """The augmented training set of one sample: Stage 2 fills the source's store, then export."""
        from reasonapp import data
        from training.augment import BASE_PREFIX, augment_to_store, export_store
        from training.generation import Decoding, progress_bar

        source = self.config["sources"][source_name]
        key = self._source_key(source_name)
        out = self.dataset_dir(source_name, n_train, seed)
        if (out / "train.jsonl").is_file():
            return out
        # sources that differ only in how they export (policy, dropped rows) generate the same reasonings: one store
        shared = sorted(self.root.glob(f"reasonings-*-{key}/store.sqlite"))
        store = shared[0] if shared else self.root / f"reasonings-{source_name}-{key}" / "store.sqlite"
        store.parent.mkdir(parents=True, exist_ok=True)
        if source["rgen"] == "stage1":
            generator = str(self.ensure_rgen())
        else:  # "base" or "base:<model>"
            generator = BASE_PREFIX + (str(source["rgen"]).partition(":")[2] or self.config["base_model"])
        augment = self.config["augment"]
        augment_to_store(
            generator, self.config["dataset"], store, "train", n_train, seed, Decoding(max_new_tokens=augment["max_new_tokens"]),
            augment["batch_size"], progress_bar(f"Stage 2 {source_name} N={n_train} seed={seed}"),
            prompt_variant=source["prompt_variant"], candidates=source["candidates"],
        )
        loaded = self.dataset
        split = loaded.splits["train"].add_column("row_index", list(range(len(loaded.splits["train"]))))
        rows = data.sample_rows(split, n_train, seed)["row_index"]
        export_store(store, out, include_pending=True, policy=source["policy"], source_rows=rows, dropped=_dropped(source))
        return out

    def dataset_dir(self, source_name: str, n_train: int, seed: int) -> Path:
        """Where one sample's augmented training set is exported (`ensure_dataset` makes it)."""
        source = self.config["sources"][source_name]
        blank = "-blank" if _dropped(source) == "blank" else ""
        return self.root / f"data-{source_name}-{self._source_key(source_name)}-{source['policy']}{blank}-n{n_train}-s{seed}"

    def run_dir(self, job: Job) -> Path:
        variant = self.config["variants"][job.variant]
        source = variant.get("source")
        source_key = self._source_key(source) if source else None
        key = _stage_hash(self.common["base_model"], self.config["dataset"], variant, source_key, self.config["sources"].get(source), self.config["train"], job.n_train)
        return self.root / f"{job.variant}-n{job.n_train}-s{job.seed}-{key}"

    def ensure_trained(self, job: Job) -> Path:
        run_dir = self.run_dir(job)
        if _finished(run_dir):
            return run_dir
        variant = self.config["variants"][job.variant]
        base = {"base_model": self.config["base_model"], "seed": job.seed}
        if variant.get("source"):
            base["dataset"] = str(self.ensure_dataset(variant["source"], job.n_train, job.seed))
        else:
            base.update(dataset=self.config["dataset"], limit=job.n_train)
        _train_stage(variant["task"], run_dir, base, self.config["train"])
        return run_dir

    def eval_rows(self, split: str) -> tuple[list[str], list[int], list[str]]:
        """The fixed rows every job is judged on: a validation sample (seed 0) and the test split."""
        from reasonapp import data

        loaded = self.dataset
        limit = self.config["evaluate"]["validation_rows" if split == "validation" else "test_rows"]
        rows = data.sample_rows(loaded.splits[split], limit, 0)
        return list(rows["text"]), list(rows["label"]), loaded.label_names

    def ensure_evaluated(self, job: Job) -> dict[str, dict]:
        """Predictions of a trained job on validation and test, each cached in the run directory."""
        from training.evaluate import classification_metrics, predict_labels
        from training.predict import Classifiers

        run_dir = self.run_dir(job)
        results, classifiers = {}, None
        for split in ("validation", "test"):
            path = run_dir / f"comparison-{split}.json"
            cached = rundir.read_json(path)
            if cached is None:
                texts, gold, label_names = self.eval_rows(split)
                classifiers = classifiers or Classifiers({job.variant: run_dir})
                evaluation = self.config["evaluate"]
                started = time.time()
                predicted, details = predict_labels(classifiers, job.variant, texts, evaluation["batch_size"], evaluation["max_new_tokens"])
                cached = {
                    "split": split,
                    "predicted": predicted,
                    "gold": gold,
                    "outputs": [d.get("output") for d in details] if "output" in details[0] else None,
                    "metrics": classification_metrics(gold, predicted, label_names),
                    "wall_s": round(time.time() - started, 1),
                }
                rundir.write_json(path, cached)
            results[split] = cached
        return results

    def tfidf(self, n_train: int, seed: int) -> dict[str, dict]:
        """TF-IDF + logistic regression on the same N rows: the floor any LLM variant should clear.

        Fitted once per sample and cached like every other step, since the report is rewritten after each job.
        """
        from reasonapp import data
        from training.evaluate import classification_metrics, tfidf_baseline

        evaluation = self.config["evaluate"]
        key = _stage_hash(self.config["dataset"], n_train, seed, evaluation["validation_rows"], evaluation["test_rows"])
        path = self.root / f"tfidf-n{n_train}-s{seed}-{key}.json"
        cached = rundir.read_json(path)
        if cached is not None:
            return cached
        train = data.sample_rows(self.dataset.splits["train"], n_train, seed)
        splits = {split: self.eval_rows(split) for split in ("validation", "test")}
        predicted = tfidf_baseline(list(train["text"]), list(train["label"]), [t for texts, _, _ in splits.values() for t in texts], seed)
        results, start = {}, 0
        for split, (texts, gold, label_names) in splits.items():
            ours = predicted[start : start + len(texts)]
            results[split] = {"predicted": ours, "gold": gold, "metrics": classification_metrics(gold, ours, label_names)}
            start += len(texts)
        rundir.write_json(path, results)
        return results

    # ---- the loop

    def run(
        self,
        max_jobs: int | None = None,
        deadline: float | None = None,
        only: list[str] | None = None,
        n_train: list[int] | None = None,
    ) -> dict:
        """Finish jobs in plan order until all are done, `max_jobs` have run, or `deadline` (epoch s) passes.
        `only`/`n_train` run a part of the plan first (see `plan`); the report always covers all of it."""
        timings = rundir.read_json(self.root / "timings.json", {})
        ran = 0
        for job in plan(self.config, only, n_train):
            if (self.run_dir(job) / "comparison-test.json").is_file():
                continue
            if (max_jobs is not None and ran >= max_jobs) or (deadline is not None and time.time() >= deadline):
                logger.info("stopping before %s (limit reached); run again to continue", job.label)
                break
            logger.info("comparison job %s", job.label)
            try:
                self._timed(self.ensure_trained, job, timings)
            except RunStopped as stopped:  # STOP file or SIGTERM: the report still covers what finished
                logger.warning("%s", stopped)
                break
            self._timed(self.ensure_evaluated, job, timings)
            ran += 1
            self.write_report()
        return self.write_report()

    def _timed(self, step, job: Job, timings: dict):
        """Run a step of a job; its wall time adds to the job's (a stopped and resumed job keeps both parts)."""
        started = time.time()
        try:
            return step(job)
        finally:  # a stopped step's time too: the job's total is every part it took
            timings[job.label] = round(timings.get(job.label, 0.0) + time.time() - started, 1)
            rundir.write_json(self.root / "timings.json", timings)

    def collect(self) -> tuple[dict, list[Job]]:
        """Finished results by (variant, N, seed) and the jobs still missing."""
        results, missing = {}, []
        for job in plan(self.config):
            validation = rundir.read_json(self.run_dir(job) / "comparison-validation.json")
            test = rundir.read_json(self.run_dir(job) / "comparison-test.json")
            if validation and test:
                results[(job.variant, job.n_train, job.seed)] = {"validation": validation, "test": test}
            else:
                missing.append(job)
        return results, missing

    def write_report(self) -> dict:
        results, missing = self.collect()
        tfidf = {(n, seed): self.tfidf(n, seed) for (_, n, seed) in results}
        report = summarize(results, tfidf, list(self.config["variants"]), missing)
        timings = rundir.read_json(self.root / "timings.json", {})  # a stopped job's part is kept until it finishes
        finished = [Job(*key).label for key in results]
        report["timings_s"] = {label: timings[label] for label in finished if label in timings}
        report["examples"] = self._examples(report, results)
        report["reasoning_quality"] = self._reasoning_quality(report, results)
        if report["choice"]["n_train"]:
            n, label_names = report["choice"]["n_train"], self.dataset.label_names
            report["recall_by_class"] = recall_by_class(results, report["variants"], n)
            report["reasoning_decides"] = reasoning_decides(results, self.config["variants"], n, label_names)
        rundir.write_json(self.root / "comparison.json", report)
        (self.root / "comparison.md").write_text(markdown(report, self.config))
        if results:
            plot_learning_curve(report, self.root / "learning_curve.png")
        return report

    def _reasoning_quality(self, report: dict, results: dict) -> dict:
        """Quality signals of each source's reasonings in one sample at the largest N, beside its variants' results."""
        from reasonapp.quality import quality_summary

        n = report["choice"]["n_train"]
        by_source = {}
        for name, variant in self.config["variants"].items():
            seeds = sorted(s for (v, nn, s) in results if v == name and nn == n)
            if variant.get("source") and seeds:
                by_source.setdefault(variant["source"], {"seeds": set(), "variants": {}})
                by_source[variant["source"]]["seeds"].update(seeds)
                tests = report["table"][f"{name}@{n}"]["mcnemar_vs_qa"].values()
                difference = statistics.fmean(t["difference_points"] for t in tests) if tests else None
                by_source[variant["source"]]["variants"][name] = difference
        summaries = {}
        for source, used in by_source.items():
            seed = min(used["seeds"])
            path = self.dataset_dir(source, n, seed) / "train.jsonl"
            if path.is_file():
                with open(path, encoding="utf-8") as handle:
                    rows = [json.loads(line) for line in handle]
                summaries[source] = {**quality_summary(rows), "n_train": n, "seed": seed, "variants_vs_qa": used["variants"]}
        return summaries

    def _examples(self, report: dict, results: dict, count: int = 3) -> dict:
        """Training reasonings (and, for qra/qar, test outputs) of the best and worst reasoning variants."""
        examples = {}
        for role in ("best", "worst"):
            name = report["choice"].get(f"{role}_variant")
            variant = self.config["variants"].get(name or "", {})
            if not variant.get("source"):
                continue
            n = report["choice"]["n_train"]
            seed = min(s for (v, nn, s) in results if v == name and nn == n)
            dataset = self.ensure_dataset(variant["source"], n, seed)
            with open(dataset / "train.jsonl", encoding="utf-8") as handle:
                rows = [json.loads(line) for _, line in zip(range(count), handle, strict=False)]
            entry = {"variant": name, "training": [{k: r[k] for k in ("text", "label", "reasoning")} for r in rows]}
            test = rundir.read_json(self.run_dir(Job(name, n, seed)) / "comparison-test.json")
            if test and test.get("outputs"):
                texts, _, label_names = self.eval_rows("test")
                entry["test_outputs"] = [
                    {"text": texts[i], "gold": label_names[test["gold"][i]], "output": test["outputs"][i]} for i in range(count)
                ]
            examples[role] = entry
        return examples


def report_dirs() -> list[str]:
    """Comparisons that have written a report: the workspace's (`compare` without `--root`), then those in docs/."""
    own = sorted(path.parent for path in (settings.workspace_dir() / "experiments").glob("*/comparison.md"))
    shipped = sorted(path.parent for path in (settings.PROJECT_ROOT / "docs").glob("*/comparison.md"))
    return [str(path) for path in own + shipped]


def read_report(directory: str | Path) -> tuple[str, Path | None]:
    """A comparison's markdown report and its learning-curve plot (None until a job has finished)."""
    path = Path(directory) / "comparison.md"
    if not path.is_file():
        raise RunDirError(f"{directory} holds no comparison report (comparison.md): run `python -m training compare --root {directory}`")
    plot = path.with_name("learning_curve.png")
    return path.read_text(encoding="utf-8"), plot if plot.is_file() else None


# ---------------------------------------------------------------------------------------------
# aggregation and report: pure functions of the per-job results


def _spread(values: list[float]) -> dict:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "seeds": len(values),
    }


def summarize(results: dict, tfidf: dict, variants: list[str], missing: list[Job]) -> dict:
    """Means and spreads per (variant, N), McNemar of each variant against Q->A per seed, the choice on validation."""
    from training.evaluate import mcnemar

    sizes = sorted({n for (_, n, _) in results})
    table = {}
    for variant in variants:
        for n in sizes:
            seeds = sorted(s for (v, nn, s) in results if v == variant and nn == n)
            if not seeds:
                continue
            runs = [results[(variant, n, s)] for s in seeds]
            entry = {
                "seeds": seeds,
                "validation_accuracy": _spread([r["validation"]["metrics"]["accuracy"] for r in runs]),
                "test_accuracy": _spread([r["test"]["metrics"]["accuracy"] for r in runs]),
                "test_macro_f1": _spread([r["test"]["metrics"]["macro_f1"] for r in runs]),
                "test_invalid_rate": _spread([r["test"]["metrics"]["invalid_rate"] for r in runs]),
                "mcnemar_vs_qa": {},
            }
            for seed in seeds:
                direct = results.get((DIRECT, n, seed))
                if variant != DIRECT and direct:
                    ours, theirs = results[(variant, n, seed)]["test"], direct["test"]
                    correct = [p == g for p, g in zip(ours["predicted"], ours["gold"], strict=True)]
                    correct_qa = [p == g for p, g in zip(theirs["predicted"], theirs["gold"], strict=True)]
                    test = mcnemar(correct, correct_qa)
                    test["difference_points"] = (ours["metrics"]["accuracy"] - theirs["metrics"]["accuracy"]) * 100
                    entry["mcnemar_vs_qa"][str(seed)] = test
            table[f"{variant}@{n}"] = entry
    tfidf_table = {}
    for n in sizes:
        seeds = sorted(s for (nn, s) in tfidf if nn == n)
        if seeds:
            tfidf_table[str(n)] = {"test_accuracy": _spread([tfidf[(n, s)]["test"]["metrics"]["accuracy"] for s in seeds])}
    return {
        "sizes": sizes,
        "variants": variants,
        "table": table,
        "tfidf": tfidf_table,
        "choice": choose(table, variants, sizes),
        "missing": [job.label for job in missing],
    }


def choose(table: dict, variants: list[str], sizes: list[int]) -> dict:
    """At the largest N: the reasoning variant with the best mean validation accuracy (never test), and the worst."""
    if not sizes:
        return {"n_train": None, "best_variant": None, "worst_variant": None, "verdict": "No job has finished yet."}
    n = sizes[-1]
    candidates = [v for v in variants if v != DIRECT and f"{v}@{n}" in table]
    if not candidates:
        return {"n_train": n, "best_variant": None, "worst_variant": None, "verdict": f"No reasoning variant has finished at N={n} yet."}
    by_validation = sorted(candidates, key=lambda v: table[f"{v}@{n}"]["validation_accuracy"]["mean"], reverse=True)
    best, worst = by_validation[0], by_validation[-1]
    return {"n_train": n, "best_variant": best, "worst_variant": worst, "verdict": verdict_line(table, best, n)}


def recall_by_class(results: dict, variants: list[str], n: int) -> dict:
    """Test recall of each class per variant at N (mean over its seeds) and its commonest error, read from each
    job's test metrics (`evaluate.classification_metrics`: per-class scores and the confusion matrix).

    Accuracy hides where a variant loses: a reasoning-first classifier can keep the large classes and
    drop a small one to a template that names another label. Invalid outputs are the matrix's last column.
    """
    by_variant = {}
    for variant in variants:
        metrics = [results[key]["test"]["metrics"] for key in sorted(results) if key[0] == variant and key[1] == n]
        if not metrics:
            continue
        per_class, columns = metrics[0]["per_class"], metrics[0]["confusion_columns"]
        present = [name for name, scores in per_class.items() if scores["support"]]
        errors: dict[tuple[int, int], int] = {}
        for job in metrics:
            for gold, row in enumerate(job["confusion_matrix"]):
                for predicted, rows in enumerate(row):
                    if gold != predicted and rows:
                        errors[(gold, predicted)] = errors.get((gold, predicted), 0) + rows
        commonest = None
        if errors:
            (gold, predicted), rows = max(errors.items(), key=lambda item: item[1])
            commonest = {"gold": columns[gold], "predicted": columns[predicted], "rows_per_seed": rows / len(metrics)}
        by_variant[variant] = {
            "seeds": len(metrics),
            "support": {name: per_class[name]["support"] for name in present},
            "recall": {name: statistics.fmean(job["per_class"][name]["recall"] for job in metrics) for name in present},
            "commonest_error": commonest,
        }
    return by_variant


def reasoning_decides(results: dict, variants: dict, n: int, label_names: list[str]) -> dict:
    """Does a reasoning-first variant's reasoning decide its label? On the test rows whose reasoning names exactly
    one label: how often the final label is that one, and the accuracy there against Q->A's on the same rows.

    A final line that copies the label the reasoning already named means the reasoning, written first, makes the
    decision; whether that helps shows in the two accuracies side by side.
    """
    from reasonapp.prompts import LabelSpace, get_format
    from reasonapp.quality import mentions

    labels = LabelSpace(tuple(label_names))
    by_variant = {}
    for name, spec in variants.items():
        fmt = get_format(spec["task"])
        seeds = sorted(s for (v, nn, s) in results if v == name and nn == n and (DIRECT, n, s) in results)
        if fmt.layout != "reasoning_label" or not seeds:
            continue
        rows = named = follows = right = right_qa = 0
        for seed in seeds:
            test, direct = results[(name, n, seed)]["test"], results[(DIRECT, n, seed)]["test"]
            if not test.get("outputs"):  # evaluated before outputs were kept: nothing to read
                continue
            for output, predicted, gold, predicted_qa in zip(
                test["outputs"], test["predicted"], test["gold"], direct["predicted"], strict=True
            ):
                rows += 1
                reasoning = fmt.parse(output, labels).reasoning
                named_labels = [index for index, label in enumerate(label_names) if mentions(reasoning, label)]
                if len(named_labels) == 1:
                    named += 1
                    follows += predicted == named_labels[0]
                    right += predicted == gold
                    right_qa += predicted_qa == gold
        if not rows:
            continue
        by_variant[name] = {
            "seeds": len(seeds),
            "names_one_label": named / rows,
            "label_follows": follows / named if named else None,
            "accuracy": right / named if named else None,
            "qa_accuracy": right_qa / named if named else None,
        }
    return by_variant


def verdict_line(table: dict, variant: str, n: int) -> str:
    """Plain words: did the variant chosen on validation beat Q->A on test, significantly, in every seed?"""
    entry, direct = table[f"{variant}@{n}"], table.get(f"{DIRECT}@{n}")
    if direct is None:
        return f"{variant} was chosen on validation at N={n}, but Q->A has not finished there yet: no comparison."
    ours, theirs = entry["test_accuracy"]["mean"] * 100, direct["test_accuracy"]["mean"] * 100
    tests = entry["mcnemar_vs_qa"]
    if tests and len(tests) == entry["test_accuracy"]["seeds"]:  # Q->A on the variant's own seeds, not all of its own
        theirs = ours - sum(t["difference_points"] for t in tests.values()) / len(tests)
    p_values = ", ".join(f"seed {s}: p = {t['p_value']:.2g}" for s, t in tests.items())
    seeds = f"{len(tests)} seed{'s' if len(tests) != 1 else ''}"
    head = f"At N={n}, {variant} (best on validation) scored {ours:.1f}% on test against Q->A's {theirs:.1f}% ({seeds}; {p_values})."
    significant = [t for t in tests.values() if t["p_value"] < 0.05]
    if tests and len(significant) == len(tests) and all(t["difference_points"] > 0 for t in tests.values()):
        return head + " Reasoning helped: better than Q->A with p < 0.05 in every seed."
    if tests and len(significant) == len(tests) and all(t["difference_points"] < 0 for t in tests.values()):
        return head + " Reasoning hurt: worse than Q->A with p < 0.05 in every seed."
    return head + " No variant beat Q->A with p < 0.05 in every seed."


def markdown(report: dict, config: dict) -> str:
    lines = [
        f"# Does reasoning help? {config['name']}",
        "",
        f"Base model `{config['base_model']}`, dataset `{config['dataset']}`; training sizes {config['n_train']}, "
        f"seeds {config['seeds']}. Validation: {config['evaluate']['validation_rows'] or 'all'} rows (fixed); "
        f"test: {config['evaluate']['test_rows'] or 'all'} rows. The best variant is chosen on validation only.",
        "",
        f"**{report['choice']['verdict']}**",
        "",
        "| variant | task | source | N | seeds | validation acc | test acc | test macro-F1 | invalid | McNemar vs Q->A (test) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def cell(spread: dict) -> str:
        return f"{spread['mean'] * 100:.1f} ± {spread['sd'] * 100:.1f}" if spread["seeds"] > 1 else f"{spread['mean'] * 100:.1f}"

    for key, entry in report["table"].items():
        variant, n = key.split("@")
        spec = config["variants"][variant]
        tests = "; ".join(
            f"s{seed}: {t['difference_points']:+.1f} pts, p = {t['p_value']:.2g}" for seed, t in entry["mcnemar_vs_qa"].items()
        ) or "–"
        lines.append(
            f"| {variant} | {spec['task']} | {spec.get('source') or '–'} | {n} | {len(entry['seeds'])} | "
            f"{cell(entry['validation_accuracy'])} | {cell(entry['test_accuracy'])} | {cell(entry['test_macro_f1'])} | "
            f"{entry['test_invalid_rate']['mean'] * 100:.1f}% | {tests} |"
        )
    for n, entry in report["tfidf"].items():
        lines.append(f"| TF-IDF + LR | – | – | {n} | {entry['test_accuracy']['seeds']} | – | {cell(entry['test_accuracy'])} | – | – | – |")
    lines += ["", "Accuracies in % (mean ± standard deviation over seeds). `learning_curve.png` plots test accuracy against N."]
    if report["missing"]:
        lines += ["", f"**Not run yet ({len(report['missing'])} jobs; run the same command again to continue):** " + ", ".join(report["missing"])]
    lines += _recall_section(report)
    lines += _decides_section(report)
    lines += ["", "## Reasoning sources", ""]
    for name, source in config["sources"].items():
        lines.append(f"- `{name}`: " + ", ".join(f"{k} = {v}" for k, v in source.items()))
    quality = report.get("reasoning_quality") or {}
    if quality:
        n = report["choice"]["n_train"]
        lines += [
            "",
            f"## Reasoning quality by source (N={n}, one sample each)",
            "",
            "What each source's training reasonings look like by the quality flags (`reasonapp/quality.py`), beside the "
            "variants trained on them (test accuracy minus Q->A's, mean over their seeds at this N): shares are of the rows "
            "with a reasoning.",
            "",
            "| source | seed | reasonings | unflagged | name the gold label | cite nothing from the text | template | "
            "argue for another label | words | variants (test acc − Q->A, points, seed mean) | commonest reasoning |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        for source, entry in quality.items():
            variants = ", ".join(
                f"{name} {difference:+.1f}" if difference is not None else name for name, difference in entry["variants_vs_qa"].items()
            )
            commonest = entry["commonest"]
            quoted = repr(commonest["reasoning"][:80]).replace("|", "\\|")  # a pipe would end the table cell
            lines.append(
                f"| {source} | {entry['seed']} | {entry['with_reasoning']} of {entry['rows']} | {entry['unflagged']:.0%} | "
                f"{entry['names_gold_label']:.0%} | {entry['cites_nothing']:.0%} | {entry['template']:.0%} | "
                f"{entry['argues_other_label']:.0%} | {entry['mean_words']:.1f} | {variants} | "
                f"{quoted} × {commonest['rows']} |"
            )
    for role, entry in report["examples"].items():
        lines += ["", f"## Examples from the {role} reasoning variant on validation: {entry['variant']}", "", "Training reasonings (Stage 2):", ""]
        for row in entry["training"]:
            lines.append(f"- *{row['label']}* — “{row['text'][:160]}” → {row['reasoning'][:300]!r}")
        if entry.get("test_outputs"):
            lines += ["", "Its own output on test rows:", ""]
            for row in entry["test_outputs"]:
                lines.append(f"- gold *{row['gold']}* — “{row['text'][:160]}” → {row['output'][:300]!r}")
    if report.get("timings_s"):
        total = sum(report["timings_s"].values())
        lines += ["", f"Wall time of the finished jobs: {total / 3600:.1f} h on this machine."]
    return "\n".join(lines) + "\n"


def _recall_section(report: dict) -> list[str]:
    by_variant = report.get("recall_by_class") or {}
    if not by_variant:
        return []
    support = next(iter(by_variant.values()))["support"]
    lines = [
        "",
        f"## Recall by class (test, N={report['choice']['n_train']}, mean over seeds)",
        "",
        "Where each variant gains or loses against Q->A; test rows per class in brackets. The commonest error is "
        "counted over all the variant's seeds (rows per seed).",
        "",
        "| variant | seeds | " + " | ".join(f"{name} ({rows})" for name, rows in support.items()) + " | commonest error |",
        "| --- | ---: | " + " | ".join("---:" for _ in support) + " | --- |",
    ]
    for variant, entry in by_variant.items():
        error = entry["commonest_error"]
        error_cell = f"{error['gold']} → {error['predicted']} ({error['rows_per_seed']:.0f})" if error else "–"
        recalls = " | ".join(f"{entry['recall'][name] * 100:.1f}" for name in support)
        lines.append(f"| {variant} | {entry['seeds']} | {recalls} | {error_cell} |")
    return lines


def _decides_section(report: dict) -> list[str]:
    by_variant = {name: entry for name, entry in (report.get("reasoning_decides") or {}).items() if entry["label_follows"] is not None}
    if not by_variant:
        return []

    def percent(value: float) -> str:
        return f"{value * 100:.1f}"

    lines = [
        "",
        f"## Does the reasoning decide the label? (test, N={report['choice']['n_train']}, all seeds pooled)",
        "",
        "Reasoning-first variants, on the test rows whose generated reasoning names exactly one label: how often the "
        "final label is the one named, and the accuracy on those rows against Q->A's on the same rows.",
        "",
        "| variant | seeds | reasonings naming one label | final label = the named one | accuracy there | Q->A there |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in by_variant.items():
        lines.append(
            f"| {name} | {entry['seeds']} | {percent(entry['names_one_label'])} | {percent(entry['label_follows'])} | "
            f"{percent(entry['accuracy'])} | {percent(entry['qa_accuracy'])} |"
        )
    return lines


def plot_learning_curve(report: dict, path: Path) -> None:
    """Test accuracy against N per variant (mean, with the seeds' min-max as error bars), TF-IDF dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for variant in report["variants"]:
        points = [(n, report["table"][f"{variant}@{n}"]["test_accuracy"]) for n in report["sizes"] if f"{variant}@{n}" in report["table"]]
        if not points:
            continue
        xs = [n for n, _ in points]
        means = [s["mean"] * 100 for _, s in points]
        errors = [[(s["mean"] - s["min"]) * 100 for _, s in points], [(s["max"] - s["mean"]) * 100 for _, s in points]]
        ax.errorbar(xs, means, yerr=errors, marker="o", capsize=3, label=variant, linewidth=2 if variant == DIRECT else 1)
    if report["tfidf"]:
        xs = sorted(int(n) for n in report["tfidf"])
        ax.plot(xs, [report["tfidf"][str(n)]["test_accuracy"]["mean"] * 100 for n in xs], "k--", label="TF-IDF + LR")
    ax.set_xscale("log")
    ax.set_xticks(report["sizes"], [str(n) for n in report["sizes"]])
    ax.set_xticks([], minor=True)  # only the trained sizes are labelled, not log-scale minor ticks
    ax.set_xlabel("training rows (N)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
