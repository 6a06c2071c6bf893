"""The local Cloud Scheduler: real HTTP POSTs to a pytest-httpserver, a test clock for the minutes.

Expected headers follow Cloud Scheduler's docs (configuring/deduplicate-job-requests,
google/cloud/scheduler/v1/target.proto): X-CloudScheduler, X-CloudScheduler-JobName,
X-CloudScheduler-ScheduleTime (the scheduled instant, RFC 3339 with the zone's UTC offset) and
User-Agent Google-Cloud-Scheduler; a forced run carries the next scheduled time or no header.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim
from werkzeug import Response

from localcloud import scheduler
from localcloud.scheduler import Scheduler, job_from_config, load_jobs

UTC = timezone.utc


class Clock:
    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def quiet(entry):  # keep test output clean
    pass


def make(jobs, start, **kwargs):
    clock = Clock(start)
    return Scheduler([job_from_config(job) for job in jobs], clock=clock, log=quiet, **kwargs), clock


def requests_to(httpserver):
    return [request for request, _ in httpserver.log]


def test_fires_each_scheduled_minute_with_cloud_scheduler_headers(httpserver):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    job = {"name": "every-minute", "schedule": "* * * * *", "uri": httpserver.url_for("/hook"),
           "headers": {"Content-Type": "application/json"}, "body": {"a": 1}, "oidc": True}
    sched, clock = make([job], datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC))

    assert sched.run_pending(wait=True) == []          # nothing is due before the next minute
    clock.now = datetime(2024, 1, 1, 0, 3, 10, tzinfo=UTC)
    sched.run_pending(wait=True)

    seen = requests_to(httpserver)
    assert sorted(r.headers["X-CloudScheduler-ScheduleTime"] for r in seen) == [
        "2024-01-01T00:01:00Z", "2024-01-01T00:02:00Z", "2024-01-01T00:03:00Z"]
    for request in seen:
        assert request.headers["X-CloudScheduler"] == "true"
        assert request.headers["X-CloudScheduler-JobName"] == "every-minute"
        assert request.headers["User-Agent"] == "Google-Cloud-Scheduler"
        assert request.headers["Authorization"].startswith("Bearer ")
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(request.get_data()) == {"a": 1}
    # The same minutes do not fire twice.
    sched.run_pending(wait=True)
    assert len(httpserver.log) == 3


def test_schedule_follows_the_job_time_zone_across_dst(httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    job = {"name": "paris", "schedule": "0 9 * * *", "timeZone": "Europe/Paris",
           "uri": httpserver.url_for("/hook")}
    start = datetime(2024, 3, 29, 12, 0, tzinfo=UTC)
    sched, clock = make([job], start, catch_up=timedelta(days=7))
    clock.now = datetime(2024, 4, 2, 0, 0, tzinfo=UTC)
    sched.run_pending(wait=True)

    got = sorted(r.headers["X-CloudScheduler-ScheduleTime"] for r in requests_to(httpserver))
    # Oracle: cronsim over the same window, formatted independently.
    expected, it = [], CronSim("0 9 * * *", start.astimezone(ZoneInfo("Europe/Paris")))
    while (moment := next(it)) <= clock.now:
        expected.append(moment.isoformat())
    assert got == expected
    assert got == ["2024-03-30T09:00:00+01:00", "2024-03-31T09:00:00+02:00", "2024-04-01T09:00:00+02:00"]
    assert all(r.headers.get("Authorization") is None for r in requests_to(httpserver))   # oidc off


def test_missed_runs_older_than_the_catch_up_window_are_skipped(httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    job = {"name": "j", "schedule": "* * * * *", "uri": httpserver.url_for("/hook")}
    sched, clock = make([job], datetime(2024, 1, 1, 0, 0, tzinfo=UTC))
    clock.now = datetime(2024, 1, 1, 1, 0, 30, tzinfo=UTC)       # an hour asleep
    sched.run_pending(wait=True)
    times = sorted(r.headers["X-CloudScheduler-ScheduleTime"] for r in requests_to(httpserver))
    assert times[0] == "2024-01-01T00:56:00Z" and times[-1] == "2024-01-01T01:00:00Z"
    assert len(times) == 5


def test_failed_attempts_are_retried_with_the_same_schedule_time(httpserver):
    answers = iter([Response("busy", status=503), Response("boom", status=500), Response("ok")])
    httpserver.expect_request("/hook").respond_with_handler(lambda request: next(answers))
    job = {"name": "retrying", "schedule": "0 * * * *", "uri": httpserver.url_for("/hook"),
           "retryConfig": {"retryCount": 3, "minBackoffDuration": "0.01s", "maxBackoffDuration": "0.05s"}}
    sched, clock = make([job], datetime(2024, 1, 1, 0, 59, 59, tzinfo=UTC))
    clock.now = datetime(2024, 1, 1, 1, 0, 1, tzinfo=UTC)
    sched.run_pending(wait=True)

    assert [a["status"] for a in sched.attempts] == [503, 500, 200]
    times = {r.headers["X-CloudScheduler-ScheduleTime"] for r in requests_to(httpserver)}
    assert times == {"2024-01-01T01:00:00Z"}


def test_without_retry_config_a_failure_is_not_retried_and_no_answer_is_a_failure():
    job = {"name": "down", "schedule": "* * * * *", "uri": "http://127.0.0.1:9/nothing-listens"}
    sched, _ = make([job], datetime(2024, 1, 1, tzinfo=UTC))
    assert sched.deliver(sched.jobs["down"], "2024-01-01T00:00:00Z") is False
    assert [a["status"] for a in sched.attempts] == [None]


def test_each_attempt_is_logged_with_its_http_status_as_a_field(httpserver):
    answers = iter([Response("busy", status=503), Response("ok")])
    httpserver.expect_request("/hook").respond_with_handler(lambda request: next(answers))
    job = {"name": "logged", "schedule": "* * * * *", "uri": httpserver.url_for("/hook"),
           "retryConfig": {"retryCount": 1, "minBackoffDuration": "0.01s"}}
    entries = []
    sched = Scheduler([job_from_config(job)], clock=Clock(datetime(2024, 1, 1, tzinfo=UTC)), log=entries.append)
    assert sched.deliver(sched.jobs["logged"], "2024-01-01T00:00:00Z") is True
    down = Scheduler([job_from_config({**job, "uri": "http://127.0.0.1:9/nothing-listens", "retryConfig": {}})],
                     clock=Clock(datetime(2024, 1, 1, tzinfo=UTC)), log=entries.append)
    assert down.deliver(down.jobs["logged"], "2024-01-01T00:01:00Z") is False
    assert [(e["severity"], e["scheduleTime"], e["attempt"], e["status"]) for e in entries] == [
        ("WARNING", "2024-01-01T00:00:00Z", 1, 503), ("INFO", "2024-01-01T00:00:00Z", 2, 200),
        ("WARNING", "2024-01-01T00:01:00Z", 1, None)]


@pytest.mark.parametrize("mode", ["next", "omit"])
def test_run_now_fires_at_once_with_the_next_schedule_time_or_none(httpserver, mode):
    httpserver.expect_request("/hook").respond_with_data("ok")
    job = {"name": "forced", "schedule": "30 2 * * *", "uri": httpserver.url_for("/hook"),
           "forceRunScheduleTime": mode}
    sched, _ = make([job], datetime(2024, 5, 5, 10, 0, tzinfo=UTC))
    sched.run_now("forced", wait=True)
    (request,) = requests_to(httpserver)
    assert request.headers["X-CloudScheduler-JobName"] == "forced"
    if mode == "next":
        assert request.headers["X-CloudScheduler-ScheduleTime"] == "2024-05-06T02:30:00Z"
    else:
        assert "X-CloudScheduler-ScheduleTime" not in request.headers


def call(url, method="GET", token="t"):
    request = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None,
                                     headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_rest_api_lists_jobs_and_runs_one_now(httpserver, tmp_path):
    httpserver.expect_request("/hook").respond_with_data("ok")
    jobs_file = tmp_path / "jobs.yaml"
    jobs_file.write_text(f"""
- name: nightly
  schedule: "0 3 * * *"
  timeZone: America/New_York
  uri: {httpserver.url_for("/hook")}
  headers: {{Content-Type: application/json}}
  body: '{{"x": 1}}'
""")
    server = scheduler.start(load_jobs(jobs_file), log=quiet, tick=None)
    try:
        base = f"{server.url}/v1/projects/local-project/locations/us-central1/jobs"
        status, body = call(base)
        assert status == 200
        (job,) = body["jobs"]
        assert job["name"] == "projects/local-project/locations/us-central1/jobs/nightly"
        assert job["httpTarget"]["uri"] == httpserver.url_for("/hook")
        assert job["timeZone"] == "America/New_York" and job["state"] == "ENABLED"

        assert call(f"{base}/nightly:run", "POST", token=None)[0] == 401
        assert call(f"{base}/missing:run", "POST")[0] == 404
        status, body = call(f"{base}/nightly:run", "POST")
        assert status == 200 and body["name"].endswith("/jobs/nightly")
        server.scheduler.stop()          # waits for the delivery thread
        (request,) = requests_to(httpserver)
        assert request.get_data() == b'{"x": 1}'
        assert request.headers["X-CloudScheduler-ScheduleTime"].endswith("T03:00:00-05:00") or \
            request.headers["X-CloudScheduler-ScheduleTime"].endswith("T03:00:00-04:00")
    finally:
        server.stop()


@pytest.mark.parametrize("job, problem", [
    ({"name": "bad", "schedule": "61 * * * *", "uri": "http://x"}, "invalid schedule"),
    ({"name": "bad", "schedule": "* * * * *", "uri": "http://x", "timeZone": "Mars/Base"}, "timeZone"),
    ({"name": "bad", "schedule": "* * * * *", "uri": "http://x", "retryConfig": {"retryCount": 6}}, "retryCount"),
    ({"name": "bad name", "schedule": "* * * * *", "uri": "http://x"}, "job name"),
    ({"name": "bad", "schedule": "* * * * *"}, "'uri' is required"),
    ({"name": "bad", "schedule": "* * * * *", "uri": "http://x", "httpMethod": "GET", "body": "x"}, "body"),
    ({"name": "bad", "schedule": "* * * * *", "uri": "http://x", "colour": "red"}, "unknown fields"),
])
def test_job_config_errors_name_the_job_and_the_problem(job, problem):
    with pytest.raises(ValueError, match=problem):
        job_from_config(job)


def test_body_without_content_type_is_sent_as_octet_stream(httpserver):
    httpserver.expect_request("/hook").respond_with_data("ok")
    job = {"name": "raw", "schedule": "* * * * *", "uri": httpserver.url_for("/hook"), "body": "hello"}
    sched, _ = make([job], datetime(2024, 1, 1, tzinfo=UTC))
    sched.run_now("raw", wait=True)
    (request,) = requests_to(httpserver)
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert request.get_data() == b"hello"
