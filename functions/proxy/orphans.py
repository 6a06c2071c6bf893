"""Two executions of one attempt: the one the ledger records is kept, the other cancelled, loudly.

The ledger's fencing (docs/ledger.md) makes this impossible while its assumptions hold (a create
lands within the lease's margin after its claimant's deadline). When one is broken anyway, every
actor that sees a second execution with the same run and attempt labels cancels it and logs a
WARNING naming both, so that the attempt still runs once to its end.
"""
from __future__ import annotations

from urllib.parse import quote

import log_lines
import workflows_api
from workflows_api import ApiError


def keep_one(executions: list[dict], recorded: str | None, deadline: float, seen_by: str) -> dict | None:
    """Of the executions carrying one attempt's labels, the one to keep: the ledger's (`recorded`)
    when it is among them, else the oldest (`executions` come oldest first). The others are
    cancelled and logged."""
    if not executions:
        return None
    kept = next((e for e in executions if e.get("name") == recorded), executions[0])
    for other in executions:
        if other is not kept:
            cancel(other.get("name", ""), kept.get("name", ""), deadline, seen_by)
    return kept


def cancel(orphan: str, kept: str | None, deadline: float, seen_by: str) -> None:
    """Cancel `orphan` (a second execution of an attempt whose record is `kept`) and say so."""
    outcome = "cancelled"
    try:
        workflows_api.with_retries(lambda: workflows_api.call(
            "POST", f"/v1/{quote(orphan, safe='/:')}:cancel", deadline, json_body=b"{}"), deadline)
    except ApiError as error:
        # 400 FAILED_PRECONDITION: it ended already; anything else: it may still run.
        outcome = "ended already" if error.code == 400 else f"not cancelled ({error.code} {error.status})"
    log_lines.warning(f"two executions of one attempt: kept {kept}, {outcome} {orphan}",
                      event="orphanExecution", kept=kept, orphan=orphan, outcome=outcome, seenBy=seen_by)
