"""Claims left in the run ledger past their lease, resolved by whoever reads them first
(docs/ledger.md, "Resolve"). `wfr status` looks the attempt's execution up by its labels and
records it, or releases the claim when there is none: a time whose starter died shows as what
it is (missing, or its earlier attempt), not running for ever, and an execution's later expiry
from Workflows' history cannot make the time run again.

The proxy resolves claims by the same rule (functions/proxy/claims.py, which deploys alone);
tests/test_fencing.py holds both to the same outcomes. The lease is judged on Cloud Storage's
clock (the Date of its answer against the claim's timeCreated), never on this machine's.
"""
from __future__ import annotations

import email.utils
import itertools
import sys
from datetime import datetime, timedelta

from . import ledger
from .cloud import Cloud
from .errors import ApiError

# Claims written before the proxy recorded its lease: its default deadline (60 s) plus margin (60 s).
DEFAULT_LEASE = timedelta(seconds=120)
LOOKUP = 10  # executions a lookup reads: a second one is an orphan to cancel


def resolve(cloud: Cloud, workflow: str, records: list[ledger.Record]) -> list[ledger.Record]:
    """`records` with each CLAIMED one past its lease resolved: recorded with the execution its
    labels find (state and createTime), or left out when released. A claim within its lease, or
    one this principal may not write, stays as it is."""
    resolved = []
    for record in records:
        if record.state != "CLAIMED":
            resolved.append(record)
            continue
        try:
            outcome = _resolve(cloud, workflow, record)
        except ApiError as error:
            if error.code != 403:
                raise
            outcome = record  # a principal that may only read the ledger: leave it for the proxy
        if outcome is not None:
            resolved.append(outcome)
    return resolved


def _resolve(cloud: Cloud, workflow: str, record: ledger.Record) -> ledger.Record | None:
    resource, date = cloud.object_dated(record.name)
    if resource is None:
        return None  # released meanwhile
    metadata = resource.get("metadata") or {}
    if metadata.get("state", "CLAIMED") != "CLAIMED":
        return ledger.parse(resource)  # recorded meanwhile
    if not _lease_over(resource, date):
        return record
    executions = list(itertools.islice(cloud.executions(
        workflow, f'labels.run_digest="{record.digest}" AND labels.attempt="{record.attempt}"',
        order_by="createTime desc"), LOOKUP))[::-1]  # oldest first
    generation, metageneration = str(resource["generation"]), str(resource["metageneration"])
    if not executions:
        # No create can land any more (the lease is over) and none did: nothing runs this attempt.
        return None if cloud.write_if_unchanged(record.name, generation, metageneration, None) else record
    kept = executions[0]
    for other in executions[1:]:
        _cancel_orphan(cloud, other["name"], kept["name"])
    recorded = {key: value for key, value in (("execution", kept.get("name")), ("state", kept.get("state")),
                                              ("createTime", kept.get("createTime")), ("endTime", kept.get("endTime")))
                if isinstance(value, str) and value}
    cloud.write_if_unchanged(record.name, generation, metageneration, recorded)
    return ledger.Record(**{**record.__dict__, "state": recorded.get("state", "CLAIMED"),
                            "execution": recorded.get("execution"), "create_time": recorded.get("createTime"),
                            "end_time": recorded.get("endTime")})


def _lease_over(resource: dict, date: str | None) -> bool:
    try:
        now = email.utils.parsedate_to_datetime(date or "")
        created = datetime.fromisoformat(resource["timeCreated"].replace("Z", "+00:00"))
        lease = timedelta(seconds=float((resource.get("metadata") or {})["lease"]))
    except KeyError:
        lease = DEFAULT_LEASE
    except (TypeError, ValueError):
        return False  # no readable clock: judge nothing
    return now - created > lease


def _cancel_orphan(cloud: Cloud, orphan: str, kept: str) -> None:
    """A second execution of one attempt: cancelled, and said on stderr (docs/ledger.md)."""
    try:
        cloud.cancel_execution(orphan)
        outcome = "cancelled"
    except ApiError as error:
        outcome = "ended already" if error.code == 400 else f"not cancelled ({error.code} {error.status})"
    sys.stderr.write(f"wfr: warning: two executions of one attempt: kept {kept}, {outcome} {orphan}\n")
