"""One audit pass on the local stack (the audit function in its own process, from its assembled
source, as `localcloud up` runs it), in two shapes:

  - 50 jobs x a day of hourly times (1,200 times), one time per job never run (50 missing);
  - 1 job x a week of minutely times (10,080 times), all succeeded.

Each is audited twice: the first pass raises the missing alerts, the second finds them raised.
Printed per pass: seconds (the POST, as Cloud Scheduler makes it), the function's own HTTP calls
by service (its answer's `calls`), and calls per job and per 1,000 times. Targets (issue 27):
calls grow with jobs and pages of times, never with times; a week of minutes under 3 s.

The runs are written to the ledger directly (one SUCCEEDED attempt per time, named and described
as docs/ledger.md says, with the run digest of the job's body), not started through Workflows:
what a pass reads is the ledger, and 11,280 real executions would measure localcloud instead.

    .venv/bin/python bench/bench_audit.py
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from localcloud import stack as local_stack  # noqa: E402
from workflows_runner import ledger  # noqa: E402
from workflows_runner.cloud import Cloud  # noqa: E402
from workflows_runner.identity import run_digests  # noqa: E402
from workflows_runner.target import Target  # noqa: E402

AUTH = {"Authorization": "Bearer localcloud"}
P, L = local_stack.PROJECT, local_stack.LOCATION
WRITERS = 16


def z(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def cloud_of(stack) -> Cloud:
    return Cloud(Target(project=P, location=L, prefix="", api_root=stack.api.url, storage_root=stack.storage.url,
                        scheduler_root=stack.scheduler.url, bucket=local_stack.RUNS_BUCKET, backfill_workflow="",
                        range_url=stack.range_url, proxy_url=stack.proxy_url, local_token="localcloud"))


def add_job(stack, name: str, schedule: str, since: datetime, lookback: str, body: dict) -> None:
    uri = (f"{stack.proxy_path('nightly')}?timezone=Etc/UTC&since={z(since)}&lookback={lookback}&deadline=PT1H")
    resource = {"name": f"projects/{P}/locations/{L}/jobs/{name}", "schedule": schedule, "timeZone": "Etc/UTC",
                "httpTarget": {"uri": uri, "httpMethod": "POST", "body": _b64(json.dumps(body)),
                               "headers": {"Content-Type": "application/json"},
                               "oidcToken": {"serviceAccountEmail": f"scheduler@{P}.iam.gserviceaccount.com"}}}
    answer = requests.post(f"{stack.scheduler.url}/v1/projects/{P}/locations/{L}/jobs", json=resource,
                           headers=AUTH, timeout=30)
    answer.raise_for_status()
    # Paused, so the bench's own scheduler delivers nothing while it runs.
    requests.post(f"{stack.scheduler.url}/v1/projects/{P}/locations/{L}/jobs/{name}:pause", json={},
                  headers=AUTH, timeout=30).raise_for_status()


def _b64(text: str) -> str:
    import base64
    return base64.b64encode(text.encode()).decode()


def record_runs(cloud: Cloud, body: dict, instants: list[datetime]) -> None:
    """One SUCCEEDED attempt per instant, as the proxy records a run that ended (docs/ledger.md)."""
    workflow = f"projects/{P}/locations/{L}/workflows/nightly"

    def write(pair):
        instant, digest = pair
        name = ledger.run_prefix(workflow, instant, digest) + "000001"
        started = instant + timedelta(seconds=5)
        metadata = {"state": "SUCCEEDED", "execution": f"{workflow}/executions/{digest[:8]}-{instant:%s}",
                    "createTime": z(started), "endTime": z(started + timedelta(seconds=30))}
        cloud.insert_object(name, b"{}", metadata)
    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(write, zip(instants, run_digests(workflow, instants, body))))


def audit(stack) -> tuple[float, dict]:
    began = time.perf_counter()
    answer = requests.post(stack.audit_url, headers=AUTH, timeout=600)
    seconds = time.perf_counter() - began
    answer.raise_for_status()
    return seconds, answer.json()


def report(label: str, jobs: int, times: int, passes: list[tuple[float, dict]]) -> None:
    for number, (seconds, answer) in enumerate(passes, 1):
        calls = answer["calls"]
        total = sum(calls.values())
        raised = sum(answer["raised"].values())
        print(f"{label}, pass {number}: {seconds:.2f} s; {answer['times']} times, {raised} alerts raised; "
              f"calls {json.dumps(calls)} = {total} "
              f"({total / jobs:.1f} per job, {total / times * 1000:.1f} per 1,000 times)")


def main() -> int:
    now = datetime.now(timezone.utc)
    with tempfile.TemporaryDirectory() as state:
        workflows = Path(state) / "workflows"
        workflows.mkdir()
        (workflows / "nightly.yaml").write_text((ROOT / "workflows" / "example.yaml").read_text())
        stack = local_stack.start(Path(state) / "state", workflows, jobs=[], audit=True,
                                  api_log=lambda entry: None, scheduler_log=lambda entry: None)
        try:
            cloud = cloud_of(stack)
            # 50 jobs x a day of hourly times; each job's first time never ran.
            day_end = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
            hours = [day_end - timedelta(hours=h) for h in range(24)][::-1]
            began = time.perf_counter()
            for job in range(50):
                body = {"job": job}
                add_job(stack, f"hourly-{job:02d}", "0 * * * *", hours[0], "P1D", body)
                record_runs(cloud, body, hours[1:])
            print(f"50 jobs x 24 hourly times: jobs created, {50 * 23} runs recorded in "
                  f"{time.perf_counter() - began:.1f} s")
            report("50 jobs x a day hourly", 50, 50 * 24, [audit(stack), audit(stack)])
            for job in range(50):   # out of the way of the next shape
                requests.delete(f"{stack.scheduler.url}/v1/projects/{P}/locations/{L}/jobs/hourly-{job:02d}",
                                headers=AUTH, timeout=30).raise_for_status()

            # 1 job x a week of minutely times, all succeeded.
            week_end = now.replace(second=0, microsecond=0) - timedelta(minutes=11)
            minutes = [week_end - timedelta(minutes=m) for m in range(7 * 24 * 60)][::-1]
            body = {"job": "minutely"}
            began = time.perf_counter()
            add_job(stack, "minutely", "* * * * *", minutes[0], "P8D", body)
            record_runs(cloud, body, minutes)
            print(f"1 job x {len(minutes)} minutely times: recorded in {time.perf_counter() - began:.1f} s")
            passes = [audit(stack), audit(stack)]
            report("1 job x a week minutely", 1, len(minutes), passes)
            worst = max(seconds for seconds, _ in passes)
            print(f"a week of minutes: worst pass {worst:.2f} s (target < 3 s): {'ok' if worst < 3 else 'OVER'}")
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
