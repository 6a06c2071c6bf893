"""The stack the fencing tests share (tests/test_fencing.py, tests/test_fencing_wfr.py): the local
stack, the fault-injecting relay (tests/fault_relay.py) between proxies and the local APIs,
proxies with short leases (one of them SKEW ahead, one SKEW behind), and counting helpers that
read the Executions API and the ledger, never the proxy's answers.

The proxies under test have a deadline of DEADLINE s and a lease margin of MARGIN s, so their
leases are LEASE s: short enough to wait out.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Callable

import pytest
import requests

from localcloud import stack as local_stack
from tests.fault_relay import Relay, Rule, clock_skew_dir

AUTH = {"Authorization": "Bearer localcloud"}
EXAMPLE = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows/example"
TRIALS = 3
DEADLINE, MARGIN = 2.0, 1.0  # lenient enough for a loaded 2-core machine
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
def proxies(stack, relay, tmp_path_factory, request):
    """Proxies through the relay: on time, SKEW ahead and SKEW behind (a module that needs only
    the first sets SKEWED = False)."""
    folder = tmp_path_factory.mktemp("proxies")
    skews = {"on time": 0.0, "ahead": SKEW, "behind": -SKEW}
    if not getattr(request.module, "SKEWED", True):
        skews = {"on time": 0.0}
    started = {name: start_proxy(stack, relay, folder, skew) for name, skew in skews.items()}
    yield {name: proxy for name, (proxy, _, _) in started.items()}
    for _, process, log in started.values():
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


def in_parallel(trial: Callable[[int], None], trials: int = TRIALS) -> None:
    """Run a case's trials at once (each on its own scheduled time, so they count apart): most of
    a trial is waiting out a lease, which trials side by side wait out together."""
    with ThreadPoolExecutor(trials) as pool:
        for outcome in [pool.submit(trial, number) for number in range(trials)]:
            outcome.result()  # a trial's failure fails the test


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
