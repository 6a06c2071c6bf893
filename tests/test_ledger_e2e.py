"""Exactly one execution per run under concurrency, crashes and storage faults, on the local stack
(localcloud's Executions API and Cloud Storage, the real proxy and backfill). Each guarantee is
tried over several trials with real concurrent requests, and counted afterwards in the Executions
API and the ledger, never from the proxy's own answers alone.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest
import requests

from localcloud import stack as local_stack
from localcloud.buckets import Preconditions
from localcloud.storage import Fault
from tests.test_proxy import expected_digest

AUTH = {"Authorization": "Bearer localcloud"}
PARENT = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows"
EXAMPLE = f"{PARENT}/example"
TRIALS = 3
LEASE_DEADLINE = 1  # UPSTREAM_DEADLINE_SECONDS of the short-lease proxy
LEASE_MARGIN = 1    # its LEASE_MARGIN_SECONDS: its lease is 2 s
# Waiting out a lease: it is judged on Cloud Storage's Date header, whole seconds behind its clock.
LEASE_WAIT = LEASE_DEADLINE + LEASE_MARGIN + 1.2


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    started = local_stack.start(tmp_path_factory.mktemp("state"), api_log=lambda entry: None)
    yield started
    started.stop()


@pytest.fixture
def short_lease_proxy(stack):
    """A second proxy on the same API and ledger whose lease is short enough to wait out."""
    port = local_stack.free_port()
    process = local_stack.start_function("proxy", "proxy", port, env=short_lease_env(stack))
    yield f"http://127.0.0.1:{port}", process
    local_stack.stop_process(process)


@pytest.fixture(autouse=True)
def clean_hooks(stack):
    yield
    stack.storage.faults.clear()
    stack.storage.after_write = None


_times = iter(range(1, 10 ** 6))


def fresh_time() -> str:
    """A scheduled time no other test of the module uses, so each trial counts its own runs."""
    n = next(_times)
    return datetime.fromtimestamp(1_500_000_000 + n * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def label(schedule_time: str) -> str:
    return datetime.fromisoformat(schedule_time.replace("Z", "+00:00")).strftime("%Y-%m-%dt%H-%M-%Sz")


def executions_at(stack, schedule_time: str) -> list[dict]:
    """Every execution of `example` for that scheduled time, from the Executions API."""
    answer = requests.get(f"{stack.api.url}/v1/{EXAMPLE}/executions", headers=AUTH, timeout=10, params={
        "filter": f'labels.schedule_time="{label(schedule_time)}"', "view": "FULL", "pageSize": 100})
    return answer.json().get("executions", [])


def attempts_at(stack, schedule_time: str) -> list[dict]:
    """The ledger's attempt objects for that time (docs/ledger.md: one per attempt)."""
    instant = datetime.fromisoformat(schedule_time.replace("Z", "+00:00")).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    prefix = f"runs/{local_stack.PROJECT}/{local_stack.LOCATION}/example/{instant}/"
    return stack.storage.buckets.list(local_stack.RUNS_BUCKET, prefix=prefix)[0]


def post_at_once(url: str, count: int, body: dict, headers: dict | None = None,
                 params: dict | None = None) -> list[requests.Response]:
    """`count` identical POSTs released together from `count` threads."""
    barrier = threading.Barrier(count)

    def post(_):
        barrier.wait()
        return requests.post(url, json=body, headers=headers or {}, params=params or {}, timeout=60)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(post, range(count)))


def wait_ended(stack, name: str) -> dict:
    stack.api.executions.wait(name, timeout=30)
    return requests.get(f"{stack.api.url}/v1/{name}", headers=AUTH, timeout=10).json()


# --- concurrent identical starts ------------------------------------------------------------

@pytest.mark.parametrize("deliveries", [2, 10, 50])
def test_concurrent_identical_scheduler_deliveries_start_exactly_one_execution(stack, deliveries):
    for _ in range(TRIALS):
        when = fresh_time()
        answers = post_at_once(stack.proxy_path("example"), deliveries, {"case": "deliveries"},
                               headers={"X-CloudScheduler-ScheduleTime": when})
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
        assert sum(a.json()["started"] for a in answers) == 1
        assert len({a.json()["name"] for a in answers}) == 1
        runs = executions_at(stack, when)
        assert len(runs) == 1 and runs[0]["labels"]["attempt"] == "1"
        assert len(attempts_at(stack, when)) == 1


@pytest.mark.parametrize("backfills", [2, 3])
def test_identical_backfills_started_at_once_run_each_time_once(stack, backfills):
    for trial in range(TRIALS):
        argument = {"workflow": "example", "start": f"203{backfills}-0{trial + 1}-01T00:00:00Z",
                    "stop": f"203{backfills}-0{trial + 1}-01T00:20:00Z", "step": "* * * * *", "concurrency": 10,
                    "params": {"case": f"backfills-{backfills}"}}
        barrier = threading.Barrier(backfills)

        def create(_):
            barrier.wait()
            return requests.post(f"{stack.api.url}/v1/{PARENT}/backfill/executions", headers=AUTH, timeout=10,
                                 json={"argument": json.dumps(argument)}).json()["name"]

        with ThreadPoolExecutor(backfills) as pool:
            names = list(pool.map(create, range(backfills)))
        results = [json.loads(wait_ended(stack, name)["result"]) for name in names]
        assert all(r["planned"] == 20 and r["failed"] == 0 and r["started"] + r["skipped"] == 20 for r in results)
        assert sum(r["started"] for r in results) == 20
        for minute in range(20):
            when = f"203{backfills}-0{trial + 1}-01T00:{minute:02d}:00Z"
            runs = executions_at(stack, when)
            assert len(runs) == 1, (when, len(runs))
            assert runs[0]["labels"]["backfill"] in {name.rsplit("/", 1)[1] for name in names}


@pytest.mark.parametrize("mode, first_fails", [("completed", False), ("failed", True)])
def test_concurrent_reruns_start_exactly_one_new_attempt(stack, mode, first_fails):
    for _ in range(TRIALS):
        when = fresh_time()
        # Each run sleeps, so the new attempt is still ACTIVE when the last racer judges it:
        # racers that came after it ended would rightly start yet another.
        body = {"case": f"rerun-{mode}", "scheduleTime": when, "sleepSeconds": 1.5}
        if first_fails:
            body["failFor"] = [when.replace("Z", "+00:00")]
        first = requests.post(stack.proxy_path("example"), json=body, timeout=30).json()
        assert first["started"] is True
        assert wait_ended(stack, first["name"])["state"] == ("FAILED" if first_fails else "SUCCEEDED")
        answers = post_at_once(stack.proxy_path("example"), 10, body, params={"reprocess": mode})
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert sum(a.json()["started"] for a in answers) == 1
        runs = executions_at(stack, when)
        assert len(runs) == 2
        assert sorted(run["labels"]["attempt"] for run in runs) == ["1", "2"]
        assert len(attempts_at(stack, when)) == 2


# --- crashes --------------------------------------------------------------------------------

def short_lease_env(stack) -> dict:
    return {"WORKFLOWS_API": stack.api.url, "GOOGLE_CLOUD_PROJECT": local_stack.PROJECT,
            "RUNS_BUCKET": local_stack.RUNS_BUCKET, "STORAGE_API": stack.storage.url,
            "UPSTREAM_DEADLINE_SECONDS": str(LEASE_DEADLINE), "LEASE_MARGIN_SECONDS": str(LEASE_MARGIN)}


def test_a_proxy_killed_between_claim_and_create_is_recovered_without_a_second_execution(stack, short_lease_proxy):
    recoverer, _ = short_lease_proxy
    for _ in range(TRIALS):
        victim_port = local_stack.free_port()
        victim = local_stack.start_function("proxy", "proxy", victim_port, env=short_lease_env(stack))
        when = fresh_time()
        body = {"case": "killed", "scheduleTime": when}

        def kill_after_claim(method: str, resource: dict) -> None:
            if (resource.get("metadata") or {}).get("state") == "CLAIMED":
                stack.storage.after_write = None
                os.killpg(victim.pid, signal.SIGKILL)  # the claim is written; its writer dies unanswered
                victim.wait()

        stack.storage.after_write = kill_after_claim
        try:
            with pytest.raises(requests.ConnectionError):
                requests.post(f"http://127.0.0.1:{victim_port}/v1/{EXAMPLE}/executions", json=body, timeout=30)
        finally:
            local_stack.stop_process(victim)
        assert executions_at(stack, when) == []
        (claim,) = attempts_at(stack, when)
        assert claim["metadata"]["state"] == "CLAIMED"

        # reprocess=none, as a retried Scheduler delivery: whoever recovers the claim starts the
        # run once, and everyone after answers that execution.
        path = f"{recoverer}/v1/{EXAMPLE}/executions"
        early = requests.post(path, json=body, params={"reprocess": "none"}, timeout=30)
        if early.status_code != 200:  # within the lease: the claimant may still be starting it
            assert (early.status_code, early.json()["error"]["status"]) == (409, "ABORTED")
        time.sleep(LEASE_WAIT)
        answers = post_at_once(path, 5, body, params={"reprocess": "none"})
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        runs = executions_at(stack, when)
        assert len(runs) == 1 and runs[0]["labels"]["attempt"] == "1"
        assert sum(a.json()["started"] for a in answers) == (0 if early.status_code == 200 else 1)
        (recovered,) = attempts_at(stack, when)
        assert recovered["metadata"]["execution"] == runs[0]["name"]
        assert int(recovered["generation"]) > int(claim["generation"])  # taken over by a rewrite


def test_an_execution_created_but_never_recorded_is_recorded_not_started_again(stack, short_lease_proxy):
    url, _ = short_lease_proxy
    for _ in range(TRIALS):
        when = fresh_time()
        body = {"case": "unrecorded", "scheduleTime": when}
        digest = expected_digest(EXAMPLE, label(when), {"case": "unrecorded"})
        instant = datetime.fromisoformat(when.replace("Z", "+00:00")).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        name = f"runs/{local_stack.PROJECT}/{local_stack.LOCATION}/example/{instant}/{digest}/000001"
        # What a starter leaves when it dies after create, before record: a claim, and an
        # execution labelled with its digest and attempt.
        stack.storage.buckets.insert(local_stack.RUNS_BUCKET, name, b"{}", {"metadata": {"state": "CLAIMED"}},
                                     Preconditions())
        created = requests.post(f"{stack.api.url}/v1/{EXAMPLE}/executions", headers=AUTH, timeout=10, json={
            "argument": json.dumps({**body, "scheduleTime": when.replace("Z", "+00:00")}),
            "labels": {"schedule_time": label(when), "run_digest": digest, "trigger": "explicit", "attempt": "1"}}).json()
        time.sleep(LEASE_WAIT)
        answers = post_at_once(url + f"/v1/{EXAMPLE}/executions", 5, body, params={"reprocess": "none"})
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert {(a.json()["started"], a.json()["name"]) for a in answers} == {(False, created["name"])}
        assert len(executions_at(stack, when)) == 1
        (recorded,) = attempts_at(stack, when)
        assert recorded["metadata"]["execution"] == created["name"]


# --- storage faults -------------------------------------------------------------------------

@pytest.mark.parametrize("code", [429, 503])
def test_transient_storage_faults_are_retried(stack, code):
    for _ in range(TRIALS):
        when = fresh_time()
        stack.storage.faults.extend([Fault(code, "GET"), Fault(code, "POST"), Fault(code, "PATCH")])
        answers = post_at_once(stack.proxy_path("example"), 3, {"case": f"fault-{code}"},
                               headers={"X-CloudScheduler-ScheduleTime": when})
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert sum(a.json()["started"] for a in answers) == 1
        assert len(executions_at(stack, when)) == 1
        assert not stack.storage.faults  # every fault was met and retried through
        (attempt,) = attempts_at(stack, when)
        assert attempt["metadata"]["state"] != "CLAIMED"


def test_an_injected_412_on_the_claim_reads_again_and_starts_once(stack):
    for _ in range(TRIALS):
        when = fresh_time()
        stack.storage.faults.append(Fault(412, "POST", "/upload/"))
        answer = requests.post(stack.proxy_path("example"), json={"case": "fault-412"},
                               headers={"X-CloudScheduler-ScheduleTime": when}, timeout=30)
        assert answer.status_code == 200 and answer.json()["started"] is True, answer.text
        assert len(executions_at(stack, when)) == 1


def test_storage_down_for_the_whole_deadline_is_503_and_starts_nothing(stack, short_lease_proxy):
    url, _ = short_lease_proxy
    when = fresh_time()
    stack.storage.faults.extend([Fault(503)] * 1000)
    answer = requests.post(url + f"/v1/{EXAMPLE}/executions", json={"case": "down", "scheduleTime": when}, timeout=30)
    stack.storage.faults.clear()
    assert answer.status_code == 503 and answer.json()["error"]["status"] == "UNAVAILABLE"
    assert executions_at(stack, when) == []


# --- durable after Workflows forgets ---------------------------------------------------------

@pytest.mark.parametrize("first_fails, mode, starts", [
    (False, "none", False), (False, "failed", False), (False, "completed", True),
    (True, "none", False), (True, "failed", True),
])
def test_expired_executions_are_judged_from_the_ledger(stack, first_fails, mode, starts):
    for _ in range(TRIALS):
        when = fresh_time()
        body = {"case": "expired", "scheduleTime": when}
        if first_fails:
            body["failFor"] = [when.replace("Z", "+00:00")]
        first = requests.post(stack.proxy_path("example"), json=body, timeout=30).json()
        ended = wait_ended(stack, first["name"])
        # Read once while Workflows still has it, so the ledger learns the end state.
        requests.post(stack.proxy_path("example"), json=body, params={"reprocess": "none"}, timeout=30)
        assert stack.api.executions.store.delete(first["name"])  # the history retention has passed
        answer = requests.post(stack.proxy_path("example"), json=body, params={"reprocess": mode}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["started"] is starts
        if not starts:
            assert (answer.json()["name"], answer.json()["state"]) == (first["name"], ended["state"])
        assert len(executions_at(stack, when)) == (1 if starts else 0)
