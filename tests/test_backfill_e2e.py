"""workflows/backfill.yaml end to end on the local stack: the local Executions API running the
workflow, both functions under functions-framework, real HTTP everywhere. Each test starts
backfill executions through the API and asserts on the runs of `example` that exist afterwards.
Tests share one stack; each gives its runs its own `params` ("case"), so runs never mix."""
from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import pytest
import requests

from localcloud import stack as local_stack

AUTH = {"Authorization": "Bearer test"}
PARENT = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    started = local_stack.start(tmp_path_factory.mktemp("state"), api_log=lambda entry: None)
    yield started
    started.stop()


def start_backfill(stack, argument: dict) -> str:
    created = requests.post(f"{stack.api.url}/v1/{PARENT}/backfill/executions",
                            json={"argument": json.dumps(argument)}, headers=AUTH, timeout=10)
    assert created.status_code == 200, created.text
    return created.json()["name"]


def ended(stack, name: str, timeout: float) -> dict:
    """The Execution `name` once it has ended, read back over HTTP."""
    stack.api.executions.wait(name, timeout=timeout)
    return requests.get(f"{stack.api.url}/v1/{name}", headers=AUTH, timeout=10).json()


def backfill(stack, argument: dict) -> dict:
    """Run one backfill execution to its end; the final Execution."""
    return ended(stack, start_backfill(stack, argument), timeout=120)


def summary(execution: dict) -> dict:
    assert execution["state"] == "SUCCEEDED", execution.get("error")
    return json.loads(execution["result"])


def all_example_runs(stack) -> list[dict]:
    """Every execution of `example`, oldest first."""
    runs, token = [], None
    while True:
        params = {"view": "FULL", "pageSize": 100, "orderBy": "createTime asc", **({"pageToken": token} if token else {})}
        page = requests.get(f"{stack.api.url}/v1/{PARENT}/example/executions", params=params,
                            headers=AUTH, timeout=30).json()
        runs += page.get("executions", [])
        token = page.get("nextPageToken")
        if not token:
            return runs


def example_runs(stack, case: str) -> list[dict]:
    """The executions of `example` whose argument carries this case, oldest first."""
    return [run for run in all_example_runs(stack) if json.loads(run["argument"]).get("case") == case]


def finished(stack, runs: list[dict]) -> list[dict]:
    return [ended(stack, run["name"], timeout=30) for run in runs]


def scheduled(run: dict) -> str:
    return json.loads(run["argument"])["scheduleTime"]


def daily(first: date, days: int, hour: int, zone: str) -> list[str]:
    """The oracle: hour:00 local on each day, written as the proxy writes times (offset of the zone)."""
    return [datetime(d.year, d.month, d.day, hour, tzinfo=ZoneInfo(zone)).isoformat()
            for d in (first + timedelta(n) for n in range(days))]


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------------- happy paths

def test_three_days_across_a_dst_change_start_three_runs_with_their_times(stack):
    # Europe/Stockholm moves to +02:00 on 2024-03-31 at 02:00: the 01:00 runs straddle it.
    argument = {"workflow": "example", "start": "2024-03-30T00:00:00", "stop": "2024-04-02T00:00:00",
                "step": "0 1 * * *", "timezone": "Europe/Stockholm", "params": {"case": "dst"}}
    result = summary(backfill(stack, argument))
    runs = finished(stack, example_runs(stack, "dst"))

    expected = daily(date(2024, 3, 30), 3, 1, "Europe/Stockholm")
    assert expected == ["2024-03-30T01:00:00+01:00", "2024-03-31T01:00:00+01:00", "2024-04-01T01:00:00+02:00"]
    assert sorted(scheduled(run) for run in runs) == expected
    assert all(json.loads(run["argument"]) == {"case": "dst", "scheduleTime": scheduled(run)} for run in runs)
    assert all(json.loads(run["result"]) == {"scheduleTime": scheduled(run)} for run in runs)
    assert {k: v for k, v in result.items() if k != "executions"} == {
        "planned": 3, "started": 3, "skipped": 0, "failed": 0, "notStarted": 0, "notStartedTimes": [],
        "firstFailures": [], "links": 1}
    assert sorted(result["executions"]) == sorted(run["name"] for run in runs)


def test_second_backfill_with_reprocess_none_starts_nothing(stack):
    argument = {"workflow": "example", "start": "2024-01-01T00:00:00Z", "stop": "2024-01-04T00:00:00Z",
                "step": "@daily", "params": {"case": "twice"}, "concurrency": 3}
    assert summary(backfill(stack, argument))["started"] == 3
    finished(stack, example_runs(stack, "twice"))
    # The same backfill again, naming the workflow in full through the `parent` alias.
    again = {**{k: v for k, v in argument.items() if k != "workflow"}, "parent": f"{PARENT}/example"}
    second = summary(backfill(stack, again))

    assert (second["planned"], second["started"], second["skipped"], second["failed"]) == (3, 0, 3, 0)
    assert second["executions"] == []
    assert len(example_runs(stack, "twice")) == 3


def test_reprocess_failed_reruns_only_the_failed_day_and_wait_counts_it_failed(stack):
    days = daily(date(2024, 2, 1), 3, 0, "UTC")
    params = {"case": "failed-day", "failFor": [days[1]]}
    argument = {"workflow": "example", "start": "2024-02-01T00:00:00Z", "stop": "2024-02-04T00:00:00Z",
                "step": "0 0 * * *", "params": params, "wait": False}
    first = summary(backfill(stack, argument))
    states = {scheduled(run): run["state"] for run in finished(stack, example_runs(stack, "failed-day"))}
    assert first["started"] == 3 and first["failed"] == 0    # without wait, endings are not watched
    assert states == {days[0]: "SUCCEEDED", days[1]: "FAILED", days[2]: "SUCCEEDED"}

    rerun = summary(backfill(stack, {**argument, "reprocess": "failed", "wait": True}))
    runs = example_runs(stack, "failed-day")
    assert sorted(scheduled(run) for run in runs) == sorted(days + [days[1]])
    assert (rerun["started"], rerun["skipped"], rerun["failed"]) == (1, 2, 1)
    assert [f["scheduleTime"] for f in rerun["firstFailures"]] == [days[1]]
    assert "FAILED" in rerun["firstFailures"][0]["error"]
    assert rerun["executions"] == [runs[-1]["name"]]


def test_a_run_started_by_cloud_scheduler_counts_as_done(stack):
    params = {"case": "scheduled"}
    delivered = requests.post(stack.proxy_path("example"), params={"timezone": "UTC"}, json=params,
                              headers={"X-CloudScheduler-ScheduleTime": "2024-05-02T06:00:00Z"}, timeout=30)
    assert delivered.status_code == 200 and delivered.json()["started"] is True, delivered.text
    ended_backfill = backfill(stack, {"workflow": "example", "start": "2024-05-01T00:00:00Z",
                                      "stop": "2024-05-04T00:00:00Z", "step": "0 6 * * *", "params": params})
    result = summary(ended_backfill)

    runs = example_runs(stack, "scheduled")
    assert (result["started"], result["skipped"]) == (2, 1)
    assert sorted(scheduled(run) for run in runs) == daily(date(2024, 5, 1), 3, 6, "UTC")
    assert [run["labels"]["trigger"] for run in runs] == ["scheduler", "backfill", "backfill"]
    backfill_id = ended_backfill["name"].rsplit("/", 1)[1]
    assert [run["labels"].get("backfill") for run in runs] == [None, backfill_id, backfill_id]


def test_order_desc_starts_the_newest_time_first(stack):
    result = summary(backfill(stack, {"workflow": "example", "start": "2024-06-01T00:00:00Z",
                                      "stop": "2024-06-06T00:00:00Z", "step": "@daily",
                                      "order": "desc", "params": {"case": "desc"}}))
    runs = sorted(example_runs(stack, "desc"), key=lambda run: instant(run["createTime"]))
    assert result["started"] == 5
    assert [scheduled(run) for run in runs] == daily(date(2024, 6, 1), 5, 0, "UTC")[::-1]


def test_concurrency_two_with_wait_never_has_more_than_two_runs_active(stack):
    argument = {"workflow": "example", "start": "2024-07-01T00:00:00Z", "stop": "2024-07-01T06:00:00Z",
                "step": "0 * * * *", "concurrency": 2, "wait": True,
                "params": {"case": "two-at-a-time", "sleepSeconds": 0.3}}
    result = summary(backfill(stack, argument))
    runs = finished(stack, example_runs(stack, "two-at-a-time"))
    assert result["started"] == 6 and all(run["state"] == "SUCCEEDED" for run in runs)
    # Sweep over start (+1) and end (-1) instants; at equal instants an end comes first.
    events = sorted([(instant(r["startTime"]), 1) for r in runs] + [(instant(r["endTime"]), -1) for r in runs])
    most = max(itertools.accumulate(change for _, change in events))
    assert most == 2     # two slots used, never a third


def test_concurrency_forty_with_wait_runs_forty_at_once(stack):
    """Issue 28: a parallel step runs at most 20 branches at once, so 40 workers used to peak at 20
    without a word. The runs in flight are now counted by the backfill, not by branches."""
    argument = {"workflow": "example", "start": "2024-07-02T00:00:00Z", "stop": "2024-07-02T00:40:00Z",
                "step": "* * * * *", "concurrency": 40, "wait": True,
                "params": {"case": "forty-at-once", "sleepSeconds": 8}}
    result = summary(backfill(stack, argument))
    runs = finished(stack, example_runs(stack, "forty-at-once"))
    assert result["started"] == 40 and all(run["state"] == "SUCCEEDED" for run in runs)
    events = sorted([(instant(r["startTime"]), 1) for r in runs] + [(instant(r["endTime"]), -1) for r in runs])
    assert max(itertools.accumulate(change for _, change in events)) == 40


def test_dry_run_previews_and_starts_nothing(stack):
    result = summary(backfill(stack, {"workflow": "example", "start": "2024-08-01T00:00:00+02:00",
                                      "stop": "2024-08-06T00:00:00+02:00", "step": "30 8 * * *",
                                      "timezone": "Europe/Paris", "pageSize": 2, "dryRun": True,
                                      "params": {"case": "dry"}}))
    times = [t.replace(minute=30).isoformat() for t in
             (datetime.fromisoformat(s) for s in daily(date(2024, 8, 1), 5, 8, "Europe/Paris"))]
    assert result == {"dryRun": True, "planned": 5, "wouldStart": 5, "firstToStart": times[0],
                      "first": times[0], "last": times[-1], "firstPage": times[:2]}
    assert example_runs(stack, "dry") == []


def test_cancelling_the_backfill_stops_further_starts(stack):
    argument = {"workflow": "example", "start": "2024-11-01T00:00:00Z", "stop": "2024-11-01T20:00:00Z",
                "step": "0 * * * *", "wait": True, "params": {"case": "cancel", "sleepSeconds": 0.3}}
    name = start_backfill(stack, argument)
    for _ in range(200):
        if example_runs(stack, "cancel"):
            break
        time.sleep(0.05)
    cancelled = requests.post(f"{stack.api.url}/v1/{name}:cancel", headers=AUTH, timeout=10)
    assert cancelled.status_code == 200, cancelled.text
    assert ended(stack, name, timeout=30)["state"] == "CANCELLED"

    started = finished(stack, example_runs(stack, "cancel"))
    assert 1 <= len(started) < 20
    assert len(example_runs(stack, "cancel")) == len(started)   # nothing started once it ended


# --------------------------------------------------------------------------- limits and faults

class FaultyRelay:
    """A loopback relay to `target` (set once known) that answers 503 to the requests `fault(n)`
    picks: "before" without forwarding, "after" once the target has handled it (a lost answer)."""

    def __init__(self, fault):
        self.target, self.count, self.faults, lock = None, 0, [], threading.Lock()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    relay.count += 1
                    kind = fault(relay.count)
                if kind:
                    relay.faults.append(kind)
                if kind != "before":
                    answer = requests.post(relay.target + self.path, data=body, timeout=60,
                                           headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                if kind:
                    self.reply(503, b'{"error": {"code": 503, "status": "UNAVAILABLE", "message": "relay fault"}}')
                else:
                    self.reply(answer.status_code, answer.content)

            def reply(self, code, data):
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

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_range_and_proxy_faults_are_retried_without_losing_or_repeating_a_time(tmp_path):
    range_relay = FaultyRelay(lambda n: "before" if n == 2 else None)
    proxy_relay = FaultyRelay(lambda n: {3: "before", 5: "after", 6: "before", 9: "after"}.get(n))
    stack = local_stack.start(tmp_path / "state", api_log=lambda entry: None,
                              backfill_env={"RANGE_URL": range_relay.url, "PROXY_URL": proxy_relay.url})
    range_relay.target, proxy_relay.target = stack.range_url, stack.proxy_url
    try:
        result = summary(backfill(stack, {"workflow": "example", "start": "2024-10-01T00:00:00Z",
                                          "stop": "2024-10-01T10:00:00Z", "step": "0 * * * *",
                                          "pageSize": 4, "concurrency": 2, "params": {"case": "faults"}}))
        runs = example_runs(stack, "faults")
    finally:
        stack.stop()
        range_relay.stop()
        proxy_relay.stop()
    assert range_relay.faults == ["before"] and sorted(proxy_relay.faults) == ["after", "after", "before", "before"]
    assert sorted(scheduled(run) for run in runs) == [f"2024-10-01T{h:02d}:00:00+00:00" for h in range(10)]
    # An answer lost after the run started: the retry finds that run and reports it as existing.
    assert (result["planned"], result["started"], result["skipped"], result["failed"]) == (10, 8, 2, 0)


# ------------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize(("argument", "message"), [
    ("not a map", "the argument must be a JSON object"),
    ({"workflow": "example", "start": "2024-01-01T00:00:00Z", "stop": "2024-01-02T00:00:00Z"},
     "step must be a string, got null"),
    ({"workflow": "example", "start": "2024-01-01T00:00:00Z", "stop": "2024-01-02T00:00:00Z",
      "step": "@daily", "concurrency": "2", "wait": 1}, "concurrency must be a number, got string"),
    ({"workflow": "example", "start": "2024-01-01T00:00:00Z", "stop": "2024-01-02T00:00:00Z",
      "step": "@daily", "wait": 1}, "wait must be a boolean, got number"),
    ({"workflow": "example", "start": "2024-01-01T00:00:00Z", "stop": "2024-01-02T00:00:00Z",
      "step": "@daily", "concurency": 2}, "unknown field 'concurency'"),
    ({"workflow": "example", "parent": "example", "start": "a", "stop": "b", "step": "@daily"},
     '"workflow" (or its alias "parent"), exactly once'),
    ({"workflow": "example", "start": "2024-01-01T00:00:00Z", "stop": "2024-01-02T00:00:00Z",
      "step": "@daily", "concurrency": 0}, "concurrency must be a whole number from 1 to 50"),
    ({"workflow": "example", "start": "2024-01-01T00:00:00Z", "stop": "2024-01-02T00:00:00Z",
      "step": "@daily", "reprocess": "all"}, "reprocess must be none, failed or completed"),
    ({"workflow": "projects/p/example", "start": "2024-01-01T00:00:00Z", "stop": "2024-01-02T00:00:00Z",
      "step": "@daily"}, "workflow must be a workflow id"),
    ({"workflow": "example", "start": "2024-01-01T00:00:00Z", "stop": "2024-01-02T00:00:00Z",
      "step": "0 0 30 2 *", "params": {"case": "bad-cron"}},
     "the range function refused the window: HTTP 400: step: never matches"),
    *[({"workflow": "example", "step": "@daily", "lookback": lookback, "scheduleTime": "2024-01-08T03:17:00Z"},
       "lookback must be an ISO 8601 duration") for lookback in ("P1M", "P", "PT", "P1DT", "7D", "P1.5D")],
    ({"workflow": "example", "step": "@daily", "lookback": "P7D"}, "lookback needs the scheduleTime the proxy adds"),
    # Issue 28: what a backfill would silently ignore, or must not take from a user, is refused.
    ({"workflow": "example", "start": "2024-01-01T00:00:00Z", "stop": "2024-01-02T00:00:00Z", "step": "@daily",
      "scheduleTime": "2024-01-08T03:17:00Z"}, "scheduleTime is read only with lookback"),
    ({"workflow": "example", "start": "2024-01-01T00:00:00Z", "stop": "2024-01-02T00:00:00Z", "step": "@daily",
      "continuation": {"backfill": "x", "link": 1, "key": "k"}}, '"continuation" is written by the backfill itself'),
    ({"continuation": {"backfill": "made-up", "link": 1, "key": "guessed", "started": 5}},
     "was not handed over by that backfill"),
    ({"workflow": "example", "step": "@daily", "lookback": "P7D", "start": "2024-01-01T00:00:00Z",
      "scheduleTime": "2024-01-08T03:17:00Z"}, "lookback takes the place of start and stop"),
    ({"workflow": "example", "step": "@daily", "lookback": "P7D", "reprocess": "failed",
      "scheduleTime": "2024-01-08T03:17:00Z"}, "always runs with reprocess none"),
])
def test_a_bad_argument_fails_the_backfill_with_a_clear_message(stack, argument, message):
    before = [run["name"] for run in all_example_runs(stack)]
    execution = backfill(stack, argument)
    assert execution["state"] == "FAILED"
    assert message in json.loads(execution["error"]["payload"])["message"]
    assert [run["name"] for run in all_example_runs(stack)] == before


# ------------------------------------------------------------------------------------ catch-up

def deliver(stack, workflow: str, body: dict, schedule_time: str, timezone: str = "UTC") -> dict:
    """One Cloud Scheduler delivery to the proxy, as a job made by deploy.sh schedule sends it."""
    delivered = requests.post(stack.proxy_path(workflow), params={"timezone": timezone}, json=body,
                              headers={"X-CloudScheduler": "true", "X-CloudScheduler-JobName": "catch-up",
                                       "X-CloudScheduler-ScheduleTime": schedule_time}, timeout=60)
    assert delivered.status_code == 200, delivered.text
    return delivered.json()


def test_the_next_catch_up_run_starts_the_time_scheduler_missed(stack):
    params = {"case": "catch-up"}
    # The hourly job ran at 01:00 and 03:00; the 02:00 delivery never came.
    for hour in ("01", "03"):
        assert deliver(stack, "example", params, f"2024-08-01T{hour}:00:00Z")["started"] is True
    # The daily catch-up job's delivery at 04:00, with deploy.sh's body for --catch-up PT4H.
    catch_up = {"workflow": "example", "step": "0 * * * *", "timezone": "UTC", "params": params, "lookback": "PT4H"}
    started = deliver(stack, "backfill", catch_up, "2024-08-01T04:00:00Z")
    result = summary(ended(stack, started["name"], timeout=120))

    runs = finished(stack, example_runs(stack, "catch-up"))
    # [04:00 - 4 h, 04:00): 00:00 and 02:00 were missing, 01:00 and 03:00 had run; 04:00 is not in it.
    assert sorted(scheduled(run) for run in runs) == [f"2024-08-01T{h:02d}:00:00+00:00" for h in range(4)]
    assert (result["planned"], result["started"], result["skipped"], result["failed"]) == (4, 2, 2, 0)
    # Scheduler retries the catch-up delivery: the proxy does not start a second backfill.
    again = deliver(stack, "backfill", catch_up, "2024-08-01T04:00:00Z")
    assert again["started"] is False and again["name"] == started["name"]
    assert len(example_runs(stack, "catch-up")) == 4


def test_a_catch_up_window_is_written_in_the_jobs_zone_and_counts_days_of_24_hours(stack):
    params = {"case": "catch-up-zone"}
    catch_up = {"workflow": "example", "step": "0 1 * * *", "timezone": "Europe/Stockholm", "params": params,
                "lookback": "P2D"}
    # 2024-03-31 03:17 +02:00 (just after the spring change): 48 h back is 2024-03-29 02:17 +01:00.
    started = deliver(stack, "backfill", catch_up, "2024-03-31T01:17:00Z", timezone="Europe/Stockholm")
    result = summary(ended(stack, started["name"], timeout=120))
    runs = finished(stack, example_runs(stack, "catch-up-zone"))
    assert sorted(scheduled(run) for run in runs) == ["2024-03-30T01:00:00+01:00", "2024-03-31T01:00:00+01:00"]
    assert result["started"] == 2
