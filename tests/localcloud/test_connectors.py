"""The Workflow Executions connectors, called from workflows run by the local API.

Behaviour per Google's connector reference (googleapis/workflowexecutions/v1/
projects.locations.workflows.executions/{create,get,list,cancel,run}): create and run wait for
the execution unless connector_params.skip_polling; create returns the Execution, run the
JSON-decoded result; a failed child raises OperationError; status >= 400 raises HttpError;
a wait longer than connector_params.timeout raises TimeoutError.
"""
from __future__ import annotations

import json
import time

import pytest
import requests

from localcloud import api
from localcloud.context import Context
from localcloud.errors import WorkflowError
from localcloud.stdlib import get as builtin

PREFIX = "googleapis.workflowexecutions.v1.projects.locations.workflows.executions"
PARENT = "projects/local-project/locations/us-central1/workflows"
HEAD = """
main:
  params: [args]
  steps:
    - where:
        assign:
          - base: ${"projects/" + sys.get_env("GOOGLE_CLOUD_PROJECT_ID") + "/locations/" + sys.get_env("GOOGLE_CLOUD_LOCATION") + "/workflows/"}
"""
WORKFLOWS = {
    "child.yaml": """
main:
  params: [args]
  steps:
    - check:
        switch:
          - condition: ${args.fail}
            raise: {code: 42, message: child failed}
    - nap:
        call: sys.sleep
        args:
          seconds: ${args.nap}
    - done:
        return: {doubled: "${args.n * 2}"}
""",
    "create_wait.yaml": HEAD + """
    - start:
        call: %s.create
        args:
          parent: ${base + "child"}
          body:
            argument: ${json.encode_to_string(args.child)}
            labels: {origin: parent}
        result: execution
    - done:
        return: ${execution}
""" % PREFIX,
    "create_nowait.yaml": HEAD + """
    - start:
        call: %s.create
        args:
          parent: ${base + "child"}
          body:
            argument: ${json.encode_to_string(args.child)}
          connector_params: {skip_polling: true}
        result: execution
    - fetch:
        call: %s.get
        args:
          name: ${execution.name}
        result: fetched
    - done:
        return: {created: "${execution.state}", fetched_name: "${fetched.name}", name: "${execution.name}"}
""" % (PREFIX, PREFIX),
    "run_child.yaml": HEAD + """
    - go:
        call: %s.run
        args:
          workflow_id: child
          argument: {n: 5, fail: false, nap: 0}
        result: value
    - done:
        return: ${value}
""" % PREFIX,
    "child_fails.yaml": HEAD + """
    - go:
        try:
          call: %s.run
          args:
            workflow_id: child
            argument: {n: 5, fail: true, nap: 0}
        except:
          as: e
          steps:
            - caught:
                return:
                  tags: ${e.tags}
                  state: ${e.operation.state}
                  payload: ${json.decode(e.operation.error.payload)}
""" % PREFIX,
    "missing.yaml": HEAD + """
    - go:
        try:
          call: %s.create
          args:
            parent: ${base + "nope"}
            body: {}
        except:
          as: e
          steps:
            - caught:
                return:
                  tags: ${e.tags}
                  code: ${e.code}
                  status: ${e.body.error.status}
                  type: ${e.headers["Content-Type"]}
""" % PREFIX,
    "too_slow.yaml": HEAD + """
    - go:
        try:
          call: %s.create
          args:
            parent: ${base + "child"}
            body:
              argument: ${json.encode_to_string(args.child)}
            connector_params: {timeout: 0.3}
        except:
          as: e
          steps:
            - caught:
                return: ${e.tags}
""" % PREFIX,
    "list_and_cancel.yaml": HEAD + """
    - start:
        call: %s.create
        args:
          parent: ${base + "child"}
          body:
            argument: ${json.encode_to_string(args.child)}
            labels: {batch: b7}
          connector_params: {skip_polling: true}
        result: execution
    - stop:
        call: %s.cancel
        args:
          name: ${execution.name}
        result: cancelled
    - find:
        call: %s.list
        args:
          parent: ${base + "child"}
          filter: labels.batch="b7"
          view: FULL
        result: found
    - done:
        return:
          cancelled: ${cancelled.state}
          found: ${len(found.executions)}
          found_state: ${found.executions[0].state}
          same: ${found.executions[0].name == execution.name}
""" % (PREFIX, PREFIX, PREFIX),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workflows")
    for name, text in WORKFLOWS.items():
        (folder / name).write_text(text)
    server = api.start(folder, tmp_path_factory.mktemp("state"), log=lambda entry: None)
    session = requests.Session()
    session.headers["Authorization"] = "Bearer t"

    def run(workflow, argument=None):
        body = {} if argument is None else {"argument": json.dumps(argument)}
        created = session.post(f"{server.url}/v1/{PARENT}/{workflow}/executions", json=body, timeout=10).json()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            execution = session.get(f"{server.url}/v1/{created['name']}", timeout=10).json()
            if execution["state"] != "ACTIVE":
                assert execution["state"] == "SUCCEEDED", execution
                return json.loads(execution["result"])
            time.sleep(0.02)
        raise AssertionError(f"{workflow} did not finish")
    run.session, run.url = session, server.url
    yield run
    server.stop()


def test_create_waits_and_returns_the_finished_execution(client):
    execution = client("create_wait", {"child": {"n": 21, "fail": False, "nap": 0}})
    assert execution["state"] == "SUCCEEDED"
    assert json.loads(execution["result"]) == {"doubled": 42}
    assert execution["labels"] == {"origin": "parent"}
    assert execution["name"].startswith(f"{PARENT}/child/executions/")


def test_create_with_skip_polling_returns_the_active_execution(client):
    out = client("create_nowait", {"child": {"n": 1, "fail": False, "nap": 0.2}})
    assert out["created"] == "ACTIVE" and out["fetched_name"] == out["name"]


def test_run_returns_the_decoded_result(client):
    assert client("run_child") == {"doubled": 10}


def test_a_failed_child_raises_operation_error_with_the_execution(client):
    out = client("child_fails")
    assert "OperationError" in out["tags"]
    assert out["state"] == "FAILED" and out["payload"] == {"code": 42, "message": "child failed"}


def test_api_errors_raise_http_error_with_code_and_body(client):
    assert client("missing") == {"tags": ["HttpError"], "code": 404, "status": "NOT_FOUND",
                                 "type": "application/json; charset=UTF-8"}


def test_waiting_longer_than_the_timeout_raises_timeout_error(client):
    assert "TimeoutError" in client("too_slow", {"child": {"n": 1, "fail": False, "nap": 30}})


def test_list_with_a_label_filter_and_cancel(client):
    assert client("list_and_cancel", {"child": {"n": 1, "fail": False, "nap": 30}}) == {"cancelled": "CANCELLED", "found": 1, "found_state": "CANCELLED",
                                         "same": True}


def test_without_an_api_url_connectors_fail_with_a_connection_error():
    with pytest.raises(WorkflowError) as caught:
        builtin(f"{PREFIX}.get").call(Context(api_url=None), kwargs={"name": f"{PARENT}/w/executions/x"})
    assert "ConnectionFailedError" in caught.value.tags


def test_an_unreachable_api_is_a_connection_failure():
    with pytest.raises(WorkflowError) as caught:
        builtin(f"{PREFIX}.list").call(Context(api_url="http://127.0.0.1:9"), kwargs={"parent": f"{PARENT}/w"})
    assert "ConnectionFailedError" in caught.value.tags


def test_bad_argument_types_raise_type_error():
    with pytest.raises(WorkflowError) as caught:
        builtin(f"{PREFIX}.run").call(Context(api_url="http://127.0.0.1:9"), kwargs={"workflow_id": 7})
    assert caught.value.tags == ["TypeError"]


# Workflows bills and counts "polling attempts made by connectors for long-running operations"
# as steps (https://cloud.google.com/workflows/pricing, internal steps), so a create that waits
# for a long child spends steps while it waits; with skip_polling it spends none.
def test_a_create_that_polls_a_long_child_spends_steps_and_skip_polling_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALCLOUD_STEP_LIMIT", "6")
    folder = tmp_path / "workflows"
    folder.mkdir()
    for name in ("child.yaml", "create_wait.yaml", "create_nowait.yaml"):
        (folder / name).write_text(WORKFLOWS[name])
    server = api.start(folder, tmp_path / "state", log=lambda entry: None)
    headers = {"Authorization": "Bearer t"}
    child = json.dumps({"child": {"n": 1, "fail": False, "nap": 12}})
    try:
        names = [requests.post(f"{server.url}/v1/{PARENT}/{workflow}/executions", json={"argument": child},
                               headers=headers, timeout=10).json()["name"]
                 for workflow in ("create_wait", "create_nowait")]
        for name in names:
            server.executions.wait(name, timeout=30)
        waited, skipped = (requests.get(f"{server.url}/v1/{name}", headers=headers, timeout=10).json()
                           for name in names)
    finally:
        server.stop()
    # 3 steps of its own (where, start, done) and 4 polls pass 6 long before the child's 12 s end.
    assert waited["state"] == "FAILED" and "Step limit exceeded" in waited["error"]["payload"]
    assert skipped["state"] == "SUCCEEDED", skipped.get("error")
