"""Shared fixtures: offline Hub, a throwaway workspace, the real SmolLM2 and a tiny random model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from reasonapp import settings  # noqa: E402


@pytest.fixture(autouse=True)
def _workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("REASONAPP_WORKSPACE", str(tmp_path / "workspace"))


@pytest.fixture(scope="session")
def shared_data():
    mirror = settings.data_mirror()
    if mirror is None or not (mirror / "emotion").is_dir():
        pytest.fail("../shared/data is missing: tests read the real data there (see README)")
    return mirror


@pytest.fixture(scope="session")
def smollm2_dir() -> str:
    """The real SmolLM2-135M-Instruct as a float32 directory (converted from the GGUF once)."""
    from reasonapp.models import DEFAULT_BASE_MODEL, resolve_base_model

    return resolve_base_model(DEFAULT_BASE_MODEL)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir) -> str:
    """A 2-layer random-weight Llama with the real SmolLM2 tokenizer and chat template: fast to train."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,  # tied random weights just echo the last prompt token ("\n")
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-smollm2")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
