"""Reading the run ledger (docs/ledger.md, the contract; the proxy writes it in
functions/proxy/ledger.py): object names, their metadata, and the listings wfr makes.

A window of a workflow is a ranged listing (startOffset/endOffset over names that sort by
instant; a long one cut by time into a few run at once), 1,000 objects a call, so a status costs
about window / 1,000 storage calls, never one per time.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from .cloud import Cloud

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
# What a record says when its execution left Workflows' history (executions.get answered 404)
# before its end was recorded (docs/ledger.md, write 4): its outcome is unknown for good.
UNAVAILABLE = "UNAVAILABLE"
# A scheduled time waiting for a free slot of its job (overlap=queue): attempt 1 with no execution,
# taken over (CLAIMED, then its execution) when a slot frees, or rewritten SKIPPED past the queue's
# bound. Twin of functions/proxy/ledger.py's WAITING (docs/ledger.md).
WAITING = "WAITING"
PARTS = 4  # at most this many ranged listings in flight for one window
GONE = "the execution left Workflows' history before its end was recorded"
_NAME = re.compile(r"runs/([^/]+)/([^/]+)/([^/]+)/([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z)"
                   r"/([0-9a-f]{32})/([0-9]{6})", re.ASCII)


@dataclass(frozen=True)
class Record:
    """One attempt of one run, as the listing shows it (name and custom metadata)."""
    name: str
    instant: datetime
    digest: str
    attempt: int
    state: str               # CLAIMED, ACTIVE, QUEUED, SUCCEEDED, FAILED, CANCELLED, UNAVAILABLE,
                             # SKIPPED, WAITING
    execution: str | None
    create_time: str | None
    end_time: str | None
    error: str | None
    metageneration: str

    @property
    def settled(self) -> bool:
        """Nothing more to learn from Workflows: ended, or gone from its history."""
        return self.state in TERMINAL or self.state == UNAVAILABLE


def instant_key(instant: datetime) -> str:
    """The INSTANT part of a name: UTC, fixed width, six fraction digits, so names sort by time."""
    return f"{instant.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%S.%fZ}"


def workflow_prefix(workflow: str) -> str:
    """projects/P/locations/L/workflows/W -> runs/P/L/W/"""
    _, project, _, location, _, workflow_id = workflow.split("/")
    return f"runs/{project}/{location}/{workflow_id}/"


def run_prefix(workflow: str, instant: datetime, digest: str) -> str:
    return f"{workflow_prefix(workflow)}{instant_key(instant)}/{digest}/"


def parse(item: dict[str, Any]) -> Record | None:
    """A listed object -> Record; None for a name that is not a run attempt's."""
    match = _NAME.fullmatch(item.get("name", ""))
    if not match:
        return None
    metadata = item.get("metadata") or {}
    return Record(name=item["name"],
                  instant=datetime.fromisoformat(match[4]),  # UTC ("Z"); 100x faster than strptime
                  digest=match[5], attempt=int(match[6]), state=metadata.get("state", "CLAIMED"),
                  execution=metadata.get("execution"), create_time=metadata.get("createTime"),
                  end_time=metadata.get("endTime"), error=metadata.get("error"),
                  metageneration=str(item.get("metageneration", "")))


def window(cloud: Cloud, workflow: str, first: datetime, last: datetime, parts: int = 1) -> list[Record]:
    """Every attempt of every run of `workflow` scheduled at first <= instant <= last, in name
    order. A listing is a chain of pages, each waiting for the one before, so a long window is cut
    by time into `parts` ranged listings that run at once (each still 1,000 objects a call)."""
    prefix = workflow_prefix(workflow)
    bounds = [first + (last - first) * part / parts for part in range(parts)] + [last + timedelta(microseconds=1)]
    spans = [(start, stop) for start, stop in zip(bounds, bounds[1:]) if start < stop]

    def listing(span: tuple[datetime, datetime]) -> list[Record]:
        items = cloud.list_objects(prefix, start_offset=prefix + instant_key(span[0]),
                                   end_offset=prefix + instant_key(span[1]))
        return [record for record in map(parse, items) if record is not None]
    with ThreadPoolExecutor(len(spans)) as pool:
        return [record for records in pool.map(listing, spans) for record in records]


def attempts(cloud: Cloud, workflow: str, instant: datetime, digest: str) -> list[Record]:
    """The attempts of one run, oldest first (one prefix listing)."""
    return [r for r in map(parse, cloud.list_objects(run_prefix(workflow, instant, digest))) if r is not None]


def gone(name: str) -> dict[str, Any]:
    """What the ledger records for an execution Workflows no longer has."""
    return {"name": name, "state": UNAVAILABLE, "error": {"payload": GONE}}


def learned(execution: dict[str, Any]) -> dict[str, str]:
    """The metadata an ended (or gone) execution's record should hold (the ledger's write 4, "Learn")."""
    metadata = {"state": execution["state"]}
    if execution.get("endTime"):
        metadata["endTime"] = execution["endTime"]
    payload = (execution.get("error") or {}).get("payload")
    if payload:
        metadata["error"] = payload[:1000]
    return metadata
