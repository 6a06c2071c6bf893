"""Dry runs: the proxy's `?dryRun=true`, backfill.yaml's `dryRun` built on it, and `wfr backfill
--dry-run`, all on the local stack.

The oracles: the proxy's own real start (a dry run must predict what the same request starts),
and a count the tests make from the Executions API alone (each time's newest execution by
createTime, judged by the reprocess table of docs/proxy.md). The costs are counted by relays in
front of Cloud Storage and the Executions API, and the steps by localcloud, which counts steps as
Workflows does (limit: https://cloud.google.com/workflows/quotas#resource_limits, 100,000 steps).
"""
from __future__ import annotations

import json
import shutil
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests

from localcloud import stack as local_stack
from tests.test_backfill_e2e import ended, start_backfill
from tests.wfr_stack import AUTH, ROOT, Up

PARENT = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows"
# docs/proxy.md, "Reprocess policy": whether a time starts, from its newest execution's state
# (None: it never ran).
STARTS = {"none": lambda state: state is None,
          "failed": lambda state: state in (None, "FAILED", "CANCELLED"),
          "completed": lambda state: state not in ("ACTIVE", "QUEUED")}


class CountingRelay:
    """A loopback relay to `target` that records each request's method, path and query."""

    def __init__(self, target: str):
        self.target, self.calls, lock = target, [], threading.Lock()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                url = urlsplit(self.path)
                with lock:
                    relay.calls.append((self.command, url.path, parse_qs(url.query)))
                answer = requests.request(self.command, relay.target + self.path, data=body, timeout=60,
                                          headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def take(self) -> list[tuple[str, str, dict]]:
        calls, self.calls = self.calls, []
        return calls

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    started = local_stack.start(tmp_path_factory.mktemp("state"), api_log=lambda entry: None)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def counted(stack):
    """A second proxy on the same API and ledger, reaching both through counting relays, and
    allowed to start `example` only. Yields (its URL for `example`, storage relay, API relay)."""
    storage, api = CountingRelay(stack.storage.url), CountingRelay(stack.api.url)
    port = local_stack.free_port()
    process = local_stack.start_function("proxy", "proxy", port, env={
        "WORKFLOWS_API": api.url, "STORAGE_API": storage.url, "RUNS_BUCKET": local_stack.RUNS_BUCKET,
        "ALLOWED_WORKFLOWS": f"{local_stack.PROJECT}/{local_stack.LOCATION}/example"})
    yield f"http://127.0.0.1:{port}/v1/{PARENT}/example/executions", storage, api
    local_stack.stop_process(process)
    storage.stop()
    api.stop()


def minutes(first: datetime, count: int) -> list[str]:
    return [(first + timedelta(minutes=n)).isoformat() for n in range(count)]


def executions_of(stack, workflow: str) -> list[dict]:
    runs, params = [], {"view": "FULL", "pageSize": 100}
    while True:
        page = requests.get(f"{stack.api.url}/v1/{PARENT}/{workflow}/executions", params=params,
                            headers=AUTH, timeout=30).json()
        runs += page.get("executions", [])
        if not page.get("nextPageToken"):
            return runs
        params["pageToken"] = page["nextPageToken"]


def ledger_snapshot(stack) -> list[tuple[str, str, dict]]:
    objects, _ = stack.storage.buckets.list(local_stack.RUNS_BUCKET, prefix="runs/")
    return sorted((o["name"], o["metageneration"], o.get("metadata")) for o in objects)


def settle(stack, names: list[str]) -> None:
    for name in names:
        stack.api.executions.wait(name, timeout=30)


# --- the proxy's dry run ------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["none", "failed", "completed"])
def test_a_dry_run_predicts_what_the_same_request_starts_from_one_ledger_listing(stack, counted, mode):
    url, storage, api = counted
    times = minutes(datetime(2023, 6, {"none": 1, "failed": 2, "completed": 3}[mode], tzinfo=timezone.utc), 6)
    params = {"case": f"predict-{mode}", "failFor": [times[1]]}
    body = [{**params, "scheduleTime": t} for t in times]
    # times[0] succeeded, [1] failed, [2] succeeded twice, [3..5] never ran. The ledger still
    # records the attempts as ACTIVE, as their starts recorded them: the dry run must learn.
    first = requests.post(stack.proxy_path("example"), json=body[:3], timeout=60).json()["executions"]
    settle(stack, [e["name"] for e in first])
    again = requests.post(stack.proxy_path("example"), json=body[2], params={"reprocess": "completed"}, timeout=60)
    assert again.json()["started"] is True
    settle(stack, [again.json()["name"]])
    before, executions = ledger_snapshot(stack), len(executions_of(stack, "example"))
    storage.take(), api.take()

    asked = body + [body[4]]  # the same run twice: only its first place would start it
    dry = requests.post(url, json=asked, params={"dryRun": "true", "reprocess": mode}, timeout=60)

    assert dry.status_code == 200, dry.text
    storage_calls, api_calls = storage.take(), api.take()
    assert ledger_snapshot(stack) == before and len(executions_of(stack, "example")) == executions
    [(method, path, query)] = storage_calls                       # one ranged listing, nothing written
    assert method == "GET" and path.endswith("/o") and {"startOffset", "endOffset"} <= set(query)
    # Workflows only for modes where a recorded ACTIVE can change the verdict: one filtered list.
    assert [(m, p.rsplit("/", 1)[-1]) for m, p, _ in api_calls] == ([] if mode == "none" else [("GET", "executions")])
    answer = dry.json()
    real = requests.post(stack.proxy_path("example"), json=asked, params={"reprocess": mode}, timeout=60).json()
    started = [e["started"] for e in real["executions"]]
    assert [r["wouldStart"] for r in answer["runs"]] == started
    assert [r["scheduleTime"] for r in answer["runs"]] == times + [times[4]]
    assert [r["attempts"] for r in answer["runs"]] == [1, 1, 2, 0, 0, 0, 0]
    assert answer["wouldStart"] == sum(started)
    assert answer["firstToStart"] == times[started.index(True)]
    assert started == {"none": [False, False, False, True, True, True, False],
                       "failed": [False, True, False, True, True, True, False],
                       "completed": [True, True, True, True, True, True, False]}[mode]


def test_a_dry_run_obeys_the_allowlist_and_refuses_bad_input_in_googles_shape(stack, counted):
    url, storage, api = counted
    storage.take(), api.take()
    other = url.replace("/workflows/example/", "/workflows/other/")
    refused = requests.post(other, json=[{}], params={"dryRun": "true"}, timeout=30)
    assert refused.status_code == 403 and refused.json()["error"]["status"] == "PERMISSION_DENIED"
    assert storage.take() == [] and api.take() == []
    for query, body, code in [({"dryRun": "yes"}, [{}], 400), ({"dryRun": ""}, [{}], 400),
                              ({"dryRun": ["true", "true"]}, [{}], 400),
                              ({"dryRun": "true"}, [{}] * 1001, 413), ({"dryRun": "true"}, "text", 400)]:
        answer = requests.post(url, json=body, params=query, timeout=30)
        assert answer.status_code == code, (query, answer.text)
        assert set(answer.json()["error"]) == {"code", "status", "message"}
    assert storage.take() == []
    # A real start still takes at most 100 elements; a dry run takes a backfill's whole page.
    assert requests.post(url, json=[{}] * 101, timeout=30).status_code == 413
    fresh = minutes(datetime(2023, 7, 1, tzinfo=timezone.utc), 1000)
    whole = requests.post(url, json=[{"case": "page", "scheduleTime": t} for t in fresh],
                          params={"dryRun": "true", "reprocess": "none"}, timeout=60)
    assert whole.status_code == 200 and whole.json()["wouldStart"] == 1000
    # An element it would refuse answers its error; the others are still judged.
    mixed = requests.post(url, json=[{"scheduleTime": fresh[0]}, 7, {"scheduleTime": "soon"}],
                          params={"dryRun": "true"}, timeout=30)
    assert mixed.status_code == 400
    runs = mixed.json()["runs"]
    assert runs[0] == {"scheduleTime": fresh[0], "wouldStart": True, "attempts": 0}
    assert [r["error"]["code"] for r in runs[1:]] == [400, 400]
    assert executions_of(stack, "other") == []


# --- backfill.yaml's dryRun ---------------------------------------------------------------------

def test_a_dry_run_costs_steps_per_page_of_1000_times_not_per_time(stack, monkeypatch):
    start = datetime(2023, 8, 1, tzinfo=timezone.utc)
    times = minutes(start, 5000)
    # 2 KB of params: pages of about 470 times (the proxy's 1 MiB body), so 11 pages.
    params = {"case": "pages", "pad": "x" * 2000}
    for n in (0, 1, 1234, 4999):
        assert requests.post(stack.proxy_path("example"), json={**params, "scheduleTime": times[n]},
                             timeout=30).json()["started"] is True
    monkeypatch.setenv("LOCALCLOUD_STEP_LIMIT", "300")   # read by each new execution
    argument = {"workflow": "example", "start": times[0], "stop": (start + timedelta(minutes=5000)).isoformat(),
                "step": "* * * * *", "params": params, "pageSize": 1, "dryRun": True}
    results = {}
    for order in ("asc", "desc"):
        execution = ended(stack, start_backfill(stack, {**argument, "order": order}), timeout=120)
        assert execution["state"] == "SUCCEEDED", execution.get("error")
        results[order] = json.loads(execution["result"])
    assert results["asc"] == {"dryRun": True, "planned": 5000, "wouldStart": 4996, "firstToStart": times[2],
                              "first": times[0], "last": times[-1], "firstPage": times[:1]}
    assert results["desc"] == {**results["asc"], "firstToStart": times[-2], "firstPage": times[-1:]}
    # The limit is in force: a little lower, the same dry run stops.
    monkeypatch.setenv("LOCALCLOUD_STEP_LIMIT", "100")
    stopped = ended(stack, start_backfill(stack, argument), timeout=120)
    assert stopped["state"] == "FAILED" and "ResourceLimitError" in stopped["error"]["payload"]


# --- backfill.yaml and wfr agree ----------------------------------------------------------------

STOCKHOLM = ZoneInfo("Europe/Stockholm")
HOURS = [datetime(2024, 3, 1, h, tzinfo=STOCKHOLM).isoformat() for h in range(9)]
WINDOW = {"start": "2024-03-01T00:00:00", "stop": "2024-03-01T09:00:00", "step": "0 * * * *",
          "timezone": "Europe/Stockholm"}
# The test's target: fails for the times in failFor, keeps the times in holdFor running.
TARGET = """main:
  params: [input]
  steps:
    - hold:
        switch:
          - condition: ${input.scheduleTime in input.holdFor}
            steps:
              - wait:
                  call: sys.sleep
                  args:
                    seconds: 3600
    - check:
        switch:
          - condition: ${input.scheduleTime in input.failFor}
            raise: ${"failed on purpose for " + input.scheduleTime}
    - done:
        return: ok
"""


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workflows")
    (folder / "target.yaml").write_text(TARGET)
    shutil.copy(ROOT / "workflows" / "example.yaml", folder / "example.yaml")
    stack = Up(tmp_path_factory.mktemp("state"), folder)
    yield stack
    stack.stop()


def newest_states(up: Up, params: dict) -> list[str | None]:
    """The oracle's view, from the Executions API alone: per hour, its newest execution's state."""
    newest: dict[str, dict] = {}
    for run in up.executions("target"):
        argument = json.loads(run["argument"])
        if {k: v for k, v in argument.items() if k != "scheduleTime"} != params:
            continue
        known = newest.get(argument["scheduleTime"])
        if known is None or run["createTime"] > known["createTime"]:
            newest[argument["scheduleTime"]] = run
    return [newest[t]["state"] if t in newest else None for t in HOURS]


def backfill_dry_run(up: Up, params: dict, reprocess: str, order: str) -> dict:
    api, name = up.endpoints["api"], up.workflow(up.endpoints["backfillWorkflow"])
    argument = {"workflow": "target", **WINDOW, "params": params, "reprocess": reprocess, "order": order,
                "pageSize": 4, "dryRun": True}
    created = requests.post(f"{api}/v1/{name}/executions", json={"argument": json.dumps(argument)},
                            headers=AUTH, timeout=30).json()
    deadline = time.monotonic() + 60
    while True:
        execution = requests.get(f"{api}/v1/{created['name']}", headers=AUTH, timeout=30).json()
        if execution["state"] != "ACTIVE" or time.monotonic() > deadline:
            assert execution["state"] == "SUCCEEDED", execution.get("error")
            return json.loads(execution["result"])
        time.sleep(0.2)


def wfr_dry_run(up: Up, params: dict, reprocess: str, order: str) -> dict:
    window = [item for key, value in WINDOW.items() for item in (f"--{key}", value)]
    done = up.wfr("backfill", "start", "target", *window, "--params", json.dumps(params), "--reprocess", reprocess,
                  "--order", order, "--dry-run", "--format", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_backfill_yaml_and_wfr_dry_runs_agree_with_an_independent_count(up):
    params = {"case": "agree", "failFor": [HOURS[2]], "holdFor": [HOURS[3], HOURS[4]]}
    started = {}
    for hour in HOURS[:6]:
        answer = up.post_run("target", {**params, "scheduleTime": hour}, timezone="Europe/Stockholm")
        started[hour] = answer.json()["name"]
    deadline = time.monotonic() + 60
    while [s for s in newest_states(up, params)[:6] if s == "ACTIVE"] != ["ACTIVE", "ACTIVE"]:
        assert time.monotonic() < deadline, newest_states(up, params)
        time.sleep(0.2)
    again = up.post_run("target", {**params, "scheduleTime": HOURS[1]}, timezone="Europe/Stockholm",
                        reprocess="completed")
    assert again.json()["started"] is True
    cancelled = requests.post(f"{up.endpoints['api']}/v1/{started[HOURS[3]]}:cancel", headers=AUTH, timeout=30)
    assert cancelled.status_code == 200, cancelled.text
    while newest_states(up, params)[1] == "ACTIVE":
        time.sleep(0.2)
    states = newest_states(up, params)
    # Succeeded, succeeded twice, failed, cancelled, running, succeeded, and three never ran.
    assert states == ["SUCCEEDED", "SUCCEEDED", "FAILED", "CANCELLED", "ACTIVE", "SUCCEEDED", None, None, None]
    cases = [(mode, "asc") for mode in STARTS] + [("failed", "desc")]

    def expected(mode: str, order: str) -> tuple[int, int, str | None]:
        starting = [hour for hour, state in zip(HOURS, states) if STARTS[mode](state)]
        ordered = starting if order == "asc" else starting[::-1]
        return len(HOURS), len(starting), ordered[0] if ordered else None

    def figures(result: dict) -> tuple[int, int, str | None]:
        return result["planned"], result["wouldStart"], result["firstToStart"]

    # First while the ledger still records most attempts as ACTIVE (the proxy learns from
    # Workflows), then wfr (whose status writes the ended states back), then again.
    storage, bucket = up.endpoints["storage"], up.endpoints["bucket"]

    def ledger() -> list:
        items = requests.get(f"{storage}/storage/v1/b/{bucket}/o", params={"prefix": "runs/"}, timeout=30).json()
        return sorted((i["name"], i["metageneration"]) for i in items.get("items", []))
    before, runs = ledger(), len(up.executions("target"))
    first_round = {case: backfill_dry_run(up, params, *case) for case in cases}
    assert ledger() == before and len(up.executions("target")) == runs
    by_wfr = {case: wfr_dry_run(up, params, *case) for case in cases}
    assert ledger() != before   # wfr wrote the ended states back
    second_round = {case: backfill_dry_run(up, params, *case) for case in cases}
    for case in cases:
        assert figures(first_round[case]) == figures(by_wfr[case]) == figures(second_round[case]) == expected(*case), case
        assert by_wfr[case]["first"][:1] == [expected(*case)[2]]
        result = first_round[case]
        assert (result["first"], result["last"]) == (HOURS[0], HOURS[-1])
        assert result["firstPage"] == (HOURS[:4] if case[1] == "asc" else HOURS[::-1][:4])
    assert len(up.executions("target")) == runs
