"""`wfr`: the operator's command line (docs/cli.md). This module only parses and dispatches:
the commands live in commands.py and backfill_commands.py, exit statuses in exits.py.

    wfr [TARGET] COMMAND ...        TARGET flags go before or after the command, as gcloud's do
      status WORKFLOW WINDOW
      backfill start WORKFLOW WINDOW | backfill show ID | backfill cancel ID | backfill list [WORKFLOW]
      rerun WORKFLOW EXECUTION... | rerun WORKFLOW --failed WINDOW
      alerts [--job NAME] [--since T]
      ui
"""
from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata

from . import exits
from .errors import WfrError

REPROCESS = ("none", "failed", "completed")
# On a pipe rich would wrap and crop at 80 columns; a log or a grep wants each row whole.
PIPE_WIDTH = 10_000


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
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
        return exits.INTERRUPTED
    except BrokenPipeError:   # `wfr ... | head`: the reader had enough; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exits.OK


def _version() -> str:
    try:
        return metadata.version("workflows-runner")
    except metadata.PackageNotFoundError:
        return "unknown"


def _target_flags(parser: argparse.ArgumentParser, top: bool) -> None:
    """The target flags, on the top parser (defaults) and on every command (SUPPRESS: a flag
    given after the command wins, one not given keeps what was given before it)."""
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    group = parser.add_argument_group("target (default: Google, from gcloud's config and the environment)")
    group.add_argument("--project", default=default(None),
                       help="Google Cloud project (default: $CLOUDSDK_CORE_PROJECT, then gcloud's core/project)")
    group.add_argument("--region", default=default(None),
                       help="region of the deployment (default: $WFR_REGION, then gcloud's workflows/location)")
    group.add_argument("--prefix", default=default(None),
                       help="deploy.sh's --prefix (default: $WFR_PREFIX, then workflows-runner)")
    group.add_argument("--local", action="store_true", default=default(False),
                       help="the local stack started by 'python -m localcloud up' (its .localcloud/state)")
    group.add_argument("--local-state", metavar="DIR", default=default(None),
                       help="the local stack whose state folder is DIR (DIR/endpoints.json); implies --local")


def _window_flags(parser: argparse.ArgumentParser, required: bool = True) -> None:
    group = parser.add_argument_group("window (--step with --timezone and --params, or --job)")
    group.add_argument("--start", required=required,
                       help="RFC 3339 start (inclusive); without an offset, read in the time zone")
    group.add_argument("--stop", required=required, help="RFC 3339 stop (exclusive)")
    group.add_argument("--step", help="cron schedule of the runs, e.g. '0 1 * * *'")
    group.add_argument("--timezone", help="IANA time zone of the schedule (default UTC)")
    group.add_argument("--params", help="the runs' argument without scheduleTime, a JSON object (default {})")
    group.add_argument("--job", help="a Cloud Scheduler job (through the proxy) whose schedule, "
                                     "time zone and body to use")


def _format(parser: argparse.ArgumentParser, choices: tuple[str, ...] = ("table", "json")) -> None:
    parser.add_argument("--format", choices=choices, default="table",
                        help=f"output: {' or '.join(choices)} (default table; json is a contract, docs/cli.md)")


def _command(sub, name: str, help_: str, run) -> argparse.ArgumentParser:
    command = sub.add_parser(name, help=help_, description=help_)
    _target_flags(command, top=False)
    command.set_defaults(run=run)
    return command


def parser() -> argparse.ArgumentParser:
    from . import alert_commands, backfill_commands as bf, commands, resume_commands
    from .status import STATES
    top = argparse.ArgumentParser(prog="wfr", description="Scheduled runs, re-runs and backfills "
                                  "of Google Cloud Workflows (docs/cli.md).")
    top.add_argument("--version", action="version", version=f"wfr {_version()}", help="print wfr's version")
    _target_flags(top, top=True)
    sub = top.add_subparsers(required=True, metavar="COMMAND", title="commands")

    status = _command(sub, "status", "the state of every scheduled time of a window", commands.status)
    status.add_argument("workflow", metavar="WORKFLOW", help="workflow id, or projects/P/locations/L/workflows/W")
    _window_flags(status)
    status.add_argument("--only", help=f"comma-separated states to list: {','.join(STATES)}")
    _format(status, ("table", "json", "csv"))

    resume = _command(sub, "resume", "resume a job its pauseAfter paused; --backfill the times it missed",
                      resume_commands.resume)
    resume.add_argument("job", metavar="JOB", help="the Scheduler job (its id, PREFIX- added on Google, or full name)")
    resume.add_argument("--backfill", action="store_true",
                        help="also backfill (reprocess none) the times since its pause, after printing the dry run")
    resume.add_argument("--dry-run", action="store_true", help="print what would happen; resume and start nothing")

    backfill = sub.add_parser("backfill", help="start, show, cancel and list backfills",
                              description="start, show, cancel and list backfills")
    _target_flags(backfill, top=False)
    verbs = backfill.add_subparsers(required=True, metavar="VERB", title="verbs")

    start = _command(verbs, "start", "run every scheduled time of a window through the proxy", bf.start)
    start.add_argument("workflow", metavar="WORKFLOW", help="workflow id, or projects/P/locations/L/workflows/W")
    _window_flags(start)
    start.add_argument("--concurrency", type=int, default=1, help="runs in flight with --wait, 1 to 50; starts at once with --no-wait, 1 to 20 (default 1)")
    start.add_argument("--reprocess", choices=REPROCESS, default="none",
                       help="none: only times never run (default); failed: also failed ones; completed: all")
    start.add_argument("--order", choices=("asc", "desc"), default="asc",
                       help="oldest time first (asc, default) or newest first (desc)")
    start.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                       help="wait for each run to end before its slot starts the next (default)")
    start.add_argument("--dry-run", action="store_true", help="start nothing: how many would start, and the first")
    start.add_argument("--follow", action=argparse.BooleanOptionalAction, default=None,
                       help="show progress until it ends (default on a terminal); --no-follow or --detach")
    start.add_argument("--detach", dest="follow", action="store_false", help="the same as --no-follow")
    _format(start)

    show = _command(verbs, "show", "a backfill's outcome, progress and failures", bf.show)
    show.add_argument("id", metavar="ID", help="the backfill's id as wfr prints it, a unique prefix "
                                               "(8 characters or more) or its execution's full name")
    show.add_argument("--follow", action="store_true", help="show its progress until it ends, then the summary")
    _format(show)

    cancel = _command(verbs, "cancel", "cancel a backfill (its runs go on unless --runs)", bf.cancel)
    cancel.add_argument("id", metavar="ID", help="the backfill's id, a unique prefix (8 or more) or full name")
    cancel.add_argument("--runs", action="store_true", help="also cancel its runs still running")

    listing = _command(verbs, "list", "the backfills, newest first, with their outcome and counts", bf.list_)
    listing.add_argument("workflow", metavar="WORKFLOW", nargs="?", help="only the backfills of this workflow")
    _format(listing)

    rerun = _command(sub, "rerun", "re-run runs with their original argument (a new attempt of each)",
                     commands.rerun)
    rerun.add_argument("workflow", metavar="WORKFLOW", help="workflow id, or projects/P/locations/L/workflows/W")
    rerun.add_argument("executions", metavar="EXECUTION", nargs="*",
                       help="executions of WORKFLOW: an id as wfr status prints it, a unique prefix "
                            "(8 characters or more) or a full name")
    rerun.add_argument("--failed", action="store_true",
                       help="re-run every failed or cancelled time of the window (instead of EXECUTIONs)")
    _window_flags(rerun, required=False)
    _format(rerun)

    alerts = _command(sub, "alerts", "the audit's alerts (missing, late, failed, paused times), newest first",
                      alert_commands.alerts_)
    alerts.add_argument("--job", help="only the alerts of this Scheduler job")
    alerts.add_argument("--since", metavar="T", help="only alerts raised at or after T (RFC 3339)")
    _format(alerts)

    ui = _command(sub, "ui", "the runs in the browser, on 127.0.0.1 (docs/ui.md)", commands.ui)
    ui.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    ui.add_argument("--no-browser", dest="browser", action="store_false", help="only print the page's URL")
    return top


if __name__ == "__main__":
    sys.exit(main())
