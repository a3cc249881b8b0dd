"""Pushing to the Hub, against a loopback stand-in that the real huggingface_hub client talks HTTP to."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hub_standin import HubStandIn
from tests.test_training import FAST

FAKE_TOKEN = "hf_reasonapp_FAKE_test_token_0123456789_abcdefXYZ"  # recognisable, and not shaped like a real token


@pytest.fixture
def hub():
    with HubStandIn(FAKE_TOKEN) as stand_in:
        yield stand_in


def hub_env(hub, token=FAKE_TOKEN):
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": os.environ.get("HF_HOME_TEST", "/tmp/reasonapp-hf-home")}
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
    return env


def cli(hub, *args, token=FAKE_TOKEN):
    return subprocess.run([sys.executable, "-m", "training", *args], capture_output=True, text=True, timeout=300, env=hub_env(hub, token))


def download(hub, repo_id, repo_type="model", tmp=None):
    code = (
        "import sys; from huggingface_hub import snapshot_download;"
        f"print(snapshot_download({repo_id!r}, repo_type={repo_type!r}, local_dir={str(tmp)!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=hub_env(hub))
    assert result.returncode == 0, result.stderr[-2000:]
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def qa_run(tiny_model_dir, tmp_path, shared_data):
    from training.sft import TrainConfig, train

    run = train(TrainConfig(task="qa", base_model=tiny_model_dir, output_dir=str(tmp_path / "qa-run"), **{**FAST, "max_steps": 1}))
    (run / "eval-test").mkdir()
    (run / "eval-test" / "metrics.json").write_text(json.dumps({
        "dataset": "dair-ai/emotion", "split": "test", "rows": 2000, "verdict": None,
        "systems": {"qa_scored": {"accuracy": 0.673, "macro_f1": 0.55, "invalid_rate": 0.0}},
    }))
    return run


def test_push_uploads_the_run_and_a_card_and_downloads_back_equal(hub, qa_run, tmp_path):
    result = cli(hub, "push", str(qa_run), "--repo-id", "tester/emotion-qa")
    assert result.returncode == 0, result.stderr[-2000:]
    local = download(hub, "tester/emotion-qa", tmp=tmp_path / "down")
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "adapter/tokenizer.json", "config.json", "final_metrics.json"):
        assert (local / name).read_bytes() == (qa_run / name).read_bytes(), name
    card = (local / "README.md").read_text()
    assert "67.3%" in card and "arXiv 2507.00214" in card and "base_model:" in card and "library_name: peft" in card
    assert "Which emotion does the text express?" in card  # the prompt format
    first_commit = hub.repos[("model", "tester/emotion-qa")]["commits"][-1]["oid"]

    again = cli(hub, "push", str(qa_run), "--repo-id", "tester/emotion-qa")
    assert again.returncode == 0, again.stderr[-2000:]
    assert hub.repos[("model", "tester/emotion-qa")]["commits"][-1]["oid"] != first_commit  # a new commit, not an error


def test_exported_dataset_pushes_as_a_dataset_repo_with_its_card(hub, tmp_path):
    from reasonapp.store import ReasoningStore
    from training.augment import export_store

    store = ReasoningStore(tmp_path / "store.sqlite")
    store.add_examples("dair-ai/emotion", "train", [(0, "i feel great", "joy")], ["sadness", "joy"])
    [row_id] = store.ids_needing_reasoning("dair-ai/emotion", "train")
    store.write_generated([(row_id, "Feeling great is joy.")], {"rgen_run": "r"})
    store.review(row_id, "accepted", store.get(row_id).version, "ann")
    export_store(store.path, tmp_path / "export", policy="drop-label-restating")
    result = cli(hub, "push", str(tmp_path / "export"), "--repo-id", "tester/emotion-reasonings", "--private")
    assert result.returncode == 0, result.stderr[-2000:]
    repo = hub.repos[("dataset", "tester/emotion-reasonings")]
    assert repo["private"] is True
    local = download(hub, "tester/emotion-reasonings", "dataset", tmp_path / "down")
    assert (local / "data" / "train.parquet").read_bytes() == (tmp_path / "export" / "train.parquet").read_bytes()
    card = (local / "README.md").read_text()
    assert "source dataset: `dair-ai/emotion`" in card
    assert "export policy (by the flags): drop-label-restating (0 reasonings dropped)" in card
    assert "reasoning quality: 1 reasonings: 100% unflagged" in card


def test_failed_push_is_clear_and_a_retry_works(hub, qa_run):
    hub.fail_next_commits = 10  # the client retries 5xx itself; fail past its retries
    result = cli(hub, "push", str(qa_run), "--repo-id", "tester/flaky")
    assert result.returncode == 2 and "push to tester/flaky failed" in result.stderr and "retry" in result.stderr
    hub.fail_next_commits = 0
    assert cli(hub, "push", str(qa_run), "--repo-id", "tester/flaky").returncode == 0
    assert "adapter/adapter_model.safetensors" in hub.files("model", "tester/flaky")


def test_bad_input_is_a_clear_error(hub, qa_run, tmp_path):
    bad_id = cli(hub, "push", str(qa_run), "--repo-id", "not a repo id!")
    assert bad_id.returncode == 2 and "invalid repo id" in bad_id.stderr
    (tmp_path / "empty-run").mkdir()
    (tmp_path / "empty-run" / "config.json").write_text(json.dumps({"task": "qa"}))
    no_adapter = cli(hub, "push", str(tmp_path / "empty-run"), "--repo-id", "tester/x")
    assert no_adapter.returncode == 2 and "no trained adapter" in no_adapter.stderr
    no_token = cli(hub, "push", str(qa_run), "--repo-id", "tester/x", token=None)
    assert no_token.returncode == 2 and "no Hugging Face token" in no_token.stderr


@pytest.fixture
def exported_dataset(tmp_path):
    """The smallest directory that `push` takes as an exported dataset."""
    import pandas as pd

    export = tmp_path / "export"
    export.mkdir()
    pd.DataFrame([{"text": "i feel great", "label": "joy", "reasoning": "Feeling great is joy."}]).to_parquet(export / "train.parquet")
    (export / "provenance.json").write_text(json.dumps({"rows": 1, "source_dataset": "dair-ai/emotion"}))
    (export / "labels.json").write_text(json.dumps(["sadness", "joy"]))
    return export


def closed_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed on leaving: nothing listens there


def use_hub(monkeypatch, endpoint: str, offline: bool) -> None:
    """Point huggingface_hub at `endpoint` in this process (it reads both settings when first imported)."""
    import huggingface_hub.constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)


def test_an_unreachable_hub_is_a_one_line_error_naming_the_endpoint(exported_dataset, monkeypatch, capsys):
    from training.cli import main

    endpoint = f"http://127.0.0.1:{closed_loopback_port()}"
    use_hub(monkeypatch, endpoint, offline=False)
    assert main(["push", str(exported_dataset), "--repo-id", "tester/unreachable"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: could not reach the Hugging Face Hub at {endpoint} (ConnectError: ")
    assert "check the network connection and HF_ENDPOINT" in err and "nothing was pushed" in err
    assert err.count("\n") == 1 and FAKE_TOKEN not in err


def test_offline_mode_is_named_as_the_reason_nothing_was_pushed(exported_dataset, monkeypatch, capsys):
    from training.cli import main

    use_hub(monkeypatch, f"http://127.0.0.1:{closed_loopback_port()}", offline=True)
    assert main(["push", str(exported_dataset), "--repo-id", "tester/offline"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not reach the Hugging Face Hub: HF_HUB_OFFLINE is set") and "unset it" in err
    assert err.count("\n") == 1


def test_the_token_never_leaks(hub, qa_run, tmp_path):
    results = [cli(hub, "push", str(qa_run), "--repo-id", "tester/leak-check")]
    hub.fail_next_commits = 10
    results.append(cli(hub, "push", str(qa_run), "--repo-id", "tester/leak-check"))
    hub.fail_next_commits = 0
    results.append(cli(hub, "-v", "push", str(qa_run), "--repo-id", "tester/leak-check"))
    for result in results:
        assert FAKE_TOKEN not in result.stdout + result.stderr
    for path in qa_run.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), path
    for repo in hub.repos.values():
        for commit in repo["commits"]:
            for name, content in commit["files"].items():
                assert FAKE_TOKEN.encode() not in content, name


def test_push_button_pushes_and_never_shows_the_token(hub, qa_run, monkeypatch, shared_data):
    import huggingface_hub.constants
    from gradio_client import Client

    from reasonapp.ui.app import build_app
    from tests.ui_helpers import launched

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    with launched(build_app()) as url:
        client = Client(url, verbose=False)
        message = client.predict(str(qa_run), "tester/from-ui", True, False, api_name="/train_push")
        assert message.startswith("Pushed") and "adapter/adapter_model.safetensors" in hub.files("model", "tester/from-ui")
        hub.fail_next_commits = 10
        failed = client.predict(str(qa_run), "tester/from-ui", True, False, api_name="/train_push")
        assert failed.startswith("Not pushed: push to tester/from-ui failed")
        bad = client.predict(str(qa_run), "bad id!", True, False, api_name="/train_push")
        assert "invalid repo id" in bad
    for text in (message, failed, bad):
        assert FAKE_TOKEN not in text
