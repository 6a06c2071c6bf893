"""Exactly once under faults (issue 23): the proxy on the local stack with a fault-injecting relay
(tests/fault_relay.py) between it and the Executions API and Cloud Storage, and proxies whose
clocks are skewed. Each case runs TRIALS times and is counted afterwards in the Executions API
(executions per attempt) and in the ledger (records), never from the proxy's answers alone.
The stack and the counting helpers: tests/fencing_stack.py.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from urllib.parse import quote

import pytest
import requests

from localcloud import stack as local_stack
from localcloud.buckets import Preconditions
from tests.fault_relay import Rule
from workflows_runner.identity import from_label
from tests.fencing_stack import (  # noqa: F401 (the fixtures are used by name)
    AUTH, in_parallel, DEADLINE, EXAMPLE, LEASE, MARGIN, SKEW, TRIALS, assert_one_recorded_execution,
    clean_relay, create_rule, executions_at, fresh_time, instant, label, per_attempt,
    post_until_judged, proxies, proxy, records_at, relay, retry_info, stack)


# --- case 2: a create answered late or not at all, saved late by Workflows ------------------

def test_a_create_that_lands_after_the_deadline_is_found_not_created_again(stack, relay, proxy):
    def trial(number: int) -> None:
        when = fresh_time()
        body = {"case": "lands-late", "scheduleTime": when}
        # Forwarded after the claimant gave up waiting, within the lease's margin.
        relay.add(create_rule(when, "delay", seconds=DEADLINE + 0.3, times=1))
        first = proxy.post(body, reprocess="none")
        retry_info(first)  # the outcome is unknown: no second create, ask again after the lease
        assert relay.count("create", label(when)) == 1
        answer, _ = post_until_judged(proxy, body, reprocess="none")
        assert answer.status_code == 200, answer.text
        execution = assert_one_recorded_execution(stack, when)
        assert answer.json()["name"] == execution["name"]
        assert relay.count("create", label(when)) == 1

    in_parallel(trial)


@pytest.mark.parametrize("action", ["late_answer", "drop_answer"])
def test_a_create_whose_answer_is_late_or_lost_is_found_by_its_labels(stack, relay, proxy, action):
    def trial(number: int) -> None:
        when = fresh_time()
        relay.add(create_rule(when, action, seconds=DEADLINE + 0.5, times=1))
        answer = proxy.post({"case": action, "scheduleTime": when})
        assert answer.status_code == 200 and answer.json()["started"] is True, answer.text
        execution = assert_one_recorded_execution(stack, when)
        assert answer.json()["name"] == execution["name"]
        assert relay.count("create", label(when)) == 1

    in_parallel(trial)


@pytest.mark.parametrize("trial", range(TRIALS))
def test_creates_refused_with_429_are_retried_and_start_once(stack, relay, proxy, trial):
    """Google's concurrency quota answers 429: nothing was created, so the create is sent again."""
    when = fresh_time()
    relay.add(create_rule(when, "answer", code=429, times=2))
    answer = proxy.post({"case": "quota", "scheduleTime": when})
    assert answer.status_code == 200 and answer.json()["started"] is True, answer.text
    assert_one_recorded_execution(stack, when)
    assert relay.count("create", label(when)) == 3
    assert relay.count("lookup") == 0  # a 429 created nothing: no executions.list spent on it


# --- case 3: a time is never lost ------------------------------------------------------------

@pytest.mark.parametrize("trial", range(TRIALS))
def test_creates_refused_until_the_deadline_release_the_claim_and_a_retry_starts_it(stack, relay, proxy, trial):
    when = fresh_time()
    body = {"case": "refused", "scheduleTime": when}
    outage = relay.add(create_rule(when, "answer", code=503, until=time.monotonic() + DEADLINE + 0.5))
    first = proxy.post(body, reprocess="none")
    assert first.status_code == 503 and first.json()["error"]["status"] == "UNAVAILABLE", first.text
    assert executions_at(stack, when) == [] and records_at(stack, when) == []  # released: nothing left
    time.sleep(max(0.0, outage.until - time.monotonic()) + 0.1)  # the outage passes
    again = proxy.post(body, reprocess="none")  # the backfill's or Scheduler's retry, at once
    assert again.status_code == 200 and again.json()["started"] is True, again.text
    assert_one_recorded_execution(stack, when)


def test_a_claim_within_its_lease_is_409_with_retry_info_and_judged_after_it(stack, relay, proxy):
    """The contract with the backfill: a claim the proxy cannot judge yet is 409 ABORTED with
    RetryInfo; asked again after retryDelay, the time is started or found, never lost."""
    def trial(number: int) -> None:
        when = fresh_time()
        body = {"case": "busy", "scheduleTime": when}
        held = relay.add(create_rule(when, "hold", times=1))
        with ThreadPoolExecutor(1) as pool:
            claimant = pool.submit(proxy.post, body)
            assert held.arrived.wait(10)
            other = proxy.post(body, reprocess="none")  # a backfill's request for the same time
            delay = retry_info(other)
            assert 1 <= delay <= LEASE + 2
            held.release.set()  # the create lands, within the lease
            first = claimant.result()
        assert first.status_code in (200, 409), first.text
        answer, _ = post_until_judged(proxy, body, reprocess="none")
        assert answer.status_code == 200, answer.text
        assert_one_recorded_execution(stack, when)

    in_parallel(trial)


# --- case 4: a lease is not taken over while a create can land -------------------------------

def test_a_create_landing_just_before_the_lease_ends_is_recorded_not_doubled(stack, relay, proxies):
    def trial(number: int) -> None:
        when = fresh_time()
        body = {"case": "in-flight", "scheduleTime": when}
        relay.add(create_rule(when, "delay", seconds=DEADLINE + 0.8 * MARGIN, times=1))
        claimant = proxies["on time"]
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(claimant.post, body)
            time.sleep(DEADLINE)
            # Others keep asking (a backfill, a retried delivery) through the whole lease.
            answers = [post_until_judged(proxies["on time"], body, reprocess="none")[0] for _ in range(2)]
            first.result()
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        assert_one_recorded_execution(stack, when)
        assert relay.count("create", label(when)) == 1

    in_parallel(trial)


def test_a_claimant_whose_claim_was_taken_over_cancels_its_own_execution(stack, relay, proxy):
    """When the assumption breaks (a claim rewritten while its create was in flight), the claimant's
    record write fails with 412, and it cancels its execution and logs both names."""
    def trial(number: int) -> None:
        when = fresh_time()
        held = relay.add(create_rule(when, "hold", times=1))
        with ThreadPoolExecutor(1) as pool:
            claimant = pool.submit(proxy.post, {"case": "taken-over", "scheduleTime": when, "sleepSeconds": 6})
            assert held.arrived.wait(10)
            (claim,) = records_at(stack, when)
            # The adversary: a takeover by a rewrite of the claim (a new claimant, not yet recorded).
            stack.storage.buckets.insert(local_stack.RUNS_BUCKET, claim["name"], b"{}", {"metadata": {
                "state": "CLAIMED", "claim": "rogue", "lease": str(LEASE)}}, Preconditions(if_generation_match=claim["generation"]))
            held.release.set()
            answer = claimant.result()
        assert answer.status_code == 409, answer.text
        (execution,) = executions_at(stack, when)
        stack.api.executions.wait(execution["name"], timeout=10)
        assert executions_at(stack, when)[0]["state"] == "CANCELLED"
        (warning,) = [w for w in proxy.warnings() if w.get("orphan") == execution["name"]]
        assert warning["event"] == "orphanExecution" and "kept" in warning

    in_parallel(trial)


def test_two_executions_of_one_attempt_found_by_a_lookup_keep_the_oldest_and_cancel_the_other(stack, proxy):
    def trial(number: int) -> None:
        when = fresh_time()
        body = {"case": "orphans", "scheduleTime": when, "sleepSeconds": 6}  # still running when judged
        first = proxy.post(body)  # learn the run's digest and record name
        (record,) = records_at(stack, when)
        # What a broken assumption leaves: the claim unrecorded, and a second execution of attempt 1.
        stack.storage.buckets.insert(local_stack.RUNS_BUCKET, record["name"], b"{}", {"metadata": {
            "state": "CLAIMED", "claim": "x", "lease": "1"}}, Preconditions(if_generation_match=record["generation"]))
        execution = requests.get(f"{stack.api.url}/v1/{first.json()['name']}", params={"view": "FULL"},
                                 headers=AUTH, timeout=10).json()
        twin = requests.post(f"{stack.api.url}/v1/{EXAMPLE}/executions", headers=AUTH, timeout=10, json={
            "argument": execution["argument"], "labels": execution["labels"]}).json()
        time.sleep(2.2)  # the planted claim's 1 s lease, on Cloud Storage's whole-second clock
        answer = proxy.post(body, reprocess="none")
        assert answer.status_code == 200 and answer.json()["name"] == execution["name"], answer.text
        states = {e["name"]: e["state"] for e in executions_at(stack, when)}
        assert states == {execution["name"]: "ACTIVE", twin["name"]: "CANCELLED"}
        (recorded,) = records_at(stack, when)
        assert recorded["metadata"]["execution"] == execution["name"]
        (warning,) = [w for w in proxy.warnings() if w.get("orphan") == twin["name"]]
        assert warning["kept"] == execution["name"]

    in_parallel(trial)


# --- case 5: skewed clocks --------------------------------------------------------------------

def test_the_skewed_proxies_clocks_are_skewed(proxies):
    """The oracle for the skew tests: a manual run is named by the proxy's own clock."""
    for name, skew in (("ahead", SKEW), ("behind", -SKEW)):
        answer = proxies[name].post({"case": f"clock-{name}-{time.time()}"})
        scheduled = from_label(answer.json()["labels"]["schedule_time"])
        assert abs((scheduled - datetime.now(timezone.utc)).total_seconds() - skew) < 3


def test_a_proxy_whose_clock_is_ahead_does_not_take_over_a_healthy_claim(stack, relay, proxies):
    def trial(number: int) -> None:
        when = fresh_time()
        body = {"case": "ahead", "scheduleTime": when}
        held = relay.add(create_rule(when, "delay", seconds=DEADLINE + 0.5, times=1))
        with ThreadPoolExecutor(1) as pool:
            claimant = pool.submit(proxies["on time"].post, body)
            assert held.arrived.wait(10)
            early = proxies["ahead"].post(body, reprocess="none")
            retry_info(early)  # within the lease on Cloud Storage's clock, whatever its own says
            claimant.result()
        answer, _ = post_until_judged(proxies["ahead"], body, reprocess="none")
        assert answer.status_code == 200, answer.text
        assert_one_recorded_execution(stack, when)

    in_parallel(trial)


def test_a_proxy_whose_clock_is_behind_starts_a_legitimate_rerun(stack, proxies):
    def trial(number: int) -> None:
        when = fresh_time()
        body = {"case": "behind", "scheduleTime": when}
        first = proxies["on time"].post(body)
        stack.api.executions.wait(first.json()["name"], timeout=10)
        time.sleep(1.1)  # the re-run comes a second after the first claim, as a person's would
        rerun = proxies["behind"].post(body, reprocess="completed")
        assert rerun.status_code == 200 and rerun.json()["started"] is True, rerun.text
        assert per_attempt(stack, when) == {"1": 1, "2": 1}
        assert len(records_at(stack, when)) == 2

    in_parallel(trial)


# --- case 6: an unrecorded execution that leaves Workflows' history ----------------------------

def test_an_unrecorded_execution_is_recorded_by_the_next_reader_and_never_started_again(stack, relay, proxy):
    def trial(number: int) -> None:
        when = fresh_time()
        body = {"case": "unrecorded", "scheduleTime": when}
        # Every write of the claim's record fails for the claimant's whole deadline.
        relay.add(Rule("answer", "PATCH", quote(instant(when), safe=""), code=503,
                       until=time.monotonic() + DEADLINE + 0.3))
        first = proxy.post(body)
        assert first.status_code == 200 and first.json()["started"] is True, first.text
        (claim,) = records_at(stack, when)
        assert claim["metadata"]["state"] == "CLAIMED"
        assert [w for w in proxy.warnings() if w.get("execution") == first.json()["name"]][0]["event"] == "recordFailed"
        time.sleep(LEASE + 1.2)
        read = proxy.post(body, reprocess="none")  # the first reader after the lease records it
        assert read.status_code == 200 and (read.json()["started"], read.json()["name"]) == (False, first.json()["name"])
        assert_one_recorded_execution(stack, when)
        stack.api.executions.wait(first.json()["name"], timeout=10)
        assert stack.api.executions.store.delete(first.json()["name"])  # Workflows' history retention passed
        for mode in ("none", "none", "failed"):
            later = proxy.post(body, reprocess=mode)
            assert later.status_code == 200 and later.json()["started"] is False, later.text
        assert executions_at(stack, when) == []
        assert relay.count("create", label(when)) == 1
        (record,) = records_at(stack, when)
        assert record["metadata"]["execution"] == first.json()["name"]

    in_parallel(trial)


# --- issue 28, item 6: Workflows is not asked about a run recorded terminal ------------------

def test_a_run_recorded_terminal_costs_no_executions_get(stack, relay, proxy):
    when = fresh_time()
    body = {"case": "terminal", "scheduleTime": when}
    first = proxy.post(body).json()
    stack.api.executions.wait(first["name"], timeout=10)
    execution_id = first["name"].rsplit("/", 1)[1]
    learned = proxy.post(body, reprocess="none").json()  # recorded ACTIVE: asked once, learns SUCCEEDED
    assert learned["state"] == "SUCCEEDED" and relay.count("get", execution_id) == 1
    for _ in range(3):
        again = proxy.post(body, reprocess="none").json()
        assert (again["name"], again["state"], again["started"]) == (first["name"], "SUCCEEDED", False)
    assert relay.count("get", execution_id) == 1
