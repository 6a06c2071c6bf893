"""`wfr alerts`: the audit's alert records, newest first (docs/alerts.md; the JSON is a contract).

Exit status: 0 when none of those listed is open, 3 (exits.FAILED) when some are.
"""
from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from . import alerts, exits
from .commands import connect
from .errors import WfrError
from .identity import parse_instant


def alerts_(args: argparse.Namespace, console: Console) -> int:
    since = None
    if args.since:
        try:
            since = parse_instant(args.since)
        except ValueError:
            raise WfrError(f"--since must be an RFC 3339 date-time with an offset, e.g. 2026-03-01T00:00:00Z; "
                           f"got {args.since!r}") from None
    cloud = connect(args)
    job = cloud.target.job_name(args.job) if args.job else None
    found = [record.alert for record in alerts.records(cloud)]
    found = alerts.newest_first(a for a in found if (job is None or a.job == job)
                                and (since is None or _instant(a.raisedAt) >= since))
    if args.format == "json":
        print(json.dumps([alert.fields() for alert in found], indent=2))
    else:
        _table(console, found)
    return exits.FAILED if any(alert.open for alert in found) else exits.OK


def _instant(text: str):
    try:
        return parse_instant(text)
    except ValueError:
        return parse_instant("1970-01-01T00:00:00Z")   # a record written by hand sorts as oldest


def _table(console: Console, found: list[alerts.Alert]) -> None:
    if not found:
        console.print("No alerts.")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("KIND", "JOB", "SCHEDULED", "ATTEMPT", "RAISED", "RESOLVED", "EXECUTION / ERROR"):
        table.add_column(column)
    for alert in found:
        detail = alert.error or (alert.execution or "").rsplit("/", 1)[-1]
        table.add_row(alert.kind, alert.job.rsplit("/", 1)[-1], alert.scheduleTime,
                      "" if alert.attempt is None else str(alert.attempt), alert.raisedAt,
                      alert.resolvedAt or "open", detail)
    console.print(table)
    still = sum(alert.open for alert in found)
    console.print(f"{len(found)} alerts, {still} open")
