"""python -m localcloud: serve the local stack, run one workflow, list executions.

    serve [--workflows DIR] [--state DIR] [--host H] [--port N] [--jobs FILE] [--scheduler-port N] [--storage-port N]
          [--env WORKFLOW:K=V ...] [--env-file FILE] [--project P] [--location L]
    up --workflows DIR [--jobs FILE] [--state DIR] [--port N]     (localcloud/up.py)
    run PATH [--data JSON] [--env K=V ...]
    executions list [--workflow W] [--filter F] [--limit N] [--format table|json] [--state DIR | --api URL]
    demo ...        (localcloud/demo.py)
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from . import api, env_vars, filters, scheduler, storage, up
from .google_http import ApiError
from .context import LOCAL_TOKEN, LOCATION, PROJECT
from .store import StateLocked, Store

def env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    problem = env_vars.key_error(key)   # `gcloud workflows deploy --set-env-vars` refuses these too
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return key, value


def workflow_env_pair(text: str) -> tuple[str, str, str]:
    workflow, sep, rest = text.partition(":")
    if not sep or not workflow:
        raise argparse.ArgumentTypeError(f"expected WORKFLOW:K=V, got {text!r}")
    return (workflow, *env_pair(rest))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m localcloud", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="Executions API (+ scheduler) on loopback until Ctrl-C")
    serve.add_argument("--workflows", default="workflows", help="folder of WORKFLOW.yaml files (default: workflows)")
    serve.add_argument("--state", default=".localcloud", help="state folder (default: .localcloud)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="API port (default: any free port)")
    serve.add_argument("--jobs", help="Cloud Scheduler jobs file (YAML or JSON); no scheduler without it")
    serve.add_argument("--scheduler-port", type=int, default=0, help="scheduler port (default: any free port)")
    serve.add_argument("--storage-port", type=int, default=0, help="Cloud Storage port (default: any free port)")
    serve.add_argument("--env", action="append", type=workflow_env_pair, default=[], metavar="WORKFLOW:K=V",
                       help="a deploy-time env var of one workflow (repeatable)")
    serve.add_argument("--env-file", help="YAML or JSON map {workflow: {K: V}}")
    serve.add_argument("--project", default=PROJECT)
    serve.add_argument("--location", default=LOCATION)

    run = commands.add_parser("run", help="run one workflow file to completion; result JSON on stdout")
    run.add_argument("path", type=Path)
    run.add_argument("--data", help="the argument, as JSON (like gcloud workflows run --data)")
    run.add_argument("--env", action="append", type=env_pair, default=[], metavar="K=V",
                     help="a deploy-time env var, as --set-env-vars sets it (repeatable)")
    run.add_argument("--project", default=PROJECT)
    run.add_argument("--location", default=LOCATION)

    executions = commands.add_parser("executions", help="executions recorded by serve")
    listing = executions.add_subparsers(dest="action", required=True).add_parser("list")
    listing.add_argument("--workflow", help="only this workflow (required with --api)")
    listing.add_argument("--filter", help='AIP-160 filter, e.g. state="FAILED" or labels.k="v"')
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--format", choices=("table", "json"), default="table")
    listing.add_argument("--state", default=".localcloud", help="state folder to read (default: .localcloud)")
    listing.add_argument("--api", help="read from a running API instead, e.g. http://127.0.0.1:8081")
    listing.add_argument("--project", default=PROJECT)
    listing.add_argument("--location", default=LOCATION)

    up.add_parser(commands)
    commands.add_parser("demo", help="the guided demo (localcloud/demo.py)", add_help=False)
    return top


def load_env_file(path: str | None) -> dict[str, dict[str, str]]:
    if not path:
        return {}
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise SystemExit(f"{path}: expected a map {{workflow: {{K: V}}}}")
    for values in data.values():
        for key, value in values.items():
            env_pair(f"{key}={value}")   # the same refusals as --env
    return {str(w): {str(k): str(v) for k, v in values.items()} for w, values in data.items()}


def serve(args: argparse.Namespace) -> int:
    if not Path(args.workflows).is_dir():
        print(f"--workflows {args.workflows}: no such folder", file=sys.stderr)
        return 2
    env = load_env_file(args.env_file)
    for workflow, key, value in args.env:
        env.setdefault(workflow, {})[key] = value
    try:
        jobs = scheduler.load_jobs(args.jobs) if args.jobs else None
    except (OSError, ValueError) as error:
        print(f"--jobs {args.jobs}: {error}", file=sys.stderr)
        return 2
    try:
        server = api.start(args.workflows, args.state, args.host, args.port, env=env,
                           project=args.project, location=args.location)
        objects = storage.start(args.state, args.host, args.storage_port)
        jobs_server = None
        if jobs is not None:
            jobs_server = scheduler.start(jobs, args.host, args.scheduler_port, args.project, args.location)
    except StateLocked as error:
        print(f"--state {args.state}: {error}", file=sys.stderr)
        return 1
    except OSError as error:       # typically: the port is taken
        print(f"cannot serve on {args.host}: {error}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):   # before the first line: a reader may stop us at once
        signal.signal(signum, lambda *_: stop.set())
    print(json.dumps({"api": server.url, "scheduler": jobs_server.url if jobs_server else None,
                      "storage": objects.url}), flush=True)
    names = sorted(path.stem for path in Path(args.workflows).glob("*") if path.suffix in api.WORKFLOW_SUFFIXES)
    print(f"Workflow Executions API on {server.url} for projects/{args.project}/locations/{args.location}: "
          f"{', '.join(names) or 'no workflows'} (from {args.workflows}/)", flush=True)
    if jobs_server:
        print(f"Cloud Scheduler on {jobs_server.url}: {', '.join(j.name for j in jobs) or 'no jobs'}", flush=True)
    print(f"Cloud Storage JSON API on {objects.url} (no bucket until one is created, as on Google)", flush=True)
    print(f"State in {args.state}/ (delete it to forget). Ctrl-C stops.", flush=True)

    stop.wait()
    if jobs_server:
        jobs_server.stop()
    objects.stop()
    server.stop()
    print("localcloud stopped", flush=True)
    return 0


def stderr_log(entry: dict[str, Any]) -> None:
    print(json.dumps(entry, default=str), file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    path: Path = args.path
    if not path.is_file() or path.suffix not in api.WORKFLOW_SUFFIXES:
        print(f"{path}: expected a workflow file ending in .yaml, .yml or .json", file=sys.stderr)
        return 2
    # A throwaway state folder: this run must not touch (or interrupt) a served stack's history.
    with tempfile.TemporaryDirectory(prefix="localcloud-run-") as state:
        # Exactly the file given, even beside a sibling of the same stem (W.json next to W.yaml);
        # the folder still serves the siblings it calls through the executions connectors.
        server = api.start(path.parent, state, env={path.stem: dict(args.env)}, project=args.project,
                           location=args.location, log=stderr_log, files={path.stem: path})
        try:
            body = {} if args.data is None else {"argument": args.data}
            execution = server.executions.create(args.project, args.location, path.stem, body)
            server.executions.wait(execution["name"])
            final = server.executions.store.get(execution["name"])
        except ApiError as error:
            print(json.dumps(error.body()))
            return 1
        except KeyboardInterrupt:
            return 130
        finally:
            server.stop()
    if final["state"] == "SUCCEEDED":
        print(final["result"])
        return 0
    error = final.get("error") or {}
    print(error.get("payload") or json.dumps({"state": final["state"]}))
    if error.get("context"):
        print(error["context"], file=sys.stderr)
    return 1


def list_executions(args: argparse.Namespace) -> int:
    if args.api:
        if not args.workflow:
            print("--workflow is required with --api", file=sys.stderr)
            return 2
        executions = list_from_api(args)
    else:
        parent = (f"projects/{args.project}/locations/{args.location}/workflows/{args.workflow}"
                  if args.workflow else None)
        try:
            predicate = filters.parse_filter(args.filter)
        except ValueError as error:
            print(error, file=sys.stderr)
            return 2
        if not Path(args.state).is_dir():
            print(f"--state {args.state}: no such folder", file=sys.stderr)
            return 2
        if not (Path(args.state) / "executions.sqlite3").exists():
            executions = []   # a state folder where nothing has run yet
        else:
            store = Store(args.state)
            rows = [row for row in store.scan(parent) if predicate(row[1])]
            store.close()
            executions = [doc for _, doc in filters.sort_executions(rows, filters.parse_order_by(None))]
        executions = executions[:args.limit]
    if args.format == "json":
        print(json.dumps(executions, indent=2))
        return 0
    columns = ("WORKFLOW", "EXECUTION_ID", "STATE", "START_TIME", "END_TIME")
    rows = [(e["name"].split("/")[5], e["name"].rsplit("/", 1)[1], e["state"], e.get("startTime", ""),
             e.get("endTime", "")) for e in executions]
    widths = [max(len(str(row[i])) for row in [columns, *rows]) for i in range(len(columns))]
    for row in [columns, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def list_from_api(args: argparse.Namespace) -> list[dict[str, Any]]:
    parent = f"projects/{args.project}/locations/{args.location}/workflows/{args.workflow}"
    executions: list[dict[str, Any]] = []
    token = None
    while len(executions) < args.limit:
        query = {"view": "FULL", "pageSize": min(args.limit - len(executions), 100)}
        if args.filter:
            query["filter"] = args.filter
        if token:
            query["pageToken"] = token
        request = urllib.request.Request(f"{args.api.rstrip('/')}/v1/{parent}/executions?{urlencode(query)}",
                                         headers={"Authorization": f"Bearer {LOCAL_TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                page = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise SystemExit(error.read().decode(errors="replace")) from None
        executions += page.get("executions", [])
        token = page.get("nextPageToken")
        if not token:
            break
    return executions


def main(argv: list[str] | None = None) -> int:
    try:
        return dispatch(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # The reader went away (`executions list | head`): stop quietly, as other CLI tools do.
        # stdout is pointed at /dev/null so that the interpreter's final flush cannot fail again.
        # https://docs.python.org/3/library/signal.html#note-on-sigpipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141   # 128 + SIGPIPE, what a shell reports for a command killed by the pipe


def dispatch(argv: list[str]) -> int:
    if argv[:1] == ["demo"]:
        # The demo parses its own arguments; imported only when asked for.
        return importlib.import_module("localcloud.demo").main(argv[1:])
    args = parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "run":
        return run(args)
    if args.command == "up":
        return up.main(args)
    return list_executions(args)


if __name__ == "__main__":
    sys.exit(main())
