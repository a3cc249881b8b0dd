"""Trained classifiers as objects: load runs as adapters on one shared base model, predict texts.

Evaluation and the app's Compare tab both go through `Classifiers`, so what is measured is what is
shown. Each run directory's config says its task (qa / qra / qar), label names and prompt version.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from reasonapp.errors import ModelError, RunDirError
from reasonapp.prompts import PROMPT_VERSION, LabelSpace, Prediction, get_format, render_prompt
from training import rundir
from training.generation import Decoding, PrefixCache, ProgressCallback, common_prefix, generate, score_labels, stream

CLASSIFIER_TASKS = ("qa", "qra", "qar", "multitask")


@dataclass
class RunInfo:
    """What a classifier run directory says about itself."""

    name: str
    run_dir: Path
    task: str
    base_model: str
    labels: LabelSpace
    adapter_dir: Path | None
    model_dir: Path | None = None  # a fully fine-tuned run's own model

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, name: str | None = None) -> RunInfo:
        run_dir = Path(run_dir)
        config = rundir.read_config(run_dir)
        task = config.get("task")
        if task not in CLASSIFIER_TASKS:
            raise RunDirError(f"{run_dir} is a {task} run; evaluation needs a classifier run ({', '.join(CLASSIFIER_TASKS)})")
        if config.get("prompt_version") != PROMPT_VERSION:
            raise RunDirError(
                f"{run_dir} was trained with prompt version {config.get('prompt_version')}, this reasonapp uses {PROMPT_VERSION}"
            )
        adapter_dir = run_dir / rundir.ADAPTER
        model_dir = run_dir / rundir.FULL_MODEL
        labels = LabelSpace(tuple(config["label_names"]), config.get("task_description", ""))
        if (adapter_dir / "adapter_config.json").is_file():
            return cls(name or task, run_dir, task, config["base_model"], labels, adapter_dir)
        if (model_dir / "config.json").is_file():
            return cls(name or task, run_dir, task, config["base_model"], labels, None, model_dir)
        state = rundir.read_json(run_dir / rundir.STATUS, {}).get("state", "unknown")
        raise RunDirError(f"{run_dir} has no trained adapter or model yet (status: {state})")


def label_probabilities(logp):
    """Softmax over each row's label log-probabilities, [rows, labels] (what every backend's `score` returns)."""
    import numpy as np

    if not len(logp):
        return logp
    probs = np.exp(logp - logp.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def _adapter_layers_enabled(peft_model) -> bool:
    from peft.tuners.lora import LoraLayer

    return not next(module for module in peft_model.modules() if isinstance(module, LoraLayer)).disable_adapters


def load_classifiers(runs: dict[str, str | Path], backend: str | None = None):
    """Classifiers on the chosen backend (`REASONAPP_BACKEND` when not given): both answer `score`,
    `predict`, `stream` and `parse` for the same runs."""
    from reasonapp import settings

    if (backend or settings.inference_backend()) == "llama.cpp":
        from training.llamacpp import LlamaCppClassifiers

        return LlamaCppClassifiers(runs)
    return Classifiers(runs)


class Classifiers:
    """Several classifier runs in memory: LoRA runs as named adapters on one shared base model,
    fully fine-tuned runs as models of their own.

    On float32 weights (the CPU), the first label-scoring run (qa, multitask) is folded into the shared
    weights (`fold_adapter`): it answers in one forward pass per request, where unmerged LoRA modules cost
    most; the others stay exact, as their difference from it, and are merged while they generate. On a GPU's
    bfloat16 weights every adapter stays unmerged: adding it in would round it away (`merges_are_exact`).
    """

    def __init__(self, runs: dict[str, str | Path], device: str | None = None, compile_scoring: bool | None = None):
        from reasonapp import settings
        from reasonapp.models import (
            fold_adapter,
            load_base_model,
            load_with_adapters,
            merges_are_exact,
            use_onednn_output_layer,
        )

        if not runs:
            raise ModelError("no classifier runs given")
        self.runs = {name: RunInfo.from_run_dir(path, name) for name, path in runs.items()}
        adapters = {name: info for name, info in self.runs.items() if info.adapter_dir}
        self._models: dict[str, tuple] = {}
        self._folded: str | None = None  # the label-scoring run whose adapter lives in the base weights
        self._merge_for_generation = False
        if adapters:
            bases = {info.base_model for info in adapters.values()}
            if len(bases) > 1:
                raise ModelError(f"adapter runs to compare must share a base model, got {sorted(bases)}")
            shared = load_with_adapters(bases.pop(), {n: i.adapter_dir for n, i in adapters.items()}, device)
            self._models.update({name: shared for name in adapters})
            self._merge_for_generation = merges_are_exact(shared[0])
            scorers = [name for name, info in adapters.items() if get_format(info.task).answers_with_label_only]
            if scorers and self._merge_for_generation:
                fold_adapter(shared[0], scorers[0])
                self._folded = scorers[0]
        for name, info in self.runs.items():
            if info.model_dir:
                self._models[name] = load_base_model(str(info.model_dir), device)
        for model, _ in self._models.values():
            use_onednn_output_layer(model)  # a Q->A request scores 11 positions: ~14 ms less on the CPU (README)
        self.model, self.tokenizer = next(iter(self._models.values()))
        self._prefixes: dict[str, PrefixCache] = {}
        self._compiled_scorer = None
        if settings.compile_scoring() if compile_scoring is None else compile_scoring:
            self.compile_scoring()

    def compile_scoring(self) -> None:
        """Score the folded run through `torch.compile` (inductor) from now on; other runs stay eager.

        With the adapter folded the scoring forward is plain weights: inductor fuses the norms, rotary
        embeddings, activations and residual adds around the matrix products (~15 ms of an ~85 ms Q->A
        request eagerly on this CPU). Optional, as the default path must not need a compiler: it needs a
        C++ compiler, and each new batch shape waits for a compile (~0.5-1 min here). The one-text shape (the
        Compare tab's) is compiled here, so that wait falls on loading and not on the user's first request.
        """
        import shutil

        import torch

        if self._folded is None:
            raise ModelError("compiled scoring needs a label-scoring run folded into float32 weights (on the CPU)")
        if not any(shutil.which(name) for name in ("c++", "g++", "clang++")):
            raise ModelError("compiled scoring needs a C++ compiler on PATH (torch.compile's CPU backend builds C++)")
        model = self._models[self._folded][0]
        self._compiled_scorer = torch.compile(model.base_model.model, dynamic=True)
        self.score(self._folded, ["compile the one-text shape"])

    def _use(self, name: str) -> RunInfo:
        """Point `model` at the run. PEFT's switches walk every module (~6-13 ms each here): only when needed."""
        info = self.runs[name]
        self.model, self.tokenizer = self._models[name]
        if info.adapter_dir:
            if self.model.active_adapter != name:
                self.model.set_adapter(name)
            enabled = name != self._folded  # the folded run needs no adapter layers at all
            if _adapter_layers_enabled(self.model) != enabled:
                model = self.model.base_model
                (model.enable_adapter_layers if enabled else model.disable_adapter_layers)()
        return info

    def _prefix(self, name: str) -> PrefixCache:
        """The run's shared prompt prefix (template + instruction up to the text), its KV cache kept across calls."""
        if name not in self._prefixes:
            info = self.runs[name]
            fmt = get_format(info.task)
            probes = [render_prompt(self.tokenizer, fmt.messages(text, info.labels)) for text in ("a", "b")]
            self._prefixes[name] = PrefixCache(common_prefix(self.tokenizer(probes, add_special_tokens=False)["input_ids"]))
        return self._prefixes[name]

    def score(self, name: str, texts: list[str], batch_size: int = 16, progress: ProgressCallback | None = None):
        """Label probabilities (softmax over the label set's log-probabilities), [rows, labels]."""

        info = self._use(name)
        fmt = get_format(info.task)
        if not fmt.answers_with_label_only:
            raise ModelError(f"the {name} run ({info.task}) generates its label with a reasoning; only qa and multitask runs are scored")
        conversations = [fmt.messages(text, info.labels) for text in texts]
        model = self._compiled_scorer if name == self._folded and self._compiled_scorer is not None else self.model
        logp = score_labels(model, self.tokenizer, conversations, info.labels.names, batch_size, progress, self._prefix(name))
        return label_probabilities(logp)

    def predict(
        self,
        name: str,
        texts: list[str],
        decoding: Decoding | None = None,
        batch_size: int = 16,
        progress: ProgressCallback | None = None,
    ) -> list[Prediction]:
        """Free generation in the run's format, parsed (invalid output stays invalid)."""
        info = self._use(name)
        fmt = get_format(info.task)
        decoding = decoding or Decoding(max_new_tokens=8 if fmt.answers_with_label_only else 128)
        conversations = [fmt.messages(text, info.labels) for text in texts]
        with self._merged(name):
            outputs = generate(self.model, self.tokenizer, conversations, decoding, batch_size, progress, self._prefix(name))
        return [fmt.parse(output, info.labels) for output in outputs]

    def stream(self, name: str, text: str, decoding: Decoding | None = None):
        """Yield the growing output for one text; the last value is the whole output."""
        info = self._use(name)
        fmt = get_format(info.task)
        messages = fmt.messages(text, info.labels)
        with self._merged(name):
            yield from stream(self.model, self.tokenizer, messages, decoding or Decoding(max_new_tokens=128), self._prefix(name))

    @contextmanager
    def _merged(self, name: str):
        """The run's LoRA folded into the base weights while it generates token by token.

        Unmerged, each of the ~210 adapted layers runs three extra small modules at every step: at
        batch 1 that is ~50 ms a token on this CPU, more than the base model's own ~30 ms. Merging
        (and unmerging after) rewrites the weights once each way, ~77 ms. Callers hold the model exclusively
        meanwhile (the app's Compare tab takes a lock), as they already must to switch adapters. Not on
        bfloat16 weights, where unmerging would not give back the weights merging started from.
        """
        if not self.runs[name].adapter_dir or name == self._folded or not self._merge_for_generation:
            yield
            return
        self.model.merge_adapter([name])
        try:
            yield
        finally:
            self.model.unmerge_adapter()

    def parse(self, name: str, output: str) -> Prediction:
        info = self.runs[name]
        return get_format(info.task).parse(output, info.labels)
