"""HTTP Cloud Function `expand_range`: the scheduled times of a cron expression in a window.

POST / (or /range) with JSON {"start", "stop", "step", "timezone"?, "pageSize"?, "pageToken"?,
"order"?, "countOnly"?}. Answers a bare JSON list, a page {"scheduleTimes", "nextPageToken"?} or
{"count", "first", "last"}; bad input is a 400 in Google's error shape naming the field.
"""
from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import os
import re
import time
import traceback
import zoneinfo
from datetime import datetime, timedelta, timezone
from typing import Mapping, NamedTuple
from zoneinfo import ZoneInfo

import flask
import functions_framework
from werkzeug.exceptions import HTTPException

import request_limits
from cron_window import EPOCH, CronError, CronSchedule, CronWindow

# One time-zone database for every piece (docs/range.md#time-zone-data): the pinned tzdata package,
# never the host's zoneinfo, which Python would read first. Before any ZoneInfo is built.
zoneinfo.reset_tzpath(to=[])

MAX_BODY = 64 * 1024
MAX_TOKEN = 200  # characters; the tokens this function issues are under 100
MAX_ITEMS = 10_000  # largest unpaged answer and largest page
FIELDS = {"start", "stop", "step", "timezone", "pageSize", "pageToken", "order", "countOnly"}
# Bounds on start and stop that keep the slowest answer (countOnly of a minutely window) near a
# tenth of a second (bench/bench_range.py); three centuries cover any backfill.
EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2200, 1, 1, tzinfo=timezone.utc)
# [0-9], not \d: \d also matches other scripts' digits, which int() and fromisoformat() accept.
RFC3339 = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})?",
                     re.ASCII)
# https://cloud.google.com/trace/docs/trace-context: X-Cloud-Trace-Context is TRACE_ID/SPAN_ID;o=OPTIONS
# with a 32-hex-digit TRACE_ID; W3C traceparent is VERSION-TRACE_ID-PARENT_ID-FLAGS.
TRACE_CONTEXT = re.compile(r"([0-9a-fA-F]{32})(?:/.*)?", re.ASCII)
TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}", re.ASCII)

request_limits.install(MAX_BODY, (400, "INVALID_ARGUMENT", f"request body is over {MAX_BODY // 1024} KB"))


class BadRequest(Exception):
    pass


class Request(NamedTuple):
    """A request, read and checked."""
    window: CronWindow
    desc: bool
    count_only: bool
    page_size: int | None
    after: int | None  # the instant a page token resumes after
    query: str  # what a page token must belong to


def error(code: int, status: str, message: str) -> flask.Response:
    return json_response({"error": {"code": code, "status": status, "message": message}}, code)


def json_response(body, status: int = 200) -> flask.Response:
    return flask.Response(json.dumps(body, separators=(",", ":")), status, mimetype="application/json")


def read_body(request: flask.Request) -> dict:
    if (request.content_length or 0) > MAX_BODY:
        raise BadRequest(f"request body is over {MAX_BODY // 1024} KB")
    raw = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise BadRequest(f"request body is over {MAX_BODY // 1024} KB")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; known fields: {', '.join(sorted(FIELDS))}")
    return {key: value for key, value in body.items() if value is not None}


@functools.cache
def zone_names() -> frozenset[str]:
    """IANA time zone names. Twin of zone_names in functions/proxy/main.py.

    available_timezones() also lists the host's own `localtime` file (whatever zone the machine
    is set to) and tzdata's `Factory` placeholder; neither is a place's time zone."""
    return frozenset(zoneinfo.available_timezones() - {"localtime", "Factory"})


def parse_zone(body: dict) -> ZoneInfo:
    name = body.get("timezone", "UTC")
    if not isinstance(name, str):
        raise BadRequest("timezone must be an IANA time zone name such as 'Europe/Stockholm'")
    if name not in zone_names():
        raise BadRequest(f"timezone {name[:64]!r} is not a known IANA time zone")
    return ZoneInfo(name)


def parse_instant(body: dict, field: str, tz: ZoneInfo) -> int:
    """An RFC 3339 time (naive ones are read in `tz`) as epoch seconds, rounded up:
    times are whole seconds, so start <= t < stop means ceil(start) <= t < ceil(stop)."""
    if field not in body:
        raise BadRequest(f"{field} is required (an RFC 3339 time such as '2022-02-15T00:00:00Z')")
    text = body[field]
    match = RFC3339.fullmatch(text) if isinstance(text, str) else None
    try:
        if not match:
            raise ValueError
        day, clock, fraction, offset = match.groups()
        if offset is None:  # fold=0: the earlier reading of a repeated time
            moment = datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=tz)
        else:
            moment = datetime.fromisoformat(f"{day}T{clock}{'+00:00' if offset in 'Zz' else offset}")
        in_range = EARLIEST <= moment <= LATEST
    except (ValueError, OverflowError):
        raise BadRequest(f"{field} must be an RFC 3339 time such as '2022-02-15T00:00:00Z', got {text!r}") from None
    if not in_range:
        raise BadRequest(f"{field} must lie between the years {EARLIEST.year} and {LATEST.year}")
    seconds = (moment - EPOCH) // timedelta(seconds=1)
    return seconds + (1 if fraction and fraction.strip(".0") else 0)


def parse_request(body: dict) -> Request:
    tz = parse_zone(body)
    lo, hi = parse_instant(body, "start", tz), parse_instant(body, "stop", tz)
    if hi < lo:
        raise BadRequest("stop is before start (the window is start <= t < stop)")
    step = body.get("step")
    if not isinstance(step, str):
        raise BadRequest("step is required: a cron expression such as '0 1 * * *'")
    try:
        schedule = CronSchedule(step)
    except CronError as exc:
        raise BadRequest(f"step: {exc}") from None
    order = body.get("order", "asc")
    if order not in ("asc", "desc"):
        raise BadRequest("order must be 'asc' or 'desc'")
    count_only = body.get("countOnly", False)
    if not isinstance(count_only, bool):
        raise BadRequest("countOnly must be true or false")
    page_size = body.get("pageSize")
    if page_size is not None and (type(page_size) is not int or not 1 <= page_size <= MAX_ITEMS):
        raise BadRequest(f"pageSize must be an integer from 1 to {MAX_ITEMS}")
    if "pageToken" in body and page_size is None:
        raise BadRequest("pageToken needs pageSize")
    if count_only and page_size is not None:
        raise BadRequest("countOnly cannot be combined with pageSize or pageToken")
    # A token only resumes the query it came from.
    query = hashlib.sha256(json.dumps([lo, hi, step, tz.key, order]).encode()).hexdigest()[:16]
    after = decode_token(body["pageToken"], query, lo, hi) if "pageToken" in body else None
    return Request(CronWindow(schedule, tz, lo, hi), desc=order == "desc", count_only=count_only,
                   page_size=page_size, after=after, query=query)


def encode_token(after: int, query: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after, "query": query}, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(token, query: str, lo: int, hi: int) -> int:
    try:
        if not isinstance(token, str) or len(token) > MAX_TOKEN:
            raise ValueError
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = data["after"]
        if data["query"] != query:
            raise BadRequest("pageToken belongs to another query: keep start, stop, step, timezone and order")
        if type(after) is not int or not lo <= after < hi:
            raise ValueError
    except (TypeError, KeyError, ValueError, RecursionError, binascii.Error):
        raise BadRequest("pageToken is not a token this function issued") from None
    return after


def answer(request: Request) -> tuple[object, int]:
    """The response body and the number of times it holds (or counts)."""
    window, desc = request.window, request.desc
    if request.count_only:
        count = window.count()
        return {"count": count, "first": window.first(), "last": window.first(desc=True)}, count
    if request.page_size is None:
        if window.count(limit=MAX_ITEMS) > MAX_ITEMS:
            raise BadRequest(f"the window holds more than {MAX_ITEMS} times: page through it with "
                             f"pageSize (1 to {MAX_ITEMS}) and pageToken, or ask countOnly")
        times = window.texts(desc=desc)
        return times, len(times)
    times, after = window.page(request.page_size, request.after, desc=desc)
    body = {"scheduleTimes": times}
    if after is not None:
        body["nextPageToken"] = encode_token(after, request.query)
    return body, len(times)


def log(request: flask.Request, severity: str, message: str, **fields) -> None:
    entry = {"severity": severity, "message": message, **fields}
    trace = trace_id(request.headers)
    if trace:
        project = os.environ.get("GOOGLE_CLOUD_PROJECT")
        entry["logging.googleapis.com/trace"] = f"projects/{project}/traces/{trace}" if project else trace
    print(json.dumps(entry), flush=True)


def trace_id(headers: Mapping[str, str]) -> str | None:
    """The request's trace id, from X-Cloud-Trace-Context or else traceparent, in lower case.
    Twin of trace_id in functions/proxy/main.py: tests/test_twins.py holds both to one table."""
    match = TRACE_CONTEXT.fullmatch(headers.get("X-Cloud-Trace-Context", ""))
    if match:
        return match[1].lower()
    match = TRACEPARENT.fullmatch(headers.get("traceparent", "").strip().lower())
    return match[1] if match else None


@functions_framework.errorhandler(HTTPException)
def framework_error(exc: HTTPException) -> flask.Response:
    """What the framework answers before `expand_range` runs (a path its router cannot match,
    such as one with an encoded newline, or /favicon.ico) is still in Google's error shape."""
    status = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.code, "INVALID_ARGUMENT")
    return error(exc.code or 400, status, f"{exc.description} POST to / or /range")


@functions_framework.http
def expand_range(request: flask.Request) -> flask.Response:
    started = time.perf_counter()
    body: dict = {}
    count = None
    try:
        if request.path.rstrip("/") not in ("", "/range"):
            response = error(404, "NOT_FOUND", f"no such path {request.path!r}: POST to / or /range")
        elif request.method != "POST":
            response = error(405, "METHOD_NOT_ALLOWED", f"method {request.method} is not allowed: use POST")
            response.headers["Allow"] = "POST"
        else:
            try:
                body = read_body(request)
                result, count = answer(parse_request(body))
                response = json_response(result)
            except BadRequest as exc:
                response = error(400, "INVALID_ARGUMENT", str(exc))
    except Exception:  # a bug, never the input's fault: answer in Google's shape, log the trace
        log(request, "ERROR", traceback.format_exc())
        response = error(500, "INTERNAL", "internal error")
    status = response.status_code
    window = {key: body[key] for key in ("start", "stop", "step", "timezone") if isinstance(body.get(key), str)}
    message = f"{request.method} {request.path} {status}"
    if status >= 400:
        message += ": " + response.get_json()["error"]["message"]
    log(request, "INFO" if status < 400 else "WARNING" if status < 500 else "ERROR", message,
        window=window, count=count, durationMs=round((time.perf_counter() - started) * 1000, 3), status=status)
    return response
