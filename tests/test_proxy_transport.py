"""The proxy's HTTP transport (functions/proxy/transport.py) against real loopback servers:
kept-alive connections reused and never reused once closed, one call per connection at a time
under threads, Google's token from google-auth credentials refreshed once on a 401, and TLS
verified against the trusted roots."""
from __future__ import annotations

import http.server
import json
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import google.auth.credentials
import pytest
import trustme

from tests.serving import load_module

transport = load_module("proxy", "transport")


class Echo(http.server.BaseHTTPRequestHandler):
    """Answers each request with its method, path, Authorization header and body; a path
    ending in /close asks the client to close, /drop closes without saying so, /401 refuses
    tokens other than "fresh"."""
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # its head and body go out in two writes

    def do_GET(self):
        self.answer()

    def do_POST(self):
        self.answer(self.rfile.read(int(self.headers["Content-Length"])).decode())

    def answer(self, body: str = ""):
        authorization = self.headers.get("Authorization")
        status = 401 if self.path.endswith("/401") and authorization != "Bearer fresh" else 200
        data = json.dumps({"method": self.command, "path": self.path, "authorization": authorization,
                           "body": body}).encode()
        self.server.requests.append(authorization)
        self.send_response(status)
        if self.path.endswith("/close"):
            self.send_header("Connection", "close")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if self.path.endswith("/drop"):
            self.close_connection = True  # an idle timeout on the server's side: no header says it

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def log_message(self, *args):
        pass


class EchoServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Echo)
        self.connections, self.requests, self.lock = 0, [], threading.Lock()
        self.closed = threading.Semaphore(0)  # released each time the server closes a connection

    def shutdown_request(self, request):
        super().shutdown_request(request)
        self.closed.release()


@contextmanager
def echo_server(tls: ssl.SSLContext | None = None):
    server = EchoServer()
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server, f"{'https' if tls else 'http'}://{'localhost' if tls else '127.0.0.1'}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_calls_to_one_origin_reuse_one_kept_alive_connection():
    with echo_server() as (server, url):
        origin = transport.Origin(url, headers={"Authorization": "Bearer localcloud"})
        answers = [origin.request("POST", f"/v1/run/{n}?a=b", f"body {n}".encode(), {}, 5).json()
                   for n in range(20)]
    assert [a["path"] for a in answers] == [f"/v1/run/{n}?a=b" for n in range(20)]
    assert [a["body"] for a in answers] == [f"body {n}" for n in range(20)]
    assert {a["authorization"] for a in answers} == {"Bearer localcloud"}
    assert server.connections == 1


def test_a_connection_the_server_closed_while_idle_is_not_reused():
    with echo_server() as (server, url):
        origin = transport.Origin(url)
        for n in range(5):
            # Without the check before reuse, the request after a drop fails once it is sent.
            assert origin.request("GET", f"/{n}/drop", None, {}, 5).status == 200
            assert server.closed.acquire(timeout=5)  # closed while the client holds it idle
        assert server.connections == 5


def test_an_answer_that_says_close_closes_its_connection():
    with echo_server() as (server, url):
        origin = transport.Origin(url)
        origin.request("GET", "/a/close", None, {}, 5)
        origin.request("GET", "/b", None, {}, 5)
        origin.request("GET", "/c", None, {}, 5)
        assert server.connections == 2


def test_threads_share_an_origin_each_call_on_a_connection_of_its_own():
    with echo_server() as (server, url):
        origin = transport.Origin(url)

        def call(n: int) -> tuple[int, str]:
            return n, origin.request("POST", f"/{n}", str(n).encode(), {}, 10).json()["body"]

        for _ in range(3):  # several trials, counted afterwards
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(call, range(200)))
            assert all(str(n) == body for n, body in answers)
        assert server.connections <= 3 * 16
        assert len(origin._idle) <= min(16, transport.IDLE_CONNECTIONS)


class RotatingToken(google.auth.credentials.Credentials):
    """Credentials whose refresh hands out the next token of a list: google-auth's own
    before_request decides when to refresh and how the header is written."""

    def __init__(self, tokens):
        super().__init__()
        self.tokens, self.refreshes = list(tokens), 0

    def refresh(self, request):
        self.token, self.refreshes = self.tokens.pop(0), self.refreshes + 1


def test_google_credentials_add_the_token_and_a_401_refreshes_it_once():
    credentials = RotatingToken(["stale", "fresh", "later"])
    with echo_server() as (server, url):
        origin = transport.Origin(url, credentials=credentials)
        answer = origin.request("GET", "/v1/x/401", None, {}, 5)
        assert answer.status == 200 and answer.json()["authorization"] == "Bearer fresh"
        assert server.requests == ["Bearer stale", "Bearer fresh"] and credentials.refreshes == 2
        origin.request("GET", "/v1/y", None, {}, 5)  # a valid token is not refreshed again
        assert server.requests[-1] == "Bearer fresh" and credentials.refreshes == 2


def test_a_second_401_is_answered_as_it_came():
    credentials = RotatingToken(["stale", "revoked", "never"])
    with echo_server() as (server, url):
        answer = transport.Origin(url, credentials=credentials).request("GET", "/v1/x/401", None, {}, 5)
    assert answer.status == 401 and server.requests == ["Bearer stale", "Bearer revoked"]


@pytest.fixture
def authority():
    return trustme.CA()


def test_https_is_verified_against_the_trusted_roots(authority, monkeypatch):
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    with echo_server(server_context) as (server, url):
        origin = transport.Origin(url)
        # The system's roots do not know this test authority: refused, as an OSError that says
        # the request was never sent.
        with pytest.raises(transport.NotSent) as refused:
            origin.request("GET", "/v1/x", None, {}, 5)
        assert isinstance(refused.value.__cause__, ssl.SSLCertVerificationError)
        trusted = ssl.create_default_context()
        authority.configure_trust(trusted)
        monkeypatch.setattr(transport, "_tls_context", lambda: trusted)
        answers = [origin.request("GET", f"/v1/{n}", None, {}, 5).json()["path"] for n in range(3)]
    assert answers == ["/v1/0", "/v1/1", "/v1/2"]
    assert server.connections == 1  # one kept-alive connection (the refused handshake reached no handler)
