"""What a request may cost before the function sees it: body size, body read time, request line.

One of three twins, functions/{range,proxy,audit}/request_limits.py (each function deploys
alone, so each holds a copy); tests/test_request_limits.py runs its checks against them, and
tests/test_twins.py keeps them identical.

functions-framework 3.10.2 leaves three doors open, all read in its installed source:
- `read_request`, an after-request hook, calls `request.get_data()`, so a body the function
  refused unread is read whole into memory anyway (a 200 MB body grew a worker by 200 MB);
- nothing bounds how long a body may take to arrive, so eight clients that stop mid-body hold
  every gunicorn thread (THREADS defaults to 4 per CPU), and one that trickles a byte a second
  holds a thread as long as it likes;
- it starts gunicorn with `limit_request_line: 0`, no limit, and gunicorn's line reader is
  quadratic in the line's length (16 MB cost 30 s of CPU).
`install`, called while functions-framework imports main.py, closes them: a WSGI layer reads the
body itself, bounded in bytes and seconds, and hands Flask the bytes it read; gunicorn gets back
its own default request-line limit, and answers what it refuses itself (a request line too long,
a malformed header) in Google's error shape, not in its HTML page. Google's front end enforces
its own request size limit (32 MiB on Cloud Run), far above these; see docs/range.md and
docs/proxy.md.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import sys
import time

BODY_IDLE_SECONDS = 2.0  # longest silence while a body is arriving
BODY_SECONDS = 10.0  # longest time a whole body may take, however it is trickled
REQUEST_LINE_BYTES = 8190  # gunicorn's own default, which functions-framework turns off
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}", re.ASCII)


class Refusal(Exception):
    """A request refused before the function runs, answered in Google's error shape."""

    def __init__(self, code: int, status: str, message: str):
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


def install(max_body: int, too_large: tuple[int, str, str]) -> None:
    """Set the limits on the app functions-framework is building. A no-op when main.py is
    imported any other way (a unit test loading it by path): there is no app to guard then."""
    import flask

    if not flask.has_app_context():
        return
    app = flask.current_app._get_current_object()
    if isinstance(app.wsgi_app, BodyReader):
        return
    # Flask's own limit as well: it holds if the body ever reaches Flask unread.
    app.config["MAX_CONTENT_LENGTH"] = max_body
    app.wsgi_app = BodyReader(app.wsgi_app, max_body, Refusal(*too_large))
    _limit_request_line()
    _json_refusals()


def _limit_request_line() -> None:
    try:
        from functions_framework._http import gunicorn as served
    except ImportError:  # no gunicorn (Windows, or the --debug server): nothing to change
        return
    load_config = served.GunicornApplication.load_config
    if getattr(load_config, "limits_request_line", False):
        return

    def with_line_limit(self):
        load_config(self)
        self.cfg.set("limit_request_line", REQUEST_LINE_BYTES)

    with_line_limit.limits_request_line = True
    served.GunicornApplication.load_config = with_line_limit


# google.rpc.Code names for what gunicorn refuses before the app runs (gunicorn/workers/base.py).
_REFUSAL_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 414: "INVALID_ARGUMENT",
                   417: "FAILED_PRECONDITION", 431: "INVALID_ARGUMENT", 501: "UNIMPLEMENTED"}


def _json_refusals() -> None:
    """gunicorn writes its own refusals through gunicorn.util.write_error, an HTML page; this
    writes the same code and message as Google's JSON error instead."""
    try:
        from gunicorn import util
    except ImportError:
        return
    if getattr(util.write_error, "google_shape", False):
        return

    def write_error(sock, status_int, reason, mesg):
        payload = json.dumps({"error": {"code": status_int, "status": _REFUSAL_STATUS.get(status_int, "INTERNAL"),
                                        "message": mesg[:1000] or reason}}).encode()
        head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode("latin-1")
        util.write_nonblock(sock, head + payload)

    write_error.google_shape = True
    util.write_error = write_error


class BodyReader:
    """WSGI layer: reads the whole body before the app runs, at most `max_body` bytes within
    BODY_SECONDS (and BODY_IDLE_SECONDS of silence), and replaces the input with those bytes."""

    def __init__(self, app, max_body: int, too_large: Refusal):
        self.app, self.max_body, self.too_large = app, max_body, too_large

    def __call__(self, environ, start_response):
        try:
            body = self.read(environ)
        except Refusal as refusal:
            return _refuse(environ, start_response, refusal)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)  # the bytes are now whole, not chunked
        return self.app(environ, start_response)

    def read(self, environ) -> bytes:
        declared = environ.get("CONTENT_LENGTH") or ""
        if declared and not _CONTENT_LENGTH.fullmatch(declared):
            raise Refusal(400, "INVALID_ARGUMENT", f"Content-Length {declared[:40]!r} is not a byte count")
        length = int(declared) if declared else None  # None: chunked, read to the end
        if length is not None and length > self.max_body:
            raise self.too_large  # refused unread: nothing of it is buffered
        stream = environ["wsgi.input"]
        with _deadline(stream, environ.get("gunicorn.socket")):
            chunks, size = [], 0
            while length is None or size < length:
                want = min(64 * 1024, (length if length is not None else self.max_body + 1) - size)
                try:
                    chunk = stream.read(want)
                except OSError as error:  # socket.timeout: the client went quiet, or ran out of time
                    raise _too_slow(error) from None
                except Exception:  # gunicorn's errors for a malformed chunked body
                    raise Refusal(400, "INVALID_ARGUMENT", "the chunked body is malformed") from None
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_body:
                    raise self.too_large
        if length is not None and size < length:
            raise Refusal(400, "INVALID_ARGUMENT", f"the body ended after {size} of {length} bytes")
        return b"".join(chunks)


class _BodyTimedOut(socket.timeout):
    """The whole body's BODY_SECONDS ran out (a plain socket.timeout is BODY_IDLE_SECONDS of silence)."""


class _DeadlineSocket:
    """The connection's socket as gunicorn's body reader sees it while the body arrives. gunicorn's
    readers loop over recv() until they hold what was asked, so a timeout set once per read bounds
    each recv only: a byte every 1.5 s kept a read going for 81 s. Here every recv waits at most
    until the body's deadline, and at most BODY_IDLE_SECONDS."""

    def __init__(self, sock, deadline: float):
        self._sock, self._deadline = sock, deadline

    def recv(self, size: int, *flags) -> bytes:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _BodyTimedOut()
        self._sock.settimeout(min(left, BODY_IDLE_SECONDS))
        try:
            return self._sock.recv(size, *flags)
        except socket.timeout:
            if time.monotonic() >= self._deadline:
                raise _BodyTimedOut() from None
            raise

    def __getattr__(self, name):
        return getattr(self._sock, name)


@contextlib.contextmanager
def _deadline(stream, sock):
    """Puts a _DeadlineSocket under gunicorn's body reader for the time the body is read, and gives
    the socket back, blocking again, after. A LengthReader or EOFReader holds the connection's
    unreader, a ChunkedReader its request, which holds it (gunicorn/http/body.py). No socket (the
    --debug server): nothing to bound."""
    if sock is None:
        yield
        return
    reader = getattr(stream, "reader", None)
    unreader = getattr(reader, "unreader", None) or getattr(getattr(reader, "req", None), "unreader", None)
    assert getattr(unreader, "sock", None) is sock, "gunicorn's body reader changed: the body's time is unbounded"
    unreader.sock = _DeadlineSocket(sock, time.monotonic() + BODY_SECONDS)
    try:
        yield
    finally:
        unreader.sock = sock
        sock.settimeout(None)


def _too_slow(error: OSError) -> Refusal:
    if isinstance(error, _BodyTimedOut):
        return Refusal(408, "DEADLINE_EXCEEDED", f"the body did not arrive within {BODY_SECONDS:g} s")
    return Refusal(408, "DEADLINE_EXCEEDED", f"the body paused for more than {BODY_IDLE_SECONDS:g} s")


def _refuse(environ, start_response, refusal: Refusal):
    payload = json.dumps({"error": {"code": refusal.code, "status": refusal.status,
                                    "message": refusal.message}}).encode()
    reason = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large"}.get(refusal.code, "Error")
    # The rest of a refused body stays unread: gunicorn then drains at most 64 KB (5 s) and closes.
    start_response(f"{refusal.code} {reason}", [("Content-Type", "application/json"),
                                                ("Content-Length", str(len(payload)))])
    sys.stdout.write(json.dumps({"severity": "WARNING", "httpStatus": refusal.code, "message":
                                 f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')} {refusal.code}: "
                                 f"{refusal.message}"}) + "\n")
    sys.stdout.flush()
    return [payload]
