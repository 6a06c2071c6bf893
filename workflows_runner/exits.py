"""wfr's exit statuses, one table for every command (docs/cli.md, "Exit status").

    0  success (for status: every time succeeded or was skipped by its job's overlap policy; for a backfill: every time succeeded or skipped)
    1  an error: bad input, a refused or failed call, an unreachable API
    2  bad usage (argparse)
    3  a time failed or was cancelled; a backfill's outcome is failed or error
    4  a time is missing (none failed)
    5  times are still pending: running, or queued for a slot of their job (none failed or missing)
    130 Ctrl-C (a followed backfill: cancelled; detaching is 0)
"""
from __future__ import annotations

from typing import Mapping

OK, ERROR, USAGE, FAILED, MISSING, RUNNING, INTERRUPTED = 0, 1, 2, 3, 4, 5, 130


def of_totals(totals: Mapping[str, int]) -> int:
    """A window's exit status from its totals (status.STATES): the worst state decides."""
    if totals.get("failed") or totals.get("cancelled"):
        return FAILED
    if totals.get("missing"):
        return MISSING
    if totals.get("running") or totals.get("queued"):  # both pending: a queued time will start or be skipped
        return RUNNING
    return OK
