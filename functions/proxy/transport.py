"""One HTTP/1.1 call to an API's origin on a kept-alive connection: http.client underneath,
a stack of idle connections per origin, and Google's bearer token from google-auth.

Why not urllib3 (or requests, built on it): the proxy makes three calls per run, each of which
cost about twice the CPU through urllib3's pool as on http.client, which urllib3 wraps
(bench/bench_proxy.py: the proxy's added latency fell by about 0.7 ms). urllib3 re-encodes the
request target byte by byte and wraps every answer, for features the proxy turns off: it
retries, redirects and decodes nothing itself (workflows_api.with_retries decides).
google-auth still owns the credentials: `Credentials.before_request` adds the token and
refreshes it when due (https://googleapis.dev/python/google-auth/latest/reference/google.auth.credentials.html),
and its urllib3 transport carries those refreshes only.
"""
from __future__ import annotations

import collections
import functools
import http.client
import json
import select
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

# Idle connections kept per origin: one per request in flight (gunicorn serves the function on
# threads); a connection returned while this many wait idle is closed.
IDLE_CONNECTIONS = 32


class NotSent(OSError):
    """No connection could be made: the request never left, so it cannot have taken effect."""


@dataclass(frozen=True)
class Answer:
    status: int
    data: bytes
    date: str | None = None  # the Date header: the server's clock (one-second resolution)

    def json(self):
        """The decoded body; ValueError when it is not JSON."""
        return json.loads(self.data)


class Origin:
    """scheme://host[:port] of an API, the headers every call to it carries, and its idle
    connections. Safe to share between threads: a connection is used by one call at a time."""

    def __init__(self, url: str, credentials: Credentials | None = None, headers: dict[str, str] | None = None):
        parts = urlsplit(url)
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.tls = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port
        self.credentials = credentials
        self.headers = headers or {}
        self._idle: collections.deque[http.client.HTTPConnection] = collections.deque()  # thread-safe append/pop

    def request(self, method: str, target: str, body: bytes | None, headers: dict[str, str],
                timeout: float) -> Answer:
        """Send one request (`target`: path and query) and read its whole answer. Raises
        OSError or http.client.HTTPException when no answer came; google-auth's errors when a
        token could not be had."""
        headers = {**self.headers, **headers}
        if self.credentials is None:
            return self._exchange(method, target, body, headers, timeout)
        # As google-auth's own transports: a 401 means the token went stale early; refresh once.
        token_transport = _token_transport()
        for stale in (False, True):
            if stale:
                self.credentials.refresh(token_transport)
            self.credentials.before_request(token_transport, method, self.url + target, headers)
            answer = self._exchange(method, target, body, headers, timeout)
            if answer.status != 401:
                break
        return answer

    def _exchange(self, method: str, target: str, body: bytes | None, headers: dict[str, str],
                  timeout: float) -> Answer:
        connection = self._connection(timeout)
        if connection.sock is None:
            try:
                connection.connect()
            except OSError as error:
                connection.close()
                raise NotSent(f"{type(error).__name__}: {error}") from error
        try:
            # http.client sets TCP_NODELAY: the body, written after the head, goes out at once.
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            answer = Answer(response.status, response.read(), response.getheader("Date"))
        except BaseException:
            connection.close()
            raise
        if response.will_close or len(self._idle) >= IDLE_CONNECTIONS:
            connection.close()
        else:
            self._idle.append(connection)
        return answer

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        """The most recently used idle connection the server has not closed, else a new one."""
        while self._idle:
            try:
                connection = self._idle.pop()
            except IndexError:  # another thread took the last one
                break
            if _dropped(connection):
                connection.close()
                continue
            connection.timeout = timeout
            connection.sock.settimeout(timeout)
            return connection
        if self.tls:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=_tls_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


def _dropped(connection: http.client.HTTPConnection) -> bool:
    """True when an idle connection reads as ready: the server closed it (or sent what no
    request asked for). Reusing it would fail only after the request went out; urllib3 makes
    the same check before reusing a pooled connection."""
    if connection.sock is None:
        return True
    poller = select.poll()
    poller.register(connection.sock, select.POLLIN)
    return bool(poller.poll(0))


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Made once: loading the system's CA certificates costs milliseconds.
    return ssl.create_default_context()


@functools.cache
def _token_transport():
    """google-auth's transport for token refreshes (the metadata server, or Google's token URL)."""
    import urllib3
    from google.auth.transport.urllib3 import Request

    return Request(urllib3.PoolManager())
