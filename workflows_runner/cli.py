"""`wfr`: the operator's command line (docs/cli.md).

Exit statuses: 0 success (for `status`: every time succeeded), 1 an error (bad input, a failed
call), 2 bad usage, and for `status` 3 when a time failed or was cancelled, 4 when a time is
missing (none failed), 5 when times are still running (none failed or missing); for a followed
backfill 3 when a time failed or the backfill did not succeed, 5 when its runs still run; 130 on
Ctrl-C (a followed backfill's Ctrl-C: 130 when cancelled, 0 when detached).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .errors import WfrError

EXIT_FAILED, EXIT_MISSING, EXIT_RUNNING = 3, 4, 5
REPROCESS = ("none", "failed", "completed")
# On a pipe rich would wrap and crop at 80 columns; a log or a grep wants each row whole.
PIPE_WIDTH = 10_000


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_split_backfill_verbs(sys.argv[1:] if argv is None else argv))
    from rich.console import Console
    # Everything printed is data (run errors, names), never rich markup: "[/tmp]" in an error
    # would otherwise vanish or raise MarkupError.
    console = Console(highlight=False, markup=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = PIPE_WIDTH
    try:
        return args.run(args, console)
    except WfrError as error:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"wfr: {error.message}", markup=False)
        return error.exit_status
    except KeyboardInterrupt:
        return 130


def _split_backfill_verbs(argv: list[str]) -> list[str]:
    """`wfr backfill show ID` and `wfr backfill cancel ID` are their own commands."""
    for i, word in enumerate(argv):
        if not word.startswith("-"):
            if word == "backfill" and i + 1 < len(argv) and argv[i + 1] in ("show", "cancel"):
                return argv[:i] + [f"backfill-{argv[i + 1]}"] + argv[i + 2:]
            return argv
    return argv


def _parser() -> argparse.ArgumentParser:
    from . import commands
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("target (default: Google, from gcloud's config and the environment)")
    where.add_argument("--project", help="Google Cloud project (default: gcloud config get-value project)")
    where.add_argument("--region", help="region of the deployment (default: $WFR_REGION or gcloud's workflows/location)")
    where.add_argument("--prefix", help="deploy.sh's --prefix (default: $WFR_PREFIX or workflows-runner)")
    where.add_argument("--local", nargs="?", const="", metavar="STATE",
                       help="the local stack: STATE/endpoints.json (default STATE: .localcloud/state)")
    window = argparse.ArgumentParser(add_help=False)
    window.add_argument("workflow", metavar="WORKFLOW", help="workflow id, or projects/P/locations/L/workflows/W")
    window.add_argument("--start", required=True, help="RFC 3339 start (inclusive); without offset, read in the time zone")
    window.add_argument("--stop", required=True, help="RFC 3339 stop (exclusive)")
    window.add_argument("--step", help="cron schedule of the runs, e.g. '0 1 * * *'")
    window.add_argument("--timezone", help="IANA zone of the schedule (default UTC)")
    window.add_argument("--params", help="the runs' argument, a JSON object (default {})")
    window.add_argument("--job", help="a Cloud Scheduler job whose schedule, time zone and body to use")

    parser = argparse.ArgumentParser(prog="wfr", description="Scheduled runs, re-runs and backfills "
                                     "of Google Cloud Workflows (docs/cli.md).")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    status = sub.add_parser("status", parents=[common, window], help="the state of every scheduled time of a window")
    status.add_argument("--only", help="comma-separated states to list: missing,running,succeeded,failed,cancelled")
    status.add_argument("--format", choices=("table", "json", "csv"), default="table")
    status.set_defaults(run=commands.status)

    backfill = sub.add_parser("backfill", parents=[common, window], help="run every scheduled time of a window "
                              "(also: backfill show ID, backfill cancel ID)")
    backfill.add_argument("--concurrency", type=int, default=1, help="runs at once, 1 to 50 (default 1)")
    backfill.add_argument("--reprocess", choices=REPROCESS, default="none",
                          help="none: only times never run; failed: also failed ones; completed: all")
    backfill.add_argument("--order", choices=("asc", "desc"), default="asc")
    backfill.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                          help="wait for each run to end before its slot starts the next (default)")
    backfill.add_argument("--dry-run", action="store_true", help="start nothing: how many would start, and the first")
    backfill.add_argument("--follow", action=argparse.BooleanOptionalAction, default=None,
                          help="show progress until it ends (default on a terminal); --no-follow or --detach")
    backfill.add_argument("--detach", dest="follow", action="store_false", help=argparse.SUPPRESS)
    backfill.add_argument("--format", choices=("table", "json"), default="table")
    backfill.set_defaults(run=commands.backfill)

    show = sub.add_parser("backfill-show", parents=[common], help="a backfill's progress and summary")
    show.add_argument("id", metavar="ID", help="the backfill's execution id (or full name)")
    show.add_argument("--follow", action="store_true", help="show its progress until it ends, then the summary")
    show.add_argument("--format", choices=("table", "json"), default="table")
    show.set_defaults(run=commands.backfill_show)

    cancel = sub.add_parser("backfill-cancel", parents=[common], help="cancel a backfill")
    cancel.add_argument("id", metavar="ID")
    cancel.add_argument("--runs", action="store_true", help="also cancel its runs still running")
    cancel.set_defaults(run=commands.backfill_cancel)

    listing = sub.add_parser("backfills", parents=[common], help="the backfills, newest first")
    listing.add_argument("workflow", metavar="WORKFLOW", nargs="?", help="only those of this workflow")
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.set_defaults(run=commands.backfills_list)

    rerun = sub.add_parser("rerun", parents=[common], help="re-run runs with their original argument")
    rerun.add_argument("targets", metavar="EXECUTION", nargs="+",
                       help="execution names; or WORKFLOW with --failed and a window")
    rerun.add_argument("--failed", action="store_true", help="re-run every failed or cancelled time of the window")
    for flag in ("--start", "--stop", "--step", "--timezone", "--params", "--job"):
        rerun.add_argument(flag)
    rerun.add_argument("--format", choices=("table", "json"), default="table")
    rerun.set_defaults(run=commands.rerun)

    ui = sub.add_parser("ui", parents=[common], help="the runs grid in the browser, on 127.0.0.1 (docs/ui.md)")
    ui.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    ui.add_argument("--no-browser", dest="browser", action="store_false", help="only print the page's URL")
    ui.set_defaults(run=commands.ui)
    return parser


def load_params(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        params = json.loads(text)
    except ValueError as error:
        raise WfrError(f"--params must be a JSON object, e.g. '{{\"table\": \"sales\"}}': {error}") from None
    if not isinstance(params, dict):
        raise WfrError(f"--params must be a JSON object, got {type(params).__name__}")
    if "scheduleTime" in params:
        raise WfrError("--params must not hold scheduleTime; each run receives its own")
    return params


if __name__ == "__main__":
    sys.exit(main())
