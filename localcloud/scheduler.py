"""A local Cloud Scheduler: cron jobs with HTTP targets, from a jobs file and over Cloud Scheduler
v1 REST (create, get, list, patch, delete, pause, resume, run), so `gcloud scheduler jobs ...`
works against it; jobs created over REST are kept in the state folder (scheduler_jobs.py).

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

"Run now" (`gcloud scheduler jobs run`, or POST .../jobs/NAME:run here) fires at once, paused or not. Google
documents that a forced run's ScheduleTime "might use the timestamp of the next scheduled
execution, or might be omitted": both are offered, `next` by default.
"""
from __future__ import annotations

import re
import threading
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote

from .context import LOCAL_TOKEN, LOCATION, PROJECT
from .google_http import (ApiError, GoogleJSONHandler, LogSink, invalid, query_params, stdout_log,
                          unknown_url)
from .scheduler_jobs import (RESOURCE_INPUT_FIELDS, Job, job_from_config, job_from_resource, load_jobs,  # noqa: F401
                             load_saved_jobs, resource, save_jobs, settable, utc_now)

Clock = Callable[[], datetime]
CATCH_UP = timedelta(minutes=5)   # after a sleep or a stall, older missed times are skipped
PAGE_SIZE_MAX = 500               # ListJobsRequest.pageSize: "The maximum page size is 500."


class Scheduler:
    """Fires each job at its scheduled instants. `clock` is injectable so tests need not wait."""

    def __init__(self, jobs: list[Job], clock: Clock = utc_now, log: LogSink = stdout_log,
                 project: str = PROJECT, location: str = LOCATION,
                 catch_up: timedelta = CATCH_UP, jobs_file: Path | None = None):
        """`jobs_file`: where jobs are kept across restarts; those saved there load first, then
        `jobs` (from a jobs file) replace any of the same name."""
        self.jobs_file = jobs_file
        saved = load_saved_jobs(jobs_file) if jobs_file else []
        self.jobs = {job.name: job for job in [*saved, *jobs]}
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
        for job in list(self.jobs.values()):
            if job.paused:
                continue
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

    # --- changes over REST, kept in jobs_file ----------------------------------------------------
    def save(self) -> None:
        if self.jobs_file:
            with self._lock:
                save_jobs(self.jobs_file, list(self.jobs.values()))

    def put(self, job: Job) -> Job:
        with self._lock:
            self.jobs[job.name] = job
        self.save()
        return job

    def remove(self, name: str) -> None:
        with self._lock:
            self.jobs.pop(name, None)
        self.save()

    def show(self, job: Job) -> dict[str, Any]:
        return resource(job, self.project, self.location, self.clock())


JOB_ROUTE = re.compile(r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/jobs"
                       r"(?:/(?P<job>[^/:]+))?(?::(?P<verb>run|pause|resume))?")


class SchedulerHandler(GoogleJSONHandler):
    """projects.locations.jobs of Cloud Scheduler v1: create, get, list, patch, delete, pause,
    resume and run, for HTTP targets."""

    server: "SchedulerHTTPServer"

    def route(self, method: str, url: Any) -> tuple[int, Any]:
        scheduler = self.server.scheduler
        match = JOB_ROUTE.fullmatch(url.path)
        parts = {key: unquote(value) for key, value in match.groupdict().items() if value} if match else {}
        if not match or (parts["project"], parts["location"]) != (scheduler.project, scheduler.location):
            raise unknown_url(url)
        if "job" not in parts and "verb" not in parts:
            if method == "GET":
                return 200, self.list(query_params(url, {"pageSize", "pageToken"}))
            if method == "POST":
                query_params(url, set())
                return 200, self.create(self.read_json())
            raise unknown_url(url)
        if "job" not in parts:
            raise unknown_url(url)
        name = f"projects/{scheduler.project}/locations/{scheduler.location}/jobs/{parts['job']}"
        job = scheduler.jobs.get(parts["job"])
        if job is None:
            raise ApiError(404, f"Job not found: {name}", "NOT_FOUND")
        verb = parts.get("verb")
        if method == "GET" and verb is None:
            query_params(url, set())
            return 200, scheduler.show(job)
        if method == "DELETE" and verb is None:
            query_params(url, set())
            scheduler.remove(job.name)
            return 200, {}
        if method == "PATCH" and verb is None:
            mask = query_params(url, {"updateMask"}).get("updateMask")
            return 200, self.patch(job, self.read_json(), mask)
        if method == "POST" and verb is not None:
            query_params(url, set())
            self.read_json()
            return 200, self.act(job, verb)
        raise unknown_url(url)

    def list(self, params: dict[str, str]) -> dict[str, Any]:
        scheduler = self.server.scheduler
        try:
            size = int(params.get("pageSize") or PAGE_SIZE_MAX)
            offset = int(params.get("pageToken") or 0)
        except ValueError:
            raise invalid("pageSize and pageToken must be numbers (pageToken as returned)") from None
        if size < 0 or offset < 0:
            raise invalid("pageSize and pageToken must not be negative")
        size = min(size or PAGE_SIZE_MAX, PAGE_SIZE_MAX)   # 0 means the default; larger is capped
        jobs = sorted(scheduler.jobs.values(), key=lambda job: job.name)
        answer: dict[str, Any] = {}
        if jobs[offset:offset + size]:
            answer["jobs"] = [scheduler.show(job) for job in jobs[offset:offset + size]]
        if offset + size < len(jobs):
            answer["nextPageToken"] = str(offset + size)
        return answer

    def create(self, body: Any) -> dict[str, Any]:
        scheduler = self.server.scheduler
        if not isinstance(body, dict):
            raise invalid("Invalid JSON payload received. Expected an object for 'job'.")
        prefix = f"projects/{scheduler.project}/locations/{scheduler.location}/jobs/"
        name = body.get("name") or prefix + f"job-{uuid.uuid4().hex[:20]}"   # "Optionally caller-specified"
        if not isinstance(name, str) or not name.startswith(prefix):
            raise invalid(f"Job name must be of the form {prefix}JOB_ID, got {name!r}")
        job = self.build({**body, "name": name}, name.removeprefix(prefix))
        if job.name in scheduler.jobs:
            raise ApiError(409, f"Job {name} already exists.", "ALREADY_EXISTS")
        return scheduler.show(scheduler.put(job))

    def patch(self, job: Job, body: Any, mask: str | None) -> dict[str, Any]:
        """updateMask names the fields to change (dotted paths, e.g. httpTarget.uri); a field it
        names that the body leaves out is cleared. Without a mask, the fields present change."""
        if not isinstance(body, dict):
            raise invalid("Invalid JSON payload received. Expected an object for 'job'.")
        current = settable(job)
        paths = [path.strip() for path in mask.split(",") if path.strip()] if mask else \
            [key for key in body if key in RESOURCE_INPUT_FIELDS and key != "name"]
        for path in paths:
            *parents, leaf = path.split(".")
            if parents[:1] and parents[0] not in RESOURCE_INPUT_FIELDS or not parents and leaf not in RESOURCE_INPUT_FIELDS:
                raise invalid(f"updateMask: unknown field {path!r}")
            source, target = body, current
            for key in parents:
                source = source.get(key) if isinstance(source, dict) else None
                target = target.setdefault(key, {})
            if isinstance(source, dict) and leaf in source:
                target[leaf] = source[leaf]
            else:
                target.pop(leaf, None)
        changed = self.build(current, job.name)
        changed.paused, changed.force_run_schedule_time = job.paused, job.force_run_schedule_time
        changed.last_attempt_time, changed.last_status = job.last_attempt_time, job.last_status
        return self.server.scheduler.show(self.server.scheduler.put(changed))

    def act(self, job: Job, verb: str) -> dict[str, Any]:
        scheduler = self.server.scheduler
        if verb == "run":
            scheduler.run_now(job.name)
            return scheduler.show(job)
        # "A job must be in Job.State.ENABLED to be paused" / "in Job.State.PAUSED to be resumed."
        if job.paused == (verb == "pause"):
            state = "PAUSED" if job.paused else "ENABLED"
            raise ApiError(400, f"Job {job.name} is {state}; it cannot be {verb}d.", "FAILED_PRECONDITION")
        job.paused = verb == "pause"
        job.user_update_time = utc_now()
        scheduler.save()
        return scheduler.show(job)

    @staticmethod
    def build(body: dict[str, Any], job_id: str) -> Job:
        try:
            return job_from_resource(body, job_id)
        except NotImplementedError as error:
            raise ApiError(501, str(error), "UNIMPLEMENTED") from None
        except ValueError as error:
            raise invalid(str(error)) from None


class SchedulerHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    scheduler: Scheduler


class SchedulerServer:
    def __init__(self, scheduler: Scheduler, host: str, port: int):
        self.scheduler = scheduler
        self.http = SchedulerHTTPServer((host, port), SchedulerHandler)
        self.http.scheduler = scheduler

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
          tick: float | None = 0.5, jobs_file: Path | None = None) -> SchedulerServer:
    """Start the scheduler (ticking unless tick is None) and its REST API; `.url`, `.stop()`.
    With `jobs_file`, jobs created or changed over REST are kept there across restarts."""
    scheduler = Scheduler(jobs, clock=clock, log=log, project=project, location=location, jobs_file=jobs_file)
    scheduler.save()
    server = SchedulerServer(scheduler, host, port)
    threading.Thread(target=server.http.serve_forever, args=(0.05,), name="localcloud-scheduler-api",
                     daemon=True).start()
    if tick is not None:
        scheduler.start(tick)
    return server
