"""Google's REST APIs as the proxy calls them: kept-alive connections per API (transport.py),
the function's identity on Google's and a fixed token on a loopback stand-in, errors in Google's
shape, transient faults retried with backoff and jitter within a deadline; and the Workflows
Executions API v1 on top (storage_api.py is the other API that uses this)."""
from __future__ import annotations

import functools
import http.client
import ipaddress
import os
import random
import threading
import time
from urllib.parse import urlencode, urlsplit

import transport

GOOGLE_API = "https://workflowexecutions.googleapis.com"
LOCAL_TOKEN = "localcloud"  # what the local stand-in accepts; never sent to Google
# Cloud Audit Logs record it as requestMetadata.callerSuppliedUserAgent (google.cloud.audit.RequestMetadata):
# an execution the proxy started says so there.
USER_AGENT = "workflows-runner-proxy"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
RETRYABLE_CODES = {429, 500, 502, 503, 504}
# Answers that say the call was refused before it acted: Workflows' own retry policy for
# non-idempotent calls retries exactly these and connection failures
# (https://cloud.google.com/workflows/docs/reference/stdlib/http/default_retry_non_idempotent).
# 500, 502, 504 and a lost answer may come after the call took effect.
REFUSED_CODES = {429, 503}
FIRST_BACKOFF, MAX_BACKOFF = 0.2, 10.0  # seconds
CALL_TIMEOUT = 30.0  # seconds, at most, for one HTTP call

# Google's names for HTTP codes (google.rpc.Code), for error bodies that lack one.
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 409: "ALREADY_EXISTS", 413: "INVALID_ARGUMENT",
                429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
                501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


class ApiError(Exception):
    """An answer in Google's error shape; `upstream` marks messages that came from Google.

    Twin: localcloud/google_http.py's ApiError takes the same (code, message, status) and
    tests/test_api_error_twins.py checks both against one table."""

    def __init__(self, code: int, message: str, status: str | None = None, upstream: bool = False):
        super().__init__(message)
        self.code, self.message, self.upstream = code, message, upstream
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN" if code >= 500 else "FAILED_PRECONDITION")

    def body(self) -> dict:
        return {"error": {"code": self.code, "status": self.status, "message": self.message}}


class Transient(Exception):
    """A fault worth retrying: 429, 5xx, or no answer. `may_have_acted` is False when the call
    certainly did nothing (no connection, or a REFUSED_CODES answer): a create may be sent again."""

    def __init__(self, message: str, may_have_acted: bool = True, status: int | None = None):
        super().__init__(message)
        self.may_have_acted = may_have_acted
        self.status = status  # the HTTP status answered, None when there was no answer


def base_url() -> str:
    return (os.environ.get("WORKFLOWS_API") or GOOGLE_API).rstrip("/")


@functools.lru_cache(maxsize=64)  # called with an API's origin, of which there are a few
def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_origins: dict[str, transport.Origin] = {}  # by origin (scheme://host:port)
_credentials = None  # Google's, asked for on first use: nothing touches credentials at import
_transient_errors: tuple[type[BaseException], ...] = (OSError, http.client.HTTPException)
_origins_lock = threading.Lock()


def origin(url: str) -> tuple[transport.Origin, str]:
    """The origin to send a call to `url` through, and the request target (path and query).
    Google's APIs carry the function's identity, with the cloud-platform scope; a loopback
    stand-in gets LOCAL_TOKEN instead, and google-auth never loads."""
    parts = urlsplit(url)
    key = f"{parts.scheme}://{parts.netloc}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    found = _origins.get(key)
    if found is None:
        with _origins_lock:
            found = _origins.get(key) or _new_origin(key)
            _origins[key] = found
    return found, target


def _new_origin(url: str) -> transport.Origin:
    global _credentials, _transient_errors
    if is_loopback(url):
        return transport.Origin(url, headers={"Authorization": f"Bearer {LOCAL_TOKEN}", "User-Agent": USER_AGENT})
    if not url.startswith("https://"):
        # The function's token must never cross a network in clear text.
        raise ApiError(500, f"{url} is neither https nor loopback: the proxy sends its Google "
                            "credentials over https only (set WORKFLOWS_API and STORAGE_API accordingly)")
    if _credentials is None:
        import google.auth
        import google.auth.exceptions
        try:
            _credentials, _ = google.auth.default(scopes=[SCOPE])
        except google.auth.exceptions.DefaultCredentialsError as error:
            raise ApiError(500, f"no Google credentials for the proxy: {error}") from None
        # Token refreshes talk to the metadata server: their failures are transient too.
        _transient_errors += (google.auth.exceptions.TransportError, google.auth.exceptions.RefreshError)
    return transport.Origin(url, credentials=_credentials, headers={"User-Agent": USER_AGENT})


def send(method: str, url: str, deadline: float, api: str, *, params: dict | None = None,
         body: bytes | None = None, headers: dict | None = None) -> transport.Answer:
    """One HTTP call within the deadline; Transient for no answer or a 429/5xx answer."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise Transient("deadline reached", may_have_acted=False)
    if params:
        url = f"{url}?{urlencode(params)}"
    to, target = origin(url)
    try:
        # No retries or redirects below this: with_retries decides, within the deadline.
        answer = to.request(method, target, body, headers or {}, min(remaining, CALL_TIMEOUT))
    except transport.NotSent as error:
        raise Transient(f"no connection to the {api} ({error})", may_have_acted=False) from None
    except _transient_errors as error:
        # google-auth's errors come before the request is sent (a token could not be had).
        raise Transient(f"{type(error).__name__} from the {api}",
                        may_have_acted=isinstance(error, (OSError, http.client.HTTPException))) from None
    if answer.status in RETRYABLE_CODES:
        raise Transient(f"HTTP {answer.status} from the {api}", may_have_acted=answer.status not in REFUSED_CODES,
                        status=answer.status)
    return answer


def upstream_error(response: transport.Answer, api: str) -> ApiError:
    """A lasting refusal, with Google's code, status and message (a 5xx becomes 502)."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    error = answer.get("error") if isinstance(answer, dict) else None
    error = error if isinstance(error, dict) else {}
    code = response.status if response.status < 500 else 502
    message = error.get("message") if isinstance(error.get("message"), str) else None
    status = error.get("status") if isinstance(error.get("status"), str) else None
    return ApiError(code, message or f"the {api} answered HTTP {response.status}",
                    status if code < 500 else "UNKNOWN", upstream=True)


def call(method: str, path: str, deadline: float, *, params: dict | None = None,
         json_body: bytes | None = None) -> dict:
    """One HTTP call to the Workflows API; the decoded JSON object, ApiError for a lasting
    refusal, Transient for a fault worth retrying."""
    headers = {"Content-Type": "application/json; charset=utf-8"} if json_body is not None else None
    response = send(method, base_url() + path, deadline, "Workflows API", params=params,
                    body=json_body, headers=headers)
    if response.status >= 400:
        raise upstream_error(response, "Workflows API")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise Transient(f"HTTP {response.status} from the Workflows API without a JSON object")
    return answer


def with_retries(attempt, deadline: float):
    """Run attempt() until it succeeds or raises ApiError; on Transient wait with exponential
    backoff and equal jitter, and give up with 503 when the next wait would pass the deadline."""
    delay = FIRST_BACKOFF
    while True:
        try:
            return attempt()
        except Transient as fault:
            pause = delay / 2 + random.uniform(0, delay / 2)
            if time.monotonic() + pause >= deadline:
                raise ApiError(503, f"an upstream API is unavailable, retries exhausted ({fault})",
                               "UNAVAILABLE") from None
            time.sleep(pause)
            delay = min(delay * 2, MAX_BACKOFF)
