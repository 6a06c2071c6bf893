"""localcloud's Executions API and Cloud Scheduler API driven by Google's own discovery-based
client (google-api-python-client, with the discovery documents it ships, not ours): a client no
one here wrote, as gcloud is in tests/test_gcloud.py and google-cloud-storage in test_storage.py."""
from __future__ import annotations

import json
import time

import pytest

from localcloud import api, scheduler

discovery = pytest.importorskip("googleapiclient.discovery")
errors = pytest.importorskip("googleapiclient.errors")
from google.oauth2.credentials import Credentials  # noqa: E402

PARENT = f"projects/{api.PROJECT}/locations/{api.LOCATION}"
WORKFLOWS = {
    "echo.yaml": "main:\n  params: [args]\n  steps:\n    - done:\n        return: ${args}\n",
    "slow.yaml": "main:\n  steps:\n    - wait:\n        call: sys.sleep\n        args: {seconds: 30}\n",
}


def google_client(name: str, url: str):
    return discovery.build(name, "v1", credentials=Credentials(token="localcloud"), static_discovery=True,
                           client_options={"api_endpoint": url + "/"})


@pytest.fixture
def executions(tmp_path):
    folder = tmp_path / "workflows"
    folder.mkdir()
    for name, text in WORKFLOWS.items():
        (folder / name).write_text(text)
    running = api.start(folder, tmp_path / "state", log=lambda entry: None)
    yield google_client("workflowexecutions", running.url).projects().locations().workflows().executions()
    running.stop()


def finished(executions, name: str) -> dict:
    for _ in range(200):
        execution = executions.get(name=name).execute()
        if execution["state"] != "ACTIVE":
            return execution
        time.sleep(0.05)
    raise AssertionError(f"{name} still ACTIVE")


def test_create_get_and_the_basic_view(executions):
    created = executions.create(parent=f"{PARENT}/workflows/echo", body={
        "argument": json.dumps({"table": "sales"}), "labels": {"trigger": "manual"}}).execute()
    assert created["state"] == "ACTIVE" and created["labels"] == {"trigger": "manual"}
    done = finished(executions, created["name"])
    assert done["state"] == "SUCCEEDED" and json.loads(done["result"]) == {"table": "sales"}
    basic = executions.get(name=created["name"], view="BASIC").execute()
    assert "argument" not in basic and "result" not in basic and basic["state"] == "SUCCEEDED"


def test_list_pages_newest_first_with_a_label_filter_and_partial_responses(executions):
    names = [executions.create(parent=f"{PARENT}/workflows/echo", body={
        "argument": "{}", "labels": {"batch": "yes" if n % 2 == 0 else "no"}}).execute()["name"] for n in range(5)]
    request = executions.list(parent=f"{PARENT}/workflows/echo", filter='labels.batch="yes"',
                              orderBy="createTime desc", pageSize=2, fields="executions(name),nextPageToken")
    pages = []
    while request is not None:
        page = request.execute()
        pages.append(page)
        request = executions.list_next(request, page)
    listed = [execution["name"] for page in pages for execution in page.get("executions", [])]
    assert listed == [names[4], names[2], names[0]]
    assert all(set(execution) == {"name"} for page in pages for execution in page.get("executions", []))


def test_cancel_ends_a_running_execution(executions):
    created = executions.create(parent=f"{PARENT}/workflows/slow", body={}).execute()
    assert executions.cancel(name=created["name"], body={}).execute()["state"] == "CANCELLED"
    assert executions.get(name=created["name"]).execute()["state"] == "CANCELLED"


def test_a_missing_execution_is_a_404_the_client_reads(executions):
    with pytest.raises(errors.HttpError) as raised:
        executions.get(name=f"{PARENT}/workflows/echo/executions/nope").execute()
    assert raised.value.status_code == 404 and raised.value.reason


def test_a_scheduler_job_through_its_lifecycle():
    running = scheduler.start([], tick=None, log=lambda entry: None)
    try:
        jobs = google_client("cloudscheduler", running.url).projects().locations().jobs()
        name = f"{PARENT}/jobs/nightly"
        created = jobs.create(parent=PARENT, body={
            "name": name, "schedule": "0 2 * * *", "timeZone": "Europe/Paris",
            "httpTarget": {"uri": "http://127.0.0.1:9/x", "httpMethod": "POST", "body": "e30="}}).execute()
        assert created["state"] == "ENABLED" and created["scheduleTime"]
        assert [job["name"] for job in jobs.list(parent=PARENT).execute()["jobs"]] == [name]
        assert jobs.pause(name=name, body={}).execute()["state"] == "PAUSED"
        assert jobs.resume(name=name, body={}).execute()["state"] == "ENABLED"
        patched = jobs.patch(name=name, updateMask="schedule", body={"schedule": "0 3 * * *"}).execute()
        assert (patched["schedule"], patched["timeZone"]) == ("0 3 * * *", "Europe/Paris")
        jobs.delete(name=name).execute()
        with pytest.raises(errors.HttpError) as raised:
            jobs.get(name=name).execute()
        assert raised.value.status_code == 404
    finally:
        running.stop()
