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


def test_a_stage2_job_from_the_page_starts_as_a_sample_of_minutes_not_the_whole_split(shared_data):
    """One Start on the default form launched all 16,000 rows of dair-ai/emotion (ETA 7 hours)."""
    from reasonapp.ui.app import build_app

    demo = build_app()
    rows = next(c for c in demo.config["components"] if c.get("props", {}).get("elem_id") == "stage2-rows")["props"]
    assert rows["value"] == 256 and "0 = every row of the split" in rows["info"]


def test_public_api_is_exactly_the_endpoints_the_client_tests_cover(shared_data):
    from reasonapp.ui.app import build_app

    demo = build_app()
    public = {dep["api_name"] for dep in demo.config["dependencies"] if dep.get("api_visibility", "public") == "public" and dep.get("api_name")}
    assert public - {"load_example"} == {  # load_example: gr.Examples' own
        "train_show_command", "train_start", "train_push", "train_monitor", "train_stop", "train_resume", "train_evaluate",
        "review_queue", "review_accept", "review_save", "review_reject", "review_skip", "review_undo", "review_regenerate",
        "review_bulk_accept", "review_export", "review_quality",
        "review_agreement", "review_disputes", "review_resolve", "review_resolve_reject",  # team review
        "review_stage2_start", "review_stage2_stop", "review_stage2_resume", "review_stage2_state",  # Stage 2 as a job
        "compare_predict", "compare_batch", "compare_disagreements", "compare_report",
        "compare_evaluate", "compare_evaluation",  # the paired evaluation of the chosen runs
        "pipeline_start", "pipeline_stop", "pipeline_resume", "pipeline_continue", "pipeline_state",  # the method in one job
    }


def test_every_public_endpoint_names_its_parameters(shared_data):
    """An API caller reads what each parameter is (`view_api`), not param_0 … param_10."""
    from gradio_client import Client

    from reasonapp.ui.app import build_app
    from tests.ui_helpers import launched

    with launched(build_app()) as url:
        api = Client(url, verbose=False).view_api(return_format="dict", print_info=False)
    unnamed = {name: [p["parameter_name"] for p in info["parameters"]] for name, info in api["named_endpoints"].items()
               if any(p["parameter_name"].startswith("param_") for p in info["parameters"])}
    assert unnamed == {}
    assert [p["parameter_name"] for p in api["named_endpoints"]["/train_start"]["parameters"]][:4] == ["task", "base_model", "dataset", "limit"]
