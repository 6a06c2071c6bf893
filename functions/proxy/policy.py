"""A job's overlap and failure policy, read from the query of its URI (docs/proxy.md, "Overlap
and failure policies"): `overlap=allow|skip|queue|replace`, `maxActive=N`, `pauseAfter=N`.

The proxy's one reader of these settings; workflows_runner/job_settings.py is wfr's, held to the
same table by tests/test_job_settings.py; and what a scheduled delivery does under it (start).
"""
from __future__ import annotations

import dataclasses
import re
from typing import NamedTuple

from urllib.parse import quote

import claims
import job_queue
import ledger
import log_lines
import slots
import storage_api
import workflows_api
from workflows_api import ApiError

OVERLAP_MODES = ("allow", "skip", "queue", "replace")
SETTINGS = ("overlap", "maxActive", "pauseAfter")
# Bounds on the counts: a slot is one object in the runs bucket, and a pass judges pauseAfter
# over that many of the job's latest times.
MAX_ACTIVE_LIMIT = 100
PAUSE_AFTER_LIMIT = 100
REPLACE_TRIES = 3  # cancel-then-take rounds before a replace gives up (a new holder won meanwhile)
_COUNT = re.compile(r"[1-9][0-9]{0,2}", re.ASCII)


class Policy(NamedTuple):
    overlap: str = "allow"
    max_active: int = 0     # 0 when overlap is allow: no limit
    pause_after: int = 0    # 0: never paused

    @property
    def limits(self) -> bool:
        """Whether a scheduled delivery has to count the job's active runs."""
        return self.overlap != "allow"


def _count(args, name: str, limit: int) -> int:
    text = args[name]
    if not _COUNT.fullmatch(text) or int(text) > limit:
        raise ApiError(400, f"{name} must be a whole number from 1 to {limit}, got {text[:20]!r}")
    return int(text)


def from_args(args) -> Policy:
    """The policy of a request's query (a mapping of the parameters given once). Raises a 400
    ApiError naming the setting that is wrong."""
    overlap = args.get("overlap", "allow")
    if overlap not in OVERLAP_MODES:
        raise ApiError(400, f"overlap must be one of {', '.join(OVERLAP_MODES)}, got {overlap[:20]!r}")
    max_active = 0
    if "maxActive" in args:
        if overlap == "allow":
            raise ApiError(400, "maxActive applies only with overlap=skip, queue or replace")
        max_active = _count(args, "maxActive", MAX_ACTIVE_LIMIT)
    elif overlap != "allow":
        max_active = 1
    pause_after = _count(args, "pauseAfter", PAUSE_AFTER_LIMIT) if "pauseAfter" in args else 0
    return Policy(overlap, max_active, pause_after)


def start(run, policy: Policy, redelivery: "job_queue.Redelivery | None" = None) -> dict:
    """A scheduled delivery's run under the job's policy: {**Execution, "started": bool}, or the
    skipped record's answer when maxActive runs are active, or the queued answer (docs/proxy.md).
    `redelivery` is what the queue's waiter sends again (overlap=queue)."""
    if not policy.limits:
        return claims.start(run)
    if policy.overlap == "queue":
        return _queue(run, policy, redelivery)
    job = run.labels[slots.JOB_LABEL]
    slot = slots.acquire(run.bucket, run.parent, job, run.prefix, policy.max_active, run.lease, run.deadline)
    if isinstance(slot, slots.Blocked) and policy.overlap == "replace":
        slot = _replace(run, policy, slot)
    if slot is None:  # this very run is active or being started under a slot: a repeated delivery
        return _existing(run)
    if isinstance(slot, slots.Blocked):
        return skip(run, slot.by)
    return _start_in(run, slot)


def _start_in(run, slot: "slots.Slot", take_waiting: bool = False) -> dict:
    """Start the run holding `slot` (its execution holds it by the run's label), or give the slot back."""
    try:
        execution = claims.start(run, take_waiting)
    except BaseException:
        slots.release(slot, run.deadline)
        raise
    if execution.get("started") and execution.get("name"):
        slots.remember(slot, execution["name"])
    else:  # an existing run answered: counted by the job label, if active
        slots.release(slot, run.deadline)
    return execution


def _queue(run, policy: Policy, redelivery: "job_queue.Redelivery") -> dict:
    """overlap=queue: start the time if a slot is free and no earlier time waits; else queue it
    behind them (its waiter delivers it again), or skip it when the queue is full."""
    job_queue.waiter_workflow()  # refused before anything when the proxy is deployed without it
    waiting, now = job_queue.entries(run)
    mine = next((entry for entry in waiting if entry.name == job_queue.entry_name(run)), None)
    if mine is not None:  # the waiter (or Cloud Scheduler again) delivers a waiting time
        return _turn(run, policy, waiting, job_queue.touch(run, mine), now)
    blocked: tuple[str, ...] = ("(earlier times wait in the queue)",)
    if not waiting:
        slot = slots.acquire(run.bucket, run.parent, run.labels[slots.JOB_LABEL], run.prefix, policy.max_active,
                             run.lease, run.deadline)
        if slot is None:
            return _existing(run)
        if not isinstance(slot, slots.Blocked):  # a time left waiting with no entry starts too
            return _start_in(run, slot, take_waiting=True)
        blocked = slot.by
    if len(waiting) >= job_queue.MAX_QUEUED:
        return skip(run, blocked + (f"(the queue is full: {job_queue.MAX_QUEUED} times waiting)",))
    record = _insert_attempt(run, {"state": ledger.WAITING})
    if record is None:  # the time has an attempt already: answered by it, queued again if it waits
        existing = _existing(run)
        return job_queue.enqueue(run, len(waiting), redelivery) if existing.get("queued") else existing
    try:
        return job_queue.enqueue(run, len(waiting), redelivery)
    except BaseException:  # no waiter: the time is not left waiting, and Cloud Scheduler retries
        _delete_attempt(run, record)
        raise


def _turn(run, policy: Policy, waiting: list, mine: "job_queue.Entry", now) -> dict:
    """A waiting time delivered again: started when it is the oldest and a slot is free; skipped
    past the queue's bound; else still waiting."""
    if now - mine.created > job_queue.max_wait():
        record = _attempt_one(run)
        why = f"(no slot freed within the queue's bound of {job_queue.max_wait().total_seconds():g} s)"
        if record is not None and record.state == ledger.WAITING and job_queue.mark_skipped(run, record, why):
            job_queue.remove(run, mine)
            return {"state": ledger.SKIPPED, "blockedBy": [why], "started": False, "skipped": True}
        job_queue.remove(run, mine)
        return _existing(run)
    position = [entry.name for entry in waiting].index(mine.name)
    if position:
        return job_queue.answer(position)
    slot = slots.acquire(run.bucket, run.parent, run.labels[slots.JOB_LABEL], run.prefix, policy.max_active,
                         run.lease, run.deadline)
    if isinstance(slot, slots.Blocked):
        return job_queue.answer(0)
    execution = _existing(run) if slot is None else _start_in(run, slot, take_waiting=True)
    if not execution.get("queued"):
        job_queue.remove(run, mine)
    return execution


def _replace(run, policy: Policy, blocked: "slots.Blocked"):
    """overlap=replace: cancel the job's active runs, then take the slot they held. A slot still
    being started by another delivery (no execution yet) cannot be cancelled: then the time is
    skipped, as the answer says (blockedBy)."""
    for _ in range(REPLACE_TRIES):
        for name in blocked.by:
            if name.startswith("projects/"):
                cancel(name, run.deadline)
        slot = slots.acquire(run.bucket, run.parent, run.labels[slots.JOB_LABEL], run.prefix, policy.max_active,
                             run.lease, run.deadline)
        if not isinstance(slot, slots.Blocked):
            return slot
        blocked = slot
    return blocked


def cancel(name: str, deadline: float) -> None:
    """executions.cancel; 400 FAILED_PRECONDITION means it ended already, which is as good."""
    try:
        workflows_api.with_retries(lambda: workflows_api.call(
            "POST", f"/v1/{quote(name, safe='/:')}:cancel", deadline, json_body=b"{}"), deadline)
    except ApiError as error:
        if error.code not in (400, 404):
            raise
    log_lines.info(f"overlap=replace cancelled {name}", event="replaced", execution=name)


def skip(run, blocked_by: tuple[str, ...]) -> dict:
    """Record the time as skipped (attempt 1, state SKIPPED, the executions that blocked it) and
    answer 200, so Cloud Scheduler does not retry. A run that has an attempt already is answered
    by its claim instead."""
    metadata = {"state": ledger.SKIPPED, "blockedBy": ",".join(blocked_by)[:ledger.ERROR_CHARS]}
    if _insert_attempt(run, metadata) is None:
        return _existing(run)
    return {"state": ledger.SKIPPED, "blockedBy": list(blocked_by), "started": False, "skipped": True}


def _insert_attempt(run, metadata: dict) -> "ledger.Attempt | None":
    """Write the run's attempt 1 with no execution (SKIPPED, WAITING); None when it exists."""
    content = dataclasses.replace(run.content, attempt=1).content()
    try:
        return ledger.Attempt.from_resource(workflows_api.with_retries(lambda: storage_api.insert_object(
            run.bucket, ledger.object_name(run.prefix, 1), content, metadata, run.deadline, "0"), run.deadline))
    except storage_api.PreconditionFailed:
        return None


def _attempt_one(run) -> "ledger.Attempt | None":
    resource = workflows_api.with_retries(lambda: storage_api.get_object(
        run.bucket, ledger.object_name(run.prefix, 1), run.deadline), run.deadline)
    return ledger.Attempt.from_resource(resource) if resource else None


def _delete_attempt(run, attempt: "ledger.Attempt") -> None:
    try:
        workflows_api.with_retries(lambda: storage_api.delete_object(
            run.bucket, attempt.name, run.deadline, attempt.generation, attempt.metageneration), run.deadline)
    except (storage_api.PreconditionFailed, ApiError):
        pass


def _existing(run) -> dict:
    """The time's run as its claim answers it, never a new attempt: a time that holds no free
    slot (blocked, or its own run active) must not start one through reprocess=failed|completed."""
    return claims.start(dataclasses.replace(run, reprocess="none"))
