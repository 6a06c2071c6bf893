"""`wfr resume JOB [--backfill] [--dry-run]`: resume a Scheduler job that is PAUSED (its
pauseAfter policy paused it: docs/proxy.md), and with --backfill start a backfill (reprocess none)
of the times its schedule had while it was paused: from the newest `paused` alert's raisedAt
until the job is resumed. Cloud Scheduler delivers nothing while a job is paused ("the system
will stop executing the job until it is re-enabled": cloudscheduler v1 jobs.pause) and its resume
names no catch-up, so those times are `missing`; a time that did run (delivered while the pause
was being made) is left alone. The dry run is printed first; --dry-run stops there
and resumes nothing."""
from __future__ import annotations

import argparse
import shlex
from datetime import datetime, timedelta, timezone

from rich.console import Console

from . import alerts, backfills, exits, selection as selection_, status as status_
from .cloud import Cloud
from .commands import connect, target_flags
from .errors import WfrError

SHOWN = 20   # times the dry run lists; the rest are counted


def resume(args: argparse.Namespace, console: Console) -> int:
    cloud = connect(args)
    name = cloud.target.job_name(args.job)
    state = cloud.job(name).get("state")
    if state != "PAUSED":
        raise WfrError(f"job {args.job} is {state or 'in no known state'}, not PAUSED: nothing to resume")
    paused = _paused_alert(cloud, name, args.job) if args.backfill else None
    if paused is not None:
        _dry_run(cloud, console, args.job, paused, _now())
    if args.dry_run:
        console.print(f"dry run: job {args.job} would be resumed; nothing resumed or started", soft_wrap=True)
        return exits.OK
    cloud.set_job_paused(name, False)
    console.print(f"resumed job {args.job}: Cloud Scheduler delivers its times from now on", soft_wrap=True)
    if paused is not None:
        # The window ends after the resume, not at the dry run: a time that fell due in between
        # was neither delivered (paused) nor would be backfilled. A time both delivered and
        # backfilled runs once (the proxy's claim).
        _start(cloud, console, args, paused.raisedAt, _now())
    return exits.OK


def _paused_alert(cloud: Cloud, name: str, job: str) -> alerts.Alert:
    """The job's newest `paused` alert: its raisedAt is when the pauseAfter policy paused it."""
    found = [r.alert for r in alerts.records(cloud) if r.alert.kind == "paused" and r.alert.job == name]
    if not found:
        raise WfrError(f"job {job} has no paused alert (its pauseAfter policy did not pause it), so when it was "
                       "paused is unknown: resume it without --backfill, then backfill the window it missed with "
                       f"wfr backfill start WORKFLOW --job {job} --start T --stop T")
    return max(found, key=lambda alert: alert.raisedAt)


def _window(cloud: Cloud, job: str, start: str, stop: str) -> selection_.Chosen | None:
    """The job's times in [start, stop), checked as a backfill's; None when there are none."""
    if start >= stop:
        return None
    picked = selection_.choose(cloud, selection_.Selection(start=start, stop=stop, job=job))
    return picked if picked.planned else None


def _dry_run(cloud: Cloud, console: Console, job: str, paused: alerts.Alert, stop: str) -> None:
    console.print(f"job {job} was paused at {paused.raisedAt} by its pauseAfter policy "
                  f"(its last failed time: {paused.scheduleTime})", soft_wrap=True)
    picked = _window(cloud, job, paused.raisedAt, stop)
    if picked is None:
        console.print("no time of its schedule fell between its pause and now: nothing to backfill", soft_wrap=True)
        return
    result = status_.read(cloud, picked.workflow, picked.window, picked.params)
    times, starting = result.times, backfills.would_start(result, "none")
    console.print(f"{len(times)} of its times fell between its pause and now; the backfill (reprocess none) "
                  f"would start the {len(starting)} that never ran:", soft_wrap=True)
    for t in starting[:SHOWN]:
        console.print(f"  {t.schedule_time}", soft_wrap=True)
    if len(starting) > SHOWN:
        console.print(f"  ... and {len(starting) - SHOWN} more", soft_wrap=True)
    ran = [t for t in times if t.state != "missing"]
    if ran:
        first = ran[0]
        console.print(f"and leave alone the {len(ran)} that already have a run "
                      f"(first: {first.schedule_time} {first.state})", soft_wrap=True)


def _start(cloud: Cloud, console: Console, args: argparse.Namespace, start: str, stop: str) -> None:
    picked = _window(cloud, args.job, start, stop)
    if picked is None:
        return
    try:
        name = backfills.start(cloud, backfills.argument(picked.workflow, picked.window, picked.params))
    except WfrError as error:
        command = shlex.join(["wfr", "backfill", "start", picked.workflow.rsplit("/", 1)[-1], "--job", args.job,
                              "--start", start, "--stop", stop, *target_flags(args)])
        raise WfrError(f"job {args.job} is resumed, but the backfill of the times it missed did not start: "
                       f"{error.message}; start it with: {command}") from None
    backfill_id = name.rsplit("/", 1)[-1]
    follow = shlex.join(["wfr", "backfill", "show", backfill_id, "--follow", *target_flags(args)])
    console.print(f"backfill {backfill_id} started (the times from {start} to {stop}, reprocess none); "
                  f"follow it with: {follow}", soft_wrap=True)


def _now() -> str:
    """Now, rounded up to the second: the window's stop is exclusive, and a time of this very
    second has passed undelivered if the job is still paused."""
    now = datetime.now(timezone.utc)
    if now.microsecond:
        now = now.replace(microsecond=0) + timedelta(seconds=1)
    return now.isoformat().replace("+00:00", "Z")
