"""A stand-in for an OpenAI-compatible Chat Completions server on loopback that misbehaves on purpose, row by row.

Each distinct text it is asked about gets the next mode of `modes` (cycling), so every mode is met whatever
rows were sampled; `assigned` says which text got which. Modes that fail once and then answer: `429`
(with Retry-After: 0), `500`, `timeout` (holds the request until the stand-in closes; the client gives up
first), `malformed` (a 200 whose body is not JSON), `empty` (a 200 with empty content). Modes that fail
until `healthy` is set (the outage ends): `down` (503), `refused` (400, its body echoing the request's
Authorization header, as some APIs quote a key back). `unauthorized` always answers 401, echoing it too.

An answer holds `n` choices unless `ignore_n` (as llama-cpp-python's server does). The k-th answer for a text
alternates between a label restatement (even k) and a reasoning quoting the text (odd k), so best-of-K has
something to choose. `in_flight_barrier=N` holds the first N requests until N are in flight at once.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECOVERING = ("429", "500", "timeout", "malformed", "empty")
FAILING = ("down", "refused")


class EndpointStandIn:
    def __init__(self, modes=("ok",), ignore_n: bool = False, in_flight_barrier: int = 0, hold_s: float = 60):
        self.modes = tuple(modes)
        self.ignore_n = ignore_n
        self.hold_s = hold_s
        self.assigned: dict[str, str] = {}
        self.requests: list[dict] = []  # text, authorization, n, model, max_tokens, temperature
        self.answers: Counter = Counter()  # text -> answers (200 with content) given
        self.healthy = False
        self.barrier = threading.Barrier(in_flight_barrier, timeout=30) if in_flight_barrier else None
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._closing.set()  # held requests end now
        self._server.shutdown()
        self._server.server_close()

    def requests_for(self, text: str) -> int:
        return sum(r["text"] == text for r in self.requests)

    def texts_in_mode(self, *modes: str) -> list[str]:
        return [text for text, mode in self.assigned.items() if mode in modes]

    def _mode_and_attempt(self, text: str) -> tuple[str, int]:
        with self._lock:
            if text not in self.assigned:
                self.assigned[text] = self.modes[len(self.assigned) % len(self.modes)]
            return self.assigned[text], self.requests_for(text) - 1

    def _handler(self):
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, status: int, body: bytes, headers: dict | None = None):
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # a held request whose client gave up long ago

            def _error(self, status: int, message: str, headers: dict | None = None):
                self._send(status, json.dumps({"error": {"message": message, "type": "stand_in"}}).encode(), headers)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if self.path != "/v1/chat/completions":
                    return self._error(404, f"no route {self.path}")
                prompt = body["messages"][-1]["content"]
                text = re.search(r"Text: (.*)", prompt).group(1)
                label = re.search(r"(?:Correct answer|Answer): (.*)", prompt).group(1).strip()
                authorization = self.headers.get("Authorization")
                with stand_in._lock:
                    stand_in.requests.append({
                        "text": text, "authorization": authorization, "n": body.get("n", 1), "model": body.get("model"),
                        "max_tokens": body.get("max_tokens"), "temperature": body.get("temperature"),
                    })
                    stand_in._in_flight += 1
                    stand_in.max_in_flight = max(stand_in.max_in_flight, stand_in._in_flight)
                try:
                    self._answer(body, text, label, authorization)
                finally:
                    with stand_in._lock:
                        stand_in._in_flight -= 1

            def _answer(self, body, text, label, authorization):
                if stand_in.barrier is not None and len(stand_in.requests) <= stand_in.barrier.parties:
                    try:
                        stand_in.barrier.wait()
                    except threading.BrokenBarrierError:
                        return self._error(500, "fewer requests came in together than the barrier expected")
                mode, attempt = stand_in._mode_and_attempt(text)
                if mode == "unauthorized":
                    return self._error(401, f"Incorrect API key provided: {authorization}")
                failing_now = (mode in RECOVERING and attempt == 0) or (mode in FAILING and not stand_in.healthy)
                if failing_now and mode == "429":
                    return self._error(429, "rate limited", {"Retry-After": "0"})
                if failing_now and mode == "500":
                    return self._error(500, "internal error")
                if failing_now and mode == "down":
                    return self._error(503, "the model is loading")
                if failing_now and mode == "refused":
                    return self._error(400, f"bad request from {authorization}")
                if failing_now and mode == "timeout":
                    stand_in._closing.wait(stand_in.hold_s)
                    return self._error(504, "held past the client's timeout")
                if failing_now and mode == "malformed":
                    return self._send(200, b'{"choices": [{"message": {"content": "cut off')
                count = 1 if stand_in.ignore_n else body.get("n", 1)
                choices = []
                for index in range(count):
                    content = "" if failing_now and mode == "empty" else self._reasoning(text, label)
                    choices.append({"index": index, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"})
                self._send(200, json.dumps({"id": "x", "object": "chat.completion", "model": body.get("model"), "choices": choices}).encode())

            def _reasoning(self, text: str, label: str) -> str:
                with stand_in._lock:
                    k = stand_in.answers[text]
                    stand_in.answers[text] += 1
                if k % 2 == 0:
                    return f"{label.capitalize()} is the answer."
                return f'The words "{" ".join(text.split()[:8])}" show it.'

        return Handler
