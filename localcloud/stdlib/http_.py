"""http.get, http.post, http.put, http.patch, http.delete and http.request.

https://cloud.google.com/workflows/docs/reference/stdlib/http/request
https://cloud.google.com/workflows/docs/http-requests
https://cloud.google.com/workflows/docs/reference/syntax/error-types

Request: `body` that is bytes is sent as is (application/octet-stream unless a Content-Type is
given); any other body is JSON-encoded with `Content-type: application/json; charset=utf-8`,
unless a Content-Type header asks otherwise: application/x-www-form-urlencoded form-encodes a
map (a string is sent as is) and other types send a string as UTF-8 text. `auth` (OIDC or
OAuth2) sends `Authorization: Bearer <localcloud.context.LOCAL_TOKEN>`.

Response: a map {body, code, headers}. The body is decoded JSON when the Content-Type is JSON,
otherwise text (null for an empty JSON body). Header names are canonicalised as Go does
("Content-Type"), joining repeated headers with ", ". Responses over 2 MB raise ResourceLimitError.

Errors: status >= 400 raises HttpError {message, tags, code, headers, body}; no connection
raises ConnectionFailedError, a connection broken mid-response ConnectionError, and a timeout
TimeoutError. The "OSError" second tag on these three follows the TimeoutError map Google
returns ({"message": "request timed out", "tags": ["TimeoutError", "OSError"]}).
Not supported locally: `private_service_name` and `ca_certificate` (Service Directory, custom
CAs) raise ValueError rather than being ignored.
"""
from __future__ import annotations

import codecs
import http.cookiejar
import json
import math
import threading
from typing import Any
from urllib.parse import urlencode

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NameResolutionError, NewConnectionError, ReadTimeoutError

from ..context import LOCAL_TOKEN
from ..errors import fail
from . import builtin
from ..values import expect, is_number, type_name
from .json_ import to_json

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
AUTH_TYPES = ("OIDC", "OAuth2")
DEFAULT_TIMEOUT = 300.0
MAX_TIMEOUT = 1800.0
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
_CHUNK = 64 * 1024
POOL_SIZE = 64  # kept connections per host: a parallel step runs up to 20 branches at once, and
                # several executions may run together
_session: requests.Session | None = None
_session_lock = threading.Lock()


def _shared_session() -> requests.Session:
    """One session for every execution: its connections are kept alive and reused (a new
    connection per call cost a backfill ~5% of its time). It keeps no cookies, as each
    Workflows http call stands alone; and no proxy, as loopback calls must not go through one."""
    global _session
    with _session_lock:
        if _session is None:
            session = requests.Session()
            session.trust_env = False
            session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
            adapter = HTTPAdapter(pool_connections=POOL_SIZE, pool_maxsize=POOL_SIZE)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            _session = session
        return _session


@builtin("http.request")
def request(context, method, url, timeout=None, body=None, headers=None, query=None, auth=None,
            private_service_name=None, ca_certificate=None):
    expect(method, str, "method", "http.request")
    if method.upper() not in METHODS:
        fail("ValueError", f"http.request: method must be one of {', '.join(METHODS)}")
    if private_service_name is not None or ca_certificate is not None:
        fail("ValueError", "http: private_service_name and ca_certificate are not supported by localcloud")
    return _send(method.upper(), url, timeout, body, headers, query, auth)


def _shortcut(method: str):
    def call(context, url, timeout=None, body=None, headers=None, query=None, auth=None,
             private_service_name=None, ca_certificate=None):
        return request(context, method, url, timeout, body, headers, query, auth,
                       private_service_name, ca_certificate)
    return call


for _method in ("get", "post", "put", "patch", "delete"):
    builtin(f"http.{_method}")(_shortcut(_method.upper()))


def _send(method: str, url: Any, timeout: Any, body: Any, headers: Any, query: Any,
          auth: Any) -> dict:
    expect(url, str, "url", "http")
    seconds = _timeout(timeout)
    request_headers = _headers(headers)
    if auth is not None:
        _check_auth(auth)
        request_headers = {k: v for k, v in request_headers.items() if k.lower() != "authorization"}
        request_headers["Authorization"] = f"Bearer {LOCAL_TOKEN}"
    data = _encode_body(body, request_headers)
    try:
        response = _shared_session().request(method, url, params=_query(query), data=data,
                                             headers=request_headers, timeout=seconds, stream=True)
        with response:
            content = _read_limited(response)
    except requests.exceptions.Timeout:
        fail(["TimeoutError", "OSError"], "request timed out")
    except requests.exceptions.ConnectionError as error:
        _connection_failure(error)
    except (requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError) as error:
        fail(["ConnectionError", "OSError"], f"connection broken: {error}")
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema) as error:
        fail("ValueError", f"http: invalid url {url!r}: {error}")
    result = {"body": _decode_body(content, response.headers.get("Content-Type")),
              "code": response.status_code,
              "headers": {canonical_header(name): value for name, value in response.headers.items()}}
    if response.status_code >= 400:
        fail("HttpError", f"HTTP server responded with error code {response.status_code}", **result)
    return result


def _timeout(timeout: Any) -> float:
    if timeout is None:
        return DEFAULT_TIMEOUT
    if not is_number(timeout):
        fail("TypeError", f"http: timeout must be a number, got {type_name(timeout)}")
    if not (0 < timeout <= MAX_TIMEOUT) or not math.isfinite(timeout):
        fail("ValueError", f"http: timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    return float(timeout)


def _headers(headers: Any) -> dict:
    if headers is None:
        return {}
    expect(headers, dict, "headers", "http")
    for name, value in headers.items():
        expect(value, str, f"header {name}", "http")
    return dict(headers)


def _check_auth(auth: Any) -> None:
    expect(auth, dict, "auth", "http")
    if auth.get("type") not in AUTH_TYPES:
        fail("ValueError", f"http: auth type must be one of {', '.join(AUTH_TYPES)}")


def _query(query: Any) -> list[tuple[str, str]]:
    if query is None:
        return []
    expect(query, dict, "query", "http")
    pairs = []
    for name, value in query.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((name, _query_text(name, item)))
    return pairs


def _query_text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    fail("TypeError", f"http: query value {name} must be a string, number, boolean or a list "
                      f"of those, got {type_name(value)}")


def _encode_body(body: Any, headers: dict) -> bytes | None:
    if body is None:
        return None
    content_type = _find_header(headers, "Content-Type")
    if isinstance(body, bytes):
        if content_type is None:
            headers["Content-Type"] = "application/octet-stream"
        return body
    if content_type is None:
        headers["Content-Type"] = "application/json; charset=utf-8"
        return to_json(body, None, "http").encode("utf-8")
    media_type = _media_type(content_type)
    if media_type == "application/json" or media_type.endswith("+json"):
        return to_json(body, None, "http").encode("utf-8")
    if media_type == "application/x-www-form-urlencoded" and isinstance(body, dict):
        return urlencode(_query(body)).encode("utf-8")   # pairs as the query would send them
    if isinstance(body, str):
        return body.encode("utf-8")
    fail("TypeError", f"http: cannot encode a {type_name(body)} body as {media_type}")


def _read_limited(response: requests.Response) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        _too_large()
    content = bytearray()
    for chunk in response.iter_content(_CHUNK):
        content += chunk
        if len(content) > MAX_RESPONSE_BYTES:
            _too_large()
    return bytes(content)


def _too_large() -> None:
    fail("ResourceLimitError",
         f"HTTP response exceeded the limit of {MAX_RESPONSE_BYTES} bytes (2 MB)")


def _decode_body(content: bytes, content_type: str | None) -> Any:
    media_type = _media_type(content_type or "")
    text = content.decode(_charset(content_type) or "utf-8", errors="replace")
    if media_type == "application/json" or media_type.endswith("+json"):
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _connection_failure(error: requests.exceptions.ConnectionError) -> None:
    cause = error.args[0] if error.args else None
    reason = getattr(cause, "reason", cause)
    if isinstance(reason, ReadTimeoutError) or isinstance(cause, ReadTimeoutError):
        fail(["TimeoutError", "OSError"], "request timed out")
    if isinstance(reason, (NewConnectionError, NameResolutionError)) or isinstance(
            error, requests.exceptions.SSLError):
        fail(["ConnectionFailedError", "OSError"], f"connection failed: {reason}")
    fail(["ConnectionError", "OSError"], f"connection broken: {reason}")


def _find_header(headers: dict, name: str) -> str | None:
    return next((value for key, value in headers.items() if key.lower() == name.lower()), None)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _charset(content_type: str | None) -> str | None:
    for parameter in (content_type or "").split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            try:
                return codecs.lookup(value.strip().strip('"')).name
            except LookupError:
                return None
    return None


def canonical_header(name: str) -> str:
    """Header names as Workflows gives them (Go's canonical form): Content-Type, X-Goog-Thing."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))
