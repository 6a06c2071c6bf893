"""One HTTP session for every call wfr makes, with Google's error shape read into ApiError and
bounded retries of transient faults, and a count of calls per service (the bench prints it)."""
from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import requests

from .errors import ApiError, WfrError

# Google's advice for retrying: 408, 429 and 5xx, with truncated exponential backoff and jitter
# (https://cloud.google.com/storage/docs/retry-strategy).
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
RETRIES = 4
TIMEOUT = 60.0


class Http:
    def __init__(self):
        self._local = threading.local()
        self.calls: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    @property
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def call(self, service: str, method: str, url: str, *, headers: dict[str, str],
             params: dict[str, Any] | None = None, json: Any = None, data: bytes | None = None,
             retry: bool = True) -> Any:
        """The decoded JSON answer (None when empty). `retry=False` for calls that are not
        idempotent and have no precondition."""
        for attempt in range(RETRIES + 1):
            with self._count_lock:
                self.calls[service] += 1
            try:
                response = self._session.request(method, url, headers=headers, params=params,
                                                 json=json, data=data, timeout=TIMEOUT)
            except requests.RequestException as error:
                if not retry or attempt == RETRIES:
                    raise WfrError(f"{method} {url}: {error}") from None
            else:
                if response.status_code < 400:
                    return response.json() if response.content else None
                if not retry or response.status_code not in TRANSIENT or attempt == RETRIES:
                    raise _api_error(response)
            time.sleep(min(0.25 * 2 ** attempt, 8) * (0.5 + random.random() / 2))
        raise AssertionError("unreachable")


def _api_error(response: requests.Response) -> ApiError:
    try:
        body = response.json()
        error = body.get("error") or {"message": f"{len(body.get('executions', []))} elements answered"}
        return ApiError(int(error.get("code", response.status_code)), str(error.get("status", "")),
                        str(error.get("message", "")), response.url.split("?")[0], body)
    except (ValueError, KeyError, TypeError, AttributeError):
        return ApiError(response.status_code, response.reason or "", response.text[:300],
                        response.url.split("?")[0])
