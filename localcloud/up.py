"""`python -m localcloud up`: the whole local stack for your own workflows folder, kept across restarts.

    up --workflows DIR [--jobs FILE] [--state DIR] [--port N]

Starts the Executions API (the folder's workflows, plus the project's backfill.yaml wired to the
functions), the range, proxy and audit functions, and the scheduler (the jobs file, plus whatever
`gcloud scheduler` created earlier, plus the job `audit` running an audit pass every minute).
Everything lives in the state folder:

    endpoints.json   every URL, for tools (`wfr --local`); the contract is in docs/localcloud.md
    ports.json       the ports, chosen once (or from --port) and reused at each start
    gcloud.sh        `. STATE/gcloud.sh` points the real gcloud at this stack (a named configuration)
    token            the access token that configuration sends
    executions.sqlite3, scheduler-jobs.json, logs/
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from . import stack as local_stack
from .context import LOCAL_TOKEN

DEFAULT_STATE = ".localcloud/state"
GCLOUD_CONFIGURATION = "localcloud"
SERVERS = ("api", "range", "proxy", "scheduler", "storage", "audit")
# Every minute locally (deploy.sh schedules it every 5 minutes on Google): a pass is cheap here.
AUDIT_JOB = {"name": "audit", "schedule": "* * * * *", "uri": "{audit}", "oidc": True,
             "description": "workflows-runner audit pass (docs/alerts.md)"}


def add_parser(commands: Any) -> None:
    up = commands.add_parser("up", help="the whole stack for your workflows folder, kept across restarts")
    up.add_argument("--workflows", required=True, help="folder of WORKFLOW.yaml files")
    up.add_argument("--jobs", help="Cloud Scheduler jobs file (YAML or JSON); `{proxy}` in a uri is the proxy's URL")
    up.add_argument("--state", default=DEFAULT_STATE, help=f"state folder (default: {DEFAULT_STATE})")
    up.add_argument("--port", type=int, help="the API's port; the range function, proxy, scheduler, "
                                             "storage and audit function take the next five (default: chosen "
                                             "once, kept in the state folder)")


def stable_ports(state: Path, first: int | None) -> local_stack.Ports:
    """--port N gives N..N+5; otherwise the ports saved last time (a server added since gets a
    free one); otherwise free ones, saved."""
    saved = state / "ports.json"
    if first is not None:
        ports = local_stack.Ports(*(first + offset for offset in range(len(SERVERS))))
    elif saved.exists():
        known = {name: int(port) for name, port in json.loads(saved.read_text()).items() if name in SERVERS}
        ports = local_stack.Ports(**{name: known.get(name) or local_stack.free_port() for name in SERVERS})
    else:
        ports = local_stack.Ports(*(local_stack.free_port() for _ in SERVERS))
    saved.write_text(json.dumps(asdict(ports)) + "\n")
    return ports


def read_jobs(path: str | None) -> list[dict[str, Any]]:
    if path is None:
        return []
    data = yaml.safe_load(Path(path).read_text()) or []
    if isinstance(data, dict):
        data = data.get("jobs") or []
    if not isinstance(data, list) or not all(isinstance(job, dict) and isinstance(job.get("uri"), str)
                                             for job in data):
        raise ValueError("expected a list of jobs, each a map with a uri")
    return data


def endpoints(stack: local_stack.Stack, command: list[str] | None = None) -> dict[str, Any]:
    """STATE/endpoints.json, as docs/localcloud.md describes it. `pid` and `command` (how to
    start this stack again) let wfr tell a stopped stack from a running one."""
    urls = {"project": local_stack.PROJECT, "location": local_stack.LOCATION, "api": stack.api.url,
            "range": stack.range_url, "proxy": stack.proxy_url, "scheduler": stack.scheduler.url,
            "storage": stack.storage.url, "audit": stack.audit_url, "bucket": local_stack.RUNS_BUCKET,
            "backfillWorkflow": "backfill", "token": LOCAL_TOKEN}
    if command:   # localcloud runs from the checkout, so the command starts there
        urls.update(pid=os.getpid(), command=f"cd {shlex.quote(os.getcwd())} && {shlex.join(command)}")
    return urls


def up_command(workflows: Path, state: Path, jobs: str | None) -> list[str]:
    """This very `up`, with absolute paths: what to type to start the stack again."""
    command = [sys.executable, "-m", "localcloud", "up", "--workflows", str(workflows.resolve()),
               "--state", str(state.resolve())]
    return command + (["--jobs", str(Path(jobs).resolve())] if jobs else [])


def gcloud_script(urls: dict[str, Any], token_file: Path) -> str:
    """A named gcloud configuration for this stack; sourcing it selects that configuration for the
    shell only (CLOUDSDK_ACTIVE_CONFIG_NAME), so the user's own configurations stay as they were."""
    name = GCLOUD_CONFIGURATION
    settings = {
        "core/project": urls["project"],
        # Overrides are a base URL ending in "/"; gcloud appends v1/projects/....
        "api_endpoint_overrides/workflowexecutions": urls["api"] + "/",
        "api_endpoint_overrides/cloudscheduler": urls["scheduler"] + "/",
        # gcloud storage calls the JSON API under it (storage/v1/b/...), as Google's clients do.
        "api_endpoint_overrides/storage": urls["storage"] + "/",
        "auth/access_token_file": str(token_file),
        "core/disable_usage_reporting": "true",
        "component_manager/disable_update_check": "true",
    }
    lines = ["# Source me: . " + shlex.quote(str(token_file.parent / "gcloud.sh")),
             f"gcloud config configurations describe {name} >/dev/null 2>&1 ||",
             f"  gcloud config configurations create {name} --no-activate >/dev/null 2>&1",
             *(f"gcloud config set {key} {shlex.quote(value)} --configuration={name} >/dev/null 2>&1"
               for key, value in settings.items()),
             f"export CLOUDSDK_ACTIVE_CONFIG_NAME={name}",
             f"echo 'gcloud now uses the configuration {name} in this shell "
             "(unset CLOUDSDK_ACTIVE_CONFIG_NAME to go back).'"]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    workflows, state = Path(args.workflows), Path(args.state)
    if not workflows.is_dir():
        print(f"--workflows {args.workflows}: no such folder", file=sys.stderr)
        return 2
    try:
        jobs = read_jobs(args.jobs)
    except (OSError, ValueError, yaml.YAMLError) as error:
        print(f"--jobs {args.jobs}: {error}", file=sys.stderr)
        return 2
    state.mkdir(parents=True, exist_ok=True)
    state = state.resolve()
    ports = stable_ports(state, args.port)
    try:
        stack = local_stack.start(state, workflows, jobs=[*jobs, AUDIT_JOB], log_dir=state / "logs", ports=ports,
                                  api_log=file_log(state / "logs" / "api.log"),
                                  jobs_file=state / "scheduler-jobs.json", audit=True)
    except ValueError as error:       # a job the scheduler refuses
        print(f"--jobs {args.jobs}: {error}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError, TimeoutError) as error:   # typically a port in use
        print(f"cannot start on the ports in {state / 'ports.json'} ({asdict(ports)}): {error}\n"
              "Stop what uses them, pass --port N, or delete that file to choose new ones.", file=sys.stderr)
        return 1
    urls = endpoints(stack, up_command(workflows, state, args.jobs))
    token = state / "token"
    token.write_text(LOCAL_TOKEN + "\n")
    (state / "endpoints.json").write_text(json.dumps(urls, indent=2) + "\n")
    (state / "gcloud.sh").write_text(gcloud_script(urls, token))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):   # before the banner: a reader may stop us at once
        signal.signal(signum, lambda *_: stop.set())
    say_hello(urls, state, workflows, stack)
    stop.wait()
    # Gone with the stack, so wfr --local says "not running" rather than "connection refused".
    (state / "endpoints.json").unlink(missing_ok=True)
    stack.stop()
    print("localcloud stopped", flush=True)
    return 0


def file_log(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = threading.Lock()

    def write(entry: dict[str, Any]) -> None:
        with lock, path.open("a") as log:
            log.write(json.dumps(entry, default=str) + "\n")
    return write


def say_hello(urls: dict[str, Any], state: Path, workflows: Path, stack: local_stack.Stack) -> None:
    parent = f"projects/{urls['project']}/locations/{urls['location']}"
    jobs = sorted(stack.scheduler.scheduler.jobs)
    print(f"""localcloud is up ({parent}); state in {state}/
  Executions API   {urls['api']}   workflows from {workflows}/ and backfill
  range function   {urls['range']}
  proxy function   {urls['proxy']}   start a workflow: POST {urls['proxy']}/v1/{parent}/workflows/W/executions
  audit function   {urls['audit']}   every minute (job audit); POST runs a pass; alerts: wfr alerts --local
  Cloud Scheduler  {urls['scheduler']}   jobs: {', '.join(jobs) or 'none yet'}
Every URL is in {state / 'endpoints.json'}.

Use the real gcloud against it (a named configuration, for this shell only):
  . {shlex.quote(str(state / 'gcloud.sh'))}
  gcloud workflows run W --location={urls['location']} --data='{{}}'
  gcloud scheduler jobs create http nightly --location={urls['location']} --schedule='0 1 * * *' \\
    --uri='{urls['proxy']}/v1/{parent}/workflows/W/executions' --message-body='{{}}' \\
    --oidc-service-account-email=scheduler@{urls['project']}.iam.gserviceaccount.com
Ctrl-C stops; `up` again resumes with the same ports, history and jobs.""", flush=True)
