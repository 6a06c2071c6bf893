"""One run identity for the proxy and wfr (issue 23, case 1): the same bodies fed to both sides
give the same run digests, Execution-shaped bodies included, so a migrated job's scheduled runs
and its `wfr backfill --job` runs are the same runs."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import requests

from localcloud import stack as local_stack
from localcloud import up as local_up
from tests.serving import load_module
from workflows_runner import identity

AUTH = {"Authorization": "Bearer localcloud"}
ROOT = local_stack.ROOT
WFR = [sys.executable, "-m", "workflows_runner.cli"]
WORKFLOW = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows/example"

# Bodies as Scheduler jobs send them: plain arguments, and Execution resources (Google's guide).
BODIES = [
    {},
    {"table": "sales", "n": [1, 2.5, None], "ü": "é"},
    {"argument": "{\"firstName\": \"Sherlock\"}"},
    {"argument": "{\"b\": 2, \"a\": 1}", "callLogLevel": "LOG_ERRORS_ONLY", "labels": {"team": "data"}},
    {"argument": "", "executionHistoryLevel": "EXECUTION_HISTORY_BASIC",
     "disableConcurrencyQuotaOverflowBuffering": True},
    {"argument": "{\"argument\": \"{}\"}"},          # a wrapped argument that itself looks like one
    {"argument": {"a": 1}},                          # not a string: a plain argument
    {"argument": "{}", "table": "x"},                # another key: a plain argument
    {"callLogLevel": "LOG_NONE"},                    # no argument: a plain argument
]


def test_the_execution_fields_are_the_proxys():
    execution_body = load_module("proxy", "execution_body")
    assert identity.EXECUTION_FIELDS == execution_body.EXECUTION_FIELDS


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    started = local_stack.start(state, jobs=[], api_log=lambda entry: None, scheduler_log=lambda entry: None)
    (state / "endpoints.json").write_text(json.dumps(local_up.endpoints(started)))
    yield started, state
    started.stop()


@pytest.mark.parametrize("index", range(len(BODIES)))
def test_the_proxy_and_wfr_give_a_body_the_same_run_digest(stack, index):
    started, _ = stack
    body = BODIES[index]
    when = f"2031-01-01T00:{index:02d}:00Z"
    answer = requests.post(started.proxy_path("example"), json=body, timeout=30,
                           headers={"X-CloudScheduler-ScheduleTime": when})
    assert answer.status_code == 200, answer.text
    execution = requests.get(f"{started.api.url}/v1/{answer.json()['name']}", params={"view": "FULL"},
                             headers=AUTH, timeout=10).json()
    instant = datetime(2031, 1, 1, 0, index, tzinfo=timezone.utc)
    assert execution["labels"]["run_digest"] == identity.run_digest(WORKFLOW, instant, identity.run_argument(body))


def test_a_migrated_jobs_backfill_finds_its_scheduled_runs_and_starts_none(stack):
    """The job posts an Execution (as `deploy.sh migrate` leaves it); its deliveries and
    `wfr status --job` / `wfr backfill --job` name the same runs."""
    started, state = stack
    job_id = "migrated"
    body = {"argument": json.dumps({"case": "migrated"}), "callLogLevel": "LOG_ERRORS_ONLY"}
    job = {"schedule": "* * * * *", "timeZone": "Etc/UTC", "httpTarget": {
        "uri": started.proxy_path("example"), "httpMethod": "POST",
        "body": base64.b64encode(json.dumps(body).encode()).decode()}}
    parent = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}"
    created = requests.post(f"{started.scheduler.url}/v1/{parent}/jobs", json={
        **job, "name": f"{parent}/jobs/{job_id}"}, headers=AUTH, timeout=10)
    assert created.status_code == 200, created.text
    paused = requests.post(f"{started.scheduler.url}/v1/{parent}/jobs/{job_id}:pause", headers=AUTH, timeout=10)
    assert paused.status_code == 200, paused.text  # only the deliveries below, none of today's
    times = [f"2031-02-01T00:0{minute}:00Z" for minute in range(3)]
    for when in times:  # the deliveries, as Cloud Scheduler sends them
        answer = requests.post(started.proxy_path("example"), json=body, timeout=30,
                               headers={"X-CloudScheduler-ScheduleTime": when, "X-CloudScheduler-JobName": job_id})
        assert answer.status_code == 200 and answer.json()["started"], answer.text
    window = ["--start", "2031-02-01T00:00:00Z", "--stop", "2031-02-01T00:03:00Z", "--job", job_id]
    status = wfr(state, "status", "example", *window, "--format", "json")
    assert status.returncode in (0, 3), status.stderr
    assert not [t for t in json.loads(status.stdout)["times"] if t["state"] == "missing"]
    backfill = wfr(state, "backfill", "start", "example", *window, "--reprocess", "none", "--no-follow", "--format", "json")
    assert backfill.returncode == 0, backfill.stderr
    name = json.loads(backfill.stdout)["name"]
    started.api.executions.wait(name, timeout=60)
    result = json.loads(requests.get(f"{started.api.url}/v1/{name}", headers=AUTH, timeout=10).json()["result"])
    assert result["started"] == 0 and result["planned"] == 3
    runs = requests.get(f"{started.api.url}/v1/{WORKFLOW}/executions", headers=AUTH, timeout=10, params={
        "filter": f'labels.scheduler_job="{job_id}"', "pageSize": 100}).json()["executions"]
    assert len(runs) == 3


def wfr(state, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*WFR, *args, "--local-state", str(state)], cwd=ROOT, capture_output=True, text=True, timeout=120)
