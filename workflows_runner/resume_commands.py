"""`wfr resume JOB [--backfill] [--dry-run]`: resume a Scheduler job that its pauseAfter policy
paused (docs/proxy.md), and with --backfill start a backfill (reprocess none) of the times its
schedule had while it was paused: from the newest `paused` alert's raisedAt until now. The
backfill's dry run is printed first; --dry-run stops there and resumes nothing."""
from __future__ import annotations

import argparse
from datetime import datetime, timezone

from rich.console import Console

from . import alerts, backfills, exits, selection as selection_
from .backfill_commands import _dry_run
from .commands import connect
from .errors import WfrError


def resume(args: argparse.Namespace, console: Console) -> int:
    cloud = connect(args)
    name = cloud.target.job_name(args.job)
    job = cloud.job(name)
    if job.get("state") != "PAUSED":
        raise WfrError(f"job {name} is {job.get('state') or 'in no known state'}, not PAUSED: nothing to resume")
    picked = None
    if args.backfill:
        raised = [record.alert.raisedAt for record in alerts.records(cloud)
                  if record.alert.kind == "paused" and record.alert.job == name]
        if not raised:
            raise WfrError(f"job {name} has no paused alert, so when it was paused is unknown: resume it "
                           "without --backfill and backfill a window with wfr backfill start")
        start, stop = max(raised), datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
        if start < stop:
            picked = selection_.choose(cloud, selection_.Selection(start=start, stop=stop, job=args.job))
        if picked is None or not picked.planned:
            console.print(f"no scheduled time of {name} fell between its pause ({start}) and now: nothing to backfill")
            picked = None
        else:
            _dry_run(cloud, console, argparse.Namespace(reprocess="none", order="asc", format="table"), picked)
    if args.dry_run:
        console.print("dry run: nothing resumed or started")
        return exits.OK
    cloud.set_job_paused(name, False)
    console.print(f"resumed {name}")
    if picked is not None:
        started = backfills.start(cloud, backfills.argument(picked.workflow, picked.window, picked.params))
        backfill_id = started.rsplit("/", 1)[-1]
        console.print(f"backfill {backfill_id} started; follow it with: wfr backfill show {backfill_id} --follow",
                      soft_wrap=True)
    return exits.OK
