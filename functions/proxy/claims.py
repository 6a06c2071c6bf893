"""At most one execution per attempt of a run: judge, claim, create, record (docs/ledger.md).

Workflows has no idempotency key, so the decision who starts is a conditional write in the run
ledger: the insert of attempt n+1 with ifGenerationMatch=0 succeeds for exactly one caller
(Cloud Storage is strongly consistent for object writes and listings:
https://cloud.google.com/storage/docs/consistency). Only that caller calls executions.create.
"""
from __future__ import annotations

import dataclasses
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import ledger
import scheduled_time
import storage_api
import workflows_api
from ledger import CLAIMED, TERMINAL, Attempt
from storage_api import PreconditionFailed
from workflows_api import ApiError

ATTEMPT_LABEL = "attempt"
BACKFILL_LABEL = "backfill"
WINNER_WAIT_SECONDS = 5.0   # how long a loser waits for the winner to record its execution
POLL_FIRST, POLL_MAX = 0.02, 0.5  # seconds between reads of the winner's claim
LEASE_FACTOR = 2  # a claim unrecorded after 2 x UPSTREAM_DEADLINE_SECONDS is a dead starter's


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
    arrival: datetime      # when the request came: a claim made after it is a concurrent twin's
    deadline: float        # time.monotonic() by which to answer
    lease: timedelta
    fields: dict = dataclasses.field(default_factory=dict)  # more Execution fields for create (callLogLevel, ...)

    @property
    def prefix(self) -> str:
        return ledger.run_prefix(self.parent, self.instant, self.digest)


def start(run: Run) -> dict:
    """The execution answered for this run: {**Execution, "started": bool}."""
    # Most runs are new (a delivery, a backfilled time): claim attempt 1 before reading anything,
    # and read the run's attempts only when that claim loses.
    number, generation = 1, "0"
    while True:  # each pass ends in an answer, or reads again after a write someone else won
        started = _claim_and_create(run, number, generation)
        if started is not None:
            return started
        newest = _newest(run)
        if newest is None:  # the attempt was released after a refused create
            number, generation = 1, "0"
        elif newest.state == CLAIMED:
            if not _lease_over(run, newest):
                answer = _await_winner(run, newest)
                if answer is not None:
                    return answer
                # Taken over or released meanwhile. Claiming the same number again is safe either
                # way: it wins only if the attempt is gone, else it fails and the run is read again.
                number, generation = newest.number, "0"
                continue
            found = _find_execution(run, newest.number)
            if found is not None:
                _record(run, newest, found)
                number, generation = newest.number, "0"  # fails; the next pass judges it
                continue
            number, generation = newest.number, newest.generation  # take the dead claim over
        elif newest.created >= run.arrival.replace(microsecond=run.arrival.microsecond // 1000 * 1000):
            # (timeCreated has milliseconds only.)
            # Claimed after this request arrived: the two asked for the same start at once,
            # and the winner's execution is the answer, whatever state it reaches meanwhile.
            return {**_current(run, newest), "started": False}
        else:
            execution = _current(run, newest)
            if not should_start(run.reprocess, execution.get("state")):
                return {**execution, "started": False}
            number, generation = newest.number + 1, "0"


def should_start(reprocess: str, newest_state) -> bool:
    """Judge the newest attempt of the run (no mode starts one while the newest is ACTIVE or
    QUEUED, so the older ones have ended and the newest decides)."""
    if reprocess == "none":
        return False
    if reprocess == "failed":
        return newest_state in ("FAILED", "CANCELLED")
    return newest_state not in ("ACTIVE", "QUEUED")


def _retrying(attempt, run: Run):
    return workflows_api.with_retries(attempt, run.deadline)


def _newest(run: Run) -> Attempt | None:
    objects = _retrying(lambda: storage_api.list_objects(run.bucket, run.prefix, run.deadline), run)
    attempts = [a for a in map(Attempt.from_resource, objects) if a is not None]
    return max(attempts, key=lambda a: a.number) if attempts else None


def _executions_path(run: Run) -> str:
    return f"/v1/{run.parent}/executions"


def _list_one(run: Run, filter_text: str) -> dict | None:
    found = workflows_api.call("GET", _executions_path(run), run.deadline, params={
        "filter": filter_text, "orderBy": "createTime desc", "pageSize": "1", "view": "FULL"})
    executions = found.get("executions")
    newest = executions[0] if isinstance(executions, list) and executions else None
    return newest if isinstance(newest, dict) else None


def _find_execution(run: Run, number: int) -> dict | None:
    """The execution a starter created for this attempt before it could record it, if any."""
    text = (f'labels.{scheduled_time.RUN_DIGEST_LABEL}="{run.digest}" AND '
            f'labels.{ATTEMPT_LABEL}="{number}"')
    return _retrying(lambda: _list_one(run, text), run)


def _content(run: Run, number: int) -> bytes:
    return dataclasses.replace(run.content, attempt=number).content()


def _lease_over(run: Run, attempt: Attempt) -> bool:
    return datetime.now(timezone.utc) - attempt.created > run.lease


def _await_winner(run: Run, claim: Attempt) -> dict | None:
    """The winner's execution once it is recorded (started: false); None when the claim was
    taken over or removed meanwhile (read again); 409 ABORTED if the winner has not recorded
    an execution in time."""
    pause, waited_until = POLL_FIRST, time.monotonic() + WINNER_WAIT_SECONDS
    while min(waited_until, run.deadline) - time.monotonic() > pause:
        time.sleep(pause)
        pause = min(pause * 2, POLL_MAX)
        resource = _retrying(lambda: storage_api.get_object(run.bucket, claim.name, run.deadline), run)
        current = Attempt.from_resource(resource) if resource else None
        if current is None or current.generation != claim.generation:
            return None
        if current.state != CLAIMED:
            return {**_current(run, current), "started": False}
    raise ApiError(409, f"attempt {claim.number} of this run is being started by another request "
                        f"(claimed at {claim.created.isoformat()}) that has not recorded its execution "
                        "yet; retry later", "ABORTED")


def _claim_and_create(run: Run, number: int, generation: str) -> dict | None:
    """Claim attempt `number` (the object must be at `generation`, "0": absent), create its
    execution and record it. None when another caller won the claim."""
    name, token = ledger.object_name(run.prefix, number), secrets.token_hex(8)
    try:
        resource = _retrying(lambda: storage_api.insert_object(
            run.bucket, name, _content(run, number), {"state": CLAIMED, "claim": token},
            run.deadline, generation), run)
    except PreconditionFailed:
        # Lost, unless an earlier try of this insert was written and only its answer was lost.
        resource = _retrying(lambda: storage_api.get_object(run.bucket, name, run.deadline), run)
        if resource is None or (resource.get("metadata") or {}).get("claim") != token:
            return None
    claim = Attempt.from_resource(resource)
    labels = {**run.labels, ATTEMPT_LABEL: str(number)}
    body = {**run.fields, "argument": run.content.argument, "labels": labels}
    tries = 0

    def create() -> dict:
        # Retried whole: after an ambiguous failure the lookup finds what create may have started.
        nonlocal tries
        tries += 1
        if tries > 1:
            found = _find_execution(run, number)
            if found is not None:
                return found
        return workflows_api.call("POST", _executions_path(run), run.deadline,
                                  json_body=json.dumps(body, ensure_ascii=False).encode())
    try:
        execution = _retrying(create, run)
    except ApiError as error:
        if error.code < 500:  # refused for good: nothing was created, so free the attempt
            _release(run, claim)
        raise
    _record(run, claim, execution)
    return {**execution, "started": True}


def _release(run: Run, claim: Attempt) -> None:
    try:
        _retrying(lambda: storage_api.delete_object(run.bucket, claim.name, run.deadline,
                                                    claim.generation), run)
    except (PreconditionFailed, ApiError):
        pass  # the lease recovers it


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
    """The attempt's execution as Workflows has it now, its news written back to the ledger;
    as the ledger recorded it when Workflows no longer has it."""
    if attempt.execution is None:
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
