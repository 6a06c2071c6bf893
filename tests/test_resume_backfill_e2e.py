"""`wfr resume JOB --backfill` end to end on the local stack (docs/cli.md): a job with
pauseAfter=2 whose target's upstream is down fails twice, one audit pass pauses it, the local
Cloud Scheduler then lets a scheduled minute pass undelivered ("the system will stop executing
the job until it is re-enabled": cloudscheduler v1 jobs.pause), and `wfr resume --backfill` prints that time in
its dry run, resumes the job and backfills it once, leaving the failed times alone.

The job runs every minute (Cloud Scheduler's cron has no seconds, and neither has the range
function), so the test waits for the next minute to pass while the job is paused: about half a
minute, a minute at worst. Oracles: the Executions API (each run's argument says its time), the
run ledger's records, and the Scheduler API's job state."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from localcloud import stack as local_stack
from workflows_runner import ledger

AUTH = {"Authorization": "Bearer localcloud"}
# The target asks an upstream the test turns on and off: down (503), http.get raises and the run fails.
TARGET = """\
main:
  params: [input]
  steps:
    - ask:
        call: http.get
        args:
          url: ${input.upstream}
    - done:
        return: ${input.scheduleTime}
"""
ROOT = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}"
WORKFLOW = f"{ROOT}/workflows/target"
GRACE = 5          # seconds: the job's grace, so the audit judges a minute 5 s after it
MINUTE = timedelta(minutes=1)
WFR = Path(sys.executable).parent / "wfr"


def z(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def minute_of(instant: datetime) -> datetime:
    return instant.replace(second=0, microsecond=0)


def sleep_until(instant: datetime) -> None:
    time.sleep(max(0.0, (instant - datetime.now(timezone.utc)).total_seconds()))


class Upstream:
    """What the target's runs call: 503 while `down`, else 200."""

    def __init__(self):
        self.down = True
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(503 if upstream.down else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class World:
    def __init__(self, stack, state: Path, upstream: Upstream, first: datetime):
        self.stack, self.state, self.upstream, self.first = stack, state, upstream, first
        self.body = {"upstream": upstream.url}

    def wfr(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(WFR), "--local-state", str(self.state), *args],
                              capture_output=True, text=True, timeout=120)

    def job_state(self, job: str) -> str:
        answer = requests.get(f"{self.stack.scheduler.url}/v1/{ROOT}/jobs/{job}", headers=AUTH, timeout=10)
        return answer.json()["state"]

    def deliver(self, instant: datetime) -> str:
        """What Cloud Scheduler sends for one time of the job `flaky`; the run's execution."""
        answer = requests.post(f"{self.stack.proxy_path('target')}?timezone=Etc/UTC", data=json.dumps(self.body),
                               timeout=60, headers={**AUTH, "Content-Type": "application/json",
                                                    "X-CloudScheduler": "true",
                                                    "X-CloudScheduler-JobName": f"{ROOT}/jobs/flaky",
                                                    "X-CloudScheduler-ScheduleTime": z(instant)})
        assert answer.status_code == 200, answer.text
        return answer.json()["name"]

    def wait(self, execution: str) -> dict:
        deadline = time.monotonic() + 60
        while True:
            found = requests.get(f"{self.stack.api.url}/v1/{execution}", headers=AUTH, timeout=10).json()
            if found["state"] not in ("ACTIVE", "QUEUED"):
                return found
            assert time.monotonic() < deadline, found
            time.sleep(0.1)

    def runs(self) -> dict[datetime, list[dict]]:
        """The target's executions by the scheduled time in their argument (the Executions API)."""
        found: dict[datetime, list[dict]] = {}
        params = {"view": "FULL", "pageSize": 100}
        while True:
            page = requests.get(f"{self.stack.api.url}/v1/{WORKFLOW}/executions", params=params, headers=AUTH,
                                timeout=30).json()
            for execution in page.get("executions", []):
                instant = datetime.fromisoformat(json.loads(execution["argument"])["scheduleTime"])
                found.setdefault(instant, []).append(execution)
            if not page.get("nextPageToken"):
                return found
            params["pageToken"] = page["nextPageToken"]

    def records(self, instant: datetime) -> list[ledger.Record]:
        """The run ledger's attempts of one time (docs/ledger.md)."""
        listing = requests.get(f"{self.stack.storage.url}/storage/v1/b/{local_stack.RUNS_BUCKET}/o", headers=AUTH,
                               params={"prefix": ledger.workflow_prefix(WORKFLOW) + ledger.instant_key(instant) + "/"},
                               timeout=10).json()
        return [r for r in map(ledger.parse, listing.get("items", [])) if r is not None]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    upstream = Upstream()
    first = minute_of(datetime.now(timezone.utc)) - MINUTE
    folder = tmp_path_factory.mktemp("workflows")
    (folder / "target.yaml").write_text(TARGET)
    path = f"/v1/{WORKFLOW}/executions?timezone=Etc/UTC"
    common = {"oidc": True, "headers": {"Content-Type": "application/json"}}
    jobs = [{"name": "flaky", "schedule": "* * * * *", "body": {"upstream": upstream.url},
             "uri": "{proxy}" + path + f"&since={z(first)}&grace=PT{GRACE}S&pauseAfter=2", **common},
            # No pauseAfter: paused by hand only. Its time never comes during the test.
            {"name": "plain", "schedule": "0 0 1 1 *", "body": {"plain": True}, "uri": "{proxy}" + path, **common},
            {"name": "yearly", "schedule": "0 0 1 1 *", "body": {"yearly": True}, "uri": "{proxy}" + path, **common}]
    state = tmp_path_factory.mktemp("state")
    stack = local_stack.start(state, folder, jobs=jobs, log_dir=state / "logs", audit=True,
                              api_log=lambda entry: None, scheduler_log=lambda entry: None)
    from localcloud import up as local_up
    (state / "endpoints.json").write_text(json.dumps(local_up.endpoints(stack)))
    try:
        yield World(stack, state, upstream, first)
    finally:
        stack.stop()
        upstream.server.shutdown()


def test_resume_backfill_runs_once_each_time_missed_while_paused_and_leaves_the_failed_alone(world):
    # Two failed times in a row, delivered as Cloud Scheduler delivers them: the minute before
    # the stack started and this one (the scheduler delivers any later minute itself, and it fails too).
    failed = [world.first, world.first + MINUTE]
    sleep_until(failed[-1] + timedelta(seconds=GRACE + 1))   # old enough for the audit to judge
    for instant in failed:
        assert world.wait(world.deliver(instant))["state"] == "FAILED"
    if datetime.now(timezone.utc).second >= 50:   # keep the pass clear of a minute's delivery
        sleep_until(minute_of(datetime.now(timezone.utc)) + MINUTE + timedelta(seconds=GRACE + 1))
    pass_ = requests.post(world.stack.audit_url, headers=AUTH, timeout=120)
    assert pass_.status_code == 200, pass_.text
    assert pass_.json()["raised"]["paused"] == 1
    assert world.job_state("flaky") == "PAUSED"
    alerts = json.loads(world.wfr("alerts", "--format", "json").stdout)
    assert [a["job"].rsplit("/", 1)[-1] for a in alerts if a["kind"] == "paused"] == ["flaky"]

    # The upstream is back; a minute passes while the job is paused: nothing delivers it.
    world.upstream.down = False
    missed = minute_of(datetime.now(timezone.utc)) + MINUTE
    sleep_until(missed + timedelta(seconds=GRACE + 1))   # past its grace; the scheduler ticks every 0.5 s
    before = world.runs()
    ran = sorted(before)                           # every time that has a run: the failed ones, and any delivered
    assert missed not in before and all(t < missed for t in ran)
    status = json.loads(world.wfr("status", "target", "--job", "flaky", "--start", z(failed[0]),
                                  "--stop", z(missed + timedelta(seconds=1)), "--format", "json").stdout)
    assert {datetime.fromisoformat(t["scheduleTime"]): t["state"] for t in status["times"]}[missed] == "missing"
    pass_ = requests.post(world.stack.audit_url, headers=AUTH, timeout=120).json()
    assert pass_["raised"] == {"missing": 1, "late": 0, "failed": 0, "paused": 0}, pass_   # the paused time

    dry = world.wfr("resume", "flaky", "--backfill", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    listed = [datetime.fromisoformat(t) for t in re.findall(r"^  (\S+)$", dry.stdout, re.MULTILINE)]
    assert listed == [missed], dry.stdout
    assert "nothing resumed" in dry.stdout and world.job_state("flaky") == "PAUSED"

    done = world.wfr("resume", "flaky", "--backfill")
    assert done.returncode == 0, done.stderr
    assert world.job_state("flaky") == "ENABLED"
    backfill_id = re.search(r"^backfill (\S+) started", done.stdout, re.MULTILINE)[1]
    followed = world.wfr("backfill", "show", backfill_id, "--follow")
    assert followed.returncode == 0, followed.stdout + followed.stderr   # outcome succeeded
    backfill = requests.get(f"{world.stack.api.url}/v1/{ROOT}/workflows/backfill/executions/{backfill_id}",
                            headers=AUTH, timeout=10).json()
    argument = json.loads(backfill["argument"])
    assert argument["reprocess"] == "none" and argument["params"] == world.body

    after = world.runs()
    (run,) = after[missed]                                    # one run, started by that backfill
    assert run["state"] == "SUCCEEDED" and run["labels"]["backfill"] == backfill_id
    assert [(r.attempt, r.execution) for r in world.records(missed)] == [(1, run["name"])]
    for instant in ran:                                       # reprocess none: the failed left alone
        assert [e["name"] for e in after[instant]] == [e["name"] for e in before[instant]]
        assert [r.attempt for r in world.records(instant)] == [1]
    for instant in failed:
        assert [e["state"] for e in after[instant]] == ["FAILED"]
    started = [t for t, runs in after.items() if any(e["labels"].get("backfill") == backfill_id for e in runs)]
    assert sorted(started) == listed                          # the dry run listed exactly what ran

    # The next audit pass resolves the missed time's alert; the paused alert's time is still failed.
    assert requests.post(world.stack.audit_url, headers=AUTH, timeout=120).json()["resolved"] == 1
    alerts = {(a["kind"], datetime.fromisoformat(a["scheduleTime"])): a
              for a in json.loads(world.wfr("alerts", "--format", "json").stdout)}
    assert alerts["missing", missed]["resolvedAt"] is not None
    assert [a["resolvedAt"] for (kind, _), a in alerts.items() if kind == "paused"] == [None]
    # Re-running the failed times (what the resume left alone) resolves the paused alert with its time.
    rerun = world.wfr("rerun", "target", "--failed", "--job", "flaky", "--start", z(failed[0]), "--stop", z(missed))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for instant in ran:
        attempts = sorted((e["labels"]["attempt"], world.wait(e["name"])["state"]) for e in world.runs()[instant])
        assert attempts == [("1", "FAILED"), ("2", "SUCCEEDED")]
    requests.post(world.stack.audit_url, headers=AUTH, timeout=120)
    paused = [a for a in json.loads(world.wfr("alerts", "--format", "json").stdout) if a["kind"] == "paused"]
    assert [a["resolvedAt"] is not None for a in paused] == [True]


def test_unknown_job_is_one_line_naming_it(world):
    done = world.wfr("resume", "nosuch")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == f"wfr: job nosuch not found ({ROOT}/jobs/nosuch)\n"


def test_a_job_not_paused_is_refused(world):
    done = world.wfr("resume", "plain", "--backfill")
    assert done.returncode == 1
    assert done.stderr == "wfr: job plain is ENABLED, not PAUSED: nothing to resume\n"


def test_backfill_of_a_job_its_policy_did_not_pause_is_refused_before_resuming(world):
    requests.post(f"{world.stack.scheduler.url}/v1/{ROOT}/jobs/plain:pause", headers=AUTH, json={}, timeout=10)
    refused = world.wfr("resume", "plain", "--backfill")
    assert refused.returncode == 1 and "plain has no paused alert" in refused.stderr, refused.stderr
    assert world.job_state("plain") == "PAUSED"               # checked before anything started
    dry = world.wfr("resume", "plain", "--dry-run")
    assert dry.returncode == 0 and "would be resumed" in dry.stdout and world.job_state("plain") == "PAUSED"
    done = world.wfr("resume", "plain")                       # without --backfill: any paused job
    assert done.returncode == 0 and "resumed job plain" in done.stdout
    assert world.job_state("plain") == "ENABLED"


def test_a_backfill_that_cannot_start_after_the_resume_says_so_and_how_to_start_it(world, tmp_path):
    """The resume is done when the backfill's create fails (here: a backfill workflow that is not
    deployed), so the error says the job is resumed and prints the command that starts the rest."""
    from workflows_runner import alerts, target
    from workflows_runner.cloud import Cloud
    from workflows_runner.identity import run_digests
    # As the audit would have raised it: paused last 31 December, before the job's yearly time.
    last_failed = datetime(2025, 12, 31, tzinfo=timezone.utc)
    alert = alerts.Alert(kind="paused", job=f"{ROOT}/jobs/yearly", workflow=WORKFLOW, scheduleTime=z(last_failed),
                         attempt=None, execution=None, error="paused after 2 consecutive failed scheduled times",
                         raisedAt="2025-12-31T12:00:00Z")
    (digest,) = run_digests(WORKFLOW, [last_failed], {"yearly": True})
    assert alerts.raise_once(Cloud(target.local(world.state)), alert, digest)
    requests.post(f"{world.stack.scheduler.url}/v1/{ROOT}/jobs/yearly:pause", headers=AUTH, json={}, timeout=10)
    endpoints = json.loads((world.state / "endpoints.json").read_text())
    (tmp_path / "endpoints.json").write_text(json.dumps({**endpoints, "backfillWorkflow": "not-deployed"}))
    broken = subprocess.run([str(WFR), "--local-state", str(tmp_path), "resume", "yearly", "--backfill"],
                            capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1 and "  2026-01-01T00:00:00+00:00\n" in broken.stdout, broken.stdout
    assert broken.stdout.splitlines()[0] == ("job yearly was paused at 2025-12-31T12:00:00Z by its pauseAfter policy "
                                             "(its last failed time: 2025-12-31T00:00:00Z)")   # one line on a pipe
    assert world.job_state("yearly") == "ENABLED"
    (line,) = broken.stderr.splitlines()
    assert line.startswith("wfr: job yearly is resumed, but the backfill of the times it missed did not start: ")
    command = shlex.split(line.split("; start it with: ")[1])
    assert command[:5] == ["wfr", "backfill", "start", "target", "--job"]
    assert command[-2:] == ["--local-state", str(tmp_path)]
    started = world.wfr(*command[1:-2], "--no-follow")                 # the printed command, on the whole stack
    assert started.returncode == 0, started.stderr
    backfill_id = re.search(r"^backfill (\S+) started", started.stdout, re.MULTILINE)[1]
    assert world.wfr("backfill", "show", backfill_id, "--follow").returncode in (0, 3)   # it ends
    (run,) = world.runs()[datetime(2026, 1, 1, tzinfo=timezone.utc)]
    assert run["labels"]["backfill"] == backfill_id and json.loads(run["argument"])["yearly"] is True
