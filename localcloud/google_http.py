"""Google-style HTTP on loopback: the pieces every localcloud server shares.

Google's REST APIs answer errors as {"error": {"code", "message", "status"}}, take JSON bodies,
accept a set of standard query parameters on every method, refuse unknown ones, want a bearer
token, and write times in RFC 3339 UTC. `GoogleJSONHandler` does all of that; a server subclasses
it and implements `route(method, url) -> (code, body)`, raising `ApiError` for a refusal.
"""
from __future__ import annotations

import json
import traceback
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

LogSink = Callable[[dict[str, Any]], None]

# Standard query parameters every Google API accepts (and which we ignore).
SYSTEM_PARAMETERS = {"alt", "prettyPrint", "fields", "key", "quotaUser", "$.xgafv", "access_token",
                     "callback", "uploadType", "upload_protocol"}
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


class GoogleJSONHandler(BaseHTTPRequestHandler):
    """JSON in, JSON out, Google's error shape, a bearer token on every request."""

    protocol_version = "HTTP/1.1"
    server_version = "localcloud"
    # Headers and body go out in two sends: on a kept-alive connection Nagle's algorithm would
    # hold the body for the client's delayed ACK (~40 ms a call).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
        pass

    def send_json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise invalid(f"Invalid JSON payload received. {error}") from None

    def require_bearer(self) -> None:
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, UNAUTHENTICATED_MESSAGE, "UNAUTHENTICATED")

    def handle_api(self, method: str) -> None:
        try:
            self.require_bearer()
            code, body = self.route(method, urlsplit(self.path))
        except ApiError as error:
            code, body = error.code, error.body()
        except Exception:  # a bug of ours: answer 500 in Google's shape, keep the traceback in the log
            traceback.print_exc()
            code, body = 500, ApiError(500, "Internal error encountered.", "INTERNAL").body()
        self.send_json(code, body)

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
