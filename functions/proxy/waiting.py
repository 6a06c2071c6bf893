"""overlap=queue: a scheduled time that finds no free slot waits in its own request, in a
bounded queue, and starts as soon as a slot frees, oldest scheduled time first
(docs/proxy.md, "Overlap and failure policies").

The queue is one object per waiting time, runs/_queue/P/L/W/JOB_DIGEST/INSTANT/RUN_DIGEST,
written with ifGenerationMatch=0 and deleted when its request stops waiting. Names sort by
instant, so the first live one is the oldest time: only it tries to take a slot, which keeps
the order. A record older than its lease is a waiter that died, and is passed over.
"""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import ledger
import slots
import storage_api
import workflows_api
from storage_api import PreconditionFailed

QUEUE = "runs/_queue"
MAX_QUEUED = 10          # times waiting per job; past it a time is skipped, and says so
POLL_SECONDS = 0.5       # how often the oldest waiter looks for a free slot
START_RESERVE = 10.0     # seconds of the request's deadline kept for starting the run


def prefix(workflow: str, job: str) -> str:
    return f"{QUEUE}/{ledger.workflow_prefix(workflow)[len(ledger.PREFIX) + 1:]}{job}/"


def wait(run, max_active: int, blocked: "slots.Blocked") -> "slots.Slot | slots.Blocked | None":
    """Wait for a slot of the run's job: the Slot taken; None when a slot turned out to be held for
    this very run; Blocked (by `blocked.by` and why) when the queue is full or the wait bound passed."""
    job = run.labels[slots.JOB_LABEL]
    mine = f"{prefix(run.parent, job)}{ledger.instant_text(run.instant)}/{run.digest}"
    if len(_live(run, job)) >= MAX_QUEUED:
        return slots.Blocked(blocked.by + (f"(the queue is full: {MAX_QUEUED} times waiting)",))
    record = None
    try:
        record = _retrying(run, lambda: storage_api.insert_object(
            run.bucket, mine, b"{}", {"lease": f"{run.lease.total_seconds():g}"}, run.deadline, "0"))
    except PreconditionFailed:
        pass  # this time waits already (a repeated delivery): wait beside it, its claim decides
    try:
        while time.monotonic() + POLL_SECONDS < run.create_until - START_RESERVE:
            time.sleep(POLL_SECONDS)
            waiting = _live(run, job)
            if waiting and waiting[0] != mine:
                continue  # an older time goes first
            slot = slots.acquire(run.bucket, run.parent, job, run.prefix, max_active, run.lease, run.deadline)
            if not isinstance(slot, slots.Blocked):
                return slot
            blocked = slot
        return slots.Blocked(blocked.by + ("(no slot freed within the queue's wait bound)",))
    finally:
        if record is not None:
            try:
                _retrying(run, lambda: storage_api.delete_object(
                    run.bucket, mine, run.deadline, str(record["generation"]), str(record["metageneration"])))
            except PreconditionFailed:
                pass


def _live(run, job: str) -> list[str]:
    """The names of the job's waiting times whose waiters may still be alive, oldest time first."""
    listing = _retrying(run, lambda: storage_api.list_objects_dated(run.bucket, prefix(run.parent, job), run.deadline))
    now = listing.server_time or datetime.now(timezone.utc)
    live = []
    for item in listing.value:
        created = datetime.fromisoformat(item["timeCreated"].replace("Z", "+00:00"))
        lease = timedelta(seconds=float((item.get("metadata") or {}).get("lease") or run.lease.total_seconds()))
        if now - created <= lease:
            live.append(item["name"])
    return sorted(live)


def _retrying(run, attempt):
    return workflows_api.with_retries(attempt, run.deadline)
