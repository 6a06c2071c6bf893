"""The commands behind `wfr status`, `wfr rerun` and `wfr ui`: read the model, hand it to a view.
(The backfill verbs are in backfill_commands.py.)"""
from __future__ import annotations

import argparse
import json

from rich.console import Console

from . import exits, ids, render, rerun as rerun_, selection as selection_, status as status_, target as target_
from .cloud import Cloud
from .errors import WfrError


def connect(args: argparse.Namespace) -> Cloud:
    if args.local or args.local_state:
        return Cloud(target_.local(args.local_state))
    return Cloud(target_.google(args.project, args.region, args.prefix))


def target_flags(args: argparse.Namespace) -> list[str]:
    """The flags that point another wfr command at the same target (for commands printed)."""
    if args.local_state:
        return ["--local-state", args.local_state]
    if args.local:
        return ["--local"]
    flags = []
    for flag in ("project", "region", "prefix"):
        if getattr(args, flag):
            flags += [f"--{flag}", getattr(args, flag)]
    return flags


def chosen(cloud: Cloud, args: argparse.Namespace, workflow: str | None) -> selection_.Chosen:
    return selection_.choose(cloud, selection_.Selection.from_args(args, workflow))


# --- status -------------------------------------------------------------------------------
def status(args: argparse.Namespace, console: Console) -> int:
    only = [s.strip() for s in args.only.split(",")] if args.only else list(status_.STATES)
    unknown = set(only) - set(status_.STATES)
    if unknown:
        raise WfrError(f"--only takes {','.join(status_.STATES)}; got {','.join(sorted(unknown))}")
    cloud = connect(args)
    picked = chosen(cloud, args, args.workflow)
    result = status_.read(cloud, picked.workflow, picked.window, picked.params, deadline=picked.deadline)
    times = result.only(only)
    if args.format == "json":
        print(json.dumps(render.status_json(result, times), indent=2))
    elif args.format == "csv":
        print(render.status_csv(times), end="")
    else:
        render.status_table(console, times)
        if console.is_terminal:
            console.print()
            render.status_grid(console, result)
        console.print(render.totals_line(result))
    return exits.of_totals(result.totals)


# --- rerun --------------------------------------------------------------------------------
def rerun(args: argparse.Namespace, console: Console) -> int:
    cloud = connect(args)
    window_given = any(getattr(args, f) for f in ("start", "stop", "step", "timezone", "params", "job"))
    if args.failed:
        if args.executions:
            raise WfrError("rerun --failed re-runs a window's failed times: leave out the EXECUTIONs")
        picked = chosen(cloud, args, args.workflow)
        result = status_.read(cloud, picked.workflow, picked.window, picked.params)
        records, reprocess = rerun_.failed_records(result.times), "failed"
    else:
        if window_given:
            raise WfrError("a window (--start, --stop, ...) goes with --failed; without it, name executions")
        if not args.executions:
            raise WfrError("name the executions to re-run, or give --failed and a window")
        workflow = cloud.target.workflow_name(args.workflow)
        names = [ids.execution(cloud, workflow, text) for text in args.executions]
        records, reprocess = [rerun_.newest_record(cloud, name) for name in names], "completed"
    reruns = rerun_.rerun_records(cloud, records, reprocess)
    if args.format == "json":
        print(json.dumps([{"scheduleTime": r.schedule_time, "started": r.started, "execution": r.execution,
                           "error": r.error} for r in reruns], indent=2))
    else:
        for r in reruns:
            what = "started" if r.started else ("error: " + r.error if r.error else "not started (running)")
            console.print(f"{r.schedule_time}  {what}  {render.short_id(r.execution)}")
        console.print(f"{sum(r.started for r in reruns)} of {len(reruns)} re-run")
    return exits.ERROR if any(r.error for r in reruns) else exits.OK


# --- ui -----------------------------------------------------------------------------------
def ui(args: argparse.Namespace, console: Console) -> int:
    from .ui import server
    cloud = connect(args)
    t = cloud.target
    where = f"local stack, {t.project}/{t.location}" if t.local_token else f"{t.project}/{t.location}"
    flags = target_flags(args) if t.local_token else ["--project", t.project, "--region", t.location,
                                                      "--prefix", t.prefix]
    return server.serve(cloud, flags, where, args.port, args.browser)
