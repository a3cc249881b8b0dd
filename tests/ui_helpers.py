"""Launching the app on a free loopback port, and a headless Debian chromium for browser tests."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def launched(demo, **settings):
    from reasonapp.ui.app import launch_settings

    demo.queue(default_concurrency_limit=2).launch(
        server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True, **{**launch_settings(), **settings}
    )
    try:
        yield demo.local_url
    finally:
        demo.close()


@contextmanager
def browser_page():
    from playwright.sync_api import sync_playwright

    executable = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
    if not Path(executable).exists():
        raise RuntimeError("Debian's chromium is needed for browser tests: `make browser` installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app_process(command: list[str], env: dict, port: int, timeout_s: float = 180):
    """The app served by a process of its own (as `make app` or a Space runs it); returns once the port answers."""
    import socket
    import subprocess
    import time

    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"the app did not start:\n{process.stdout.read()}") from None
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the app did not start within {timeout_s:.0f} s")


def stop_jobs_under_way() -> None:
    """End every training run, evaluation and Stage 2 job of the test's workspace that still runs (a test that failed
    midway leaves them running: they live in process sessions of their own, past the app and the test)."""
    import signal

    from training import launcher, rundir

    running = [run for run in rundir.runs_root().glob("*") if launcher.run_state(run)["state"] in ("starting", "running")]
    running += [Path(launcher.evaluation_state(run)["dir"]) for run in rundir.runs_root().glob("*")
                if launcher.evaluation_state(run)["state"] == "running"]
    running += [Path(folder) for folder in launcher.paired_evaluations() if launcher.evaluation_folder_state(folder)["state"] == "running"]
    running += [Path(job) for job in launcher.stage2_jobs() if launcher.stage2_state(job)["state"] == "running"]
    for folder in running:
        pid = rundir.read_json(folder / "process.json", {}).get("pid")
        try:
            os.killpg(pid, signal.SIGTERM)  # launched with start_new_session: the group is the process's own
        except (ProcessLookupError, PermissionError, TypeError):
            pass
