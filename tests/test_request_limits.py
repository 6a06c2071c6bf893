"""What a request may cost before a function answers: slow bodies, huge bodies and huge
request lines, sent over raw sockets to each function under functions-framework.

The limits live in functions/*/request_limits.py (twins). Memory while a refused 200 MB body is
sent is measured in bench/bench_limits.py, not here.
"""
from __future__ import annotations

import json
import socket
import threading
from urllib.parse import urlsplit

import pytest

from tests.serving import load_module, serve_function

NORMAL = {  # a request each function answers itself, and what it answers
    "range": (b"/", b'{"start":"2022-01-01T00:00:00Z","stop":"2022-01-01T00:03:00Z","step":"* * * * *"}', 200),
    # not on the allowlist: the proxy reads the body and answers without calling Workflows
    "proxy": (b"/v1/projects/other-project/locations/europe-west1/workflows/w/executions", b"{}", 403),
    # a path the audit does not serve: answered without a pass
    "audit": (b"/nothing", b"{}", 404),
}
TOO_LARGE = {"range": 400, "proxy": 413, "audit": 413}
TARGETS = {"range": "expand_range", "proxy": "proxy", "audit": "audit_pass"}
LIMITS = load_module("range", "request_limits")  # the others are its twins (tests/test_twins.py)


@pytest.fixture(scope="module", params=sorted(NORMAL))
def function(request):
    env = {"ALLOWED_WORKFLOWS": "my-project/*/*", "WORKFLOWS_API": "http://127.0.0.1:9"}
    with serve_function(request.param, TARGETS[request.param], env=env) as url:
        yield request.param, urlsplit(url).port


def head(path: bytes, length: int | None, extra: bytes = b"") -> bytes:
    size = b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % length
    return b"POST " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" + size + extra + b"\r\n"


def status_of(sock: socket.socket) -> tuple[int, dict | None]:
    """The status code and JSON body of the one response on `sock` (the socket is left open)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    header, _, rest = data.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    length = next((int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:")), 0)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    body = json.loads(rest) if rest.startswith(b"{") else None
    return int(lines[0].split()[1]), body


def normal_request(port: int, function: str) -> int:
    path, body, _ = NORMAL[function]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head(path, len(body)) + body)
        return status_of(sock)[0]


@pytest.mark.parametrize("trial", range(3))
def test_eight_stalled_bodies_do_not_stall_a_normal_request(function, trial):
    """Eight clients promise 100 bytes and send 7 (the issue's reproduction). Before the read
    timeout they held every gunicorn thread and a normal request waited until they left."""
    name, port = function
    path = NORMAL[name][0]
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(8)]
    try:
        for sock in stalled:
            sock.sendall(head(path, 100) + b'{"a":1,')
        assert normal_request(port, name) == NORMAL[name][2]  # answered, within the 30 s timeout
        answers = [status_of(sock) for sock in stalled]
    finally:
        for sock in stalled:
            sock.close()
    assert [code for code, _ in answers] == [408] * 8
    assert all(set(body["error"]) == {"code", "status", "message"} for _, body in answers)


def test_a_trickled_body_is_cut_off_at_the_total_deadline(function):
    """A byte every half second never leaves the socket quiet for BODY_IDLE_SECONDS, so only the
    total can stop it: the refusal names the documented 10 s while the body is still arriving.
    Before, gunicorn's reader waited for every byte it was asked (a byte every 1.5 s held the proxy
    81 s); this body would take 60 s."""
    name, port = function
    assert (LIMITS.BODY_SECONDS, LIMITS.BODY_IDLE_SECONDS) == (10.0, 2.0)  # docs/range.md, docs/proxy.md
    declared, sent, stop = 120, [], threading.Event()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head(NORMAL[name][0], declared))

        def trickle():
            while len(sent) < declared and not stop.wait(0.5):
                try:
                    sock.sendall(b" ")
                except OSError:
                    return
                sent.append(1)

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            code, answer = status_of(sock)
        finally:
            stop.set()
            sender.join(5)
    assert code == answer["error"]["code"] == 408, answer
    assert answer["error"]["message"] == "the body did not arrive within 10 s"
    assert 0 < len(sent) < declared


def test_a_body_over_the_limit_is_refused_before_it_is_sent(function):
    """A 200 MB Content-Length is answered after 64 KB of it: the function (and the framework's
    after-request hook) no longer read a refused body, so the client need not send the rest."""
    name, port = function
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head(NORMAL[name][0], 200 * 1024 * 1024) + b"x" * 65536)
        code, body = status_of(sock)
    assert code == body["error"]["code"] == TOO_LARGE[name]


def test_a_chunked_body_is_read_whole_and_a_long_one_refused(function):
    name, port = function
    path, body, expected = NORMAL[name]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head(path, None) + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        assert status_of(sock)[0] == expected
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        piece = b"x" * 65536
        try:
            for _ in range(40):  # 2.5 MB, over both limits
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if _ else head(path, None))
        except OSError:  # refused and closed while we were still sending
            pass
        code, answer = status_of(sock)
    assert code == answer["error"]["code"] == TOO_LARGE[name]


def test_a_16_mb_request_line_is_refused_cheaply(function):
    """functions-framework turns gunicorn's request-line limit off, and gunicorn reads a long line
    in quadratic time (16 MB took 30 s of CPU). With the limit back, gunicorn answers 414 after
    8 KB; a normal request right after it is answered."""
    name, port = function
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sender = threading.Thread(target=_send_ignoring_reset, args=(sock, b"GET /" + b"a" * (16 * 1024 * 1024)))
        sender.start()
        answer = b""
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            pass
        sender.join(30)
        assert not sender.is_alive()
    if answer:  # gunicorn's own answer, in Google's shape
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 414 ") and b"Content-Type: application/json" in head, answer[:200]
        assert json.loads(body)["error"]["code"] == 414
    assert normal_request(port, name) == NORMAL[name][2]


@pytest.mark.parametrize("request_head, code", [
    (b"GARBAGE\r\n\r\n", 400),                                                    # no target, no version
    (b"POST / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n", 400),             # obs-fold
    (b"POST / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n", 400),                     # a space in a field name
    (b"POST / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n", 431),     # a field over 8,190 bytes
    (b"POST / HTTP/1.1\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n", 431),                  # more than 100 fields
], ids=["request-line", "obs-fold", "field-name", "long-field", "101-fields"])
def test_what_gunicorn_refuses_itself_is_answered_in_googles_shape(function, request_head, code):
    """Refused before the function runs, by gunicorn (gunicorn/workers/base.py handle_error), whose
    own page is HTML; request_limits has it write Google's JSON error instead."""
    name, port = function
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request_head)
        got, answer = status_of(sock)
    assert got == code and set(answer) == {"error"}, answer
    assert answer["error"]["code"] == code and answer["error"]["status"] == "INVALID_ARGUMENT"
    assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]
    assert normal_request(port, name) == NORMAL[name][2]


def _send_ignoring_reset(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass
