"""Exactly once under faults (issue 23): the proxy on the local stack with a fault-injecting relay
(tests/fault_relay.py) between it and the Executions API and Cloud Storage, and proxies whose
clocks are skewed. Each case runs TRIALS times and is counted afterwards in the Executions API
(executions per attempt) and in the ledger (records), never from the proxy's answers alone.

The proxies under test have a deadline of DEADLINE s and a lease margin of MARGIN s, so their
leases are LEASE s: short enough to wait out.
"""
from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from urllib.parse import quote

import pytest
import requests

from localcloud import stack as local_stack
from localcloud import up as local_up
from localcloud.buckets import Preconditions
from tests.fault_relay import Relay, Rule, clock_skew_dir
from workflows_runner import http as wfr_http
from workflows_runner.errors import ApiError
from workflows_runner.identity import from_label, parse_instant, run_digest

AUTH = {"Authorization": "Bearer localcloud"}
EXAMPLE = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows/example"
TRIALS = 3
DEADLINE, MARGIN = 1.5, 1.0
LEASE = DEADLINE + MARGIN
SKEW = 10.0  # seconds a skewed proxy's clock is ahead or behind: four leases
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


class Proxy:
    def __init__(self, url: str, log):
        self.url, self.log = url, log

    def post(self, body, **params) -> requests.Response:
        return requests.post(f"{self.url}/v1/{EXAMPLE}/executions", json=body, params=params, timeout=30)

    def warnings(self) -> list[dict]:
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("severity") == "WARNING" and "event" in line]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    started = local_stack.start(tmp_path_factory.mktemp("state"), jobs=[], api_log=lambda entry: None,
                                scheduler_log=lambda entry: None)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def relay(stack):
    relay = Relay(stack.api.url, stack.storage.url)
    yield relay
    relay.stop()


def start_proxy(stack, relay, folder, skew: float = 0.0):
    env = {"WORKFLOWS_API": relay.url, "STORAGE_API": relay.url, "GOOGLE_CLOUD_PROJECT": local_stack.PROJECT,
           "RUNS_BUCKET": local_stack.RUNS_BUCKET, "UPSTREAM_DEADLINE_SECONDS": str(DEADLINE),
           "LEASE_MARGIN_SECONDS": str(MARGIN)}
    if skew:
        env.update(PYTHONPATH=str(clock_skew_dir(folder / "skew")), TEST_CLOCK_SKEW_SECONDS=str(skew))
    port = local_stack.free_port()
    log_path = folder / f"proxy-{port}.log"
    log = open(log_path, "wb")
    process = local_stack.start_function("proxy", "proxy", port, env=env, log=log)
    return Proxy(f"http://127.0.0.1:{port}", log_path), process, log


@pytest.fixture(scope="module")
def proxies(stack, relay, tmp_path_factory):
    """Three proxies through the relay: on time, SKEW ahead and SKEW behind."""
    folder = tmp_path_factory.mktemp("proxies")
    started = [start_proxy(stack, relay, folder, skew) for skew in (0.0, SKEW, -SKEW)]
    yield {"on time": started[0][0], "ahead": started[1][0], "behind": started[2][0]}
    for _, process, log in started:
        local_stack.stop_process(process)
        log.close()


@pytest.fixture
def proxy(proxies):
    return proxies["on time"]


@pytest.fixture(autouse=True)
def clean_relay(relay):
    relay.clear()
    yield
    relay.clear()


_minutes = iter(range(1, 10 ** 6))


def fresh_time() -> str:
    """A scheduled time no other test uses, so each trial counts its own runs."""
    return datetime.fromtimestamp(2_199_999_960 + next(_minutes) * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def label(when: str) -> str:
    return datetime.fromisoformat(when.replace("Z", "+00:00")).strftime("%Y-%m-%dt%H-%M-%Sz")


def instant(when: str) -> str:
    return datetime.fromisoformat(when.replace("Z", "+00:00")).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def executions_at(stack, when: str) -> list[dict]:
    """Every execution of `example` for that scheduled time, from the Executions API."""
    answer = requests.get(f"{stack.api.url}/v1/{EXAMPLE}/executions", headers=AUTH, timeout=10, params={
        "filter": f'labels.schedule_time="{label(when)}"', "view": "FULL", "pageSize": 100})
    return answer.json().get("executions", [])


def per_attempt(stack, when: str, states=("ACTIVE", "QUEUED", "SUCCEEDED", "FAILED")) -> dict[str, int]:
    """Executions not cancelled, per attempt label."""
    counts: dict[str, int] = {}
    for execution in executions_at(stack, when):
        if execution["state"] in states:
            counts[execution["labels"]["attempt"]] = counts.get(execution["labels"]["attempt"], 0) + 1
    return counts


def records_at(stack, when: str) -> list[dict]:
    """The ledger's attempt objects for that time (docs/ledger.md: one per attempt)."""
    prefix = f"runs/{local_stack.PROJECT}/{local_stack.LOCATION}/example/{instant(when)}/"
    return stack.storage.buckets.list(local_stack.RUNS_BUCKET, prefix=prefix)[0]


def retry_info(answer: requests.Response) -> int:
    """The retryDelay of a 409 ABORTED answer, in seconds (the contract with the backfill)."""
    error = answer.json()["error"]
    assert (answer.status_code, error["code"], error["status"]) == (409, 409, "ABORTED"), answer.text
    (detail,) = error["details"]
    assert detail["@type"] == RETRY_INFO and detail["retryDelay"].endswith("s")
    return int(detail["retryDelay"][:-1])


def post_until_judged(proxy: Proxy, body: dict, **params) -> tuple[requests.Response, int]:
    """POST as the backfill does: a 409 is asked again after its retryDelay. The answer, and how
    many 409s came first."""
    for busy in range(10):
        answer = proxy.post(body, **params)
        if answer.status_code != 409:
            return answer, busy
        delay = retry_info(answer)
        assert delay <= LEASE + 2, delay  # never later than the lease's end (whole seconds, rounded up)
        time.sleep(delay)
    raise AssertionError("still 409 after 10 retries")


def create_rule(when: str, action: str, **fields) -> Rule:
    """A rule for the creates of the run at `when` (their labels carry its schedule_time)."""
    return Rule(action, "POST", "/executions", body=label(when).encode(), **fields)


def assert_one_recorded_execution(stack, when: str) -> dict:
    assert per_attempt(stack, when) == {"1": 1}
    (record,) = records_at(stack, when)
    (execution,) = [e for e in executions_at(stack, when) if e["state"] != "CANCELLED"]
    assert record["metadata"]["execution"] == execution["name"]
    return execution


# --- case 2: a create answered late or not at all, saved late by Workflows ------------------

@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_create_that_lands_after_the_deadline_is_found_not_created_again(stack, relay, proxy, trial):
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


@pytest.mark.parametrize("trial", range(TRIALS))
@pytest.mark.parametrize("action", ["late_answer", "drop_answer"])
def test_a_create_whose_answer_is_late_or_lost_is_found_by_its_labels(stack, relay, proxy, action, trial):
    when = fresh_time()
    relay.add(create_rule(when, action, seconds=DEADLINE + 0.5, times=1))
    answer = proxy.post({"case": action, "scheduleTime": when})
    assert answer.status_code == 200 and answer.json()["started"] is True, answer.text
    execution = assert_one_recorded_execution(stack, when)
    assert answer.json()["name"] == execution["name"]
    assert relay.count("create", label(when)) == 1


@pytest.mark.parametrize("trial", range(TRIALS))
def test_creates_refused_with_429_are_retried_and_start_once(stack, relay, proxy, trial):
    """Google's concurrency quota answers 429: nothing was created, so the create is sent again."""
    when = fresh_time()
    relay.add(create_rule(when, "answer", code=429, times=2))
    answer = proxy.post({"case": "quota", "scheduleTime": when})
    assert answer.status_code == 200 and answer.json()["started"] is True, answer.text
    assert_one_recorded_execution(stack, when)
    assert relay.count("create", label(when)) == 3


# --- case 3: a time is never lost ------------------------------------------------------------

@pytest.mark.parametrize("trial", range(TRIALS))
def test_creates_refused_until_the_deadline_release_the_claim_and_a_retry_starts_it(stack, relay, proxy, trial):
    when = fresh_time()
    body = {"case": "refused", "scheduleTime": when}
    outage = relay.add(create_rule(when, "answer", code=503, until=time.monotonic() + DEADLINE + 0.5))
    first = proxy.post(body, reprocess="none")
    assert first.status_code == 503 and first.json()["error"]["status"] == "UNAVAILABLE", first.text
    assert executions_at(stack, when) == [] and records_at(stack, when) == []  # released: nothing left
    assert relay.count("create", label(when)) > 1  # 503 said nothing was created: sent again
    time.sleep(max(0.0, outage.until - time.monotonic()) + 0.1)  # the outage passes
    again = proxy.post(body, reprocess="none")  # the backfill's or Scheduler's retry, at once
    assert again.status_code == 200 and again.json()["started"] is True, again.text
    assert_one_recorded_execution(stack, when)


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_claim_within_its_lease_is_409_with_retry_info_and_judged_after_it(stack, relay, proxy, trial):
    """The contract with the backfill: a claim the proxy cannot judge yet is 409 ABORTED with
    RetryInfo; asked again after retryDelay, the time is started or found, never lost."""
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


# --- case 4: a lease is not taken over while a create can land -------------------------------

@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_create_landing_just_before_the_lease_ends_is_recorded_not_doubled(stack, relay, proxies, trial):
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


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_claimant_whose_claim_was_taken_over_cancels_its_own_execution(stack, relay, proxy, trial):
    """When the assumption breaks (a claim rewritten while its create was in flight), the claimant's
    record write fails with 412, and it cancels its execution and logs both names."""
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


@pytest.mark.parametrize("trial", range(TRIALS))
def test_two_executions_of_one_attempt_found_by_a_lookup_keep_the_oldest_and_cancel_the_other(stack, proxy, trial):
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


# --- case 5: skewed clocks --------------------------------------------------------------------

def test_the_skewed_proxies_clocks_are_skewed(proxies):
    """The oracle for the skew tests: a manual run is named by the proxy's own clock."""
    for name, skew in (("ahead", SKEW), ("behind", -SKEW)):
        answer = proxies[name].post({"case": f"clock-{name}-{time.time()}"})
        scheduled = from_label(answer.json()["labels"]["schedule_time"])
        assert abs((scheduled - datetime.now(timezone.utc)).total_seconds() - skew) < 3


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_proxy_whose_clock_is_ahead_does_not_take_over_a_healthy_claim(stack, relay, proxies, trial):
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


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_proxy_whose_clock_is_behind_starts_a_legitimate_rerun(stack, proxies, trial):
    when = fresh_time()
    body = {"case": "behind", "scheduleTime": when}
    first = proxies["on time"].post(body)
    stack.api.executions.wait(first.json()["name"], timeout=10)
    time.sleep(1.1)  # the re-run comes a second after the first claim, as a person's would
    rerun = proxies["behind"].post(body, reprocess="completed")
    assert rerun.status_code == 200 and rerun.json()["started"] is True, rerun.text
    assert per_attempt(stack, when) == {"1": 1, "2": 1}
    assert len(records_at(stack, when)) == 2


# --- case 6: an unrecorded execution that leaves Workflows' history ----------------------------

@pytest.mark.parametrize("trial", range(TRIALS))
def test_an_unrecorded_execution_is_recorded_by_the_next_reader_and_never_started_again(stack, relay, proxy, trial):
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


# --- case 7: wfr retries only what it may send twice ----------------------------------------

@pytest.fixture(scope="module")
def wfr_state(stack, proxies, tmp_path_factory):
    """A --local-state folder whose proxy is the one behind the relay."""
    state = tmp_path_factory.mktemp("wfr")
    (state / "endpoints.json").write_text(json.dumps({**local_up.endpoints(stack), "proxy": proxies["on time"].url}))
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

@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_backfill_that_meets_a_dead_claim_retries_it_after_the_lease_and_starts_it(stack, trial):
    """The backfill workflow through the stack's own proxy: a time whose claim's starter died
    (claimed, nothing created) is answered 409 with RetryInfo, asked again after it, taken over
    and started; neither skipped nor lost."""
    times = [fresh_time(), fresh_time()]
    params = {"case": f"backfill-dead-claim-{trial}"}
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


# --- request ids (AIP-155) ---------------------------------------------------------------------

@pytest.mark.parametrize("trial", range(TRIALS))
def test_the_same_request_id_twice_gives_the_first_attempt_never_a_new_one(stack, proxy, trial):
    when = fresh_time()
    body = {"case": "request-id", "scheduleTime": when}
    first_id, second_id = f"00000000-0000-4000-8000-{trial:012d}", f"11111111-1111-4111-8111-{trial:012d}"
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


@pytest.mark.parametrize("request_id", ["nope", "123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400"])
def test_a_request_id_that_is_not_a_uuid_is_400(proxy, request_id):
    answer = proxy.post({"case": "bad-id"}, requestId=request_id)
    assert answer.status_code == 400 and answer.json()["error"]["status"] == "INVALID_ARGUMENT"
