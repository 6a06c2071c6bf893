"""A scheduled time queued by its job's overlap=queue, written into a stack's run ledger by hand:
attempt 1 in state WAITING with no execution, its content the usual claim (docs/ledger.md). So
the reading side (`wfr status`, the grid, the audit) is tested on the record the contract
describes, whoever writes it."""
from __future__ import annotations

import json
import uuid

import requests

from workflows_runner import identity, ledger

AUTH = {"Authorization": "Bearer localcloud"}


def write_waiting(storage: str, bucket: str, workflow: str, schedule_time: str, params: dict,
                  timezone: str = "Etc/UTC", job: str | None = None) -> str:
    """Create runs/P/L/W/INSTANT/DIGEST/000001 as WAITING (ifGenerationMatch=0, as a claim is);
    its object name."""
    instant = identity.parse_instant(schedule_time)
    name = ledger.run_prefix(workflow, instant, identity.run_digest(workflow, instant, params)) + "000001"
    content = {"workflow": workflow, "scheduleTime": schedule_time, "timezone": timezone,
               "argument": json.dumps({**params, "scheduleTime": schedule_time}), "trigger": "scheduler",
               "job": job, "backfill": None, "attempt": 1}
    resource = {"name": name, "metadata": {"state": "WAITING", "claim": uuid.uuid4().hex}}
    body = (f"--B\r\nContent-Type: application/json\r\n\r\n{json.dumps(resource)}\r\n"
            f"--B\r\nContent-Type: application/json\r\n\r\n{json.dumps(content)}\r\n--B--\r\n")
    answer = requests.post(f"{storage}/upload/storage/v1/b/{bucket}/o", data=body.encode(), timeout=30,
                           params={"uploadType": "multipart", "ifGenerationMatch": "0"},
                           headers={**AUTH, "Content-Type": "multipart/related; boundary=B"})
    answer.raise_for_status()
    return name
