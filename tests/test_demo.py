"""The demo: built by the project's own commands, installed into an empty workspace, and usable at once."""

import json

import pytest

from training import demo, rundir


@pytest.mark.slow
def test_demo_assets_are_built_by_the_method_small_and_install_into_an_empty_workspace(tiny_model_dir, tmp_path, shared_data):
    from safetensors import safe_open

    from reasonapp.store import ReasoningStore

    assets = tmp_path / "assets"
    report = demo.build_demo_assets(assets, n_train=12, n_test=8, base_model=tiny_model_dir, lora_r=2)
    assert set(report["systems"]) == {"qa_scored", "qra", "tfidf"}
    records = [json.loads(line) for line in (assets / demo.REASONINGS).read_text().splitlines()]
    assert len(records) == 12 and all(r["generator"]["rgen_run"] == f"base:{tiny_model_dir}" for r in records)
    for name in demo.DEMO_RUNS:
        adapter = assets / "runs" / name / rundir.ADAPTER
        assert sorted(p.name for p in adapter.iterdir()) == sorted(demo.KEPT_ADAPTER_FILES)
        with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as weights:
            assert {str(weights.get_tensor(k).dtype) for k in weights.keys()} == {"torch.float16"}
        assert rundir.read_json(assets / "runs" / name / rundir.STATUS)["state"] == "finished"
    assert "| qa_scored |" in (assets / "README.md").read_text() and "make demo-assets" in (assets / "README.md").read_text()

    assert demo.workspace_is_empty()
    store_path = demo.install_demo(assets)
    assert demo.workspace_is_empty()  # the demo's own runs and store do not count as the user's
    assert set(rundir.finished_runs(("qa",))) == {str(rundir.runs_root() / "demo-qa")}
    store = ReasoningStore(store_path)
    row = store.get(store.query_ids()[0])
    store.review(row.id, "accepted", row.version, "ann")
    store.close()
    demo.install_demo(assets)  # idempotent: a reviewer's decision in the demo store stays
    store = ReasoningStore(store_path)
    assert store.counts()["total"] == 12 and store.get(row.id).status == "accepted"
    assert store.get(row.id).generator["prompt_variant"] == "cue"


def test_the_app_opens_the_shipped_demo_only_on_a_workspace_without_its_own_work(monkeypatch):
    from reasonapp.store import ReasoningStore, default_store_path
    from reasonapp.ui.app import open_demo_if_empty

    if not demo.demo_available():
        pytest.fail("assets/demo is missing: `make demo-assets` builds it")
    monkeypatch.setenv("REASONAPP_JOURNAL", "1")  # decisions are logged here: the demo's rows must not be
    store, notice = open_demo_if_empty()
    assert store == str(demo.demo_store_path()) and "Demo open" in notice
    assert not any(path.read_text() for path in (demo.demo_store_path().parents[1] / "decisions").glob("*.jsonl"))
    assert ReasoningStore(store).counts()["total"] > 0
    ReasoningStore(default_store_path()).close()  # the user's own store now exists
    assert open_demo_if_empty() == (None, None)
    monkeypatch.setenv("REASONAPP_DEMO", "1")  # a demo Space: runs installed, the user's store kept
    store, notice = open_demo_if_empty()
    assert store is None and "Demo open" in notice


@pytest.mark.slow
@pytest.mark.browser
def test_browser_a_new_workspace_opens_the_demo_classifies_a_text_and_shows_a_demo_reasoning(tmp_path):
    """`make app` on a fresh clone: the page offers something to try at once (the time it took is printed, not asserted)."""
    import os
    import sys
    import time

    from tests.ui_helpers import browser_page, free_port, screenshot, start_app_process

    if not demo.demo_available():
        pytest.fail("assets/demo is missing: `make demo-assets` builds it")
    port = free_port()
    env = {**os.environ, "REASONAPP_WORKSPACE": str(tmp_path / "workspace"), "GRADIO_SERVER_PORT": str(port)}
    env.pop("REASONAPP_STORE", None)
    app = start_app_process([sys.executable, "app.py"], env, port)
    try:
        serving = time.time()
        with browser_page() as page:
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            page.wait_for_selector("#app-notice :text('Demo open')")
            page.get_by_role("tab", name="Compare").click()
            page.wait_for_selector("#compare-loading :text('Ready: Q→A run')", timeout=120_000)  # loaded as the page opened
            ready = time.time() - serving
            loaded_in = page.inner_text("#compare-loading")
            page.fill("#compare-text textarea", "i was so thrilled when the letter finally arrived")
            clicked = time.time()
            page.click("#compare-go")
            page.wait_for_function("document.querySelector('#compare-qa-label textarea')?.value")
            qa_shown = time.time() - clicked
            qra_label = "document.querySelector('#compare-qra-label textarea')?.value"
            page.wait_for_function(f"{qra_label} && {qra_label} !== '…'", timeout=120_000)  # '…' while the reasoning streams
            qa_label, final_qra_label = page.input_value("#compare-qa-label textarea"), page.input_value("#compare-qra-label textarea")
            assert page.input_value("#compare-reasoning textarea")  # the reasoning streamed before the label
            classified = time.time() - serving
            screenshot(page, "demo-compare.png")
            page.get_by_role("tab", name="Review").click()
            page.wait_for_function("document.querySelector('#review-reasoning textarea')?.value.length > 0")
            assert page.input_value("#review-text textarea") and "generator: base:" in page.input_value("#review-meta textarea")
            screenshot(page, "demo-review.png")
        assert qa_label in ["sadness", "joy", "love", "anger", "fear", "surprise"]
        assert final_qra_label.split(" ")[0] in ["sadness", "joy", "love", "anger", "fear", "surprise", "invalid"]
        print(
            f"demo: runs ready {ready:.1f} s after the app served ({loaded_in}); first Q→A label {qa_shown:.2f} s after Classify; "
            f"first classification (Q→RA's reasoning streamed) {classified:.1f} s after the app served"
        )
    finally:
        app.terminate()
        app.wait(timeout=30)
