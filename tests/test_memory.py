"""Training's memory-lean path (issue 23): the same losses and gradients as the plain path, in less memory.

How much memory and time it saves is measured by `python -m training bench` (training_memory), not here.
"""

import pytest

from tests.test_training import FAST, write_augmented
from training.sft import (
    TrainConfig,
    build_trainer,
    cheaper_lora_dropout,
    fast_dropout,
    return_freed_tensors_to_the_system,
)


def lora_gradients(trainer, batch) -> tuple[float, dict]:
    """The loss of one training-mode forward of `batch` from a fixed seed, and the LoRA weights' gradients after it."""
    import torch

    model = trainer.model
    model.train()
    model.zero_grad()
    torch.manual_seed(1)
    loss = trainer.compute_loss(model, dict(batch))
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def test_checkpointed_training_gives_the_plain_paths_losses_and_gradients_with_dropout_on(tiny_model_dir, tmp_path):
    import torch

    results = {}
    for checkpointing in (True, False):
        config = TrainConfig(task="qra", base_model=tiny_model_dir, dataset=write_augmented(tmp_path / "aug"), output_dir=str(tmp_path / f"run-{checkpointing}"), gradient_checkpointing=checkpointing, lora_dropout=0.3, **FAST)
        trainer = build_trainer(config, tmp_path / f"run-{checkpointing}")
        model = trainer.model
        for _, parameter in model.named_parameters():  # LoRA B starts at zero: give every LoRA weight a gradient
            if parameter.requires_grad:
                torch.manual_seed(parameter.numel())
                parameter.data.normal_(0, 0.05)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs)
        assert model.is_gradient_checkpointing is checkpointing
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        results[checkpointing] = lora_gradients(trainer, batch)
    (lean_loss, lean), (plain_loss, plain) = results[True], results[False]
    assert abs(lean_loss - plain_loss) < 1e-5
    assert lean.keys() == plain.keys() and len(lean) > 0
    for name in lean:  # the recompute draws the same dropout masks: the same gradients
        assert torch.allclose(lean[name], plain[name], atol=1e-5, rtol=1e-4), name


def test_train_defaults_to_the_lean_path_and_its_loss_falls_as_the_plain_one_does(tiny_model_dir, tmp_path):
    from training import rundir
    from training.sft import train

    histories = {}
    for checkpointing in (True, False):
        run = train(TrainConfig(task="qra", base_model=tiny_model_dir, dataset=write_augmented(tmp_path / "aug"), output_dir=str(tmp_path / f"run-{checkpointing}"), gradient_checkpointing=checkpointing, lora_dropout=0.0, **FAST))
        histories[checkpointing] = [row["loss"] for row in rundir.load_metrics(run)]
    assert TrainConfig(task="qa").gradient_checkpointing is True
    assert len(histories[True]) == 5 and histories[True][-1] < histories[True][0]
    assert histories[True] == pytest.approx(histories[False], abs=1e-4)


def test_the_cheaper_dropout_keeps_each_element_with_probability_1_minus_p_scaled_as_torchs():
    import torch

    x = torch.ones(1_000_000)
    torch.manual_seed(0)
    dropped = fast_dropout(x, 0.05)
    kept = dropped != 0
    assert abs(kept.float().mean().item() - 0.95) < 0.002
    assert torch.all(dropped[kept] == torch.tensor(1 / 0.95))
    torch.manual_seed(0)
    assert torch.equal(fast_dropout(x, 0.05), dropped)  # a seed fixes the mask
    assert not torch.equal(fast_dropout(x, 0.05), dropped)
    halves = fast_dropout(torch.ones(100_000, 2), 0.5) != 0
    assert abs((halves[:, 0] == halves[:, 1]).float().mean().item() - 0.5) < 0.01  # neighbours drawn independently


def test_every_lora_dropout_of_a_trainer_is_the_cheaper_one_and_eval_mode_passes_input_through(tiny_model_dir, tmp_path):
    import torch
    from peft.tuners.lora import LoraLayer

    config = TrainConfig(task="qa", base_model=tiny_model_dir, output_dir=str(tmp_path / "run"), **FAST)
    trainer = build_trainer(config, tmp_path / "run")
    dropouts = [d for m in trainer.model.modules() if isinstance(m, LoraLayer) for d in m.lora_dropout.values()]
    assert len(dropouts) == 14 and all(type(d).__name__ == "LoraDropout" and d.p == 0.05 for d in dropouts)  # 7 per layer
    assert cheaper_lora_dropout(trainer.model) == 0  # once is enough
    x = torch.randn(3, 64)
    dropouts[0].eval()
    assert torch.equal(dropouts[0](x), x)
    dropouts[0].train()
    assert not torch.equal(dropouts[0](x), x)


def test_freed_tensors_go_back_to_the_system_on_glibc():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert return_freed_tensors_to_the_system() is True


def test_a_python_m_training_process_gives_large_tensors_transparent_huge_pages():
    """`python -m training` sets torch's THP switch before torch loads; a 64 MB tensor then lies in huge pages."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not thp.exists() or "[never]" in thp.read_text():
        pytest.skip("this kernel offers no transparent huge pages")
    code = (
        "import runpy, sys\n"
        "sys.argv = ['training', '--help']\n"
        "try:\n    runpy.run_module('training', run_name='__main__')\n"  # what `python -m training --help` runs
        "except SystemExit:\n    pass\n"
        "import torch\n"
        "x = torch.ones(16 << 20)\n"
        "print(int(open('/proc/self/smaps_rollup').read().split('AnonHugePages:')[1].split()[0]))\n"
    )
    root = Path(__file__).resolve().parents[1]
    env_without = {key: value for key, value in os.environ.items() if key != "THP_MEM_ALLOC_ENABLE"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env_without, check=True)
    huge_kb = int(result.stdout.strip().splitlines()[-1])
    assert huge_kb >= 32 << 10  # most of the 64 MB tensor


def test_the_bench_counts_what_a_layer_keeps_per_token_without_changing_the_run(tiny_model_dir, tmp_path):
    """Dropout's kept copies are counted; the RNG, the checkpoint flags and the mode are left as they were."""
    import torch

    from training.bench import activation_bytes_per_token

    per_token = {}
    for dropout in (0.0, 0.3):
        config = TrainConfig(task="qa", base_model=tiny_model_dir, output_dir=str(tmp_path / f"run-{dropout}"), lora_dropout=dropout, **FAST)
        model = build_trainer(config, tmp_path / f"run-{dropout}").model
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.eval()
        torch.manual_seed(7)
        per_token[dropout] = activation_bytes_per_token(model)
        next_draw = torch.rand(4)
        torch.manual_seed(7)
        assert torch.equal(next_draw, torch.rand(4))  # its forward drew nothing from the training's RNG
        assert model.is_gradient_checkpointing and not model.training
    assert 0 < per_token[0.0] < per_token[0.3]


def test_the_training_arguments_use_transformers_5s_names_and_checkpoint_by_the_run_config(tmp_path):
    """`gradient_checkpointing*` are deprecated aliases in transformers 5 (gone in 6): the run's setting goes in under
    `activation_checkpointing*`, and both names read the same; no pinned memory without a GPU to copy to."""
    import warnings

    import torch

    from training.sft import sft_config

    for checkpointing in (True, False):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            args = sft_config(TrainConfig(task="qa", gradient_checkpointing=checkpointing), tmp_path)
        assert [str(w.message) for w in caught if "deprecated" in str(w.message)] == []
        assert args.activation_checkpointing is checkpointing and args.gradient_checkpointing is checkpointing
        assert args.activation_checkpointing_kwargs == {"use_reentrant": False} and args.dataloader_pin_memory is torch.cuda.is_available()
