"""Exactly once under faults (issue 23), from wfr's side and end to end: wfr retries only what it
may send twice (request ids, preconditions), `wfr status` resolves claims past their lease, a
backfill retries a claim it cannot judge yet, and request ids on the proxy. On the shared fencing
stack (tests/fencing_stack.py), each case TRIALS times, counted in the Executions API and the ledger.
"""
from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from urllib.parse import quote

import pytest
import requests

from localcloud import stack as local_stack
from localcloud import up as local_up
from localcloud.buckets import Preconditions
from tests.fault_relay import Rule
from workflows_runner import http as wfr_http
from workflows_runner.errors import ApiError
from workflows_runner.identity import parse_instant, run_digest
from tests.fencing_stack import (  # noqa: F401 (the fixtures are used by name)
    AUTH, in_parallel, DEADLINE, EXAMPLE, LEASE, TRIALS, clean_relay, fresh_time, instant, label, per_attempt,
    proxies, proxy, records_at, relay, stack)

SKEWED = False  # only the proxy on time is started (tests/fencing_stack.py)


# --- case 7: wfr retries only what it may send twice ----------------------------------------

@pytest.fixture(scope="module")
def wfr_state(stack, proxies, tmp_path_factory):
    """A --local-state folder whose proxy is the one behind the relay."""
    state = tmp_path_factory.mktemp("wfr")
    (state / "endpoints.json").write_text(json.dumps({**local_up.endpoints(stack), "proxy": proxies["on time"].url}))
    return state


@pytest.fixture(scope="module")
def wfr_relayed_state(stack, relay, proxies, tmp_path_factory):
    """A --local-state folder whose Executions API is behind the relay too."""
    state = tmp_path_factory.mktemp("wfr-relayed")
    (state / "endpoints.json").write_text(json.dumps({**local_up.endpoints(stack), "api": relay.url,
                                                      "proxy": proxies["on time"].url}))
    return state


def wfr(state, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workflows_runner.cli", *args, "--local-state", str(state)],
                          cwd=local_stack.ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("trial", range(TRIALS))
def test_wfr_rerun_retried_after_a_503_starts_each_run_once(stack, relay, proxy, wfr_state, trial):
    """One run of the array fails (its claim cannot be written until the deadline), so the
    proxy answers the array 503; wfr sends it again with the same request id, and the run that
    had started gets its attempt back, not another one."""
    times = [fresh_time(), fresh_time()]
    firsts = [proxy.post({"case": "rerun-503", "scheduleTime": when}).json() for when in times]
    for first in firsts:
        stack.api.executions.wait(first["name"], timeout=10)
    outage = relay.add(Rule("answer", "POST", "/upload/", body=instant(times[1]).encode() + b"/", code=503,
                            lasts=DEADLINE + 0.2))
    done = wfr(wfr_state, "rerun", "example", *(first["name"] for first in firsts), "--format", "json")
    assert done.returncode == 0, done.stderr
    # The array was answered 503 and sent again; attempt 2 of the first run was created once.
    assert outage.matched > 0 and relay.count("create", label(times[0])) == 2
    for when in times:
        assert per_attempt(stack, when) == {"1": 1, "2": 1}
        assert len(records_at(stack, when)) == 2


class _Busy(http.server.BaseHTTPRequestHandler):
    """Answers every POST 503 and counts them."""
    posts = 0

    def do_POST(self):
        type(self).posts += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = b'{"error": {"code": 503, "status": "UNAVAILABLE", "message": "busy"}}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("params, sent", [
    ({}, 1),                                                          # a start without an id: once
    ({"requestId": "123e4567-e89b-12d3-a456-426614174000"}, 1 + wfr_http.RETRIES),
    ({"ifGenerationMatch": "0"}, 1 + wfr_http.RETRIES),               # a conditional write
])
def test_wfr_sends_a_post_again_only_with_a_request_id_or_a_precondition(params, sent, monkeypatch):
    monkeypatch.setattr(wfr_http, "_pause", lambda attempt: None)
    _Busy.posts = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ApiError) as refused:
            wfr_http.Http().call("proxy", "POST", f"http://127.0.0.1:{server.server_address[1]}/v1/x",
                                 headers={}, params=params, json=[])
    finally:
        server.shutdown()
        server.server_close()
    assert refused.value.code == 503 and _Busy.posts == sent


# --- wfr status resolves claims past their lease --------------------------------------------

def test_wfr_status_resolves_claims_past_their_lease(stack, relay, proxy, wfr_state):
    """Three times: a claim whose execution was never recorded (recorded by the status), a claim
    with no execution (released: missing), a claim within its lease (left: running)."""
    times = [fresh_time() for _ in range(3)]
    params = {"case": "status-claims"}
    relay.add(Rule("answer", "PATCH", quote(instant(times[0]), safe=""), code=503,
                   until=time.monotonic() + DEADLINE + 0.3))
    unrecorded = proxy.post({**params, "scheduleTime": times[0]}).json()
    assert (records_at(stack, times[0])[0]["metadata"]["state"], unrecorded["started"]) == ("CLAIMED", True)
    for when, lease in ((times[1], "1"), (times[2], "600")):  # claims whose starters died before create
        name = (f"runs/{local_stack.PROJECT}/{local_stack.LOCATION}/example/{instant(when)}/"
                f"{run_digest(EXAMPLE, parse_instant(when), params)}/000001")
        stack.storage.buckets.insert(local_stack.RUNS_BUCKET, name, b"{}", {"metadata": {
            "state": "CLAIMED", "claim": "dead", "lease": lease}}, Preconditions(if_generation_match="0"))
    time.sleep(LEASE + 1.2)
    done = wfr(wfr_state, "status", "example", "--start", times[0], "--stop", times[2].replace(":00Z", ":01Z"),
               "--step", "* * * * *", "--params", json.dumps(params), "--format", "json")
    assert done.returncode in (0, 3, 4, 5), done.stderr
    states = [t["state"] for t in json.loads(done.stdout)["times"]]
    assert states == ["succeeded", "missing", "running"]
    assert records_at(stack, times[0])[0]["metadata"]["execution"] == unrecorded["name"]
    assert records_at(stack, times[1]) == []
    assert records_at(stack, times[2])[0]["metadata"]["state"] == "CLAIMED"


# --- case 3 end to end: a backfill that meets a dead claim ------------------------------------

def test_a_backfill_that_meets_a_dead_claim_retries_it_after_the_lease_and_starts_it(stack):
    """The backfill workflow through the stack's own proxy: a time whose claim's starter died
    (claimed, nothing created) is answered 409 with RetryInfo, asked again after it, taken over
    and started; neither skipped nor lost."""
    def trial(number: int) -> None:
        times = [fresh_time(), fresh_time()]
        params = {"case": f"backfill-dead-claim-{number}"}
        dead = (f"runs/{local_stack.PROJECT}/{local_stack.LOCATION}/example/{instant(times[1])}/"
                f"{run_digest(EXAMPLE, parse_instant(times[1]), params)}/000001")
        stack.storage.buckets.insert(local_stack.RUNS_BUCKET, dead, b"{}", {"metadata": {
            "state": "CLAIMED", "claim": "dead", "lease": "3"}}, Preconditions(if_generation_match="0"))
        argument = {"workflow": "example", "start": times[0], "stop": times[1].replace(":00Z", ":01Z"),
                    "step": "* * * * *", "params": params, "reprocess": "none", "wait": False}
        name = requests.post(f"{stack.api.url}/v1/projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}"
                             f"/workflows/backfill/executions", headers=AUTH, timeout=10,
                             json={"argument": json.dumps(argument)}).json()["name"]
        stack.api.executions.wait(name, timeout=60)
        ended = requests.get(f"{stack.api.url}/v1/{name}", headers=AUTH, timeout=10).json()
        assert ended["state"] == "SUCCEEDED", ended.get("error")
        result = json.loads(ended["result"])
        assert (result["planned"], result["started"], result["skipped"]) == (2, 2, 0), result
        for when in times:
            assert per_attempt(stack, when) == {"1": 1}
            (record,) = records_at(stack, when)
            assert record["metadata"]["state"] != "CLAIMED"

    in_parallel(trial)


# --- request ids (AIP-155) ---------------------------------------------------------------------

def test_the_same_request_id_twice_gives_the_first_attempt_never_a_new_one(stack, proxy):
    def trial(number: int) -> None:
        when = fresh_time()
        body = {"case": "request-id", "scheduleTime": when}
        first_id, second_id = f"00000000-0000-4000-8000-{number:012d}", f"11111111-1111-4111-8111-{number:012d}"
        first = proxy.post(body, requestId=first_id).json()
        stack.api.executions.wait(first["name"], timeout=10)
        for _ in range(2):  # retried after it ended: reprocess=completed would start a new attempt
            again = proxy.post(body, requestId=first_id.upper()).json()
            assert (again["name"], again["started"]) == (first["name"], True)
        assert per_attempt(stack, when) == {"1": 1}
        other = proxy.post(body, requestId=second_id).json()  # another action: judged by reprocess
        assert other["started"] is True and other["labels"]["attempt"] == "2"
        assert proxy.post(body, requestId=first_id).json()["name"] == first["name"]  # still the first's
        assert per_attempt(stack, when) == {"1": 1, "2": 1} and len(records_at(stack, when)) == 2

    in_parallel(trial)


@pytest.mark.parametrize("request_id", ["nope", "123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400"])
def test_a_request_id_that_is_not_a_uuid_is_400(proxy, request_id):
    answer = proxy.post({"case": "bad-id"}, requestId=request_id)
    assert answer.status_code == 400 and answer.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize("trial", range(TRIALS))
def test_wfr_backfill_start_answered_503_after_it_landed_starts_one_backfill(stack, relay, wfr_relayed_state, trial):
    """The backfill's create lands but is answered 503: wfr looks its action's label up before
    creating again, and finds it."""
    relay.add(Rule("answer_after", "POST", "/workflows/backfill/executions", code=503, times=1))
    start = f"2045-0{trial + 1}-01T00:00:00Z"
    done = wfr(wfr_relayed_state, "backfill", "start", "example", "--start", start,
               "--stop", start.replace("T00:00", "T00:02"), "--step", "* * * * *", "--no-follow", "--format", "json")
    assert done.returncode == 0, done.stderr
    name = json.loads(done.stdout)["name"]
    request_id = requests.get(f"{stack.api.url}/v1/{name}", headers=AUTH, timeout=10).json()["labels"]["wfr_request"]
    backfill = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows/backfill"
    same = requests.get(f"{stack.api.url}/v1/{backfill}/executions", headers=AUTH, timeout=10, params={
        "filter": f'labels.wfr_request="{request_id}"', "pageSize": 100}).json()["executions"]
    assert [e["name"] for e in same] == [name]
    assert relay.count("create") == 1  # looked up, not sent again
    stack.api.executions.wait(name, timeout=60)


def test_wfr_status_keeps_the_oldest_of_two_executions_of_an_attempt_and_cancels_the_other(stack, proxy, wfr_state):
    """Three times, each with a claim past its lease that no one recorded and two executions
    carrying its labels (an assumption broken): the status records the older and cancels the
    other, with a warning naming both."""
    times = [fresh_time() for _ in range(3)]
    params = {"case": "status-orphans", "sleepSeconds": 8}
    pairs = []
    for when in times:
        first = proxy.post({**params, "scheduleTime": when}).json()
        (record,) = records_at(stack, when)
        stack.storage.buckets.insert(local_stack.RUNS_BUCKET, record["name"], b"{}", {"metadata": {
            "state": "CLAIMED", "claim": "x", "lease": "1"}}, Preconditions(if_generation_match=record["generation"]))
        execution = requests.get(f"{stack.api.url}/v1/{first['name']}", params={"view": "FULL"},
                                 headers=AUTH, timeout=10).json()
        twin = requests.post(f"{stack.api.url}/v1/{EXAMPLE}/executions", headers=AUTH, timeout=10, json={
            "argument": execution["argument"], "labels": execution["labels"]}).json()
        pairs.append((first["name"], twin["name"]))
    time.sleep(2.2)  # the planted claims' 1 s lease, on Cloud Storage's whole-second clock
    done = wfr(wfr_state, "status", "example", "--start", times[0], "--stop", times[2].replace(":00Z", ":01Z"),
               "--step", "* * * * *", "--params", json.dumps(params), "--format", "json")
    assert done.returncode in (0, 3, 4, 5), done.stderr
    assert [t["state"] for t in json.loads(done.stdout)["times"]] == ["running"] * 3
    for when, (kept, orphan) in zip(times, pairs):
        (record,) = records_at(stack, when)
        assert record["metadata"]["execution"] == kept
        states = {e["name"]: e["state"] for e in requests.get(
            f"{stack.api.url}/v1/{EXAMPLE}/executions", headers=AUTH, timeout=10, params={
                "filter": f'labels.schedule_time="{label(when)}"', "pageSize": 10}).json()["executions"]}
        assert states == {kept: "ACTIVE", orphan: "CANCELLED"}
        assert f"kept {kept}, cancelled {orphan}" in done.stderr
