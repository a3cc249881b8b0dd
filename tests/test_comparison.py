"""The reasoning comparison: jobs run in order, resume, are reported with what is missing, and the
best variant is chosen on validation, never on test."""

import json

import pytest
import yaml

from reasonapp.errors import ConfigError, RunDirError
from training.comparison import (
    Comparison,
    Job,
    load_comparison_config,
    plan,
    read_report,
    reasoning_decides,
    recall_by_class,
    report_dirs,
    summarize,
)


def _write(tmp_path, config: dict):
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _tiny_config(base_model: str) -> dict:
    return {
        "name": "tiny-compare",
        "base_model": base_model,
        "n_train": [8, 16],
        "seeds": [0],
        "rgen": {"limit": 16, "max_steps": 2, "batch_size": 8},
        "augment": {"batch_size": 8, "max_new_tokens": 8},
        "sources": {"rgen": {}},
        "variants": {
            "qa": {"task": "qa"},
            "multitask": {"task": "multitask", "source": "rgen"},
            "qar": {"task": "qar", "source": "rgen"},
            "qra": {"task": "qra", "source": "rgen"},
        },
        "train": {"max_steps": 2, "batch_size": 8},
        "evaluate": {"validation_rows": 6, "test_rows": 6, "batch_size": 8, "max_new_tokens": 12},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"variants": {"qra": {"task": "qra", "source": "rgen"}}}, "must include 'qa'"),
        ({"variants": {"qa": {"task": "qa"}, "qra": {"task": "qra"}}}, "needs a source"),
        ({"sources": {"rgen": {"prompt": "x"}}}, "unknown keys"),
        ({"sources": {"rgen": {"policy": "keep-some"}}}, "policy must be one of"),
        ({"sources": {"rgen": {"dropped": "hide"}}}, "dropped must be one of"),
        ({"sources": {"rgen": {"policy": "drop-flagged", "dropped": "blank"}}}, "qar writes a reasoning for every row"),
        ({"variants": {"qa": {"task": "qa"}, "x": {"task": "rgen"}}}, "task must be one of"),
        ({"seeds": []}, "at least one value"),
        ({"n_train": [500, -3]}, r"n_train must be a list of whole numbers of at least 1; got \[500, -3\]"),
        ({"n_train": ["2k"]}, r"n_train must be a list of whole numbers"),
        ({"n_train": 2000}, r"n_train must be a list of whole numbers of at least 1; got 2000"),
        ({"seeds": [0, 1.5]}, r"seeds must be a list of whole numbers of at least 0; got \[0, 1.5\]"),
        ({"train": {"max_step": 2}}, r"comparison section 'train': unknown training settings \['max_step'\]"),
        ({"train": 5}, r"comparison section 'train': expected a mapping of training settings, got 5"),
        ({"augment": {"max_new_tokens": 0}}, r"comparison section 'augment': max_new_tokens must be a whole number"),
    ],
)
def test_config_mistakes_are_named(tmp_path, change, message):
    config = {**_tiny_config("unused"), **change}
    with pytest.raises(ConfigError, match=message):
        load_comparison_config(_write(tmp_path, config))


def test_plan_runs_a_whole_seed_first_largest_n_first_and_qa_first(tmp_path):
    config = load_comparison_config(_write(tmp_path, {**_tiny_config("unused"), "seeds": [0, 1]}))
    jobs = plan(config)
    assert jobs[:4] == [Job("qa", 16, 0), Job("multitask", 16, 0), Job("qar", 16, 0), Job("qra", 16, 0)]
    assert jobs[4] == Job("qa", 8, 0) and jobs[8] == Job("qa", 16, 1)
    assert len(jobs) == 16


def test_a_part_of_the_plan_can_run_first_and_always_keeps_the_qa_baseline(tmp_path):
    config = load_comparison_config(_write(tmp_path, {**_tiny_config("unused"), "seeds": [0, 1]}))
    jobs = plan(config, only=["qar"], n_train=[16])
    assert jobs == [Job("qa", 16, 0), Job("qar", 16, 0), Job("qa", 16, 1), Job("qar", 16, 1)]
    with pytest.raises(ConfigError, match=r"not in this comparison: \['qrx', 99\]"):
        plan(config, only=["qrx"], n_train=[99])


def test_comparison_runs_resumes_and_reports(tiny_model_dir, tmp_path, shared_data, monkeypatch):
    config = load_comparison_config(_write(tmp_path, _tiny_config(tiny_model_dir)))
    comparison = Comparison(config, tmp_path / "cmp")

    partial = comparison.run(max_jobs=2)
    assert partial["missing"] == ["qar N=16 seed=0", "qra N=16 seed=0", "qa N=8 seed=0", "multitask N=8 seed=0",
                                  "qar N=8 seed=0", "qra N=8 seed=0"]
    assert "Not run yet (6 jobs" in (comparison.root / "comparison.md").read_text()

    report = comparison.run()
    assert report["missing"] == []
    assert set(report["table"]) == {f"{v}@{n}" for v in ("qa", "multitask", "qar", "qra") for n in (8, 16)}
    assert set(report["table"]["qra@16"]["mcnemar_vs_qa"]) == {"0"} and report["table"]["qa@16"]["mcnemar_vs_qa"] == {}
    assert report["choice"]["n_train"] == 16 and report["choice"]["best_variant"] in ("multitask", "qar", "qra")
    assert (comparison.root / "learning_curve.png").stat().st_size > 10_000
    markdown = (comparison.root / "comparison.md").read_text()
    assert report["choice"]["verdict"] in markdown and "TF-IDF" in markdown
    # the reasonings' quality flags sit beside the variants trained on them, from the largest N's sample
    quality = report["reasoning_quality"]["rgen"]
    assert quality["rows"] == 16 and quality["n_train"] == 16 and set(quality["variants_vs_qa"]) == {"multitask", "qar", "qra"}
    assert "## Reasoning quality by source (N=16" in markdown
    assert set(report["recall_by_class"]) == {"qa", "multitask", "qar", "qra"} and "## Recall by class (test, N=16" in markdown
    assert set(report["reasoning_decides"]) == {"qra"}  # the only variant that writes its reasoning first

    # one Stage 2 store serves both sizes; each exported sample has exactly N rows, N=8 inside N=16
    stores = list(comparison.root.glob("reasonings-rgen-*/store.sqlite"))
    assert len(stores) == 1
    exported = {n: [json.loads(line)["text"] for line in open(next(comparison.root.glob(f"data-rgen-*-n{n}-s0")) / "train.jsonl")]
                for n in (8, 16)}
    assert len(exported[8]) == 8 and len(exported[16]) == 16 and set(exported[8]) <= set(exported[16])

    stamps = {p: p.stat().st_mtime_ns for p in comparison.root.rglob("*") if p.is_file() and not p.name.startswith(("comparison.", "learning_curve"))}

    def refit(*args, **kwargs):
        raise AssertionError("the TF-IDF baseline was fitted again")

    monkeypatch.setattr("training.evaluate.tfidf_baseline", refit)
    comparison.run()
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}  # nothing retrained, regenerated, re-evaluated or refitted


def test_a_stopped_job_ends_the_run_with_its_report_and_the_next_run_resumes_it(tiny_model_dir, tmp_path, shared_data, monkeypatch):
    import training.sft
    from tests.test_training import train_that_stops
    from training import rundir

    config = _tiny_config(tiny_model_dir)
    config.update(n_train=[8], variants={"qa": {"task": "qa"}, "multitask": {"task": "multitask", "source": "rgen"}})
    comparison = Comparison(load_comparison_config(_write(tmp_path, config)), tmp_path / "cmp")
    real_train = training.sft.train
    monkeypatch.setattr(training.sft, "train", train_that_stops("multitask"))
    stopped = comparison.run()
    assert stopped["missing"] == ["multitask N=8 seed=0"] and "qa@8" in stopped["table"]
    assert rundir.read_json(comparison.run_dir(Job("multitask", 8, 0)) / rundir.STATUS)["state"] == "stopped"
    assert list(stopped["timings_s"]) == ["qa N=8 seed=0"]  # the report's wall time counts finished jobs only
    stopped_part = rundir.read_json(tmp_path / "cmp" / "timings.json")["multitask N=8 seed=0"]

    monkeypatch.setattr(training.sft, "train", real_train)
    resumed = comparison.run()
    assert resumed["missing"] == []
    assert resumed["timings_s"]["multitask N=8 seed=0"] > stopped_part  # both parts of the stopped job


def _result(validation_accuracy: float, test_correct: list[bool]) -> dict:
    def split(correct, accuracy):
        return {"predicted": [0 if c else 1 for c in correct], "gold": [0] * len(correct),
                "metrics": {"accuracy": accuracy, "macro_f1": accuracy, "invalid_rate": 0.0}}

    return {"validation": split([True], validation_accuracy), "test": split(test_correct, sum(test_correct) / len(test_correct))}


def test_the_best_variant_is_chosen_on_validation_even_when_test_disagrees():
    qa = [True] * 60 + [False] * 40
    results = {
        ("qa", 100, 0): _result(0.60, qa),
        ("lucky-on-validation", 100, 0): _result(0.70, [True] * 50 + [False] * 50),
        ("better-on-test", 100, 0): _result(0.65, [True] * 90 + [False] * 10),
    }
    report = summarize(results, {}, ["qa", "lucky-on-validation", "better-on-test"], [])
    assert report["choice"]["best_variant"] == "lucky-on-validation"
    assert report["choice"]["worst_variant"] == "better-on-test"
    assert "lucky-on-validation (best on validation) scored 50.0%" in report["choice"]["verdict"]


def test_verdict_says_helped_only_when_every_seed_is_better_with_p_below_005():
    qa = [True] * 60 + [False] * 40
    clearly_better = [True] * 90 + [False] * 10  # 30 rows only it gets right: p ~ 2e-9
    slightly_better = [True] * 62 + [False] * 38
    both = {("qa", 100, s): _result(0.6, qa) for s in (0, 1)}
    helped = summarize({**both, **{("qra", 100, s): _result(0.9, clearly_better) for s in (0, 1)}}, {}, ["qa", "qra"], [])
    assert "Reasoning helped" in helped["choice"]["verdict"]
    mixed = summarize(
        {**both, ("qra", 100, 0): _result(0.9, clearly_better), ("qra", 100, 1): _result(0.62, slightly_better)}, {}, ["qa", "qra"], []
    )
    assert "No variant beat Q->A with p < 0.05 in every seed" in mixed["choice"]["verdict"]
    assert mixed["table"]["qra@100"]["test_accuracy"]["seeds"] == 2 and mixed["table"]["qra@100"]["test_accuracy"]["sd"] > 0
    hurt = summarize({**both, **{("qra", 100, s): _result(0.3, [True] * 20 + [False] * 80) for s in (0, 1)}}, {}, ["qa", "qra"], [])
    assert "Reasoning hurt" in hurt["choice"]["verdict"]


def test_no_finished_jobs_gives_a_report_that_says_so():
    report = summarize({}, {}, ["qa", "qra"], [Job("qa", 10, 0)])
    assert report["choice"]["verdict"] == "No job has finished yet." and report["missing"] == ["qa N=10 seed=0"]


def test_the_verdict_compares_with_q_to_a_on_the_variants_own_seeds():
    results = {
        ("qa", 100, 0): _result(0.6, [True] * 60 + [False] * 40),
        ("qa", 100, 1): _result(0.8, [True] * 80 + [False] * 20),  # a seed the variant has not run yet
        ("qra", 100, 0): _result(0.6, [True] * 62 + [False] * 38),
    }
    verdict = summarize(results, {}, ["qa", "qra"], [Job("qra", 100, 1)])["choice"]["verdict"]
    assert "qra (best on validation) scored 62.0% on test against Q->A's 60.0% (1 seed;" in verdict


def test_recall_by_class_shows_the_class_a_variant_gives_up_and_where_those_rows_go():
    from training.evaluate import classification_metrics

    def evaluated(gold, predicted, names=("joy", "anger", "fear", "love")):
        return {"test": {"metrics": classification_metrics(gold, predicted, list(names))}}

    gold = [0] * 6 + [1] * 3 + [2]
    results = {
        ("qa", 100, 0): evaluated(gold, [0] * 6 + [1, 1, 0] + [2]),
        # a variant that keeps the large class and sends the small one to it (or to no label at all)
        ("qra", 100, 0): evaluated(gold, [0] * 6 + [0, 0, 1] + [None]),
        ("qra", 100, 1): evaluated(gold, [0] * 6 + [0, 0, 0] + [2]),
        ("qra", 500, 0): evaluated(gold, gold),  # another N: not counted
    }
    by_variant = recall_by_class(results, ["qa", "qra", "qar"], 100)
    assert set(by_variant) == {"qa", "qra"}  # qar has not run; love has no test rows
    assert by_variant["qa"]["support"] == {"joy": 6, "anger": 3, "fear": 1}
    assert by_variant["qa"]["recall"] == {"joy": 1.0, "anger": pytest.approx(2 / 3), "fear": 1.0}
    assert by_variant["qra"]["seeds"] == 2
    assert by_variant["qra"]["recall"] == {"joy": 1.0, "anger": pytest.approx(1 / 6), "fear": 0.5}
    assert by_variant["qra"]["commonest_error"] == {"gold": "anger", "predicted": "joy", "rows_per_seed": 2.5}
    invalid_only = {("qra", 100, 0): evaluated([0, 1], [0, None], ("joy", "anger"))}
    assert recall_by_class(invalid_only, ["qra"], 100)["qra"]["commonest_error"]["predicted"] == "invalid"


def test_reports_are_found_in_the_workspace_first_then_in_docs_and_read_with_their_plot(tmp_path):
    from reasonapp import settings

    own = settings.workspace_dir() / "experiments" / "mine"
    own.mkdir(parents=True)
    (own / "comparison.md").write_text("# Does reasoning help? mine\n")
    (settings.workspace_dir() / "experiments" / "unfinished").mkdir()  # no report yet: not offered
    found = report_dirs()
    assert found[0] == str(own) and str(settings.PROJECT_ROOT / "docs" / "compare-small") in found[1:]
    assert read_report(own) == ("# Does reasoning help? mine\n", None)  # no job finished: no plot yet
    text, plot = read_report(settings.PROJECT_ROOT / "docs" / "compare-small")
    assert text.startswith("# Does reasoning help?") and "McNemar vs Q->A" in text and plot.name == "learning_curve.png"
    with pytest.raises(RunDirError, match="holds no comparison report.*training compare"):
        read_report(tmp_path)


def test_reasoning_decides_counts_the_rows_whose_reasoning_names_one_label_and_whether_the_label_copies_it():
    outputs = [
        "Joy is a positive emotion.\nLabel: joy",  # names joy, says joy: right; Q->A wrong
        "Joy is a positive emotion.\nLabel: joy",  # names joy, says joy: wrong; Q->A right
        "The words 'so angry' show anger.\nLabel: fear",  # names anger, says fear
        "Joyful? No: this is anger.\nLabel: anger",  # 'joyful' is not the label joy: names anger only
        "Neither joy nor anger.\nLabel: joy",  # names two labels: not counted
        "no label line at all",  # invalid, names nothing: not counted
    ]
    gold = [1, 0, 2, 0, 1, 1]
    results = {
        ("qa", 100, 0): {"test": {"gold": gold, "predicted": [0, 0, 2, 0, 1, 1]}},
        ("qra", 100, 0): {"test": {"gold": gold, "predicted": [1, 1, 2, 0, 1, None], "outputs": outputs}},
        ("qar", 100, 0): {"test": {"gold": gold, "predicted": [1, 1, 2, 0, 1, None], "outputs": outputs}},
    }
    variants = {"qa": {"task": "qa"}, "qra": {"task": "qra", "source": "r"}, "qar": {"task": "qar", "source": "r"}}
    decided = reasoning_decides(results, variants, 100, ["anger", "joy", "fear"])
    assert set(decided) == {"qra"}  # qar writes its label before the reasoning: nothing to decide
    assert decided["qra"] == {
        "seeds": 1,
        "names_one_label": 4 / 6,
        "label_follows": 3 / 4,
        "accuracy": 3 / 4,
        "qa_accuracy": 3 / 4,
    }
