"""Supervised fine-tuning for every task of the method, on prompt/completion pairs with TRL.

One core serves all tasks; only the examples differ:

- `rgen`: reasoning dataset, (question, answer) -> reasoning          (Stage 1)
- `qa`:   classification dataset, text -> label
- `qra`:  augmented dataset, text -> reasoning, then `Label: <label>`  (the paper's Q->RA)
- `qar`:  augmented dataset, text -> `Label: <label>`, then reasoning
- `multitask`: augmented dataset, `[label]` text -> label plus `[rationale]` text -> reasoning

The loss covers the completion only (TRL's completion mask). LoRA by default, full fine-tuning with
`--no-lora`. The same command runs under `accelerate launch --num_processes N`.

    python -m training train --task rgen --limit 3000 --output-dir workspace/runs/rgen
    python -m training train --task qa --limit 2000 --epochs 1 --output-dir workspace/runs/qa
    python -m training train --task qra --dataset workspace/exports/emotion-reasoned --output-dir workspace/runs/qra
    accelerate launch --num_processes 2 --cpu -m training train --task qa --limit 64 --output-dir /tmp/qa2
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from reasonapp import __version__, data, prompts
from reasonapp.errors import ConfigError, DataError
from reasonapp.models import DEFAULT_BASE_MODEL
from training import rundir
from training.augment import read_provenance

logger = logging.getLogger(__name__)

TASKS = ("rgen", "qa", "qra", "qar", "multitask")
CLASSIFIER_TASKS = ("qa", "qra", "qar", "multitask")
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TrainConfig:
    """Everything that defines a training run; written to the run directory as config.json."""

    task: str = field(default="qa", metadata={"help": "what to train", "choices": TASKS})
    base_model: str = field(default=DEFAULT_BASE_MODEL, metadata={"help": "Hub id or local directory of the base model"})
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or directory; default syvai/reasoning-gen for rgen, dair-ai/emotion for qa; "
            "qra/qar need an augmented dataset (text, label, reasoning)"
        },
    )
    split: str = field(default="train", metadata={"help": "split to train on"})
    limit: int | None = field(default=None, metadata={"help": "train on a fixed random sample of this many rows"})
    labels: str | None = field(default=None, metadata={"help": "comma-separated label names, if the data lacks them"})
    epochs: float = field(default=1.0, metadata={"help": "passes over the training rows"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many optimizer steps (overrides epochs)"})
    learning_rate: float = field(default=2e-4, metadata={"help": "peak learning rate (LoRA; use ~2e-5 for full)"})
    batch_size: int = field(default=8, metadata={"help": "rows per device per step"})
    grad_accum: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    max_length: int = field(default=256, metadata={"help": "tokens per example; longer ones are truncated"})
    lora: bool = field(default=True, metadata={"help": "train a LoRA adapter (--no-lora: full fine-tuning)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_targets: str = field(default="all-linear", metadata={"help": "'all-linear' or comma-separated module names"})
    gradient_checkpointing: bool = field(
        default=True,
        metadata={
            "help": "keep only each layer's input and recompute the rest in the backward pass: a training process "
            "peaks at ~2.5 GB instead of 4-8 GB at the defaults, for ~1/3 more compute (--no-gradient-checkpointing)"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed for sampling, shuffling and initialisation"})
    output_dir: str = field(default="", metadata={"help": "run directory; default workspace/runs/<task>-<time>"})
    save_steps: int = field(default=50, metadata={"help": "checkpoint every this many steps (for --resume)"})
    logging_steps: int = field(default=5, metadata={"help": "log loss/lr/tokens-per-second every this many steps"})

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"unknown task {self.task!r}; choose one of {list(TASKS)}")
        if self.dataset is None:
            if self.task in ("qra", "qar", "multitask"):
                raise ConfigError(f"task {self.task} needs --dataset: an augmented dataset with a reasoning column")
            self.dataset = data.DEFAULT_REASONING_DATASET if self.task == "rgen" else data.DEFAULT_CLASSIFICATION_DATASET
        for name in ("epochs", "learning_rate", "batch_size", "grad_accum", "max_length", "lora_r", "save_steps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.limit is not None and self.limit <= 0:
            raise ConfigError(f"limit must be positive, got {self.limit}")
        if not self.output_dir:
            self.output_dir = str(rundir.default_run_dir(self.task))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# examples


def _conversation(prompt_messages: prompts.Messages, completion: str) -> dict:
    return {"prompt": prompt_messages, "completion": [{"role": "assistant", "content": completion}]}


def build_examples(config: TrainConfig) -> tuple["datasets.Dataset", dict]:  # noqa: F821
    """The prompt/completion rows for a task, and what inference will need to know about them."""
    if config.task == "rgen":
        loaded = data.load_reasoning_dataset(config.dataset)
        rows = data.sample_rows(_split(loaded.splits, config.split, config.dataset), config.limit, config.seed)
        _require_rows(rows, config)
        examples = rows.map(
            lambda row: _conversation(prompts.rgen_messages(row["question"], row["answer"]), row["reasoning"].strip()),
            remove_columns=rows.column_names,
        )
        return examples, {"dataset_origin": loaded.origin}

    labels = config.labels.split(",") if config.labels else None
    loaded = data.load_classification_dataset(config.dataset, labels=labels)
    rows = data.sample_rows(_split(loaded.splits, config.split, config.dataset), config.limit, config.seed)
    _require_rows(rows, config)
    label_space = prompts.LabelSpace(tuple(loaded.label_names), loaded.task_description)
    fmt = prompts.get_format(config.task)
    if fmt.uses_reasoning:
        # multitask learns its labels from every row, so a row may lack a rationale (export --dropped blank)
        _require_reasonings(rows, config, allow_blank=fmt.answers_with_label_only)

    def to_example(row):
        reasoning = row.get("reasoning") if fmt.uses_reasoning else None
        completion = fmt.completion(loaded.label_names[row["label"]], reasoning)
        return _conversation(fmt.messages(row["text"], label_space), completion)

    examples = rows.map(to_example, remove_columns=rows.column_names)
    if fmt.auxiliary:  # multi-task: the same rows once more, as the auxiliary task
        import datasets

        auxiliary = prompts.get_format(fmt.auxiliary)
        extra = rows.filter(lambda row: bool((row["reasoning"] or "").strip())).map(
            lambda row: _conversation(auxiliary.messages(row["text"], label_space), auxiliary.completion("", row["reasoning"])),
            remove_columns=rows.column_names,
        )
        examples = datasets.concatenate_datasets([examples, extra])
    meta = {
        "label_names": loaded.label_names,
        "task_description": loaded.task_description,
        "dataset_origin": loaded.origin,
    }
    if fmt.uses_reasoning:  # evaluation needs the dataset the reasonings were written for (its test split)
        meta["source_dataset"] = read_provenance(loaded.origin).get("source_dataset")
    return examples, meta


def _split(splits, split: str, source: str):
    if split not in splits:
        raise DataError(f"dataset {source!r} has no split {split!r} (splits: {list(splits)})")
    return splits[split]


def _require_rows(rows, config: TrainConfig) -> None:
    if len(rows) == 0:
        raise DataError(f"no training rows left in split {config.split!r} of {config.dataset!r}")


def _require_reasonings(rows, config: TrainConfig, allow_blank: bool = False) -> None:
    if "reasoning" not in rows.column_names:
        raise DataError(
            f"task {config.task} needs a 'reasoning' column in {config.dataset!r} (columns: {rows.column_names}); "
            "build one with `python -m training augment` and `export`"
        )
    empty = [i for i, reasoning in enumerate(rows["reasoning"]) if not (reasoning or "").strip()]
    if allow_blank and len(empty) == len(rows):
        raise DataError(f"every row of {config.dataset!r} has an empty reasoning: task {config.task} has no rationale to learn")
    if empty and not allow_blank:
        raise DataError(
            f"{len(empty)} rows of {config.dataset!r} have an empty reasoning (first: row {empty[0]}); "
            "edit or reject them in the Review tab, then export again"
        )


# ---------------------------------------------------------------------------------------------
# library objects from the config


def lora_config(config: TrainConfig):
    """A peft LoraConfig for the run, or None for full fine-tuning."""
    if not config.lora:
        return None
    from peft import LoraConfig

    targets = config.lora_targets
    target_modules = "all-linear" if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )


def sft_config(config: TrainConfig, run_dir: Path):
    """TRL's SFTConfig for the run: completion-only loss, length-grouped batches, checkpoints."""
    import torch
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(run_dir / rundir.CHECKPOINTS),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        max_length=config.max_length,
        completion_only_loss=True,
        train_sampling_strategy="group_by_length",  # similar lengths per batch: less padding to compute
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        seed=config.seed,
        data_seed=config.seed,
        bf16=on_gpu and torch.cuda.is_bf16_supported(),
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu,  # pinned memory is for copies to a GPU (on a CPU, torch warns on every run)
        ddp_find_unused_parameters=False,
        activation_checkpointing=config.gradient_checkpointing,  # transformers 5's name for gradient checkpointing
        activation_checkpointing_kwargs={"use_reentrant": False},  # recomputes with the same RNG state: same dropout masks
    )


# ---------------------------------------------------------------------------------------------
# running


def score_only_loss_positions() -> bool:
    """Have TRL's fused output layer score only the positions that carry a loss, on every device; True if set.

    TRL 1.x gathers the hidden states of those positions only where its Triton kernels run (CUDA, XPU).
    Elsewhere it scores every position, prompt and padding included, and zeroes them after, so that
    devices with static shapes do not recompile per batch. Eager CPU training recompiles nothing, and
    there the 49k-wide output layer over all positions was a quarter of a Q->RA step: gathering first
    gave 224 -> 305 real tokens/s here, with the same losses (tested). Only that decision is changed: TRL's
    kernels still choose Triton by the real device. Process-wide and idempotent; a TRL without the hook is
    left as it is.
    """
    from trl.trainer import utils as trl_utils

    triton_here = getattr(trl_utils, "_use_triton", None)
    if triton_here is None:
        return False
    if not getattr(triton_here, "reasonapp_compact", False):

        def compact(device) -> bool:
            return device.type == "cpu" or triton_here(device)

        compact.reasonapp_compact = True
        compact.original = triton_here
        trl_utils._use_triton = compact
    return True


def fast_dropout(x, p: float):
    """Dropout whose mask comes from 16 random bits per element: half the cost of `torch.nn.Dropout` on a CPU.

    PEFT runs a dropout on the input of each of the 7 adapted projections of a layer; on this CPU drawing
    their Bernoulli masks (mt19937, one draw per element) was a third of a LoRA training step, and with
    gradient checkpointing every mask is drawn twice. Drawing 64-bit words and comparing 16 bits at a time
    gives the same independent per-element masks, each kept with probability 1 - p rounded to 1/65536 (p=0.05
    is 0.050003), scaled by 1/(1-p) as nn.Dropout does. It draws from torch's generator, so a seed fixes the
    masks, and checkpointing's recompute (which restores the RNG state) draws the same ones.
    """
    import torch

    count = x.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), 2**63 - 1)
    keep = words.view(torch.int16)[:count].view(x.shape) >= round(p * 65536) - 32768
    return (x * keep).mul_(1 / (1 - p))


def cheaper_lora_dropout(model) -> int:
    """Give every LoRA dropout of `model` the cheaper CPU mask of `fast_dropout`; returns how many were changed.

    Only CPU tensors take it (CUDA's own dropout is already cheap); a module in eval mode, or with p = 0, passes
    its input through as before.
    """
    import torch
    from peft.tuners.lora import LoraLayer

    class LoraDropout(torch.nn.Dropout):
        def forward(self, x):
            if not self.training or self.p == 0 or x.device.type != "cpu":
                return super().forward(x)
            return fast_dropout(x, self.p)

    changed = 0
    for module in model.modules():
        if isinstance(module, LoraLayer):
            for name, dropout in list(module.lora_dropout.items()):
                if type(dropout) is torch.nn.Dropout:
                    replacement = LoraDropout(dropout.p)
                    replacement.train(dropout.training)
                    module.lora_dropout[name] = replacement
                    changed += 1
    return changed


MMAP_THRESHOLD_BYTES = 4 << 20


def return_freed_tensors_to_the_system() -> bool:
    """Have glibc give every allocation of 4 MB or more its own mapping, unmapped when freed; True if set.

    A training step allocates and frees hundreds of activation tensors of a few MB. glibc raises its mmap
    threshold to the largest block freed so far (up to 32 MB), so after the first step these come from the heap,
    and what they free there stays resident: measured on Q->RA rows with gradient checkpointing, the process
    peaked at 3.2 GB, of which the tensors alive at once were ~1.5 GB. A fixed 4 MB threshold: 2.8 GB, the same
    tokens/s (a 128 KB one: 1.6 GB, but 40% slower from page faults). Process-wide; elsewhere than glibc, nothing.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    M_MMAP_THRESHOLD = -3
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def build_trainer(config: TrainConfig, run_dir: Path, callbacks=(), examples=None):
    """TRL's SFTTrainer for the run, with the model loaded for this process's device.

    `examples` from `build_examples`, when the caller already has them (the dataset is then read once).
    """
    from accelerate import PartialState
    from trl import SFTTrainer

    from reasonapp.models import load_base_model

    state = PartialState()
    return_freed_tensors_to_the_system()
    if examples is None:
        examples, _ = build_examples(config)
    device = f"cuda:{state.local_process_index}" if _on_cuda() else "cpu"
    score_only_loss_positions()
    model, tokenizer = load_base_model(config.base_model, device=device)
    tokenizer.padding_side = "right"  # training pads on the right; generation uses left
    trainer = SFTTrainer(
        model=model,
        args=sft_config(config, run_dir),
        train_dataset=examples,
        processing_class=tokenizer,
        peft_config=lora_config(config),
        callbacks=list(callbacks),
    )
    cheaper_lora_dropout(trainer.model)
    return trainer


def train(config: TrainConfig, resume: bool = False, callbacks=(), stop_file: str | Path | None = None) -> Path:
    """Run one training job into `config.output_dir`; returns the run directory.

    A directory that holds another run is refused (nothing is overwritten); `resume=True` continues
    the run there from its last checkpoint, provided the config is the same. `stop_file`, when it
    exists, stops the run at its next step like the run's own STOP file (a pipeline's Stop).
    """
    from accelerate import PartialState

    state = PartialState()
    run_dir = Path(config.output_dir)
    rundir.check_can_write(run_dir, config.to_dict(), resume)  # every rank checks before any rank writes
    examples, meta = build_examples(config)
    state.wait_for_everyone()
    if state.is_main_process:
        rundir.write_config(run_dir, {**config.to_dict(), **meta, "prompt_version": prompts.PROMPT_VERSION, "reasonapp_version": __version__})
    state.wait_for_everyone()

    from training.reporter import RunReporter

    reporter = RunReporter(run_dir, enabled=state.is_main_process, stop_file=stop_file)
    checkpoint = None
    if resume:
        checkpoint = last_complete_checkpoint(run_dir / rundir.CHECKPOINTS)
        logger.info("resuming from %s", checkpoint or "the start (no checkpoint yet)")
        if state.is_main_process:  # the steps after the checkpoint are trained (and logged) again
            rundir.drop_metrics_after(run_dir, int(Path(checkpoint).name.removeprefix("checkpoint-")) if checkpoint else 0)

    previous_handler = signal.signal(signal.SIGTERM, reporter.request_stop) if state.is_main_process else None
    reporter.mark("running", resumed_from=checkpoint)
    started = time.time()
    try:
        trainer = build_trainer(config, run_dir, [reporter, *callbacks], examples)
        result = trainer.train(resume_from_checkpoint=checkpoint)
    except BaseException as error:
        reporter.mark("failed", error=f"{type(error).__name__}: {error}")
        raise
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)

    stopped = reporter.stop_requested  # the reporter had the Trainer save a checkpoint before stopping
    if stopped:  # resumable from that checkpoint; no adapter yet, so nothing mistakes it for a finished run
        reporter.mark("stopped", step=trainer.state.global_step)
        return run_dir
    if state.is_main_process:
        _save_artifacts(trainer, trainer.processing_class, config, run_dir)
        rundir.write_json(
            run_dir / rundir.FINAL_METRICS,
            {
                "train_loss": result.training_loss,
                "global_step": trainer.state.global_step,
                "train_runtime_s": round(time.time() - started, 2),
                "train_rows": len(examples),
                "tokens_per_second": reporter.mean_tokens_per_second(),
            },
        )
    reporter.mark("finished", step=trainer.state.global_step)
    return run_dir


def last_complete_checkpoint(checkpoints: Path) -> str | None:
    """The newest checkpoint whose save finished, or None.

    A process killed while saving leaves a partial checkpoint-N, which transformers' get_last_checkpoint
    would pick and then refuse to load. The Trainer writes trainer_state.json after the weights, optimizer,
    scheduler and RNG states, so a readable one marks a finished save.
    """
    saved = [path for path in checkpoints.glob("checkpoint-*") if path.name.removeprefix("checkpoint-").isdigit()]
    for path in sorted(saved, key=lambda path: int(path.name.removeprefix("checkpoint-")), reverse=True):
        if rundir.read_json(path / "trainer_state.json") is not None:
            return str(path)
    return None


def _on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _save_artifacts(trainer, tokenizer, config: TrainConfig, run_dir: Path) -> None:
    target = run_dir / (rundir.ADAPTER if config.lora else rundir.FULL_MODEL)
    model = trainer.model
    if config.lora:
        # Record the logical base name (not the cache path it was loaded from) so the adapter loads anywhere.
        for adapter in model.peft_config.values():
            adapter.base_model_name_or_path = config.base_model
    model.save_pretrained(str(target))
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(str(target))


def config_from_run(run_dir: str | Path) -> dict:
    """The resolved config (with label names and prompt version) that a run directory was trained with."""
    return rundir.read_config(Path(run_dir))


def check_training_overrides(overrides: dict, where: str) -> None:
    """Fail on a config file's training section now (unknown key, bad value), not when its stage starts hours later."""
    try:
        if not isinstance(overrides, dict):
            raise ConfigError(f"expected a mapping of training settings, got {overrides!r}")
        config_from_mapping({**overrides, "task": "qa", "output_dir": "unused"})
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{where}: {error}") from error


def config_from_mapping(values: dict) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown training settings {unknown}; known: {sorted(known)}")
    return TrainConfig(**values)

