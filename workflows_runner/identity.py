"""A run's identity as the proxy defines it: the run's argument, the schedule_time label and the
run digest.

Twin of functions/proxy/scheduled_time.py (to_label, run_digest) and of
functions/proxy/execution_body.py (is_execution, the argument of unwrap), which deploy alone and
so cannot be imported; tests/test_wfr_units.py checks the digests against one table, and
tests/test_run_identity.py feeds the same bodies to the proxy and to wfr and compares digests.
The contract is the proxy's label table and its Execution-shaped bodies (docs/proxy.md).
"""
from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from typing import Any

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


# The Execution fields a caller may set (twin of execution_body.EXECUTION_FIELDS).
EXECUTION_FIELDS = frozenset({"argument", "labels", "callLogLevel", "executionHistoryLevel",
                              "disableConcurrencyQuotaOverflowBuffering"})


def run_argument(body: dict[str, Any]) -> dict[str, Any]:
    """The argument a body object makes a run of, as the proxy reads it: a body shaped as the
    Execution resource (every key an EXECUTION_FIELDS one, `argument` a string among them, as jobs
    migrated from calling Workflows directly send) makes a run of its decoded argument; any other
    body is the argument itself. ValueError when an Execution body's argument is not the JSON of
    an object (the proxy answers such a body 400)."""
    if not (isinstance(body.get("argument"), str) and body.keys() <= EXECUTION_FIELDS):
        return body
    text = body["argument"]
    argument = json.loads(text) if text.strip() else {}
    if not isinstance(argument, dict):
        raise ValueError("an Execution-shaped body's argument must be the JSON of an object")
    return argument


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
