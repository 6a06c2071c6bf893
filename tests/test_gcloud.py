"""The real gcloud CLI (/usr/bin/gcloud) as a client of `python -m localcloud up`.

gcloud runs with a throwaway CLOUDSDK_CONFIG, configured by the STATE/gcloud.sh that `up` writes
(api_endpoint_overrides/{workflowexecutions,cloudscheduler,storage}, auth/access_token_file,
core/disable_usage_reporting), and with HTTP(S)_PROXY pointed at a closed loopback port and only
127.0.0.1 exempt, so any call that would leave the machine fails instead of reaching Google.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from localcloud.up import AUDIT_JOB
from tests.fake_gcloud.harness import FakeCloud
from tests.serving import ROOT

GCLOUD = shutil.which("gcloud")
pytestmark = pytest.mark.skipif(GCLOUD is None, reason="the gcloud CLI is not installed: the tests that "
                                                       "drive localcloud with the real gcloud are skipped")
LOCATION = "--location=us-central1"
HELLO = """
main:
  params: [input]
  steps:
    - pause:
        call: sys.sleep
        args:
          seconds: ${default(map.get(input, "sleep"), 0)}
    - answer:
        return: ${"hello " + input.name}
"""
FAIL = "- boom:\n    raise: {code: 7, message: boom}\n"


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    """`up` on the user's own folder, and a gcloud pointed at it by sourcing gcloud.sh."""
    home = tmp_path_factory.mktemp("gcloud")
    workflows = home / "workflows"
    workflows.mkdir()
    (workflows / "hello.yaml").write_text(HELLO)
    for name in ("listing", "scheduled", "deployed"):
        (workflows / f"{name}.yaml").write_text(HELLO)
    (workflows / "fail.yaml").write_text(FAIL)
    state = home / "state"
    process = subprocess.Popen([sys.executable, "-m", "localcloud", "up", "--workflows", str(workflows),
                                "--state", str(state)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stdout.readline()
        assert banner.startswith("localcloud is up"), banner + process.stderr.read()
        urls = json.loads((state / "endpoints.json").read_text())
        env = {**os.environ, "CLOUDSDK_CONFIG": str(home / "config"), "HTTPS_PROXY": "http://127.0.0.1:9",
               "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1", "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
        for name in ("https_proxy", "http_proxy", "no_proxy"):
            env.pop(name, None)
        sourced = subprocess.run(["bash", "-c", f". {state / 'gcloud.sh'} && env"], env=env,
                                 capture_output=True, text=True, timeout=300)
        assert sourced.returncode == 0, sourced.stderr
        env["CLOUDSDK_ACTIVE_CONFIG_NAME"] = "localcloud"

        def gcloud(*args, check=True):
            done = subprocess.run([GCLOUD, *args], env=env, capture_output=True, text=True, timeout=120)
            if check:
                assert done.returncode == 0, (args, done.stdout, done.stderr)
            return done
        yield urls, gcloud, state
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)


def as_json(done) -> object:
    return json.loads(done.stdout)


def test_up_writes_the_endpoints_contract(up):
    urls, _, state = up
    assert set(urls) >= {"project", "location", "api", "range", "proxy", "scheduler", "backfillWorkflow", "token"}
    ports = json.loads((state / "ports.json").read_text())
    assert [ports[name] for name in ("api", "range", "proxy", "scheduler")] == \
        [int(urls[name].rsplit(":", 1)[1]) for name in ("api", "range", "proxy", "scheduler")]


def test_workflows_run_waits_and_prints_the_result(up):
    _, gcloud, _ = up
    done = as_json(gcloud("workflows", "run", "hello", LOCATION, "--data", '{"name": "ada"}', "--format=json"))
    assert done["state"] == "SUCCEEDED" and json.loads(done["result"]) == "hello ada"


def test_a_failing_run_reports_the_error(up):
    _, gcloud, _ = up
    done = gcloud("workflows", "run", "fail", LOCATION, "--format=json", check=False)
    execution = as_json(done)
    assert execution["state"] == "FAILED"
    assert json.loads(execution["error"]["payload"]) == {"code": 7, "message": "boom"}


def test_execute_with_labels_and_levels_then_describe_and_wait(up):
    # gcloud workflows execute always sends executionHistoryLevel (the bug this stack once had).
    _, gcloud, _ = up
    started = as_json(gcloud("workflows", "execute", "hello", LOCATION, "--data", '{"name": "bo"}',
                             "--labels=team=data,run=one", "--call-log-level=log-errors-only",
                             "--execution-history-level=execution-history-detailed", "--format=json"))
    execution_id = started["name"].rsplit("/", 1)[1]
    waited = as_json(gcloud("workflows", "executions", "wait", execution_id, "--workflow=hello", LOCATION,
                            "--format=json"))
    assert waited["state"] == "SUCCEEDED"
    described = as_json(gcloud("workflows", "executions", "describe", execution_id, "--workflow=hello",
                               LOCATION, "--format=json"))
    assert described["labels"] == {"team": "data", "run": "one"}
    assert described["callLogLevel"] == "LOG_ERRORS_ONLY"
    assert described["executionHistoryLevel"] == "EXECUTION_HISTORY_DETAILED"
    assert json.loads(described["result"]) == "hello bo"


def test_executions_list_filters_pages_and_limits(up):
    _, gcloud, _ = up
    for number in range(3):
        gcloud("workflows", "run", "listing", LOCATION, "--data", json.dumps({"name": f"n{number}"}))
    gcloud("workflows", "run", "listing", LOCATION, "--data", "{}", check=False)   # no name: FAILED
    # --page-size 1: gcloud follows nextPageToken page after page. (gcloud filters on what the
    # list returns, view BASIC, which has no labels, as on Google.)
    listed = as_json(gcloud("workflows", "executions", "list", "listing", LOCATION, "--filter=state=SUCCEEDED",
                            "--page-size=1", "--format=json"))
    assert len(listed) == 3 and all(e["state"] == "SUCCEEDED" for e in listed)
    everything = as_json(gcloud("workflows", "executions", "list", "listing", LOCATION, "--format=json"))
    assert len(everything) == 4
    limited = as_json(gcloud("workflows", "executions", "list", "listing", LOCATION, "--limit=2",
                             "--format=json"))
    assert [e["name"] for e in limited] == [e["name"] for e in everything][:2]   # newest first
    failed = as_json(gcloud("workflows", "executions", "list", "listing", LOCATION, "--filter=state=FAILED",
                            "--format=json"))
    assert len(failed) == 1


def test_cancel_stops_a_running_execution(up):
    _, gcloud, _ = up
    started = as_json(gcloud("workflows", "execute", "hello", LOCATION, "--data", '{"name": "x", "sleep": 60}',
                             "--format=json"))
    execution_id = started["name"].rsplit("/", 1)[1]
    cancelled = as_json(gcloud("workflows", "executions", "cancel", execution_id, "--workflow=hello", LOCATION,
                               "--format=json"))
    assert cancelled["state"] == "CANCELLED"


def proxied_runs(gcloud, workflow: str) -> list[dict]:
    """The ended executions of `workflow`, in full (the list's BASIC view has no labels)."""
    deadline, runs = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        runs = as_json(gcloud("workflows", "executions", "list", workflow, LOCATION, "--format=json"))
        if runs and all(run["state"] != "ACTIVE" for run in runs):
            break
        time.sleep(0.5)
    return [as_json(gcloud("workflows", "executions", "describe", run["name"], "--format=json")) for run in runs]


def test_scheduler_jobs_through_gcloud_reach_the_proxy(up):
    urls, gcloud, state = up
    uri = f"{urls['proxy']}/v1/projects/local-project/locations/us-central1/workflows/scheduled/executions"
    created = as_json(gcloud("scheduler", "jobs", "create", "http", "greet", LOCATION, "--schedule=0 1 * * *",
                             f"--uri={uri}", "--http-method=post", "--message-body={\"name\": \"sched\"}",
                             "--headers=Content-Type=application/json", "--time-zone=Europe/Stockholm",
                             "--oidc-service-account-email=s@local-project.iam.gserviceaccount.com",
                             "--format=json"))
    assert created["state"] == "ENABLED" and created["httpTarget"]["oidcToken"]["audience"] == uri
    updated = as_json(gcloud("scheduler", "jobs", "update", "http", "greet", LOCATION, "--schedule=30 2 * * *",
                             "--format=json"))
    assert updated["schedule"] == "30 2 * * *" and updated["timeZone"] == "Europe/Stockholm"   # others kept
    assert updated["httpTarget"]["uri"] == uri
    gcloud("scheduler", "jobs", "pause", "greet", LOCATION)
    assert as_json(gcloud("scheduler", "jobs", "describe", "greet", LOCATION, "--format=json"))["state"] == "PAUSED"
    gcloud("scheduler", "jobs", "resume", "greet", LOCATION)
    gcloud("scheduler", "jobs", "run", "greet", LOCATION)
    runs = proxied_runs(gcloud, "scheduled")
    # The proxy started it: the scheduler's headers became the run's labels and scheduleTime.
    assert len(runs) == 1 and runs[0]["state"] == "SUCCEEDED"
    assert runs[0]["labels"]["trigger"] == "scheduler" and runs[0]["labels"]["scheduler_job"] == "greet"
    assert json.loads(runs[0]["argument"])["name"] == "sched"
    # Kept in the state folder, then deleted.
    # (beside the stack's own audit job, which `up` schedules every minute: docs/alerts.md)
    kept = [job["id"] for job in json.loads((state / "scheduler-jobs.json").read_text())]
    assert [job for job in kept if job != AUDIT_JOB["name"]] == ["greet"]
    gcloud("scheduler", "jobs", "delete", "greet", LOCATION, "--quiet")
    listed = as_json(gcloud("scheduler", "jobs", "list", LOCATION, "--format=json"))
    assert [job["name"].rsplit("/", 1)[-1] for job in listed] == [AUDIT_JOB["name"]]
    assert gcloud("scheduler", "jobs", "describe", "greet", LOCATION, check=False).returncode != 0


def test_deploy_sh_schedule_commands_work_against_the_local_scheduler(up, tmp_path):
    """deploy.sh's own `schedule` commands: recorded by running deploy.sh against the fake gcloud
    (whose proxy function has the local proxy's URL), then replayed with the real gcloud."""
    urls, gcloud, _ = up
    fake = FakeCloud(tmp_path, project="local-project", functions={
        "projects/local-project/locations/us-central1/functions/workflows-runner-proxy": {"uri": urls["proxy"]}})
    for schedule in ("0 1 * * *", "30 2 * * *"):        # create, then update: deploy.sh's two paths
        result = fake.run("schedule", "deployed", "--schedule", schedule, "--time-zone", "Europe/Stockholm",
                          "--body", '{"name": "deploy"}', "--region", "us-central1", "--project", "local-project")
        assert result.returncode == 0, result.stderr
        for argv in fake.changes():
            gcloud(*argv)
    job = as_json(gcloud("scheduler", "jobs", "describe", "workflows-runner-deployed", LOCATION, "--format=json"))
    assert job["schedule"] == "30 2 * * *" and job["retryConfig"]["retryCount"] == 5
    gcloud("scheduler", "jobs", "run", "workflows-runner-deployed", LOCATION)
    runs = proxied_runs(gcloud, "deployed")
    assert len(runs) == 1 and runs[0]["state"] == "SUCCEEDED"
    assert json.loads(runs[0]["argument"])["scheduleTime"].endswith(("+01:00", "+02:00"))
    gcloud("scheduler", "jobs", "delete", "workflows-runner-deployed", LOCATION, "--quiet")


def test_gcloud_storage_reads_the_run_ledger(up):
    """The ledger objects a proxied run leaves, as `gcloud storage` lists and reads them: `ls` asks
    for a directory listing (delimiter=/, includeFoldersAsPrefixes) with a partial response."""
    urls, gcloud, _ = up
    runs = f"gs://{urls['bucket']}/runs/local-project/us-central1/listing/"
    request = requests.post(f"{urls['proxy']}/v1/projects/local-project/locations/us-central1/workflows/listing/executions",
                            json={"name": "ledger", "scheduleTime": "2024-03-01T01:00:00Z"}, timeout=60)
    assert request.status_code == 200, request.text
    top = gcloud("storage", "ls", f"gs://{urls['bucket']}/").stdout.split()
    assert top == [f"gs://{urls['bucket']}/runs/"]
    assert gcloud("storage", "ls", runs).stdout.split() == [f"{runs}2024-03-01T01:00:00.000000Z/"]
    attempts = gcloud("storage", "ls", "--recursive", f"{runs}**").stdout.split()
    assert len(attempts) == 1 and attempts[0].endswith("/000001")
    claim = json.loads(gcloud("storage", "cat", attempts[0]).stdout)
    assert claim["scheduleTime"] == "2024-03-01T01:00:00+00:00" and claim["attempt"] == 1  # in the run's zone
    described = as_json(gcloud("storage", "objects", "describe", attempts[0], "--format=json"))
    assert described["custom_fields"]["execution"] == request.json()["name"]
