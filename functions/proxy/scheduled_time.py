"""The scheduled time of a run: parsing it, writing it in a zone, and the labels that find the run.

The label encoding and the run digest are a contract (the backfill and anyone searching runs rely
on them): they are defined here only and documented in docs/proxy.md.
"""
from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone, tzinfo

SCHEDULE_TIME_LABEL = "schedule_time"
RUN_DIGEST_LABEL = "run_digest"
TRIGGER_LABEL = "trigger"
JOB_LABEL = "scheduler_job"

# RFC 3339 date-time; [0-9] rather than \d, which also matches other scripts' digits.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))")
_LABEL = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})t([0-9]{2})-([0-9]{2})-([0-9]{2})(?:-([0-9]{3}|[0-9]{6}))?z")


def parse(text: str) -> datetime:
    """Any RFC 3339 date-time -> the instant as an aware UTC datetime (digits past microseconds
    are dropped). Raises ValueError."""
    match = _RFC3339.fullmatch(text)
    if not match:
        raise ValueError("not an RFC 3339 date-time such as 2019-10-12T07:20:50.52Z")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    offset = timedelta()
    if sign:
        if int(off_h) > 23 or int(off_m) > 59:
            raise ValueError("offset out of range")
        offset = timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == "-" else 1)
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        local = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                         micro, timezone(offset))
        return local.astimezone(timezone.utc)
    except (ValueError, OverflowError) as error:
        raise ValueError(f"not a valid date-time: {error}") from None


def render(instant: datetime, zone: tzinfo) -> str:
    """The instant as RFC 3339 with the zone's numeric offset at that instant; fractional
    seconds only when non-zero. Raises ValueError when the zone cannot express it."""
    try:
        local = instant.astimezone(zone)
    except (ValueError, OverflowError) as error:
        raise ValueError(f"the time is out of range in this zone: {error}") from None
    offset = local.utcoffset() or timedelta()
    if offset % timedelta(minutes=1):
        # Old local mean times (e.g. +00:53:28) have no RFC 3339 form.
        raise ValueError("the zone's offset at this time is not a whole number of minutes")
    sign = "-" if offset < timedelta() else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return (f"{local.year:04d}-{local.month:02d}-{local.day:02d}T"
            f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}{_fraction(local, '.')}"
            f"{sign}{minutes // 60:02d}:{minutes % 60:02d}")


def to_label(instant: datetime) -> str:
    """UTC instant -> label value, e.g. 2019-10-12t07-20-50-520z (milliseconds, or microseconds
    when needed; no fraction when zero). Reversible by from_label."""
    utc = instant.astimezone(timezone.utc)
    return (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}t"
            f"{utc.hour:02d}-{utc.minute:02d}-{utc.second:02d}{_fraction(utc, '-', milli=True)}z")


def from_label(value: str) -> datetime:
    match = _LABEL.fullmatch(value)
    if not match:
        raise ValueError(f"not a {SCHEDULE_TIME_LABEL} label value")
    *fields, fraction = match.groups()
    micro = int((fraction or "0").ljust(6, "0"))
    return datetime(*map(int, fields), micro, timezone.utc)


def run_digest(workflow: str, instant: datetime, argument: dict) -> str:
    """32 hex digits identifying a run: SHA-256 of canonical JSON (sorted keys, compact) of the
    workflow's full name, the scheduled time's label value and the argument without scheduleTime."""
    identity = {"argument": argument, "scheduleTime": to_label(instant), "workflow": workflow}
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def job_label(job_name: str) -> str:
    """X-CloudScheduler-JobName -> a valid label value (last path segment, lowercase, 63 chars)."""
    job_id = job_name.rsplit("/", 1)[-1].lower()
    return re.sub(r"[^a-z0-9_-]", "-", job_id)[:63]


def _fraction(moment: datetime, mark: str, milli: bool = False) -> str:
    if not moment.microsecond:
        return ""
    if milli and moment.microsecond % 1000 == 0:
        return f"{mark}{moment.microsecond // 1000:03d}"
    digits = f"{moment.microsecond:06d}"
    return mark + (digits if milli else digits.rstrip("0"))
