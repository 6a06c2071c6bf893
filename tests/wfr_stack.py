"""`python -m localcloud up` in a subprocess and `wfr --local` in subprocesses, for the wfr tests."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
WFR = Path(sys.executable).parent / "wfr"
AUTH = {"Authorization": "Bearer localcloud"}


class Up:
    def __init__(self, state: Path, workflows: Path, jobs: Path | None = None, env: dict | None = None):
        self.state = state
        command = [sys.executable, "-m", "localcloud", "up", "--workflows", str(workflows), "--state", str(state)]
        if jobs:
            command += ["--jobs", str(jobs)]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        env={**os.environ, **(env or {})}, start_new_session=True)
        deadline = time.monotonic() + 60
        while not (state / "endpoints.json").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"up did not start: {self.process.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        time.sleep(0.2)
        self.endpoints = json.loads((state / "endpoints.json").read_text())

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def wfr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(WFR), *args, "--local-state", str(self.state)], capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT)

    def workflow(self, workflow_id: str) -> str:
        return f"projects/{self.endpoints['project']}/locations/{self.endpoints['location']}/workflows/{workflow_id}"

    def post_run(self, workflow_id: str, body: dict | list, **query: str) -> requests.Response:
        return requests.post(f"{self.endpoints['proxy']}/v1/{self.workflow(workflow_id)}/executions",
                             json=body, params=query, headers=AUTH, timeout=60)

    def executions(self, workflow_id: str) -> list[dict]:
        runs, params = [], {"view": "FULL", "pageSize": 100}
        while True:
            page = requests.get(f"{self.endpoints['api']}/v1/{self.workflow(workflow_id)}/executions",
                                params=params, headers=AUTH, timeout=30).json()
            runs += page.get("executions", [])
            if not page.get("nextPageToken"):
                return runs
            params["pageToken"] = page["nextPageToken"]

    def settle(self, workflow_id: str, timeout: float = 60) -> list[dict]:
        """Every execution of the workflow, once none is running."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.executions(workflow_id)
            if all(run["state"] not in ("ACTIVE", "QUEUED") for run in runs) or time.monotonic() > deadline:
                return runs
            time.sleep(0.2)
