"""Alert records in the runs bucket (docs/alerts.md is the contract): their names, what they hold,
how they are raised exactly once and resolved once, and how wfr lists them.

    alerts/PROJECT/LOCATION/WORKFLOW/INSTANT/DIGEST/due              missing or late
    alerts/PROJECT/LOCATION/WORKFLOW/INSTANT/DIGEST/failed-ATTEMPT   a failed attempt
    alerts/PROJECT/LOCATION/WORKFLOW/INSTANT/DIGEST/paused           the job was paused

INSTANT and DIGEST are the run ledger's (docs/ledger.md), so a window's alerts are one ranged
listing, like its runs. Missing and late share one name: a time raises at most one of them, and
the create (ifGenerationMatch=0) keeps it so even when two passes judge the same time at once.
The fields live in the object's custom metadata, so a listing shows them without reading objects.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Iterable

from . import ledger
from .cloud import Cloud, MetadataPatch
from .errors import ApiError
from .identity import parse_instant, run_digests
from .status import Status

PREFIX = "alerts/"
KINDS = ("missing", "late", "failed", "paused")
# Cloud Logging severities (LogEntry.severity): a time that never ran or failed is an ERROR, a
# late one a WARNING; a resolution is INFO.
SEVERITY = {"missing": "ERROR", "late": "WARNING", "failed": "ERROR", "paused": "ERROR"}
_NAME = re.compile(r"alerts/([^/]+)/([^/]+)/([^/]+)/([^/]+)/([0-9a-f]{32})/(due|failed-[0-9]{6}|paused)", re.ASCII)


@dataclass(frozen=True)
class Alert:
    """One alert, as `wfr alerts --format json` prints it and the log line carries it."""
    kind: str                 # one of KINDS
    job: str                  # the Scheduler job's full name
    workflow: str             # projects/P/locations/L/workflows/W
    scheduleTime: str         # the scheduled time (RFC 3339, in the job's zone)
    attempt: int | None       # the failed attempt's number (failed only)
    execution: str | None     # the execution concerned, if any
    error: str | None         # the failed execution's error, first 1,000 characters
    raisedAt: str             # RFC 3339, UTC
    resolvedAt: str | None = None

    @property
    def open(self) -> bool:
        return self.resolvedAt is None

    def fields(self) -> dict[str, Any]:
        return asdict(self)


def object_name(alert: Alert, digest: str) -> str:
    """The record's name: derived from (workflow, instant, run digest, kind, attempt for failures)."""
    _, project, _, location, _, workflow_id = alert.workflow.split("/")
    tail = {"missing": "due", "late": "due", "paused": "paused"}.get(alert.kind) or f"failed-{alert.attempt:06d}"
    instant = ledger.instant_key(parse_instant(alert.scheduleTime))
    return f"{PREFIX}{project}/{location}/{workflow_id}/{instant}/{digest}/{tail}"


def workflow_prefix(workflow: str) -> str:
    _, project, _, location, _, workflow_id = workflow.split("/")
    return f"{PREFIX}{project}/{location}/{workflow_id}/"


def _metadata(alert: Alert) -> dict[str, str]:
    """Custom metadata values are strings; an absent field is left out."""
    return {key: str(value) for key, value in asdict(alert).items() if value is not None}


def _alert(item: dict[str, Any]) -> Alert | None:
    """A listed object -> Alert; None for an object that is not an alert record."""
    metadata = item.get("metadata") or {}
    if not _NAME.fullmatch(item.get("name", "")) or metadata.get("kind") not in KINDS:
        return None
    attempt = metadata.get("attempt")
    return Alert(kind=metadata["kind"], job=metadata.get("job", ""), workflow=metadata.get("workflow", ""),
                 scheduleTime=metadata.get("scheduleTime", ""),
                 attempt=int(attempt) if attempt and attempt.isdigit() else None,
                 execution=metadata.get("execution"), error=metadata.get("error"),
                 raisedAt=metadata.get("raisedAt", ""), resolvedAt=metadata.get("resolvedAt"))


@dataclass(frozen=True)
class Record:
    """An alert record as listed: its alert, object name and metageneration (for resolving)."""
    name: str
    alert: Alert
    metageneration: str


def records(cloud: Cloud, prefix: str = PREFIX, first: datetime | None = None,
            last: datetime | None = None) -> list[Record]:
    """Alert records under `prefix` (a workflow's, or all), those of instants first..last when
    given: one ranged listing, 1,000 records a call."""
    start = prefix + ledger.instant_key(first) if first else None
    stop = prefix + ledger.instant_key(last + timedelta(microseconds=1)) if last else None
    found = []
    for item in cloud.list_objects(prefix, start_offset=start, end_offset=stop):
        alert = _alert(item)
        if alert is not None:
            found.append(Record(item["name"], alert, str(item.get("metageneration", ""))))
    return found


def raise_once(cloud: Cloud, alert: Alert, digest: str) -> bool:
    """Create the record unless one of its name exists (ifGenerationMatch=0): True when this call
    created it, so only that caller logs it."""
    body = json.dumps(alert.fields(), separators=(",", ":")).encode()
    return cloud.insert_object(object_name(alert, digest), body, _metadata(alert))


def resolve(cloud: Cloud, found: Iterable[Record], when: str) -> list[Alert]:
    """Mark open records resolved at `when` (ifMetagenerationMatch): the alerts this call
    resolved; a record another pass resolved first is not among them, so each is logged once."""
    pending = [record for record in found if record.alert.open]
    written = cloud.patch_metadata([MetadataPatch(r.name, {"resolvedAt": when}, r.metageneration) for r in pending])
    return [replace(record.alert, resolvedAt=when) for record, ok in zip(pending, written) if ok]


def annotate(cloud: Cloud, status: Status) -> Status:
    """`status` with each time's open alert kinds (TimeStatus.alerts), from one ranged listing of
    the window's alert records, matched by the run digest; unchanged where this principal may not
    list them (403) or the window is empty."""
    if not status.times:
        return status
    instants = [t.instant for t in status.times]
    try:
        found = records(cloud, workflow_prefix(status.workflow), instants[0], instants[-1])
    except ApiError as error:
        if error.code in (403, 404):
            return status
        raise
    kinds: dict[str, list[str]] = {}
    for record in found:
        if record.alert.open:
            head = record.name.rsplit("/", 1)[0]   # .../INSTANT/DIGEST
            kinds.setdefault(head, []).append(record.alert.kind)
    prefix = workflow_prefix(status.workflow)
    times = [replace(t, alerts=tuple(sorted(set(kinds.get(f"{prefix}{ledger.instant_key(t.instant)}/{digest}", ())))))
             for t, digest in zip(status.times, run_digests(status.workflow, instants, status.params))]
    return Status(status.workflow, status.window, status.params, times)


def newest_first(alerts: Iterable[Alert]) -> list[Alert]:
    return sorted(alerts, key=lambda a: (a.raisedAt, a.scheduleTime, a.kind, a.attempt or 0), reverse=True)


def log_entry(alert: Alert, event: str) -> dict[str, Any]:
    """One structured log line (https://cloud.google.com/logging/docs/structured-logging):
    severity and message are read by Cloud Logging, the other fields land in jsonPayload, where
    the log-based metric counts `event="alert"` by kind and job."""
    job = alert.job.rsplit("/", 1)[-1]
    if event == "alert":
        what = {"missing": "never ran", "late": "is late", "failed": f"attempt {alert.attempt} failed",
                "paused": "was paused"}[alert.kind]
        return {"severity": SEVERITY[alert.kind], "message": f"{alert.kind}: job {job}: {alert.scheduleTime} {what}",
                "event": event, **alert.fields()}
    return {"severity": "INFO", "message": f"resolved: job {job}: {alert.kind} alert for {alert.scheduleTime}",
            "event": event, **alert.fields()}
