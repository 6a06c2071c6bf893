"""wfr's one exception family. Every failure the operator can act on is a WfrError whose message
says what was expected and what was found; the CLI prints it and exits with `exit_status`.

    WfrError            bad input or a failed call (exit status 1)
     +-- ApiError       a Google (or localcloud) API answered with an error: code, status, message
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
