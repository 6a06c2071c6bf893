"""Slots: at most `maxActive` runs of a job active at once, decided by conditional writes in the
runs bucket, like claims (docs/proxy.md, "Overlap and failure policies").

A job's runs are its workflow's with its body: the run identity less the time (JOB_LABEL on
every execution). Slot k of a job is the object runs/_slots/P/L/W/JOB_DIGEST/k (under runs/,
where the proxy may write; `_` sorts apart from every workflow's own prefix, since project ids
start with a letter). A delivery takes a free slot with ifGenerationMatch (0 when absent, the
slot's generation when its holder has ended): of concurrent deliveries exactly one wins each
slot, so maxActive=1 starts one run. The slot names its run; nothing more is written to it, so a
slot costs one write. Which execution holds it is read from the one executions.list a delivery
makes anyway, by the job label: an execution with the slot's run_digest label is its holder.
A slot is busy while its run has an active execution, and, within its lease, until an execution
of its run created after the slot was taken has ended (before that, its holder may still be
creating it); past its lease with no active execution, it is free (a holder that died between
slot and create). Active runs of the job that hold no slot (backfills, re-runs, runs started
under overlap=allow) take slots' places: the same listing counts them.
"""
from __future__ import annotations

import hashlib
import json
import threading
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
KNOWN_SLOTS = 1000  # slots an instance remembers (remember); past it, it starts over
_known: dict[tuple[str, str], dict] = {}
_known_lock = threading.Lock()
# executions.list reads labels only in the FULL view (BASIC has name, times, state and revision:
# https://cloud.google.com/workflows/docs/reference/executions/rest/v1/projects.locations.workflows.executions/list),
# which pages by 100; the `fields` system parameter keeps each answer to names and labels
# (https://cloud.google.com/apis/docs/system-parameters).
LIST_PARAMS = {"pageSize": "100", "view": "FULL",
               "fields": "executions(name,labels,state,createTime),nextPageToken"}
ACTIVE = ("ACTIVE", "QUEUED")


def job_digest(workflow: str, argument: dict) -> str:
    """32 hex digits naming a job's runs: scheduled_time.run_digest's rule without the time."""
    canonical = json.dumps({"argument": argument, "workflow": workflow},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Slot:
    """A slot this delivery holds: its object, to release, or to remember with its execution."""
    bucket: str
    name: str
    generation: str
    metageneration: str
    run: str


@dataclass(frozen=True)
class Seen:
    """An execution of the job, as the listing shows it."""
    run_digest: str
    active: bool
    created: datetime | None


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
    for attempt in range(TRIES):
        listing, seen = _look(bucket, workflow, job, lease, deadline, cached=max_active == 1 and attempt == 0)
        now = listing.server_time or datetime.now(timezone.utc)
        active = {name for name, execution in seen.items() if execution.active}
        held = {item["name"].rsplit("/", 1)[-1]: item for item in listing.value}
        holders = {k: _holder(item, seen, now, lease) for k, item in held.items()}
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
            _forget(bucket, prefix(workflow, job) + index)
            continue  # another delivery took it first: look again
        return Slot(bucket, resource["name"], str(resource["generation"]), str(resource["metageneration"]), run_prefix)
    return Blocked(("(slots contended by concurrent deliveries)",))


def release(slot: Slot, deadline: float) -> None:
    """Give the slot back (nothing was started under it)."""
    try:
        _retrying(lambda: storage_api.delete_object(slot.bucket, slot.name, deadline, slot.generation,
                                                    slot.metageneration), deadline)
    except PreconditionFailed:
        pass


def remember(slot: Slot, execution: str) -> None:
    """Keep, in this instance, the slot it just took and the execution it started under it: the
    next delivery of the job here reads the slot from memory instead of listing it. Sound because
    that delivery's write of the slot is conditional on this generation: if any other delivery
    wrote the slot since, the write fails and it lists. Only for maxActive=1, where the one slot
    is all there is to judge."""
    with _known_lock:
        if len(_known) >= KNOWN_SLOTS:
            _known.clear()
        _known[(slot.bucket, slot.name)] = {"name": slot.name, "generation": slot.generation,
                                            "metageneration": slot.metageneration,
                                            "metadata": {"run": slot.run, "execution": execution}}


def _forget(bucket: str, name: str) -> None:
    with _known_lock:
        _known.pop((bucket, name), None)


def _look(bucket: str, workflow: str, job: str, lease: timedelta, deadline: float,
          cached: bool = False) -> tuple[storage_api.Dated, dict[str, Seen]]:
    """The job's slots, then its executions: in that order, never at once. A slot is free once
    its run's execution has ended; only a list asked after the slot was read proves it (asked
    before, it may predate an execution created since). The list holds the active executions,
    and those created since the oldest slot still in its lease (the ones that may have ended).
    With `cached`, a slot this instance remembers stands for the listing (remember)."""
    with _known_lock:
        known = _known.get((bucket, prefix(workflow, job) + "0")) if cached else None
    if known is not None:
        return storage_api.Dated([known], None), _executions(workflow, job, None, deadline)
    listing = _retrying(lambda: storage_api.list_objects_dated(bucket, prefix(workflow, job), deadline), deadline)
    now = listing.server_time or datetime.now(timezone.utc)
    recent = [created for item in listing.value if not (item.get("metadata") or {}).get("execution")
              and (created := _created(item)) is not None and now - created <= _lease(item, lease)]
    return listing, _executions(workflow, job, min(recent) if recent else None, deadline)


def _run(item: dict) -> str | None:
    return (item.get("metadata") or {}).get("run")


def _created(item: dict) -> datetime | None:
    try:
        return datetime.fromisoformat(item["timeCreated"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None


def _lease(item: dict, lease: timedelta) -> timedelta:
    try:
        return timedelta(seconds=float((item.get("metadata") or {}).get("lease") or lease.total_seconds()))
    except ValueError:
        return lease


def _holder(item: dict, seen: dict[str, Seen], now: datetime, lease: timedelta) -> str | None:
    """Who keeps the slot busy: its run's execution, or BEING_STARTED; None when it is free."""
    metadata = item.get("metadata") or {}
    if metadata.get("execution"):  # a slot written by a proxy that recorded its execution in it
        recorded = seen.get(metadata["execution"])
        return metadata["execution"] if recorded is not None and recorded.active else None
    digest = (metadata.get("run") or "").rstrip("/").rsplit("/", 1)[-1]
    runs = {name: e for name, e in seen.items() if digest and e.run_digest == digest}
    # Its run active (claims allow one active attempt per run): that execution holds it, counted once.
    started = next((name for name, e in runs.items() if e.active), None)
    if started is not None:
        return started
    created = _created(item)
    if created is None:
        return BEING_STARTED
    if now - created > _lease(item, lease):
        return None  # no create of its holder can land any more
    # Within its lease: free once an execution of its run created since the slot was taken has
    # ended; one created before is an earlier attempt's (a re-run takes its run's slot again).
    ended = any(e.created is not None and e.created >= created for e in runs.values())
    return None if ended else BEING_STARTED


def _executions(workflow: str, job: str, since: datetime | None, deadline: float) -> dict[str, Seen]:
    """The job's executions now ACTIVE or QUEUED, whoever started them, and those created since
    `since`, by name (executions.list, AIP-160 filter on the job label, state and createTime)."""
    states = 'state="ACTIVE" OR state="QUEUED"'
    if since is not None:
        states += f' OR createTime>="{since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}"'
    params = {"filter": f'labels.{JOB_LABEL}="{job}" AND ({states})', **LIST_PARAMS}
    found: dict[str, Seen] = {}
    while True:
        page = _retrying(lambda: workflows_api.call("GET", f"/v1/{workflow}/executions", deadline, params=params),
                         deadline)
        for execution in page.get("executions") or ():
            if isinstance(execution, dict) and execution.get("name"):
                labels = execution.get("labels") if isinstance(execution.get("labels"), dict) else {}
                found[execution["name"]] = Seen(str(labels.get(scheduled_time.RUN_DIGEST_LABEL) or ""),
                                                execution.get("state") in ACTIVE, _time(execution.get("createTime")))
        if not page.get("nextPageToken"):
            return found
        params = {**params, "pageToken": page["nextPageToken"]}


def _time(text) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if isinstance(text, str) else None
    except ValueError:
        return None


def _retrying(attempt, deadline: float):
    return workflows_api.with_retries(attempt, deadline)
