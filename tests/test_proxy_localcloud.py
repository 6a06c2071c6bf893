"""The proxy against localcloud's Executions API: the same contract end to end (bearer token,
label rules, the label filter, view=FULL), with real runs that finish."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from tests.serving import load_module
from tests.test_proxy import start_proxy

api = pytest.importorskip("localcloud.api")
storage = pytest.importorskip("localcloud.storage")

PARENT = "projects/local-project/locations/us-central1/workflows/echo"
URL_PATH = f"/v1/{PARENT}/executions"
ECHO = """
main:
  params: [input]
  steps:
    - done:
        return: ${input}
"""


@pytest.fixture
def stack(tmp_path):
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "echo.yaml").write_text(ECHO)
    server = api.start(tmp_path / "workflows", tmp_path / "state", log=lambda entry: None)
    objects = storage.start(tmp_path / "state")
    try:
        storage.create_bucket(objects.url, "local-project-runs", "local-project")
        with start_proxy(tmp_path, {"WORKFLOWS_API": server.url, "ALLOWED_WORKFLOWS": "local-project/*/*",
                                    "RUNS_BUCKET": "local-project-runs", "STORAGE_API": objects.url}) as proxy:
            yield proxy, server.url
    finally:
        objects.stop()
        server.stop()


def wait_until_finished(base: str, name: str) -> dict:
    for _ in range(200):
        execution = requests.get(f"{base}/v1/{name}", headers={"Authorization": "Bearer localcloud"}, timeout=10).json()
        if execution["state"] not in ("ACTIVE", "QUEUED"):
            return execution
        time.sleep(0.02)
    raise AssertionError(f"{name} still running")


def test_scheduled_run_is_started_once_then_reprocessed_on_request(stack):
    proxy, base = stack
    headers = {"X-CloudScheduler-ScheduleTime": "2022-10-30T01:30:00Z", "X-CloudScheduler-JobName": "echo-job"}
    first = proxy.post(URL_PATH + "?timezone=Europe/Stockholm", {"table": "sales"}, headers)
    assert first.status_code == 200, first.text
    assert first.json()["started"] is True
    finished = wait_until_finished(base, first.json()["name"])
    assert finished["state"] == "SUCCEEDED"
    assert json.loads(finished["result"]) == {"table": "sales", "scheduleTime": "2022-10-30T02:30:00+01:00"}

    repeat = proxy.post(URL_PATH + "?timezone=Europe/Stockholm", {"table": "sales"}, headers).json()
    assert (repeat["started"], repeat["name"], repeat["state"]) == (False, first.json()["name"], "SUCCEEDED")
    assert proxy.post(URL_PATH + "?reprocess=failed", {"table": "sales"}, headers).json()["started"] is False
    again = proxy.post(URL_PATH + "?reprocess=completed", {"table": "sales"}, headers).json()
    assert again["started"] is True and again["name"] != first.json()["name"]

    listed = requests.get(f"{base}{URL_PATH}", params={"filter": 'labels.schedule_time="2022-10-30t01-30-00z"',
                                                      "view": "FULL"},
                          headers={"Authorization": "Bearer localcloud"}, timeout=10).json()["executions"]
    assert len(listed) == 2
    assert all(e["labels"]["trigger"] == "scheduler" and e["labels"]["scheduler_job"] == "echo-job" for e in listed)


# --- Execution-shaped bodies (a job migrated from calling Workflows directly) ---------------

scheduler = pytest.importorskip("localcloud.scheduler")
execution_body = load_module("proxy", "execution_body")
DISCOVERY = Path(__file__).resolve().parents[2] / "shared" / "google-apis" / "workflowexecutions.v1.json"

# The body as Google's guide writes a job's message body ("Schedule a workflow using Cloud
# Scheduler", https://cloud.google.com/workflows/docs/schedule-workflow and
# https://cloud.google.com/scheduler/docs/tut-workflows): the Execution resource, its argument a
# JSON string. Only the URI's host changes when such a job is migrated to the proxy.
GUIDE_BODY = ('{"argument": "{\\"firstName\\":\\"Sherlock\\",\\"lastName\\":\\"Holmes\\"}", '
              '"callLogLevel": "LOG_ERRORS_ONLY", "labels": {"team": "data"}}')


def deliver(proxy, body: str, schedule_time: str, zone: str = "America/New_York") -> int:
    """One delivery by localcloud's Cloud Scheduler, as a migrated job makes it."""
    job = scheduler.job_from_config({"name": "migrated", "schedule": "0 9 * * 1", "timeZone": zone,
                                     "uri": f"{proxy.url}{URL_PATH}?timezone={zone}", "body": body})
    cloud_scheduler = scheduler.Scheduler([job], log=lambda entry: None)
    assert cloud_scheduler.deliver(job, schedule_time)
    return cloud_scheduler.attempts[-1]["status"]


def executions(base: str, label: str) -> list[dict]:
    return requests.get(f"{base}{URL_PATH}", params={"filter": f'labels.schedule_time="{label}"', "view": "FULL"},
                        headers={"Authorization": "Bearer localcloud"}, timeout=10).json().get("executions", [])


def test_the_guides_job_body_starts_one_execution_of_the_unwrapped_argument(stack):
    proxy, base = stack
    for _ in range(2):  # a repeated delivery (Scheduler delivers at least once) starts nothing new
        assert deliver(proxy, GUIDE_BODY, "2024-03-11T09:00:00-04:00") == 200
    (execution,) = executions(base, "2024-03-11t13-00-00z")
    argument = {"firstName": "Sherlock", "lastName": "Holmes", "scheduleTime": "2024-03-11T09:00:00-04:00"}
    assert json.loads(execution["argument"]) == argument
    assert execution["callLogLevel"] == "LOG_ERRORS_ONLY"
    assert execution["labels"]["team"] == "data" and execution["labels"]["trigger"] == "scheduler"
    assert json.loads(wait_until_finished(base, execution["name"])["result"]) == argument
    # The run is the unwrapped argument's: a plain body with it is the same run, not a new one.
    plain = proxy.post(URL_PATH + "?timezone=America/New_York", {"firstName": "Sherlock", "lastName": "Holmes"},
                       {"X-CloudScheduler-ScheduleTime": "2024-03-11T13:00:00Z"}).json()
    # Recorded SUCCEEDED: the answer is the ledger's record (Workflows is not asked again).
    assert (plain["started"], plain["name"], plain["state"]) == (False, execution["name"], "SUCCEEDED")


def test_caller_labels_that_clash_with_the_proxys_are_dropped_and_logged(stack):
    proxy, base = stack
    body = {"argument": "{}", "labels": {"trigger": "mine", "attempt": "9", "backfill": "x", "team": "data"}}
    assert deliver(proxy, json.dumps(body), "2024-03-18T09:00:00-04:00") == 200
    (execution,) = executions(base, "2024-03-18t13-00-00z")
    labels = execution["labels"]
    assert (labels["trigger"], labels["attempt"], labels["team"]) == ("scheduler", "1", "data")
    assert "backfill" not in labels
    (line,) = [entry for entry in proxy.log_lines() if entry.get("execution") == execution["name"]]
    assert line["droppedLabels"] == ["attempt", "backfill", "trigger"] and line["bodyShape"] == "execution"
    assert "mine" not in json.dumps(line)  # keys only, never the caller's values


@pytest.mark.parametrize("body", [
    {"argument": {"table": "sales"}},                     # argument not a string
    {"argument": "{}", "table": "sales"},                 # a key that is no Execution field
    {"argument": "{}", "name": "projects/p/x"},           # an output-only Execution field
    {"callLogLevel": "LOG_NONE"},                         # no argument
])
def test_bodies_outside_the_rule_are_the_plain_argument(stack, body):
    proxy, base = stack
    response = proxy.post(URL_PATH, body)
    assert response.status_code == 200, response.text
    argument = json.loads(response.json()["argument"])
    assert {key: value for key, value in argument.items() if key != "scheduleTime"} == body
    assert response.json().get("callLogLevel") != "LOG_NONE"  # nothing was passed through


@pytest.mark.parametrize("body, fragment", [
    ({"argument": "{\"table\": "}, "not valid JSON"),
    ({"argument": "[1, 2]"}, "JSON of an object"),
    ({"argument": "{\"x\": NaN}"}, "not valid JSON"),
    ({"argument": "{}", "callLogLevel": "EVERYTHING"}, "callLogLevel must be one of"),
    ({"argument": "{}", "executionHistoryLevel": "ALL"}, "executionHistoryLevel must be one of"),
    ({"argument": "{}", "labels": {"team": 1}}, "labels must be a map"),
])
def test_an_unreadable_execution_body_is_a_400_and_starts_nothing(stack, body, fragment):
    proxy, base = stack
    headers = {"X-CloudScheduler-ScheduleTime": "2024-03-25T13:00:00Z"}
    response = proxy.post(URL_PATH, body, headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT") and fragment in error["message"]
    assert executions(base, "2024-03-25t13-00-00z") == []


def test_the_execution_fields_and_enums_are_the_executions_apis():
    """The rule's field set and the enums checked are read from Google's discovery document."""
    if not DISCOVERY.exists():
        pytest.skip(f"{DISCOVERY} is absent")
    execution = json.loads(DISCOVERY.read_text())["schemas"]["Execution"]["properties"]
    writable = {key for key, spec in execution.items() if not spec.get("readOnly")}
    assert execution_body.EXECUTION_FIELDS == writable
    assert tuple(execution["callLogLevel"]["enum"]) == execution_body.CALL_LOG_LEVELS
    assert tuple(execution["executionHistoryLevel"]["enum"]) == execution_body.EXECUTION_HISTORY_LEVELS
    assert execution["disableConcurrencyQuotaOverflowBuffering"]["type"] == "boolean"
