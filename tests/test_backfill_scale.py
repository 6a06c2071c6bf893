"""The backfill at real scale inside Google's limits (issue 24), at a scaled step limit: localcloud
stops an execution past LOCALCLOUD_STEP_LIMIT steps (1,000 here for Google's 100,000,
https://cloud.google.com/workflows/quotas#resource_limits) and the backfill's STEP_BUDGET is 800
(80,000 deployed). Every test checks that each time ran exactly once, counted in the Executions
API, and that the summary's counts are exact."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from localcloud import stack as local_stack
from localcloud.google_http import ApiError
from tests.test_backfill_e2e import AUTH, PARENT, ended, example_runs, scheduled, start_backfill

STEP_LIMIT, STEP_BUDGET = 1000, 800
START = datetime(2025, 1, 1, tzinfo=timezone.utc)


def minutes(count: int) -> list[str]:
    return [(START + timedelta(minutes=n)).isoformat() for n in range(count)]


def window(count: int, **options) -> dict:
    return {"workflow": "example", "start": START.isoformat(),
            "stop": (START + timedelta(minutes=count)).isoformat(), "step": "* * * * *", **options}


class Stack:
    """A local stack at the scaled step limit that records each execution's steps."""

    def __init__(self, tmp_path, monkeypatch, workflows_dir=local_stack.ROOT / "workflows", **env):
        monkeypatch.setenv("LOCALCLOUD_STEP_LIMIT", str(STEP_LIMIT))
        self.steps: dict[str, int] = {}
        self.stack = local_stack.start(tmp_path / "state", workflows_dir, api_log=self.collect,
                                       backfill_env={"STEP_BUDGET": str(STEP_BUDGET), **env})

    def collect(self, entry: dict) -> None:
        if "steps" in entry:
            self.steps[entry["execution"]] = entry["steps"]

    def chain(self, argument: dict, timeout: float = 240) -> list[dict]:
        """Every link of one backfill, in order, once ended (a link names its successor)."""
        links = [ended(self.stack, start_backfill(self.stack, argument), timeout)]
        while links[-1]["state"] == "SUCCEEDED" and "continued" in json.loads(links[-1]["result"]):
            link = ended(self.stack, json.loads(links[-1]["result"])["continued"], timeout)
            if link["state"] == "SUCCEEDED" and "duplicateOf" in json.loads(link["result"]):
                # A second execution of the link (a retried create): the one that claimed it works.
                claimant = json.loads(link["result"])["duplicateOf"]
                link = ended(self.stack, f"{PARENT}/backfill/executions/{claimant}", timeout)
            links.append(link)
        assert [link["state"] for link in links] == ["SUCCEEDED"] * len(links), links[-1].get("error")
        return links


@pytest.fixture
def scaled(tmp_path, monkeypatch):
    made = Stack(tmp_path, monkeypatch)
    yield made
    made.stack.stop()


def final(links: list[dict]) -> dict:
    return json.loads(links[-1]["result"])


def once_each(stack, case: str, times: list[str]) -> list[dict]:
    runs = example_runs(stack, case)
    assert sorted(scheduled(run) for run in runs) == sorted(times)     # each time exactly once
    return runs


@pytest.mark.timeout(300)
def test_runs_of_40_seconds_followed_at_concurrency_5_cost_the_same_steps_as_quick_ones(scaled):
    """Issue 24 item 1: each run was polled on its own, so 40 s runs passed the step limit. The
    backfill looks at all runs in flight at once: its steps per time do not grow with duration."""
    times = minutes(5)
    links = scaled.chain(window(5, concurrency=5, params={"case": "forty", "sleepSeconds": 40}))
    once_each(scaled.stack, "forty", times)
    result = final(links)
    assert (result["planned"], result["started"], result["failed"], result["notStarted"]) == (5, 5, 0, 0)
    per_time = sum(scaled.steps[link["name"]] for link in links) / 5
    # About 90 steps to begin and end, then ~7 per time (bench/bench_backfill_cost.py); per-run
    # polling (0.5 s doubling to 30 s, 4 steps a look) cost ~55 per time for 40 s runs.
    assert per_time < 35, per_time


@pytest.mark.timeout(300)
def test_31_kb_params_cross_links_and_each_link_ends_before_its_successor(scaled):
    """Issue 24 item 4: the continuation's argument carried the input and passed 32 KB. Now the
    state goes through the runs bucket and the argument stays small."""
    params = {"case": "big", "blob": "x" * 31_000}
    times = minutes(120)
    links = scaled.chain(window(120, concurrency=5, params=params, pageSize=100))
    assert len(links) >= 2
    assert all(len(link["argument"]) < 4096 for link in links[1:])
    assert all(link["endTime"] < nxt["endTime"] for link, nxt in zip(links, links[1:]))
    # Every link kept within its budget (the estimate it adds up errs on the safe side).
    assert all(steps <= STEP_BUDGET for steps in (scaled.steps[link["name"]] for link in links))
    runs = once_each(scaled.stack, "big", times)
    assert all(json.loads(run["argument"])["blob"] == params["blob"] for run in runs[:3])
    result = final(links)
    assert (result["planned"], result["started"], result["failed"], result["links"]) == (120, 120, 0, len(links))


@pytest.mark.timeout(300)
def test_a_retried_continuation_does_not_fork_the_chain(scaled):
    """Issue 24 item 2: the create of link 1 lands but its answer is lost (503), so the connector
    creates it again. Both start; the one that claims backfills/ID/1.claim second does nothing."""
    executions = scaled.stack.api.executions
    real_create, lost = executions.create, []

    def create_losing_the_first_continuations_answer(project, location, workflow_id, body):
        created = real_create(project, location, workflow_id, body)
        if workflow_id == "backfill" and '"continuation"' in (body.get("argument") or "") and not lost:
            lost.append(created["name"])
            raise ApiError(503, "the answer was lost", "UNAVAILABLE")
        return created
    executions.create = create_losing_the_first_continuations_answer
    times = minutes(200)
    links = scaled.chain(window(200, concurrency=3, wait=False, params={"case": "fork"}, pageSize=100))
    first_id = links[0]["name"].rsplit("/", 1)[-1]
    labelled = requests.get(f"{scaled.stack.api.url}/v1/{PARENT}/backfill/executions", headers=AUTH, timeout=10,
                            params={"view": "FULL", "filter": f'labels.backfill="{first_id}" AND labels.backfill_link="1"'}).json()
    twins = [ended(scaled.stack, e["name"], 60) for e in labelled["executions"]]
    assert lost and len(twins) == 2                      # the fault happened: two link-1 executions
    outcomes = sorted("duplicateOf" in json.loads(twin["result"]) for twin in twins)
    assert outcomes == [False, True]                     # one did the work, one did nothing
    from workflows_runner.backfills import links_in_order
    chain = requests.get(f"{scaled.stack.api.url}/v1/{PARENT}/backfill/executions", headers=AUTH, timeout=10,
                         params={"view": "FULL", "filter": f'labels.backfill="{first_id}"'}).json()["executions"]
    assert [e["name"] for e in links_in_order(chain)] == [link["name"] for link in links[1:]]   # as wfr reads it
    once_each(scaled.stack, "fork", times)
    result = final(links)
    assert (result["planned"], result["started"], result["skipped"], result["failed"]) == (200, 200, 0, 0)


class HoldingRelay:
    """Between the backfill and the proxy: answers 409 ABORTED with Google's RetryInfo (1 s) for a
    time while `held(time, n)` says so (n: the how-many-th request for that time), else forwards."""

    def __init__(self, held):
        self.target, self.seen, lock = None, {}, threading.Lock()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time_ = json.loads(body).get("scheduleTime")
                with lock:
                    relay.seen[time_] = n = relay.seen.get(time_, 0) + 1
                if held(time_, n):
                    data = json.dumps({"error": {"code": 409, "status": "ABORTED", "message": "held", "details": [
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}]}}).encode()
                    code = 409
                else:
                    answer = requests.post(relay.target + self.path, data=body, timeout=60,
                                           headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                    code, data = answer.status_code, answer.content
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


@pytest.mark.timeout(300)
def test_a_time_another_start_holds_is_retried_and_never_counted_skipped(tmp_path, monkeypatch):
    """Issue 23 "a time is never lost": a 409 with RetryInfo is tried again after its delay within
    the same backfill; a time still held after 4 more rounds is reported in notStarted, with its time."""
    times = minutes(6)
    relay = HoldingRelay(lambda time_, n: time_ == times[1] and n <= 2 or time_ == times[4])
    made = Stack(tmp_path, monkeypatch, PROXY_URL=relay.url)
    relay.target = made.stack.proxy_url
    try:
        links = made.chain(window(6, concurrency=2, params={"case": "held"}))
        runs = example_runs(made.stack, "held")
    finally:
        made.stack.stop()
        relay.server.shutdown()
    assert sorted(scheduled(run) for run in runs) == sorted(t for t in times if t != times[4])
    result = final(links)
    assert (result["planned"], result["started"], result["skipped"], result["failed"]) == (6, 5, 0, 0)
    assert (result["notStarted"], result["notStartedTimes"]) == (1, [times[4]])
    assert relay.seen[times[1]] == 3 and relay.seen[times[4]] == 5     # held twice, then started; 5 tries


@pytest.mark.timeout(300)
def test_a_page_of_1000_failing_runs_with_long_names_and_6_kb_params_fits_in_memory(tmp_path, monkeypatch):
    """Issue 24 item 3: one name kept per time passed 512 KB with 63-character workflow ids and
    1.5 KB params. Only counts and bounded samples are kept now. Google's step limit here."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    workflow = "f" * 63
    (folder / f"{workflow}.yaml").write_text('main:\n  params: [input]\n  steps:\n    - fail:\n        raise: "failing on purpose"\n')
    monkeypatch.setenv("LOCALCLOUD_STEP_LIMIT", "100000")
    stack = local_stack.start(tmp_path / "state", folder, api_log=lambda entry: None)
    try:
        argument = {**window(1000, concurrency=50, pageSize=1000, params={"case": "memory", "blob": "y" * 6000}),
                    "workflow": workflow}
        result = json.loads(ended(stack, start_backfill(stack, argument), 280)["result"])
        count = 0
        token = None
        while True:
            page = requests.get(f"{stack.api.url}/v1/{PARENT}/{workflow}/executions", headers=AUTH, timeout=30,
                                params={"pageSize": 1000, **({"pageToken": token} if token else {})}).json()
            count += len(page.get("executions", []))
            token = page.get("nextPageToken")
            if not token:
                break
    finally:
        stack.stop()
    assert count == 1000
    assert (result["planned"], result["started"], result["failed"], result["links"]) == (1000, 1000, 1000, 1)
    assert len(result["firstFailures"]) == 20 and len(result["executions"]) == 20


@pytest.mark.timeout(300)
def test_past_the_concurrency_quota_and_backlog_runs_still_start_once_each(tmp_path, monkeypatch):
    """Workflows backlogs executions past the concurrency quota (QUEUED) and answers 429 past the
    backlog (https://cloud.google.com/workflows/quotas). Lowered here to 3 running (the backfill is
    one of them) and 2 backlogged: the proxy and the backfill treat the 429 as transient."""
    monkeypatch.setenv("LOCALCLOUD_CONCURRENT_EXECUTIONS", "3")
    monkeypatch.setenv("LOCALCLOUD_BACKLOG", "2")
    made = Stack(tmp_path, monkeypatch)
    refusals = []
    real_create = made.stack.api.executions.create

    def counting(project, location, workflow_id, body):
        try:
            return real_create(project, location, workflow_id, body)
        except ApiError as error:
            refusals.append(error.code)
            raise
    made.stack.api.executions.create = counting
    try:
        times = minutes(12)
        links = made.chain(window(12, concurrency=8, wait=False, params={"case": "quota", "sleepSeconds": 0.5}))
        runs = [ended(made.stack, run["name"], 60) for run in once_each(made.stack, "quota", times)]
    finally:
        made.stack.stop()
    assert 429 in refusals                                    # the quota was met, and 429 answered
    assert all(run["state"] == "SUCCEEDED" for run in runs)
    result = final(links)
    assert (result["planned"], result["started"], result["failed"], result["notStarted"]) == (12, 12, 0, 0)


def test_wfr_counts_a_link_started_twice_once():
    """The execution that found its link already claimed is no link of the chain for wfr."""
    from workflows_runner.backfills import links_in_order
    link = lambda n, result, name: {"name": name, "state": "SUCCEEDED", "labels": {"backfill_link": str(n)},
                                    "result": json.dumps(result)}
    continuations = [link(2, {"planned": 9}, "c"), link(1, {"duplicateOf": "a", "link": 1}, "b"),
                     link(1, {"continued": "c"}, "a")]
    assert [e["name"] for e in links_in_order(continuations)] == ["a", "c"]
