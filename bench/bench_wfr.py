"""`wfr` on the local stack: status over a minutely week, dry runs over 100,000 times, and a real
backfill chained across links.

  - status: a week of minutely runs (10,080 times) started by a backfill (`wait: false`), then
    `wfr status` over the week twice: cold (the ledger still says ACTIVE for every run, as the
    proxy recorded it, so wfr lists the executions and writes the terminal states back) and warm
    (every record terminal: listings only). Targets (issue 13): cold <= 3 s, warm <= 1 s.
    Measured in-process (status.read, with wfr's own per-service call counts) and as an operator
    runs it (`wfr status --format json` in a subprocess, interpreter start included).
  - dry run over 100,000 minutely times: `wfr backfill --dry-run` (the ledger listing, applying
    reprocess) and backfill.yaml's own `dryRun` (a range call and a proxy dry run, one ledger
    listing, per page of 1,000 times); both must say how many would start, and agree.
  - chain: 5,000 real starts by one backfill on a stack whose step limit is lowered
    (LOCALCLOUD_STEP_LIMIT, STEP_BUDGET), so it runs as at least three linked executions; then
    `wfr backfill show` counts the chain as one backfill.

The stack runs in a child process (`bench_wfr.py serve STATE`), as `python -m localcloud up` does,
so the client's time is not shared with the servers' threads.

    .venv/bin/python bench/bench_wfr.py [--skip-chain]
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WEEK = 7 * 24 * 60
DRY_TIMES = 100_000
CHAIN_TIMES, CHAIN_STEP_LIMIT, CHAIN_STEP_BUDGET = 5000, 12_000, 9000
START = datetime(2024, 1, 1, tzinfo=timezone.utc)
WFR = Path(sys.executable).parent / "wfr"


def serve(state: str, step_budget: str | None) -> None:
    """The child: the local stack with endpoints.json in STATE, until SIGTERM."""
    from localcloud import stack as local_stack
    from localcloud.up import endpoints
    stack = local_stack.start(state, jobs=[], api_log=lambda entry: None, scheduler_log=lambda entry: None,
                              backfill_env={"STEP_BUDGET": step_budget} if step_budget else None)
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
    (Path(state) / "endpoints.tmp").write_text(json.dumps(endpoints(stack)))
    (Path(state) / "endpoints.tmp").rename(Path(state) / "endpoints.json")
    try:
        while not stopped:
            time.sleep(0.2)
    finally:
        stack.stop()


class Stack:
    def __init__(self, state: Path, step_limit: int | None = None, step_budget: int | None = None):
        self.state = state
        env = {**os.environ, **({"LOCALCLOUD_STEP_LIMIT": str(step_limit)} if step_limit else {})}
        self.process = subprocess.Popen([sys.executable, __file__, "serve", str(state)]
                                        + ([str(step_budget)] if step_budget else []), env=env,
                                        stdout=subprocess.DEVNULL)
        while not (state / "endpoints.json").exists():
            if self.process.poll() is not None:
                raise SystemExit("the stack did not start")
            time.sleep(0.1)

    def cloud(self):
        from workflows_runner import target
        from workflows_runner.cloud import Cloud
        return Cloud(target.local(self.state))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def window(minutes: int) -> dict:
    return {"start": START.isoformat(), "stop": (START + timedelta(minutes=minutes)).isoformat(),
            "step": "* * * * *", "timezone": "UTC"}


def backfill(cloud, minutes: int, **options) -> tuple[float, object]:
    """Start a backfill of `example` and wait for its chain to end: (seconds, Backfill)."""
    from workflows_runner import backfills
    argument = {"workflow": cloud.target.workflow_name("example"), **window(minutes),
                "params": {"case": "bench"}, **options}
    began = time.perf_counter()
    backfill_id = backfills.start(cloud, argument).rsplit("/", 1)[-1]
    while True:
        shown = backfills.show(cloud, backfill_id)
        if not shown.active:
            return time.perf_counter() - began, shown
        time.sleep(1)


def settle(cloud) -> None:
    workflow = cloud.target.workflow_name("example")
    while next(iter(cloud.executions(workflow, 'state="ACTIVE"')), None) is not None:
        time.sleep(0.5)


def status(cloud, minutes: int):
    from workflows_runner import status as status_
    w = window(minutes)
    began = time.perf_counter()
    result = status_.read(cloud, cloud.target.workflow_name("example"),
                          status_.Window(w["start"], w["stop"], w["step"], w["timezone"]), {"case": "bench"})
    return time.perf_counter() - began, result, dict(cloud.http.calls)


def wfr_seconds(state: Path, *args: str) -> float:
    began = time.perf_counter()
    done = subprocess.run([str(WFR), *args, "--local-state", str(state)], capture_output=True, text=True)
    if done.returncode not in (0, 3, 4, 5):
        raise SystemExit(f"wfr {' '.join(args)}: {done.stderr}")
    return time.perf_counter() - began


def row(label: str, seconds: float, calls: dict, note: str = "") -> None:
    counts = "  ".join(f"{k} {calls.get(k, 0):>5}" for k in ("range", "storage", "executions"))
    print(f"{label:<44} {seconds:7.2f} s   {counts}   {note}", flush=True)


def main(skip_chain: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        stack = Stack(Path(folder))
        try:
            cloud = stack.cloud()
            seconds, shown = backfill(cloud, WEEK, concurrency=20, wait=False, pageSize=1000)
            print(f"populate: a backfill started {shown.progress.started} runs of a minutely week in "
                  f"{seconds:.1f} s ({shown.progress.started / seconds:.0f}/s), {len(shown.links)} link(s)")
            settle(cloud)
            print(f"{'':<44} {'time':>9}   calls per service (wfr's own count)")
            seconds, result, calls = status(stack.cloud(), WEEK)
            row(f"status #1 (cold), {len(result.times):,} times", seconds, calls,
                f"{result.totals}  target <= 3 s")
            rounds = 1
            while calls.get("executions"):       # until nothing is left to learn and write back
                seconds, result, calls = status(stack.cloud(), WEEK)
                rounds += 1
                if calls.get("executions"):
                    row(f"status #{rounds}, still writing back", seconds, calls)
            row(f"status warm, {len(result.times):,} times", seconds, calls,
                f"{result.totals['succeeded']:,} succeeded  target <= 1 s")
            w = window(WEEK)
            cli = wfr_seconds(stack.state, "status", "example", "--start", w["start"], "--stop", w["stop"],
                              "--step", w["step"], "--params", '{"case": "bench"}', "--format", "json")
            row("wfr status --format json (subprocess), warm", cli, {}, "interpreter start included")
            seconds, result, calls = status(stack.cloud(), DRY_TIMES)
            would = len(result.only(("missing",)))
            row(f"wfr backfill --dry-run, {DRY_TIMES:,} times", seconds, calls, f"would start {would:,}")
            dry_cloud = stack.cloud()
            seconds, shown = backfill(dry_cloud, DRY_TIMES, dryRun=True)
            dry = shown.result
            row(f"backfill.yaml dryRun, {DRY_TIMES:,} times", seconds, dict(dry_cloud.http.calls),
                f"planned {dry['planned']:,}, would start {dry['wouldStart']:,}"
                f"{'' if dry['wouldStart'] == would else ' DISAGREES WITH WFR'} (wfr's calls: polling it)")
        finally:
            stack.stop()
    if skip_chain:
        return
    with tempfile.TemporaryDirectory() as folder:
        stack = Stack(Path(folder), CHAIN_STEP_LIMIT, CHAIN_STEP_BUDGET)
        try:
            seconds, shown = backfill(stack.cloud(), CHAIN_TIMES, concurrency=20, wait=False, pageSize=500)
            p = shown.progress
            print(f"chain: {CHAIN_TIMES:,} times in {seconds:.1f} s ({p.started / seconds:.0f} starts/s) across "
                  f"{len(shown.links)} links (step limit {CHAIN_STEP_LIMIT:,}, budget {CHAIN_STEP_BUDGET:,}); "
                  f"wfr backfill show: state {shown.state}, planned {p.planned}, started {p.started}, "
                  f"skipped {p.skipped}, failed {p.failed}")
        finally:
            stack.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        main("--skip-chain" in sys.argv)
