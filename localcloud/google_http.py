"""Google-style HTTP on loopback: the pieces every localcloud server shares.

Google's REST APIs answer errors as {"error": {"code", "message", "status"}}, take JSON bodies,
accept a set of standard query parameters on every method, refuse unknown ones, want a bearer
token, and write times in RFC 3339 UTC. `GoogleJSONHandler` does all of that; a server subclasses
it and implements `route(method, url) -> (code, body)`, raising `ApiError` for a refusal.
"""
from __future__ import annotations

import json
import re
import socket
import time
import traceback
from datetime import datetime, timezone
from http import HTTPStatus
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from . import field_mask

LogSink = Callable[[dict[str, Any]], None]

# Standard query parameters every Google API accepts (and which we ignore).
SYSTEM_PARAMETERS = {"alt", "prettyPrint", "fields", "key", "quotaUser", "$.xgafv", "access_token",
                     "callback", "uploadType", "upload_protocol"}
# Bodies and JSON: a refused body is never read, a read never waits forever, a parse never recurses
# past MAX_JSON_DEPTH. Google's front end answers 413 past its own size limit; the API servers here
# pick theirs (GoogleJSONHandler.max_body_bytes) and may lower these defaults.
MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 100
BODY_READ_TIMEOUT = 30.0        # seconds a client may take to send a body it announced
LINGER_SECONDS = 2.0            # seconds a refused body is drained (and dropped) before closing
CONTENT_LENGTH = re.compile(r"[0-9]{1,18}", re.ASCII)
# A request's head (RFC 9112 sections 3 and 5): `METHOD TARGET HTTP/1.x`, then `name: value`
# fields, with http.client's limits on a field line and on the number of fields.
TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
REQUEST_LINE = re.compile(rf"({TOKEN}) ([\x21-\x7e\x80-\xff]+) HTTP/([0-9])\.([0-9])", re.ASCII)
FIELD_LINE = re.compile(rf"({TOKEN}):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*", re.ASCII)
MAX_FIELD_LINE, MAX_FIELDS = 65536, 100
CHUNK_SIZE_LINE = re.compile(rb"([0-9a-fA-F]{1,8})[ \t]*(?:;[^\r\n]*)?\r?\n")
UNAUTHENTICATED_MESSAGE = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project.")


class ApiError(Exception):
    """An error answered in Google's shape: {"error": {"code", "message", "status"}}.

    Twin: functions/proxy/workflows_api.py's ApiError takes the same (code, message, status); the
    proxy deploys alone, so it keeps its own copy. tests/test_api_error_twins.py checks both.
    """

    def __init__(self, code: int, message: str, status: str):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


def invalid(message: str) -> ApiError:
    return ApiError(400, message, "INVALID_ARGUMENT")


def not_found(resource: str) -> ApiError:
    return ApiError(404, f"Resource '{resource}' was not found", "NOT_FOUND")


def unknown_url(url: Any) -> ApiError:
    return ApiError(404, f"The requested URL {url.path} was not found on this server.", "NOT_FOUND")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(timezone.utc))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_depth(text: str | bytes) -> int:
    """How deep [ and { nest in JSON text, counted without recursion (strings are skipped)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    depth = deepest = 0
    # Outside strings only brackets matter; a string is one token, escapes included.
    for token in re.finditer(r'"(?:[^"\\]|\\.)*"?|[\[{]|[\]}]', text):
        char = token.group()[0]
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def loads_json(text: str | bytes, max_depth: int | None = MAX_JSON_DEPTH) -> Any:
    """json.loads for untrusted text, raising ValueError (never RecursionError): past `max_depth`
    levels (None: as deep as the parser manages), and for a lone surrogate escape ("\\ud800"),
    which no UTF-8 text can carry."""
    if max_depth is not None and (depth := json_depth(text)) > max_depth:
        raise ValueError(f"JSON nests {depth} levels deep; at most {max_depth} are accepted")
    try:
        value = json.loads(text)
        json.dumps(value, ensure_ascii=False).encode()
    except RecursionError:
        raise ValueError(f"JSON nests {json_depth(text)} levels deep, deeper than localcloud can parse") from None
    except UnicodeEncodeError:
        raise ValueError("a \\u escape is a lone surrogate, which is not a Unicode character") from None
    return value


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def stdout_log(entry: dict[str, Any]) -> None:
    """One JSON line per entry on stdout, the structured form Cloud Logging reads."""
    print(json.dumps(entry, default=str), flush=True)


def query_params(url: Any, allowed: set[str]) -> dict[str, str]:
    """The query's parameters (the last of repeated ones); unknown names are refused as Google does."""
    params = {key: values[-1] for key, values in parse_qs(url.query, keep_blank_values=True).items()}
    for key in params:
        if key not in allowed and key not in SYSTEM_PARAMETERS:
            raise invalid(f'Invalid JSON payload received. Unknown name "{key}": '
                          f"Cannot bind query parameter. Field '{key}' could not be found in request message.")
    return params


def partial(url: Any, route: Callable[[], tuple[int, Any]]) -> tuple[int, Any]:
    """route()'s answer, cut down to the request's `fields` (a partial response, field_mask.py).
    The selection is read first: a malformed one is refused before anything is done."""
    text = parse_qs(url.query).get("fields", [""])[-1] if "fields=" in url.query else ""
    try:
        keep = field_mask.parse(text) if text else None
    except ValueError as error:
        raise invalid(str(error)) from None
    code, body = route()
    if keep is not None and code < 300 and isinstance(body, (dict, list)):
        body = field_mask.apply(body, keep)
    return code, body


class GoogleJSONHandler(BaseHTTPRequestHandler):
    """JSON in, JSON out, Google's error shape, a bearer token on every request."""

    protocol_version = "HTTP/1.1"
    server_version = "localcloud"
    # Headers and body go out in two sends: on a kept-alive connection Nagle's algorithm would
    # hold the body for the client's delayed ACK (~40 ms a call).
    disable_nagle_algorithm = True
    max_body_bytes = MAX_BODY_BYTES
    body_timeout = BODY_READ_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        pass

    def parse_request(self) -> bool:
        """Read the request line and header fields as http.server does, minus its HTTP/0.9
        leniency, but without the email package: that parser took a fifth of each storage call's
        CPU time (bench/bench_proxy.py). A malformed head is refused in Google's shape, and the
        connection closes."""
        self.command, self.request_version, self.close_connection = None, "HTTP/1.1", True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        line = REQUEST_LINE.fullmatch(self.requestline)
        if not line:
            self.send_error(400, f"Bad request line {self.requestline[:200]!r}: expected METHOD TARGET HTTP/1.1")
            return False
        if line[3] != "1":
            self.send_error(505, f"HTTP/{line[3]}.{line[4]} is not supported: use HTTP/1.1")
            return False
        self.command, self.path, self.request_version = line[1], line[2], f"HTTP/1.{line[4]}"
        headers = HTTPMessage()
        for _ in range(MAX_FIELDS + 1):
            raw = self.rfile.readline(MAX_FIELD_LINE + 1)
            if raw in (b"\r\n", b"\n", b""):
                break
            if len(raw) > MAX_FIELD_LINE:
                self.send_error(431, f"A header field line is longer than {MAX_FIELD_LINE} bytes")
                return False
            # No obs-fold and no space before the colon: RFC 9112 section 5 has a server refuse both.
            field = FIELD_LINE.fullmatch(str(raw, "iso-8859-1").rstrip("\r\n"))
            if not field:
                self.send_error(400, f"Malformed header field {str(raw[:100], 'iso-8859-1')!r}")
                return False
            headers[field[1]] = field[2]
        else:
            self.send_error(431, f"More than {MAX_FIELDS} header fields")
            return False
        self.headers = headers
        connection = headers.get("Connection", "").lower()
        self.close_connection = connection == "close" or (self.request_version == "HTTP/1.0" and connection != "keep-alive")
        if headers.get("Expect", "").lower() == "100-continue" and self.request_version == "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a request line too long, a method no handler serves, a
        malformed head) in Google's shape too, closing the connection."""
        self.close_connection = True
        status = "UNIMPLEMENTED" if code in (501, 505) else "INVALID_ARGUMENT" if code < 500 else "INTERNAL"
        self.send_json(code, ApiError(code, message or HTTPStatus(code).phrase, status).body())

    def send_json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self) -> bytes:
        """The request body, refused (413) before reading a byte past `max_body_bytes`.

        Content-Length must be plain ASCII digits; chunked bodies are read chunk by chunk under
        the same limit (RFC 9112 section 7.1). A body that stalls for `body_timeout` seconds is
        refused with 408. Any refusal closes the connection: unread bytes must not be taken for
        the next request.
        """
        self.body_read = True
        self.close_connection = True            # until the body is read whole
        encoding = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        self.connection.settimeout(self.body_timeout)
        try:
            if encoding == "chunked":
                body = self._read_chunked()
            elif encoding:
                raise ApiError(501, f"Transfer-Encoding {encoding!r} is not supported", "UNIMPLEMENTED")
            else:
                body = self._read_length()
        except (TimeoutError, socket.timeout):
            raise ApiError(408, "The request body did not arrive in time.", "DEADLINE_EXCEEDED") from None
        finally:
            self.connection.settimeout(self.timeout)
        self.close_connection = self.headers.get("Connection", "").lower() == "close"
        return body

    def _read_length(self) -> bytes:
        text = (self.headers.get("Content-Length") or "0").strip()
        if not CONTENT_LENGTH.fullmatch(text):
            raise invalid(f"Content-Length {text!r} is not a length in bytes")
        self._check_size(int(text))
        body = self.rfile.read(int(text))
        if len(body) < int(text):
            raise invalid(f"The body ended after {len(body)} of the {text} bytes announced")
        return body

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(64)
            match = CHUNK_SIZE_LINE.fullmatch(line)
            if not match:
                raise invalid("The chunked body is malformed: expected a chunk size line")
            size = int(match.group(1), 16)
            if size == 0:
                break
            self._check_size(len(body) + size)
            chunk = self.rfile.read(size)
            if len(chunk) < size or self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise invalid("The chunked body is malformed: a chunk is shorter than announced")
            body += chunk
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):   # trailer fields, ignored
            pass
        return bytes(body)

    def _check_size(self, size: int) -> None:
        if size > self.max_body_bytes:
            # Google's front end words it so (with 400 on some APIs); 413 is HTTP's own code.
            raise ApiError(413, f"Request payload size exceeds the limit: {self.max_body_bytes} bytes.",
                           "INVALID_ARGUMENT")

    def read_json(self) -> Any:
        raw = self.read_body()
        if not raw.strip():
            return {}
        try:
            return loads_json(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise invalid(f"Invalid JSON payload received. {error}") from None

    def require_bearer(self) -> None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, UNAUTHENTICATED_MESSAGE, "UNAUTHENTICATED")

    def handle_api(self, method: str) -> None:
        self.body_read = False
        try:
            self.require_bearer()
            url = urlsplit(self.path)
            code, body = partial(url, lambda: self.route(method, url))
        except ApiError as error:
            code, body = error.code, error.body()
        except Exception:  # a bug of ours: answer 500 in Google's shape, keep the traceback in the log
            traceback.print_exc()
            code, body = 500, ApiError(500, "Internal error encountered.", "INTERNAL").body()
        unread = self.close_connection or (not self.body_read and (
            self.headers.get("Content-Length", "0").strip() not in ("", "0") or self.headers.get("Transfer-Encoding")))
        self.close_connection = self.close_connection or unread   # unread bytes must not become a request
        self.send_json(code, body)
        if unread:
            self.linger()

    def linger(self) -> None:
        """Close after an answer sent before the body was read, without losing the answer: closing
        a socket with unread input resets it, and the client may lose the answer. So stop writing,
        then discard (never keep) what still arrives, for at most LINGER_SECONDS."""
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + LINGER_SECONDS
            while (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                if not self.connection.recv(65536):
                    break
        except OSError:
            pass

    def route(self, method: str, url: Any) -> tuple[int, Any]:
        raise NotImplementedError

    def do_GET(self) -> None:
        self.handle_api("GET")

    def do_POST(self) -> None:
        self.handle_api("POST")

    def do_DELETE(self) -> None:
        self.handle_api("DELETE")

    def do_PATCH(self) -> None:
        self.handle_api("PATCH")
