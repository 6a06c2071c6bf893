"""overlap=queue's bounds and faults end to end (docs/proxy.md, "Overlap and failure policies"):
a queue whose bound passes, a waiter that stops, a waiter that cannot be started, and what
`wfr status` shows meanwhile. The stack runs with the bounds scaled down (a poll every 0.5 s, a
2 s request deadline, so a waiter untouched for 3.5 s counts as gone, and 8 s of waiting at most),
so that what takes minutes on Google takes seconds here. Oracles: the Executions API's listing,
the ledger's objects in the local Cloud Storage, and `wfr status --format json`."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from localcloud import stack as local_stack
from tests.test_policies_e2e import TARGET, z  # the target whose runs sleep `seconds`

AUTH = {"Authorization": "Bearer localcloud"}
LOCATION = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}"
WORKFLOW = f"{LOCATION}/workflows/target"
BASE = datetime(2026, 3, 2, tzinfo=timezone.utc)
SCALED = {"QUEUE_POLL_SECONDS": "0.5", "UPSTREAM_DEADLINE_SECONDS": "2", "QUEUE_MAX_WAIT_SECONDS": "8"}


class World:
    def __init__(self, stack, state: Path):
        self.stack, self.state = stack, state

    def deliver(self, case: str, instant: datetime, seconds: float) -> requests.Response:
        """What Cloud Scheduler sends for one scheduled time of an overlap=queue job."""
        return requests.post(f"{self.stack.proxy_url}/v1/{WORKFLOW}/executions?overlap=queue",
                             data=json.dumps({"case": case, "seconds": seconds}), timeout=60, headers={
            **AUTH, "Content-Type": "application/json", "X-CloudScheduler-JobName": f"{LOCATION}/jobs/{case}",
            "X-CloudScheduler-ScheduleTime": z(instant)})

    def executions(self, workflow: str, case: str | None = None) -> list[dict]:
        found = requests.get(f"{self.stack.api.url}/v1/{LOCATION}/workflows/{workflow}/executions", headers=AUTH,
                             params={"view": "FULL", "pageSize": 1000}, timeout=30).json().get("executions", [])
        return [e for e in found if case is None or json.loads(e["argument"]).get("case") == case]

    def get(self, name: str) -> dict:
        return requests.get(f"{self.stack.api.url}/v1/{name}", headers=AUTH, timeout=10).json()

    def until(self, check, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while not (value := check()):
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.2)
        return value

    def attempts(self, instant: datetime) -> list[dict]:
        """The ledger attempts of the target's runs at `instant`, oldest first."""
        return sorted(self.objects(f"runs/{local_stack.PROJECT}/{local_stack.LOCATION}/target/"
                                   f"{instant.strftime('%Y-%m-%dT%H:%M:%S')}.000000Z/"), key=lambda o: o["name"])

    def objects(self, prefix: str) -> list[dict]:
        return requests.get(f"{self.stack.storage.url}/storage/v1/b/{local_stack.RUNS_BUCKET}/o", headers=AUTH,
                            params={"prefix": prefix}, timeout=10).json().get("items", [])

    def queue_entries(self) -> list[str]:
        return [o["name"] for o in self.objects("runs/_queue/")]

    def status(self, case: str, times: list[datetime], seconds: float) -> dict[str, str]:
        done = subprocess.run([str(Path(sys.executable).parent / "wfr"), "--local-state", str(self.state), "status",
                               "target", "--start", z(times[0]), "--stop", z(times[-1] + timedelta(minutes=1)),
                               "--step", "* * * * *", "--params", json.dumps({"case": case, "seconds": seconds}),
                               "--format", "json"], capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, 3, 4, 5), done.stderr
        return {z(datetime.fromisoformat(t["scheduleTime"])): t["state"] for t in json.loads(done.stdout)["times"]}


def _world(tmp_path_factory, proxy_env: dict):
    from localcloud import up as local_up
    folder = tmp_path_factory.mktemp("workflows")
    (folder / "target.yaml").write_text(TARGET)
    state = tmp_path_factory.mktemp("state")
    stack = local_stack.start(state, folder, jobs=[], api_log=lambda entry: None, scheduler_log=lambda entry: None,
                              proxy_env=proxy_env)
    (state / "endpoints.json").write_text(json.dumps(local_up.endpoints(stack)))
    return stack, World(stack, state)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    stack, world = _world(tmp_path_factory, SCALED)
    try:
        yield world
    finally:
        stack.stop()


def test_a_time_past_the_queues_bound_is_skipped_and_its_waiter_ends(world):
    t1, t2 = BASE, BASE + timedelta(minutes=1)
    first = world.deliver("bound", t1, 15).json()
    queued = world.deliver("bound", t2, 15).json()
    assert first["started"] is True and queued["queued"] is True
    assert world.status("bound", [t1, t2], 15) == {z(t1): "running", z(t2): "queued"}
    waiter = world.until(lambda: (w := world.get(queued["waiter"]))["state"] != "ACTIVE" and w, timeout=30)
    assert waiter["state"] == "SUCCEEDED" and json.loads(waiter["result"])["skipped"] is True
    (record,) = world.attempts(t2)
    assert record["metadata"]["state"] == "SKIPPED" and "within the queue's bound of 8 s" in record["metadata"]["blockedBy"]
    assert [json.loads(e["argument"])["scheduleTime"] for e in world.executions("target", "bound")] == \
        ["2026-03-02T00:00:00+00:00"]                                # t2 never ran
    assert world.queue_entries() == []
    assert world.status("bound", [t1, t2], 15)[z(t2)] == "skipped"


def test_a_waiter_that_stops_is_passed_over_its_time_skipped_and_the_next_time_runs(world):
    t1, t2, t3 = (BASE + timedelta(hours=1, minutes=k) for k in range(3))
    assert world.deliver("stop", t1, 3).json()["started"] is True        # one job: one body
    second, third = world.deliver("stop", t2, 3).json(), world.deliver("stop", t3, 3).json()
    assert second.get("position") == 0 and third.get("position") == 1, (second, third)
    requests.post(f"{world.stack.api.url}/v1/{second['waiter']}:cancel", headers=AUTH, json={}, timeout=10)
    runs = world.until(lambda: (r := world.executions("target", "stop")) and len(r) == 2
                       and all(e["state"] == "SUCCEEDED" for e in r) and r, timeout=30)
    assert sorted(json.loads(e["argument"])["scheduleTime"] for e in runs) == \
        ["2026-03-02T01:00:00+00:00", "2026-03-02T01:02:00+00:00"]   # t2 was passed over, t3 ran
    (record,) = world.attempts(t2)
    assert record["metadata"]["state"] == "SKIPPED" and "waiter stopped" in record["metadata"]["blockedBy"]
    assert world.get(third["waiter"])["state"] == "SUCCEEDED"
    assert world.queue_entries() == []


@pytest.fixture(scope="module")
def no_waiter(tmp_path_factory):
    stack, world = _world(tmp_path_factory, {**SCALED, "QUEUE_WORKFLOW": f"{LOCATION}/workflows/no-such-waiter"})
    try:
        yield world
    finally:
        stack.stop()


def test_a_waiter_that_cannot_be_started_leaves_nothing_waiting_and_the_retry_runs_the_time(no_waiter):
    t1, t2 = BASE + timedelta(hours=2), BASE + timedelta(hours=2, minutes=1)
    first = no_waiter.deliver("nowaiter", t1, 2).json()
    refused = no_waiter.deliver("nowaiter", t2, 2)
    assert refused.status_code == 500, refused.text
    error = refused.json()["error"]
    assert "waiter" in error["message"] and "no-such-waiter" in error["message"] and error["code"] == 500
    assert no_waiter.attempts(t2) == [] and no_waiter.queue_entries() == []
    no_waiter.until(lambda: no_waiter.get(first["name"])["state"] == "SUCCEEDED", timeout=30)
    retried = no_waiter.deliver("nowaiter", t2, 2)                # Cloud Scheduler's retry, a slot free
    assert retried.status_code == 200 and retried.json()["started"] is True
