"""A relay between the proxy and the local APIs that injects faults (issue 23's adversary).

The proxy's WORKFLOWS_API and STORAGE_API point at the relay, which forwards each request to
localcloud's Executions API or Cloud Storage by its path, unless a rule matches it first. A rule
can delay the request before forwarding it (a create that lands late), forward it and answer late
or never (a lost answer) or with an error, answer for the upstream without forwarding, or hold
the request until the test lets it go. Every request is counted by (method, kind), kind being `create`, `lookup`,
`get`, `cancel` or the storage call.

A sitecustomize.py (clock_skew_dir) skews the wall clock of a process started with it on
PYTHONPATH: time.time() and datetime.now() run `TEST_CLOCK_SKEW_SECONDS` ahead (or behind).
"""
from __future__ import annotations

import http.client
import http.server
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

STORAGE_PREFIXES = ("/storage/", "/upload/", "/batch/")


@dataclass
class Rule:
    """Applies to requests whose method is `method` (any when None), whose path and query contain
    `path` and whose body contains `body`, at most `times` times (None: always), only while
    time.monotonic() < `until`, and for at most `lasts` seconds after it first matched."""
    action: str                 # delay | late_answer | drop_answer | drop | answer | answer_after | hold
    method: str | None = None
    path: str = ""
    body: bytes = b""
    seconds: float = 0.0        # delay / late_answer: how long
    code: int = 503             # answer: the status answered, in Google's error shape
    times: int | None = None
    until: float = float("inf")
    lasts: float = float("inf")
    first: float | None = None  # time.monotonic() of the first match
    release: threading.Event = field(default_factory=threading.Event)  # hold: forwarded once set
    arrived: threading.Event = field(default_factory=threading.Event)  # set when first matched
    matched: int = 0

    def matches(self, method: str, path: str, body: bytes) -> bool:
        now = time.monotonic()
        return ((self.method is None or self.method == method) and self.path in path and self.body in body
                and (self.times is None or self.matched < self.times) and now < self.until
                and (self.first is None or now < self.first + self.lasts))


def kind(method: str, path: str) -> str:
    """What a call is, for counting: create, lookup, get, cancel, or method + storage path kind."""
    bare = path.split("?", 1)[0]
    if bare.startswith(STORAGE_PREFIXES):
        return f"storage {method} {'upload' if bare.startswith('/upload/') else 'object' if '/o/' in bare else 'list'}"
    if bare.endswith(":cancel"):
        return "cancel"
    if bare.endswith("/executions"):
        return "create" if method == "POST" else "lookup"
    return "get" if method == "GET" else f"{method} {bare}"


class Relay:
    def __init__(self, api_url: str, storage_url: str):
        self.upstreams = {"api": urlsplit(api_url), "storage": urlsplit(storage_url)}
        self.rules: list[Rule] = []
        self.counts: Counter[str] = Counter()
        self.seen: list[tuple[str, str, bytes]] = []  # (kind, path and query, body) of every request
        self.lock = threading.Lock()
        relay = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                relay.serve(self, body)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, rule: Rule) -> Rule:
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self.lock:
            for rule in self.rules:
                rule.release.set()
            self.rules.clear()
            self.counts.clear()
            self.seen.clear()

    def count(self, of_kind: str, containing: str = "") -> int:
        """Requests of a kind whose path or body contains `containing`."""
        with self.lock:
            return sum(1 for k, path, body in self.seen
                       if k == of_kind and (containing in path or containing.encode() in body))

    def stop(self) -> None:
        self.clear()
        self.server.shutdown()
        self.server.server_close()

    def _rule(self, method: str, path: str, body: bytes) -> Rule | None:
        with self.lock:
            self.counts[kind(method, path)] += 1
            self.seen.append((kind(method, path), path, body))
            for rule in self.rules:
                if rule.matches(method, path, body):
                    rule.matched += 1
                    if rule.first is None:
                        rule.first = time.monotonic()
                    rule.arrived.set()
                    return rule
        return None

    def serve(self, handler: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        method, path = handler.command, handler.path
        rule = self._rule(method, path, body)
        action = rule.action if rule else "forward"
        if action == "drop":
            return self._hang_up(handler)
        if action == "answer":
            return self._answer(handler, rule.code, {"Content-Type": "application/json"}, self._error(rule.code))
        if action == "delay":
            time.sleep(rule.seconds)
        if action == "hold":
            rule.release.wait(60)
        status, headers, data = self._forward(method, path, body, handler.headers)
        if action == "drop_answer":
            return self._hang_up(handler)
        if action == "answer_after":  # it took effect, and the caller hears a failure
            status, headers, data = rule.code, {"Content-Type": "application/json"}, self._error(rule.code)
        if action == "late_answer":
            time.sleep(rule.seconds)
        try:
            self._answer(handler, status, headers, data)
        except OSError:
            pass  # the proxy gave up waiting: its answer is lost, as on a network

    def _forward(self, method: str, path: str, body: bytes, headers) -> tuple[int, dict, bytes]:
        target = self.upstreams["storage" if path.startswith(STORAGE_PREFIXES) else "api"]
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection", "content-length")}
            connection.request(method, path, body=body or None, headers=sent)
            response = connection.getresponse()
            data = response.read()
            kept = {k: v for k, v in response.getheaders()
                    if k.lower() in ("content-type", "date")}
            return response.status, kept, data
        finally:
            connection.close()

    @staticmethod
    def _error(code: int) -> bytes:
        return f'{{"error": {{"code": {code}, "status": "UNAVAILABLE", "message": "injected by the relay"}}}}'.encode()

    @staticmethod
    def _answer(handler, status: int, headers: dict, data: bytes) -> None:
        handler.send_response_only(status)
        for key, value in headers.items():
            handler.send_header(key, value)
        if not any(k.lower() == "date" for k in headers):
            handler.send_header("Date", handler.date_time_string())
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()

    @staticmethod
    def _hang_up(handler) -> None:
        handler.close_connection = True
        try:
            handler.connection.shutdown(2)
        except OSError:
            pass


SITECUSTOMIZE = '''
"""Skews this process's wall clock by TEST_CLOCK_SKEW_SECONDS (tests/fault_relay.py)."""
import datetime as _datetime
import os as _os
import time as _time

_skew = float(_os.environ.get("TEST_CLOCK_SKEW_SECONDS") or 0)
if _skew:
    _real_time = _time.time
    _time.time = lambda: _real_time() + _skew
    _Real = _datetime.datetime

    class datetime(_Real):
        @classmethod
        def now(cls, tz=None):
            return _Real.now(tz) + _datetime.timedelta(seconds=_skew)

        @classmethod
        def utcnow(cls):
            return _Real.utcnow() + _datetime.timedelta(seconds=_skew)

    _datetime.datetime = datetime
'''


def clock_skew_dir(folder: Path) -> Path:
    """A folder holding the skewing sitecustomize.py: put it on the process's PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return folder


