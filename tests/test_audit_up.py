"""The audit on `python -m localcloud up`, as an operator meets it: endpoints.json names it, the
stack's own job `audit` runs it every minute, a POST runs one pass, its lines go to
STATE/logs/audit.log, and `wfr alerts` lists what it raised (exit 3 while some is open).

One job, `hourly`, whose `since` makes exactly one past time due: it was never delivered, so it
is missing. However many passes run (the minutely job's and ours), it is raised once."""
from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from tests.wfr_stack import AUTH, ROOT, Up


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workflows")
    shutil.copy(ROOT / "workflows" / "example.yaml", folder / "nightly.yaml")
    due = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    jobs = tmp_path_factory.mktemp("jobs") / "jobs.json"
    jobs.write_text(json.dumps([{
        "name": "hourly", "schedule": f"0 {due.hour} * * *", "oidc": True,
        "uri": "{proxy}/v1/projects/local-project/locations/us-central1/workflows/nightly/executions"
               f"?timezone=Etc/UTC&since={due:%Y-%m-%dT%H:%M:%SZ}",
        "body": {"table": "audited"}}]))
    stack = Up(tmp_path_factory.mktemp("state"), folder, jobs)
    stack.due = due
    yield stack
    stack.stop()


def test_endpoints_name_the_audit_and_its_job_runs_every_minute(up):
    assert up.endpoints["audit"].startswith("http://127.0.0.1:")
    job = requests.get(f"{up.endpoints['scheduler']}/v1/projects/local-project/locations/us-central1/jobs/audit",
                       headers=AUTH, timeout=10).json()
    assert job["schedule"] == "* * * * *" and job["httpTarget"]["uri"] == up.endpoints["audit"]


def test_a_post_runs_one_pass_and_each_alert_is_logged_once(up):
    answers = [requests.post(up.endpoints["audit"], headers=AUTH, timeout=60) for _ in range(2)]
    assert all(answer.status_code == 200 for answer in answers)
    counts = [answer.json() for answer in answers]
    assert counts[1]["raised"] == {"missing": 0, "late": 0, "failed": 0, "paused": 0}  # raised already
    assert counts[0]["jobs"] == 1 and counts[0]["times"] == 1
    log = up.state / "logs" / "audit.log"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    raised = [line for line in lines if line.get("event") == "alert"]
    assert [(line["kind"], line["scheduleTime"]) for line in raised] == [
        ("missing", up.due.strftime("%Y-%m-%dT%H:%M:%S+00:00"))]
    assert sum(line.get("event") == "audit_pass" for line in lines) >= 2


def test_wfr_alerts_lists_them_newest_first_and_exits_3_while_one_is_open(up):
    requests.post(up.endpoints["audit"], headers=AUTH, timeout=60)
    done = up.wfr("alerts", "--format", "json")
    assert done.returncode == 3, done.stderr
    [alert] = json.loads(done.stdout)
    assert alert["kind"] == "missing" and alert["job"].endswith("/jobs/hourly") and alert["resolvedAt"] is None
    assert alert["workflow"].endswith("/workflows/nightly") and alert["attempt"] is None
    table = up.wfr("alerts")
    assert table.returncode == 3 and "missing" in table.stdout and "1 alerts, 1 open" in table.stdout


def test_wfr_alerts_filters_by_job_and_since(up):
    other = up.wfr("alerts", "--job", "other", "--format", "json")
    assert (other.returncode, json.loads(other.stdout)) == (0, [])
    later = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    future = up.wfr("alerts", "--since", later, "--format", "json")
    assert (future.returncode, json.loads(future.stdout)) == (0, [])
    bad = up.wfr("alerts", "--since", "yesterday")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "--since" in bad.stderr
