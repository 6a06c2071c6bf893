"""Overlap policies end to end on the local stack (docs/proxy.md, "Overlap and failure
policies"): real deliveries as Cloud Scheduler sends them, through the proxy, to a target whose
runs last a few seconds. Oracles: the Executions API's own listing (each run's argument says
which case and trial it belongs to), and `wfr status --format json`."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from localcloud import stack as local_stack

AUTH = {"Authorization": "Bearer localcloud"}
RUN_SECONDS = 3
TARGET = """\
main:
  params: [input]
  steps:
    - nap:
        call: sys.sleep
        args:
          seconds: ${input.seconds}
    - done:
        return: ok
"""
WORKFLOW = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows/target"
BASE = datetime(2026, 1, 5, tzinfo=timezone.utc)


def z(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


class World:
    def __init__(self, stack, state: Path):
        self.stack, self.state = stack, state

    def deliver(self, case: str, instant: datetime, query: str = "overlap=skip", seconds: int = RUN_SECONDS,
                via: str | None = None) -> dict:
        """What Cloud Scheduler sends for one scheduled time of the job whose body names `case`
        (to the stack's proxy, or to the proxy at `via`)."""
        answer = requests.post(f"{via or self.stack.proxy_url}/v1/{WORKFLOW}/executions?timezone=Etc/UTC&{query}",
                               data=json.dumps({"case": case, "seconds": seconds}), timeout=60, headers={
            **AUTH, "Content-Type": "application/json", "X-CloudScheduler": "true",
            "X-CloudScheduler-JobName": f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/jobs/{case}",
            "X-CloudScheduler-ScheduleTime": z(instant)})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def executions(self, case: str) -> list[dict]:
        """Every execution Workflows has of the case's job, read from their arguments."""
        runs, params = [], {"view": "FULL", "pageSize": 1000}
        while True:
            page = requests.get(f"{self.stack.api.url}/v1/{WORKFLOW}/executions", params=params, headers=AUTH,
                                timeout=30).json()
            runs += [e for e in page.get("executions", []) if json.loads(e["argument"]).get("case") == case]
            if not page.get("nextPageToken"):
                return runs
            params["pageToken"] = page["nextPageToken"]

    def settled(self, case: str, count: int, timeout: float = 90) -> list[dict]:
        """The case's executions once `count` exist and all have ended (the queue's waiters start
        the waiting ones)."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.executions(case)
            if (len(runs) >= count and all(r["state"] not in ("ACTIVE", "QUEUED") for r in runs)) \
                    or time.monotonic() > deadline:
                assert len(runs) == count, [json.loads(r["argument"])["scheduleTime"] for r in runs]
                return runs
            time.sleep(0.5)

    def objects(self, prefix: str) -> list[dict]:
        return requests.get(f"{self.stack.storage.url}/storage/v1/b/{local_stack.RUNS_BUCKET}/o", headers=AUTH,
                            params={"prefix": prefix}, timeout=10).json().get("items", [])

    def record_state(self, case: str, instant: datetime) -> str:
        """The newest ledger attempt's state of the case's run at `instant`."""
        items = self.objects(f"runs/{local_stack.PROJECT}/{local_stack.LOCATION}/target/"
                             f"{instant.strftime('%Y-%m-%dT%H:%M:%S')}.000000Z/")
        return max(items, key=lambda item: item["name"])["metadata"].get("state", "CLAIMED")

    def queue_entries(self, case: str) -> list[str]:
        return [item["name"] for item in self.objects(f"runs/_queue/{local_stack.PROJECT}/{local_stack.LOCATION}/target/")
                if self._job_of(item) == case]

    def _job_of(self, item: dict) -> str | None:
        run = item["metadata"]["run"]
        record = self.objects(run)
        return json.loads(requests.get(
            f"{self.stack.storage.url}/storage/v1/b/{local_stack.RUNS_BUCKET}/o/{requests.utils.quote(record[0]['name'], safe='')}",
            params={"alt": "media"}, headers=AUTH, timeout=10).json()["argument"]).get("case") if record else None

    def wait(self, execution: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = requests.get(f"{self.stack.api.url}/v1/{execution}", headers=AUTH, timeout=10).json()
            if found["state"] not in ("ACTIVE", "QUEUED") or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def status(self, case: str, first: datetime, last: datetime) -> dict[str, dict]:
        done = subprocess.run([str(Path(sys.executable).parent / "wfr"), "--local-state", str(self.state), "status",
                               "target", "--start", z(first), "--stop", z(last + timedelta(minutes=1)), "--step", "* * * * *",
                               "--params", json.dumps({"case": case, "seconds": RUN_SECONDS}), "--format", "json"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, 3, 4, 5), done.stderr
        return {z(datetime.fromisoformat(t["scheduleTime"])): t for t in json.loads(done.stdout)["times"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from localcloud import up as local_up
    folder = tmp_path_factory.mktemp("workflows")
    (folder / "target.yaml").write_text(TARGET)
    state = tmp_path_factory.mktemp("state")
    stack = local_stack.start(state, folder, jobs=[], api_log=lambda entry: None, scheduler_log=lambda entry: None)
    (state / "endpoints.json").write_text(json.dumps(local_up.endpoints(stack)))
    try:
        yield World(stack, state)
    finally:
        stack.stop()


def test_a_time_delivered_while_the_previous_run_is_active_is_skipped(world):
    t1, t2, t3 = (BASE + timedelta(minutes=k) for k in range(3))
    first = world.deliver("skip", t1)
    assert first["started"] is True
    second = world.deliver("skip", t2)
    assert second["skipped"] is True and second["blockedBy"] == [first["name"]]
    assert [e["name"] for e in world.executions("skip")] == [first["name"]]   # no execution for t2
    assert world.deliver("skip", t2)["started"] is False                       # a retry changes nothing
    world.wait(first["name"])
    third = world.deliver("skip", t3)                                          # the slot is free again
    assert third["started"] is True
    world.wait(third["name"])
    states = world.status("skip", t1, t3)
    assert [states[z(t)]["state"] for t in (t1, t2, t3)] == ["succeeded", "skipped", "succeeded"]
    assert len(world.executions("skip")) == 2


def test_reprocess_none_leaves_a_skipped_time_alone_failed_and_completed_take_it(world):
    """The proxy's reprocess rule and its dry-run preview agree on a skipped time."""
    t1, t2 = BASE + timedelta(hours=1), BASE + timedelta(hours=1, minutes=1)
    first = world.deliver("reprocess", t1)
    assert world.deliver("reprocess", t2)["skipped"] is True
    world.wait(first["name"])
    url = f"{world.stack.proxy_url}/v1/{WORKFLOW}/executions"
    body = {"case": "reprocess", "seconds": RUN_SECONDS, "scheduleTime": z(t2)}
    for mode, expected in (("none", False), ("failed", True), ("completed", True)):
        preview = requests.post(url, params={"reprocess": mode, "dryRun": "true"}, json=body, headers=AUTH, timeout=30)
        assert preview.json()["runs"][0]["wouldStart"] is expected, (mode, preview.text)
    assert requests.post(url, params={"reprocess": "none"}, json=body, headers=AUTH, timeout=30).json()["started"] is False
    rerun = requests.post(url, params={"reprocess": "failed"}, json=body, headers=AUTH, timeout=30).json()
    assert rerun["started"] is True and rerun["labels"]["attempt"] == "2"
    world.wait(rerun["name"])


@pytest.mark.parametrize("trial", range(3))
def test_five_distinct_times_delivered_at_once_start_exactly_one_run(world, trial):
    case = f"race-{trial}"
    times = [BASE + timedelta(days=1 + trial, minutes=k) for k in range(5)]
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda instant: world.deliver(case, instant), times))
    assert sum(a.get("started") is True for a in answers) == 1, answers
    assert sum(a.get("skipped") is True for a in answers) == 4, answers
    assert len(world.executions(case)) == 1


def test_runs_started_by_backfills_and_reruns_count_toward_max_active(world):
    url = f"{world.stack.proxy_url}/v1/{WORKFLOW}/executions"
    backfilled = requests.post(url, params={"backfill": "bf-1"}, headers=AUTH, timeout=30, json={
        "case": "counted", "seconds": RUN_SECONDS, "scheduleTime": z(BASE + timedelta(days=9))}).json()
    assert backfilled["started"] is True
    answer = world.deliver("counted", BASE + timedelta(days=10))
    assert answer["skipped"] is True and answer["blockedBy"] == [backfilled["name"]]
    world.wait(backfilled["name"])


def test_max_active_two_lets_two_run_at_once(world):
    times = [BASE + timedelta(days=20, minutes=k) for k in range(3)]
    answers = [world.deliver("two", instant, "overlap=skip&maxActive=2") for instant in times]
    assert [a.get("started") for a in answers] == [True, True, False] and answers[2]["skipped"] is True


def test_without_a_setting_overlapping_runs_both_start(world):
    times = [BASE + timedelta(days=30, minutes=k) for k in range(2)]
    answers = [world.deliver("allow", instant, "overlap=allow") for instant in times]
    assert all(a["started"] for a in answers)
    assert sum(e["state"] == "ACTIVE" for e in world.executions("allow")) == 2


def test_replace_cancels_the_running_run_and_the_new_time_runs(world):
    t1, t2 = BASE + timedelta(days=40), BASE + timedelta(days=40, minutes=1)
    first = world.deliver("replace", t1, "overlap=replace")
    assert first["started"] is True
    second = world.deliver("replace", t2, "overlap=replace")
    assert second["started"] is True and second["name"] != first["name"]
    assert world.wait(first["name"])["state"] == "CANCELLED"
    assert world.wait(second["name"])["state"] == "SUCCEEDED"
    states = world.status("replace", t1, t2)
    assert [states[z(t)]["state"] for t in (t1, t2)] == ["cancelled", "succeeded"]


@pytest.mark.parametrize("trial", range(3))
def test_replace_with_one_time_delivered_several_times_at_once_starts_it_once(world, trial):
    """Cloud Scheduler may deliver a time more than once: under replace, the copies that find the
    time's own slot taken after cancelling are answered by its run (200), and it runs once."""
    case = f"replace-twice-{trial}"
    t1, t2 = BASE + timedelta(days=42 + trial), BASE + timedelta(days=42 + trial, minutes=1)
    first = world.deliver(case, t1, "overlap=replace")
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: world.deliver(case, t2, "overlap=replace"), range(4)))
    assert len({a["name"] for a in answers}) == 1 and sum(a["started"] for a in answers) == 1, answers
    assert world.wait(first["name"])["state"] == "CANCELLED"
    assert [e["name"] for e in world.executions(case) if e["name"] != first["name"]] == [answers[0]["name"]]
    world.wait(answers[0]["name"])


def _spans(runs: list[dict]) -> list[tuple[datetime, datetime, str]]:
    """(start, end, scheduleTime) of each run, by start, from the Executions API."""
    def at(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    return sorted((at(r["startTime"]), at(r["endTime"]), json.loads(r["argument"])["scheduleTime"]) for r in runs)


def _most_at_once(spans) -> int:
    edges = sorted([(s, 1) for s, _, _ in spans] + [(e, -1) for _, e, _ in spans])  # an end before a start at a tie
    most = active = 0
    for _, step in edges:
        active += step
        most = max(most, active)
    return most


def test_queue_runs_three_times_delivered_a_second_apart_in_order_none_overlapping(world):
    times = [BASE + timedelta(days=50, minutes=k) for k in range(3)]

    def deliver(k: int) -> dict:
        time.sleep(k)
        return world.deliver("queue", times[k], "overlap=queue")
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(deliver, range(3)))
    # The first starts; the others are answered at once, queued (their waiters deliver them again).
    assert answers[0]["started"] is True and [a.get("queued") for a in answers[1:]] == [True, True], answers
    assert [world.record_state("queue", t) for t in times[1:]] == ["WAITING", "WAITING"]
    runs = world.settled("queue", 3)
    assert all(r["state"] == "SUCCEEDED" for r in runs)
    spans = _spans(runs)
    assert [datetime.fromisoformat(s) for _, _, s in spans] == times        # in order
    assert _most_at_once(spans) == 1                                         # none overlapping
    # Each started within the documented bound after the slot freed (two polls of 1 s locally),
    # far inside the 60 s the proxy's own request may last.
    assert all((start - end).total_seconds() < 10 for (_, end, _), (start, _, _) in zip(spans, spans[1:])), spans
    assert "WAITING" not in [world.record_state("queue", t) for t in times]   # each taken over by its run
    assert world.queue_entries("queue") == []


def test_queue_with_max_active_two_runs_five_at_once_never_more_than_two(world):
    times = [BASE + timedelta(days=51, minutes=k) for k in range(5)]
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda t: world.deliver("queue-2", t, "overlap=queue&maxActive=2"), times))
    # At most two start at once (fewer when a delivery finds an earlier time queued: it queues behind).
    started = sum(bool(a.get("started")) for a in answers)
    assert 1 <= started <= 2 and sum(bool(a.get("queued")) for a in answers) == 5 - started, answers
    runs = world.settled("queue-2", 5)
    assert all(r["state"] == "SUCCEEDED" for r in runs)
    assert _most_at_once(_spans(runs)) == 2
    # The queued ones started oldest first.
    queued = {t for t, a in zip(times, answers) if a.get("queued")}
    order = [datetime.fromisoformat(s) for _, _, s in _spans(runs)]
    assert [t for t in order if t in queued] == sorted(queued)


def test_queue_a_repeated_delivery_of_a_waiting_time_neither_starts_it_nor_queues_it_twice(world):
    times = [BASE + timedelta(days=52, minutes=k) for k in range(2)]
    assert world.deliver("queue-again", times[0], "overlap=queue")["started"] is True
    first = world.deliver("queue-again", times[1], "overlap=queue")
    again = world.deliver("queue-again", times[1], "overlap=queue")   # Cloud Scheduler's retry
    assert first["queued"] is True and again["queued"] is True and "waiter" in first and "waiter" not in again
    assert len(world.queue_entries("queue-again")) == 1
    runs = world.settled("queue-again", 2)
    assert sorted(datetime.fromisoformat(json.loads(r["argument"])["scheduleTime"]) for r in runs) == times
    assert "WAITING" not in [world.record_state("queue-again", t) for t in times]


def test_queue_is_bounded_past_it_a_time_is_skipped_and_says_so(world):
    source = (Path(__file__).resolve().parent.parent / "functions" / "proxy" / "job_queue.py").read_text()
    MAX_QUEUED = int(re.search(r"^MAX_QUEUED = (\d+)", source, re.M)[1])  # noqa: N806 (the proxy's constant)
    times = [BASE + timedelta(days=53, minutes=k) for k in range(MAX_QUEUED + 2)]
    answers = [world.deliver("queue-full", t, "overlap=queue", seconds=1) for t in times]
    assert answers[0]["started"] is True
    assert [a.get("queued") for a in answers[1:-1]] == [True] * MAX_QUEUED
    assert answers[-1]["skipped"] is True and any("queue is full" in b for b in answers[-1]["blockedBy"]), answers[-1]
    assert world.record_state("queue-full", times[-1]) == "SKIPPED"
    runs = world.settled("queue-full", MAX_QUEUED + 1, timeout=120)
    assert all(r["state"] == "SUCCEEDED" for r in runs) and _most_at_once(_spans(runs)) == 1
    assert [datetime.fromisoformat(s) for _, _, s in _spans(runs)] == times[:-1]


def test_a_skipped_time_is_never_late(world):
    """The audit's `late` (docs/alerts.md) does not apply to a time its job's policy skipped."""
    from workflows_runner import ledger, status
    t1, t2 = BASE + timedelta(days=60), BASE + timedelta(days=60, minutes=1)
    first = world.deliver("late", t1)
    assert world.deliver("late", t2)["skipped"] is True
    world.wait(first["name"])
    records = [r for r in (ledger.parse(item) for item in requests.get(
        f"{world.stack.storage.url}/storage/v1/b/{local_stack.RUNS_BUCKET}/o", headers=AUTH, timeout=10,
        params={"prefix": f"runs/{local_stack.PROJECT}/{local_stack.LOCATION}/target/{ledger.instant_key(t2)}"}).json()["items"])
        if r is not None]
    (skipped,) = records
    assert skipped.state == "SKIPPED"
    assert status.is_late(skipped, t2 + timedelta(minutes=1), datetime.now(timezone.utc)) is False


def _active(world, case: str) -> list[str]:
    return sorted(e["name"] for e in world.executions(case) if e["state"] in ("ACTIVE", "QUEUED"))


def _cancel(world, execution: str) -> None:
    requests.post(f"{world.stack.api.url}/v1/{execution}:cancel", json={}, headers=AUTH, timeout=10).raise_for_status()
    assert world.wait(execution)["state"] == "CANCELLED"


def test_a_run_holding_a_slot_is_counted_once(world):
    """maxActive=2: a run is both its slot's (which names its run, not its execution) and an
    ACTIVE execution of the job: one run, not two, so a second starts and a third is skipped."""
    t1, t2, t3 = (BASE + timedelta(days=70, minutes=k) for k in range(3))
    first = world.deliver("once", t1, "overlap=skip&maxActive=2")
    assert first["started"] is True
    second = world.deliver("once", t2, "overlap=skip&maxActive=2")
    assert second["started"] is True, second
    third = world.deliver("once", t3, "overlap=skip&maxActive=2")
    assert third.get("skipped") is True and sorted(third["blockedBy"]) == sorted([first["name"], second["name"]])
    assert _active(world, "once") == sorted([first["name"], second["name"]])


@pytest.mark.parametrize("trial", range(3))
def test_five_distinct_times_delivered_at_once_under_max_active_two_start_exactly_two(world, trial):
    case = f"race-two-{trial}"
    times = [BASE + timedelta(days=71 + trial, minutes=k) for k in range(5)]
    with ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda instant: world.deliver(case, instant, "overlap=skip&maxActive=2"), times))
    assert sum(a.get("started") is True for a in answers) == 2, answers
    assert sum(a.get("skipped") is True for a in answers) == 3, answers
    assert len(_active(world, case)) == 2


def test_a_retried_delivery_of_a_failed_time_counts_runs_without_a_slot(world):
    """reprocess=failed: Cloud Scheduler's retry of a time whose run ended CANCELLED re-runs it
    only while fewer than maxActive runs of the job are active, a backfilled run included, even
    though the time's own slot still names it."""
    query, case = "overlap=skip&reprocess=failed", "retry-own-slot"
    t0, t1 = BASE + timedelta(days=80), BASE + timedelta(days=80, minutes=1)
    first = world.deliver(case, t1, query)
    _cancel(world, first["name"])
    backfilled = requests.post(f"{world.stack.proxy_url}/v1/{WORKFLOW}/executions", params={"backfill": "bf-2"},
                               headers=AUTH, timeout=30,
                               json={"case": case, "seconds": RUN_SECONDS, "scheduleTime": z(t0)}).json()
    assert backfilled["started"] is True
    again = world.deliver(case, t1, query)
    assert again["started"] is False and again["name"] == first["name"], again
    assert _active(world, case) == [backfilled["name"]]
    world.wait(backfilled["name"])
    rerun = world.deliver(case, t1, query)                              # a slot is free now: it re-runs
    assert rerun["started"] is True and rerun["labels"]["attempt"] == "2"
    world.wait(rerun["name"])


def test_a_retried_delivery_of_a_failed_time_is_held_to_max_active(world):
    """reprocess=failed: while another time of the job holds the slot, the retry of a time whose
    run ended CANCELLED starts nothing (it answers the time's run as it is)."""
    query, case = "overlap=skip&reprocess=failed", "retry-blocked"
    t1, t2 = BASE + timedelta(days=81), BASE + timedelta(days=81, minutes=1)
    first = world.deliver(case, t1, query)
    _cancel(world, first["name"])
    second = world.deliver(case, t2, query)
    assert second["started"] is True
    again = world.deliver(case, t1, query)
    assert again["started"] is False and again["name"] == first["name"], again
    assert _active(world, case) == [second["name"]]
    world.wait(second["name"])


def test_a_slot_another_proxy_instance_took_is_never_judged_from_memory(world):
    """A proxy instance remembers the slot it took (slots.remember) and the next delivery it gets
    reads the slot from memory. Here two instances take turns with one job (maxActive=1): each
    time one of them remembers a slot the other has taken since, holding a run still active,
    and each such delivery is still skipped, never started beside it."""
    port = local_stack.free_port()
    other = local_stack.start_function("proxy", "proxy", port, env={
        "WORKFLOWS_API": world.stack.api.url, "GOOGLE_CLOUD_PROJECT": local_stack.PROJECT,
        "RUNS_BUCKET": local_stack.RUNS_BUCKET, "STORAGE_API": world.stack.storage.url})
    try:
        proxies = [world.stack.proxy_url, f"http://127.0.0.1:{port}"]
        started = []
        for k in range(4):   # A starts, B skipped; B starts, A skipped (remembering its own ended slot); ...
            here, there = proxies[k % 2], proxies[(k + 1) % 2]
            first = world.deliver("instances", BASE + timedelta(days=80, minutes=2 * k), via=here)
            assert first["started"] is True, (k, first)
            started.append(first["name"])
            blocked = world.deliver("instances", BASE + timedelta(days=80, minutes=2 * k + 1), via=there)
            assert blocked.get("skipped") is True and blocked["blockedBy"] == [first["name"]], (k, blocked)
            assert world.wait(first["name"])["state"] == "SUCCEEDED"
        runs = world.executions("instances")
        assert sorted(r["name"] for r in runs) == sorted(started)
        assert _most_at_once(_spans(runs)) == 1
    finally:
        local_stack.stop_process(other)
