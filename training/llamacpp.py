"""llama.cpp as an optional inference backend: a run's LoRA merged into its base GGUF, served by llama-cpp-python.

Why: at batch 1 the transformers path is bound by reading 540 MB of float32 weights per token (~21 ms at this
CPU's 25 GB/s) plus PEFT's per-layer overhead. The base model ships as a Q4_1 GGUF; merging the adapter into
it and storing the adapted matrices as Q8_0 gives ~145 MB of weights that llama.cpp's kernels read per token.
The outputs are not bit-identical to float32 (Q8_0 rounding, llama.cpp's own kernels), so `bench` measures
agreement with the transformers path beside the speed. `make llamacpp` compiles llama-cpp-python (for AVX2;
see the Makefile); the default path never needs it.

`LlamaCppClassifiers` has the methods of `training.predict.Classifiers` that the Compare tab and `bench` use
(`score`, `predict`, `stream`, `parse`), with prompts and tokens from the same Hugging Face tokenizer.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from reasonapp.errors import ModelError
from reasonapp.prompts import Prediction, get_format, render_prompt
from training.generation import Decoding, ProgressCallback, label_token_ids
from training.predict import RunInfo, label_probabilities

logger = logging.getLogger(__name__)

GGUF_DIR = "gguf"
MERGED_TYPE = "Q8_0"  # adapted matrices; the base's untouched tensors keep their own type


def _permute_for_llama_cpp(weights: np.ndarray, heads: int) -> np.ndarray:
    """HF Llama q/k rows in the rotary layout llama.cpp expects (what llama.cpp's convert_hf_to_gguf.py does)."""
    return weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def export_gguf(run_dir: str | Path, force: bool = False) -> Path:
    """The run's adapter merged into its base model's GGUF, written once to <run>/gguf/ and reused after.

    Tensors the adapter does not touch (norms, embeddings) are copied byte for byte; adapted matrices are the
    base's dequantized weights plus the LoRA update (PEFT's merge), quantized to Q8_0.
    """
    import gguf
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from reasonapp.models import base_gguf_path, resolve_base_model

    info = RunInfo.from_run_dir(run_dir)
    if info.adapter_dir is None:
        raise ModelError(f"{run_dir} is a fully fine-tuned run; GGUF export here merges LoRA adapters into a base GGUF")
    target = info.run_dir / GGUF_DIR / f"merged-{MERGED_TYPE.lower()}.gguf"
    adapter_file = info.adapter_dir / "adapter_model.safetensors"
    if target.is_file() and not force and target.stat().st_mtime >= adapter_file.stat().st_mtime:
        return target
    source = base_gguf_path(info.base_model)
    if source is None:
        raise ModelError(
            f"no GGUF file for the base model {info.base_model!r}: the llama.cpp backend needs the base as GGUF "
            "(the offline SmolLM2 default has one; convert others with llama.cpp's convert_hf_to_gguf.py)"
        )

    base = AutoModelForCausalLM.from_pretrained(resolve_base_model(info.base_model), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(info.adapter_dir)).merge_and_unload()
    config = merged.config
    adapted = {
        name + ".weight"
        for name, module in base.named_modules()
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in _target_modules(info.adapter_dir)
    }
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    replacements: dict[str, np.ndarray] = {}
    for hf_name, tensor in merged.state_dict().items():
        if hf_name not in adapted:
            continue
        weights = tensor.detach().float().numpy()
        if hf_name.endswith("q_proj.weight"):
            weights = _permute_for_llama_cpp(weights, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            weights = _permute_for_llama_cpp(weights, config.num_key_value_heads)
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight",))
        if gguf_name is None:
            raise ModelError(f"no GGUF name for {hf_name}; only Llama-architecture bases are supported")
        replacements[gguf_name] = weights

    reader = gguf.GGUFReader(source)
    if reader.fields["general.architecture"].contents() != "llama":
        raise ModelError(f"{source} is not a Llama-architecture GGUF")
    missing = sorted(set(replacements) - {tensor.name for tensor in reader.tensors})
    if missing:
        raise ModelError(f"{source} lacks tensors the adapter changes: {missing[:3]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=".merged-", suffix=".gguf", dir=target.parent)
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(staging, "llama")
        for field in reader.fields.values():
            if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
        writer.add_string("reasonapp.adapter", str(info.adapter_dir))
        quant = gguf.GGMLQuantizationType[MERGED_TYPE]
        for tensor in reader.tensors:
            if tensor.name in replacements:
                writer.add_tensor(tensor.name, gguf.quants.quantize(replacements[tensor.name], quant), raw_dtype=quant)
            else:
                writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)  # as stored: bytes per row
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(staging, target)
    finally:
        Path(staging).unlink(missing_ok=True)
    logger.info("wrote %s (%.0f MB)", target, target.stat().st_size / 1e6)
    return target


def _target_modules(adapter_dir: Path) -> set[str]:
    targets = json.loads((adapter_dir / "adapter_config.json").read_text()).get("target_modules") or []
    if isinstance(targets, str):
        raise ModelError(f"{adapter_dir}: a regex target_modules is not supported for GGUF export; list the modules")
    return set(targets)


def _next_token_logp(llama, position: int) -> np.ndarray:
    """Log-softmax of the logits llama.cpp holds for a position of its last decode call (-1: the last one)."""
    import llama_cpp

    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.ctx, position), shape=(llama.n_vocab(),))
    logits = logits.astype(np.float64)
    return logits - np.logaddexp.reduce(logits)


class LlamaCppClassifiers:
    """Classifier runs served by llama.cpp from their merged GGUF exports (one small model per run)."""

    def __init__(self, runs: dict[str, str | Path], threads: int | None = None, context: int = 1024):
        try:
            from llama_cpp import Llama
        except ImportError as error:
            raise ModelError("the llama.cpp backend needs llama-cpp-python: `make llamacpp` builds it") from error
        import torch

        from reasonapp.models import load_tokenizer, resolve_base_model

        if not runs:
            raise ModelError("no classifier runs given")
        self.runs = {name: RunInfo.from_run_dir(path, name) for name, path in runs.items()}
        bases = {info.base_model for info in self.runs.values()}
        if len(bases) > 1:
            raise ModelError(f"runs to compare must share a base model, got {sorted(bases)}")
        self.tokenizer = load_tokenizer(resolve_base_model(bases.pop()))  # the transformers path's tokenizer
        self._llamas = {
            name: Llama(
                model_path=str(export_gguf(info.run_dir)),
                n_ctx=context,
                n_threads=threads or torch.get_num_threads(),
                n_batch=context,
                verbose=False,
            )
            for name, info in self.runs.items()
        }
        for llama in self._llamas.values():  # freed before interpreter shutdown tears down llama_cpp's module
            atexit.register(llama.close)

    def _prompt_ids(self, name: str, text: str) -> list[int]:
        info = self.runs[name]
        prompt = render_prompt(self.tokenizer, get_format(info.task).messages(text, info.labels))
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def _evaluate(self, name: str, ids: list[int]) -> np.ndarray:
        """Log-probabilities of the next token after `ids`, reusing the KV cache of what the context already holds."""

        llama = self._llamas[name]
        held = llama.input_ids[: llama.n_tokens].tolist()
        common = 0
        while common < min(len(held), len(ids) - 1) and held[common] == ids[common]:
            common += 1
        llama.n_tokens = common
        llama.eval(ids[common:])
        # Without logits_all, llama-cpp-python keeps no scores; llama.cpp holds the last position's logits.
        return _next_token_logp(llama, -1)

    def _continuation_logp(self, name: str, prompt_length: int, ids: list[int]) -> float:
        """Log-probability of ids[1:] after the prompt and ids[0]: one decode call with logits at every position.

        llama-cpp-python's `eval` keeps only the last position's logits (or all of them for the whole context,
        100 MB per model), so this feeds llama.cpp's batch API directly; the KV beyond the prompt is dropped
        first and the prompt's is reused.
        """
        import llama_cpp

        if len(ids) < 2:
            return 0.0
        llama = self._llamas[name]
        llama_cpp.llama_memory_seq_rm(llama_cpp.llama_get_memory(llama.ctx), 0, prompt_length, -1)
        llama.n_tokens = prompt_length
        feed = ids[:-1]
        batch = llama_cpp.llama_batch_init(len(feed), 0, 1)
        try:
            batch.n_tokens = len(feed)
            for i, token in enumerate(feed):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, prompt_length + i, 1, True
                batch.seq_id[i][0] = 0
            if llama_cpp.llama_decode(llama.ctx, batch) != 0:
                raise ModelError("llama.cpp could not score a label (llama_decode failed)")
            total = 0.0
            for i, token in enumerate(ids[1:]):
                total += _next_token_logp(llama, i)[token]
            return total
        finally:
            llama_cpp.llama_batch_free(batch)

    def score(self, name: str, texts: list[str], batch_size: int = 16, progress: ProgressCallback | None = None):
        """Label probabilities, [rows, labels]: each label's tokens scored after the prompt (prefix KV reused)."""
        info = self.runs[name]
        if not get_format(info.task).answers_with_label_only:
            raise ModelError(f"the {name} run ({info.task}) generates its label with a reasoning; only qa and multitask runs are scored")
        fmt = get_format(info.task)
        # the label's assistant turn with its end-of-turn marker, exactly as the transformers path scores it
        label_ids = label_token_ids(self.tokenizer, fmt.messages("", info.labels), info.labels.names)
        rows = []
        for index, text in enumerate(texts):
            prompt = self._prompt_ids(name, text)
            first = self._evaluate(name, prompt)
            rows.append([first[ids[0]] + self._continuation_logp(name, len(prompt), ids) for ids in label_ids])
            if progress:
                progress(index + 1, len(texts))
        return label_probabilities(np.asarray(rows, dtype=np.float64).reshape(len(texts), len(label_ids)))

    def stream(self, name: str, text: str, decoding: Decoding | None = None):
        """Yield the growing greedy output for one text; the last value is the whole output."""
        decoding = decoding or Decoding(max_new_tokens=128)
        if decoding.do_sample:
            raise ModelError("the llama.cpp backend decodes greedily only")
        llama = self._llamas[name]
        prompt = self._prompt_ids(name, text)
        generated: list[int] = []
        # generate() reuses the KV cache of the longest prefix it shares with the context (the instruction).
        for token in llama.generate(prompt, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
            if token == self.tokenizer.eos_token_id or token == llama.token_eos():
                break
            generated.append(token)
            yield self.tokenizer.decode(generated, skip_special_tokens=True)
            if len(generated) >= decoding.max_new_tokens or len(prompt) + len(generated) >= llama.n_ctx():
                break

    def predict(
        self,
        name: str,
        texts: list[str],
        decoding: Decoding | None = None,
        batch_size: int = 16,
        progress: ProgressCallback | None = None,
    ) -> list[Prediction]:
        """Greedy generation in the run's format, parsed, one text at a time."""
        outputs = []
        for index, text in enumerate(texts):
            *_, output = ["", *self.stream(name, text, decoding)]
            outputs.append(self.parse(name, output))
            if progress:
                progress(index + 1, len(texts))
        return outputs

    def parse(self, name: str, output: str) -> Prediction:
        info = self.runs[name]
        return get_format(info.task).parse(output, info.labels)
