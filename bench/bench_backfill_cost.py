"""Steps a backfill spends per backfilled time, counted by localcloud as Workflows counts them.

Workflows bills every step executed, connector polling attempts included
(https://cloud.google.com/workflows/pricing), and stops an execution at 100,000 steps; so the steps
per time are both the backfill's cost and how far one execution goes. Four cases at concurrency 20:
runs that last 1 s and 60 s, with and without `wait`. Each case runs on a fresh local stack and
counts the steps of every execution of the backfill's chain (the API logs each execution's steps
when it ends). With `--compare REV`, the same cases also run the backfill.yaml of that git
revision (e.g. `main` before issue 24), for the ratio.

Target (issue 24): at most 8 steps per time with wait for 60 s runs, and without wait not more
than before. The 60 s cases take a few minutes each: this is a bench, not a test.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from localcloud import stack as local_stack  # noqa: E402

CONCURRENCY = 20
CASES = ((1, True, 100), (1, False, 100), (60, True, 60), (60, False, 60))   # (run seconds, wait, times)
AUTH = {"Authorization": "Bearer bench"}
PARENT = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows"


def steps_per_time(run_seconds: float, wait: bool, times: int, backfill_file: Path | None) -> tuple[float, int, float]:
    """(steps per time, links, wall seconds) of one backfill of `times` runs of `run_seconds`."""
    steps: dict[str, int] = {}
    lock = threading.Lock()

    def collect(entry: dict) -> None:
        if "steps" in entry:
            with lock:
                steps[entry["execution"]] = entry["steps"]

    with tempfile.TemporaryDirectory() as state:
        stack = local_stack.start(state, api_log=collect)
        if backfill_file is not None:
            stack.api.executions.files["backfill"] = backfill_file
        try:
            start = datetime(2024, 1, 1, tzinfo=timezone.utc)
            argument = {"workflow": "example", "start": start.isoformat(),
                        "stop": (start + timedelta(minutes=times)).isoformat(), "step": "* * * * *",
                        "concurrency": CONCURRENCY, "wait": wait,
                        "params": {"sleepSeconds": run_seconds}}
            began = time.perf_counter()
            first = requests.post(f"{stack.api.url}/v1/{PARENT}/backfill/executions", headers=AUTH, timeout=30,
                                  json={"argument": json.dumps(argument)}).json()["name"]
            chain = [first]
            while True:       # follow the chain: each link names the next in its result
                stack.api.executions.wait(chain[-1])
                link = requests.get(f"{stack.api.url}/v1/{chain[-1]}", headers=AUTH, timeout=30).json()
                if link["state"] != "SUCCEEDED":
                    raise SystemExit(f"backfill link ended {link['state']}: {link.get('error')}")
                result = json.loads(link["result"])
                if "continued" not in result:
                    break
                chain.append(result["continued"])
            seconds = time.perf_counter() - began
            if (result["started"], result["failed"]) != (times, 0):
                raise SystemExit(f"backfill started {result['started']} of {times}, {result['failed']} failed")
            time.sleep(0.5)   # the last link's log line follows its result by a moment
            with lock:
                total = sum(steps[name] for name in chain)
        finally:
            stack.stop()
    return total / times, len(chain), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", metavar="REV", help="also run the backfill.yaml of this git revision")
    parser.add_argument("--quick", action="store_true", help="only the 1 s cases")
    args = parser.parse_args()
    versions: list[tuple[str, Path | None]] = [("this tree", None)]
    folder = tempfile.TemporaryDirectory()
    if args.compare:
        older = Path(folder.name) / "backfill.yaml"
        older.write_text(subprocess.run(["git", "show", f"{args.compare}:workflows/backfill.yaml"], cwd=ROOT,
                                        check=True, capture_output=True, text=True).stdout)
        versions.append((args.compare, older))
    print(f"steps per backfilled time, concurrency {CONCURRENCY} (localcloud's count, as Workflows bills)")
    for run_seconds, wait, times in CASES:
        if args.quick and run_seconds > 1:
            continue
        figures = []
        for label, path in versions:
            per_time, links, seconds = steps_per_time(run_seconds, wait, times, path)
            figures.append(per_time)
            print(f"  runs of {run_seconds:>2} s, {'wait   ' if wait else 'no wait'}, {times} times: "
                  f"{per_time:6.2f} steps/time ({links} link{'s' * (links > 1)}, {seconds:5.1f} s) [{label}]", flush=True)
        if len(figures) == 2:
            print(f"    ratio this tree / {args.compare}: {figures[0] / figures[1]:.2f}")


if __name__ == "__main__":
    main()
