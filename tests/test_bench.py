"""The benchmark command runs every workload and reports both paths; figures are checked by running it, not here."""

import json

import pytest

from tests.test_training import FAST, write_augmented


@pytest.mark.slow
def test_quick_bench_reports_every_workload_as_json(tiny_model_dir, tmp_path, shared_data):
    from training.bench import run_bench
    from training.sft import TrainConfig, train

    augmented = write_augmented(tmp_path / "augmented")
    (tmp_path / "augmented" / "provenance.json").write_text(json.dumps({"source_dataset": "dair-ai/emotion"}))
    runs = {
        task: str(train(TrainConfig(task=task, base_model=tiny_model_dir, dataset=augmented if task == "qra" else None, output_dir=str(tmp_path / task), **{**FAST, "max_steps": 1})))
        for task in ("rgen", "qa", "qra")
    }
    results = run_bench(runs["rgen"], runs["qa"], runs["qra"], augmented, quick=True)
    workloads = results["workloads"]
    assert set(workloads) == {"stage2", "training", "training_memory", "predictions", "memory", "compare_pick"}
    each_process = [workloads[name] for name in ("stage2", "training", "predictions", "memory")] + list(workloads["training_memory"].values())
    assert all(workload["peak_rss_mb"] > 100 for workload in each_process)  # every workload in a process of its own
    assert results["peak_rss_mb"] == max(results["peak_rss_mb"], *(workload["peak_rss_mb"] for workload in each_process))
    for task in ("rgen", "qa", "qra"):  # the defaults of `train`: memory-lean
        assert workloads["training_memory"][task]["gradient_checkpointing"] is True
        assert workloads["training_memory"][task]["tokens_per_s"] > 0
        assert workloads["training_memory"][task]["activation_kb_per_token_per_layer"] > 0
    assert workloads["stage2"]["rows_per_s"] > 0 and workloads["stage2"]["plain"]["tokens_per_s"] > 0 and workloads["stage2"]["speedup"] > 0
    assert workloads["stage2"]["same_greedy_outputs_on_plain_rows"] == 1.0  # batching does not change greedy output
    assert workloads["training"]["tokens_per_s"] > 0 and workloads["training"]["plain"]["tokens_per_s"] > 0
    flops = workloads["training"]["mflop_per_real_token"]  # checkpointing recomputes the forward of every layer
    assert flops["with_checkpointing"] > flops["without_checkpointing"] > 0 and workloads["training"]["gflop_per_s"] > 0
    assert results["machine"]["matmul_gflop_per_s"] > 0
    assert workloads["predictions"]["qa"]["p50_ms"] > 0 and workloads["predictions"]["qra_stream"]["first_token_p50_ms"] > 0
    llama_cpp = workloads["predictions"]["llama_cpp"]  # the tiny test model has no GGUF: said, not guessed
    assert llama_cpp["installed"] is False or "no GGUF file" in llama_cpp["not_measured"]
    assert workloads["memory"]["rss_mb"] > 0
    picks = workloads["compare_pick"]  # a new Q->RA run, then a new Q->A run, against a whole load of the pair
    assert all(picks[f"{name}_s"] > 0 and picks[f"{name}_first_qa_ms"] > 0 for name in ("whole_load", "new_qra_run", "new_qa_run"))
    json.dumps(results)  # one JSON object


def test_bench_without_runs_says_what_it_needs(tmp_path):
    from reasonapp.errors import ConfigError
    from training.bench import run_bench

    with pytest.raises(ConfigError, match="bench needs --rgen-run"):
        run_bench(None, None, None, None)
