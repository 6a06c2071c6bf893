"""wfr's one exception family. Every failure the operator can act on is a WfrError whose message
says what was expected and what was found; the CLI prints it and exits with `exit_status`.

    WfrError            bad input or a failed call (exit status 1)
     +-- ApiError       a Google (or localcloud) API answered with an error: code, status, message
     +-- Unreachable    no answer at all (refused, reset, timed out): the URL, and what to do
"""
from __future__ import annotations


class WfrError(Exception):
    exit_status = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ApiError(WfrError):
    """An API's error answer, in Google's shape {"error": {"code", "status", "message"}}."""

    def __init__(self, code: int, status: str, message: str, url: str = "", body: object = None):
        super().__init__(f"{url}: HTTP {code} {status}: {message}" if url else f"HTTP {code} {status}: {message}")
        self.body = body   # the whole decoded answer (the proxy's array form reports every element)
        self.code = code
        self.status = status
        self.api_message = message


class Unreachable(WfrError):
    """No answer from `url` (connection refused or reset, DNS, timeout), after the retries.
    `hint` says what to do; the target adds it (Cloud), since only it knows what runs there."""

    def __init__(self, method: str, url: str, why: str, hint: str = ""):
        self.method, self.url, self.why, self.hint = method, url, why, hint
        origin = "/".join(url.split("/")[:3])
        super().__init__(f"cannot reach {origin} ({why})" + (f": {hint}" if hint else ""))

    def with_hint(self, hint: str) -> "Unreachable":
        return Unreachable(self.method, self.url, self.why, hint)


def reason(error: BaseException) -> str:
    """A connection failure's cause in a few words, not a connection pool's internals."""
    text = repr(error)
    for needle, words in (("Connection refused", "connection refused"), ("timed out", "timed out"),
                          ("Name or service not known", "unknown host"), ("nodename nor servname", "unknown host"),
                          ("Connection reset", "connection reset"), ("RemoteDisconnected", "connection closed")):
        if needle in text:
            return words
    return type(error).__name__
