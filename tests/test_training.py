"""Training: every task learns on the tiny model, runs are resumable, and bad input is refused cleanly."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reasonapp.errors import DataError, RunDirError
from training import rundir
from training.sft import TrainConfig, build_trainer, train

FAST = {"limit": 8, "batch_size": 8, "max_steps": 5, "learning_rate": 5e-3, "logging_steps": 1, "save_steps": 2, "max_length": 128}


def write_augmented(directory: Path, reasonings=None) -> str:
    rows = [
        ("i feel so happy and content today", "joy", "The writer says they feel happy and content."),
        ("i am scared of the dark alley", "fear", "Being scared of a dark alley is fear."),
        ("i miss him so much it hurts", "sadness", "Missing someone until it hurts is sadness."),
        ("i was shocked to hear the news", "surprise", "Being shocked by news is surprise."),
    ] * 2
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "train.jsonl", "w") as handle:
        for i, (text, label, reasoning) in enumerate(rows):
            reasoning = reasonings[i] if reasonings else reasoning
            handle.write(json.dumps({"text": text, "label": label, "reasoning": reasoning}) + "\n")
    (directory / "labels.json").write_text(json.dumps(["sadness", "joy", "love", "anger", "fear", "surprise"]))
    return str(directory)


def train_that_stops(task: str):
    """`training.sft.train`, except that a run of `task` is stopped at its first step, as the Train tab's Stop button does."""
    from transformers import TrainerCallback

    class PressStop(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            rundir.request_stop(Path(args.output_dir).parent)  # output_dir is <run>/checkpoints

    def stopping_train(config, resume=False, callbacks=(), stop_file=None):
        return train(config, resume, callbacks=[*callbacks, PressStop()] if config.task == task else callbacks, stop_file=stop_file)

    return stopping_train


def losses(run_dir: Path) -> list[float]:
    return [row["loss"] for row in rundir.load_metrics(run_dir)]


@pytest.mark.parametrize("task", ["rgen", "qa", "qra", "qar", "multitask"])
def test_each_task_trains_and_its_loss_falls(task, tiny_model_dir, tmp_path, shared_data):
    dataset = write_augmented(tmp_path / "augmented") if task in ("qra", "qar", "multitask") else None
    run_dir = train(TrainConfig(task=task, base_model=tiny_model_dir, dataset=dataset, output_dir=str(tmp_path / "run"), **FAST))
    history = losses(run_dir)
    assert len(history) == 5 and history[-1] < history[0]
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert rundir.read_json(run_dir / "status.json")["state"] == "finished"
    config = rundir.read_config(run_dir)
    assert config["task"] == task and config["prompt_version"] == "1"
    adapter_config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == tiny_model_dir
    final = rundir.read_json(run_dir / "final_metrics.json")
    assert final["global_step"] == 5 and final["tokens_per_second"] > 0


def test_lora_changes_adapter_weights_and_leaves_the_base_alone(tiny_model_dir, tmp_path, shared_data):
    import torch
    from safetensors.torch import load_file

    run_dir = train(TrainConfig(task="qa", base_model=tiny_model_dir, output_dir=str(tmp_path / "run"), **FAST))
    adapter = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert lora_b and any(tensor.abs().sum() > 0 for tensor in lora_b)  # lora_B starts at zero
    base_after = load_file(Path(tiny_model_dir) / "model.safetensors")
    base_before = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert all(torch.equal(base_after[k], base_before[k]) for k in base_before)


def test_full_fine_tuning_saves_a_whole_model(tiny_model_dir, tmp_path, shared_data):
    run_dir = train(TrainConfig(task="qa", base_model=tiny_model_dir, lora=False, output_dir=str(tmp_path / "run"), **{**FAST, "learning_rate": 1e-3}))
    assert (run_dir / "model" / "model.safetensors").is_file() and not (run_dir / "adapter").exists()
    history = losses(run_dir)
    assert history[-1] < history[0]
    from training.evaluate import EvalConfig, evaluate

    report = evaluate(EvalConfig(qa_run=str(run_dir), limit=6, batch_size=6, qa_mode="scored", output_dir=str(tmp_path / "eval")))
    assert report["systems"]["qa_scored"]["rows"] == 6


def test_completion_only_loss_masks_the_prompt(tiny_model_dir, tmp_path, shared_data):
    config = TrainConfig(task="qa", base_model=tiny_model_dir, output_dir=str(tmp_path / "run"), **FAST)
    trainer = build_trainer(config, tmp_path / "run")
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels = batch["labels"][0]
    supervised = labels[labels != -100]
    tokenizer = trainer.processing_class
    assert tokenizer.decode(supervised).strip() in {f"{name}<|im_end|>" for name in
                                                    ["sadness", "joy", "love", "anger", "fear", "surprise"]}
    prompt_length = int((labels == -100).sum())
    assert "Text:" in tokenizer.decode(batch["input_ids"][0][:prompt_length])


def test_the_output_layer_scores_only_the_loss_positions_and_the_loss_is_unchanged(tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from trl.trainer import utils as trl_utils

    config = TrainConfig(task="qra", base_model=tiny_model_dir, dataset=write_augmented(tmp_path / "aug"), output_dir=str(tmp_path / "run"), **FAST)
    trainer = build_trainer(config, tmp_path / "run")  # sets TRL's fused output layer to gather the loss positions first
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    loss_positions = int((batch["labels"][:, 1:] != -100).sum())
    scored_rows = []
    chunked = trl_utils._ChunkedLogProbFunction

    class Spy(chunked):
        @staticmethod
        def forward(ctx, hidden, *args):
            scored_rows.append(hidden.shape[0])
            return chunked.forward(ctx, hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    trainer.model.eval()  # no LoRA dropout: the two losses must be comparable
    with torch.no_grad():
        compact = trainer.compute_loss(trainer.model, dict(batch))
        monkeypatch.setattr(trl_utils, "_use_triton", trl_utils._use_triton.original)  # TRL's own choice on a CPU
        every_position = trainer.compute_loss(trainer.model, dict(batch))
    assert scored_rows == [loss_positions, batch["input_ids"].numel() - 4]
    assert loss_positions < scored_rows[1] / 2
    assert abs(compact.item() - every_position.item()) < 1e-5


def test_a_stopped_run_resumes_from_its_checkpoint(tiny_model_dir, tmp_path, shared_data):
    from transformers import TrainerCallback

    class StopAtStepTwo(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                rundir.request_stop(tmp_path / "run")

    config = TrainConfig(task="qa", base_model=tiny_model_dir, output_dir=str(tmp_path / "run"), **{**FAST, "max_steps": 4})
    run_dir = train(config, callbacks=[StopAtStepTwo()])
    stopped = rundir.read_json(run_dir / "status.json")
    assert stopped["state"] == "stopped" and 2 <= stopped["step"] < 4  # the STOP file is seen at the next step end
    assert (run_dir / "checkpoints" / f"checkpoint-{stopped['step']}").is_dir() and not (run_dir / "adapter").exists()
    # a process killed while saving the next checkpoint leaves it partial: the weights, no trainer state
    partial = run_dir / "checkpoints" / f"checkpoint-{stopped['step'] + 1}"
    partial.mkdir()
    shutil.copy(run_dir / "checkpoints" / f"checkpoint-{stopped['step']}" / "adapter_model.safetensors", partial)
    # ... after logging that step, which the resumed run trains again from the last complete checkpoint
    with open(run_dir / rundir.METRICS, "a") as handle:
        handle.write(json.dumps({"step": stopped["step"] + 1, "loss": 999.0, "elapsed_s": 1.0}) + "\n")

    train(TrainConfig(task="qa", base_model=tiny_model_dir, output_dir=str(tmp_path / "run"), **{**FAST, "max_steps": 4}), resume=True)
    status = rundir.read_json(run_dir / "status.json")
    assert status["state"] == "finished" and status["resumed_from"].endswith(f"checkpoint-{stopped['step']}")
    steps = [row["step"] for row in rundir.load_metrics(run_dir)]
    assert steps == [1, 2, 3, 4]  # continued after its checkpoint, not from zero; each step once on the loss curve
    assert 999.0 not in losses(run_dir)  # the step trained again replaces the one logged before the kill
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_resume_takes_the_newest_checkpoint_whose_save_finished(tmp_path):
    from training.sft import last_complete_checkpoint

    checkpoints = tmp_path / "checkpoints"
    assert last_complete_checkpoint(checkpoints) is None
    for step, finished in ((2, True), (10, True), (12, False)):
        (checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        if finished:
            (checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (checkpoints / "checkpoint-latest").mkdir()
    assert last_complete_checkpoint(checkpoints) == str(checkpoints / "checkpoint-10")  # 10 after 2, not before


def test_an_output_dir_holding_another_run_is_refused_and_untouched(tiny_model_dir, tmp_path, shared_data):
    run_dir = train(TrainConfig(task="qa", base_model=tiny_model_dir, output_dir=str(tmp_path / "run"), **{**FAST, "max_steps": 1}))
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(RunDirError, match="already holds a qa run"):
        train(TrainConfig(task="rgen", base_model=tiny_model_dir, output_dir=str(run_dir), **FAST))
    with pytest.raises(RunDirError, match=r"different settings: \['learning_rate'\]"):
        train(TrainConfig(task="qa", base_model=tiny_model_dir, output_dir=str(run_dir), **{**FAST, "max_steps": 1, "learning_rate": 1e-3}), resume=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="holds no run"):
        train(TrainConfig(task="qa", base_model=tiny_model_dir, output_dir=str(tmp_path / "other"), **FAST))
    assert before == {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}


def test_empty_dataset_and_empty_reasonings_are_clear_errors(tiny_model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train.jsonl").write_text("")
    (tmp_path / "empty" / "labels.json").write_text('["a", "b"]')
    with pytest.raises(DataError, match="is empty: the dataset has no rows"):
        train(TrainConfig(task="qa", base_model=tiny_model_dir, dataset=str(tmp_path / "empty"), output_dir=str(tmp_path / "r1")))
    reasonings = ["fine"] * 7 + ["   "]
    dataset = write_augmented(tmp_path / "augmented", reasonings)
    with pytest.raises(DataError, match="1 rows .* have an empty reasoning"):
        train(TrainConfig(task="qra", base_model=tiny_model_dir, dataset=dataset, output_dir=str(tmp_path / "r2")))
    with pytest.raises(DataError, match="needs a 'reasoning' column"):
        train(TrainConfig(task="qra", base_model=tiny_model_dir, dataset="dair-ai/emotion", output_dir=str(tmp_path / "r3")))
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()


def test_multitask_learns_every_label_and_only_the_rationales_it_has(tiny_model_dir, tmp_path):
    from training.sft import build_examples

    dataset = write_augmented(tmp_path / "augmented", ["A cue from the text."] * 6 + ["", "  "])
    config = TrainConfig(task="multitask", base_model=tiny_model_dir, dataset=dataset, output_dir=str(tmp_path / "mt"))
    examples, _ = build_examples(config)
    tasks = [example["prompt"][0]["content"].split("]")[0] for example in examples]
    assert tasks.count("[label") == 8 and tasks.count("[rationale") == 6
    assert all(example["completion"][0]["content"].strip() for example in examples)
    with pytest.raises(DataError, match="2 rows .* have an empty reasoning"):
        build_examples(TrainConfig(task="qra", base_model=tiny_model_dir, dataset=dataset, output_dir=str(tmp_path / "qra")))
    nothing = write_augmented(tmp_path / "blank", [""] * 8)
    with pytest.raises(DataError, match="no rationale to learn"):
        build_examples(TrainConfig(task="multitask", base_model=tiny_model_dir, dataset=nothing, output_dir=str(tmp_path / "mt2")))


def test_label_missing_from_the_label_set_is_a_clear_error(tiny_model_dir, tmp_path):
    dataset = write_augmented(tmp_path / "augmented")
    (tmp_path / "augmented" / "labels.json").write_text('["joy", "fear", "sadness"]')  # no "surprise"
    with pytest.raises(DataError, match=r"has 2 rows whose label is not one of \['joy', 'fear', 'sadness'\] \(the dataset's labels file\): 'surprise' \(2 rows\)"):
        train(TrainConfig(task="qra", base_model=tiny_model_dir, dataset=dataset, output_dir=str(tmp_path / "run")))


def test_cli_trains_with_flags_and_a_yaml_config(tiny_model_dir, tmp_path, shared_data):
    (tmp_path / "train.yaml").write_text(f"task: qa\nbase_model: {tiny_model_dir}\nlimit: 8\nmax_steps: 2\nbatch_size: 4\n")
    result = subprocess.run(
        [sys.executable, "-m", "training", "train", "--config", str(tmp_path / "train.yaml"), "--max-steps", "1", "--output-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    config = rundir.read_config(tmp_path / "run")
    assert (config["limit"], config["max_steps"], config["batch_size"]) == (8, 1, 4)  # the flag overrides the file


@pytest.mark.slow
def test_two_process_accelerate_run_writes_one_adapter(tiny_model_dir, tmp_path, shared_data):
    accelerate = Path(sys.executable).parent / "accelerate"
    result = subprocess.run(
        [str(accelerate), "launch", "--num_processes", "2", "--cpu", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "training", "train", "--task", "qa", "--base-model", tiny_model_dir,
         "--limit", "16", "--batch-size", "4", "--max-steps", "3", "--output-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "run"
    assert [p.name for p in run_dir.glob("*/adapter_model.safetensors")] == ["adapter_model.safetensors"]
    assert rundir.read_json(run_dir / "status.json")["state"] == "finished"
    assert rundir.read_json(run_dir / "final_metrics.json")["global_step"] == 3
