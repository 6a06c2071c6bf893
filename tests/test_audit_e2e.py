"""The audit end to end on the local stack: real deliveries through the proxy, real executions,
the audit function from its assembled source, POSTed as the Scheduler job posts it.

Two jobs over the last hours, set on their URIs (deadline, since, grace): job `hourly` (deadline
a day) has a time before `since`, a time never delivered, two that fail and two that succeed;
job `slow` (deadline one minute) has one time still running. A small control server tells each
run what to do (succeed, fail, sleep) by its scheduleTime, so re-runs of the same argument can end
differently. The oracles: the alert records listed from storage, and the log lines counted in
the function's own log file (each alert logged exactly once across all passes)."""
from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from localcloud import stack as local_stack

AUTH = {"Authorization": "Bearer localcloud"}
TARGET = """\
main:
  params: [input]
  steps:
    - ask:
        call: http.get
        args:
          url: ${input.control}
          query:
            time: ${input.scheduleTime}
        result: answer
    - decide:
        switch:
          - condition: ${answer.body.mode == "fail"}
            raise: ${"asked to fail at " + input.scheduleTime}
          - condition: ${answer.body.mode == "sleep"}
            next: nap
        next: done
    - nap:
        call: sys.sleep
        args:
          seconds: 20
    - done:
        return: ok
"""
# Cloud Logging's LogEntry.severity values (logging v2 discovery document, LogSeverity).
SEVERITIES = {"DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT", "EMERGENCY"}


class Control:
    """What each run does, by its scheduleTime: {"mode": "ok" | "fail" | "sleep"}."""

    def __init__(self):
        self.modes: dict[str, str] = {}
        control = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                text = parse_qs(urlsplit(self.path).query).get("time", [""])[0]
                body = json.dumps({"mode": control.modes.get(z(datetime.fromisoformat(text)), "ok")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"


def hours_ago(now: datetime, k: int) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=k)


def z(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    now = datetime.now(timezone.utc)
    t = {k: hours_ago(now, k) for k in range(1, 7)}
    control = Control()
    folder = tmp_path_factory.mktemp("workflows")
    (folder / "target.yaml").write_text(TARGET)
    path = f"/v1/projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows/target/executions"
    hourly = {"name": "hourly", "schedule": f"0 {','.join(str(t[k].hour) for k in range(1, 7))} * * *",
              "uri": "{proxy}" + path + f"?timezone=Etc/UTC&deadline=P1D&since={z(t[5])}&grace=PT5M&lookback=P1D",
              "body": {"control": control.url, "job": "hourly"}, "oidc": True,
              "headers": {"Content-Type": "application/json"}}
    slow = {"name": "slow", "schedule": f"0 {t[1].hour} * * *",
            "uri": "{proxy}" + path + f"?timezone=Etc/UTC&deadline=PT1M&since={z(t[1])}",
            "body": {"control": control.url, "job": "slow"}, "oidc": True,
            "headers": {"Content-Type": "application/json"}}
    state = tmp_path_factory.mktemp("state")
    stack = local_stack.start(state, folder, jobs=[hourly, slow], log_dir=state / "logs", audit=True,
                              api_log=lambda entry: None, scheduler_log=lambda entry: None)
    try:
        yield World(stack, control, t, state)
    finally:
        stack.stop()
        control.server.shutdown()


class World:
    def __init__(self, stack, control, t, state):
        self.stack, self.control, self.t, self.state = stack, control, t, state
        self.jobs = {job.name: job for job in stack.scheduler.scheduler.jobs.values()}

    def deliver(self, job: str, instant: datetime, reprocess: str | None = None) -> dict:
        """What Cloud Scheduler sends for one scheduled time (a re-run adds reprocess=failed)."""
        spec = self.jobs[job]
        uri = spec.uri + (f"&reprocess={reprocess}" if reprocess else "")
        answer = requests.post(uri, data=spec.body, timeout=60, headers={
            **AUTH, "Content-Type": "application/json", "X-CloudScheduler": "true",
            "X-CloudScheduler-JobName": f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/jobs/{job}",
            "X-CloudScheduler-ScheduleTime": z(instant)})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def wait(self, execution: str, states=("SUCCEEDED", "FAILED", "CANCELLED"), timeout=60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = requests.get(f"{self.stack.api.url}/v1/{execution}", headers=AUTH, timeout=10).json()
            if found["state"] in states or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def audit(self) -> dict:
        answer = requests.post(self.stack.audit_url, headers=AUTH, timeout=120)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def records(self) -> list[dict]:
        listing = requests.get(f"{self.stack.storage.url}/storage/v1/b/{local_stack.RUNS_BUCKET}/o",
                               params={"prefix": "alerts/"}, headers=AUTH, timeout=10).json()
        return [item["metadata"] for item in listing.get("items", [])]

    def log_lines(self) -> list[dict]:
        text = (self.state / "logs" / "audit.log").read_text()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def key(alert: dict) -> tuple:
    """(kind, job, scheduled instant, attempt) of an alert record or log line."""
    attempt = alert.get("attempt")
    return (alert["kind"], alert["job"].rsplit("/", 1)[-1], z(datetime.fromisoformat(alert["scheduleTime"])),
            None if attempt is None else int(attempt))


@pytest.fixture(scope="module")
def first_passes(world):
    """The scene: t6 (before since) and t5 never delivered; t4 and t3 fail; t2 and t1 succeed;
    slow's t1 sleeps past its one-minute deadline. Then two passes at once, and one more."""
    t = world.t
    world.control.modes.update({z(t[4]): "fail", z(t[3]): "fail"})
    runs = [world.deliver("hourly", t[k]) for k in (4, 3, 2, 1)]
    for run in runs:
        world.wait(run["name"])
    world.control.modes[z(t[1])] = "sleep"
    slow = world.deliver("slow", t[1])
    world.wait(slow["name"], states=("ACTIVE",))
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: world.audit(), range(2)))
    answers.append(world.audit())
    return answers


def test_each_kind_is_raised_for_its_time_and_nothing_else(world, first_passes):
    t = world.t
    assert sorted(key(a) for a in world.records()) == sorted([
        ("missing", "hourly", z(t[5]), None),
        ("failed", "hourly", z(t[4]), 1),
        ("failed", "hourly", z(t[3]), 1),
        ("late", "slow", z(t[1]), None),
    ])
    failed = [a for a in world.records() if a["kind"] == "failed"]
    assert all("asked to fail" in a["error"] and a["execution"].startswith("projects/") for a in failed)
    assert not any("resolvedAt" in a for a in world.records())


def test_concurrent_and_repeated_passes_raise_each_alert_once(world, first_passes):
    raised = [sum(answer["raised"].values()) for answer in first_passes]
    assert sum(raised) == 4 and raised[2] == 0, first_passes   # the third pass found them all raised
    lines = [line for line in world.log_lines() if line.get("event") == "alert"]
    assert sorted(key(line) for line in lines) == sorted(key(a) for a in world.records())


def test_log_lines_are_cloud_logging_structured_entries(world, first_passes):
    """https://cloud.google.com/logging/docs/structured-logging: one JSON object per line;
    severity (a LogSeverity) and message are read, the other fields become jsonPayload."""
    lines = world.log_lines()
    text = (world.state / "logs" / "audit.log").read_text()
    assert [json.loads(line) for line in text.splitlines() if line.startswith("{")] == lines
    alerts = [line for line in lines if line.get("event") == "alert"]
    assert alerts and all(line["severity"] in SEVERITIES and isinstance(line["message"], str) for line in lines)
    for line in alerts:
        assert {"kind", "job", "workflow", "scheduleTime", "raisedAt"} <= set(line)
        assert line["severity"] == {"missing": "ERROR", "failed": "ERROR", "late": "WARNING"}[line["kind"]]
        assert line["job"].rsplit("/", 1)[-1] in line["message"]


def test_rerun_to_success_resolves_and_a_failed_rerun_raises_attempt_two(world, first_passes):
    t = world.t
    world.control.modes[z(t[4])] = "ok"
    world.wait(world.deliver("hourly", t[4], reprocess="failed")["name"])
    world.wait(world.deliver("hourly", t[3], reprocess="failed")["name"])   # fails again
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: world.audit(), range(2)))
    assert sum(a["raised"]["failed"] for a in answers) == 1 and sum(a["resolved"] for a in answers) == 1, answers
    records = {key(a): a for a in world.records()}
    assert "resolvedAt" in records[("failed", "hourly", z(t[4]), 1)]
    assert "resolvedAt" not in records[("failed", "hourly", z(t[3]), 1)]
    assert ("failed", "hourly", z(t[3]), 2) in records
    resolved = [line for line in world.log_lines() if line.get("event") == "alert_resolved"]
    assert [(line["severity"], key(line)) for line in resolved] == [("INFO", ("failed", "hourly", z(t[4]), 1))]


def test_a_bad_request_is_answered_in_googles_error_shape(world):
    answer = requests.get(world.stack.audit_url, headers=AUTH, timeout=10)
    assert answer.status_code == 405 and answer.json()["error"]["code"] == 405
    answer = requests.post(world.stack.audit_url + "/nope", headers=AUTH, timeout=10)
    assert answer.status_code == 404 and answer.json()["error"]["status"] == "NOT_FOUND"


def test_wfr_status_says_late_where_the_jobs_deadline_passed(world, first_passes):
    """`wfr status --job` reads the job's deadline from its URI: slow's running time is late
    (deadline one minute), hourly's times that succeeded within a day are not."""
    import subprocess
    import sys
    from localcloud import up as local_up
    (world.state / "endpoints.json").write_text(json.dumps(local_up.endpoints(world.stack)))
    wfr = [str(Path(sys.executable).parent / "wfr"), "--local-state", str(world.state)]
    t = world.t

    def status(job: str) -> dict:
        done = subprocess.run([*wfr, "status", "target", "--job", job, "--start", z(t[6]), "--stop", z(t[1] + timedelta(minutes=1)),
                               "--format", "json"], capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, 3, 4, 5), done.stderr
        return {z(datetime.fromisoformat(time_["scheduleTime"])): time_ for time_ in json.loads(done.stdout)["times"]}
    slow = status("slow")
    assert slow[z(t[1])]["state"] == "running" and slow[z(t[1])]["late"] is True
    hourly = status("hourly")
    assert hourly[z(t[2])]["state"] == "succeeded" and hourly[z(t[2])]["late"] is False
    assert not any(time_["late"] for time_ in hourly.values())


def test_the_grid_marks_late_and_alerted_cells(world, first_passes):
    """The web grid's cells (docs/ui.md): data-late from the job's deadline, data-alert from the
    open alerts of the window (one ranged listing), matched to the time's run."""
    from workflows_runner import alerts, status, target
    from workflows_runner.cloud import Cloud
    from workflows_runner.ui.grid import cell
    from localcloud import up as local_up
    (world.state / "endpoints.json").write_text(json.dumps(local_up.endpoints(world.stack)))
    cloud = Cloud(target.local(world.state))
    t = world.t
    workflow = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows/target"
    now = datetime.now(timezone.utc)
    slow = status.read(cloud, workflow, status.Window(z(t[1]), z(t[1] + timedelta(minutes=1)), f"0 {t[1].hour} * * *"),
                       {"control": world.control.url, "job": "slow"}, deadline=timedelta(minutes=1))
    [late] = alerts.annotate(cloud, slow).times
    html = cell(late, now)
    assert 'data-late="true"' in html and 'data-alert="late"' in html and "late alerted" in html
    hourly = alerts.annotate(cloud, status.read(
        cloud, workflow, status.Window(z(t[6]), z(t[1]), "0 * * * *"), {"control": world.control.url, "job": "hourly"},
        deadline=timedelta(days=1)))
    marks = {z(x.instant): x.alerts for x in hourly.times}
    # t3 failed twice (two open alerts, one mark); t4's failure was resolved by its re-run.
    assert marks[z(t[5])] == ("missing",) and marks[z(t[3])] == ("failed",) and marks[z(t[2])] == ()
    assert marks[z(t[4])] == ()
    assert marks[z(t[6])] == ()   # before since: never alerted
    assert 'data-alert=""' in cell(hourly.times[-1], now) and 'data-late="false"' in cell(hourly.times[-1], now)


def test_a_queued_time_is_neither_missing_nor_failed_and_late_past_its_deadline(world):
    """A time waiting for a slot (overlap=queue: ledger state WAITING, no execution, written here
    by hand as docs/ledger.md describes it) is claimed: no `missing` and no `failed`; still queued
    past its deadline it is `late`, as a running one is (docs/alerts.md). Beside it, a time of the
    same job with no attempt is `missing`, so the pass did look at the window."""
    from tests.waiting_records import write_waiting
    t = world.t
    path = f"/v1/projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows/target/executions"
    body = {"control": world.control.url, "job": "queued"}
    job = {"name": f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/jobs/queued",
           "schedule": f"0 {t[3].hour},{t[2].hour} * * *", "timeZone": "Etc/UTC",
           "httpTarget": {"uri": f"{world.stack.proxy_url}{path}?timezone=Etc/UTC&overlap=queue&deadline=PT1M"
                                 f"&since={z(t[3])}&grace=PT5M&lookback=P1D",
                          "httpMethod": "POST", "body": base64.b64encode(json.dumps(body).encode()).decode()}}
    created = requests.post(f"{world.stack.scheduler.url}/v1/projects/{local_stack.PROJECT}/locations/"
                            f"{local_stack.LOCATION}/jobs", json=job, headers=AUTH, timeout=30)
    assert created.status_code == 200, created.text
    write_waiting(world.stack.storage.url, local_stack.RUNS_BUCKET,
                  f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows/target", z(t[2]), body,
                  job=job["name"])
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: world.audit(), range(2)))
    assert sorted(key(a) for a in world.records() if a["job"].endswith("/jobs/queued")) == [
        ("late", "queued", z(t[2]), None), ("missing", "queued", z(t[3]), None)]
    # wfr status and the grid say the same of it: queued, and late (the table: "◷ queued, late").
    from workflows_runner import status, target
    from workflows_runner.cloud import Cloud
    from workflows_runner.ui.grid import cell
    from localcloud import up as local_up
    (world.state / "endpoints.json").write_text(json.dumps(local_up.endpoints(world.stack)))
    read = status.read(Cloud(target.local(world.state)),
                       f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows/target",
                       status.Window(z(t[3]), z(t[2] + timedelta(minutes=1)), job["schedule"], "Etc/UTC"), body,
                       deadline=timedelta(minutes=1))
    assert [(x.state, x.late) for x in read.times] == [("missing", False), ("queued", True)]
    html = cell(read.times[1], datetime.now(timezone.utc))
    assert 'class="cell s-queued late"' in html and 'data-late="true"' in html and "◷ queued, attempt 1, -, late" in html
