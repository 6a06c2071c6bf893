"""pauseAfter end to end on the local stack (docs/proxy.md, "Overlap and failure policies"):
a job with pauseAfter=2 whose two last times failed is PAUSED by one audit pass, which raises
one `paused` alert; a second pass pauses nothing again. Oracles: the Scheduler API's job state
and the alert records in the runs bucket."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from localcloud import stack as local_stack

AUTH = {"Authorization": "Bearer localcloud"}
TARGET = """\
main:
  params: [input]
  steps:
    - fail:
        raise: "always fails"
"""
PATH = f"/v1/projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows/target/executions"
JOB = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/jobs/failing"


def z(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    now = datetime.now(timezone.utc)
    hours = [now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=k) for k in (3, 2, 1)]
    folder = tmp_path_factory.mktemp("workflows")
    (folder / "target.yaml").write_text(TARGET)
    job = {"name": "failing", "schedule": f"0 {','.join(str(h.hour) for h in hours)} * * *",
           "uri": "{proxy}" + PATH + f"?timezone=Etc/UTC&since={z(hours[0])}&grace=PT5M&pauseAfter=2",
           "body": {"job": "failing"}, "oidc": True, "headers": {"Content-Type": "application/json"}}
    state = tmp_path_factory.mktemp("state")
    started = local_stack.start(state, folder, jobs=[job], log_dir=state / "logs", audit=True,
                                api_log=lambda entry: None, scheduler_log=lambda entry: None)
    from localcloud import up as local_up
    (state / "endpoints.json").write_text(json.dumps(local_up.endpoints(started)))
    started.state_dir = state
    try:
        yield started, hours
    finally:
        started.stop()


def deliver(stack, instant: datetime) -> dict:
    answer = requests.post(stack.proxy_url + PATH + "?timezone=Etc/UTC&pauseAfter=2", data=json.dumps({"job": "failing"}),
                           timeout=60, headers={**AUTH, "Content-Type": "application/json", "X-CloudScheduler": "true",
                                                "X-CloudScheduler-JobName": JOB, "X-CloudScheduler-ScheduleTime": z(instant)})
    assert answer.status_code == 200, answer.text
    return answer.json()


def job_state(stack) -> str:
    return requests.get(f"{stack.scheduler.url}/v1/{JOB}", headers=AUTH, timeout=10).json()["state"]


def paused_alerts(stack) -> list[dict]:
    listing = requests.get(f"{stack.storage.url}/storage/v1/b/{local_stack.RUNS_BUCKET}/o",
                           params={"prefix": "alerts/"}, headers=AUTH, timeout=10).json()
    return [item["metadata"] for item in listing.get("items", []) if item["name"].endswith("/paused")]


def test_two_consecutive_failed_times_pause_the_job_within_one_audit_pass(stack):
    stack, hours = stack
    for instant in hours[1:]:
        execution = deliver(stack, instant)["name"]
        deadline = time.monotonic() + 30
        while requests.get(f"{stack.api.url}/v1/{execution}", headers=AUTH, timeout=10).json()["state"] == "ACTIVE":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert job_state(stack) == "ENABLED"
    answer = requests.post(stack.audit_url, headers=AUTH, timeout=120)
    assert answer.status_code == 200, answer.text
    assert answer.json()["raised"]["paused"] == 1
    assert job_state(stack) == "PAUSED"
    (alert,) = paused_alerts(stack)
    assert datetime.fromisoformat(alert["scheduleTime"]) == hours[2]
    # A second pass raises and pauses nothing more (resumed by hand, it stays resumed).
    requests.post(f"{stack.scheduler.url}/v1/{JOB}:resume", headers=AUTH, json={}, timeout=10)
    assert requests.post(stack.audit_url, headers=AUTH, timeout=120).json()["raised"]["paused"] == 0
    assert job_state(stack) == "ENABLED" and len(paused_alerts(stack)) == 1


def test_wfr_resume_resumes_a_paused_job_after_its_dry_run(stack):
    import subprocess
    import sys
    from pathlib import Path
    stack, _ = stack

    def wfr(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(Path(sys.executable).parent / "wfr"), "--local-state", str(stack.state_dir), *args],
                              capture_output=True, text=True, timeout=120)
    refused = wfr("resume", "failing")
    assert refused.returncode == 1 and "not PAUSED" in refused.stderr   # enabled: nothing to resume
    requests.post(f"{stack.scheduler.url}/v1/{JOB}:pause", headers=AUTH, json={}, timeout=10)
    dry = wfr("resume", "failing", "--backfill", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    # The paused alert was raised moments ago; an hourly schedule had no time since.
    assert "nothing to backfill" in dry.stdout and "nothing resumed" in dry.stdout
    assert job_state(stack) == "PAUSED"
    done = wfr("resume", "failing", "--backfill")
    assert done.returncode == 0, done.stderr
    assert job_state(stack) == "ENABLED" and "resumed" in done.stdout
