"""Evaluation: known metric values on hand-built predictions, and the full report from tiny runs."""

import json
from pathlib import Path

import pytest

from reasonapp.errors import ConfigError, DataError, RunDirError
from training import rundir
from training.evaluate import (
    EvalConfig,
    check_output_dir,
    classification_metrics,
    evaluate,
    mcnemar,
    side_configs,
    tfidf_baseline,
    verdict,
)

LABELS = ["a", "b", "c"]


def test_metrics_on_hand_built_predictions():
    gold = [0, 0, 1, 1, 2, 2]
    predicted = [0, 1, 1, None, 2, 0]  # one invalid output, counted as wrong
    m = classification_metrics(gold, predicted, LABELS)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["invalid_rate"] == pytest.approx(1 / 6)
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["c"]["precision"] == 1.0 and m["per_class"]["c"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0.5 + 2 / 3) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0]]
    assert m["confusion_columns"] == ["a", "b", "c", "invalid"]


def test_mcnemar_exact_p_values():
    # 10 rows only the first gets right, 2 only the second: p = 2 * P(X <= 2 | n=12, 1/2) = 158/4096
    a = [True] * 10 + [False] * 2 + [True] * 5
    b = [False] * 10 + [True] * 2 + [True] * 5
    result = mcnemar(a, b)
    assert (result["only_a_correct"], result["only_b_correct"]) == (10, 2)
    assert result["p_value"] == pytest.approx(158 / 4096)
    assert result["chi2_continuity"] == pytest.approx((8 - 1) ** 2 / 12)
    assert mcnemar([True, False], [True, False])["p_value"] == 1.0


def test_verdict_says_plainly_when_reasoning_hurts():
    metrics = {"qa_scored": {"accuracy": 0.673}, "qra": {"accuracy": 0.532}}
    assert verdict(metrics, {"p_value": 1e-32}, "qra", "qa_scored").startswith("Reasoning hurt: Q→RA is 14.1 points below")
    assert verdict(metrics, {"p_value": 0.3}, "qra", "qa_scored").startswith("No significant difference")


def test_tfidf_baseline_learns_an_obvious_split():
    texts = ["happy joy glad", "glad happy", "sad tears cry", "cry sad"] * 5
    labels = [0, 0, 1, 1] * 5
    assert tfidf_baseline(texts, labels, ["so happy", "tears again"]) == [0, 1]


def test_eval_needs_a_run():
    with pytest.raises(Exception, match="--qa-run and/or --qra-run"):
        EvalConfig()


@pytest.fixture(scope="module")
def tiny_runs(tiny_model_dir, tmp_path_factory):
    from tests.test_training import FAST, write_augmented
    from training.sft import TrainConfig, train

    root = tmp_path_factory.mktemp("runs")
    augmented = write_augmented(root / "augmented")
    (root / "augmented" / "provenance.json").write_text(json.dumps({"source_dataset": "dair-ai/emotion"}))
    qa = train(TrainConfig(task="qa", base_model=tiny_model_dir, output_dir=str(root / "qa"), **{**FAST, "max_steps": 2}))
    qra = train(TrainConfig(task="qra", base_model=tiny_model_dir, dataset=augmented, output_dir=str(root / "qra"), **{**FAST, "max_steps": 2}))
    return qa, qra


def test_evaluate_writes_metrics_report_predictions_and_plots(tiny_runs, tmp_path, shared_data):
    qa, qra = tiny_runs
    config = EvalConfig(qa_run=str(qa), qra_run=str(qra), limit=12, batch_size=6, max_new_tokens=16, output_dir=str(tmp_path / "eval"))
    report = evaluate(config)
    assert set(report["systems"]) == {"qa_scored", "qa_generated", "qra", "tfidf"}
    assert report["rows"] == 12 and report["dataset"] == "dair-ai/emotion"
    assert "qa_scored vs qra" in report["mcnemar"] and report["verdict"]
    for name in ("metrics.json", "report.md", "predictions.jsonl", "confusion.png", "per_class_f1.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and {"gold", "qa_scored", "qra", "qra_reasoning", "tfidf"} <= set(rows[0])
    assert "TF-IDF + logistic regression" in (tmp_path / "eval" / "report.md").read_text()


def test_a_multitask_run_is_evaluated_by_scoring_its_labels(tiny_model_dir, tiny_runs, tmp_path, shared_data):
    from tests.test_training import FAST, write_augmented
    from training.sft import TrainConfig, build_examples, train

    augmented = write_augmented(tmp_path / "augmented")
    (tmp_path / "augmented" / "provenance.json").write_text(json.dumps({"source_dataset": "dair-ai/emotion"}))
    config = TrainConfig(task="multitask", base_model=tiny_model_dir, dataset=augmented, output_dir=str(tmp_path / "mt"), **{**FAST, "max_steps": 1})
    examples, _ = build_examples(config)
    assert len(examples) == 16  # 8 rows, each as a [label] and a [rationale] example
    run = train(config)
    report = evaluate(EvalConfig(qa_run=str(tiny_runs[0]), qra_run=str(run), limit=6, batch_size=6, qa_mode="scored", output_dir=str(tmp_path / "eval")))
    assert set(report["systems"]) == {"qa_scored", "multitask", "tfidf"} and report["systems"]["multitask"]["invalid_rate"] == 0.0
    assert "Multi-task (label + rationale)" in report["verdict"]


def test_integer_labels_are_named_by_the_labels_setting_the_error_asks_for(tiny_model_dir, tmp_path, capsys):
    from tests.test_training import FAST
    from training.cli import main
    from training.sft import TrainConfig, train

    dataset = tmp_path / "numbered"
    dataset.mkdir()
    rows = [{"text": "i feel so happy today", "label": 1}, {"text": "i miss him so much", "label": 0}] * 4
    for split in ("train", "test"):
        (dataset / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    run = train(TrainConfig(task="qa", base_model=tiny_model_dir, dataset=str(dataset), labels="sad,happy", output_dir=str(tmp_path / "qa"), **{**FAST, "max_steps": 1}))

    with pytest.raises(DataError, match=r"numbers without names; pass .+ \(--labels a,b,c\)"):
        evaluate(EvalConfig(qa_run=str(run), output_dir=str(tmp_path / "eval")))
    with pytest.raises(DataError, match=r"the qa run's labels \['sad', 'happy'\] differ from .+'s \['happy', 'sad'\]"):
        evaluate(EvalConfig(qa_run=str(run), labels="happy,sad", output_dir=str(tmp_path / "eval")))
    out = tmp_path / "eval"
    assert main(["evaluate", "--qa-run", str(run), "--labels", "sad,happy", "--qa-mode", "scored", "--output-dir", str(out)]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["label_names"] == ["sad", "happy"] and report["rows"] == 8
    assert report["systems"]["qa_scored"]["per_class"]["happy"]["support"] == 4
    again = ["evaluate", "--qa-run", str(run), "--labels", "sad,happy", "--qa-mode", "scored", "--output-dir", str(out), "--limit", "4"]
    before = (out / "report.md").read_text()
    assert main(again) == 2  # an earlier evaluation is not replaced unasked
    assert "already holds an evaluation of 8 rows of these runs; pass --overwrite to replace it" in capsys.readouterr().err
    assert (out / "report.md").read_text() == before and json.loads((out / "metrics.json").read_text())["rows"] == 8
    assert main([*again, "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["rows"] == 4  # the same run, evaluated again into its directory


def test_fast_label_scoring_matches_the_plain_forward_pass(tiny_model_dir):
    from reasonapp.models import load_base_model
    from reasonapp.prompts import LabelSpace, get_format
    from training.generation import score_labels, score_labels_plainly

    model, tokenizer = load_base_model(tiny_model_dir, device="cpu")
    labels = LabelSpace(("sadness", "joy", "love", "anger", "fear", "surprise"))
    texts = ["i feel fine", "a much longer text about being rather scared of the dark at night", "ok"]
    conversations = [get_format("qa").messages(text, labels) for text in texts]
    fast = score_labels(model, tokenizer, conversations, labels.names, batch_size=2)
    plain = score_labels_plainly(model, tokenizer, conversations, labels.names)
    assert abs(fast - plain).max() < 1e-4


def test_generation_runs_on_merged_adapter_weights_and_leaves_the_adapters_as_they_were(tiny_runs):
    from reasonapp.prompts import LabelSpace, get_format
    from training.generation import Decoding, generate
    from training.predict import Classifiers

    qa, qra = tiny_runs
    classifiers = Classifiers({"qa": qa, "qra": qra}, device="cpu")  # float32, where merging is exact
    texts = ["i feel fine", "i am furious about it"]
    before = classifiers.score("qa", texts)
    decoding = Decoding(max_new_tokens=12)
    classifiers._use("qra")  # the unmerged reference: LoRA applied module by module
    labels = LabelSpace(tuple(classifiers.runs["qra"].labels.names))
    reference = generate(classifiers.model, classifiers.tokenizer, [get_format("qra").messages(texts[1], labels)], decoding)[0]

    assert list(classifiers.stream("qra", texts[1], decoding))[-1] == reference
    assert classifiers.predict("qra", texts[1:], decoding)[0].raw == reference
    abandoned = classifiers.stream("qra", texts[0], decoding)
    next(abandoned)
    abandoned.close()  # a reader that goes away mid-stream
    assert not any(getattr(layer, "merged_adapters", None) for layer in classifiers.model.modules())
    assert abs(classifiers.score("qa", texts) - before).max() < 1e-6
    projection = classifiers.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert type(projection).__name__.startswith("OneDnnLinear")  # every weight matrix through oneDNN on the CPU
    assert projection.packed is not None  # in oneDNN's blocked layout, which the merged generation above stepped past
    assert classifiers.model.get_output_embeddings().packed is None  # its copy would cost more memory than it saves time


def another_run(run_dir, target, seed: int):
    """A copy of a run with other adapter weights: another run of the same task on the same base model."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(run_dir, target)
    weights = target / rundir.ADAPTER / "adapter_model.safetensors"
    generator = torch.Generator().manual_seed(seed)
    save_file({key: value + 0.05 * torch.randn(value.shape, generator=generator) for key, value in load_file(weights).items()}, weights)
    return target


def test_classifiers_switched_to_other_runs_in_place_hold_what_loading_those_runs_gives(tiny_runs, tmp_path):
    from tests.test_models import same_weights
    from training.generation import Decoding
    from training.predict import Classifiers

    qa, qra = tiny_runs
    qa_2, qra_2 = another_run(qa, tmp_path / "qa-2", seed=1), another_run(qra, tmp_path / "qra-2", seed=2)
    texts, decoding = ["i feel fine", "i am furious about it"], Decoding(max_new_tokens=12)
    classifiers = Classifiers({"qa": qa, "qra": qra}, device="cpu")
    base = classifiers.model.get_base_model()
    for runs in (
        {"qa": qa, "qra": qra_2},  # a new Q->RA pick: its adapter beside the folded Q->A one
        {"qa": qa_2, "qra": qra_2},  # a new Q->A pick: the folded run changes
        {"qa": qa_2},
        {"qa": qa, "qra": qra},
    ):
        classifiers.score("qa", texts)  # used before the switch: kept prefix caches, merges for generation
        if "qra" in classifiers.runs:
            list(classifiers.stream("qra", texts[1], decoding))
        assert classifiers.switch(runs)
        fresh = Classifiers(runs, device="cpu")
        assert classifiers.model.get_base_model() is base  # the same base model, not loaded again
        assert {name: info.run_dir for name, info in classifiers.runs.items()} == {name: Path(run) for name, run in runs.items()}
        assert same_weights(classifiers.model.state_dict(), fresh.model.state_dict())  # bit for bit
        assert (classifiers.score("qa", texts) == fresh.score("qa", texts)).all()
        if "qra" in runs:
            assert list(classifiers.stream("qra", texts[1], decoding))[-1] == list(fresh.stream("qra", texts[1], decoding))[-1]
        del fresh


def test_classifiers_that_cannot_switch_in_place_let_go_of_their_model(tiny_runs, tiny_model_dir, tmp_path):
    import shutil

    from training.predict import Classifiers, load_classifiers

    qa, qra = tiny_runs
    elsewhere = shutil.copytree(tiny_model_dir, tmp_path / "another-base")  # the same weights under another name
    other_base = another_run(qa, tmp_path / "qa-other-base", seed=3)
    config = rundir.read_config(other_base)
    rundir.write_config(other_base, {**config, "base_model": str(elsewhere)})
    classifiers = Classifiers({"qa": qa, "qra": qra}, device="cpu")
    assert not classifiers.switch({"qa": other_base}) and classifiers.model is None  # no second model held beside a new one
    loaded = load_classifiers({"qa": other_base}, previous=Classifiers({"qa": qa}, device="cpu"))
    assert loaded.runs["qa"].base_model == str(elsewhere) and loaded.score("qa", ["i feel fine"]).shape == (1, 6)


def test_compiled_scoring_gives_the_eager_label_probabilities(tiny_runs):
    import shutil

    from torch._dynamo.utils import counters

    from reasonapp.errors import ModelError
    from training.predict import Classifiers

    if not shutil.which("c++"):
        pytest.skip("torch.compile's CPU backend needs a C++ compiler")
    qa, qra = tiny_runs
    classifiers = Classifiers({"qa": qa, "qra": qra}, device="cpu")
    texts = ["i feel fine", "i am furious about it", "a much longer text about being rather scared of the dark"]
    eager = classifiers.score("qa", texts)
    counters.clear()
    classifiers.compile_scoring()
    assert counters["stats"]["unique_graphs"] >= 1  # compiled while loading, on a one-text probe
    compiled_before_first_request = counters["stats"]["unique_graphs"]
    assert abs(classifiers.score("qa", texts[2:]) - eager[2:]).max() < 1e-4  # one text: the shape compiled
    assert counters["stats"]["unique_graphs"] == compiled_before_first_request  # so the first request waits for none
    assert abs(classifiers.score("qa", texts) - eager).max() < 1e-4  # another batch shape compiles on first use
    assert classifiers.predict("qra", texts[:1])[0].raw  # the other run still generates, eagerly

    with pytest.raises(ModelError, match="folded"):  # nothing folded: a reasoning run alone
        Classifiers({"qra": qra}, device="cpu").compile_scoring()


def test_each_side_takes_only_its_own_kind_of_run(tmp_path):
    for task in ("qa", "qra", "qar", "multitask", "rgen"):
        rundir.write_config(tmp_path / task, {"task": task})
    configs = side_configs({"qa": str(tmp_path / "qa"), "qra": str(tmp_path / "multitask")})
    assert {side: config["task"] for side, config in configs.items()} == {"qa": "qa", "qra": "multitask"}
    for task in ("qar", "multitask"):
        assert side_configs({"qra": str(tmp_path / task)})["qra"]["task"] == task
    with pytest.raises(ConfigError, match=r"is a qra run; the Q→A \(--qa-run\) side takes qa runs"):
        side_configs({"qa": str(tmp_path / "qra")})
    with pytest.raises(ConfigError, match=r"is a qa run; the Q→RA \(--qra-run\) side takes qra or qar or multitask runs"):
        side_configs({"qra": str(tmp_path / "qa")})
    with pytest.raises(ConfigError, match="is a rgen run"):
        side_configs({"qa": str(tmp_path / "rgen")})


def test_evaluation_settings_below_one_are_refused():
    for name in ("batch_size", "max_new_tokens"):
        with pytest.raises(ConfigError, match=f"{name} must be at least 1, got 0"):
            EvalConfig(qa_run="runs/qa", **{name: 0})


def evaluated_run(path, task="qa", runs=None):
    """A run directory (config only) whose eval-test holds an evaluation of `runs` (default: itself)."""
    rundir.write_config(path, {"task": task})
    write_evaluation(path / "eval-test", runs or {task if task == "qa" else "qra": str(path)})
    return path


def write_evaluation(directory, runs):
    directory.mkdir(parents=True)
    rundir.write_json(directory / "metrics.json", {"runs": runs, "systems": {}})
    (directory / "report.md").write_text("# the evaluation of " + ", ".join(runs.values()))


def test_another_runs_evaluation_directory_is_refused(tmp_path):
    mine, theirs = evaluated_run(tmp_path / "mine"), evaluated_run(tmp_path / "theirs", task="qra")
    report = (theirs / "eval-test" / "report.md").read_text()
    with pytest.raises(RunDirError, match=(
        r"eval-test is the evaluation directory of the run .+theirs, which this evaluation .+ does not include; "
        r"its report.md feeds that run's model card: choose another --output-dir"
    )):
        evaluate(EvalConfig(qa_run=str(mine), output_dir=str(theirs / "eval-test")))
    with pytest.raises(RunDirError, match="evaluation directory of the run"):  # nothing there yet: still that run's
        evaluate(EvalConfig(qa_run=str(mine), output_dir=str(theirs / "eval-validation")))
    assert (theirs / "eval-test" / "report.md").read_text() == report and not (theirs / "eval-validation").exists()


def test_a_directory_holding_the_evaluation_of_other_runs_is_refused(tmp_path):
    mine, theirs = evaluated_run(tmp_path / "mine"), evaluated_run(tmp_path / "theirs")
    write_evaluation(tmp_path / "shared-eval", {"qa": str(theirs)})
    with pytest.raises(RunDirError, match=(
        r"shared-eval holds the evaluation of other runs \(.+theirs\); this one evaluates .+mine: choose another --output-dir"
    )):
        evaluate(EvalConfig(qa_run=str(mine), output_dir=str(tmp_path / "shared-eval")))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "report.md").write_text("my own notes")
    with pytest.raises(RunDirError, match=r"notes holds a report.md that is not an evaluation of these runs"):
        evaluate(EvalConfig(qa_run=str(mine), output_dir=str(tmp_path / "notes")))
    assert (tmp_path / "notes" / "report.md").read_text() == "my own notes"


def test_the_same_runs_may_be_evaluated_again_into_their_directory(tmp_path, monkeypatch):
    qa, qra = evaluated_run(tmp_path / "qa"), evaluated_run(tmp_path / "qra", task="qra")
    check_output_dir(qa / "eval-test", {"qa": str(qa)}, overwrite=True)
    check_output_dir(qa / "eval-test", {"qa": str(qa), "qra": str(qra)}, overwrite=True)  # the run's own directory, beside another run
    with pytest.raises(RunDirError, match="eval-test already holds an evaluation of these runs; pass --overwrite"):
        check_output_dir(qa / "eval-test", {"qa": str(qa)})  # asked, not assumed
    monkeypatch.chdir(tmp_path)
    write_evaluation(tmp_path / "pair", {"qa": "qa", "qra": "./qra"})  # written from here, with relative paths
    check_output_dir(tmp_path / "pair", {"qa": str(qa), "qra": str(qra)}, overwrite=True)
    with pytest.raises(RunDirError, match="holds the evaluation of other runs"):
        check_output_dir(tmp_path / "pair", {"qa": str(qa)}, overwrite=True)


def test_the_report_says_what_each_system_trained_on_and_when_the_runs_differ():
    """A Q→RA run trained on a 14-row reviewed export beside a 35-row Q→A run: the report said TF-IDF "was trained on
    the same 35 training rows as the runs"."""
    from training.evaluate import training_rows_note

    differ = training_rows_note({"tfidf_training_rows": 35, "training_rows": {"qa": 35, "qra": 14}})
    assert differ == ("TF-IDF was trained on the 35 training rows of the Q→A run. The runs trained on different rows: "
                      "Q→A on 35, Q→RA on 14, so the comparison is not like for like.")
    assert training_rows_note({"tfidf_training_rows": 35, "training_rows": {"qa": 35, "qra": 35}}).endswith("; the Q→RA run trained on 35 rows too.")
    assert training_rows_note({"tfidf_training_rows": 14, "training_rows": {"qra": 14}}) == "TF-IDF was trained on the 14 training rows of the Q→RA run."
    assert training_rows_note({"tfidf_training_rows": 9}) == "TF-IDF was trained on the 9 training rows of the Q→A run."  # older reports
