"""The commands behind `wfr`'s subcommands: read the model, hand it to a view."""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import backfills, render, rerun as rerun_, status as status_, target as target_
from .cli import EXIT_FAILED, EXIT_MISSING, EXIT_RUNNING, load_params
from .cloud import Cloud
from .errors import WfrError

FOLLOW_INTERVAL = 2.0   # seconds between two looks at a followed backfill


def connect(args: argparse.Namespace) -> Cloud:
    if args.local is not None:
        return Cloud(target_.local(args.local or None))
    return Cloud(target_.google(args.project, args.region, args.prefix))


def read_window(cloud: Cloud, args: argparse.Namespace) -> tuple[status_.Window, dict[str, Any]]:
    if args.job:
        if args.step or args.timezone or args.params:
            raise WfrError("--job gives the schedule, time zone and body: leave out --step, --timezone and --params")
        return status_.window_from_job(cloud, args.job, args.start, args.stop)
    if not args.step:
        raise WfrError("give --step CRON (with --timezone and --params as the job has them) or --job NAME")
    return status_.Window(args.start, args.stop, args.step, args.timezone or "UTC"), load_params(args.params)


def exit_status(status: status_.Status) -> int:
    totals = status.totals
    if totals["failed"] or totals["cancelled"]:
        return EXIT_FAILED
    if totals["missing"]:
        return EXIT_MISSING
    if totals["running"]:
        return EXIT_RUNNING
    return 0


# --- status -------------------------------------------------------------------------------
def status(args: argparse.Namespace, console: Console) -> int:
    cloud = connect(args)
    window, params = read_window(cloud, args)
    only = [s.strip() for s in args.only.split(",")] if args.only else list(status_.STATES)
    unknown = set(only) - set(status_.STATES)
    if unknown:
        raise WfrError(f"--only takes {','.join(status_.STATES)}; got {','.join(sorted(unknown))}")
    result = status_.read(cloud, cloud.target.workflow_name(args.workflow), window, params)
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
    return exit_status(result)


# --- backfill -----------------------------------------------------------------------------
def backfill(args: argparse.Namespace, console: Console) -> int:
    cloud = connect(args)
    window, params = read_window(cloud, args)
    workflow = cloud.target.workflow_name(args.workflow)
    if args.dry_run:
        return _dry_run(cloud, console, args, workflow, window, params)
    started_at = time.monotonic()
    name = backfills.start(cloud, backfills.argument(workflow, window, params, args.concurrency,
                                                     args.reprocess, args.order, args.wait))
    backfill_id = name.rsplit("/", 1)[-1]
    follow = console.is_terminal if args.follow is None else args.follow
    if not follow:
        if args.format == "json":
            print(json.dumps({"id": backfill_id, "name": name}))
        else:
            console.print(f"backfill {backfill_id} started; follow it with: wfr backfill show {backfill_id} --follow",
                          soft_wrap=True)   # one line on a pipe too, whatever its width
        return 0
    console.print(f"backfill {backfill_id} started")
    return _follow(cloud, console, backfill_id, args.format, started_at)


def _dry_run(cloud: Cloud, console: Console, args: argparse.Namespace, workflow: str,
             window: status_.Window, params: dict[str, Any]) -> int:
    """What the backfill would start (backfills.would_start)."""
    result = status_.read(cloud, workflow, window, params)
    starting = backfills.would_start(result, args.reprocess, args.order)
    # planned, wouldStart and firstToStart mean what they mean in backfill.yaml's dry run.
    summary = {"dryRun": True, "planned": len(result.times), "wouldStart": len(starting),
               "firstToStart": starting[0].schedule_time if starting else None,
               "first": [t.schedule_time for t in starting[:10]], "totals": result.totals}
    if args.format == "json":
        print(json.dumps(summary, indent=2))
    else:
        console.print(f"{len(result.times)} times planned; {len(starting)} would start "
                      f"(reprocess {args.reprocess}), {len(result.times) - len(starting)} would be skipped")
        for t in starting[:10]:
            console.print(f"  {t.schedule_time}  {t.state}")
    return 0


def _follow(cloud: Cloud, console: Console, backfill_id: str, fmt: str, started_at: float | None = None) -> int:
    """Draw the backfill's progress until it ends, then its summary; Ctrl-C asks what to do.
    `started_at` (time.monotonic()) when this wfr started it: its pace counts from then."""
    from rich.progress import BarColumn, Progress, TextColumn
    pace = render.Pace(started_at)
    try:
        # Redrawn at each look, not ten times a second: nothing changes in between. On a pipe,
        # only the summary.
        with Progress(BarColumn(bar_width=24), TextColumn("{task.description}", markup=False), console=console,
                      auto_refresh=False, disable=not console.is_terminal) as bar:
            task = bar.add_task("", total=None)
            planned = None
            while True:
                shown = backfills.show(cloud, backfill_id, planned)
                p = shown.progress
                if p is not None:
                    planned = p.planned
                    bar.update(task, total=p.planned, completed=p.done,
                               description=render.progress_line(p, pace.look(p.done, p.planned)))
                    bar.refresh()
                if not shown.active:
                    break
                time.sleep(FOLLOW_INTERVAL)
    except KeyboardInterrupt:
        return _interrupted(cloud, console, backfill_id, fmt)
    _print_backfill(console, shown, fmt)
    return followed_exit_status(shown)


def followed_exit_status(b: backfills.Backfill) -> int:
    """As status's: 3 when a time failed (a run ended badly or could not be started) or the
    backfill itself did not succeed; 5 when runs are still running (--no-wait); else 0."""
    p = b.progress
    if b.state != "SUCCEEDED" or (p is not None and p.failed):
        return EXIT_FAILED
    if p is not None and p.running:
        return EXIT_RUNNING
    return 0


def _interrupted(cloud: Cloud, console: Console, backfill_id: str, fmt: str) -> int:
    console.print()
    try:
        answer = console.input(f"Ctrl-C: [c]ancel backfill {backfill_id}, cancel it and its [r]unning runs, "
                               "or [d]etach and let it go on? [d] ", markup=False).strip().lower()
    except (KeyboardInterrupt, EOFError):
        answer = "d"
    if answer[:1] in ("c", "r"):
        links, runs = backfills.cancel(cloud, backfill_id, runs=answer.startswith("r"))
        console.print(f"cancelled {len(links)} backfill execution(s) and {len(runs)} run(s)")
        # The summary a cancelled backfill's result lacks, from its runs' labels.
        _print_backfill(console, backfills.show(cloud, backfill_id), fmt)
        return 130
    console.print(f"detached; it goes on. Follow it again with: wfr backfill show {backfill_id} --follow",
                  soft_wrap=True)
    return 0


def backfill_show(args: argparse.Namespace, console: Console) -> int:
    cloud = connect(args)
    if args.follow:
        return _follow(cloud, console, args.id, args.format)
    _print_backfill(console, backfills.show(cloud, args.id), args.format)
    return 0


def _backfill_json(b: backfills.Backfill) -> dict[str, Any]:
    p = b.progress
    return {"id": b.id, "name": b.name, "workflow": b.workflow, "state": b.state,
            "createTime": b.create_time, "endTime": b.end_time,
            "links": [link["name"] for link in b.links], "argument": b.argument,
            "progress": None if p is None else {"planned": p.planned, "started": p.started, "skipped": p.skipped,
                                                "failed": p.failed, "running": p.running},
            "firstFailures": [] if p is None else p.first_failures, "result": b.result}


def _print_backfill(console: Console, b: backfills.Backfill, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(_backfill_json(b), indent=2))
        return
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    a = b.argument
    rows = [("backfill", b.id), ("workflow", b.workflow), ("state", b.state),
            ("window", f"{a.get('start')} .. {a.get('stop')}  {a.get('step')}  {a.get('timezone', 'UTC')}"),
            ("links", str(len(b.links))), ("created", b.create_time), ("ended", b.end_time or "-")]
    if b.progress is not None:
        p = b.progress
        rows += [("planned", str(p.planned)), ("started", str(p.started)), ("skipped", str(p.skipped)),
                 ("failed", str(p.failed)), ("running", str(p.running))]
    elif b.result:
        rows += [(key, json.dumps(value)) for key, value in b.result.items()]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    for failure in (b.progress.first_failures if b.progress else [])[:20]:
        console.print(Text(f"  failed {failure.get('scheduleTime')}: {failure.get('error')}", style="red"))


def backfill_cancel(args: argparse.Namespace, console: Console) -> int:
    cloud = connect(args)
    links, runs = backfills.cancel(cloud, args.id, args.runs)
    console.print(f"cancelled {len(links)} backfill execution(s)" + (f" and {len(runs)} run(s)" if args.runs else ""))
    return 0


def backfills_list(args: argparse.Namespace, console: Console) -> int:
    cloud = connect(args)
    found = backfills.list_backfills(cloud, args.workflow)
    if args.format == "json":
        print(json.dumps([{"id": b.id, "workflow": b.workflow, "state": b.state, "createTime": b.create_time,
                           "endTime": b.end_time, "links": len(b.links), "argument": b.argument,
                           "result": b.result} for b in found], indent=2))
        return 0
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "WORKFLOW", "STATE", "WINDOW", "CREATED", "LINKS"):
        table.add_column(column, no_wrap=True)
    for b in found:
        a = b.argument
        table.add_row(b.id, b.workflow.rsplit("/", 1)[-1], b.state,
                      f"{a.get('start')} .. {a.get('stop')} {a.get('step')}", b.create_time, str(len(b.links)))
    console.print(table)
    return 0




# --- rerun --------------------------------------------------------------------------------
def rerun(args: argparse.Namespace, console: Console) -> int:
    cloud = connect(args)
    if args.failed:
        if len(args.targets) != 1 or not args.start or not args.stop:
            raise WfrError("rerun --failed takes one WORKFLOW and --start, --stop and --step or --job")
        window, params = read_window(cloud, args)
        result = status_.read(cloud, cloud.target.workflow_name(args.targets[0]), window, params)
        records, reprocess = rerun_.failed_records(result.times), "failed"
    else:
        if any(getattr(args, f) for f in ("start", "stop", "step", "timezone", "params", "job")):
            raise WfrError("a window (--start, --stop, ...) goes with --failed; without it, name executions")
        records, reprocess = [rerun_.newest_record(cloud, name) for name in args.targets], "completed"
    reruns = rerun_.rerun_records(cloud, records, reprocess)
    if args.format == "json":
        print(json.dumps([{"scheduleTime": r.schedule_time, "started": r.started, "execution": r.execution,
                           "error": r.error} for r in reruns], indent=2))
    else:
        for r in reruns:
            what = "started" if r.started else ("error: " + r.error if r.error else "not started (running)")
            console.print(f"{r.schedule_time}  {what}  {render.short_id(r.execution)}")
        console.print(f"{sum(r.started for r in reruns)} of {len(reruns)} re-run")
    return 1 if any(r.error for r in reruns) else 0


# --- ui -----------------------------------------------------------------------------------
def ui(args: argparse.Namespace, console: Console) -> int:
    from .ui import server
    cloud = connect(args)
    t = cloud.target
    if args.local is not None:
        flags, where = ["--local", *([args.local] if args.local else [])], f"local stack, {t.project}/{t.location}"
    else:
        flags, where = ["--project", t.project, "--region", t.location, "--prefix", t.prefix], f"{t.project}/{t.location}"
    return server.serve(cloud, flags, where, args.port, args.browser)
