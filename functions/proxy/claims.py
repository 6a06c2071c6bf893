"""At most one execution per attempt of a run: judge, claim, create, record (docs/ledger.md).

Workflows has no idempotency key, so the decision who starts is a conditional write in the run
ledger: the insert of attempt n+1 with ifGenerationMatch=0 succeeds for exactly one caller
(Cloud Storage is strongly consistent for object writes and listings:
https://cloud.google.com/storage/docs/consistency). Only that caller calls executions.create, and
never again once a create's outcome is unknown. Leases are judged on Cloud Storage's clock (the
Date of its answers against the claim's timeCreated), never on the instance's.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import NamedTuple
from urllib.parse import quote

import ledger
import log_lines
import orphans
import scheduled_time
import storage_api
import workflows_api
from ledger import CLAIMED, TERMINAL, Attempt
from storage_api import PreconditionFailed
from workflows_api import FIRST_BACKOFF, MAX_BACKOFF, ApiError, Transient

ATTEMPT_LABEL = "attempt"
BACKFILL_LABEL = "backfill"
WINNER_WAIT_SECONDS = 5.0   # how long a loser waits for the winner to record its execution
POLL_FIRST, POLL_MAX = 0.02, 0.5  # seconds between reads of the winner's claim
# The lease is the claimant's deadline plus this margin: how late a create the claimant sent
# before its deadline may still land in Workflows (docs/ledger.md, "The lease").
DEFAULT_LEASE_MARGIN_SECONDS = 60.0
LOOKUP_PAGE = 10  # executions a lookup by labels reads: a second one is an orphan to cancel


@dataclass(frozen=True)
class Run:
    """One run to start, as the request settled it."""
    bucket: str
    parent: str
    instant: datetime
    digest: str
    reprocess: str
    labels: dict[str, str]
    content: ledger.Claim  # its attempt number is replaced per claim
    arrival: datetime      # the instance's clock when the request came (only without a storage Date)
    began: float           # time.monotonic() when the request came
    deadline: float        # time.monotonic() by which to answer
    create_until: float    # time.monotonic() after which no create is sent (time left to release)
    lease: timedelta       # the claimant's deadline plus the margin
    request_id: str = ""   # ?requestId: the same id twice answers the attempt the first made
    # The attempts this request has claimed, by run prefix (shared by its array's elements): a run
    # given twice starts once, at its first place.
    claimed_here: dict = dataclasses.field(default_factory=dict)
    fields: dict = dataclasses.field(default_factory=dict)  # more Execution fields for create (callLogLevel, ...)

    @property
    def prefix(self) -> str:
        return ledger.run_prefix(self.parent, self.instant, self.digest)


class Busy(ApiError):
    """409 ABORTED: a claim this request cannot judge yet. Google's RetryInfo detail says when to
    ask again: the claim's lease end on Cloud Storage's clock, in whole seconds, rounded up
    (docs/proxy.md, "Claims it cannot judge yet"; the backfill retries such times then)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(409, message, "ABORTED")
        self.retry_after = max(1, retry_after)

    def body(self) -> dict:
        body = super().body()
        body["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                     "retryDelay": f"{self.retry_after}s"}]
        return body


class _Refused(NamedTuple):
    """A claim lost to another writer: Cloud Storage's clock when it refused, and ours."""
    server_time: datetime | None
    monotonic: float


def start(run: Run, take_waiting: bool = False) -> dict:
    """The execution answered for this run: {**Execution, "started": bool}. A run waiting in its
    job's queue (its newest attempt WAITING) is answered as waiting, or with `take_waiting` (its
    turn came and a slot is held for it) started under that attempt."""
    # Most runs are new (a delivery, a backfilled time): claim attempt 1 before reading anything,
    # and read the run's attempts only when that claim loses.
    number, generation, metageneration = 1, "0", None
    refused: _Refused | None = None  # this request's first lost claim: when it arrived, on storage's clock
    while True:  # each pass ends in an answer, or reads again after a write someone else won
        outcome = _claim_and_create(run, number, generation, metageneration)
        if isinstance(outcome, dict):
            return outcome
        refused = refused or outcome
        attempts, now = _attempts(run)
        if not attempts:  # the attempt was released after a refused create
            number, generation, metageneration = 1, "0", None
            continue
        own = next((a for a in attempts if run.request_id and a.request_id == run.request_id), None)
        newest = own or max(attempts, key=lambda a: a.number)
        if newest.state == ledger.WAITING:
            if not take_waiting:
                return {**ledger.as_execution(newest), "started": False, "queued": True}
            number, generation, metageneration = newest.number, newest.generation, newest.metageneration
            continue
        if newest.state == CLAIMED:
            if not _lease_over(run, newest, now):
                answer = _await_winner(run, newest)
                if answer is not None:
                    return {**answer, "started": own is not None}
                # Taken over or released meanwhile. Claiming the same number again is safe either
                # way: it wins only if the attempt is gone, else it fails and the run is read again.
                number, generation, metageneration = newest.number, "0", None
                continue
            found = _find_execution(run, newest)
            if found is not None:
                _record(run, newest, found)
                number, generation, metageneration = newest.number, "0", None  # fails; the next pass judges it
                continue
            # No create can land any more (the lease is over): take the dead claim over.
            number, generation, metageneration = newest.number, newest.generation, newest.metageneration
            continue
        if run.claimed_here.get(run.prefix) == newest.number:  # this request's own, a run given twice
            return {**_current(run, newest), "started": False}
        if own is not None:  # the same request id again: the attempt it made, as first answered
            return {**_current(run, own), "started": True}
        if not run.request_id and newest.created >= _arrived(run, refused):
            # Claimed after this request arrived: the two asked for the same start at once,
            # and the winner's execution is the answer, whatever state it reaches meanwhile.
            return {**_current(run, newest), "started": False}
        execution = _current(run, newest)
        if not should_start(run.reprocess, execution.get("state")):
            return {**execution, "started": False}
        number, generation, metageneration = newest.number + 1, "0", None


def should_start(reprocess: str, newest_state) -> bool:
    """Judge the newest attempt of the run (no mode starts one while the newest is ACTIVE or
    QUEUED, so the older ones have ended and the newest decides)."""
    if reprocess == "none" or newest_state == ledger.WAITING:  # a waiting time starts from the queue
        return False
    if reprocess == "failed":  # a skipped time never ran: `failed` takes it, as `completed` does
        return newest_state in ("FAILED", "CANCELLED", ledger.SKIPPED)
    return newest_state not in ("ACTIVE", "QUEUED")


def _retrying(attempt, run: Run):
    return workflows_api.with_retries(attempt, run.deadline)


def _attempts(run: Run) -> tuple[list[Attempt], datetime | None]:
    """The run's attempts (one prefix listing), and Cloud Storage's clock when it answered."""
    listing = _retrying(lambda: storage_api.list_objects_dated(run.bucket, run.prefix, run.deadline), run)
    return [a for a in map(Attempt.from_resource, listing.value) if a is not None], listing.server_time


def _arrived(run: Run, refused: _Refused | None) -> datetime:
    """When this request arrived, on Cloud Storage's clock: the Date of its first refused claim
    less the time since the request came. The Date has whole seconds, so the true arrival may be
    up to a second earlier; taking the latest it can be, a claim made up to a second after the
    request arrived may be judged an earlier attempt's rather than a twin's (docs/ledger.md)."""
    if refused is None or refused.server_time is None:
        return run.arrival.replace(microsecond=run.arrival.microsecond // 1000 * 1000)  # no Date: ours
    return refused.server_time + timedelta(seconds=1 - (refused.monotonic - run.began))


def _lease(run: Run, claim: Attempt) -> timedelta:
    return claim.lease or run.lease  # claims written before leases were recorded: this request's


def _lease_over(run: Run, claim: Attempt, now: datetime | None) -> bool:
    """Whether no create the claimant sent can still land: Cloud Storage's clock (`now`, a whole
    second that may be up to 1 s behind) is past the claim's timeCreated plus its lease."""
    return (now or datetime.now(timezone.utc)) - claim.created > _lease(run, claim)


def _seconds_to_lease_end(run: Run, claim: Attempt, now: datetime | None) -> int:
    """Whole seconds after which _lease_over holds, however the next Date is truncated."""
    left = (claim.created + _lease(run, claim) - (now or datetime.now(timezone.utc))).total_seconds()
    return max(1, math.floor(left) + 1)


def _executions_path(run: Run) -> str:
    return f"/v1/{run.parent}/executions"


def _find_execution(run: Run, claim: Attempt) -> dict | None:
    """_lookup, its transient faults retried within the deadline."""
    return _retrying(lambda: _lookup(run, claim), run)


def _lookup(run: Run, claim: Attempt) -> dict | None:
    """The execution a starter created for this attempt before it could record it, if any. Two
    or more are orphans but one: the ledger's (or else the oldest) is kept, the others cancelled."""
    text = (f'labels.{scheduled_time.RUN_DIGEST_LABEL}="{run.digest}" AND '
            f'labels.{ATTEMPT_LABEL}="{claim.number}"')
    found = workflows_api.call("GET", _executions_path(run), run.deadline, params={
        "filter": text, "orderBy": "createTime desc", "pageSize": str(LOOKUP_PAGE), "view": "FULL"})
    executions = [e for e in found.get("executions") or () if isinstance(e, dict)][::-1]  # oldest first
    return orphans.keep_one(executions, claim.execution, run.deadline, "proxy lookup")


def _content(run: Run, number: int) -> bytes:
    return dataclasses.replace(run.content, attempt=number).content()


def _await_winner(run: Run, claim: Attempt) -> dict | None:
    """The winner's execution once it is recorded; None when the claim was taken over or removed
    meanwhile (read again); Busy (409) if the winner has not recorded an execution in time."""
    pause, waited_until = POLL_FIRST, time.monotonic() + WINNER_WAIT_SECONDS
    now = None
    while min(waited_until, run.deadline) - time.monotonic() > pause:
        time.sleep(pause)
        pause = min(pause * 2, POLL_MAX)
        read = _retrying(lambda: storage_api.get_object_dated(run.bucket, claim.name, run.deadline), run)
        current = Attempt.from_resource(read.value) if read.value else None
        now = read.server_time
        if current is None or current.generation != claim.generation:
            return None
        if current.state != CLAIMED:
            return _current(run, current)
    raise Busy(f"attempt {claim.number} of this run is being started by another request "
               f"(claimed at {claim.created.isoformat()}) that has not recorded its execution yet; "
               "retry after the retryDelay", _seconds_to_lease_end(run, claim, now))


def _claim_and_create(run: Run, number: int, generation: str, metageneration: str | None) -> dict | _Refused:
    """Claim attempt `number` (the object must be at `generation`, "0": absent, and at
    `metageneration` when taking a claim over), create its execution and record it. _Refused
    when another caller won the claim."""
    name, token = ledger.object_name(run.prefix, number), secrets.token_hex(8)
    metadata = {"state": CLAIMED, "claim": token, "lease": f"{run.lease.total_seconds():g}"}
    if run.request_id:
        metadata["requestId"] = run.request_id
    try:
        resource = _retrying(lambda: storage_api.insert_object(
            run.bucket, name, _content(run, number), metadata, run.deadline, generation, metageneration), run)
    except PreconditionFailed as lost:
        refused = _Refused(lost.server_time, time.monotonic())
        # Lost, unless an earlier try of this insert was written and only its answer was lost.
        resource = _retrying(lambda: storage_api.get_object(run.bucket, name, run.deadline), run)
        if resource is None or (resource.get("metadata") or {}).get("claim") != token:
            return refused
    claimed_at = time.monotonic()
    run.claimed_here[run.prefix] = number
    claim = Attempt.from_resource(resource)
    labels = {**run.labels, ATTEMPT_LABEL: str(number)}
    body = json.dumps({**run.fields, "argument": run.content.argument, "labels": labels},
                      ensure_ascii=False).encode()
    execution = _create(run, claim, body, claimed_at)
    return {**_record_own(run, claim, execution), "started": True}


def _create(run: Run, claim: Attempt, body: bytes, claimed_at: float) -> dict:
    """executions.create for the claim, retried while no create can have started anything (a
    429 or 503 answer, no connection: Workflows' own rule for non-idempotent calls), each retry
    but one after a 429 preceded by a lookup by the attempt's labels. Once a create's outcome is unknown (no answer, or
    500/502/504), it is never sent again: only lookups, since that create may still land.
    Raises ApiError: the refusal (the claim released), 503 (the claim released: nothing was
    started), or Busy when an unknown outcome was not found by the end (the claim stays, for
    whoever reads it after its lease)."""
    unknown, sent, fault = False, False, "no answer"
    delay = FIRST_BACKOFF
    quota = False  # the last create was refused with 429: nothing was looked at, nothing to look up
    while True:
        looked = True
        if sent and not quota:
            try:
                found = _lookup(run, claim)
            except Transient as error:
                fault, looked = str(error), False
            else:
                if found is not None:
                    return found
        if not unknown and looked:
            sent = True
            try:
                # Sent with the create phase's end as its deadline: a lookup still fits after it.
                return workflows_api.call("POST", _executions_path(run), run.create_until, json_body=body)
            except Transient as error:
                fault, unknown = str(error), error.may_have_acted
                # 429 (RESOURCE_EXHAUSTED: the concurrency quota) is refused before anything is
                # done, so the next try needs no lookup, which would spend executions.list's far
                # smaller quota (https://cloud.google.com/workflows/quotas) while Workflows is full.
                quota = error.status == 429
            except ApiError as error:
                if error.code < 500:  # refused for good: nothing was created
                    _release(run, claim)
                raise
        pause = delay / 2 + random.uniform(0, delay / 2)
        if time.monotonic() + pause >= run.create_until:
            break
        time.sleep(pause)
        delay = min(delay * 2, MAX_BACKOFF)
    if unknown:
        try:  # a last look, in the time kept for the end
            found = _lookup(run, claim)
        except Transient:
            found = None
        if found is not None:
            return found
        left = _lease(run, claim).total_seconds() - (time.monotonic() - claimed_at)
        raise Busy(f"attempt {claim.number}: the outcome of its create is unknown ({fault}) and no "
                   "execution was found by its labels; it is judged after the claim's lease",
                   math.ceil(left) + 1)
    _release(run, claim)
    raise ApiError(503, f"the Workflows API refused the create until the deadline ({fault}); "
                        "nothing was started", "UNAVAILABLE")


def _release(run: Run, claim: Attempt) -> None:
    try:
        _retrying(lambda: storage_api.delete_object(run.bucket, claim.name, run.deadline,
                                                    claim.generation, claim.metageneration), run)
    except (PreconditionFailed, ApiError):
        pass  # the lease recovers it


def _record_own(run: Run, claim: Attempt, execution: dict) -> dict:
    """Record the claimant's own execution. If the claim changed meanwhile (a broken assumption:
    taken over or released while this create was in flight), the ledger's execution is kept and
    ours cancelled, loudly. The execution answered: ours, or the ledger's."""
    name = execution.get("name")
    try:
        _retrying(lambda: storage_api.patch_metadata(
            run.bucket, claim.name, ledger.recorded(execution), run.deadline,
            claim.generation, claim.metageneration), run)
        return execution
    except ApiError as error:
        # Storage is down: the claim stays CLAIMED, and whoever reads it after its lease finds
        # this execution by its labels and records it.
        log_lines.warning(f"started {name} but could not record it ({error.code} {error.status}); "
                          "the ledger records it when the claim is next read after its lease",
                          event="recordFailed", execution=name, record=claim.name)
        return execution
    except PreconditionFailed:
        pass
    resource = _retrying(lambda: storage_api.get_object(run.bucket, claim.name, run.deadline), run)
    current = Attempt.from_resource(resource) if resource else None
    if current is not None and current.execution == name:
        return execution  # another reader found ours by its labels and recorded it
    kept = current.execution if current is not None else None
    orphans.cancel(name, kept, run.deadline, "claimant whose claim changed")
    if current is not None and current.state != CLAIMED:
        return _current(run, current)
    raise Busy(f"attempt {claim.number}: its claim was taken over while its create was in flight; "
               "that execution was cancelled", 1)


def _record(run: Run, attempt: Attempt, execution: dict) -> None:
    """Write what is known of the attempt's execution; losing to a concurrent writer is fine,
    the other wrote the same execution or a later state of it."""
    try:
        _retrying(lambda: storage_api.patch_metadata(
            run.bucket, attempt.name, ledger.recorded(execution), run.deadline,
            attempt.generation, attempt.metageneration), run)
    except PreconditionFailed:
        pass


def _current(run: Run, attempt: Attempt) -> dict:
    """The attempt's execution: as the ledger recorded it once terminal (Workflows is not asked
    again), else as Workflows has it now, its news written back to the ledger; as the ledger
    recorded it when Workflows no longer has it."""
    if attempt.execution is None or attempt.state in TERMINAL:
        return ledger.as_execution(attempt)
    try:
        # The name comes from the ledger: quoted, so no byte of it can reshape the request line.
        path = f"/v1/{quote(attempt.execution, safe='/:')}"
        execution = _retrying(lambda: workflows_api.call("GET", path, run.deadline), run)
    except ApiError as error:
        if error.code != 404:
            raise
        known = ledger.as_execution(attempt)
        if attempt.state not in TERMINAL and attempt.state != "UNAVAILABLE":
            # Recorded as running, then gone from the history: its outcome is unknown.
            known.update(state="UNAVAILABLE")
            _record(run, attempt, {**known, "error": {
                "payload": "the execution left Workflows' history before its end was recorded"}})
        return known
    if execution.get("state") in TERMINAL and attempt.state not in TERMINAL:
        _record(run, attempt, execution)
    return execution
