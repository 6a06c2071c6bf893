"""python -m localcloud demo: the whole stack on loopback, and what workflows-runner adds.

    demo [--state DIR] [--workflows DIR] [--no-serve]

Starts the Executions API (backfill and example deployed), the range and proxy functions and a
Cloud Scheduler job on `example` through the proxy, then tells the story step by step: a
scheduled run, a repeated delivery, a re-run of a failed time, a backfill dry run and a backfill.
Each step checks its outcome; a wrong one stops the story and the exit status is 1. Then it keeps
serving and prints calls to try, until Ctrl-C (or SIGTERM), unless --no-serve.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from . import stack as local_stack, up as local_up
from .context import LOCAL_TOKEN

ZONE = "Europe/Stockholm"
JOB = "example-every-minute"
BODY = {"table": "sales"}
FAILED_TIME = datetime(2024, 2, 29, 1, tzinfo=ZoneInfo(ZONE))     # step 3's run, told to fail
OUTAGE_SECONDS = 4                                                  # how long step 3's source is down
WINDOW = {"start": "2024-03-01T00:00:00", "stop": "2024-03-06T00:00:00", "step": "0 1 * * *",
          "timezone": ZONE}
# What the window means, worked out here without the range function: every day at 01:00.
WINDOW_TIMES = [datetime(2024, 3, day, 1, tzinfo=ZoneInfo(ZONE)).isoformat() for day in range(1, 6)]
PARENT = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}"
PAGE_SIZE = 2                  # small pages, so the backfill logs progress more than once
WAIT_SECONDS = 60


class StepFailed(Exception):
    """An outcome the story did not expect: the demo says what and exits 1."""


def check(ok: bool, message: str) -> None:
    if not ok:
        raise StepFailed(message)


def say(text: str = "") -> None:
    print(text, flush=True)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def short(name: str) -> str:
    """projects/p/locations/l/workflows/example/executions/ID -> example/ID"""
    parts = name.split("/")
    return f"{parts[5]}/{parts[7]}" if len(parts) == 8 else name


def scheduled(execution: dict[str, Any]) -> datetime | None:
    """The instant an execution was told it runs for: its argument's scheduleTime, as the workflow saw it."""
    when = json.loads(execution.get("argument") or "{}").get("scheduleTime")
    return datetime.fromisoformat(when) if isinstance(when, str) else None


def summary_line(summary: dict[str, Any]) -> str:
    names = [short(name) for name in summary.get("executions", [])]
    return (", ".join(f"{key} {summary.get(key)}" for key in ("planned", "started", "skipped", "failed"))
            + f", firstFailures {compact(summary.get('firstFailures'))}, executions [{', '.join(names)}]")


class JsonLines:
    """A log sink for the in-process API and scheduler: one JSON line per entry, in a file."""

    def __init__(self, path: Path, also: Callable[[dict[str, Any]], None] | None = None):
        self.file = open(path, "a", encoding="utf-8")
        self.lock = threading.Lock()
        self.also = also

    def __call__(self, entry: dict[str, Any]) -> None:
        with self.lock:
            if not self.file.closed:
                self.file.write(json.dumps(entry, default=str) + "\n")
                self.file.flush()
        if self.also:
            self.also(entry)

    def close(self) -> None:
        with self.lock:
            self.file.close()


def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {LOCAL_TOKEN}", "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=WAIT_SECONDS) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            return error.code, json.loads(text)
        except ValueError:
            return error.code, text.decode(errors="replace")
    except OSError as error:        # refused, reset, timed out: a piece of the stack is down
        raise StepFailed(f"{method} {url}: {getattr(error, 'reason', error)}") from None


class Story:
    def __init__(self, stack: local_stack.Stack):
        self.stack = stack
        self.workflows = f"{stack.api.url}/v1/{PARENT}/workflows"

    # --- the Executions API, over HTTP as any client sees it ------------------------------------
    def list(self, workflow: str, filter_: str | None = None) -> list[dict[str, Any]]:
        query = urlencode({**({"filter": filter_} if filter_ else {}), "view": "FULL", "pageSize": 100,
                           "orderBy": "createTime"})
        status, page = http("GET", f"{self.workflows}/{workflow}/executions?{query}")
        check(status == 200, f"listing {workflow} executions answered {status}: {page}")
        return page.get("executions", [])

    def get(self, name: str) -> dict[str, Any]:
        status, execution = http("GET", f"{self.stack.api.url}/v1/{name}")
        check(status == 200, f"GET {name} answered {status}: {execution}")
        return execution

    def ended(self, name: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            execution = self.get(name)
            if execution["state"] not in ("ACTIVE", "QUEUED"):
                return execution
            check(time.monotonic() < deadline, f"{short(name)} still {execution['state']} after {WAIT_SECONDS}s")
            time.sleep(0.05)

    def run_through_proxy(self, body: dict[str, Any], schedule_header: str | None = None,
                          reprocess: str | None = None) -> dict[str, Any]:
        """POST to the proxy as Cloud Scheduler does (with the header) or as a person re-running."""
        query = {"timezone": ZONE, **({"reprocess": reprocess} if reprocess else {})}
        headers = {}
        if schedule_header:
            headers = {"X-CloudScheduler": "true", "X-CloudScheduler-JobName": JOB,
                       "X-CloudScheduler-ScheduleTime": schedule_header, "User-Agent": "Google-Cloud-Scheduler"}
        status, answer = http("POST", f"{self.stack.proxy_path('example')}?{urlencode(query)}", body, headers)
        check(status == 200, f"the proxy answered {status}: {answer}")
        return answer

    def runs_at(self, *times: str) -> list[dict[str, Any]]:
        """example's executions for these scheduled instants, oldest first. Found by the argument
        each received, so the demo keeps no copy of the proxy's label encoding."""
        wanted = {datetime.fromisoformat(when) for when in times}
        return [run for run in self.list("example") if scheduled(run) in wanted]

    def show(self, execution: dict[str, Any], indent: str = "     ") -> None:
        say(f"{indent}{short(execution['name'])}  {execution['state']}")
        say(f"{indent}  argument {execution.get('argument', '')}")
        labels = execution.get("labels", {})
        say(f"{indent}  labels   " + " ".join(f"{k}={labels[k]}" for k in
                                           ("schedule_time", "trigger", "scheduler_job") if k in labels))
        if "result" in execution:
            say(f"{indent}  result   {execution['result']}")
        if "error" in execution:
            say(f"{indent}  error    {execution['error'].get('payload', '')}")

    # --- 1. a scheduled run ---------------------------------------------------------------------
    def scheduled_run(self) -> dict[str, Any]:
        say("1. A scheduled run receives its scheduleTime")
        say(f"   Cloud Scheduler job {JOB}: every minute in {ZONE}, POST {compact(BODY)} to the proxy")
        say("   Run it now, as `gcloud scheduler jobs run` does (a forced run carries the next scheduled time):")
        # Away from a minute boundary, so the job's own tick cannot fire while this step runs.
        while datetime.now().second >= 57:
            time.sleep(0.2)
        scheduler = self.stack.scheduler.scheduler
        before = len(scheduler.attempts)
        url = f"{self.stack.scheduler.url}/v1/{PARENT}/jobs/{JOB}:run"
        say(f"   $ curl -X POST {url} -H 'Authorization: Bearer {LOCAL_TOKEN}'")
        status, answer = http("POST", url, {})
        check(status == 200, f"run now answered {status}: {answer}")
        deadline = time.monotonic() + WAIT_SECONDS
        while len(scheduler.attempts) == before:
            check(time.monotonic() < deadline, "the scheduler delivered nothing")
            time.sleep(0.05)
        attempt = scheduler.attempts[before]
        check(attempt["status"] == 200, f"the proxy answered the scheduler {attempt['status']}")
        header = attempt["scheduleTime"]
        say(f"   The scheduler sent X-CloudScheduler-ScheduleTime: {header}; the proxy started:")
        moment = datetime.fromisoformat(header)
        found = self.runs_at(header)
        check(len(found) == 1, f"expected one execution for {header}, found {len(found)}")
        execution = self.ended(found[0]["name"])
        self.show(execution)
        expected = moment.astimezone(ZoneInfo(ZONE)).isoformat()
        check(execution["state"] == "SUCCEEDED", f"{short(execution['name'])} ended {execution['state']}")
        check(json.loads(execution["result"]) == {"scheduleTime": expected},
              f"example returned {execution['result']}, expected scheduleTime {expected}")
        say(f"   ok: the workflow received and returned scheduleTime {expected}")
        return execution

    # --- 2. the same delivery again -------------------------------------------------------------
    def repeated_delivery(self, first: dict[str, Any]) -> None:
        label = first["labels"]["schedule_time"]
        sent = scheduled(first).isoformat()
        say("2. The same delivery repeated (Scheduler delivers at least once) does not run twice")
        say(f"   POST the proxy again with X-CloudScheduler-ScheduleTime: {sent} and the same body:")
        answer = self.run_through_proxy(BODY, sent)
        say(f"     started: {json.dumps(answer.get('started'))}, execution {short(answer.get('name', '?'))}")
        check(answer.get("started") is False, f"the repeated delivery started a run: {short(answer['name'])}")
        check(answer["name"] == first["name"], "the repeated delivery answered another execution")
        found = self.list("example", f'labels.schedule_time="{label}"')
        check(len(found) == 1, f"expected one execution for {sent}, found {len(found)}")
        say("   Re-running it with reprocess=failed starts nothing either, as it succeeded:")
        answer = self.run_through_proxy({**BODY, "scheduleTime": sent}, reprocess="failed")
        say(f"     started: {json.dumps(answer.get('started'))}, execution {short(answer.get('name', '?'))}")
        check(answer.get("started") is False and answer["name"] == first["name"],
              "reprocess=failed re-ran a succeeded time")
        say(f"   ok: one execution for {sent}; when the minute comes the scheduler's own delivery is"
            " answered the same way")

    # --- 3. a failed time, re-run ---------------------------------------------------------------
    def rerun_failed(self) -> None:
        when = FAILED_TIME.isoformat()
        # The source is "down" for a few seconds: the run fails, and a re-run of the very same
        # argument after that succeeds. The margin leaves room for a slow machine.
        back = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=OUTAGE_SECONDS)
        body = {**BODY, "failFor": [when], "failUntil": back.isoformat()}
        say("3. An explicit re-run of a failed time")
        say(f"   Scheduler delivers {when} with {compact(body)}")
        say("   (example fails for the times in failFor while the clock is before failUntil, as if its source were down):")
        first = self.run_through_proxy(body, FAILED_TIME.astimezone(timezone.utc).isoformat())
        check(first.get("started") is True, "the first delivery started nothing")
        first = self.ended(first["name"])
        self.show(first)
        check(first["state"] == "FAILED", f"{short(first['name'])} ended {first['state']}, expected FAILED")
        wait = (back - datetime.now(timezone.utc)).total_seconds() + 0.2
        say(f"   The source is back at {back.isoformat()}; waiting {max(wait, 0):.1f} s.")
        time.sleep(max(wait, 0))
        say(f"   Re-run it: POST the proxy with \"scheduleTime\": \"{when}\" in the same body and reprocess=failed:")
        again = self.run_through_proxy({**body, "scheduleTime": when}, reprocess="failed")
        say(f"     started: {json.dumps(again.get('started'))}, execution {short(again.get('name', '?'))}")
        check(again.get("started") is True, "reprocess=failed did not re-run the failed time")
        check(again["name"] != first["name"], "the re-run answered the failed execution")
        again = self.ended(again["name"])
        check(again["state"] == "SUCCEEDED", f"the re-run ended {again['state']}, expected SUCCEEDED")
        runs = self.runs_at(when)
        say(f"   Executions for {when} now, oldest first:")
        for run in runs:
            say(f"     {short(run['name'])}  {run['state']}  trigger={run['labels']['trigger']}")
        check([run["name"] for run in runs] == [first["name"], again["name"]],
              f"expected the failed execution and its re-run, found {[short(r['name']) for r in runs]}")
        say("   ok: the re-run is a new execution of the same run (same run_digest label), and it succeeded;"
            " reprocess=failed now starts nothing more")
        answer = self.run_through_proxy({**body, "scheduleTime": when}, reprocess="failed")
        check(answer.get("started") is False and answer.get("name") == again["name"],
              "reprocess=failed re-ran a time whose newest run succeeded")

    # --- 4 and 5. backfills ---------------------------------------------------------------------
    def start_backfill(self, **options: Any) -> dict[str, Any]:
        argument = {"workflow": "example", **WINDOW, "params": BODY, "pageSize": PAGE_SIZE, **options}
        say(f"   $ curl -X POST {self.workflows}/backfill/executions -H 'Authorization: Bearer x' \\")
        say(f"       -d '{compact({'argument': compact(argument)})}'")
        status, execution = http("POST", f"{self.workflows}/backfill/executions", {"argument": compact(argument)})
        check(status == 200, f"creating a backfill execution answered {status}: {execution}")
        return execution

    def dry_run(self) -> None:
        say(f"4. A dry run of a backfill: every day at 01:00 {ZONE} from {WINDOW['start']} to {WINDOW['stop']},"
            f" {PAGE_SIZE} times per page")
        execution = self.ended(self.start_backfill(dryRun=True)["name"])
        check(execution["state"] == "SUCCEEDED", f"the dry run ended {execution['state']}: {execution.get('error')}")
        result = json.loads(execution["result"])
        say(f"     planned {result.get('planned')}, first {result.get('first')}, last {result.get('last')}")
        say(f"     would start {result.get('wouldStart')}, the first at {result.get('firstToStart')}")
        say(f"     first page {compact(result.get('firstPage'))}")
        check(result.get("planned") == len(WINDOW_TIMES), f"the dry run plans {result.get('planned')} runs")
        check((result.get("wouldStart"), result.get("firstToStart")) == (len(WINDOW_TIMES), WINDOW_TIMES[0]),
              f"the dry run would start {result.get('wouldStart')} runs of a window that never ran")
        check((result.get("first"), result.get("last")) == (WINDOW_TIMES[0], WINDOW_TIMES[-1]),
              "the dry run's first or last time is not the window's")
        check(result.get("firstPage") == WINDOW_TIMES[:PAGE_SIZE], "the dry run's first page is not the window's")
        check(not self.runs_at(*WINDOW_TIMES), "the dry run started runs")
        say("   ok: nothing started")

    def backfill(self) -> None:
        say(f"5. A backfill of the same {len(WINDOW_TIMES)} days, 2 at a time, each waiting for its run")
        backfill = self.start_backfill(concurrency=2, wait=True)
        execution = self.follow(backfill)
        check(execution["state"] == "SUCCEEDED", f"the backfill ended {execution['state']}: {execution.get('error')}")
        summary = json.loads(execution["result"])
        say(f"   summary: {summary_line(summary)}")
        check((summary.get("planned"), summary.get("started"), summary.get("skipped"), summary.get("failed"))
              == (len(WINDOW_TIMES), len(WINDOW_TIMES), 0, 0), "the backfill summary is not 5 started")
        for when in WINDOW_TIMES:
            runs = self.runs_at(when)
            check(len(runs) == 1, f"expected one run for {when}, found {len(runs)}")
            check(runs[0]["state"] == "SUCCEEDED" and json.loads(runs[0]["result"]) == {"scheduleTime": when},
                  f"the run for {when} ended {runs[0]['state']} with {runs[0].get('result')}")
        say("   ok: one run per day, each received its own scheduleTime")
        say("   The same backfill again (reprocess: none) skips the days that ran:")
        again = self.ended(self.start_backfill(concurrency=2)["name"])
        check(again["state"] == "SUCCEEDED", f"the second backfill ended {again['state']}: {again.get('error')}")
        summary = json.loads(again["result"])
        say(f"   summary: {summary_line(summary)}")
        check((summary.get("started"), summary.get("skipped")) == (0, len(WINDOW_TIMES)),
              "the second backfill did not skip every day")
        say("   ok: nothing ran twice")

    def follow(self, backfill: dict[str, Any]) -> dict[str, Any]:
        """Poll until the backfill ends, printing its progress log lines and each run as it ends."""
        backfill_id = backfill["name"].rsplit("/", 1)[1]
        printed_logs, printed_runs = 0, set()
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            execution = self.get(backfill["name"])
            logs = [entry["message"] for entry in list(self.stack.api.logs)
                    if entry["logging.googleapis.com/labels"]["workflows.googleapis.com/execution_id"] == backfill_id]
            for message in logs[printed_logs:]:
                text = message.get("message") if isinstance(message, dict) else message
                say(f"     log: {text if isinstance(text, str) else compact(message)}")
            printed_logs = len(logs)
            for run in self.list("example", f'labels.backfill="{backfill_id}"'):
                if run["name"] not in printed_runs and run["state"] not in ("ACTIVE", "QUEUED"):
                    printed_runs.add(run["name"])
                    scheduled = json.loads(run["argument"]).get("scheduleTime")
                    say(f"     run {scheduled}  {run['state']}  {short(run['name'])}")
            if execution["state"] not in ("ACTIVE", "QUEUED"):
                return execution
            check(time.monotonic() < deadline, f"the backfill still runs after {WAIT_SECONDS}s")
            time.sleep(0.2)


def reset(state: Path) -> None:
    """Forget the demo's own history, run ledger (the runs bucket) and logs, so the story starts
    the same each time."""
    for path in [*state.glob("executions.sqlite3*"), *state.glob("storage.sqlite3*"),
                 *(state / "logs").glob("*.log"), state / "endpoints.json"]:
        path.unlink(missing_ok=True)


def try_it(stack: local_stack.Stack, state: Path) -> None:
    python = os.path.relpath(sys.executable)
    if python.startswith(".."):     # outside the working folder: the full path reads better
        python = sys.executable
    when = "2024-03-10T00:00:00Z"
    range_body = compact({**WINDOW, "countOnly": True})
    backfill = compact({"argument": compact({"workflow": "example", **WINDOW, "stop": "2024-03-11T00:00:00",
                                             "params": BODY, "concurrency": 3})})
    say("Try it (the stack keeps running; the scheduler job fires every minute; Ctrl-C stops everything):")
    say(f"  curl -s -X POST '{stack.proxy_path('example')}?timezone={ZONE}' \\")
    say(f"    -H 'X-CloudScheduler-ScheduleTime: {when}' -d '{compact(BODY)}'")
    say(f"  curl -s -X POST {stack.range_url} -d '{range_body}'")
    say(f"  curl -s -X POST {stack.scheduler.url}/v1/{PARENT}/jobs/{JOB}:run -H 'Authorization: Bearer x'")
    say(f"  curl -s -X POST {stack.api.url}/v1/{PARENT}/workflows/backfill/executions \\")
    say(f"    -H 'Authorization: Bearer x' -d '{backfill}'")
    say(f"  {python} -m localcloud executions list --api {stack.api.url} --workflow example")
    say(f"  {python} -m localcloud executions list --state {state} --filter 'state=\"FAILED\"'")
    say(f"  tail -f {state}/logs/proxy.log")
    wfr = os.path.join(os.path.dirname(python), "wfr") if os.path.dirname(python) else "wfr"
    target = ["--local-state", str(state)]
    say("The operator's view of this very stack (in another terminal, while this one serves):")
    say("  " + shlex.join([wfr, "status", "example", "--start", WINDOW["start"], "--stop", WINDOW["stop"],
                           "--step", WINDOW["step"], "--timezone", ZONE, "--params", compact(BODY), *target]))
    say("  " + shlex.join([wfr, "backfill", "list", *target]))
    say("  " + shlex.join([wfr, "ui", *target]))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m localcloud demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", type=Path, default=Path(".localcloud/demo"),
                        help="the demo's state folder, emptied at start (default: .localcloud/demo)")
    parser.add_argument("--workflows", type=Path, default=local_stack.ROOT / "workflows",
                        help="the workflows folder to deploy (default: the repository's workflows/)")
    parser.add_argument("--no-serve", action="store_true", help="exit after the story (status 0 or 1)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    # Ctrl-C and SIGTERM stop everything, even when started with SIGINT ignored (`cmd &` in a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    state: Path = args.state
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    reset(state)
    serving = threading.Event()

    def scheduler_line(entry: dict[str, Any]) -> None:
        if serving.is_set() and "attempt" in entry:
            say(f"  {JOB} delivered {entry.get('scheduleTime')} to the proxy: {entry['status'] or 'no answer'}")

    api_log, scheduler_log = JsonLines(logs / "api.log"), JsonLines(logs / "scheduler.log", scheduler_line)
    job = {"name": JOB, "schedule": "* * * * *", "timeZone": ZONE, "uri": "{proxy}/v1/" + PARENT +
           f"/workflows/example/executions?timezone={ZONE}", "body": compact(BODY),
           "headers": {"Content-Type": "application/json"}, "oidc": True}
    say("workflows-runner, locally: Cloud Workflows, its Executions API and Cloud Scheduler stand-ins on loopback")
    status = 1
    stack = None
    try:
        try:
            stack = local_stack.start(state, args.workflows, jobs=[job], log_dir=logs, api_log=api_log,
                                      scheduler_log=scheduler_log)
        except (OSError, RuntimeError) as error:     # e.g. a function that does not start: see its log
            say(f"Could not start the stack: {error} (logs in {logs}/)")
            return 1
        names = sorted(path.stem for path in args.workflows.glob("*.yaml"))
        say(f"  Executions API   {stack.api.url}  ({', '.join(names)} deployed; log {logs}/api.log)")
        say(f"  range function   {stack.range_url}  (log {logs}/range.log)")
        say(f"  proxy function   {stack.proxy_url}  (log {logs}/proxy.log)")
        say(f"  Cloud Scheduler  {stack.scheduler.url}  (job {JOB}; log {logs}/scheduler.log)")
        say(f"  state            {state}/ (emptied at each start)")
        # As `up` writes it, so `wfr --local-state STATE` reaches this stack while it serves.
        (state / "endpoints.json").write_text(json.dumps(local_up.endpoints(
            stack, [sys.executable, "-m", "localcloud", "demo", "--state", str(state.resolve())]), indent=2) + "\n")
        say()
        story = Story(stack)
        try:
            first = story.scheduled_run()
            say()
            story.repeated_delivery(first)
            say()
            story.rerun_failed()
            say()
            story.dry_run()
            say()
            story.backfill()
            say()
            status = 0
            say("All steps passed.")
        except StepFailed as error:
            say(f"   FAILED: {error}")
        if not args.no_serve:
            say()
            try_it(stack, state)
            serving.set()
            threading.Event().wait()
    except KeyboardInterrupt:
        if not serving.is_set():
            status = 130
    finally:
        # A second Ctrl-C must not interrupt the shutdown and leave function processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        (state / "endpoints.json").unlink(missing_ok=True)
        if stack is not None:
            say("\nStopping the API, the scheduler and both functions...")
            stack.stop()
            say("Stopped.")
        api_log.close()
        scheduler_log.close()
    return status
