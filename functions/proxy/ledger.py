"""The run ledger's encoding: object names and what an attempt object holds (docs/ledger.md).

This module is the contract's one home in the proxy; workflows_runner/ledger.py reads the same
layout. Nothing here does I/O.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

PREFIX = "runs"
CLAIMED = "CLAIMED"
# A scheduled time not started because maxActive runs of its job were active (overlap=skip): an
# attempt with no execution, `blockedBy` naming the executions that were (docs/ledger.md).
SKIPPED = "SKIPPED"
# A scheduled time waiting in its job's queue for a free slot (overlap=queue): an attempt with no
# execution yet, taken over (CLAIMED, then its execution) when the time starts (docs/ledger.md).
WAITING = "WAITING"
# Workflows' terminal states. UNAVAILABLE ("execution data is unavailable", Execution.state in
# the Executions API reference) is not one: it is asked again, and the proxy also writes it when
# an execution it recorded as running has left Workflows' history.
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
ERROR_CHARS = 1000
_ATTEMPT = re.compile(r"[0-9]{6}")


def instant_text(instant: datetime) -> str:
    """The scheduled instant, fixed width (27 characters), so that names sort by time."""
    utc = instant.astimezone(timezone.utc)
    return (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
            f"{utc.second:02d}.{utc.microsecond:06d}Z")


def workflow_prefix(workflow: str) -> str:
    """runs/P/L/W/ for workflow projects/P/locations/L/workflows/W."""
    _, project, _, location, _, workflow_id = workflow.split("/")
    return f"{PREFIX}/{project}/{location}/{workflow_id}/"


def run_prefix(workflow: str, instant: datetime, digest: str) -> str:
    """runs/P/L/W/INSTANT/DIGEST/: one prefix listing gives every attempt of the run, oldest first."""
    return f"{workflow_prefix(workflow)}{instant_text(instant)}/{digest}/"


def object_name(prefix: str, attempt: int) -> str:
    assert 0 < attempt < 10 ** 6, attempt
    return f"{prefix}{attempt:06d}"


@dataclass(frozen=True)
class Claim:
    """The immutable content a claim writes: enough to re-run the run without its execution."""
    workflow: str
    scheduleTime: str
    timezone: str
    argument: str
    trigger: str
    job: str | None
    backfill: str | None
    attempt: int

    def content(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Attempt:
    """One attempt as a listing shows it: the object's resource, read only for its metadata."""
    name: str
    number: int
    generation: str
    metageneration: str
    created: datetime
    metadata: dict = field(default_factory=dict)

    @classmethod
    def from_resource(cls, resource: dict) -> "Attempt | None":
        """None for an object whose name does not end in an attempt number (not ours)."""
        name = resource.get("name", "")
        tail = name.rsplit("/", 1)[-1]
        if not _ATTEMPT.fullmatch(tail) or tail == "000000":
            return None
        metadata = resource.get("metadata")
        return cls(name, int(tail), str(resource["generation"]), str(resource["metageneration"]),
                   datetime.fromisoformat(resource["timeCreated"].replace("Z", "+00:00")),
                   dict(metadata) if isinstance(metadata, dict) else {})

    @property
    def state(self) -> str:
        return self.metadata.get("state") or CLAIMED

    @property
    def execution(self) -> str | None:
        return self.metadata.get("execution") or None

    @property
    def claim_token(self) -> str | None:
        return self.metadata.get("claim") or None

    @property
    def request_id(self) -> str | None:
        return self.metadata.get("requestId") or None

    @property
    def lease(self) -> timedelta | None:
        """How long after timeCreated the claim may still see its create land (metadata `lease`,
        seconds); None for claims written before leases were recorded."""
        try:
            return timedelta(seconds=float(self.metadata["lease"]))
        except (KeyError, ValueError):
            return None


def recorded(execution: dict) -> dict[str, str]:
    """The metadata keys the proxy records from an Execution resource (strings, as Cloud Storage
    custom metadata holds them)."""
    fields = {"execution": execution.get("name"), "state": execution.get("state"),
              "createTime": execution.get("createTime") or execution.get("startTime"),
              "endTime": execution.get("endTime")}
    error = execution.get("error")
    if isinstance(error, dict) and isinstance(error.get("payload"), str):
        fields["error"] = error["payload"][:ERROR_CHARS]
    return {key: value for key, value in fields.items() if isinstance(value, str) and value}


def as_execution(attempt: Attempt) -> dict:
    """What the ledger knows of an attempt's execution, in the Execution resource's field names:
    the answer when Workflows no longer has it."""
    execution = {"name": attempt.execution, "state": attempt.state}
    for key in ("createTime", "endTime"):
        if attempt.metadata.get(key):
            execution[key] = attempt.metadata[key]
    if attempt.metadata.get("error"):
        execution["error"] = {"payload": attempt.metadata["error"]}
    return execution
