"""Cloud Scheduler jobs: what one job is, read from a jobs file or from a REST body, and shown back.

Two ways in, one `Job`:
- a jobs file (YAML or JSON), in Cloud Scheduler's field names but flattened for hand-writing
  (`uri`, `body` as JSON or text, `oidc: true`); see `job_from_config`;
- Cloud Scheduler v1 REST (`gcloud scheduler jobs create http`), the Job resource of the
  cloudscheduler v1 discovery document; see `job_from_resource`, and `resource` for the way out.
Bad input raises ValueError with a message naming the field; the REST server answers it as 400.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from cronsim import CronSim, CronSimError

from .google_http import rfc3339

JOB_NAME = re.compile(r"[A-Za-z0-9_-]{1,500}")
HTTP_METHODS = ("POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")
FILE_FIELDS = {"name", "description", "schedule", "timeZone", "uri", "httpMethod", "headers", "body",
               "oidc", "oidcToken", "retryConfig", "attemptDeadline", "forceRunScheduleTime"}
# schemas.Job of cloudscheduler v1: what a caller sets, and what is output only (accepted, ignored).
RESOURCE_INPUT_FIELDS = {"name", "description", "schedule", "timeZone", "httpTarget", "retryConfig",
                         "attemptDeadline", "pubsubTarget", "appEngineHttpTarget"}
RESOURCE_OUTPUT_FIELDS = {"userUpdateTime", "state", "status", "scheduleTime", "lastAttemptTime", "satisfiesPzs"}
HTTP_TARGET_FIELDS = {"uri", "httpMethod", "headers", "body", "oidcToken", "oauthToken"}
RETRY_FIELDS = {"retryCount", "maxRetryDuration", "minBackoffDuration", "maxBackoffDuration", "maxDoublings"}
DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)s", re.ASCII)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def duration_seconds(value: Any, what: str) -> float:
    """A google.protobuf.Duration in JSON ("5s", "1.5s"); a bare number is read as seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = DURATION.fullmatch(str(value).strip())
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
    oidc_token: dict[str, str] | None = None     # httpTarget.oidcToken, as given
    oauth_token: dict[str, str] | None = None    # httpTarget.oauthToken, as given
    description: str = ""
    retry_config: dict[str, Any] = field(default_factory=dict)   # as given; the numbers below apply it
    retry_count: int = 0
    min_backoff: float = 5.0
    max_backoff: float = 3600.0
    max_doublings: int = 5
    attempt_deadline: float = 180.0
    force_run_schedule_time: str = "next"
    paused: bool = False
    user_update_time: datetime = field(default_factory=utc_now)
    last_attempt_time: datetime | None = None
    last_status: int | None = None       # HTTP status of the last attempt (None: no answer)

    @property
    def oidc(self) -> bool:
        """Whether deliveries carry `Authorization: Bearer ...` (an OIDC or an OAuth token)."""
        return self.oidc_token is not None or self.oauth_token is not None

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


def checked(job: Job) -> Job:
    """The rules every job follows, however it was written; ValueError names what is wrong."""
    name = job.name
    if not JOB_NAME.fullmatch(name):
        raise ValueError(f"job name {name!r}: use 1-500 letters, digits, '-' or '_'")
    try:
        job.zone
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"job {name}: unknown timeZone {job.time_zone!r}") from None
    try:
        job.times_after(utc_now())
    except CronSimError as error:
        raise ValueError(f"job {name}: invalid schedule {job.schedule!r}: {error}") from None
    if job.http_method not in HTTP_METHODS:
        raise ValueError(f"job {name}: unsupported httpMethod {job.http_method}")
    if not job.uri.startswith(("http://", "https://")):
        raise ValueError(f"job {name}: the uri must begin with http:// or https://, got {job.uri!r}")
    if job.body and job.http_method not in ("POST", "PUT", "PATCH"):
        raise ValueError(f"job {name}: a body is allowed only with POST, PUT or PATCH")
    if job.oidc_token is not None and job.oauth_token is not None:
        raise ValueError(f"job {name}: give oidcToken or oauthToken, not both")
    if not 0 <= job.retry_count <= 5:
        raise ValueError(f"job {name}: retryCount must be between 0 and 5")
    if len(job.description) > 500:
        raise ValueError(f"job {name}: the description must not be over 500 characters")
    if job.force_run_schedule_time not in ("next", "omit"):
        raise ValueError(f"job {name}: forceRunScheduleTime is 'next' or 'omit'")
    return job


def apply_retry_config(job: Job, retry: dict[str, Any]) -> None:
    what = f"job {job.name}: retryConfig"
    job.retry_config = dict(retry)
    job.retry_count = int(retry.get("retryCount", 0))
    job.min_backoff = duration_seconds(retry.get("minBackoffDuration", "5s"), what)
    job.max_backoff = duration_seconds(retry.get("maxBackoffDuration", "3600s"), what)
    job.max_doublings = int(retry.get("maxDoublings", 5))


def job_from_config(config: dict[str, Any]) -> Job:
    """One entry of a jobs file."""
    if not isinstance(config, dict):
        raise ValueError(f"a job must be a map, got {config!r}")
    name = config.get("name")
    if not isinstance(name, str):
        raise ValueError(f"job name {name!r}: use 1-500 letters, digits, '-' or '_'")
    unknown = set(config) - FILE_FIELDS
    if unknown:
        raise ValueError(f"job {name}: unknown fields {sorted(unknown)}")
    for required in ("schedule", "uri"):
        if not isinstance(config.get(required), str):
            raise ValueError(f"job {name}: '{required}' is required")
    job = Job(name=name, schedule=config["schedule"].strip(), uri=config["uri"],
              time_zone=config.get("timeZone") or "Etc/UTC",
              http_method=str(config.get("httpMethod") or "POST").upper(),
              headers={str(k): str(v) for k, v in (config.get("headers") or {}).items()},
              description=str(config.get("description") or ""),
              force_run_schedule_time=config.get("forceRunScheduleTime", "next"))
    body = config.get("body")
    if body is not None:
        job.body = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    if config.get("oidc") or config.get("oidcToken"):
        job.oidc_token = dict(config.get("oidcToken") or {})
    apply_retry_config(job, config.get("retryConfig") or {})
    job.attempt_deadline = duration_seconds(config.get("attemptDeadline", "180s"), f"job {name}")
    return checked(job)


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


def _fields(value: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"Invalid value at '{where}': expected an object")
    for key in value:
        if key not in allowed:
            raise ValueError(f'Invalid JSON payload received. Unknown name "{key}" at \'{where}\': Cannot find field.')
    return value


def job_from_resource(resource: dict[str, Any], job_id: str) -> Job:
    """A Job resource of Cloud Scheduler v1 (a create body, or a patched resource); HTTP targets only."""
    _fields(resource, RESOURCE_INPUT_FIELDS | RESOURCE_OUTPUT_FIELDS, "job")
    for other in ("pubsubTarget", "appEngineHttpTarget"):
        if resource.get(other) is not None:
            raise NotImplementedError(f"job {job_id}: {other} is not served by localcloud; use httpTarget")
    schedule = resource.get("schedule")
    if not isinstance(schedule, str) or not schedule.strip():
        raise ValueError(f"job {job_id}: schedule is required")
    target = _fields(resource.get("httpTarget") or {}, HTTP_TARGET_FIELDS, "job.http_target")
    if not isinstance(target.get("uri"), str):
        raise ValueError(f"job {job_id}: httpTarget.uri is required")
    method = target.get("httpMethod") or "POST"
    job = Job(name=job_id, schedule=schedule.strip(), uri=target["uri"],
              time_zone=resource.get("timeZone") or "Etc/UTC",
              http_method="POST" if method == "HTTP_METHOD_UNSPECIFIED" else str(method),
              headers={str(k): str(v) for k, v in (target.get("headers") or {}).items()},
              description=str(resource.get("description") or ""))
    try:
        job.body = base64.b64decode(target.get("body") or "", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"job {job_id}: httpTarget.body must be base64") from None
    for key in ("oidcToken", "oauthToken"):
        token = target.get(key)
        if token is not None:
            allowed = {"serviceAccountEmail", "audience" if key == "oidcToken" else "scope"}
            setattr(job, "oidc_token" if key == "oidcToken" else "oauth_token",
                    dict(_fields(token, allowed, f"job.http_target.{key}")))
    apply_retry_config(job, _fields(resource.get("retryConfig") or {}, RETRY_FIELDS, "job.retry_config"))
    job.attempt_deadline = duration_seconds(resource.get("attemptDeadline") or "180s", f"job {job_id}")
    # "For HTTP targets, the default is 3 minutes. The deadline must be in the interval
    # [15 seconds, 30 minutes]." (schemas.Job.attemptDeadline)
    if not 15 <= job.attempt_deadline <= 1800:
        raise ValueError(f"job {job_id}: attemptDeadline must be between 15s and 1800s")
    return checked(job)


def settable(job: Job) -> dict[str, Any]:
    """The fields a caller sets, as the REST resource has them (also what the state folder keeps)."""
    target: dict[str, Any] = {"uri": job.uri, "httpMethod": job.http_method}
    if job.headers:
        target["headers"] = job.headers
    if job.body:
        target["body"] = base64.b64encode(job.body).decode()
    if job.oidc_token is not None:
        # "If not specified, the URI specified in target will be used." (OidcToken.audience)
        target["oidcToken"] = {"audience": job.uri, **job.oidc_token}
    if job.oauth_token is not None:
        target["oauthToken"] = {"scope": "https://www.googleapis.com/auth/cloud-platform", **job.oauth_token}
    resource: dict[str, Any] = {"schedule": job.schedule, "timeZone": job.time_zone, "httpTarget": target,
                                "attemptDeadline": f"{job.attempt_deadline:g}s"}
    if job.description:
        resource["description"] = job.description
    if job.retry_config:
        resource["retryConfig"] = job.retry_config
    return resource


def resource(job: Job, project: str, location: str, now: datetime) -> dict[str, Any]:
    """The job as Cloud Scheduler's REST API shows it."""
    shown = {"name": f"projects/{project}/locations/{location}/jobs/{job.name}", **settable(job),
             "userUpdateTime": rfc3339(job.user_update_time), "state": "PAUSED" if job.paused else "ENABLED"}
    if not job.paused:
        shown["scheduleTime"] = rfc3339(next(job.times_after(now)))
    if job.last_attempt_time:
        shown["lastAttemptTime"] = rfc3339(job.last_attempt_time)
    if job.last_status is not None and not 200 <= job.last_status < 300:
        shown["status"] = {"code": 2, "message": f"HTTP {job.last_status}"}
    return shown


def save_jobs(path: Path, jobs: list[Job]) -> None:
    """Keep the jobs in the state folder (written whole, then renamed: never half a file)."""
    records = [{"id": job.name, **settable(job), "paused": job.paused,
                "userUpdateTime": rfc3339(job.user_update_time)} for job in jobs]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(records, indent=1))
    partial.replace(path)


def load_saved_jobs(path: Path) -> list[Job]:
    if not path.exists():
        return []
    jobs = []
    for record in json.loads(path.read_text()):
        saved = {key: value for key, value in record.items() if key in RESOURCE_INPUT_FIELDS}
        job = job_from_resource(saved, record["id"])
        job.paused = bool(record.get("paused"))
        job.user_update_time = datetime.fromisoformat(record["userUpdateTime"].replace("Z", "+00:00"))
        jobs.append(job)
    return jobs
