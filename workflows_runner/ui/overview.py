"""The first page: the Scheduler jobs that call the proxy (schedule, zone, next run, paused or
not), each with its recent times as a strip of cells, and the recent backfills with their outcome
and counts. Read from the status model and the backfills, nothing recounted; a job or backfill
that cannot be read shows its reason in its own row and never takes the page down."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import escape
from typing import Any, Callable

from .. import backfills, job_settings, status as status_
from ..cloud import Cloud
from ..errors import ApiError, WfrError
from ..identity import parse_instant
from ..selection import Selection, choose
from . import bars, grid

STRIP = 24              # recent times a job shows
LOOKBACK = timedelta(days=366)   # how far back the strip looks for them
BACKFILLS = 10          # recent backfills shown
WORKERS = 8             # jobs read at once


@dataclass(frozen=True)
class JobRow:
    job: dict[str, Any]
    name: str                        # the job's id
    workflow: str                    # the full name, or "" when its URI names none
    status: status_.Status | None    # its recent times
    error: str | None = None

    @property
    def daily(self) -> bool:
        """At most one time a day: its grid is a month calendar."""
        days = [t.day for t in self.status.times] if self.status else []
        return len(days) == len(set(days))


def jobs(cloud: Cloud, now: datetime) -> list[JobRow]:
    proxy = cloud.function_url("proxy")
    found = [job for job in cloud.jobs() if job_settings.targets((job.get("httpTarget") or {}).get("uri", ""), proxy)]
    with ThreadPoolExecutor(WORKERS) as pool:
        return list(pool.map(lambda job: _row(cloud, job, now), sorted(found, key=lambda j: j["name"])))


def _row(cloud: Cloud, job: dict[str, Any], now: datetime) -> JobRow:
    name = job["name"].rsplit("/", 1)[-1]
    try:
        workflow = job_settings.of_job(job).workflow
        return JobRow(job, name, workflow, recent(cloud, name, job, now))
    except WfrError as error:
        return JobRow(job, name, "", None, error.message)


def recent(cloud: Cloud, name: str, job: dict[str, Any], now: datetime) -> status_.Status:
    """The job's newest STRIP times before `now`, with their states (as `wfr status --job`)."""
    zone = job.get("timeZone") or "UTC"
    stop = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    newest = cloud.call_function("range", "/", {"start": (now - LOOKBACK).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                                "stop": stop, "step": job.get("schedule", ""), "timezone": zone,
                                                "order": "desc", "pageSize": STRIP})["scheduleTimes"]
    if not newest:
        return status_.Status(job_settings.of_job(job).workflow, status_.Window(stop, stop, job.get("schedule", ""), zone),
                              {}, [])
    picked = choose(cloud, Selection(job=name, start=newest[-1], stop=stop))
    return status_.read(cloud, picked.workflow, picked.window, picked.params)


def recent_backfills(cloud: Cloud) -> list[backfills.Backfill]:
    """The newest backfills of every workflow; those still running with their progress."""
    try:
        found = backfills.list_backfills(cloud)[:BACKFILLS]
    except ApiError as error:
        if error.code == 404:   # no backfill workflow deployed
            return []
        raise
    return [backfills.show(cloud, b.id) if b.active else b for b in found]


def contained(read: Callable[[], list]) -> list | str:
    """What `read` returns, or the reason it could not (an unreachable API, a refusal)."""
    try:
        return read()
    except WfrError as error:
        return error.message


def job_window(row: JobRow, now: datetime) -> dict[str, str]:
    """The grid a job opens, up to now: this month as a calendar for a daily schedule, else the
    last 7 days."""
    until_now = now.strftime("%Y-%m-%dT%H:%M:%SZ")   # not the future: its times are not missing yet
    if row.daily:
        return {"job": row.name, "start": now.strftime("%Y-%m-01T00:00:00"), "stop": until_now}
    return {"job": row.name, "start": (now - timedelta(days=6)).strftime("%Y-%m-%dT00:00:00"), "stop": until_now}


def _when(text: str | None) -> str:
    """An RFC 3339 instant to the minute, in UTC: 2026-12-08 00:00 UTC."""
    try:
        return parse_instant(text or "").strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return "-"


def html(rows: list[JobRow] | str, found: list[backfills.Backfill] | str, token: str, now: datetime) -> str:
    out = []
    for row in rows if isinstance(rows, list) else []:
        job = row.job
        state = job.get("state", "ENABLED")
        link = bars.url("/", token, job_window(row, now))
        nxt = escape(_when(job.get("scheduleTime")))
        if row.error:
            strip = f'<span class="error-inline">{escape(row.error)}</span>'
        else:
            counts = row.status.totals if row.status else {}
            strip = grid.strip(row.status.times if row.status else [], now) + (
                f'<small class="strip-totals">{sum(counts.values())} recent: '
                + ", ".join(f"{counts[s]} {s}" for s in status_.STATES if counts.get(s)) + "</small>")
        out.append(f'<tr data-job="{escape(row.name)}" data-job-state="{escape(state)}">'
                   f'<td><a href="{escape(link)}"><b>{escape(row.name)}</b></a><br><small>'
                   f'{escape(row.workflow.rsplit("/", 1)[-1] or "-")}</small></td>'
                   f'<td><code>{escape(job.get("schedule", ""))}</code><br><small>{escape(job.get("timeZone") or "UTC")}</small></td>'
                   f'<td>{"<span class=paused>paused</span>" if state == "PAUSED" else nxt}</td>'
                   f'<td class="recent">{strip}</td></tr>')
    jobs_html = f'<p class="error">{escape(rows)}</p>' if isinstance(rows, str) else (f'<table class="jobs"><thead><tr><th>job · workflow</th><th>schedule</th><th>next run</th>'
                 f'<th>recent times, oldest first</th></tr></thead><tbody>{"".join(out)}</tbody></table>'
                 if out else '<p class="empty">No Cloud Scheduler job calls the proxy yet.</p>')
    return (f'<section class="overview"><h2>Scheduled jobs <small>(through the proxy)</small></h2>{jobs_html}'
            f'<h2>Recent backfills</h2>'
            + (f'<p class="error">{escape(found)}</p>' if isinstance(found, str) else
               bars.table(found, token, show_workflow=True)) + '</section>'
            + grid.legend())
