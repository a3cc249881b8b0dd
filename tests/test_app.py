"""The Gradio app starts offline with the real default model and data, and serves its page."""

import urllib.request

import pytest


@pytest.fixture
def launched_app(shared_data):
    from reasonapp.ui.app import build_app

    demo = build_app()
    demo.queue().launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield demo
    finally:
        demo.close()


def test_app_serves_its_page_with_the_dataset_summary(launched_app):
    with urllib.request.urlopen(launched_app.local_url, timeout=30) as response:
        assert response.status == 200
    with urllib.request.urlopen(launched_app.local_url.rstrip("/") + "/config", timeout=30) as response:
        config = response.read().decode()
    assert "reasonapp" in config and "SmolLM2-135M-Instruct" in config
    assert "16000" in config  # the train split's row count, from the real data


def test_demo_mode_keeps_review_and_prediction_but_not_training(shared_data):
    from reasonapp.ui.app import build_app

    demo = build_app(demo=True)
    endpoints = {dep.get("api_name") for dep in demo.config["dependencies"]}
    assert "train_start" not in endpoints and "train_resume" not in endpoints
    assert {"review_accept", "compare_predict", "train_monitor"} <= endpoints
