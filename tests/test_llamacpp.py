"""The optional llama.cpp backend: a run's adapter merged into the base GGUF, and served with the same answers."""

import numpy as np
import pytest

from reasonapp.errors import ModelError
from reasonapp.prompts import PROMPT_VERSION

EMOTIONS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
TEXTS = ["i feel so alone tonight", "i am thrilled about the trip", "im furious that they lied to me"]


def _lora_run(tmp_path, base_model: str, task: str = "qa", lora_scale: float = 0.3):
    """A classifier run dir with a random LoRA adapter: every update non-zero, large enough to change the
    next-token distribution clearly (KL ~0.13 from the base), small enough that the model still writes English."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from reasonapp.models import resolve_base_model
    from training import rundir

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(resolve_base_model(base_model), dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(lora_scale)
    run_dir = tmp_path / f"{task}-run"
    model.save_pretrained(run_dir / rundir.ADAPTER)
    rundir.write_config(
        run_dir, {"task": task, "base_model": base_model, "label_names": EMOTIONS, "prompt_version": PROMPT_VERSION}
    )
    return run_dir, model.merge_and_unload().state_dict()


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, smollm2_dir):
    from reasonapp.models import DEFAULT_BASE_MODEL

    return _lora_run(tmp_path_factory.mktemp("llamacpp"), DEFAULT_BASE_MODEL)


def test_export_merges_the_adapter_into_the_base_gguf_and_copies_the_rest(lora_run, smollm2_dir):
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    from reasonapp.models import DEFAULT_BASE_MODEL, base_gguf_path
    from training.llamacpp import _permute_for_llama_cpp, export_gguf

    run_dir, merged = lora_run
    path = export_gguf(run_dir)
    source = {t.name: t for t in gguf.GGUFReader(base_gguf_path(DEFAULT_BASE_MODEL)).tensors}
    exported = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert exported.keys() == source.keys()

    def weights(tensor):
        return gguf.quants.dequantize(tensor.data, tensor.tensor_type)

    # llama.cpp's rotary layout of q/k rows: the permutation turns the base's HF weights into its GGUF tensor exactly
    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).state_dict()
    hf_q = base["model.layers.0.self_attn.q_proj.weight"].numpy()
    assert np.array_equal(_permute_for_llama_cpp(hf_q, heads=9), weights(source["blk.0.attn_q.weight"]))

    for hf_name, gguf_name, heads in [
        ("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", 9),
        ("model.layers.7.self_attn.k_proj.weight", "blk.7.attn_k.weight", 3),
        ("model.layers.29.mlp.down_proj.weight", "blk.29.ffn_down.weight", None),
    ]:
        expected = merged[hf_name].numpy()
        expected = _permute_for_llama_cpp(expected, heads) if heads else expected
        tensor = exported[gguf_name]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.Q8_0
        assert np.abs(weights(tensor) - expected).max() <= np.abs(expected).max() / 127  # Q8_0 rounding only
        assert np.abs(weights(tensor) - weights(source[gguf_name])).max() > 1e-3  # the update is there
    for untouched in ("token_embd.weight", "blk.3.attn_norm.weight", "output_norm.weight"):
        assert exported[untouched].tensor_type == source[untouched].tensor_type
        assert np.array_equal(exported[untouched].data, source[untouched].data)

    written = path.stat().st_mtime_ns
    assert export_gguf(run_dir) == path and path.stat().st_mtime_ns == written  # exported once, then reused


def test_export_of_a_base_without_gguf_says_how_to_get_one(tmp_path, tiny_model_dir):
    from training.llamacpp import export_gguf

    run_dir, _ = _lora_run(tmp_path, tiny_model_dir)
    with pytest.raises(ModelError, match="convert_hf_to_gguf"):
        export_gguf(run_dir)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float((np.exp(p) * (p - q)).sum())


def test_llama_cpp_serves_what_transformers_serves_within_quantization_noise(lora_run, smollm2_dir):
    """Q8_0 weights and llama.cpp's 8-bit activations are not bit-identical to float32. Measured on the real
    model: next-token KL ~0.007 from transformers, while switching the adapter off moves it ~0.13. So the
    export carries the adapter (a wrong q/k layout or a lost update would move it far more), and labels
    agree on confident classifiers (`bench` measures that on the real runs)."""
    pytest.importorskip("llama_cpp", reason="optional backend: pip install llama-cpp-python")
    import torch

    from reasonapp.models import load_base_model
    from training.generation import Decoding
    from training.llamacpp import LlamaCppClassifiers
    from training.predict import Classifiers

    run_dir, _ = lora_run
    reference = Classifiers({"qa": run_dir})
    served = LlamaCppClassifiers({"qa": run_dir})
    plain_base, _ = load_base_model(smollm2_dir)
    for text in TEXTS:
        ids = served._prompt_ids("qa", text)
        with torch.no_grad():
            reference._use("qa")
            adapted = torch.log_softmax(reference.model(torch.tensor([ids])).logits[0, -1].double(), -1).numpy()
            base = torch.log_softmax(plain_base(torch.tensor([ids])).logits[0, -1].double(), -1).numpy()
        assert _kl(adapted, served._evaluate("qa", ids)) < 0.03 < 0.05 < _kl(adapted, base)

    expected, got = reference.score("qa", TEXTS), served.score("qa", TEXTS)
    assert got.shape == (3, 6) and np.allclose(got.sum(axis=1), 1)
    assert max(_kl(np.log(e), np.log(g)) for e, g in zip(expected, got, strict=True)) < 0.1

    outputs = []
    for text in TEXTS:
        *partial, output = served.stream("qa", text, Decoding(max_new_tokens=12))
        assert output and all(output.startswith(piece) for piece in partial)
        outputs.append(output)
    assert served.predict("qa", TEXTS, Decoding(max_new_tokens=12)) == [served.parse("qa", o) for o in outputs]


def test_the_app_backend_is_chosen_by_environment(monkeypatch, lora_run):
    from reasonapp.errors import ConfigError
    from training.predict import Classifiers, load_classifiers

    run_dir, _ = lora_run
    monkeypatch.setenv("REASONAPP_BACKEND", "transformers")
    assert isinstance(load_classifiers({"qa": run_dir}), Classifiers)
    monkeypatch.setenv("REASONAPP_BACKEND", "onnx")
    with pytest.raises(ConfigError, match="llama.cpp"):
        load_classifiers({"qa": run_dir})


def test_the_compare_tab_serves_from_llama_cpp_when_asked(monkeypatch, lora_run):
    pytest.importorskip("llama_cpp", reason="optional backend: pip install llama-cpp-python")
    from reasonapp.ui.compare import CompareHandlers
    from training.llamacpp import LlamaCppClassifiers

    run_dir, _ = lora_run
    monkeypatch.setenv("REASONAPP_BACKEND", "llama.cpp")
    handlers = CompareHandlers()
    *_, last = handlers.predict("i am thrilled about the trip", str(run_dir), str(run_dir))
    qa_label, probabilities, qa_latency, _, _, qra_latency, _, _ = last
    assert isinstance(handlers.classifiers(str(run_dir), str(run_dir)), LlamaCppClassifiers)
    assert qa_label in EMOTIONS and abs(probabilities["probability"].sum() - 1) < 1e-3
    assert qa_latency.endswith(" ms") and "first token" in qra_latency
