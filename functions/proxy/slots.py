"""Slots: at most `maxActive` runs of a job active at once, decided by conditional writes in the
runs bucket, like claims (docs/proxy.md, "Overlap and failure policies").

A job's runs are its workflow's with its body: the run identity less the time (JOB_LABEL on
every execution). Slot k of a job is the object runs/_slots/P/L/W/JOB_DIGEST/k (under runs/,
where the proxy may write; `_` sorts apart from every workflow's own prefix, since project ids
start with a letter). A delivery takes a free slot with ifGenerationMatch (0 when absent, the
slot's generation when its holder has ended): of concurrent deliveries exactly one wins each
slot, so maxActive=1 starts one run. A slot is free when its recorded execution is no longer
active, or when nothing was recorded by its lease's end (a holder that died between slot and
create). Active runs of the job that hold no slot (backfills, re-runs, runs started under
overlap=allow) take slots' places: executions.list by the job label counts them, and its
run_digest labels tell which of them a slot's holder started before recording it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import ledger
import scheduled_time
import storage_api
import workflows_api
from storage_api import PreconditionFailed

JOB_LABEL = "job_digest"
SLOTS = "runs/_slots"
TRIES = 5   # slot writes lost to concurrent deliveries before this one gives up (and is blocked)
BEING_STARTED = "(a run being started)"
# executions.list reads labels only in the FULL view (BASIC has name, times, state and revision:
# https://cloud.google.com/workflows/docs/reference/executions/rest/v1/projects.locations.workflows.executions/list),
# which pages by 100; the `fields` system parameter keeps each answer to names and labels
# (https://cloud.google.com/apis/docs/system-parameters).
LIST_PARAMS = {"pageSize": "100", "view": "FULL", "fields": "executions(name,labels),nextPageToken"}


def job_digest(workflow: str, argument: dict) -> str:
    """32 hex digits naming a job's runs: scheduled_time.run_digest's rule without the time."""
    canonical = json.dumps({"argument": argument, "workflow": workflow},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Slot:
    """A slot this delivery holds: its object, to record the execution in or to release."""
    bucket: str
    name: str
    generation: str
    metageneration: str


@dataclass(frozen=True)
class Blocked:
    """No slot free: the executions that hold them (active, or being started)."""
    by: tuple[str, ...]


def prefix(workflow: str, job: str) -> str:
    return f"{SLOTS}/{ledger.workflow_prefix(workflow)[len(ledger.PREFIX) + 1:]}{job}/"


def acquire(bucket: str, workflow: str, job: str, run_prefix: str, max_active: int, lease: timedelta,
            deadline: float) -> Slot | Blocked | None:
    """A free slot of the job, taken; Blocked when maxActive runs are active; None when this very
    run holds a slot and is active or being started (a repeated delivery: the run's claim answers
    it). A slot naming this run whose execution has ended is no answer: a re-run under reprocess
    is one more run of the job, and takes a slot like any other (that one first)."""
    for _ in range(TRIES):
        listing, active = _look(bucket, workflow, job, deadline)
        now = listing.server_time or datetime.now(timezone.utc)
        held = {item["name"].rsplit("/", 1)[-1]: item for item in listing.value}
        holders = {k: _holder(item, active, now, lease) for k, item in held.items()}
        busy = {k: holder for k, holder in holders.items() if holder is not None}
        owns = [k for k, item in held.items() if _run(item) == run_prefix]
        if any(k in busy for k in owns):
            return None
        own = owns[0] if owns else None
        others = sorted(set(active) - set(busy.values()))
        if len(busy) + len(others) >= max_active:
            named = sorted(h for h in busy.values() if h != BEING_STARTED)
            return Blocked(tuple(named) + tuple(others) or (BEING_STARTED,))
        indexes = [str(k) for k in range(max_active)]
        index = own if own in indexes else next(k for k in indexes if k not in busy)
        generation = str(held[index]["generation"]) if index in held else "0"
        try:
            resource = _retrying(lambda: storage_api.insert_object(
                bucket, prefix(workflow, job) + index, b"{}", {"run": run_prefix, "lease": f"{lease.total_seconds():g}"},
                deadline, generation), deadline)
        except PreconditionFailed:
            continue  # another delivery took it first: look again
        return Slot(bucket, resource["name"], str(resource["generation"]), str(resource["metageneration"]))
    return Blocked(("(slots contended by concurrent deliveries)",))


def record(slot: Slot, execution: str, deadline: float) -> None:
    """Write the execution that holds the slot; losing to a takeover is fine (it judged ours ended)."""
    try:
        _retrying(lambda: storage_api.patch_metadata(slot.bucket, slot.name, {"execution": execution}, deadline,
                                                     slot.generation, slot.metageneration), deadline)
    except PreconditionFailed:
        pass


def release(slot: Slot, deadline: float) -> None:
    """Give the slot back (nothing was started under it)."""
    try:
        _retrying(lambda: storage_api.delete_object(slot.bucket, slot.name, deadline, slot.generation,
                                                    slot.metageneration), deadline)
    except PreconditionFailed:
        pass


def _look(bucket: str, workflow: str, job: str, deadline: float) -> tuple[storage_api.Dated, dict[str, str]]:
    """The job's slots, then its active executions: in that order, never at once. A slot whose
    execution is recorded is free when that execution is not active; only a list asked after
    the slot was read proves it (asked before, it may predate an execution recorded since)."""
    listing = _retrying(lambda: storage_api.list_objects_dated(bucket, prefix(workflow, job), deadline), deadline)
    return listing, _active(workflow, job, deadline)


def _run(item: dict) -> str | None:
    return (item.get("metadata") or {}).get("run")


def _holder(item: dict, active: dict[str, str], now: datetime, lease: timedelta) -> str | None:
    """Who keeps the slot busy: its execution, or BEING_STARTED; None when it is free."""
    metadata = item.get("metadata") or {}
    if metadata.get("execution"):
        return metadata["execution"] if metadata["execution"] in active else None
    # Taken, no execution recorded yet. If its run's execution is active already (created, not
    # yet recorded), that is the holder, counted once: claims allow one active attempt per run.
    digest = (metadata.get("run") or "").rstrip("/").rsplit("/", 1)[-1]
    started = next((name for name, run_digest in active.items() if digest and run_digest == digest), None)
    if started is not None:
        return started
    try:  # else busy until its lease ends (storage's clock): its holder may still create
        created = datetime.fromisoformat(item["timeCreated"].replace("Z", "+00:00"))
        held_for = timedelta(seconds=float(metadata.get("lease") or lease.total_seconds()))
    except (KeyError, ValueError):
        return BEING_STARTED
    return BEING_STARTED if now - created <= held_for else None


def _active(workflow: str, job: str, deadline: float) -> dict[str, str]:
    """The job's executions now ACTIVE or QUEUED, whoever started them, by name, with their
    run_digest labels (executions.list, AIP-160 filter on the job label and state)."""
    params = {"filter": f'labels.{JOB_LABEL}="{job}" AND (state="ACTIVE" OR state="QUEUED")', **LIST_PARAMS}
    found: dict[str, str] = {}
    while True:
        page = _retrying(lambda: workflows_api.call("GET", f"/v1/{workflow}/executions", deadline, params=params),
                         deadline)
        for execution in page.get("executions") or ():
            if isinstance(execution, dict) and execution.get("name"):
                labels = execution.get("labels") if isinstance(execution.get("labels"), dict) else {}
                found[execution["name"]] = str(labels.get(scheduled_time.RUN_DIGEST_LABEL) or "")
        if not page.get("nextPageToken"):
            return found
        params = {**params, "pageToken": page["nextPageToken"]}


def _retrying(attempt, deadline: float):
    return workflows_api.with_retries(attempt, deadline)
