"""A Scheduler job's per-job settings, read from the query of its URI (the job is their one
source of truth; docs/alerts.md is the contract):

    PROXY/v1/projects/P/locations/L/workflows/W/executions?timezone=..&reprocess=..&deadline=PT2H
        &since=2026-01-01T00:00:00Z&grace=PT10M&lookback=P2D&overlap=skip&maxActive=1&pauseAfter=3

(the overlap and failure settings: docs/proxy.md, "Overlap and failure policies"; the proxy's
reader is functions/proxy/policy.py, held to this one by tests/test_job_settings.py)

This is the one reader on wfr's side (wfr, the grid and the audit function); the proxy reads the
same query on each delivery. deploy.sh and the Pulumi ScheduledWorkflow write it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .errors import WfrError
from .identity import parse_instant

DEFAULT_GRACE = timedelta(minutes=10)
DEFAULT_LOOKBACK = timedelta(days=2)
REPROCESS = ("none", "failed", "completed")
OVERLAP = ("allow", "skip", "queue", "replace")
SETTINGS = ("timezone", "reprocess", "deadline", "since", "grace", "lookback", "overlap", "maxActive", "pauseAfter")
MAX_ACTIVE_LIMIT = PAUSE_AFTER_LIMIT = 100  # functions/proxy/policy.py's bounds
_COUNT = re.compile(r"[1-9][0-9]{0,2}", re.ASCII)
# ISO 8601 durations in weeks, days, hours, minutes and seconds (deploy.sh's DURATION_RE, the
# backfill's `lookback`): no years or months, whose length varies.
_DURATION = re.compile(r"P(?:([0-9]+)W)?(?:([0-9]+)D)?(?:T(?:([0-9]+)H)?(?:([0-9]+)M)?(?:([0-9]+)S)?)?", re.ASCII)
_PATH = re.compile(r"/v1/(projects/[^/]+/locations/[^/]+/workflows/[^/]+)/executions", re.ASCII)


def parse_duration(text: str, what: str) -> timedelta:
    match = _DURATION.fullmatch(text)
    if not match or not any(match.groups()) or text.endswith("T"):
        raise WfrError(f"{what} must be an ISO 8601 duration in weeks, days, hours, minutes or seconds "
                       f"such as PT2H or P1D, got {text!r}")
    weeks, days, hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)


@dataclass(frozen=True)
class JobSettings:
    """What a job's URI says about the runs it starts and how they are audited."""
    workflow: str                       # projects/P/locations/L/workflows/W
    timezone: str = "Etc/UTC"           # the zone the proxy writes scheduleTime in
    reprocess: str | None = None        # None: the proxy's default for a delivery (none)
    deadline: timedelta | None = None   # a time is late when not succeeded by its time + deadline
    since: datetime | None = None       # the first time to account for; None: the job's userUpdateTime
    grace: timedelta = DEFAULT_GRACE    # a time is missing when nothing claimed it by its time + grace
    lookback: timedelta = DEFAULT_LOOKBACK  # how far back an audit pass looks
    overlap: str = "allow"              # what a delivery does while maxActive runs are active
    max_active: int = 0                 # 0 with overlap=allow (no limit); else 1 by default
    pause_after: int = 0                # pause the job after this many failed times in a row; 0: never

    def first_time(self, job: dict[str, Any]) -> datetime | None:
        """`since`, or else when the job was created or last changed (userUpdateTime), so a new
        job does not alert for its past; None when neither is known."""
        if self.since is not None:
            return self.since
        try:
            return parse_instant(job.get("userUpdateTime") or "")
        except ValueError:
            return None


def targets(uri: str, proxy_url: str) -> bool:
    """Whether a job's URI starts workflows through the proxy at `proxy_url`."""
    return uri.startswith(proxy_url.rstrip("/") + "/v1/")


def from_uri(uri: str) -> JobSettings:
    """The settings of a job whose URI targets the proxy. Raises WfrError naming what is wrong."""
    parts = urlsplit(uri)
    match = _PATH.fullmatch(parts.path)
    if not match:
        raise WfrError(f"{uri!r} is not a proxy URL .../v1/projects/P/locations/L/workflows/W/executions")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise WfrError(f"the query of {uri!r} is malformed") from None
    unknown = sorted(set(query) - set(SETTINGS))
    if unknown:
        raise WfrError(f"{unknown[0]!r} is not a job setting: a job's URI takes {', '.join(SETTINGS)}")
    repeated = [key for key, values in query.items() if len(values) > 1]
    if repeated:
        raise WfrError(f"{repeated[0]!r} is given more than once in {uri!r}")
    value = {key: values[0] for key, values in query.items()}
    if "reprocess" in value and value["reprocess"] not in REPROCESS:
        raise WfrError(f"reprocess must be one of {', '.join(REPROCESS)}, got {value['reprocess']!r}")
    since = None
    if "since" in value:
        try:
            since = parse_instant(value["since"])
        except ValueError:
            raise WfrError(f"since must be an RFC 3339 date-time with an offset, got {value['since']!r}") from None
    overlap = value.get("overlap", "allow")
    if overlap not in OVERLAP:
        raise WfrError(f"overlap must be one of {', '.join(OVERLAP)}, got {overlap!r}")
    if "maxActive" in value and overlap == "allow":
        raise WfrError("maxActive applies only with overlap=skip, queue or replace")
    max_active = _count(value, "maxActive", MAX_ACTIVE_LIMIT) or (0 if overlap == "allow" else 1)
    return JobSettings(
        workflow=match[1], timezone=value.get("timezone") or "Etc/UTC", reprocess=value.get("reprocess"),
        deadline=parse_duration(value["deadline"], "deadline") if "deadline" in value else None,
        since=since,
        grace=parse_duration(value["grace"], "grace") if "grace" in value else DEFAULT_GRACE,
        lookback=parse_duration(value["lookback"], "lookback") if "lookback" in value else DEFAULT_LOOKBACK,
        overlap=overlap, max_active=max_active, pause_after=_count(value, "pauseAfter", PAUSE_AFTER_LIMIT))


def _count(value: dict[str, str], name: str, limit: int) -> int:
    """A count setting, 0 when absent."""
    if name not in value:
        return 0
    if not _COUNT.fullmatch(value[name]) or int(value[name]) > limit:
        raise WfrError(f"{name} must be a whole number from 1 to {limit}, got {value[name]!r}")
    return int(value[name])


def of_job(job: dict[str, Any]) -> JobSettings:
    """The settings of a Scheduler job resource (its httpTarget.uri)."""
    return from_uri(job.get("httpTarget", {}).get("uri", ""))
