"""overlap=queue: the queue of a job's scheduled times waiting for a free slot, in the runs
bucket, and the waiters that deliver them again (docs/proxy.md, "Overlap and failure policies").

A waiting time is two objects: its ledger attempt 1 in state WAITING (what `wfr status` shows as
`queued`), and a queue entry runs/_queue/P/L/W/JOB_DIGEST/INSTANT/RUN_DIGEST, both written with
ifGenerationMatch=0. Entry names sort by scheduled time, so the first live one is the oldest:
only it may take a slot, which keeps the order. Each waiting time has a waiter, an execution of
workflows/queue.yaml, that delivers the time to the proxy again every QUEUE_POLL_SECONDS, as
Cloud Scheduler did, until the proxy starts it or skips it. Each delivery of a waiting time
touches its entry (its `updated`); an entry not touched for STALE_POLLS polls has lost its
waiter: it is passed over, and its time recorded as skipped, so a dead waiter holds no queue.

This module is the queue's storage and its waiters; policy.py decides what a delivery does.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import ledger
import log_lines
import slots
import storage_api
import workflows_api
from storage_api import PreconditionFailed
from workflows_api import ApiError

QUEUE = "runs/_queue"
MAX_QUEUED = 10            # times waiting per job; past it a time is skipped, and says so
DEFAULT_POLL_SECONDS = 20  # on Google a time starts at most two polls (40 s) after its slot freed
DEFAULT_MAX_WAIT_SECONDS = 24 * 3600  # past it a waiting time is skipped: its waiter stays far
                                      # inside the 100,000 steps of one execution (3 per poll)
STALE_POLLS = 3            # polls missed before an entry's waiter counts as gone, on top of
                           # one whole delivery (the request's deadline): a slow one is not death
WAITER_LABEL = "queued_run"  # the waiter's label: the run digest it delivers


@dataclass(frozen=True)
class Entry:
    name: str
    generation: str
    metageneration: str
    created: datetime
    touched: datetime
    run: str  # the run's ledger prefix


@dataclass(frozen=True)
class Redelivery:
    """What the waiter sends again: the delivery's path and query, Cloud Scheduler's two headers,
    and the body as JSON text (sent as bytes, so its values reach the proxy exactly as they came)."""
    path: str
    schedule_time: str
    job_name: str
    body: str


def poll_seconds() -> float:
    return _setting("QUEUE_POLL_SECONDS", DEFAULT_POLL_SECONDS)


def max_wait() -> timedelta:
    return timedelta(seconds=_setting("QUEUE_MAX_WAIT_SECONDS", DEFAULT_MAX_WAIT_SECONDS))


def waiter_workflow() -> str:
    """The waiter's workflow, projects/P/locations/L/workflows/W (deploy.sh sets QUEUE_WORKFLOW)."""
    name = os.environ.get("QUEUE_WORKFLOW", "").strip()
    if not name:
        raise ApiError(500, "overlap=queue needs the queue's waiter workflow, and the proxy is deployed "
                            "without QUEUE_WORKFLOW (docs/deploy.md); nothing was started")
    return name


def prefix(workflow: str, job: str) -> str:
    return f"{QUEUE}/{ledger.workflow_prefix(workflow)[len(ledger.PREFIX) + 1:]}{job}/"


def entry_name(run) -> str:
    return f"{prefix(run.parent, run.labels[slots.JOB_LABEL])}{ledger.instant_text(run.instant)}/{run.digest}"


def stale_after(run) -> timedelta:
    """How long an entry may go untouched before its waiter counts as gone."""
    return timedelta(seconds=STALE_POLLS * poll_seconds() + (run.deadline - run.began))


def entries(run) -> tuple[list[Entry], datetime]:
    """The job's waiting times whose waiters are alive, oldest time first, and Cloud Storage's
    clock. Entries whose waiters are gone are abandoned on the way (their times skipped)."""
    listing = _retrying(run, lambda: storage_api.list_objects_dated(
        run.bucket, prefix(run.parent, run.labels[slots.JOB_LABEL]), run.deadline))
    now = listing.server_time or datetime.now(timezone.utc)
    live = []
    for item in listing.value:
        entry = _entry(item)
        if now - entry.touched <= stale_after(run):
            live.append(entry)
        else:
            _abandon(run, entry)
    return sorted(live, key=lambda e: e.name), now


def enqueue(run, position: int, redelivery: Redelivery) -> dict:
    """Write the time's entry and start its waiter: the queued answer. The ledger's WAITING
    attempt is written already (policy.py), so at most one delivery of the time gets here."""
    try:
        entry = _entry(_retrying(run, lambda: storage_api.insert_object(
            run.bucket, entry_name(run), b"{}", {"run": run.prefix}, run.deadline, "0")))
    except PreconditionFailed:
        return answer(position)  # a concurrent delivery of the same time queued it, with its waiter
    argument = json.dumps({"path": redelivery.path, "scheduleTime": redelivery.schedule_time,
                           "jobName": redelivery.job_name, "body": redelivery.body, "pollSeconds": poll_seconds()},
                          ensure_ascii=False, separators=(",", ":"))
    body = json.dumps({"argument": argument, "labels": {WAITER_LABEL: run.digest}}).encode()
    try:
        # Sent again after a lost answer: two waiters of one time are harmless (the ledger starts it once).
        waiter = _retrying(run, lambda: workflows_api.call(
            "POST", f"/v1/{quote(waiter_workflow(), safe='/')}/executions", run.create_until, json_body=body))
    except ApiError as error:
        remove(run, entry)
        raise ApiError(503 if error.code >= 500 or error.code == 429 else 500,
                       f"the queue's waiter {waiter_workflow()} could not be started ({error.code} {error.status}); "
                       "nothing was left waiting", "UNAVAILABLE" if error.code >= 500 or error.code == 429 else None) from None
    log_lines.info(f"queued {run.prefix} behind {position} waiting time(s); waiter {waiter.get('name')}",
                   event="queued", run=run.prefix, waiter=waiter.get("name"), position=position)
    return answer(position, waiter.get("name"))


def answer(position: int, waiter: str | None = None) -> dict:
    """What a delivery of a waiting time answers (200, so Cloud Scheduler does not retry)."""
    result = {"state": ledger.WAITING, "queued": True, "started": False, "position": position}
    if waiter:
        result["waiter"] = waiter
    return result


def touch(run, entry: Entry) -> Entry:
    """Mark the entry's waiter alive (its metadata's `updated`): the entry as touched. A lost race
    is another delivery's touch of the same time."""
    try:
        return _entry(_retrying(run, lambda: storage_api.patch_metadata(
            run.bucket, entry.name, {"run": entry.run}, run.deadline, entry.generation, entry.metageneration)))
    except PreconditionFailed:
        return entry


def _abandon(run, entry: Entry) -> None:
    """An entry whose waiter is gone: its time, if still waiting, is recorded skipped; the entry goes."""
    record = ledger.object_name(entry.run, 1)
    resource = _retrying(run, lambda: storage_api.get_object(run.bucket, record, run.deadline))
    attempt = ledger.Attempt.from_resource(resource) if resource else None
    if attempt is not None and attempt.state == ledger.WAITING:
        mark_skipped(run, attempt, "(its queue's waiter stopped delivering it)")
    remove(run, entry)


def mark_skipped(run, attempt: "ledger.Attempt", why: str) -> bool:
    """Rewrite a WAITING attempt as SKIPPED; False when it changed meanwhile (started, or skipped)."""
    try:
        _retrying(run, lambda: storage_api.patch_metadata(
            run.bucket, attempt.name, {"state": ledger.SKIPPED, "blockedBy": why}, run.deadline,
            attempt.generation, attempt.metageneration))
    except PreconditionFailed:
        return False
    log_lines.warning(f"skipped {attempt.name}: {why}", event="queueSkipped", record=attempt.name)
    return True


def _entry(item: dict) -> Entry:
    created = _time(item["timeCreated"])
    return Entry(item["name"], str(item["generation"]), str(item["metageneration"]), created,
                 _time(item["updated"]) if item.get("updated") else created,
                 (item.get("metadata") or {}).get("run", ""))


def remove(run, entry: Entry) -> None:
    """Delete the entry, if it is still as read (the time started, was skipped, or was abandoned)."""
    try:
        _retrying(run, lambda: storage_api.delete_object(run.bucket, entry.name, run.deadline, entry.generation,
                                                         entry.metageneration))
    except PreconditionFailed:
        pass  # touched meanwhile: it is read again, and removed by whoever finds its time started


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _setting(name: str, default: float) -> float:
    try:
        seconds = float(os.environ.get(name) or default)
    except ValueError:
        return default
    return seconds if seconds > 0 else default


def _retrying(run, attempt):
    return workflows_api.with_retries(attempt, run.deadline)
