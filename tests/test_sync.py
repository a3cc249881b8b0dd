"""Review work survives a Space restart: every committed change is logged, synced to a dataset repo, and replayed."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reasonapp.journal import DecisionLog, read_events, replay
from reasonapp.store import ReasoningStore
from tests.hub_standin import HubStandIn
from tests.ui_helpers import free_port, start_app_process

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["sadness", "joy", "love", "anger", "fear", "surprise"]
FILTERS = ["pending", "all", "", 0, 0, "any", "in order"]


def filled_store(path, journal, rows=24):
    store = ReasoningStore(path, journal=journal)
    store.add_examples("dair-ai/emotion", "train", [(i, f"i feel so happy about day {i}", "joy") for i in range(rows)], LABELS)
    ids = store.ids_needing_reasoning("dair-ai/emotion", "train")
    store.write_generated(((row_id, f"Day {row_id} makes them happy: joy.") for row_id in ids), {"rgen_run": "runs/rgen"})
    return store


def snapshot(store):
    """Everything a restore must bring back: each row's state and its full history."""
    rows = {}
    for row_id in store.query_ids(generated_only_filter()):
        row = store.get(row_id)
        history = [(h["version"], h["action"], h["reasoning"], h["status"], h["reviewer"]) for h in store.history(row_id)]
        rows[(row.dataset, row.split, row.row_index)] = (row.text, row.label, row.reasoning, row.status, row.reviewer, row.version, history)
    return rows


def generated_only_filter():
    from reasonapp.store import RowFilter

    return RowFilter(generated_only=False)


def test_a_store_rebuilt_from_the_decision_log_has_every_decision_edit_history_and_reviewer(tmp_path):
    log = DecisionLog(tmp_path / "decisions")
    store = filled_store(tmp_path / "store.sqlite", log)
    ids = store.query_ids()
    store.review(ids[0], "accepted", store.get(ids[0]).version, "ann")
    store.review(ids[1], "accepted", store.get(ids[1]).version, "bob", reasoning="The writer is happy about day two: joy.")
    store.review(ids[2], "rejected", store.get(ids[2]).version, "ann")
    store.undo(ids[2], store.get(ids[2]).version, "ann")
    store.review(ids[3], "edited", store.get(ids[3]).version, "cy", reasoning="Happy, so joy.")
    before = snapshot(store)
    store.close()

    rebuilt = ReasoningStore(tmp_path / "new.sqlite", journal=None)
    events = read_events(tmp_path / "decisions")
    assert replay(rebuilt, events) == len(events) == 24 + 5
    assert snapshot(rebuilt) == before and rebuilt.label_names("dair-ai/emotion") == LABELS
    assert replay(rebuilt, events) == 0  # idempotent: a store already up to date keeps what it has


def test_an_event_line_cut_by_a_kill_is_skipped(tmp_path):
    log = DecisionLog(tmp_path / "decisions")
    filled_store(tmp_path / "store.sqlite", log, rows=2).close()
    with open(log.path, "a") as handle:
        handle.write('{"dataset": "dair-ai/emotion", "version": 2, "at"')
    assert len(read_events(tmp_path / "decisions")) == 2


def test_pulled_logs_never_shorten_a_local_one_and_add_what_it_lacks(tmp_path):
    from reasonapp.journal import merge_pulled_logs

    local, pulled = tmp_path / "decisions", tmp_path / "pulled"
    local.mkdir(), pulled.mkdir()
    (local / "vm-1.jsonl").write_text('{"a": 1}\n{"a": 2}\n{"a": 3}\n')  # synced once, then two more before a kill
    (pulled / "vm-1.jsonl").write_text('{"a": 1}\n')
    (pulled / "vm-2.jsonl").write_text('{"b": 1}\n')  # another process's, only in the repo
    (local / "vm-3.jsonl").write_text('{"c": 1}\n')
    (pulled / "vm-3.jsonl").write_text('{"c": 1}\n{"c": 2}\n')  # this disk lost a line the repo has
    assert merge_pulled_logs(pulled, local) == 2
    assert (local / "vm-1.jsonl").read_text() == '{"a": 1}\n{"a": 2}\n{"a": 3}\n'
    assert (local / "vm-2.jsonl").read_text() == '{"b": 1}\n'
    assert (local / "vm-3.jsonl").read_text() == '{"c": 1}\n{"c": 2}\n'
    assert sorted(p.name for p in local.iterdir()) == ["vm-1.jsonl", "vm-2.jsonl", "vm-3.jsonl"]


def test_a_restart_on_the_same_disk_keeps_the_decisions_logged_after_the_last_sync(tmp_path, monkeypatch):
    """A process killed between syncs, started again on the same disk: the pull must not put the repo's older copy of
    its log over the longer one on disk (two acknowledged edits were lost at the next rebuild)."""
    from tests.test_hub import FAKE_TOKEN, hub_env, use_hub
    from training.hub import DecisionSync

    folder = tmp_path / "decisions"
    with HubStandIn(FAKE_TOKEN) as hub:
        use_hub(monkeypatch, hub.endpoint, offline=False)
        log = DecisionLog(folder)
        store = filled_store(tmp_path / "store.sqlite", log, rows=3)
        sync = DecisionSync("tester/review-log", folder, token=FAKE_TOKEN, every_minutes=60)
        sync.start()
        sync.flush()  # the repo has the 3 generated rows
        sync._scheduler.stop()
        ids = store.query_ids()
        for row_id in ids[:2]:  # decided after the last sync, then the process is killed
            store.review(row_id, "edited", store.get(row_id).version, "ann", reasoning=f"Edit of row {row_id}.")
        before = snapshot(store)
        store.close()

        restart = (  # a new process, as a restart is (huggingface_hub reads its endpoint when first imported)
            "import json, sys; from training.hub import DecisionSync;"
            f"print(json.dumps(DecisionSync('tester/review-log', {str(folder)!r}, token={FAKE_TOKEN!r}).restore({str(tmp_path / 'rebuilt.sqlite')!r})))"
        )
        done = subprocess.run([sys.executable, "-c", restart], capture_output=True, text=True, timeout=300, env=hub_env(hub), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["events"] == 5 and len(log.path.read_text().splitlines()) == 5
    assert snapshot(ReasoningStore(tmp_path / "rebuilt.sqlite", journal=None)) == before


# -- the app, stopped and started again on an empty disk, as a Space restarts -------------------


class SpaceProcess:
    def __init__(self, env: dict, port: int):
        self.port = port
        self.process = start_app_process([sys.executable, "-c", "from reasonapp.ui.app import main; main()"], env, port)

    def client(self):
        from gradio_client import Client

        return Client(f"http://127.0.0.1:{self.port}/", verbose=False)

    def stop(self, sig=signal.SIGTERM) -> str:
        self.process.send_signal(sig)
        output = self.process.communicate(timeout=120)[0]
        return output


@pytest.mark.slow
def test_twenty_decisions_come_back_after_the_workspace_is_deleted_and_a_kill_loses_only_the_unsynced_ones(tmp_path):
    from tests.test_hub import FAKE_TOKEN

    workspace = tmp_path / "workspace"
    with HubStandIn(FAKE_TOKEN) as hub:
        env = {
            **os.environ, "REASONAPP_WORKSPACE": str(workspace), "REASONAPP_SYNC_REPO": "tester/review-log", "HF_ENDPOINT": hub.endpoint,
            "HF_HUB_OFFLINE": "0", "HF_TOKEN": FAKE_TOKEN, "HF_HOME": str(tmp_path / "hf-home"), "REASONAPP_DATASET": "dair-ai/emotion",
        }
        env.pop("REASONAPP_STORE", None)
        filled_store(workspace / "reasonings.sqlite", DecisionLog(workspace / "decisions")).close()  # Stage 2 ran here, logged

        port = free_port()
        app = SpaceProcess({**env, "GRADIO_SERVER_PORT": str(port)}, port)
        client = app.client()
        shown = client.predict(*FILTERS, api_name="/review_queue")
        for i in range(20):
            if i % 4 == 1:
                shown = client.predict(f"Edit {i} by a person: joy.", f"rev{i % 3}", api_name="/review_save")
            elif i % 4 == 3:
                shown = client.predict("", f"rev{i % 3}", api_name="/review_reject")
            else:
                shown = client.predict(shown[2], f"rev{i % 3}", api_name="/review_accept")
        before = snapshot(ReasoningStore(workspace / "reasonings.sqlite", journal=None))
        assert sum(1 for state in before.values() if state[3] != "pending") == 20
        app.stop()  # SIGTERM, as a Space stops: the last changes are pushed on the way out
        assert ("dataset", "tester/review-log") in hub.repos

        shutil.rmtree(workspace)  # the container's disk is gone
        app = SpaceProcess({**env, "GRADIO_SERVER_PORT": str(port)}, port)
        after = snapshot(ReasoningStore(workspace / "reasonings.sqlite", journal=None))
        assert after == before  # statuses, edits, history and reviewer names

        client = app.client()
        client.predict(*FILTERS, api_name="/review_queue")
        client.predict("A late decision.", "rev9", api_name="/review_accept")  # made after the last sync
        app.stop(signal.SIGKILL)
        shutil.rmtree(workspace)
        app = SpaceProcess({**env, "GRADIO_SERVER_PORT": str(port)}, port)
        output = app.stop()
        assert snapshot(ReasoningStore(workspace / "reasonings.sqlite", journal=None)) == before  # only the unsynced one is lost
        assert "restored into this store" in output and "killed are not in the log" in output


def test_a_change_committed_while_the_log_cannot_be_written_is_kept_and_logged_with_the_next(tmp_path):
    log = DecisionLog(tmp_path / "decisions")
    store = filled_store(tmp_path / "store.sqlite", log, rows=2)
    real_append, failures = log.append, []

    def full_disk(events):
        failures.append(len(events))
        raise OSError(28, "No space left on device")

    log.append = full_disk
    ids = store.query_ids()
    row = store.review(ids[0], "accepted", store.get(ids[0]).version, "ann")  # committed: reported done, not an error
    assert row.status == "accepted" and "1 changes not yet in the decision log" in store.journal_error
    log.append = real_append
    store.review(ids[1], "rejected", store.get(ids[1]).version, "ann")
    assert store.journal_error is None and failures == [1]
    assert [e["status"] for e in read_events(tmp_path / "decisions")][-2:] == ["accepted", "rejected"]


@pytest.mark.slow
def test_an_unreachable_hub_at_start_keeps_a_disk_with_a_store_reviewing_and_stops_a_new_disk_with_one_line(tmp_path):
    """The app exited with a 75-line traceback when the sync repo could not be reached at start. On a disk that holds
    its store it now starts, says so, and syncs once the Hub answers; on a new disk it refuses in one line, since
    reviewing a store without the logged decisions would contradict them."""
    import subprocess

    from tests.test_hub import FAKE_TOKEN, closed_loopback_port

    workspace = tmp_path / "workspace"
    env = {
        **os.environ, "REASONAPP_WORKSPACE": str(workspace), "REASONAPP_SYNC_REPO": "tester/review-log", "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": f"http://127.0.0.1:{closed_loopback_port()}", "HF_TOKEN": FAKE_TOKEN, "HF_HOME": str(tmp_path / "hf-home"),
        "REASONAPP_DATASET": "dair-ai/emotion",
    }
    env.pop("REASONAPP_STORE", None)
    new_disk = subprocess.run([sys.executable, "-c", "from reasonapp.ui.app import main; main()"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
    assert new_disk.returncode == 1 and "Traceback" not in new_disk.stderr, new_disk.stderr
    assert new_disk.stderr.startswith("error: could not pull the decision log from tester/review-log") and new_disk.stderr.count("\n") == 1
    assert "Start it again once tester/review-log can be reached." in new_disk.stderr and FAKE_TOKEN not in new_disk.stderr

    filled_store(workspace / "reasonings.sqlite", DecisionLog(workspace / "decisions")).close()
    port = free_port()
    app = SpaceProcess({**env, "GRADIO_SERVER_PORT": str(port)}, port)
    shown = app.client().predict(*FILTERS, api_name="/review_queue")
    assert shown[7] == "24 rows match"
    output = app.stop()
    assert "Decision log: could not pull the decision log from tester/review-log" in output and "Traceback" not in output, output
