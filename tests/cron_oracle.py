"""Two independent oracles for the range function, written without its code.

`brute_force` scans every UTC minute of the window, reads the wall clock in the zone and applies
the DST rules literally (matching of the five fields is cronsim's). `cronsim_times` iterates
cronsim itself, the reference implementation of Debian cron the issue names.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from cronsim import CronSim

# Debian's crontab(5) table.
ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@hourly": "0 * * * *"}
MINUTE = timedelta(minutes=1)


def expand_alias(expr: str) -> str:
    return ALIASES.get(expr.strip().lower(), expr)


def brute_force(expr: str, zone: str, start: datetime, stop: datetime) -> list[str]:
    """Times in [start, stop) (aware datetimes on whole minutes), as RFC 3339 strings."""
    expr = expand_alias(expr)
    tz = ZoneInfo(zone)
    spec = CronSim(expr, start)  # only for its parsed fields and day matching
    minute_field, hour_field = expr.split()[:2]
    fixed = not minute_field.startswith("*") and not hour_field.startswith("*")

    def matches(wall: datetime) -> bool:
        return (wall.minute in spec.minutes and wall.hour in spec.hours
                and wall.month in spec.months and spec.match_day(wall.date()))

    out = []
    instant = start.astimezone(timezone.utc)  # step real minutes, not wall minutes
    while instant < stop:
        local = instant.astimezone(tz)
        wall = local.replace(tzinfo=None)
        if matches(wall) and (not fixed or local.fold == 0):
            out.append(local.isoformat())
        elif fixed:
            # A gap just ended at this minute: fire here if a skipped wall time matched.
            previous = (instant - MINUTE).astimezone(tz).replace(tzinfo=None, fold=0)
            skipped = previous + MINUTE
            while skipped < wall:
                if matches(skipped):
                    out.append(local.isoformat())
                    break
                skipped += MINUTE
        instant += MINUTE
    return out


def cronsim_times(expr: str, zone: str, start: datetime, stop: datetime) -> list[str]:
    tz = ZoneInfo(zone)
    out = []
    for t in CronSim(expand_alias(expr), (start - timedelta(seconds=1)).astimezone(tz)):
        if t >= stop:
            break
        if t >= start:
            out.append(t.isoformat())
    return out
