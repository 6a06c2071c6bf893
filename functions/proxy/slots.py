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
overlap=allow) take slots' places: executions.list by the job label counts them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import ledger
import storage_api
import workflows_api
from storage_api import PreconditionFailed

JOB_LABEL = "job_digest"
SLOTS = "runs/_slots"
TRIES = 5   # slot writes lost to concurrent deliveries before this one gives up (and is blocked)


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
    """A free slot of the job, taken; Blocked when maxActive runs are active; None when a slot is
    held for this very run (a repeated delivery: the run's claim answers it)."""
    for _ in range(TRIES):
        listing = _retrying(lambda: storage_api.list_objects_dated(bucket, prefix(workflow, job), deadline), deadline)
        now = listing.server_time or datetime.now(timezone.utc)
        held = {item["name"].rsplit("/", 1)[-1]: item for item in listing.value}
        if any((item.get("metadata") or {}).get("run") == run_prefix for item in held.values()):
            return None
        active = _active(workflow, job, deadline)
        busy = {k: item for k, item in held.items() if _busy(item, active, now, lease)}
        holders = {(item.get("metadata") or {}).get("execution") for item in busy.values()}
        others = sorted(active - holders)
        if len(busy) + len(others) >= max_active:
            return Blocked(tuple(sorted(filter(None, holders))) + tuple(others) or ("(a run being started)",))
        index = next(str(k) for k in range(max_active) if str(k) not in busy)
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


def _busy(item: dict, active: set[str], now: datetime, lease: timedelta) -> bool:
    metadata = item.get("metadata") or {}
    if metadata.get("execution"):
        return metadata["execution"] in active
    try:  # taken, no execution recorded yet: busy until its lease ends (storage's clock)
        created = datetime.fromisoformat(item["timeCreated"].replace("Z", "+00:00"))
        held_for = timedelta(seconds=float(metadata.get("lease") or lease.total_seconds()))
    except (KeyError, ValueError):
        return True
    return now - created <= held_for


def _active(workflow: str, job: str, deadline: float) -> set[str]:
    """The job's executions now ACTIVE or QUEUED, whoever started them (one executions.list,
    AIP-160 filter on the job label and state)."""
    params = {"filter": f'labels.{JOB_LABEL}="{job}" AND (state="ACTIVE" OR state="QUEUED")',
              "pageSize": "1000", "view": "BASIC"}
    names: set[str] = set()
    while True:
        page = _retrying(lambda: workflows_api.call("GET", f"/v1/{workflow}/executions", deadline, params=params),
                         deadline)
        names.update(e["name"] for e in page.get("executions") or () if isinstance(e, dict) and e.get("name"))
        if not page.get("nextPageToken"):
            return names
        params = {**params, "pageToken": page["nextPageToken"]}


def _retrying(attempt, deadline: float):
    return workflows_api.with_retries(attempt, deadline)
