"""The Executions API under hostile input: every refusal a 4xx in Google's error shape, never a 500
or a hang; bodies refused before they are read; one API per state folder.

The body handling lives in google_http.GoogleJSONHandler, so every localcloud server gets it.
"""
from __future__ import annotations

import base64
import json
import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from localcloud import api, filters, google_http
from localcloud.store import StateLocked
from tests.localcloud.test_api import PARENT, Client, assert_google_error, quiet

ECHO = "main:\n  params: [args]\n  steps:\n    - keep:\n        assign:\n          - copy: ${args}\n    - done:\n        return: ${copy}\n"
SLOW = "- wait:\n    call: sys.sleep\n    args:\n      seconds: 30\n"
CREATE = f"/v1/{PARENT}/echo/executions"
READ_TIMEOUT = 10   # seconds: an answer later than this counts as a hang


@pytest.fixture
def workflows(tmp_path):
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "echo.yaml").write_text(ECHO)
    (folder / "slow.yaml").write_text(SLOW)
    return folder


@pytest.fixture
def server(workflows, tmp_path):
    started = api.start(workflows, tmp_path / "state", log=quiet)
    yield started
    started.stop()


def exchange(server, head: bytes, body: bytes = b"", half_close: bool = False) -> tuple[int, dict, bool]:
    """Send raw bytes; return (status, JSON body, whether the server then closed the connection)."""
    with socket.create_connection(server.server_address[:2], timeout=READ_TIMEOUT) as sock:
        try:
            sock.sendall(head + body)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass   # the server may answer and stop reading before all of it is sent
        reader = sock.makefile("rb")
        status = int(reader.readline().split()[1])
        headers = {}
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        answer = json.loads(reader.read(int(headers["content-length"])))
        # Closed: announced ("Connection: close", RFC 9112 section 9.6) and done (EOF follows).
        closed = headers.get("connection", "").lower() == "close" and reader.read(1) == b""
        return status, answer, closed


def post_head(extra: str, path: str = CREATE) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer t\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n").encode()


def post(server, body: bytes) -> tuple[int, dict, bool]:
    return exchange(server, post_head(f"Content-Length: {len(body)}\r\n"), body)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- 500s that are 400s ---------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b'{"argument": "\\ud800"}',                                             # the argument string itself
    json.dumps({"argument": '{"a": "\\udc00"}'}).encode(),                  # a surrogate inside the argument
    b'{"argument": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",               # a body 10,000 deep
    json.dumps({"argument": nested(990)}).encode(),
    json.dumps({"argument": nested(5_000)}).encode(),
], ids=["surrogate-body", "surrogate-argument", "body-10000-deep", "argument-990-deep", "argument-5000-deep"])
def test_bodies_that_once_crashed_the_api_are_invalid_arguments(server, body):
    status, answer, _ = post(server, body)
    assert_google_error((status, answer), 400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("length", ["abc", "-1", "1e3", "+5", "٣", " 0x10"])
def test_a_content_length_that_is_not_ascii_digits_is_refused_at_once(server, length):
    # "-1" used to read until the client went away; the half-close makes such a read return,
    # so the test also passes only if the answer comes before the body would be waited for.
    status, answer, closed = exchange(server, post_head(f"Content-Length: {length}\r\n"), b"{}")
    assert_google_error((status, answer), 400, "INVALID_ARGUMENT")
    assert closed   # the framing is unknown: the rest of the bytes must not be read as a request


@pytest.mark.parametrize("text", ["(" * 500, "NOT " * 2_000 + 'state="FAILED"', "-" * 5_000,
                                  "-" * 5_000 + 'state="FAILED"', "(" * 51 + 'state="FAILED"' + ")" * 51])
def test_filters_nested_past_the_limit_are_invalid(server, text):
    assert_google_error(Client(server.url).call("GET", f"{PARENT}/echo/executions", params={"filter": text}),
                        400, "INVALID_ARGUMENT")


def test_filters_nested_up_to_the_limit_still_work(server):
    client = Client(server.url)
    done = client.wait(client.create("echo", {"argument": "1"})["name"])
    depth = filters.MAX_NESTING
    found = client.list("echo", filter="(" * (depth - 1) + "NOT " + 'state="FAILED"' + ")" * (depth - 1))
    assert [e["name"] for e in found["executions"]] == [done["name"]]
    found = client.list("echo", filter="-" * depth + 'state="SUCCEEDED"')    # an even number of negations
    assert [e["name"] for e in found["executions"]] == [done["name"]]


@pytest.mark.parametrize("raw", [b"[" * 40_000, b"{" * 3_000, b"\xff\xfe", b'{"o": "9' + b"9" * 5_000 + b'", "s": 1, "q": ""}'])
def test_a_forged_page_token_is_invalid(server, raw):
    token = base64.urlsafe_b64encode(raw).decode()
    assert_google_error(Client(server.url).call("GET", f"{PARENT}/echo/executions", params={"pageToken": token}),
                        400, "INVALID_ARGUMENT")


# --- bodies: size, framing, pace -----------------------------------------------------------------

def test_a_100_mb_body_is_refused_before_any_of_it_is_read(server):
    # Only the headers are sent: an answer at all proves the server did not wait for the body.
    status, answer, closed = exchange(server, post_head(f"Content-Length: {100 * 1024 * 1024}\r\n"))
    assert_google_error((status, answer), 413, "INVALID_ARGUMENT")
    assert closed


def test_a_chunked_body_over_the_limit_is_refused_at_the_chunk_that_crosses_it(server):
    limit = api.ExecutionsHandler.max_body_bytes
    status, answer, closed = exchange(server, post_head("Transfer-Encoding: chunked\r\n"),
                                      b"%x\r\n" % (limit + 1))   # the chunk's bytes never come
    assert_google_error((status, answer), 413, "INVALID_ARGUMENT")
    assert closed


def test_a_chunked_create_keeps_its_argument(server):
    body = json.dumps({"argument": json.dumps({"sent": "in chunks"}), "labels": {"via": "chunked"}}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:20], body[20:]))
    status, execution, _ = exchange(server, post_head("Transfer-Encoding: chunked\r\n"), chunks + b"0\r\n\r\n")
    assert status == 200, execution
    assert json.loads(execution["argument"]) == {"sent": "in chunks"}
    assert execution["labels"] == {"via": "chunked"}
    finished = Client(server.url).wait(execution["name"])
    assert json.loads(finished["result"]) == {"sent": "in chunks"}


@pytest.mark.parametrize("chunks", [b"zz\r\n{}\r\n0\r\n\r\n", b"5\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n"],
                         ids=["bad-size", "short-chunk", "no-crlf"])
def test_a_malformed_chunked_body_is_invalid(server, chunks):
    status, answer, closed = exchange(server, post_head("Transfer-Encoding: chunked\r\n"), chunks, half_close=True)
    assert_google_error((status, answer), 400, "INVALID_ARGUMENT")
    assert closed


def test_a_stalled_body_times_out_while_other_requests_are_served(server, monkeypatch):
    monkeypatch.setattr(api.ExecutionsHandler, "body_timeout", 1.0)
    outcome = {}
    stalled = threading.Thread(target=lambda: outcome.update(
        answer=exchange(server, post_head("Content-Length: 100\r\n"), b'{"argum')))
    stalled.start()
    client = Client(server.url)
    assert client.wait(client.create("echo", {"argument": "2"})["name"])["state"] == "SUCCEEDED"
    stalled.join(READ_TIMEOUT)
    status, answer, closed = outcome["answer"]
    assert_google_error((status, answer), 408, "DEADLINE_EXCEEDED")
    assert closed


def test_a_refused_request_closes_rather_than_reading_its_body_as_the_next_request(server):
    smuggled = f"POST {CREATE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\n\r\n{{}}"
    head = f"POST {CREATE} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(smuggled)}\r\n\r\n".encode()
    status, answer, closed = exchange(server, head, smuggled.encode())
    assert_google_error((status, answer), 401, "UNAUTHENTICATED")
    assert closed
    assert Client(server.url).list("echo") == {}   # the smuggled create never ran


def test_a_kept_alive_connection_still_serves_request_after_request(server):
    client = Client(server.url)   # one requests.Session: one connection, reused
    names = [client.create("echo", {"argument": str(i)})["name"] for i in range(5)]
    assert len(set(names)) == 5


# --- request heads: refused in Google's shape (RFC 9112 sections 3 and 5) ----------------------

GET_HEAD = f"GET {CREATE} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"


@pytest.mark.parametrize("head, code, status", [
    (b"GARBAGE\r\n\r\n", 400, "INVALID_ARGUMENT"),
    (f"GET {CREATE}\r\n\r\n".encode(), 400, "INVALID_ARGUMENT"),                      # HTTP/0.9
    (f"GET  {CREATE} HTTP/1.1\r\n\r\n".encode(), 400, "INVALID_ARGUMENT"),            # two spaces
    (f"GET {CREATE} HTTP/2.0\r\n\r\n".encode(), 505, "UNIMPLEMENTED"),
    (f"{GET_HEAD}Host : x\r\n\r\n".encode(), 400, "INVALID_ARGUMENT"),                 # space before the colon
    (f"{GET_HEAD}X-A: 1\r\n folded\r\n\r\n".encode(), 400, "INVALID_ARGUMENT"),      # obs-fold
    (f"{GET_HEAD}X-A: 1\x00\r\n\r\n".encode(), 400, "INVALID_ARGUMENT"),              # a control character
    (f"{GET_HEAD}X-A: {'a' * 70_000}\r\n\r\n".encode(), 431, "INVALID_ARGUMENT"),
    (GET_HEAD.encode() + b"X-A: 1\r\n" * 99 + b"\r\n", 431, "INVALID_ARGUMENT"),         # 101 fields
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414, "INVALID_ARGUMENT"),        # http.server's own refusal
    (f"BREW {CREATE} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 501, "UNIMPLEMENTED"),   # no handler serves BREW
], ids=["garbage", "http-0.9", "two-spaces", "http-2", "space-before-colon", "obs-fold", "control-char",
        "long-field", "101-fields", "long-request-line", "unknown-method"])
def test_a_malformed_head_is_refused_in_googles_shape_and_closes(server, head, code, status):
    got, answer, closed = exchange(server, head)
    assert_google_error((got, answer), code, status)
    assert closed


def test_field_names_are_case_insensitive_and_values_lose_their_surrounding_blanks(server):
    head = f"GET {CREATE} HTTP/1.1\r\nhost: x\r\nAUTHORIZATION:\t Bearer t \t\r\nx-empty:\r\n\r\n".encode()
    status, answer, closed = exchange(server, head)
    assert (status, answer, closed) == (200, {}, False)


def test_http_1_0_closes_unless_asked_to_keep_alive(server):
    head = f"GET {CREATE} HTTP/1.0\r\nAuthorization: Bearer t\r\n"
    assert exchange(server, (head + "\r\n").encode())[::2] == (200, True)
    assert exchange(server, (head + "Connection: keep-alive\r\n\r\n").encode())[::2] == (200, False)


def test_expect_100_continue_is_answered_before_the_body_is_sent(server):
    body = json.dumps({"argument": json.dumps({"x": 1})}).encode()
    with socket.create_connection(server.server_address[:2], timeout=READ_TIMEOUT) as sock:
        sock.sendall(post_head(f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n"))
        reader = sock.makefile("rb")
        assert reader.readline().split()[1] == b"100" and reader.readline() == b"\r\n"
        sock.sendall(body)
        assert reader.readline().split()[1] == b"200"


# --- one API per state folder --------------------------------------------------------------------

def test_a_second_api_on_the_same_state_folder_fails_and_the_first_keeps_its_runs(workflows, tmp_path):
    first = api.start(workflows, tmp_path / "state", log=quiet)
    try:
        client = Client(first.url)
        running = client.create("slow")
        with pytest.raises(StateLocked, match=str(tmp_path / "state")):
            api.start(workflows, tmp_path / "state", log=quiet)
        assert client.get(running["name"])["state"] == "ACTIVE"
        other = api.start(workflows, tmp_path / "other-state", log=quiet)   # another folder is fine
        other.stop()
    finally:
        first.stop()
    again = api.start(workflows, tmp_path / "state", log=quiet)   # the lock ends with the server
    again.stop()


# --- deep arguments in the engine ----------------------------------------------------------------

def test_a_deep_argument_fails_the_execution_with_resource_limit_error_not_recursion_error(server):
    # Google's quotas page lists no nesting limit for arguments or variables, only sizes
    # (32 KB argument, 512 KB of variables): https://cloud.google.com/workflows/quotas#resource_limits
    # localcloud accepts what parses and, where its engine cannot go as deep, fails the execution
    # with the tag Workflows documents for an exhausted resource:
    # https://cloud.google.com/workflows/docs/reference/syntax/error-types
    client = Client(server.url)
    shallow = client.wait(client.create("echo", {"argument": nested(50)})["name"])
    assert shallow["state"] == "SUCCEEDED" and json.loads(shallow["result"]) == json.loads(nested(50))
    deep = client.wait(client.create("echo", {"argument": nested(800)})["name"])
    assert deep["state"] == "FAILED", deep
    payload = json.loads(deep["error"]["payload"])
    assert payload["tags"] == ["ResourceLimitError"] and "RecursionError" not in deep["error"]["context"]


# --- JSON depth, against the parsed value as oracle ----------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\ab'), inner, max_size=3),
                           max_leaves=20)


def depth_of(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    return 0


@given(json_values)
def test_json_depth_counts_what_the_parsed_value_nests(value):
    assert google_http.json_depth(json.dumps(value)) == depth_of(value)


# --- fuzz: no 5xx, no hang ---------------------------------------------------------------------

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
texts = st.text(max_size=30)
json_texts = json_values.map(json.dumps)
bodies = st.one_of(
    st.binary(max_size=200),
    json_texts.map(str.encode),
    st.fixed_dictionaries({}, optional={"argument": json_texts | texts | st.integers(), "labels": json_values,
                                        "callLogLevel": texts, "junk": texts}).map(lambda d: json.dumps(d).encode()),
    st.integers(1, 3_000).map(lambda depth: json.dumps({"argument": nested(depth)}).encode()))
paths = st.sampled_from([CREATE, f"/v1/{PARENT}/echo/executions/x", f"/v1/{PARENT}/echo/executions/x:cancel",
                         f"/v1/{PARENT}/nope/executions", "/v1/", "/", f"/v1/{PARENT}/echo/executions/%ff%00"])
queries = st.dictionaries(st.sampled_from(["filter", "orderBy", "pageSize", "pageToken", "view", "x"]),
                          texts | st.sampled_from(["(" * 80, "NOT " * 300, 'state="FAILED"', "-" * 900]), max_size=3)
framings = st.sampled_from(["length", "chunked", "bad-length"])


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "DELETE", "PATCH"]), path=paths, query=queries, body=bodies,
       framing=framings)
def test_fuzzed_requests_never_get_a_5xx_or_hang(server, method, path, query, body, framing):
    from urllib.parse import urlencode
    target = path + ("?" + urlencode(query) if query else "")
    if framing == "chunked":
        head, payload = "Transfer-Encoding: chunked\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    elif framing == "length":
        head, payload = f"Content-Length: {len(body)}\r\n", body
    else:
        head, payload = "Content-Length: -1\r\n", body
    request = (f"{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n{head}\r\n").encode()
    status, answer, _ = exchange(server, request, payload, half_close=True)   # times out if it hangs
    assert status < 500, answer
    if status >= 400:
        assert set(answer) == {"error"} and set(answer["error"]) == {"code", "status", "message"}
