"""One audit pass: `wfr status` for every Scheduler job that targets the proxy, plus alert records
(docs/alerts.md). The audit function (functions/audit/) runs it every few minutes.

Per job: the times of [max(since, now - lookback), now - min(grace, deadline)) from the range
function, the ledger's attempts of that window (ranged listings, status.attempts_by_time), the
executions of the newest attempts not yet settled (status.settle, which writes what it learns
back), and the alert records of the window (one ranged listing). Then each missing, late or failed
time not yet alerted is created (ifGenerationMatch=0: exactly once however many passes race), and
open alerts of times that since succeeded are resolved. So a pass costs calls per job and per
page of times or records, never per time; only new alerts and resolutions cost a call each.
"""
from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from . import alerts, job_settings, ledger, status
from .cloud import Cloud
from .errors import WfrError
from .identity import parse_instant, run_digests

Log = Callable[[dict[str, Any]], None]
JOB_WORKERS = 8           # jobs audited at once
ENDED_UNSUCCESSFULLY = frozenset({"FAILED", "CANCELLED", ledger.UNAVAILABLE})


@dataclass
class Counts:
    """What one pass did: the audit function's answer."""
    jobs: int = 0
    times: int = 0
    raised: Counter = field(default_factory=Counter)
    resolved: int = 0
    errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, times: int, raised: list[alerts.Alert], resolved: int) -> None:
        with self._lock:
            self.jobs += 1
            self.times += times
            self.raised.update(alert.kind for alert in raised)
            self.resolved += resolved

    def failed(self) -> None:
        with self._lock:
            self.errors += 1

    calls: dict[str, int] = field(default_factory=dict)

    def answer(self) -> dict[str, Any]:
        return {"jobs": self.jobs, "times": self.times,
                "raised": {kind: self.raised.get(kind, 0) for kind in alerts.KINDS},
                "resolved": self.resolved, "errors": self.errors, "calls": dict(sorted(self.calls.items()))}


def run(cloud: Cloud, proxy_url: str, log: Log, now: datetime | None = None) -> Counts:
    """One pass over every job of the target's project and location that targets `proxy_url`."""
    now = now or datetime.now(timezone.utc)
    counts = Counts()
    before = dict(cloud.http.calls)
    jobs = [job for job in cloud.jobs() if job_settings.targets(job.get("httpTarget", {}).get("uri", ""), proxy_url)]

    def audit(job: dict[str, Any]) -> None:
        try:
            times, raised, resolved = audit_job(cloud, job, now, log)
        except WfrError as error:  # one job's bad settings or failed calls do not stop the others
            counts.failed()
            log({"severity": "ERROR", "message": f"audit of job {job.get('name')} failed: {error.message}",
                 "event": "audit_error", "job": job.get("name")})
        else:
            counts.add(times, raised, resolved)
    with ThreadPoolExecutor(JOB_WORKERS) as pool:
        list(pool.map(audit, jobs))
    # HTTP calls by service (a batch of 100 PATCHes counts as one): what the pass cost.
    counts.calls = {service: count - before.get(service, 0) for service, count in cloud.http.calls.items()}
    log({"severity": "INFO", "message": f"audit pass: {counts.jobs} jobs, {counts.times} times, "
                                        f"{sum(counts.raised.values())} alerts raised, {counts.resolved} resolved",
         "event": "audit_pass", **counts.answer()})
    return counts


def window_of(job: dict[str, Any], settings: job_settings.JobSettings, now: datetime) -> status.Window | None:
    """The times a pass looks at: [max(since, now - lookback), now - min(grace, deadline)); None when empty."""
    start = now - settings.lookback
    first = settings.first_time(job)
    if first is not None:
        start = max(start, first)
    stop = now - min(settings.grace, settings.deadline or settings.grace)
    if not job.get("schedule"):
        raise WfrError(f"job {job.get('name')} has no schedule")
    if start >= stop:
        return None
    return status.Window(_rfc3339(start), _rfc3339(stop), job["schedule"], job.get("timeZone") or "UTC")


def audit_job(cloud: Cloud, job: dict[str, Any], now: datetime, log: Log) -> tuple[int, list[alerts.Alert], int]:
    """(times looked at, alerts this call raised, alerts this call resolved) for one job."""
    settings = job_settings.of_job(job)
    window = window_of(job, settings, now)
    if window is None:
        return 0, [], 0
    texts = status.scheduled_times(cloud, window)
    if not texts:
        return 0, [], 0
    workflow, params = settings.workflow, status.job_params(job)
    instants = [parse_instant(text) for text in texts]
    runs = status.attempts_by_time(cloud, workflow, instants, params)
    newest = {instant: attempts[-1] for instant, attempts in runs.items()}
    newest.update(status.settle(cloud, workflow, list(newest.values())))
    existing = {record.name: record for record in
                alerts.records(cloud, alerts.workflow_prefix(workflow), instants[0], instants[-1])}
    raised, to_resolve = [], []
    stamp = _rfc3339(now)
    for text, instant, digest in zip(texts, instants, run_digests(workflow, instants, params)):
        attempts = runs.get(instant, [])
        if attempts:
            attempts = [*attempts[:-1], newest[instant]]
        succeeded = bool(attempts) and attempts[-1].state == "SUCCEEDED"
        for alert in _judge(job["name"], workflow, text, instant, attempts, settings, now):
            if succeeded:
                alert = alerts.Alert(**{**alert.fields(), "resolvedAt": stamp})  # raised and resolved at once
            name = alerts.object_name(alert, digest)
            if name not in existing and alerts.raise_once(cloud, alert, digest):
                raised.append(alert)
                log(alerts.log_entry(alert, "alert"))
        if succeeded:
            prefix = alerts.workflow_prefix(workflow) + f"{ledger.instant_key(instant)}/{digest}/"
            to_resolve += [record for name, record in existing.items() if name.startswith(prefix)]
    if settings.pause_after:
        raised += _pause_if_failing(cloud, job, settings, texts, instants, newest, now, log)
    resolved = alerts.resolve(cloud, to_resolve, stamp)
    for alert in resolved:
        log(alerts.log_entry(alert, "alert_resolved"))
    return len(texts), raised, len(resolved)


def _pause_if_failing(cloud: Cloud, job: dict[str, Any], settings: job_settings.JobSettings, texts: list[str],
                      instants: list[datetime], newest: dict[datetime, ledger.Record], now: datetime,
                      log: Log) -> list[alerts.Alert]:
    """pauseAfter=N (docs/proxy.md): when the job's last N scheduled times whose runs ended all
    ended unsuccessfully, pause the Scheduler job and raise `paused` for the last of them. The
    alert is raised first (ifGenerationMatch=0), and only its winner pauses: a job resumed by an
    operator is not paused again for the same failures, only for N new ones. Times still running,
    skipped or missing are passed over."""
    ended = [(text, newest[instant]) for text, instant in zip(texts, instants)
             if instant in newest and (newest[instant].settled and newest[instant].state != "SKIPPED")]
    last = ended[-settings.pause_after:]
    if len(last) < settings.pause_after or any(r.state not in ENDED_UNSUCCESSFULLY for _, r in last):
        return []
    if job.get("state") not in (None, "ENABLED"):
        return []
    text, record = last[-1]
    alert = alerts.Alert(kind="paused", job=job["name"], workflow=settings.workflow, scheduleTime=text,
                         attempt=None, execution=record.execution,
                         error=f"paused after {settings.pause_after} consecutive failed scheduled times",
                         raisedAt=_rfc3339(now))
    if not alerts.raise_once(cloud, alert, record.digest):
        return []
    cloud.set_job_paused(job["name"], True)
    log(alerts.log_entry(alert, "alert"))
    return [alert]


def _judge(job: str, workflow: str, text: str, instant: datetime, attempts: list[ledger.Record],
           settings: job_settings.JobSettings, now: datetime) -> list[alerts.Alert]:
    """The alerts a time deserves (docs/alerts.md, "The kinds"), each with its raisedAt = now."""
    def alert(kind: str, record: ledger.Record | None = None) -> alerts.Alert:
        failed = kind == "failed"
        return alerts.Alert(kind=kind, job=job, workflow=workflow, scheduleTime=text,
                            attempt=record.attempt if failed and record else None,
                            execution=record.execution if record else None,
                            error=record.error if failed and record else None, raisedAt=_rfc3339(now))
    if not attempts:
        return [alert("missing")] if instant + settings.grace <= now else []
    found = [alert("failed", record) for record in attempts if record.state in ENDED_UNSUCCESSFULLY]
    if settings.deadline is not None and status.is_late(attempts[-1], instant + settings.deadline, now):
        found.append(alert("late", attempts[-1]))
    return found


def _rfc3339(instant: datetime) -> str:
    return instant.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
