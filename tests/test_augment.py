"""Stage 2 into the store: batched, resumable after a kill, and never overwriting reviewed rows."""

import pytest

from reasonapp.store import ReasoningStore
from training.augment import augment_to_store


@pytest.fixture(scope="module")
def rgen_run(tiny_model_dir, tmp_path_factory):
    from tests.test_training import FAST
    from training.sft import TrainConfig, train

    return train(TrainConfig(task="rgen", base_model=tiny_model_dir, output_dir=str(tmp_path_factory.mktemp("rgen") / "run"), **{**FAST, "max_steps": 1}))


def test_augment_fills_the_store_and_a_killed_run_resumes_without_duplicates(rgen_run, tmp_path, shared_data):
    from training.generation import Decoding

    store_path = tmp_path / "store.sqlite"
    decoding = Decoding(max_new_tokens=6)

    def kill_after_first_write(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        augment_to_store(rgen_run, "dair-ai/emotion", store_path, limit=20, decoding=decoding, batch_size=4, progress=kill_after_first_write)
    store = ReasoningStore(store_path)
    assert store.counts()["total"] == 4 and store.counts()["not_generated"] == 16  # written up to 8 at a time (here a batch of 4)
    first_chunk = store.query_ids()
    store.review(first_chunk[0], "accepted", store.get(first_chunk[0]).version, "ann", reasoning="Reviewed by a person.")

    result = augment_to_store(rgen_run, "dair-ai/emotion", store_path, limit=20, decoding=decoding, batch_size=4)
    assert (result["generated"], result["skipped"], result["store"]) == (16, 4, str(store_path))
    assert store.counts()["total"] == 20 and store.counts()["not_generated"] == 0
    assert all(sum(h["action"] == "generate" for h in store.history(i)) == 1 for i in store.query_ids())
    assert store.get(first_chunk[0]).reasoning == "Reviewed by a person."
    row = store.get(first_chunk[1])
    assert row.generator["rgen_run"] == str(rgen_run) and row.generator["decoding"]["max_new_tokens"] == 6

    again = augment_to_store(rgen_run, "dair-ai/emotion", store_path, limit=20, decoding=decoding, batch_size=4)
    assert again["generated"] == 0 and again["skipped"] == 20


def test_rgen_is_loaded_merged_with_every_weight_matrix_through_onednn(rgen_run):
    import torch

    from training.augment import load_rgen

    model, _, config = load_rgen(rgen_run, device="cpu")
    assert config["stage1"] and not any(".lora_" in name for name, _ in model.named_modules())  # merged: no LoRA left
    assert {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Linear)} == {"OneDnnLinear1", "OneDnnLinear4"}
    assert all(m.packed is not None for m in model.modules() if isinstance(m, torch.nn.Linear))  # its weights never change again


def test_a_wrong_rgen_run_is_refused_before_the_store_is_touched(tmp_path, shared_data):
    from reasonapp.errors import RunDirError
    from training import rundir

    rundir.write_config(tmp_path / "qa-run", {"task": "qa", "base_model": "x"})
    for wrong, message in ((tmp_path / "missing", "not a run directory"), (tmp_path / "qa-run", "is a qa run, not an R-Gen")):
        with pytest.raises(RunDirError, match=message):
            augment_to_store(wrong, "dair-ai/emotion", tmp_path / "store.sqlite", limit=4)
    assert not (tmp_path / "store.sqlite").exists()


def test_stage2_settings_below_one_are_refused_before_the_store_is_touched(rgen_run, tmp_path, shared_data):
    from reasonapp.errors import ConfigError
    from training.generation import Decoding

    with pytest.raises(ConfigError, match="batch_size and candidates must be at least 1, got 0 and 1"):
        augment_to_store(rgen_run, "dair-ai/emotion", tmp_path / "store.sqlite", limit=4, batch_size=0)
    assert not (tmp_path / "store.sqlite").exists()
    with pytest.raises(ConfigError, match="max_new_tokens must be at least 1"):
        Decoding(max_new_tokens=0)
    with pytest.raises(ConfigError, match="sampling needs temperature > 0"):
        Decoding(do_sample=True, temperature=0.0)


def test_cli_import_of_non_utf8_file_is_a_clear_error(tmp_path):
    import subprocess
    import sys

    (tmp_path / "train.jsonl").write_bytes(b'{"text": "caf\xe9", "label": "joy", "reasoning": "x"}\n')
    result = subprocess.run(
        [sys.executable, "-m", "training", "train", "--task", "qra", "--dataset", str(tmp_path), "--output-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "not valid UTF-8 (line 1)" in result.stderr
    assert not (tmp_path / "run").exists()


def test_best_candidate_prefers_fewest_quality_flags_then_cues_from_the_text():
    from training.augment import best_candidate

    labels = ["sadness", "joy", "fear"]
    options = ["Joy is a positive emotion.", "", "The words feel so relieved show joy.", "feel so relieved is joy"]
    assert best_candidate(options, "i feel so relieved today", "joy", labels) == "The words feel so relieved show joy."


def test_prompt_variants_candidates_and_base_model_are_recorded(tiny_model_dir, tmp_path, shared_data):
    from training.generation import Decoding

    store_path = tmp_path / "store.sqlite"
    result = augment_to_store(
        f"base:{tiny_model_dir}", "dair-ai/emotion", store_path, limit=4, decoding=Decoding(max_new_tokens=6),
        batch_size=4, prompt_variant="cue", candidates=3,
    )
    assert result["generated"] == 4
    store = ReasoningStore(store_path)
    generator = store.get(store.query_ids()[0]).generator
    assert generator["stage1"] is False and generator["base_model"] == tiny_model_dir
    assert (generator["prompt_variant"], generator["candidates"], generator["selection"]) == ("cue", 3, "fewest quality flags")


def test_cue_prompt_asks_for_the_words_in_the_text():
    from reasonapp.prompts import rgen_messages

    assert "Quote the words in the text" in rgen_messages("q", "joy", "cue")[0]["content"]
    with pytest.raises(ValueError, match="unknown R-Gen prompt variant"):
        rgen_messages("q", "joy", "shout")
