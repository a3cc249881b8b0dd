"""Jobs survive the page: reloading the browser while a Stage 2 job, a training run or a paired evaluation is under
way finds it again: selected, running, the settings it was started with back in the form, its progress still moving;
Stop still stops it, and the evaluation's report appears in the reloaded page."""

from __future__ import annotations

import re

import pytest

from tests.test_browser_journey import choose, fill, open_accordion, shown_when_it_fails, value_of, wait_until
from tests.ui_helpers import browser_page, launched, screenshot, stop_jobs_under_way

JOB_MS = 180_000


@pytest.fixture
def app_url(tmp_path, shared_data):
    from reasonapp.ui.app import build_app

    with launched(build_app(store_path=str(tmp_path / "store.sqlite"))) as url:
        try:
            yield url
        finally:
            stop_jobs_under_way()  # the test stops its job in the page; this one is for a test that failed first


def number_of(page, elem_id: str) -> float:
    return float(value_of(page, elem_id))


def progress(line: str, pattern: str) -> int:
    found = re.search(pattern, line)
    assert found, line
    return int(found.group(1))


@pytest.mark.browser
def test_a_reload_during_stage2_finds_the_job_running_with_its_settings(app_url, tiny_model_dir):
    source = f"base:{tiny_model_dir}"
    with browser_page() as page, shown_when_it_fails(page, "reload-stage2-failed.png"):
        page.goto(app_url, wait_until="load")
        page.get_by_role("tab", name="Review").click()
        open_accordion(page, "Generate reasonings (Stage 2, admins)")
        # settings unlike the panel's defaults, so finding them again means they were read back from the job
        choose(page, "stage2-source", source)
        page.locator("#stage2-prompt input").click()
        page.locator("#stage2-prompt [role=option]").filter(has_text="cue-words-brief").click()
        fill(page, "stage2-rows", 3000)
        fill(page, "stage2-batch", 2)
        page.get_by_label("best-of-K sampling", exact=True).check()
        fill(page, "stage2-k", 3)
        page.locator("#stage2-start").click()
        line = wait_until(page, "stage2-state", "/: running/.test(v)")
        job = value_of(page, "stage2-job")
        assert job and line.startswith(job.rsplit("/", 1)[-1])

        page.reload(wait_until="load")
        page.get_by_role("tab", name="Review").click()
        open_accordion(page, "Generate reasonings (Stage 2, admins)")
        wait_until(page, "stage2-job", f"v === {job!r}")
        first = wait_until(page, "stage2-state", "/: running · \\d+\\/3000 rows/.test(v)", JOB_MS)
        assert value_of(page, "stage2-source") == source
        assert value_of(page, "stage2-prompt") == "cue-words-brief"
        assert (number_of(page, "stage2-rows"), number_of(page, "stage2-batch"), number_of(page, "stage2-k")) == (3000, 2, 3)
        assert page.get_by_label("best-of-K sampling", exact=True).is_checked()
        assert value_of(page, "stage2-dataset") == "dair-ai/emotion" and value_of(page, "stage2-split") == "train"
        done = progress(first, r"(\d+)/3000 rows")
        wait_until(page, "stage2-state", f"(m => m && +m[1] > {done})(v.match(/(\\d+)\\/3000 rows/))", JOB_MS)  # still moving
        screenshot(page, "reload-stage2.png")

        page.locator("#stage2-stop").click()
        wait_until(page, "stage2-state", "/: stopped/.test(v)")


@pytest.mark.browser
def test_a_reload_during_training_finds_the_run_running_with_its_settings(app_url, tiny_model_dir):
    with browser_page() as page, shown_when_it_fails(page, "reload-train-failed.png"):
        page.goto(app_url, wait_until="load")
        page.get_by_role("tab", name="Train").click()
        fill(page, "train-base-model", tiny_model_dir)
        fill(page, "train-limit", 64)
        fill(page, "train-max-steps", 5000)
        fill(page, "train-batch-size", 2)
        fill(page, "train-learning-rate", 0.001)
        fill(page, "train-lora-r", 4)
        fill(page, "train-seed", 7)
        fill(page, "train-output-dir", "qa-reloaded")
        page.locator("#train-start").click()
        wait_until(page, "train-status", "v.startsWith('running')", JOB_MS)

        page.reload(wait_until="load")
        page.get_by_role("tab", name="Train").click()
        wait_until(page, "train-run", "v === 'qa-reloaded · qa'")
        first = wait_until(page, "train-status", "/^running · step \\d+\\/5000/.test(v)")
        assert value_of(page, "train-base-model") == tiny_model_dir and value_of(page, "train-dataset") == "dair-ai/emotion"
        assert page.locator("#train-task").get_by_label("qa", exact=True).is_checked()
        form = [number_of(page, f"train-{name}") for name in ("limit", "max-steps", "batch-size", "learning-rate", "lora-r", "seed")]
        assert form == [64, 5000, 2, 0.001, 4, 7]
        assert value_of(page, "train-output-dir") == ""  # a Start from here makes a new run, never this one's directory again
        step = progress(first, r"step (\d+)/5000")
        wait_until(page, "train-status", f"(m => m && +m[1] > {step})(v.match(/step (\\d+)\\/5000/))", JOB_MS)  # still moving
        assert "Reattached to qa-reloaded" in value_of(page, "train-message")
        screenshot(page, "reload-train.png")

        page.locator("#train-stop").click()
        wait_until(page, "train-status", "v.startsWith('stopped')", JOB_MS)


@pytest.mark.browser
def test_a_reload_during_a_paired_evaluation_finds_it_with_its_runs_and_settings_and_shows_the_report(tiny_model_dir, tmp_path, shared_data):
    import os
    import shutil
    import time
    from pathlib import Path

    from reasonapp.ui.app import build_app
    from tests.test_ui_train_compare import train_classifier_runs
    from training import launcher

    qa, qra = train_classifier_runs(tiny_model_dir, tmp_path)
    for run in (qa, qra):  # newer copies, which the tab preselects: finding the older pair again means it was read back
        newer = shutil.copytree(run, run.replace("-tiny", "-newer"))
        os.utime(Path(newer) / "config.json", (time.time() + 60, time.time() + 60))
    with launched(build_app(store_path=str(tmp_path / "store.sqlite"))) as url, browser_page() as page, shown_when_it_fails(page, "reload-paired-failed.png"):
        try:
            page.goto(url, wait_until="load")
            page.get_by_role("tab", name="Compare").click()
            assert value_of(page, "compare-qa-run").endswith("qa-newer") and value_of(page, "compare-qra-run").endswith("qra-newer")
            page.get_by_role("tab", name="Paired evaluation").click()
            choose(page, "compare-qa-run", qa)
            choose(page, "compare-qra-run", qra)
            wait_until(page, "compare-eval-dataset", "v === 'dair-ai/emotion'")
            choose(page, "compare-eval-split", "validation")
            fill(page, "compare-eval-limit", 64)
            page.locator("#compare-evaluate").click()
            wait_until(page, "compare-eval-message", "v.startsWith('Evaluating qa-tiny and qra-tiny on dair-ai/emotion / validation (64 rows)')")
            folder = launcher.paired_evaluations()[0]
            wait_until(page, "compare-eval-state", "/: running/.test(v)")

            page.reload(wait_until="load")
            page.get_by_role("tab", name="Compare").click()
            page.get_by_role("tab", name="Paired evaluation").click()
            wait_until(page, "compare-eval-message", "v.startsWith('Reattached to qa-tiny--qra-tiny-validation')")
            assert launcher.evaluation_folder_state(folder)["state"] == "running"  # reattached while it still ran
            assert (value_of(page, "compare-eval-dir"), value_of(page, "compare-qa-run"), value_of(page, "compare-qra-run")) == (folder, qa, qra)
            wait_until(page, "compare-eval-dataset", "v === 'dair-ai/emotion'")  # not clobbered by the Q→A run's default
            assert (value_of(page, "compare-eval-split"), number_of(page, "compare-eval-limit")) == ("validation", 64)
            screenshot(page, "reload-paired-evaluation.png")
            page.wait_for_function("() => document.querySelector('#compare-eval-report')?.innerText.includes('McNemar')", timeout=JOB_MS)
            assert value_of(page, "compare-eval-state") == "qa-tiny--qra-tiny-validation: finished"
            assert (value_of(page, "compare-qa-run"), value_of(page, "compare-eval-split")) == (qa, "validation")  # the form stayed
            screenshot(page, "reload-paired-evaluation-report.png")
        finally:
            stop_jobs_under_way()
