"""Resolving and loading base models and adapters offline."""

import pytest

from reasonapp.errors import ModelError
from reasonapp.models import load_base_model, load_with_adapters, pick_device_and_dtype, resolve_base_model


def test_cpu_uses_float32():
    import torch

    assert pick_device_and_dtype("cpu") == ("cpu", torch.float32)


def test_default_model_resolves_to_a_cached_float32_directory(smollm2_dir):
    import json
    from pathlib import Path

    config = json.loads((Path(smollm2_dir) / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    assert "quantization_config" not in config
    assert resolve_base_model("HuggingFaceTB/SmolLM2-135M-Instruct") == smollm2_dir  # cached, not converted again


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ModelError, match="neither a local directory nor reachable"):
        resolve_base_model("nobody/no-such-model")
    with pytest.raises(ModelError, match="no config.json"):
        resolve_base_model("/tmp")


def test_real_smollm2_answers_a_question(smollm2_dir):
    model, tokenizer = load_base_model(smollm2_dir)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(output[0, inputs["input_ids"].shape[1] :])


def test_two_adapters_share_one_base_model(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, _ = load_base_model(tiny_model_dir)
    for name in ("qa", "qra"):
        peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        peft_model.save_pretrained(tmp_path / name)
        model = peft_model.unload()
    shared, _ = load_with_adapters(tiny_model_dir, {"qa": tmp_path / "qa", "qra": tmp_path / "qra"})
    assert set(shared.peft_config) == {"qa", "qra"}
    shared.set_adapter("qra")
    assert shared.active_adapter == "qra"


FEW, MANY = ["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]


def random_adapters(tiny_model_dir, root, targets=None, seed=0) -> dict:
    """LoRA adapters with random non-zero updates on these modules (by name; ranks 4, 8, ...), saved under `root`."""
    import torch
    from peft import LoraConfig, get_peft_model

    model, _ = load_base_model(tiny_model_dir, device="cpu")
    for index, (name, modules) in enumerate((targets or {"qa": FEW, "qra": MANY}).items()):
        torch.manual_seed(seed + index)
        peft_model = get_peft_model(model, LoraConfig(r=4 + 4 * index, lora_alpha=8, target_modules=modules, init_lora_weights=False))
        peft_model.save_pretrained(root / name)
        model = peft_model.unload()
    return {name: root / name for name in targets or {"qa": FEW, "qra": MANY}}


def same_weights(ours: dict, theirs: dict) -> bool:
    """Two state dicts with the same tensors, bit for bit."""
    return ours.keys() == theirs.keys() and all(ours[key].equal(theirs[key]) for key in ours)


@pytest.mark.parametrize(
    "targets",
    [{"qa": FEW, "qra": MANY}, {"qa": MANY, "qra": FEW}],
    ids=["the other adapter covers the folded one's modules", "the folded adapter covers modules the other lacks"],
)
def test_folding_one_adapter_into_the_base_keeps_what_every_adapter_computes(tiny_model_dir, tmp_path, targets):
    import torch

    from reasonapp.models import fold_adapter

    _, tokenizer = load_base_model(tiny_model_dir, device="cpu")
    adapters = random_adapters(tiny_model_dir, tmp_path, targets)  # random non-zero updates on different modules and ranks
    reference, _ = load_with_adapters(tiny_model_dir, adapters, device="cpu")  # float32: a fold is exact there
    folded, _ = load_with_adapters(tiny_model_dir, adapters, device="cpu")
    fold_adapter(folded, "qa")
    ids = torch.tensor([tokenizer("i feel so alone tonight")["input_ids"]])

    def logits(model):
        with torch.inference_mode():
            return model(input_ids=ids).logits

    expected = {}
    for name in targets:
        reference.set_adapter(name)
        expected[name] = logits(reference)
    with reference.disable_adapter():
        base = logits(reference)
    assert all((expected[name] - base).abs().max() > 1e-2 for name in targets)  # both adapters matter

    assert (logits(folded) - expected["qa"]).abs().max() < 1e-4  # the folded adapter, layers enabled (zeroed LoRA)
    folded.base_model.disable_adapter_layers()
    assert (logits(folded) - expected["qa"]).abs().max() < 1e-4  # and on the plain weights alone
    folded.base_model.enable_adapter_layers()
    folded.set_adapter("qra")
    assert (logits(folded) - expected["qra"]).abs().max() < 1e-4  # the other one, as a difference from it
    folded.merge_adapter(["qra"])
    assert (logits(folded) - expected["qra"]).abs().max() < 1e-4
    folded.unmerge_adapter()
    assert set(folded.peft_config) == {"qa", "qra"}


def test_unfolding_gives_back_every_adapter_and_the_base_weights_as_loaded_after_merges(tiny_model_dir, tmp_path):
    from reasonapp.models import fold_adapter, unfold_adapter

    adapters = random_adapters(tiny_model_dir, tmp_path)
    loaded, _ = load_with_adapters(tiny_model_dir, adapters, device="cpu")
    model, _ = load_with_adapters(tiny_model_dir, adapters, device="cpu")
    fold = fold_adapter(model, "qa")
    model.merge_adapter(["qra"])
    model.unmerge_adapter()
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert not q_proj.base_layer.weight.equal(loaded.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight)
    assert q_proj.r["qra"] == 4 + 8  # the other adapter as its difference from the folded one

    assert unfold_adapter(model, fold)
    assert same_weights(model.state_dict(), loaded.state_dict())  # bit for bit: base weights, both LoRAs, their ranks' shapes
    assert q_proj.r["qra"] == 8 and q_proj.scaling["qra"] == 1.0 and q_proj.scaling["qa"] == 2.0  # alpha 8 over ranks 8 and 4
    fold_adapter(model, "qa")  # and it folds again as before


def test_unfolding_changes_nothing_where_it_cannot_be_done(tiny_model_dir, tmp_path):
    from reasonapp.models import fold_adapter, unfold_adapter

    model, _ = load_with_adapters(tiny_model_dir, random_adapters(tiny_model_dir, tmp_path / "a"), device="cpu")
    fold = fold_adapter(model, "qa")
    folded = {key: value.clone() for key, value in model.state_dict().items()}
    model.get_base_model().name_or_path = str(tmp_path / "moved-away")  # its checkpoint is not there any more
    assert not unfold_adapter(model, fold)
    assert same_weights(model.state_dict(), folded)

    combined, _ = load_with_adapters(tiny_model_dir, random_adapters(tiny_model_dir, tmp_path / "b", {"qa": MANY, "qra": FEW}), device="cpu")
    assert not unfold_adapter(combined, fold_adapter(combined, "qa"))  # PEFT combined the other adapter: no way back


def test_folding_refuses_weights_that_would_round_the_adapter_away(tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model

    from reasonapp.models import fold_adapter

    model, _ = load_base_model(tiny_model_dir, device="cpu")
    peft_model = get_peft_model(model.to(torch.bfloat16), LoraConfig(r=4, target_modules=["q_proj"]), adapter_name="qa")
    before = peft_model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.clone()
    with pytest.raises(ModelError, match="not float32"):
        fold_adapter(peft_model, "qa")
    assert torch.equal(peft_model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight, before)


def test_directory_without_adapter_is_a_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(ModelError, match="holds no adapter"):
        load_with_adapters(tiny_model_dir, {"qa": tmp_path})


def test_weights_through_onednn_give_the_same_logits_keep_the_tied_weight_and_see_later_writes(tiny_model_dir):
    import torch

    from reasonapp.models import ONEDNN_MIN_ROWS, plain_linears, use_onednn_linears

    model, tokenizer = load_base_model(tiny_model_dir, device="cpu")
    ids = torch.tensor([tokenizer("i feel so alone tonight, and nobody calls me back")["input_ids"]])
    assert ids.shape[1] >= ONEDNN_MIN_ROWS  # every position's logits: the output layer's oneDNN path too
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
    weight = model.get_output_embeddings().weight
    plain = [m for m in model.modules() if type(m) is torch.nn.Linear]
    assert use_onednn_linears(model) == len(plain) == 7 * model.config.num_hidden_layers + 1
    assert use_onednn_linears(model) == 0  # once is enough
    assert model.get_output_embeddings().weight is weight  # not copied: still tied to the embeddings
    with torch.inference_mode():
        assert (model(input_ids=ids).logits - expected).abs().max() < 1e-5
        assert (model(input_ids=ids, logits_to_keep=1).logits - expected[:, -1:]).abs().max() < 1e-5  # one row
        model.model.layers[0].mlp.down_proj.weight.mul_(2)  # a write into the weights (a merge, a fold) counts at once
        assert (model(input_ids=ids).logits - expected).abs().max() > 1e-3
        model.model.layers[0].mlp.down_proj.weight.div_(2)
    with plain_linears(model):  # a benchmark's plain path: MKL's matmuls for the block, then oneDNN's again
        assert sum(type(m) is torch.nn.Linear for m in model.modules()) == len(plain)
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    model.train()
    loss = model(input_ids=ids, labels=ids).loss  # autograd on: a plain Linear, gradients flow
    loss.backward()
    assert model.model.layers[0].mlp.down_proj.weight.grad is not None


def test_packed_weights_give_the_same_logits_up_to_their_row_limit_and_step_aside_for_writes(tiny_model_dir, monkeypatch):
    """`pack_onednn_weights`: oneDNN's blocked copy of each weight, for weights that no longer change. It computes what
    the weights compute; above `PACKED_MAX_ROWS` rows, for a replaced weight, after `unpack_onednn_weights` and inside
    `packed_weights_suspended` the layers read their weights again. A write into a weight is not seen by the copy:
    the documented contract, shown here so that a change to it is a decision."""
    import torch

    from reasonapp import models
    from reasonapp.models import (
        pack_onednn_weights,
        packed_weights_suspended,
        unpack_onednn_weights,
        use_onednn_linears,
    )

    model, tokenizer = load_base_model(tiny_model_dir, device="cpu")
    ids = torch.tensor([tokenizer("i feel so alone tonight, and nobody calls me back")["input_ids"]])
    use_onednn_linears(model)
    down = model.model.layers[0].mlp.down_proj
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        assert pack_onednn_weights(model) == 7 * model.config.num_hidden_layers + 1  # the output layer's too
        assert down.packed is not None and model.get_output_embeddings().packed is not None
        assert (model(input_ids=ids).logits - expected).abs().max() < 1e-5
        assert (model(input_ids=ids, logits_to_keep=1).logits - expected[:, -1:]).abs().max() < 1e-5

        down.weight.mul_(2)  # a write into the weight: the packed copy still computes the weights from before it
        assert (model(input_ids=ids).logits - expected).abs().max() < 1e-5
        with packed_weights_suspended(model):  # ...which is what a merge undone on the way out relies on
            doubled = model(input_ids=ids).logits
            assert (doubled - expected).abs().max() > 1e-3
        assert down.packed is not None and (model(input_ids=ids).logits - expected).abs().max() < 1e-5
        monkeypatch.setattr(models, "PACKED_MAX_ROWS", ids.shape[1] - 1)  # more rows than packed copies serve
        assert (model(input_ids=ids).logits - doubled).abs().max() < 1e-5
        monkeypatch.undo()

        down.weight.data = down.weight.data.clone()  # a weight replaced by another tensor: the copy steps aside
        assert (model(input_ids=ids).logits - doubled).abs().max() < 1e-5
        down.weight.div_(2)
        assert unpack_onednn_weights(model) == 7 * model.config.num_hidden_layers + 1 and down.packed is None
        assert (model(input_ids=ids).logits - expected).abs().max() < 1e-5
        assert pack_onednn_weights(model, output_layer=False) == 7 * model.config.num_hidden_layers
        assert model.get_output_embeddings().packed is None and (model(input_ids=ids).logits - expected).abs().max() < 1e-5


def test_onednn_leaves_the_lora_factors_to_peft_and_computes_the_adapters_as_before(tiny_model_dir, tmp_path):
    import torch

    from reasonapp.models import use_onednn_linears

    adapters = random_adapters(tiny_model_dir, tmp_path)
    model, tokenizer = load_with_adapters(tiny_model_dir, adapters)
    ids = torch.tensor([tokenizer("i feel so alone tonight")["input_ids"]])
    expected = {}
    with torch.inference_mode():
        for name in adapters:
            model.set_adapter(name)
            expected[name] = model(input_ids=ids).logits
    use_onednn_linears(model)
    for name, module in model.named_modules():
        if ".lora_" in name and isinstance(module, torch.nn.Linear):
            assert type(module) is torch.nn.Linear, name
        elif name.endswith("q_proj.base_layer"):
            assert type(module).__name__.startswith("OneDnnLinear"), name
    with torch.inference_mode():
        for name in adapters:
            model.set_adapter(name)
            assert (model(input_ids=ids).logits - expected[name]).abs().max() < 1e-5, name
