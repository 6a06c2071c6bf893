"""HTTP Cloud Function `audit`: a Cloud Scheduler job POSTs to it every few minutes; each POST is
one audit pass (workflows_runner/audit.py, docs/alerts.md) answered with its counts:

    {"jobs": 3, "times": 144, "raised": {"missing": 1, "late": 0, "failed": 2, "paused": 0},
     "resolved": 1, "errors": 0}

Every new alert is one structured log line on stdout, which Cloud Run functions forward to Cloud
Logging (https://cloud.google.com/logging/docs/structured-logging).

It is deployed with the modules of workflows_runner/ that SHARED lists, copied beside it at deploy
time (deploy.sh, Pulumi, localcloud): the same status model and ledger reading as wfr, not a copy.

Settings (environment): GOOGLE_CLOUD_PROJECT and LOCATION (where the jobs are), RUNS_BUCKET,
RANGE_URL and PROXY_URL (jobs whose URI starts with it are audited); WORKFLOWS_API, STORAGE_API
and SCHEDULER_API point at other API roots (the local stack; loopback only, or https).
"""
from __future__ import annotations

import ipaddress
import json
import os
import sys
import threading
from urllib.parse import urlsplit

import request_limits
from workflows_runner import audit
from workflows_runner.cloud import Cloud
from workflows_runner.errors import ApiError, WfrError
from workflows_runner.target import EXECUTIONS_ROOT, SCHEDULER_ROOT, STORAGE_ROOT, Target

LOCAL_TOKEN = "localcloud"  # localcloud's bearer token, sent to loopback roots only
MAX_BODY_BYTES = 1024  # a pass takes no input: Cloud Scheduler's POST carries an empty body
# What gunicorn refuses, and bodies too large or too slow, answered in Google's error shape.
request_limits.install(MAX_BODY_BYTES, (413, "INVALID_ARGUMENT", f"the body is larger than {MAX_BODY_BYTES} bytes"))
_log_lock = threading.Lock()


def audit_pass(request):
    """Entry point: POST runs one pass; anything else is a 404 or 405 in Google's error shape."""
    if request.path != "/":
        return _error(404, "NOT_FOUND", "not found: POST / runs one audit pass")
    if request.method != "POST":
        return _error(405, "INVALID_ARGUMENT", "only POST / is served: it runs one audit pass")
    try:
        cloud = Cloud(_target())
        proxy_url = _setting("PROXY_URL")
        counts = audit.run(cloud, proxy_url, write_log)
    except WfrError as error:  # the job listing failed, or the settings are wrong
        code = error.code if isinstance(error, ApiError) and error.code >= 500 else 500
        write_log({"severity": "ERROR", "message": f"audit pass failed: {error.message}", "event": "audit_error"})
        return _error(code, "INTERNAL", f"audit pass failed: {error.message}")
    return json.dumps(counts.answer()), 200, {"Content-Type": "application/json"}


def write_log(entry: dict) -> None:
    """One JSON object per line: Cloud Logging reads severity and message, the rest is jsonPayload."""
    line = json.dumps(entry, ensure_ascii=False, default=str) + "\n"
    with _log_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def _target() -> Target:
    roots = {"api_root": os.environ.get("WORKFLOWS_API") or EXECUTIONS_ROOT,
             "storage_root": os.environ.get("STORAGE_API") or STORAGE_ROOT,
             "scheduler_root": os.environ.get("SCHEDULER_API") or SCHEDULER_ROOT}
    urls = [*roots.values(), _setting("RANGE_URL"), _setting("PROXY_URL")]
    local = all(_is_loopback(url) for url in urls)
    if not local and not all(url.startswith("https://") for url in urls):
        # Google's tokens never cross a network in clear text; localcloud's only stay on loopback.
        raise WfrError("the API roots and function URLs must all be https, or all loopback (the local stack): "
                       f"{', '.join(urls)}")
    return Target(project=_setting("GOOGLE_CLOUD_PROJECT"), location=_setting("LOCATION"), prefix="",
                  bucket=_setting("RUNS_BUCKET"), backfill_workflow="", range_url=_setting("RANGE_URL"),
                  proxy_url=_setting("PROXY_URL"), local_token=LOCAL_TOKEN if local else None, **roots)


def _setting(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise WfrError(f"the audit function is deployed without {name} (see functions/audit/main.py)")
    return value


def _is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _error(code: int, status: str, message: str):
    """Google's error shape, as the other functions and Google's APIs answer."""
    body = {"error": {"code": code, "status": status, "message": message}}
    return json.dumps(body), code, {"Content-Type": "application/json"}
