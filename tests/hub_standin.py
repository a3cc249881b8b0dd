"""A small stand-in for the Hugging Face Hub's HTTP API on loopback, for push tests.

The real `huggingface_hub` client talks to it through `HF_ENDPOINT`: it creates repos, asks which
upload mode each file needs (always "regular" here, so contents travel base64 in the commit),
commits NDJSON, and downloads files back through `/resolve/`. `fail_next_commits` makes the next
commits answer 500, to test failures and retries.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USER = "tester"


class HubStandIn:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[tuple[str, str], dict] = {}  # (type, id) -> {"private", "commits": [{"oid", "files"}]}
        self.fail_next_commits = 0
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def files(self, repo_type: str, repo_id: str) -> dict[str, bytes]:
        return self.repos[(repo_type, repo_id)]["commits"][-1]["files"]

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            # -- helpers ------------------------------------------------------------------
            def _authorized(self) -> bool:
                return self.headers.get("Authorization") == f"Bearer {hub.token}"

            def _json(self, status: int, body, headers: dict | None = None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            # -- routes -------------------------------------------------------------------
            def do_GET(self):
                self._route()

            def do_HEAD(self):
                self._route()

            def do_POST(self):
                self._route()

            def _route(self):
                path = self.path.split("?")[0]
                hub.requests.append(f"{self.command} {path}")
                if path == "/api/whoami-v2":
                    return self._json(200, {"type": "user", "name": USER}) if self._authorized() else self._json(401, {"error": "Invalid token"})
                if path == "/api/validate-yaml" and self.command == "POST":
                    self._body()
                    return self._json(200, {"errors": [], "warnings": []})
                if path == "/api/repos/create" and self.command == "POST":
                    return self._create()
                match = re.fullmatch(r"/api/(model|dataset)s/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
                if match and self.command == "POST":
                    return self._preupload(*match.groups()[:2]) if match.group(3) == "preupload" else self._commit(*match.groups()[:2])
                match = re.fullmatch(r"/api/(model|dataset)s/([^/]+/[^/]+)/tree/([^/]+)(?:/.*)?", path)
                if match:
                    return self._tree(match.group(1), match.group(2))
                match = re.fullmatch(r"/api/(model|dataset)s/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
                if match:
                    return self._info(match.group(1), match.group(2))
                match = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
                if match:
                    return self._resolve("dataset" if match.group(1) else "model", match.group(2), match.group(4))
                return self._json(404, {"error": f"no route {path}"})

            def _create(self):
                if not self._authorized():
                    return self._json(401, {"error": "Invalid token"})
                body = json.loads(self._body())
                repo_type = body.get("type") or "model"
                repo_id = f"{body.get('organization') or USER}/{body['name']}"
                url = f"{hub.endpoint}/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
                if (repo_type, repo_id) in hub.repos:
                    return self._json(409, {"error": "You already created this repo", "url": url})
                hub.repos[(repo_type, repo_id)] = {"private": body.get("visibility") == "private" or bool(body.get("private")), "commits": [{"oid": "0" * 40, "files": {}}]}
                return self._json(200, {"url": url, "name": repo_id})

            def _preupload(self, repo_type, repo_id):
                if (repo_type, repo_id) not in hub.repos:
                    return self._json(404, {"error": "Repository not found"})
                files = json.loads(self._body())["files"]
                return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]})

            def _commit(self, repo_type, repo_id):
                if not self._authorized():
                    return self._json(401, {"error": "Invalid token"})
                lines = [json.loads(line) for line in self._body().decode().splitlines() if line.strip()]
                if hub.fail_next_commits > 0:
                    hub.fail_next_commits -= 1
                    return self._json(500, {"error": "Internal Error - We're working hard to fix this as soon as possible!"})
                repo = hub.repos.get((repo_type, repo_id))
                if repo is None:
                    return self._json(404, {"error": "Repository not found"})
                files = dict(repo["commits"][-1]["files"])
                for line in lines:
                    if line["key"] == "file":
                        files[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                    elif line["key"] == "deletedFile":
                        files.pop(line["value"]["path"], None)
                oid = hashlib.sha1(json.dumps(sorted((p, hashlib.sha1(c).hexdigest()) for p, c in files.items())).encode() + str(len(repo["commits"])).encode()).hexdigest()
                repo["commits"].append({"oid": oid, "files": files})
                prefix = "datasets/" if repo_type == "dataset" else ""
                return self._json(200, {"commitUrl": f"{hub.endpoint}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid, "success": True})

            def _info(self, repo_type, repo_id):
                repo = hub.repos.get((repo_type, repo_id))
                if repo is None:  # the Hub names the error in a header, which huggingface_hub turns into RepositoryNotFoundError
                    return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                head = repo["commits"][-1]
                return self._json(200, {"id": repo_id, "sha": head["oid"], "private": repo["private"], "siblings": [{"rfilename": p} for p in sorted(head["files"])]})

            def _tree(self, repo_type, repo_id):
                repo = hub.repos.get((repo_type, repo_id))
                if repo is None:
                    return self._json(404, {"error": "Repository not found"})
                files = repo["commits"][-1]["files"]
                entries = [{"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()} for p, c in sorted(files.items())]
                return self._json(200, entries)

            def _resolve(self, repo_type, repo_id, filename):
                repo = hub.repos.get((repo_type, repo_id))
                if repo is None or filename not in repo["commits"][-1]["files"]:
                    return self._json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                head = repo["commits"][-1]
                content = head["files"][filename]
                self.send_response(200)
                self.send_header("Content-Length", str(len(content)))
                self.send_header("ETag", f'"{hashlib.sha1(content).hexdigest()}"')
                self.send_header("X-Repo-Commit", head["oid"])
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

        return Handler
