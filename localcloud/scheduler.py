"""A local Cloud Scheduler: cron jobs with HTTP targets, from a YAML or JSON file.

Each job POSTs (or its httpMethod) to its uri at every scheduled minute of its time zone, with the
headers Cloud Scheduler adds: `X-CloudScheduler: true`, `X-CloudScheduler-JobName`,
`X-CloudScheduler-ScheduleTime` (the scheduled instant, RFC 3339, in the job's UTC offset) and
`User-Agent: Google-Cloud-Scheduler`; `Authorization: Bearer ...` when the job has OIDC on.
Retries follow retryConfig and repeat the same ScheduleTime.

A job file is a list of jobs (or {"jobs": [...]}), in Cloud Scheduler's field names:

    - name: hourly-report
      schedule: "0 * * * *"
      timeZone: Europe/Paris            # default Etc/UTC
      uri: http://127.0.0.1:8080/v1/projects/p/locations/l/workflows/report/executions
      httpMethod: POST                  # default POST
      headers: {Content-Type: application/json}
      body: {"any": "json"}             # or a string, sent as is
      oidc: true                        # or oidcToken: {serviceAccountEmail, audience}
      retryConfig: {retryCount: 2, minBackoffDuration: 5s, maxBackoffDuration: 60s, maxDoublings: 5}
      attemptDeadline: 180s
      forceRunScheduleTime: next        # "run now": send the next scheduled time (default) or omit

"Run now" (`gcloud scheduler jobs run`, or POST .../jobs/NAME:run here) fires at once. Google
documents that a forced run's ScheduleTime "might use the timestamp of the next scheduled
execution, or might be omitted": both are offered, `next` by default.
"""
from __future__ import annotations

import base64
import json
import re
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from cronsim import CronSim, CronSimError

from .google_http import ApiError, GoogleJSONHandler, LogSink, query_params, rfc3339, stdout_log, unknown_url
from .context import LOCAL_TOKEN, LOCATION, PROJECT

Clock = Callable[[], datetime]
JOB_NAME = re.compile(r"^[A-Za-z0-9_-]{1,500}$")
HTTP_METHODS = {"POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"}
JOB_FIELDS = {"name", "description", "schedule", "timeZone", "uri", "httpMethod", "headers", "body",
              "oidc", "oidcToken", "retryConfig", "attemptDeadline", "forceRunScheduleTime"}
CATCH_UP = timedelta(minutes=5)   # after a sleep or a stall, older missed times are skipped


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def duration_seconds(value: Any, what: str) -> float:
    if isinstance(value, (int, float)):
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", str(value))
    if not match:
        raise ValueError(f"{what}: expected a duration like '5s', got {value!r}")
    return float(match.group(1))


@dataclass
class Job:
    name: str
    schedule: str
    uri: str
    time_zone: str = "Etc/UTC"
    http_method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    oidc: bool = False
    retry_count: int = 0
    min_backoff: float = 5.0
    max_backoff: float = 3600.0
    max_doublings: int = 5
    attempt_deadline: float = 180.0
    force_run_schedule_time: str = "next"
    config: dict[str, Any] = field(default_factory=dict)
    last_attempt_time: datetime | None = None
    last_status: int | None = None       # HTTP status of the last attempt (None: no answer)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def times_after(self, moment: datetime):
        """The scheduled instants strictly after `moment`, in the job's zone."""
        return CronSim(self.schedule, moment.astimezone(self.zone))

    def schedule_time_header(self, instant: datetime) -> str:
        local = instant.astimezone(self.zone).replace(microsecond=0)
        text = local.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text


def job_from_config(config: dict[str, Any]) -> Job:
    if not isinstance(config, dict):
        raise ValueError(f"a job must be a map, got {config!r}")
    name = config.get("name")
    if not isinstance(name, str) or not JOB_NAME.match(name):
        raise ValueError(f"job name {name!r}: use 1-500 letters, digits, '-' or '_'")
    unknown = set(config) - JOB_FIELDS
    if unknown:
        raise ValueError(f"job {name}: unknown fields {sorted(unknown)}")
    for required in ("schedule", "uri"):
        if not isinstance(config.get(required), str):
            raise ValueError(f"job {name}: '{required}' is required")
    job = Job(name=name, schedule=config["schedule"].strip(), uri=config["uri"], config=config)
    job.time_zone = config.get("timeZone") or "Etc/UTC"
    try:
        job.zone
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"job {name}: unknown timeZone {job.time_zone!r}") from None
    try:
        job.times_after(utc_now())
    except CronSimError as error:
        raise ValueError(f"job {name}: invalid schedule {job.schedule!r}: {error}") from None
    job.http_method = str(config.get("httpMethod") or "POST").upper()
    if job.http_method not in HTTP_METHODS:
        raise ValueError(f"job {name}: unsupported httpMethod {job.http_method}")
    job.headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
    body = config.get("body")
    if body is not None:
        if job.http_method not in ("POST", "PUT", "PATCH"):
            raise ValueError(f"job {name}: a body is allowed only with POST, PUT or PATCH")
        job.body = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    job.oidc = bool(config.get("oidc") or config.get("oidcToken"))
    retry = config.get("retryConfig") or {}
    job.retry_count = int(retry.get("retryCount", 0))
    if not 0 <= job.retry_count <= 5:
        raise ValueError(f"job {name}: retryCount must be between 0 and 5")
    job.min_backoff = duration_seconds(retry.get("minBackoffDuration", "5s"), f"job {name}")
    job.max_backoff = duration_seconds(retry.get("maxBackoffDuration", "3600s"), f"job {name}")
    job.max_doublings = int(retry.get("maxDoublings", 5))
    job.attempt_deadline = duration_seconds(config.get("attemptDeadline", "180s"), f"job {name}")
    job.force_run_schedule_time = config.get("forceRunScheduleTime", "next")
    if job.force_run_schedule_time not in ("next", "omit"):
        raise ValueError(f"job {name}: forceRunScheduleTime is 'next' or 'omit'")
    return job


def load_jobs(path: str | Path) -> list[Job]:
    """Jobs from a YAML or JSON file (a list, or a map with a `jobs` list)."""
    data = yaml.safe_load(Path(path).read_text()) or []
    if isinstance(data, dict):
        data = data.get("jobs") or []
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of jobs")
    jobs = [job_from_config(item) for item in data]
    names = [job.name for job in jobs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{path}: duplicate job names {duplicates}")
    return jobs


class Scheduler:
    """Fires each job at its scheduled instants. `clock` is injectable so tests need not wait."""

    def __init__(self, jobs: list[Job], clock: Clock = utc_now, log: LogSink = stdout_log,
                 project: str = PROJECT, location: str = LOCATION,
                 catch_up: timedelta = CATCH_UP):
        self.jobs = {job.name: job for job in jobs}
        self.catch_up = catch_up
        self.clock, self.log, self.project, self.location = clock, log, project, location
        self.attempts: list[dict[str, Any]] = []   # every delivery attempt, oldest first
        self._cursor = clock()                     # instants after this one are still to fire
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def due(self) -> list[tuple[Job, datetime]]:
        """The (job, instant) pairs scheduled in (last check, now], oldest first; advances."""
        now = self.clock()
        with self._lock:
            since, self._cursor = self._cursor, max(self._cursor, now)
        fired = []
        for job in self.jobs.values():
            for instant in job.times_after(since):
                if instant > now:
                    break
                if now - instant > self.catch_up:
                    self.log({"severity": "WARNING", "message": f"job {job.name}: skipped missed run "
                              f"{job.schedule_time_header(instant)}"})
                    continue
                fired.append((job, instant))
        return sorted(fired, key=lambda pair: pair[1])

    def run_pending(self, wait: bool = False) -> list[threading.Thread]:
        """Deliver every due run, each in its own thread (a slow target does not delay the others)."""
        threads = [self._spawn(job, job.schedule_time_header(instant)) for job, instant in self.due()]
        if wait:
            for thread in threads:
                thread.join()
        return threads

    def run_now(self, name: str, wait: bool = False) -> threading.Thread:
        """Force a run, as `gcloud scheduler jobs run` does."""
        job = self.jobs[name]
        header = None
        if job.force_run_schedule_time == "next":
            header = job.schedule_time_header(next(job.times_after(self.clock())))
        thread = self._spawn(job, header)
        if wait:
            thread.join()
        return thread

    def _spawn(self, job: Job, schedule_time: str | None) -> threading.Thread:
        thread = threading.Thread(target=self.deliver, args=(job, schedule_time), daemon=True,
                                  name=f"scheduler-{job.name}")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return thread

    def deliver(self, job: Job, schedule_time: str | None) -> bool:
        """One run: the first attempt and up to retryCount retries, all with the same headers."""
        headers = {**job.headers, "User-Agent": "Google-Cloud-Scheduler", "X-CloudScheduler": "true",
                   "X-CloudScheduler-JobName": job.name}
        if job.body and not any(key.lower() == "content-type" for key in headers):
            headers["Content-Type"] = "application/octet-stream"   # Cloud Scheduler's default
        if schedule_time is not None:
            headers["X-CloudScheduler-ScheduleTime"] = schedule_time
        if job.oidc:
            headers["Authorization"] = f"Bearer {LOCAL_TOKEN}"
        for attempt in range(job.retry_count + 1):
            if attempt:
                backoff = min(job.min_backoff * 2 ** min(attempt - 1, job.max_doublings), job.max_backoff)
                if self._stop.wait(backoff):
                    return False
            status = self._attempt(job, headers)
            self.attempts.append({"job": job.name, "scheduleTime": schedule_time, "attempt": attempt + 1,
                                  "status": status})
            ok = status is not None and 200 <= status < 300
            self.log({"severity": "INFO" if ok else "WARNING",
                      "message": f"job {job.name}: {job.http_method} {job.uri} -> {status or 'no answer'}",
                      "scheduleTime": schedule_time, "attempt": attempt + 1, "status": status})
            if ok:
                return True
        return False

    def _attempt(self, job: Job, headers: dict[str, str]) -> int | None:
        request = urllib.request.Request(job.uri, data=job.body or None, headers=headers,
                                         method=job.http_method)
        job.last_attempt_time = self.clock()
        try:
            with urllib.request.urlopen(request, timeout=job.attempt_deadline) as response:
                response.read()
                job.last_status = response.status
        except urllib.error.HTTPError as error:
            job.last_status = error.code
        except (OSError, ValueError):      # refused, reset, deadline exceeded
            job.last_status = None
        return job.last_status

    def start(self, tick: float = 0.5) -> None:
        def loop() -> None:
            while not self._stop.wait(tick):
                self.run_pending()
        threading.Thread(target=loop, name="localcloud-scheduler", daemon=True).start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    def resource(self, job: Job) -> dict[str, Any]:
        """The job as Cloud Scheduler's REST API shows it."""
        target: dict[str, Any] = {"uri": job.uri, "httpMethod": job.http_method}
        if job.headers:
            target["headers"] = job.headers
        if job.body:
            target["body"] = base64.b64encode(job.body).decode()
        if job.oidc:
            target["oidcToken"] = job.config.get("oidcToken") or {"audience": job.uri}
        resource = {
            "name": f"projects/{self.project}/locations/{self.location}/jobs/{job.name}",
            "schedule": job.schedule, "timeZone": job.time_zone, "httpTarget": target,
            "state": "ENABLED", "attemptDeadline": f"{job.attempt_deadline:g}s",
            "scheduleTime": rfc3339(next(job.times_after(self.clock()))),
        }
        if job.config.get("retryConfig"):
            resource["retryConfig"] = job.config["retryConfig"]
        if job.last_attempt_time:
            resource["lastAttemptTime"] = rfc3339(job.last_attempt_time)
        if job.last_status is not None and not 200 <= job.last_status < 300:
            resource["status"] = {"code": 2, "message": f"HTTP {job.last_status}"}
        return resource


JOB_ROUTE = re.compile(r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/jobs"
                       r"(?:/(?P<job>[^/:]+))?(?P<run>:run)?$")


class SchedulerHandler(GoogleJSONHandler):
    """GET .../jobs, GET .../jobs/NAME and POST .../jobs/NAME:run, as Cloud Scheduler v1 has them."""

    server: "SchedulerServer"

    def route(self, method: str, url: Any) -> tuple[int, Any]:
        scheduler = self.server.scheduler
        match = JOB_ROUTE.match(url.path)
        parts = {key: unquote(value) for key, value in match.groupdict().items() if value} if match else {}
        if not match or (parts["project"], parts["location"]) != (scheduler.project, scheduler.location):
            raise unknown_url(url)
        query_params(url, {"pageSize", "pageToken"} if "job" not in parts else set())
        if "job" not in parts:
            if method != "GET":
                raise unknown_url(url)
            jobs = [scheduler.resource(job) for job in scheduler.jobs.values()]
            return 200, {"jobs": jobs} if jobs else {}
        job = scheduler.jobs.get(parts["job"])
        if job is None:
            raise ApiError(404, f"Job not found: projects/{parts['project']}/locations/"
                                f"{parts['location']}/jobs/{parts['job']}", "NOT_FOUND")
        if method == "GET" and "run" not in parts:
            return 200, scheduler.resource(job)
        if method == "POST" and "run" in parts:
            self.read_json()
            scheduler.run_now(job.name)
            return 200, scheduler.resource(job)
        raise unknown_url(url)


class SchedulerServer:
    def __init__(self, scheduler: Scheduler, host: str, port: int):
        self.scheduler = scheduler
        self.http = ThreadingHTTPServer((host, port), SchedulerHandler)
        self.http.daemon_threads = True
        self.http.scheduler = scheduler  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        host, port = self.http.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.scheduler.stop()


def start(jobs: list[Job], host: str = "127.0.0.1", port: int = 0, project: str = PROJECT,
          location: str = LOCATION, clock: Clock = utc_now, log: LogSink = stdout_log,
          tick: float | None = 0.5) -> SchedulerServer:
    """Start the scheduler (ticking unless tick is None) and its small REST API; `.url`, `.stop()`."""
    scheduler = Scheduler(jobs, clock=clock, log=log, project=project, location=location)
    server = SchedulerServer(scheduler, host, port)
    threading.Thread(target=server.http.serve_forever, args=(0.05,), name="localcloud-scheduler-api",
                     daemon=True).start()
    if tick is not None:
        scheduler.start(tick)
    return server

