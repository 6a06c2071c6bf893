"""The commands behind `wfr backfill start|show|cancel|list`: check, start, follow and report."""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import backfills, exits, ids, render, status as status_
from .commands import chosen, connect
from .errors import WfrError
from .selection import Chosen

FOLLOW_INTERVAL = 2.0   # seconds between two looks at a followed backfill
# workflows/backfill.yaml's bounds on `concurrency` (its read_argument says why): runs in flight
# with --wait, starts at once with --no-wait.
CONCURRENCY = {True: range(1, 51), False: range(1, 21)}
COUNTED = ("planned", "started", "skipped", "failed")
WIDE = 150   # narrower terminals get a block per backfill instead of a table
# A backfill's exit status by outcome (docs/cli.md): failed, error and cancelled are 3, as a
# failed time is for status; running (its runs still run, or not followed) 5.
EXIT_OF = {"succeeded": exits.OK, "failed": exits.FAILED, "error": exits.FAILED, "cancelled": exits.FAILED,
           "running": exits.RUNNING}


# --- start ----------------------------------------------------------------------------------
def start(args: argparse.Namespace, console: Console) -> int:
    allowed = CONCURRENCY[bool(args.wait)]
    if args.concurrency not in allowed:
        what = "runs in flight, with --wait" if args.wait else "starts at once, with --no-wait"
        raise WfrError(f"--concurrency must be 1 to {allowed[-1]} ({what}), got {args.concurrency}")
    cloud = connect(args)
    picked = chosen(cloud, args, args.workflow)   # the dry run's checks, before anything starts
    if args.dry_run:
        return _dry_run(cloud, console, args, picked)
    started_at = time.monotonic()
    name = backfills.start(cloud, backfills.argument(picked.workflow, picked.window, picked.params,
                                                     args.concurrency, args.reprocess, args.order, args.wait))
    backfill_id = name.rsplit("/", 1)[-1]
    follow = console.is_terminal if args.follow is None else args.follow
    if not follow:
        if args.format == "json":
            print(json.dumps({"id": backfill_id, "name": name}))
        else:
            console.print(f"backfill {backfill_id} started; follow it with: wfr backfill show {backfill_id} --follow",
                          soft_wrap=True)   # one line on a pipe too, whatever its width
        return exits.OK
    console.print(f"backfill {backfill_id} started")
    return _follow(cloud, console, backfill_id, args.format, started_at)


def _dry_run(cloud, console: Console, args: argparse.Namespace, picked: Chosen) -> int:
    """What the backfill would start (backfills.would_start)."""
    result = status_.read(cloud, picked.workflow, picked.window, picked.params)
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
    return exits.OK


# --- follow ---------------------------------------------------------------------------------
def _follow(cloud, console: Console, backfill_id: str, fmt: str, started_at: float | None = None) -> int:
    """Draw the backfill's progress until it ends, then its summary; Ctrl-C asks what to do.
    `started_at` (time.monotonic()) when this wfr started it: its pace counts from then."""
    from rich.progress import Progress, TextColumn
    pace = render.Pace(started_at)
    try:
        # Redrawn at each look, not ten times a second: nothing changes in between. On a pipe,
        # only the summary. The line (bar included) is render.progress_line's, fitted to the width.
        with Progress(TextColumn("{task.description}", markup=False), console=console,
                      auto_refresh=False, disable=not console.is_terminal) as bar:
            task = bar.add_task("", total=None)
            planned = None
            while True:
                shown = backfills.show(cloud, backfill_id, planned)
                p = shown.progress
                if p is not None:
                    planned = p.planned
                    bar.update(task, description=render.progress_line(p, pace.look(p.done, p.planned),
                                                                      console.width - 1))
                    bar.refresh()
                if not shown.active:
                    break
                time.sleep(FOLLOW_INTERVAL)
    except KeyboardInterrupt:
        return _interrupted(cloud, console, backfill_id, fmt)
    _print(console, shown, fmt)
    return EXIT_OF[shown.outcome]


def _interrupted(cloud, console: Console, backfill_id: str, fmt: str) -> int:
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
        _print(console, backfills.show(cloud, backfill_id), fmt)
        return exits.INTERRUPTED
    console.print(f"detached; it goes on. Follow it again with: wfr backfill show {backfill_id} --follow",
                  soft_wrap=True)
    return exits.OK


# --- show, cancel, list ---------------------------------------------------------------------
def show(args: argparse.Namespace, console: Console) -> int:
    cloud = connect(args)
    if args.follow:
        backfill_id = ids.execution(cloud, backfills.backfill_workflow(cloud), args.id, "backfill").rsplit("/", 1)[-1]
        return _follow(cloud, console, backfill_id, args.format)
    shown = backfills.show(cloud, args.id)
    _print(console, shown, args.format)
    return EXIT_OF[shown.outcome]


def cancel(args: argparse.Namespace, console: Console) -> int:
    cloud = connect(args)
    links, runs = backfills.cancel(cloud, args.id, args.runs)
    console.print(f"cancelled {len(links)} backfill execution(s)" + (f" and {len(runs)} run(s)" if args.runs else ""))
    return exits.OK


def list_(args: argparse.Namespace, console: Console) -> int:
    cloud = connect(args)
    found = backfills.list_backfills(cloud, args.workflow)
    if args.format == "json":
        print(json.dumps([{"id": b.id, "workflow": b.workflow, "state": b.state, "outcome": b.outcome,
                           "reason": b.reason, "counts": backfills.counts(b), "createTime": b.create_time,
                           "endTime": b.end_time, "links": len(b.links), "argument": b.argument,
                           "result": b.result} for b in found], indent=2))
        return exits.OK
    if console.width < WIDE:
        for b in found:   # a block per backfill: ids whole, nothing squeezed into a column
            c = backfills.counts(b)
            console.print(Text(f"{b.id}  {b.workflow.rsplit('/', 1)[-1] or '-'}  ").append(
                b.outcome, style=render.OUTCOME_STYLE[b.outcome]).append(_note(b)))
            console.print("  " + ", ".join(f"{_number(c[k])} {k}" for k in COUNTED))
            console.print(f"  {b.window}  created {b.create_time[:19].replace('T', ' ')}")
        return exits.OK
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID", no_wrap=True)
    table.add_column("WORKFLOW", no_wrap=True)
    table.add_column("OUTCOME")
    for column in COUNTED:
        table.add_column(column.upper(), no_wrap=True, justify="right")
    table.add_column("WINDOW", no_wrap=True)
    table.add_column("CREATED", no_wrap=True)
    for b in found:
        c = backfills.counts(b)
        outcome = Text(b.outcome, style=render.OUTCOME_STYLE[b.outcome]).append(_note(b))
        table.add_row(b.id, b.workflow.rsplit("/", 1)[-1] or "-", outcome, *(_number(c[k]) for k in COUNTED),
                      b.window, b.create_time[:19].replace("T", " "))
    console.print(table)
    return exits.OK


def _note(b: backfills.Backfill) -> str:
    return (" (dry run)" if b.argument.get("dryRun") else "") + (f": {b.reason}" if b.reason else "")


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


def backfill_json(b: backfills.Backfill) -> dict[str, Any]:
    p = b.progress
    return {"id": b.id, "name": b.name, "workflow": b.workflow, "state": b.state, "outcome": b.outcome,
            "reason": b.reason, "createTime": b.create_time, "endTime": b.end_time,
            "links": [link["name"] for link in b.links], "argument": b.argument,
            "progress": None if p is None else {"planned": p.planned, "started": p.started, "skipped": p.skipped,
                                                "failed": p.failed, "notStarted": p.not_started,
                                                "running": p.running},
            "failures": [] if p is None else [{"scheduleTime": f.schedule_time, "error": f.error,
                                               "execution": f.execution} for f in p.failures],
            "result": b.result}


def _print(console: Console, b: backfills.Backfill, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(backfill_json(b), indent=2))
        return
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    outcome = Text(b.outcome, style=render.OUTCOME_STYLE[b.outcome])
    rows: list[tuple[str, Any]] = [("backfill", b.id), ("workflow", b.workflow or "-"), ("outcome", outcome)]
    if b.reason:
        rows.append(("reason", b.reason))
    rows += [("state", b.state), ("window", b.window), ("links", str(len(b.links))),
             ("created", b.create_time), ("ended", b.end_time or "-")]
    if b.progress is not None:
        p = b.progress
        rows += [("planned", _number(p.planned)), ("started", str(p.started)), ("skipped", str(p.skipped)),
                 ("failed", str(p.failed)),
                 ("running", str(p.running))]
    elif b.result:
        rows += [(key, json.dumps(value)) for key, value in b.result.items() if key != "executions"]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    for failure in (b.progress.failures if b.progress else []):
        console.print(Text(f"  failed {failure.schedule_time}: {failure.error}", style="red"), soft_wrap=True)
