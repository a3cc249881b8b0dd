"""`bench --only stage2_endpoint`: Stage 2 through llama-cpp-python's server beside the in-process path, on the same rows."""

import pytest


@pytest.fixture
def one_torch_thread():
    """Both paths on one thread: on a shared 2-core machine two spinning threads each can be 20x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_stage2_endpoint_bench_serves_the_bundled_gguf_and_reports_both_paths_and_their_agreement(smollm2_dir, shared_data, one_torch_thread):
    pytest.importorskip("llama_cpp", reason="optional backend: pip install llama-cpp-python")
    from reasonapp.models import DEFAULT_BASE_MODEL
    from training.bench import bench_stage2_endpoint

    result = bench_stage2_endpoint(f"base:{DEFAULT_BASE_MODEL}", rows=4, sequential_rows=2, batch_size=4, concurrency=2)
    assert result["gguf"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and result["rows"] == 4 and "1 thread," in result["server"]
    assert result["in_process"]["rows_per_s"] > 0 and result["endpoint"]["rows_per_s"] > 0
    assert result["endpoint"]["concurrency"] == 2 and result["endpoint"]["sequential"]["rows_per_s"] > 0
    assert result["endpoint"]["mean_output_tokens"] > 1  # the server wrote reasonings, not empty strings
    assert set(result["agreement"]) == {"identical_text", "same_first_8_words", "mean_similarity"}
    assert all(0 <= value <= 1 for value in result["agreement"].values())
    assert [example["endpoint"] for example in result["examples"]] and all(e["endpoint"] for e in result["examples"])


def test_bench_checks_only_the_runs_its_workloads_read(tmp_path):
    from reasonapp.errors import ConfigError
    from training.bench import run_bench

    with pytest.raises(ConfigError, match="unknown bench workloads \\['stage3'\\]"):
        run_bench(None, None, None, None, only=["stage3"])
    with pytest.raises(ConfigError, match="bench needs --qa-run"):  # base:<model> stands for the R-Gen run, not for the rest
        run_bench("base:HuggingFaceTB/SmolLM2-135M-Instruct", None, None, None, only=["stage2_endpoint", "predictions"])
