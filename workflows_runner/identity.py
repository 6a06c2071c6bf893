"""A run's identity as the proxy defines it: the schedule_time label and the run digest.

Twin of functions/proxy/scheduled_time.py (to_label, run_digest), which deploys alone and so
cannot be imported; tests/test_wfr_units.py checks both against one table. The contract is the
proxy's label table (docs/proxy.md).
"""
from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone

_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})",
                      re.ASCII)


def parse_instant(text: str) -> datetime:
    """An RFC 3339 date-time with its offset -> an aware UTC datetime (digits past microseconds
    dropped). Raises ValueError."""
    if not _RFC3339.fullmatch(text):
        raise ValueError(f"not an RFC 3339 date-time with an offset: {text!r}")
    head, dot, rest = text.partition(".")
    if dot:
        digits = re.match(r"[0-9]+", rest, re.ASCII).group()
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest[len(digits):]}"
    return datetime.fromisoformat(text.replace("z", "Z").replace("t", "T")).astimezone(timezone.utc)


def to_label(instant: datetime) -> str:
    """UTC instant -> schedule_time label, e.g. 2019-10-12t07-20-50-520z."""
    utc = instant.astimezone(timezone.utc)
    fraction = ""
    if utc.microsecond:
        fraction = f"-{utc.microsecond // 1000:03d}" if utc.microsecond % 1000 == 0 else f"-{utc.microsecond:06d}"
    return f"{utc:%Y-%m-%dt%H-%M-%S}{fraction}z"


def run_digest(workflow: str, instant: datetime, argument: dict) -> str:
    return run_digests(workflow, [instant], argument)[0]


def run_digests(workflow: str, instants: list[datetime], argument: dict) -> list[str]:
    """32 hex digits per instant: SHA-256 of the canonical JSON (sorted keys, compact, ASCII) of
    {"argument", "scheduleTime": its label, "workflow"}. Sorted keys put them in that order, so the
    argument's JSON is written once for every instant."""
    head = '{"argument":' + json.dumps(argument, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    tail = ',"workflow":' + json.dumps(workflow, ensure_ascii=True) + "}"
    return [hashlib.sha256(f'{head},"scheduleTime":"{to_label(instant)}"{tail}'.encode()).hexdigest()[:32]
            for instant in instants]


_LABEL = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})t([0-9]{2})-([0-9]{2})-([0-9]{2})(?:-([0-9]{3}|[0-9]{6}))?z", re.ASCII)


def from_label(value: str) -> datetime:
    match = _LABEL.fullmatch(value)
    if not match:
        raise ValueError(f"not a schedule_time label value: {value!r}")
    *fields, fraction = match.groups()
    return datetime(*map(int, fields), int((fraction or "0").ljust(6, "0")), timezone.utc)
