"""Trained classifiers as objects: load runs as adapters on one shared base model, predict texts.

Evaluation and the app's Compare tab both go through `Classifiers`, so what is measured is what is
shown. Each run directory's config says its task (qa / qra / qar), label names and prompt version.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from reasonapp.errors import ModelError, RunDirError
from reasonapp.models import Fold, packed_weights_suspended
from reasonapp.prompts import PROMPT_VERSION, LabelSpace, Prediction, get_format, render_prompt
from training import rundir
from training.generation import (
    Decoding,
    NgramDrafts,
    PrefixCache,
    ProgressCallback,
    common_prefix,
    generate,
    score_labels,
    stream,
)

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


def load_classifiers(runs: dict[str, str | Path], backend: str | None = None, previous=None):
    """Classifiers on the chosen backend (`REASONAPP_BACKEND` when not given): both answer `score`,
    `predict`, `stream` and `parse` for the same runs. `previous`: the classifiers these replace, switched to
    the new runs in place where they can be (`Classifiers.switch`); else they let go of their models first."""
    from reasonapp import settings

    if (backend or settings.inference_backend()) == "llama.cpp":
        from training.llamacpp import LlamaCppClassifiers

        return LlamaCppClassifiers(runs)
    if isinstance(previous, Classifiers) and previous.switch(runs):
        return previous
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

        if not runs:
            raise ModelError("no classifier runs given")
        self._device = device
        self._drafts: dict[str, NgramDrafts] = {}  # per run directory: its earlier outputs, to guess tokens from
        self._load({name: RunInfo.from_run_dir(path, name) for name, path in runs.items()})
        if settings.compile_scoring() if compile_scoring is None else compile_scoring:
            self.compile_scoring()

    def _load(self, runs: dict[str, RunInfo], shared: tuple | None = None, prefixes: dict | None = None) -> None:
        """Hold these runs: adapter runs on one shared base model (`shared`: that model, already holding exactly
        their adapters, as loaded, and its tokenizer), the first label-scoring one folded in on float32 weights.
        `prefixes`: prompt-prefix caches still valid for these runs."""
        from reasonapp.models import (
            fold_adapter,
            load_base_model,
            load_with_adapters,
            merges_are_exact,
            pack_onednn_weights,
            use_onednn_linears,
        )

        adapters = {name: info for name, info in runs.items() if info.adapter_dir}
        bases = {info.base_model for info in adapters.values()}
        if len(bases) > 1:
            raise ModelError(f"adapter runs to compare must share a base model, got {sorted(bases)}")
        self.runs = runs
        self._models: dict[str, tuple] = {}
        self._fold: Fold | None = None  # the label-scoring run whose adapter lives in the base weights
        self._merge_for_generation = False
        if adapters:
            shared = shared or load_with_adapters(bases.pop(), {n: i.adapter_dir for n, i in adapters.items()}, self._device)
            self._models.update({name: shared for name in adapters})
            self._merge_for_generation = merges_are_exact(shared[0])
            scorers = [name for name, info in adapters.items() if get_format(info.task).answers_with_label_only]
            if scorers and self._merge_for_generation:
                self._fold = fold_adapter(shared[0], scorers[0])
        for name, info in runs.items():
            if info.model_dir:
                self._models[name] = load_base_model(str(info.model_dir), self._device)
        for model in {id(model): model for model, _ in self._models.values()}.values():  # adapter runs share one
            use_onednn_linears(model)  # a Q->A request ~30% less on the CPU, the first token too (README)
            # the folded weights, a Q->A request ~15% less (README); `_merged` writes past them. Not the output layer:
            # its 113 MB would take the app over 1.5 GB for ~3 ms of a request
            pack_onednn_weights(model, output_layer=False)
        self.model, self.tokenizer = next(iter(self._models.values()))
        self._prefixes: dict[str, PrefixCache] = dict(prefixes or {})
        self._compiled_scorer = None
        if self._fold is not None:  # its prompt prefix's cache now, not in the first request (~150 ms here)
            self._use(self._fold.name)
            self._prefix(self._fold.name).expanded(self.model, 1)

    @property
    def _folded(self) -> str | None:
        return self._fold.name if self._fold else None

    def switch(self, runs: dict[str, str | Path]) -> bool:
        """Hold these runs instead, in place, loading only the adapters that differ: the Compare tab's new pick.

        The loaded model goes back to what loading gave (`unfold_adapter`: every adapter's own LoRA, the base
        weights read back from the checkpoint), the adapters of runs that change are swapped (~0.3 s each here)
        and the label-scoring one is folded in again: bit for bit what a new `Classifiers(runs)` holds (tested),
        in ~0.6 s for one new run against ~1.7 s for a whole new load. False when these runs cannot share this
        object's base model (another base model, a fully fine-tuned run, a compiled scorer, a checkpoint not
        readable here): then this object has let go of its models, so load anew.
        """
        from reasonapp.models import adapter_base_model, unfold_adapter, unpack_onednn_weights

        new = {name: RunInfo.from_run_dir(path, name) for name, path in runs.items()}
        changed = [name for name, info in new.items() if name not in self.runs or info.run_dir != self.runs[name].run_dir]
        for name in changed:
            if new[name].adapter_dir:
                adapter_base_model(new[name].adapter_dir)  # a clear error before anything changes
        shared = next(iter(self._models.values()), None)
        same_base = {info.base_model for info in new.values()} == {info.base_model for info in self.runs.values()}
        adapter_runs_only = all(info.adapter_dir for info in [*new.values(), *self.runs.values()])
        writes_weights = self._merge_for_generation  # float32: folds and merges wrote into the base weights
        possible = new and shared and same_base and adapter_runs_only and self._compiled_scorer is None
        if shared:  # stale once unfolded; `_load` packs the new fold (with both at once, +0.4 GB at the peak)
            unpack_onednn_weights(shared[0])
        if not possible or (writes_weights and not unfold_adapter(shared[0], self._fold)):
            self._let_go()
            return False
        model = shared[0]
        staying = [name for name in model.peft_config if name in new and name not in changed]
        if staying:
            model.set_adapter(staying[0])  # none of those about to go is active (PEFT warns)
        for name in [*changed, *(name for name in self.runs if name not in new)]:
            if name in model.peft_config:
                with warnings.catch_warnings():  # the active one goes too when a pick replaces both: it is set again below
                    warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
                    model.delete_adapter(name)
        for name in changed:
            model.load_adapter(str(new[name].adapter_dir), adapter_name=name, low_cpu_mem_usage=True)
        model.set_adapter(next(iter(new)))
        model.eval()
        scorers = [name for name, info in new.items() if get_format(info.task).answers_with_label_only]
        same_fold = scorers[:1] == ([self._folded] if self._folded else []) and self._folded not in changed
        kept = {name: prefix for name, prefix in self._prefixes.items() if name in new and name not in changed}
        self._load(new, shared, kept if same_fold else None)  # the same run folded in: the others compute as before
        return True

    def _let_go(self) -> None:
        self._models, self._prefixes, self._compiled_scorer, self.model, self._fold = {}, {}, None, None, None

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
        drafts = self._drafts.setdefault(str(info.run_dir.resolve()), NgramDrafts())  # guesses from its earlier outputs
        with self._merged(name):
            yield from stream(self.model, self.tokenizer, messages, decoding or Decoding(max_new_tokens=128), self._prefix(name), drafts)

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
        with packed_weights_suspended(self.model):  # the packed copies hold the weights from before the merge
            self.model.merge_adapter([name])
            try:
                yield
            finally:
                self.model.unmerge_adapter()

    def parse(self, name: str, output: str) -> Prediction:
        info = self.runs[name]
        return get_format(info.task).parse(output, info.labels)
