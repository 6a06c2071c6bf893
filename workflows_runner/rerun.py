"""Re-running runs with their original argument: the same run (same digest), a new attempt.

The argument and zone come from the run's ledger record (`argument`, `timezone`), never from
what the operator types, so a re-run cannot silently become another run. They go through the
proxy like every start, with reprocess `completed` (or `failed` for --failed), which judges the
newest attempt and claims the next one.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from . import ledger
from .cloud import Cloud
from .errors import ApiError, WfrError
from .identity import from_label
from .status import TimeStatus

PROXY_ARRAY_MAX = 100   # the proxy's array form takes at most 100 runs per request


@dataclass(frozen=True)
class Rerun:
    record: str                  # the ledger object of the attempt re-run
    schedule_time: str
    started: bool
    execution: str | None
    error: str | None = None


@dataclass(frozen=True)
class _Original:
    record: str
    workflow: str
    timezone: str
    body: dict[str, Any]


def _original(cloud: Cloud, record_name: str) -> _Original:
    content = cloud.read_json_object(record_name)
    try:
        body = json.loads(content["argument"])
        return _Original(record_name, content["workflow"], content.get("timezone") or "Etc/UTC", body)
    except (KeyError, TypeError, ValueError):
        raise WfrError(f"ledger record {record_name} has no readable argument") from None


def newest_record(cloud: Cloud, execution_name: str) -> str:
    """The ledger record of an execution's run (its newest attempt), found by its labels."""
    execution = cloud.execution(execution_name, view="FULL")
    labels = execution.get("labels") or {}
    if "run_digest" not in labels or "schedule_time" not in labels:
        raise WfrError(f"{execution_name} was not started through the proxy (no run_digest label)")
    workflow = execution_name.split("/executions/")[0]
    records = ledger.attempts(cloud, workflow, from_label(labels["schedule_time"]), labels["run_digest"])
    if not records:
        raise WfrError(f"{execution_name}: its run has no ledger record")
    return records[-1].name


def rerun_records(cloud: Cloud, records: list[str], reprocess: str) -> list[Rerun]:
    """Re-run the runs of `records`: one user action, so one request id (AIP-155) for all its
    POSTs to the proxy. A POST retried after a lost answer or a 503 (one element failed) is
    answered the attempts its first try made, never new ones (docs/proxy.md, request ids)."""
    request_id = str(uuid.uuid4())
    originals = [_original(cloud, name) for name in records]
    reruns = []
    groups: dict[tuple[str, str], list[_Original]] = {}
    for original in originals:
        groups.setdefault((original.workflow, original.timezone), []).append(original)
    for (workflow, zone), group in groups.items():
        for i in range(0, len(group), PROXY_ARRAY_MAX):
            chunk = group[i:i + PROXY_ARRAY_MAX]
            reruns += _post(cloud, workflow, zone, reprocess, chunk, request_id)
    return reruns


def _post(cloud: Cloud, workflow: str, zone: str, reprocess: str, chunk: list[_Original],
          request_id: str) -> list[Rerun]:
    try:
        answer = cloud.call_function("proxy", f"/v1/{workflow}/executions", [o.body for o in chunk],
                                     params={"timezone": zone, "reprocess": reprocess, "requestId": request_id})
    except ApiError as error:
        # The array form answers every element even when one failed (status = worst element).
        answer = error.body
        if not isinstance(answer, dict) or "executions" not in answer:
            raise
    reruns = []
    for original, element in zip(chunk, answer["executions"]):
        schedule_time = original.body.get("scheduleTime", "")
        if "error" in element:
            reruns.append(Rerun(original.record, schedule_time, False, None, element["error"].get("message")))
        else:
            reruns.append(Rerun(original.record, schedule_time, bool(element.get("started")), element.get("name")))
    return reruns


def failed_records(times: list[TimeStatus]) -> list[str]:
    return [t.record for t in times if t.rerun_by_failed and t.record]
