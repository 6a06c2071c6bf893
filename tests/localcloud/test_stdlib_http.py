"""http.* against a real server on loopback (pytest-httpserver).

Pages: https://cloud.google.com/workflows/docs/reference/stdlib/http/request,
https://cloud.google.com/workflows/docs/http-requests and
https://cloud.google.com/workflows/docs/reference/syntax/error-types
"""
from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import parse_qs

import pytest
from werkzeug import Request, Response

from localcloud.context import LOCAL_TOKEN
from tests.localcloud.test_stdlib import call, error
from tests.serving import free_port


def test_get_sends_query_and_headers_and_decodes_a_json_response(httpserver):
    httpserver.expect_request(
        "/endpoint", method="GET", headers={"X-Custom": "yes"},
        query_string={"someVal": "Hello World", "anotherVal": "123", "flag": "true"},
    ).respond_with_json({"ok": True, "items": [1, 2]})
    result = call("http.get", url=httpserver.url_for("/endpoint"), headers={"X-Custom": "yes"},
                  query={"someVal": "Hello World", "anotherVal": 123, "flag": True})
    assert result["code"] == 200
    assert result["body"] == {"ok": True, "items": [1, 2]}
    assert result["headers"]["Content-Type"] == "application/json"


def test_query_lists_repeat_the_parameter(httpserver):
    seen = {}

    def handler(request: Request) -> Response:
        seen.update(parse_qs(request.query_string.decode()))
        return Response("ok")
    httpserver.expect_request("/q").respond_with_handler(handler)
    call("http.get", url=httpserver.url_for("/q?fixed=1"), query={"id": [1, "two"]})
    assert seen == {"fixed": ["1"], "id": ["1", "two"]}


def test_post_json_encodes_a_map_body(httpserver):
    # http/request: a body without Content-Type is JSON-encoded, application/json; charset=utf-8
    seen = {}

    def handler(request: Request) -> Response:
        seen["type"], seen["body"] = request.headers["Content-Type"], json.loads(request.data)
        return Response("created", status=201, content_type="text/plain")
    httpserver.expect_request("/endpoint", method="POST").respond_with_handler(handler)
    result = call("http.post", url=httpserver.url_for("/endpoint"),
                  body={"someVal": "Hello World", "anotherVal": 123})
    assert seen == {"type": "application/json; charset=utf-8",
                    "body": {"someVal": "Hello World", "anotherVal": 123}}
    assert result["code"] == 201 and result["body"] == "created"


def test_bytes_body_is_sent_as_octet_stream(httpserver):
    httpserver.expect_request("/raw", method="PUT", data=b"\x00\x01",
                              headers={"Content-Type": "application/octet-stream"}).respond_with_data("")
    assert call("http.put", url=httpserver.url_for("/raw"), body=b"\x00\x01")["code"] == 200


def test_form_content_type_form_encodes_a_map(httpserver):
    httpserver.expect_request("/form", method="POST", data="a=1&b=x+y").respond_with_data("ok")
    result = call("http.post", url=httpserver.url_for("/form"), body={"a": 1, "b": "x y"},
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert result["body"] == "ok"


@pytest.mark.parametrize("auth", [{"type": "OIDC", "audience": "http://x"}, {"type": "OAuth2"}])
def test_auth_sends_the_local_bearer_token(httpserver, auth):
    httpserver.expect_request("/secure", headers={"Authorization": f"Bearer {LOCAL_TOKEN}"}
                              ).respond_with_json({"user": "local"})
    assert call("http.get", url=httpserver.url_for("/secure"), auth=auth)["body"] == {"user": "local"}


def test_request_takes_any_method(httpserver):
    httpserver.expect_request("/thing", method="PATCH").respond_with_json([1])
    httpserver.expect_request("/thing", method="DELETE").respond_with_data("", status=204)
    assert call("http.request", method="PATCH", url=httpserver.url_for("/thing"))["body"] == [1]
    assert call("http.delete", httpserver.url_for("/thing"))["code"] == 204


def test_status_400_and_above_raises_http_error_with_the_response(httpserver):
    httpserver.expect_request("/missing").respond_with_json({"error": "not found"}, status=404,
                                                            headers={"X-Trace": "t1"})
    e = error("http.get", url=httpserver.url_for("/missing"))
    assert e["tags"] == ["HttpError"]
    assert e["code"] == 404
    assert e["body"] == {"error": "not found"}
    assert e["headers"]["X-Trace"] == "t1"
    assert "404" in e["message"]
    assert call("http.default_retry_predicate", e) is False


def test_a_503_is_retried_by_both_default_predicates(httpserver):
    httpserver.expect_request("/busy").respond_with_data("busy", status=503)
    e = error("http.post", url=httpserver.url_for("/busy"), body={})
    assert e["code"] == 503 and e["body"] == "busy"
    assert call("http.default_retry_predicate", e) is True
    assert call("http.default_retry_predicate_non_idempotent", e) is True


def test_nothing_listening_raises_connection_failed_error():
    e = error("http.get", url=f"http://127.0.0.1:{free_port()}/")
    assert "ConnectionFailedError" in e["tags"]
    assert call("http.default_retry_predicate_non_idempotent", e) is True


def test_a_slow_server_raises_timeout_error(httpserver):
    def slow(request: Request) -> Response:
        time.sleep(1.0)
        return Response("late")
    httpserver.expect_request("/slow").respond_with_handler(slow)
    e = error("http.get", url=httpserver.url_for("/slow"), timeout=0.2)
    assert e["tags"][0] == "TimeoutError"
    assert call("http.default_retry_predicate", e) is True
    assert call("http.default_retry_predicate_non_idempotent", e) is False


def test_a_response_cut_short_raises_connection_error():
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))

    def serve_half_a_response():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
    thread = threading.Thread(target=serve_half_a_response, daemon=True)
    thread.start()
    try:
        e = error("http.get", url=f"http://127.0.0.1:{port}/")
    finally:
        thread.join(5)
        listener.close()
    assert e["tags"][0] == "ConnectionError"
    assert call("http.default_retry_predicate_non_idempotent", e) is False


def test_responses_over_two_megabytes_raise_resource_limit_error(httpserver):
    # Quotas: an HTTP response may be at most 2 MB
    limit = 2 * 1024 * 1024
    httpserver.expect_request("/fits").respond_with_data(b"a" * limit)
    httpserver.expect_request("/big").respond_with_data(b"a" * (limit + 1))
    assert len(call("http.get", url=httpserver.url_for("/fits"))["body"]) == limit
    assert error("http.get", url=httpserver.url_for("/big"))["tags"] == ["ResourceLimitError"]
    # also when the server streams the body without announcing its length
    chunks = [b"a" * (1024 * 1024)] * 3
    httpserver.expect_request("/stream").respond_with_response(Response(iter(chunks)))
    assert error("http.get", url=httpserver.url_for("/stream"))["tags"] == ["ResourceLimitError"]


@pytest.mark.parametrize("kwargs, tag", [
    ({"timeout": 1801}, "ValueError"), ({"timeout": "5"}, "TypeError"),
    ({"headers": {"X": 1}}, "TypeError"), ({"query": {"q": {"nested": 1}}}, "TypeError"),
    ({"auth": {"type": "Basic"}}, "ValueError"), ({"private_service_name": "svc"}, "ValueError"),
])
def test_bad_arguments_are_rejected_before_sending(httpserver, kwargs, tag):
    assert error("http.get", url=httpserver.url_for("/never"), **kwargs)["tags"] == [tag]
    assert error("http.request", method="FETCH", url=httpserver.url_for("/"))["tags"] == ["ValueError"]
    assert len(httpserver.log) == 0


def test_calls_reuse_kept_alive_connections_and_keep_no_cookies():
    """Each call stands alone (a Set-Cookie is never sent back), yet calls to one host share a
    kept-alive connection, as a long-lived HTTP client does."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    seen = []

    class KeepAlive(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            seen.append((self.client_address[1], self.headers.get("Cookie")))
            self.send_response(200)
            self.send_header("Set-Cookie", "session=abc; Path=/")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for _ in range(5):
            call("http.get", url=f"http://127.0.0.1:{server.server_address[1]}/c")
    finally:
        server.shutdown()
        server.server_close()
    assert [cookie for _, cookie in seen] == [None] * 5
    assert len({port for port, _ in seen}) == 1
