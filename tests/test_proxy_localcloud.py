"""The proxy against localcloud's Executions API: the same contract end to end (bearer token,
label rules, the label filter, view=FULL), with real runs that finish."""
from __future__ import annotations

import json
import time

import pytest
import requests

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
