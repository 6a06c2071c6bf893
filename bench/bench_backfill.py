"""Runs started per second by a local backfill at concurrency 1, 10 and 20.

Two workloads, each on a fresh local stack per concurrency (empty history, so every backfill
pays the same lookups) and the same window at every concurrency:
  - start only: TIMES minutely times in pages of PAGE_SIZE, `wait: false`: what starting costs;
  - wait: WAIT_TIMES times, `wait: true`, each run sleeping RUN_SECONDS: runs that take time,
    where concurrency is what bounds the rate (and the backfill polls each run it waits for).
The clock runs from the create of the backfill execution to its end, as `gcloud workflows run`
sees it. Contention: the same start-only window at concurrency 10 by two identical backfills
started at once, so every time is claimed twice in the run ledger and started once. Target (issue 9):
at least 100 runs started per second by one backfill at concurrency 10, the ledger included; the
contended figure is printed beside it. It counts each time once although the proxy answers it twice
(one start, one "existing"), so on the same machine it is bounded by about half the first. Without
`wait` the backfill takes at most 20 starts at once (one parallel step's branches), its limit.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from localcloud import stack as local_stack  # noqa: E402

TIMES, PAGE_SIZE, CONCURRENCIES = 1000, 100, (1, 10, 20)
WAIT_TIMES, RUN_SECONDS = 40, 0.2
AUTH = {"Authorization": "Bearer bench"}


def backfills_seconds(concurrency: int, times: int, copies: int = 1, **options) -> tuple[float, list[dict]]:
    """`copies` identical backfills started together; seconds until the last ends, and results."""
    with tempfile.TemporaryDirectory() as state:
        stack = local_stack.start(state, api_log=lambda entry: None)
        try:
            start = datetime(2024, 1, 1, tzinfo=timezone.utc)
            argument = {"workflow": "example", "start": start.isoformat(),
                        "stop": (start + timedelta(minutes=times)).isoformat(), "step": "* * * * *",
                        "concurrency": concurrency, "pageSize": PAGE_SIZE, **options}
            parent = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows/backfill"
            began = time.perf_counter()
            names = [requests.post(f"{stack.api.url}/v1/{parent}/executions", headers=AUTH, timeout=30,
                                   json={"argument": json.dumps(argument)}).json()["name"] for _ in range(copies)]
            for name in names:
                stack.api.executions.wait(name)
            seconds = time.perf_counter() - began
            executions = [requests.get(f"{stack.api.url}/v1/{name}", headers=AUTH, timeout=30).json()
                          for name in names]
        finally:
            stack.stop()
    for execution in executions:
        if execution["state"] != "SUCCEEDED":
            raise SystemExit(f"backfill at concurrency {concurrency} ended {execution['state']}: {execution.get('error')}")
    return seconds, [json.loads(execution["result"]) for execution in executions]


def backfill_seconds(concurrency: int, times: int, **options) -> tuple[float, dict]:
    seconds, (result,) = backfills_seconds(concurrency, times, **options)
    return seconds, result


def contended_rate() -> float:
    """Runs started per second by two identical backfills at once, at concurrency 10."""
    seconds, results = backfills_seconds(10, TIMES, copies=2)
    if sum(r["started"] for r in results) != TIMES or any(r["failed"] for r in results):
        raise SystemExit(f"two identical backfills: {results}")
    return TIMES / seconds


def rates(times: int, **options) -> list[float]:
    rates = []
    for concurrency in CONCURRENCIES:
        seconds, result = backfill_seconds(concurrency, times, **options)
        if result["started"] != times or result["failed"]:
            raise SystemExit(f"concurrency {concurrency}: {result}")
        rates.append(times / seconds)
    return rates


def main() -> None:
    start_only = rates(TIMES, wait=False)
    waiting = rates(WAIT_TIMES, wait=True, params={"sleepSeconds": RUN_SECONDS})
    print("backfill runs started per second (fresh local stack each; ratio vs concurrency 1)")
    print(f"  start only: {TIMES} times, pages of {PAGE_SIZE}; wait: {WAIT_TIMES} times, "
          f"wait: true, runs of {RUN_SECONDS} s")
    print(f"{'concurrency':>11} | {'start only':>10} {'ratio':>6} | {'wait':>6} {'ratio':>6}")
    for concurrency, fast, slow in zip(CONCURRENCIES, start_only, waiting):
        print(f"{concurrency:>11} | {fast:>10.1f} {fast / start_only[0]:>5.1f}x | "
              f"{slow:>6.1f} {slow / waiting[0]:>5.1f}x")
    alone = start_only[CONCURRENCIES.index(10)]
    contended = contended_rate()
    print(f"run ledger contention at concurrency 10, start only ({TIMES} times; runs started per second):")
    print(f"  one backfill {alone:.1f}   two identical at once {contended:.1f} ({2 * contended:.1f} proxy answers/s)   "
          f"ratio {contended / alone:.2f}x")
    print(f"  target: one backfill at concurrency 10 >= 100/s -> {'met' if alone >= 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
