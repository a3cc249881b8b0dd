"""Stage 2 from an OpenAI-compatible endpoint: any served model writes the reasonings (vLLM, SGLang, llama.cpp's
server, Ollama, hosted APIs), as many requests in flight as the server takes.

    python -m training augment --teacher-url http://127.0.0.1:8000/v1 --teacher-model Qwen/Qwen2.5-7B-Instruct \\
        --prompt-variant few-shot --concurrency 64 --limit 16000
    OPENAI_API_KEY=... python -m training augment --teacher-url https://api.example.com/v1 --teacher-model some-model \\
        --api-key-env OPENAI_API_KEY --prompt-variant cue-words --concurrency 16

Each row is one Chat Completions request (`n` candidates for best-of-K; servers that ignore `n` are asked again
until there are K). A request that meets a 429, a 5xx, a timeout, a dropped connection, malformed JSON or empty
content is retried with exponential backoff; one the server refuses as malformed (another 4xx) is not. Each
reasoning is written to the review store the moment it returns, keyed by its row id, so a kill or an outage
loses only the requests in flight, and a re-run asks only for the rows still without a reasoning. A row that
fails all its attempts is recorded with the reason in the store file's `stage2_failures` table (`failed_rows`)
and is tried again by the next run. 401, 403 and 404 stop the run: no row can succeed with a wrong key, URL
or model name.

The API key is read from the environment variable the settings name, sent only in the Authorization header,
and removed from every message this module records or raises (a server may echo it in an error body); the
store, logs, exports and dataset cards never see it. The generator fields name the endpoint (scheme, host,
port and path: the URL may carry neither credentials nor a query string), the model, the prompt and its
version, and the decoding settings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from reasonapp import prompts
from reasonapp.errors import ConfigError, ReasonappError
from training.generation import Decoding, ProgressCallback

logger = logging.getLogger(__name__)

ENDPOINT_PREFIX = "endpoint:"  # how a stored row's generator names its source: endpoint:<url>#<model>


class TeacherError(ReasonappError):
    """The endpoint cannot serve this run at all (a refused key, a wrong URL or model, or down for many rows)."""


@dataclass
class TeacherConfig:
    """Where the teacher is and how hard to push it; the decoding settings and the prompt are the augment run's."""

    teacher_url: str = field(
        default="",
        metadata={"help": "base URL of an OpenAI-compatible Chat Completions API, e.g. http://127.0.0.1:8000/v1 "
                  "(vLLM, SGLang, llama.cpp, Ollama, a hosted API); used instead of --rgen-run"},
    )
    teacher_model: str = field(default="", metadata={"help": "the model name the endpoint serves (vllm serve's --served-model-name, an Ollama tag, ...)"})
    api_key_env: str = field(
        default="",
        metadata={"help": "name of the environment variable that holds the API key, sent as a Bearer token and never "
                  "stored, logged or exported; empty: no key (local servers)"},
    )
    concurrency: int = field(default=8, metadata={"help": "requests in flight at once (vLLM and SGLang batch them; size it to the server)"})
    timeout: float = field(default=120.0, metadata={"help": "seconds to wait for one response before retrying it"})
    max_retries: int = field(
        default=5,
        metadata={"help": "retries of a row after a 429, a 5xx, a timeout, a dropped connection, malformed JSON or empty content; "
                  "a row that still fails is recorded with the reason and retried by the next run"},
    )
    backoff: float = field(default=1.0, metadata={"help": "seconds before the first retry, doubled for each next one (with jitter)"})
    max_backoff: float = field(default=60.0, metadata={"help": "the longest wait between retries, also for a server's Retry-After"})
    stop_after_failed_rows: int = field(
        default=50, metadata={"help": "stop the run after this many rows in a row have failed (the endpoint is down); rows not tried wait for the next run"}
    )
    extra_body: str = field(
        default="",
        metadata={"help": 'JSON object merged into every request, for a server\'s own sampling settings, e.g. {"repeat_penalty": 1.0} '
                  '(llama.cpp) or {"top_k": 20} (vLLM); recorded with the decoding settings'},
    )

    def __post_init__(self):
        url = urllib.parse.urlsplit(self.teacher_url.strip())
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError(f"--teacher-url must be an http(s) URL such as http://127.0.0.1:8000/v1, got {self.teacher_url!r}")
        if url.username is not None or url.password is not None or url.query or url.fragment:
            raise ConfigError(
                "--teacher-url may not carry credentials, a query string or a fragment (they would be recorded with every row): "
                "put the key in an environment variable named by --api-key-env"
            )
        if not self.teacher_model.strip():
            raise ConfigError("--teacher-model is needed with --teacher-url: the model name the endpoint serves")
        if self.concurrency < 1 or self.max_retries < 0 or self.stop_after_failed_rows < 1:
            raise ConfigError(
                f"concurrency and stop_after_failed_rows must be at least 1 and max_retries at least 0, got "
                f"{self.concurrency}, {self.stop_after_failed_rows} and {self.max_retries}"
            )
        if not (self.timeout > 0 and self.backoff >= 0 and self.max_backoff >= self.backoff):
            raise ConfigError(f"timeout must be above 0 and 0 <= backoff <= max_backoff, got {self.timeout}, {self.backoff} and {self.max_backoff}")
        self.extra_body = _json_object(self.extra_body)
        reserved = sorted(set(self.extra_body) & {"model", "messages", "n", "stream"})
        if reserved:
            raise ConfigError(f"--extra-body may not set {reserved}: the teacher sets them itself")

    @property
    def endpoint(self) -> str:
        """The base URL as recorded: scheme, host, port and path (the URL carries nothing else)."""
        return self.teacher_url.strip().rstrip("/")

    @property
    def source(self) -> str:
        return f"{ENDPOINT_PREFIX}{self.endpoint}#{self.teacher_model}"

    def api_key(self) -> str | None:
        """The key from the named environment variable; a variable named but unset is an error, before any request."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise ConfigError(f"--api-key-env names {self.api_key_env}, which is not set (or empty) in the environment")
        return key


def _json_object(value) -> dict:
    """--extra-body as given: JSON text on the command line, a mapping in a YAML config."""
    if isinstance(value, dict):
        return dict(value)
    if not str(value or "").strip():
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--extra-body must be a JSON object, e.g. '{{\"repeat_penalty\": 1.0}}' ({error})") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"--extra-body must be a JSON object, got {type(parsed).__name__}")
    return parsed


def request_body(config: TeacherConfig, messages: prompts.Messages, decoding: Decoding, n: int = 1) -> dict:
    """One Chat Completions request: greedy is temperature 0; max_tokens caps each candidate."""
    sampling = {"temperature": decoding.temperature, "top_p": decoding.top_p} if decoding.do_sample else {"temperature": 0}
    body = {"model": config.teacher_model, "messages": messages, "max_tokens": decoding.max_new_tokens, **sampling, **config.extra_body}
    if n > 1:
        body["n"] = n
    return body


def generator_fields(config: TeacherConfig, prompt: str, decoding: Decoding, candidates: int) -> dict:
    """What a stored reasoning records of its source (`rgen_run` names it where the app shows a row's generator)."""
    return {
        "rgen_run": config.source,
        "teacher": "endpoint",
        "endpoint": config.endpoint,
        "model": config.teacher_model,
        "stage1": None,  # unknown: a served model may or may not be a trained R-Gen
        "prompt_version": prompts.PROMPT_VERSION,
        "prompt_variant": prompt,
        "prompt_variant_version": prompts.stage2_prompt(prompt).version,
        "candidates": candidates,
        "selection": "fewest quality flags" if candidates > 1 else None,
        "decoding": {**dataclasses.asdict(decoding), "extra_body": config.extra_body},
    }


# ---------------------------------------------------------------------------------------------
# one row: a request, its retries, and best-of-K


@dataclass
class Job:
    """One row to ask for: `key` comes back with its outcome (the store's row id)."""

    key: int
    messages: prompts.Messages
    text: str
    label: str


@dataclass
class Outcome:
    key: int
    reasoning: str | None  # None: failed (see error) or not tried because the run stopped
    error: str | None = None
    attempts: int = 0


class _Retry(Exception):
    """A failure worth another attempt; `retry_after` is the server's Retry-After in seconds, if it sent one."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.retry_after = retry_after


class _RowRefused(Exception):
    """The server refused this request as it is (400, 413, 422, ...): another attempt would be refused too."""


def _scrub(text: str, key: str | None) -> str:
    return text.replace(key, "***") if key else text


def _server_message(response, api_key: str | None) -> str:
    """A short, one-line, key-free excerpt of an error body: what the server said was wrong."""
    try:
        body = response.json()
        detail = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(detail, dict):
            detail = detail.get("message") or detail.get("detail") or detail
        text = detail if isinstance(detail, str) else json.dumps(detail)
    except ValueError:
        text = response.text
    text = " ".join(_scrub(text, api_key).split())
    return f": {text[:200]}" if text else ""


def _retry_after(response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None  # absent, or an HTTP date: our own backoff decides


def _ask(client, config: TeacherConfig, api_key: str | None, messages: prompts.Messages, decoding: Decoding, n: int) -> list[str]:
    """One attempt: the non-empty candidates the server returned, or why this attempt failed."""
    import httpx

    try:
        response = client.post("chat/completions", json=request_body(config, messages, decoding, n))
    except httpx.TimeoutException:
        raise _Retry(f"no response within {config.timeout:g} s") from None
    except httpx.TransportError as error:
        raise _Retry(f"connection failed ({type(error).__name__})") from None
    status = response.status_code
    if status in (401, 403):
        advice = f"check the key in ${config.api_key_env}" if config.api_key_env else "this endpoint needs a key: name its environment variable with --api-key-env"
        raise TeacherError(f"{config.endpoint} refused the request ({status}{_server_message(response, api_key)}); {advice}")
    if status == 404:
        raise TeacherError(
            f"{config.endpoint} answered 404 for model {config.teacher_model!r}{_server_message(response, api_key)}; check --teacher-url "
            "(most servers' base URL ends in /v1) and --teacher-model (the name it serves)"
        )
    if status in (408, 409, 425, 429) or status >= 500:
        raise _Retry(f"HTTP {status}{_server_message(response, api_key)}", _retry_after(response))
    if status >= 400:
        raise _RowRefused(f"HTTP {status}{_server_message(response, api_key)}")
    try:
        payload = response.json()
    except ValueError:
        raise _Retry(f"malformed JSON in a {status} response") from None
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(choices, list) or not choices:
        raise _Retry("a response without choices")
    texts = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str) and content.strip():
            texts.append(content.strip())
    if not texts:
        raise _Retry("empty content")
    return texts


def _backoff(config: TeacherConfig, failures: int, retry_after: float | None) -> float:
    """Exponential with jitter (so rows that failed together do not retry together), a Retry-After at least, capped."""
    delay = config.backoff * 2 ** (failures - 1) * random.uniform(0.5, 1.0)
    return min(config.max_backoff, max(delay, retry_after or 0.0))


def _one_row(client, config, api_key, job: Job, decoding: Decoding, candidates: int, label_names, stop: threading.Event) -> Outcome:
    collected: list[str] = []
    attempts = failures = 0
    while len(collected) < candidates:
        if stop.is_set():
            return Outcome(job.key, None, None, attempts)
        attempts += 1
        try:
            collected += _ask(client, config, api_key, job.messages, decoding, candidates - len(collected))
        except _RowRefused as error:
            return Outcome(job.key, None, f"refused: {error}", attempts)
        except _Retry as error:
            failures += 1
            if failures > config.max_retries:
                return Outcome(job.key, None, f"{error} (attempt {attempts}, retries exhausted)", attempts)
            logger.info("row %s: %s; retrying (%d of %d)", job.key, error, failures, config.max_retries)
            stop.wait(_backoff(config, failures, error.retry_after))
    if candidates == 1:
        return Outcome(job.key, collected[0], None, attempts)
    from training.augment import best_candidate

    return Outcome(job.key, best_candidate(collected[:candidates], job.text, job.label, label_names), None, attempts)


# ---------------------------------------------------------------------------------------------
# many rows


def run_requests(
    config: TeacherConfig,
    jobs: Iterable[Job],
    decoding: Decoding,
    on_outcome: Callable[[Outcome], None],
    candidates: int = 1,
    label_names: Sequence[str] = (),
) -> None:
    """Ask for every job with `config.concurrency` requests in flight; `on_outcome` gets each finished row in this thread.

    Jobs are drawn lazily, one per request in flight, so a run over 350k rows holds only those in memory. Stops
    with TeacherError on a refused key, a wrong URL or model, or `stop_after_failed_rows` failures in a row; a
    KeyboardInterrupt (or an exception from `on_outcome`) stops it too. Either way the requests in flight are
    let finish (their results dropped: those rows are asked again next time) and no new one starts.
    """
    import httpx

    api_key = config.api_key()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    stop = threading.Event()
    jobs = iter(jobs)
    failed_in_a_row, last_error = 0, ""
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
    with httpx.Client(base_url=config.endpoint + "/", headers=headers, timeout=config.timeout, limits=limits) as client:
        pool = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="teacher")
        pending: set[Future] = set()
        try:
            while True:
                for job in _take(jobs, config.concurrency - len(pending)):
                    pending.add(pool.submit(_one_row, client, config, api_key, job, decoding, candidates, label_names, stop))
                if not pending:
                    break
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    outcome = future.result()  # a TeacherError from the worker ends the run here
                    on_outcome(outcome)
                    failed_in_a_row = failed_in_a_row + 1 if outcome.error else 0
                    last_error = outcome.error or last_error
                if failed_in_a_row >= config.stop_after_failed_rows:
                    raise TeacherError(
                        f"{config.endpoint} failed {failed_in_a_row} rows in a row (the last: {last_error}); stopped. "
                        "The rows written are kept: when the endpoint answers again, run the same command to continue"
                    )
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)


def _take(iterator: Iterator[Job], count: int) -> list[Job]:
    taken = []
    for _ in range(max(0, count)):
        job = next(iterator, None)
        if job is None:
            break
        taken.append(job)
    return taken


# ---------------------------------------------------------------------------------------------
# into the review store, with the rows that failed kept beside it


FAILURES_TABLE = "stage2_failures"


class FailureLog:
    """Rows whose last attempt failed, with the reason, in a table of the store's own file (through SQLite only).

    A row leaves it when a reasoning is written for it; `failed_rows` shows only rows still without one.
    """

    def __init__(self, store_path: str | Path):
        self.db = sqlite3.connect(store_path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.execute(
            f"CREATE TABLE IF NOT EXISTS {FAILURES_TABLE} (row_id INTEGER PRIMARY KEY, reason TEXT NOT NULL, "
            "attempts INTEGER NOT NULL, source TEXT NOT NULL, at REAL NOT NULL)"
        )

    def record(self, row_id: int, reason: str, attempts: int, source: str) -> None:
        self.db.execute(f"INSERT OR REPLACE INTO {FAILURES_TABLE} VALUES (?, ?, ?, ?, ?)", (row_id, reason, attempts, source, time.time()))

    def clear(self, row_id: int) -> None:
        self.db.execute(f"DELETE FROM {FAILURES_TABLE} WHERE row_id = ?", (row_id,))

    def close(self) -> None:
        self.db.close()


def failed_rows(store_path: str | Path) -> dict[int, str]:
    """Row id -> why its last attempt failed, for the rows still without a reasoning."""
    db = sqlite3.connect(f"{Path(store_path).resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if FAILURES_TABLE not in tables:
            return {}
        return dict(db.execute(
            f"SELECT f.row_id, f.reason FROM {FAILURES_TABLE} f JOIN rows r ON r.id = f.row_id WHERE r.reasoning IS NULL ORDER BY f.row_id"
        ).fetchall())
    finally:
        db.close()


def fill_store(
    config: TeacherConfig,
    store,
    row_ids: Sequence[int],
    label_space: prompts.LabelSpace,
    decoding: Decoding,
    prompt: str = "default",
    candidates: int = 1,
    progress: ProgressCallback | None = None,
) -> dict:
    """Ask the endpoint for each of these store rows; every reasoning is written as it returns, every failure recorded."""
    generator = generator_fields(config, prompt, decoding, candidates)
    failures = FailureLog(store.path)
    counts = {"generated": 0, "failed": 0}
    done = 0

    def jobs() -> Iterator[Job]:
        for row_id in row_ids:
            row = store.get(row_id)
            yield Job(row_id, prompts.stage2_messages(row.text, row.label, label_space, prompt), row.text, row.label)

    def record(outcome: Outcome) -> None:
        nonlocal done
        if outcome.reasoning is not None:
            counts["generated"] += store.write_generated([(outcome.key, outcome.reasoning)], generator)
            failures.clear(outcome.key)
        elif outcome.error is not None:
            counts["failed"] += 1
            failures.record(outcome.key, outcome.error, outcome.attempts, config.source)
            logger.warning("row %s failed: %s", outcome.key, outcome.error)
        done += 1
        if progress:
            progress(done, len(row_ids))

    try:
        run_requests(config, jobs(), decoding, record, candidates, label_space.names)
    finally:
        failures.close()
    return counts


# ---------------------------------------------------------------------------------------------
# llama-cpp-python's OpenAI-compatible server, for tests and `bench`


def free_loopback_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LlamaCppServer:
    """`python -m llama_cpp.server` on a GGUF, on a free loopback port, for as long as the `with` block lasts.

    The server stops itself after `lifetime_s` (coreutils `timeout`) even if this process dies without
    stopping it. llama-cpp-python's server runs one request at a time (requests queue behind a lock; it has
    no parallel slots), so concurrency against it measures queueing, not batching.
    """

    def __init__(self, gguf: str | Path, context: int = 2048, threads: int | None = None, lifetime_s: int = 3600, start_timeout_s: float = 120):
        self.gguf, self.context, self.lifetime_s, self.start_timeout_s = Path(gguf), context, lifetime_s, start_timeout_s
        self.threads = threads or max(1, os.cpu_count() or 1)
        self.port = free_loopback_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.process = None

    def __enter__(self) -> LlamaCppServer:
        import subprocess
        import sys
        import tempfile

        import httpx

        command = [
            "timeout", str(self.lifetime_s), sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf),
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.context), "--n_threads", str(self.threads),
            "--n_threads_batch", str(self.threads), "--verbose", "false",
        ]
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise TeacherError(f"llama_cpp.server did not start within {self.start_timeout_s:g} s on port {self.port}: {self.output()[-1000:]}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def __exit__(self, *exc) -> None:
        import subprocess

        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
