"""HTTP Cloud Function `proxy`: Cloud Scheduler (or the backfill) calls it instead of Workflows.

POST /v1/projects/{p}/locations/{l}/workflows/{w}/executions?timezone=IANA&reprocess=MODE&backfill=ID
It writes the run's scheduled time into the body as `scheduleTime`, labels the execution so
the run can be found again, and starts it only if the reprocess policy says so, deciding who
starts through the run ledger (claims.py, docs/ledger.md). With `dryRun=true` it starts nothing
and says which runs would start (preview.py).
"""
from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
import zoneinfo
from datetime import datetime, timedelta, timezone
from typing import Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from dataclasses import dataclass, field
from typing import NamedTuple

import functions_framework
from werkzeug.exceptions import HTTPException

import claims
import execution_body
import job_queue
import ledger
import policy
import preview
import request_limits
import scheduled_time
import slots
from workflows_api import ApiError

# One time-zone database for every piece (docs/range.md#time-zone-data): the pinned tzdata package,
# never the host's zoneinfo, which Python would read first. Before any ZoneInfo is built.
zoneinfo.reset_tzpath(to=[])

MAX_BODY_BYTES = 1024 * 1024
MAX_ELEMENTS = 100
# A dry run's elements cost no Workflows call each: one ledger listing serves them all, so it
# takes a backfill's whole page (its pageSize is at most 1,000). MAX_BODY_BYTES still applies.
MAX_DRY_RUN_ELEMENTS = 1000
MAX_ARGUMENT_BYTES = 32 * 1024  # Workflows' limit on `argument`, counted in UTF-8 bytes
# Deepest JSON nesting read: json.dumps of the enriched body recurses once per level, so a body
# near Python's recursion limit (1,000) parses but cannot be written back. Workflows' own limit
# on an argument is its size (MAX_ARGUMENT_BYTES).
MAX_DEPTH = 100
DEFAULT_DEADLINE_SECONDS = 60.0
REPROCESS_MODES = ("none", "failed", "completed")
# The job settings the audit reads from a Scheduler job's URI (docs/alerts.md): accepted on every
# delivery and otherwise ignored here; wfr's job_settings.py parses and checks them.
AUDIT_SETTINGS = ("deadline", "since", "grace", "lookback")
QUERY_PARAMETERS = ("timezone", "reprocess", "backfill", "dryRun", "requestId", *AUDIT_SETTINGS,
                    *policy.SETTINGS)
# AIP-155 (https://google.aip.dev/155): a request id is a UUID, the same one for every retry of
# one user action.
_REQUEST_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII)
# Time kept at the end of a request for releasing a claim whose creates were all refused.
RELEASE_RESERVE_SECONDS = 2.0

# Google's naming rules: project ids (optionally domain-scoped), region ids, workflow ids.
_PATH = re.compile(
    r"/v1/projects/(?P<project>(?:[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)+:)?[a-z][a-z0-9-]{4,28}[a-z0-9])"
    r"/locations/(?P<location>[a-z][a-z0-9-]{0,61}[a-z0-9])"
    r"/workflows/(?P<workflow>[A-Za-z](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9])?)/executions")
# https://cloud.google.com/trace/docs/trace-context: X-Cloud-Trace-Context is TRACE_ID/SPAN_ID;o=OPTIONS
# with a 32-hex-digit TRACE_ID; W3C traceparent is VERSION-TRACE_ID-PARENT_ID-FLAGS.
TRACE_CONTEXT = re.compile(r"([0-9a-fA-F]{32})(?:/.*)?", re.ASCII)
TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}", re.ASCII)
_LABEL_VALUE = re.compile(r"[a-z0-9_-]{1,63}", re.ASCII)  # Google's label value rule, non-empty
# The label keys the proxy sets (docs/proxy.md): a caller's labels never override them.
RESERVED_LABELS = frozenset({scheduled_time.SCHEDULE_TIME_LABEL, scheduled_time.RUN_DIGEST_LABEL,
                             scheduled_time.TRIGGER_LABEL, scheduled_time.JOB_LABEL,
                             claims.BACKFILL_LABEL, claims.ATTEMPT_LABEL, slots.JOB_LABEL})

request_limits.install(MAX_BODY_BYTES, (413, "INVALID_ARGUMENT", f"the body is larger than {MAX_BODY_BYTES} bytes"))


def proxy(request):
    """Entry point: always answers JSON, Google's error shape on failure, and logs one line."""
    began = time.monotonic()
    log: dict = {}
    try:
        code, payload = _handle(request, log, began)
    except ApiError as error:
        code, payload = error.code, error.body()
        # Google's messages may quote the argument: log only their code.
        message = f"Workflows API answered {error.code} {error.status}" if error.upstream else error.message
        log.update(outcome="rejected", error=error.status, message=message)
    except Exception as error:  # a bug: still Google's shape, never a traceback
        code, payload = 500, ApiError(500, "internal error in the proxy").body()
        log.update(outcome="internal_error", message=f"internal error: {type(error).__name__}")
    _write_log(request, log, code, began)
    return json.dumps(payload), code, {"Content-Type": "application/json"}


@functions_framework.errorhandler(HTTPException)
def _framework_error(error: HTTPException):
    """What the framework answers before `proxy` runs (a path its router cannot match, such as
    one with an encoded newline, or /favicon.ico) is still in Google's error shape."""
    body = ApiError(error.code or 500, f"not found: {error.description}" if error.code == 404
                    else str(error.description)).body()
    return json.dumps(body), error.code, {"Content-Type": "application/json"}


def _handle(request, log: dict, began: float) -> tuple[int, dict]:
    project, location, workflow = _route(request)
    parent = f"projects/{project}/locations/{location}/workflows/{workflow}"
    log["workflow"] = parent
    _check_allowed(project, location, workflow)
    query = _query(request)
    header_time = request.headers.get("X-CloudScheduler-ScheduleTime")
    reprocess = query.reprocess or ("none" if header_time is not None else "completed")
    log["reprocess"] = reprocess
    scheduled = None
    if header_time is not None:
        try:
            scheduled = scheduled_time.parse(header_time)
        except ValueError as error:
            raise ApiError(400, f"X-CloudScheduler-ScheduleTime: {error}") from None
    bucket = _runs_bucket()
    body = _read_json(request)
    job = request.headers.get("X-CloudScheduler-JobName")
    deadline_seconds = _seconds("UPSTREAM_DEADLINE_SECONDS", DEFAULT_DEADLINE_SECONDS)
    settled = _Request(parent=parent, zone=query.zone, zone_name=query.zone_name, reprocess=reprocess,
                       header_time=scheduled, arrival=datetime.now(timezone.utc), began=began,
                       job=scheduled_time.job_label(job) if job else "", backfill=query.backfill,
                       bucket=bucket, deadline=began + deadline_seconds,
                       create_until=began + deadline_seconds - min(RELEASE_RESERVE_SECONDS, deadline_seconds / 5),
                       lease=timedelta(seconds=deadline_seconds + _seconds(
                           "LEASE_MARGIN_SECONDS", claims.DEFAULT_LEASE_MARGIN_SECONDS)),
                       request_id=query.request_id, policy=query.policy)
    if query.request_id:
        log["requestId"] = query.request_id
    if query.dry_run:
        return _dry_run(settled, body, log)
    if isinstance(body, dict):
        element = settled.element(body)
        log["scheduleTime"] = element.schedule_time
        log.update(element.notes())
        # The job's overlap policy governs scheduled deliveries only (docs/proxy.md).
        if scheduled is None:
            execution = claims.start(element.run)
        else:
            execution = policy.start(element.run, settled.policy, _redelivery(request, parent, body))
        if execution.get("queued"):
            log.update({key: execution[key] for key in ("position", "waiter") if key in execution})
            log.update(outcome="queued", message=f"queued: {settled.policy.max_active} run(s) of the job active or earlier times waiting")
            return 200, execution
        if execution.get("skipped"):
            log.update(outcome="skipped", blockedBy=execution["blockedBy"],
                       message=f"skipped: {settled.policy.max_active} run(s) of the job active")
            return 200, execution
        log.update(outcome="started" if execution["started"] else "existing",
                   execution=execution.get("name"), message=_summary(execution))
        return 200, execution
    return _start_array(settled, _array(body, MAX_ELEMENTS), log)


def _redelivery(request, parent: str, body: dict) -> job_queue.Redelivery:
    """What the queue's waiter sends again for this delivery: Cloud Scheduler's request as it came."""
    query = request.query_string.decode("latin-1")
    return job_queue.Redelivery(f"/v1/{parent}/executions" + (f"?{query}" if query else ""),
                                request.headers.get("X-CloudScheduler-ScheduleTime", ""),
                                request.headers.get("X-CloudScheduler-JobName", ""),
                                json.dumps(body, ensure_ascii=False, separators=(",", ":")))


def _array(body, limit: int) -> list:
    if not isinstance(body, list):
        raise ApiError(400, "the body must be a JSON object or an array of objects")
    if len(body) > limit:
        raise ApiError(413, f"an array body holds at most {limit} elements")
    return body


def _start_array(settled: "_Request", body: list, log: dict) -> tuple[int, dict]:
    """One run per element, in order: {"executions": [Execution or error, ...]}, with the
    largest element error code as the status."""
    results, outcomes, worst = [], [], 200
    for item in body:
        schedule_time = None
        try:
            element = settled.element(item)
            schedule_time = element.schedule_time
            execution = claims.start(element.run)
            results.append(execution)
            outcomes.append({"scheduleTime": schedule_time, "execution": execution.get("name"),
                             "outcome": "started" if execution["started"] else "existing",
                             **element.notes()})
        except ApiError as error:
            results.append(error.body())
            outcomes.append({"scheduleTime": schedule_time, "outcome": "rejected",
                             "error": error.status, "code": error.code})
            worst = max(worst, error.code)
    log.update(outcome="array", elements=outcomes,
               message=f"{len(body)} elements, {sum(o['outcome'] == 'started' for o in outcomes)} started")
    return worst, {"executions": results}


def _dry_run(settled: "_Request", body, log: dict) -> tuple[int, dict]:
    """?dryRun=true: which runs of the body (an object, or an array of up to MAX_DRY_RUN_ELEMENTS)
    would start, in order; nothing is started or written. An element the proxy would refuse is
    answered with its error, as in a real array, and the status is the largest such code."""
    items = [body] if isinstance(body, dict) else _array(body, MAX_DRY_RUN_ELEMENTS)
    elements: list[_Element | dict] = []
    worst = 200
    for item in items:
        try:
            elements.append(settled.element(item))
        except ApiError as error:
            elements.append(error.body())
            worst = max(worst, error.code)
    verdicts = iter(preview.judge([e.run for e in elements if isinstance(e, _Element)]))
    runs = []
    for element in elements:
        if isinstance(element, _Element):
            verdict = next(verdicts)
            element = {"scheduleTime": element.schedule_time, "wouldStart": verdict.would_start,
                       "attempts": verdict.attempts}
        runs.append(element)
    starting = [run["scheduleTime"] for run in runs if run.get("wouldStart")]
    log.update(outcome="dryRun", elements=len(runs), wouldStart=len(starting),
               message=f"dry run: {len(runs)} elements, {len(starting)} would start")
    return worst, {"dryRun": True, "wouldStart": len(starting),
                   "firstToStart": starting[0] if starting else None, "runs": runs}


@dataclass(frozen=True)
class _Element:
    schedule_time: str  # as written into the argument, for the log
    run: claims.Run
    execution_shaped: bool = False
    dropped_labels: tuple[str, ...] = ()  # the caller's label keys the proxy's own replaced

    def notes(self) -> dict:
        """What the log says of the body's shape (label keys only, never values)."""
        notes: dict = {"bodyShape": "execution"} if self.execution_shaped else {}
        if self.dropped_labels:
            notes["droppedLabels"] = list(self.dropped_labels)
        return notes


@dataclass(frozen=True)
class _Request:
    """What one request settles for every body object it starts."""
    parent: str
    zone: ZoneInfo | timezone
    zone_name: str
    reprocess: str
    header_time: datetime | None
    arrival: datetime
    began: float
    job: str
    backfill: str
    bucket: str
    deadline: float
    create_until: float
    lease: timedelta
    request_id: str
    policy: policy.Policy
    claimed: dict = field(default_factory=dict)  # claims.Run.claimed_here, for every element

    def element(self, body) -> _Element:
        """One body object's run: its argument, labels and ledger record."""
        if not isinstance(body, dict):
            raise ApiError(400, "each array element must be a JSON object")
        try:
            unwrapped = execution_body.unwrap(body, _parse_argument)
        except ValueError as error:
            raise ApiError(400, str(error)) from None
        body = unwrapped.argument
        instant, trigger = self._scheduled(body)
        rendered = _render(instant, self.zone)
        rest = {key: value for key, value in body.items() if key != "scheduleTime"}
        enriched = dict(body)
        enriched["scheduleTime"] = rendered
        argument = json.dumps(enriched, ensure_ascii=False, separators=(",", ":"))
        try:
            size = len(argument.encode())
        except UnicodeEncodeError:
            raise ApiError(400, "the body holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)") from None
        if size > MAX_ARGUMENT_BYTES:
            raise ApiError(413, f"the argument with scheduleTime is {size} bytes of JSON; "
                                f"Workflows accepts at most {MAX_ARGUMENT_BYTES}")
        digest = scheduled_time.run_digest(self.parent, instant, rest)
        labels = {scheduled_time.SCHEDULE_TIME_LABEL: scheduled_time.to_label(instant),
                  scheduled_time.RUN_DIGEST_LABEL: digest,
                  scheduled_time.TRIGGER_LABEL: trigger,
                  slots.JOB_LABEL: slots.job_digest(self.parent, rest)}
        if self.job:
            labels[scheduled_time.JOB_LABEL] = self.job
        if self.backfill:
            labels[claims.BACKFILL_LABEL] = self.backfill
        labels, dropped = execution_body.merged_labels(labels, unwrapped.labels, RESERVED_LABELS)
        content = ledger.Claim(workflow=self.parent, scheduleTime=rendered, timezone=self.zone_name,
                               argument=argument, trigger=trigger, job=self.job or None,
                               backfill=self.backfill or None, attempt=0)
        return _Element(rendered, claims.Run(
            bucket=self.bucket, parent=self.parent, instant=instant, digest=digest,
            reprocess=self.reprocess, labels=labels, content=content, arrival=self.arrival, began=self.began,
            deadline=self.deadline, create_until=self.create_until, lease=self.lease,
            request_id=self.request_id, claimed_here=self.claimed, fields=unwrapped.fields),
            unwrapped.execution_shaped, tuple(dropped))

    def _scheduled(self, body: dict) -> tuple[datetime, str]:
        if self.header_time is not None:
            return self.header_time, "scheduler"
        trigger = "backfill" if self.backfill else None
        if "scheduleTime" in body:
            if not isinstance(body["scheduleTime"], str):
                raise ApiError(400, "scheduleTime must be an RFC 3339 string")
            try:
                return scheduled_time.parse(body["scheduleTime"]), trigger or "explicit"
            except ValueError as error:
                raise ApiError(400, f"scheduleTime: {error}") from None
        return self.arrival, trigger or "manual"


def _runs_bucket() -> str:
    bucket = os.environ.get("RUNS_BUCKET", "").strip()
    if not bucket:
        raise ApiError(500, "the proxy is deployed without RUNS_BUCKET, the Cloud Storage bucket of "
                            "its run ledger (docs/ledger.md), so it starts nothing")
    return bucket


def _route(request) -> tuple[str, str, str]:
    if request.method != "POST":
        raise ApiError(404, "not found: only POST /v1/projects/{project}/locations/{location}"
                            "/workflows/{workflow}/executions is served")
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.path
    raw_path = raw.split("?", 1)[0] if raw.startswith("/") else urlsplit(raw).path
    if "%" in raw_path:
        raise ApiError(400, "percent-encoded characters are not allowed in the path")
    match = _PATH.fullmatch(raw_path)
    if not match:
        raise ApiError(404, "not found: the path must be /v1/projects/{project}/locations/{location}"
                            "/workflows/{workflow}/executions with valid Google resource ids")
    return match["project"], match["location"], match["workflow"]


def _check_allowed(project: str, location: str, workflow: str) -> None:
    entries, source = _allowlist()
    wanted = (project, location, workflow)
    for entry in entries:
        if all(allowed in ("*", actual) for allowed, actual in zip(entry, wanted)):
            return
    name = f"projects/{project}/locations/{location}/workflows/{workflow}"
    if source is None:
        raise ApiError(403, f"{name} is not allowed: neither ALLOWED_WORKFLOWS nor GOOGLE_CLOUD_PROJECT "
                            "is set, so the proxy starts no workflow")
    raise ApiError(403, f"{name} is not allowed by {source}")


def _allowlist() -> tuple[list[tuple[str, ...]], str | None]:
    listed = os.environ.get("ALLOWED_WORKFLOWS", "").strip()
    if listed:  # set but empty counts as unset, so the default applies
        entries = [tuple(entry.strip().split("/")) for entry in listed.split(",")]
        return [entry for entry in entries if len(entry) == 3 and all(entry)], "ALLOWED_WORKFLOWS"
    project = os.environ.get("GOOGLE_CLOUD_PROJECT")
    if project:
        return [(project, "*", "*")], f"the default allowlist {project}/*/* (GOOGLE_CLOUD_PROJECT)"
    return [], None


class _Query(NamedTuple):
    zone: ZoneInfo | timezone
    zone_name: str
    reprocess: str | None
    backfill: str
    dry_run: bool
    request_id: str
    policy: policy.Policy


def _query(request) -> _Query:
    args = request.args
    unknown = sorted(set(args) - set(QUERY_PARAMETERS))
    if unknown:
        raise ApiError(400, f"unknown query parameter {unknown[0]!r}: only {', '.join(QUERY_PARAMETERS)} are read")
    if any(len(args.getlist(key)) > 1 for key in args):
        raise ApiError(400, "each query parameter may be given once")
    zone: ZoneInfo | timezone = timezone.utc
    zone_name = "Etc/UTC"
    if "timezone" in args:
        name = args["timezone"]
        if name not in zone_names():
            raise ApiError(400, f"timezone {name[:64]!r} is not an IANA time zone name such as Europe/Stockholm")
        zone, zone_name = ZoneInfo(name), name
    reprocess = args.get("reprocess")
    if reprocess is not None and reprocess not in REPROCESS_MODES:
        raise ApiError(400, f"reprocess must be one of {', '.join(REPROCESS_MODES)}")
    backfill = args.get("backfill", "")
    if "backfill" in args and not _LABEL_VALUE.fullmatch(backfill):
        raise ApiError(400, "backfill must be the backfill's execution id: 1 to 63 of a-z, 0-9, _ and -")
    dry_run = args.get("dryRun", "false")
    if dry_run not in ("true", "false"):
        raise ApiError(400, "dryRun must be true or false")
    request_id = args.get("requestId", "")
    if "requestId" in args and not _REQUEST_ID.fullmatch(request_id):
        raise ApiError(400, "requestId must be a UUID such as 123e4567-e89b-12d3-a456-426614174000 "
                            "(AIP-155), the same for every retry of one action")
    return _Query(zone, zone_name, reprocess, backfill, dry_run == "true", request_id.lower(),
                  policy.from_args(args))


def _read_json(request):
    """The body, at most MAX_BODY_BYTES, as JSON whatever the Content-Type; empty means {}."""
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    data = request.stream.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    if not data.strip():
        return {}
    return _parse(data, "the body")


def _parse(data: bytes | str, what: str):
    try:
        value = json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, f"{what} is not valid JSON") from None
    if _depth(value) > MAX_DEPTH:
        raise ApiError(400, f"{what} nests arrays and objects more than {MAX_DEPTH} deep")
    return value


def _parse_argument(text: str):
    """An Execution-shaped body's argument string, read by the body's own rules."""
    return _parse(text, "argument (the Execution's JSON string)")


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    """1e400 is valid JSON but overflows to inf, which json.dumps would write as Infinity."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is out of range")
    return value


def _depth(value) -> int:
    """How deeply arrays and objects nest (a scalar is 0), without recursion."""
    deepest, level = 0, [(value, 1)]
    while level:
        item, depth = level.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        if children:
            deepest = max(deepest, depth)
            level.extend((child, depth + 1) for child in children)
        elif isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
    return deepest


def _render(instant: datetime, zone) -> str:
    try:
        return scheduled_time.render(instant, zone)
    except ValueError as error:
        raise ApiError(400, f"scheduleTime cannot be written in this timezone: {error}") from None


def _seconds(name: str, default: float) -> float:
    """A setting in seconds: a number in (0, 3600), else the default."""
    try:
        seconds = float(os.environ.get(name) or default)
    except ValueError:
        seconds = default
    return seconds if 0 < seconds < 3600 else default


def _summary(execution: dict) -> str:
    verb = "started" if execution["started"] else "returned existing"
    return f"{verb} {execution.get('name', '(unnamed execution)')} ({execution.get('state', '?')})"


def _write_log(request, log: dict, code: int, began: float) -> None:
    """One JSON line for Cloud Logging. It carries no argument contents: messages the proxy
    writes never quote the body, and Google's own messages are not logged."""
    entry = {"severity": "INFO" if code < 400 else "WARNING" if code < 500 else "ERROR",
             "message": log.pop("message", ""), "httpStatus": code, **log,
             "latencyMs": round((time.monotonic() - began) * 1000, 2)}
    trace = trace_id(request.headers)
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or (log.get("workflow") or "/").split("/")[1]
    if trace and project:
        entry["logging.googleapis.com/trace"] = f"projects/{project}/traces/{trace}"
    sys.stdout.write(json.dumps(entry) + "\n")
    sys.stdout.flush()


@functools.cache
def zone_names() -> frozenset[str]:
    """IANA time zone names. Twin of zone_names in functions/range/main.py.

    available_timezones() also lists the host's own `localtime` file (whatever zone the machine
    is set to) and tzdata's `Factory` placeholder; neither is a place's time zone."""
    return frozenset(zoneinfo.available_timezones() - {"localtime", "Factory"})


def trace_id(headers: Mapping[str, str]) -> str | None:
    """The request's trace id, from X-Cloud-Trace-Context or else traceparent, in lower case.
    Twin of trace_id in functions/range/main.py: tests/test_twins.py holds both to one table."""
    match = TRACE_CONTEXT.fullmatch(headers.get("X-Cloud-Trace-Context", ""))
    if match:
        return match[1].lower()
    match = TRACEPARENT.fullmatch(headers.get("traceparent", "").strip().lower())
    return match[1] if match else None
