"""One HTTP session for every call wfr makes, with Google's error shape read into ApiError and
bounded retries of transient faults, and a count of HTTP calls per service (the bench prints it;
a batch of calls counts as one)."""
from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import requests

from . import batch as batch_
from .errors import ApiError, Unreachable, reason

# Google's advice for retrying: 408, 429 and 5xx, with truncated exponential backoff and jitter
# (https://cloud.google.com/storage/docs/retry-strategy).
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
RETRIES = 4
TIMEOUT = 60.0
BATCH_WORKERS = 8   # batch requests in flight at once (each of up to 100 calls)


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
             retry: bool | None = None) -> Any:
        """The decoded JSON answer (None when empty). Transient faults are retried when the call
        may be sent twice: `retry`, else may_retry(method, params)."""
        response = self._send(service, method, url, headers=headers, params=params, json=json, data=data,
                              retry=may_retry(method, params) if retry is None else retry)
        return response.json() if response.content else None

    def call_dated(self, service: str, method: str, url: str, *, headers: dict[str, str],
                   params: dict[str, Any] | None = None) -> tuple[Any, str | None]:
        """An idempotent call's decoded answer and its Date header (the server's clock)."""
        response = self._send(service, method, url, headers=headers, params=params, retry=True)
        return (response.json() if response.content else None), response.headers.get("Date")

    def batch(self, service: str, root: str, calls: Sequence[batch_.Call], *,
              headers: dict[str, str]) -> list[batch_.Answer]:
        """Each call's answer, in order, the calls sent in batch requests to `root` + batch.PATH,
        batch.MAX_CALLS to a request and up to BATCH_WORKERS requests at once. Calls answered with
        a transient code are sent again, in a later batch after the same backoff as a single
        call's retry; every other answer, errors included, is returned for the caller to judge,
        as the caller of a single call would. Only for calls that may be retried (idempotent, or
        guarded by a precondition)."""
        if not calls:
            return []
        answers: list[batch_.Answer] = [batch_.Answer(0, "", b"")] * len(calls)
        pending = list(range(len(calls)))
        for attempt in range(RETRIES + 1):
            chunks = [pending[start:start + batch_.MAX_CALLS] for start in range(0, len(pending), batch_.MAX_CALLS)]
            batches = [[calls[index] for index in chunk] for chunk in chunks]
            if len(batches) == 1:   # on this thread's open connection
                decoded = [self._send_batch(service, root, batches[0], headers)]
            else:
                with ThreadPoolExecutor(min(BATCH_WORKERS, len(batches))) as pool:
                    decoded = list(pool.map(lambda calls_: self._send_batch(service, root, calls_, headers), batches))
            for chunk, chunk_answers in zip(chunks, decoded):
                for index, answer in zip(chunk, chunk_answers):
                    answers[index] = answer
            pending = [index for index in pending if answers[index].code in TRANSIENT]
            if not pending or attempt == RETRIES:
                return answers
            _pause(attempt)
        raise AssertionError("unreachable")

    def _send_batch(self, service: str, root: str, calls: list[batch_.Call],
                    headers: dict[str, str]) -> list[batch_.Answer]:
        """One batch request (the request itself retried as any call): its calls' answers, in order."""
        content_type, body = batch_.encode(calls)
        response = self._send(service, "POST", root + batch_.PATH, data=body,
                              headers={**headers, "Content-Type": content_type})
        return batch_.decode(response.headers.get("Content-Type", ""), response.content, len(calls))

    def _send(self, service: str, method: str, url: str, *, headers: dict[str, str],
              params: dict[str, Any] | None = None, json: Any = None, data: bytes | None = None,
              retry: bool = True) -> requests.Response:
        for attempt in range(RETRIES + 1):
            with self._count_lock:
                self.calls[service] += 1
            try:
                response = self._session.request(method, url, headers=headers, params=params,
                                                 json=json, data=data, timeout=TIMEOUT)
            except requests.RequestException as error:
                if not retry or attempt == RETRIES:
                    raise Unreachable(method, url, reason(error)) from None
            else:
                if response.status_code < 400:
                    return response
                if not retry or response.status_code not in TRANSIENT or attempt == RETRIES:
                    raise api_error(response.status_code, response.reason or "", response.content,
                                    response.url.split("?")[0])
            _pause(attempt)
        raise AssertionError("unreachable")


def may_retry(method: str, params: dict[str, Any] | None) -> bool:
    """Whether a call may be sent again after a transient fault, whose answer may have been lost
    after it took effect: any method but POST (reads, and writes whose repetition changes
    nothing); a POST only with a `requestId` (the proxy answers a repeated id with the attempts
    its first try made, AIP-155) or a precondition (ifGenerationMatch...: a repeat is refused)."""
    if method != "POST":
        return True
    return any(key == "requestId" or key.startswith(("ifGeneration", "ifMetageneration")) for key in params or {})


def pause(attempt: int) -> None:
    """The wait before retry number `attempt` + 1: truncated exponential backoff with jitter."""
    _pause(attempt)


def _pause(attempt: int) -> None:
    time.sleep(min(0.25 * 2 ** attempt, 8) * (0.5 + random.random() / 2))


def api_error(code: int, reason: str, content: bytes, url: str) -> ApiError:
    """An error answer (Google's shape when it is one) as an ApiError."""
    try:
        body = json.loads(content)
        error = body.get("error") or {"message": f"{len(body.get('executions', []))} elements answered"}
        return ApiError(int(error.get("code", code)), str(error.get("status", "")),
                        str(error.get("message", "")), url, body)
    except (ValueError, KeyError, TypeError, AttributeError):
        return ApiError(code, reason, content[:300].decode("utf-8", "replace"), url)
