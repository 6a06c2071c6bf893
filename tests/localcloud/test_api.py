"""The local Workflow Executions API over real HTTP on loopback.

Shapes follow Google's reference: projects.locations.workflows.executions (Execution fields,
states), its create/get/list/cancel methods, ListExecutionsRequest (pageSize default 100, max
1000 BASIC / 100 FULL, coerced down; view BASIC = name, startTime, endTime, duration, state,
workflowRevisionId; list default BASIC, get default FULL; default order createTime desc) and
Google's error JSON {"error": {"code", "message", "status"}}.
"""
from __future__ import annotations

import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
import requests

from localcloud import api
from localcloud.store import Store

PARENT = "projects/local-project/locations/us-central1/workflows"
WORKFLOWS = {
    "hello.yaml": """
main:
  params: [args]
  steps:
    - greet:
        return:
          greeting: ${"hello " + args.name}
          colour: ${sys.get_env("COLOUR")}
          workflow: ${sys.get_env("GOOGLE_CLOUD_WORKFLOW_ID")}
          execution: ${sys.get_env("GOOGLE_CLOUD_WORKFLOW_EXECUTION_ID")}
""",
    "fail.yaml": """
- boom:
    raise:
      code: 7
      message: boom
""",
    "slow.yaml": """
- before:
    call: sys.log
    args:
      text: going to sleep
- wait:
    call: sys.sleep
    args:
      seconds: 30
- after:
    call: sys.log
    args:
      text: woke up
""",
    "noargs.json": json.dumps([{"done": {"return": "${1 + 1}"}}]),
    "broken.yaml": "- a:\n    next: nowhere\n",
}


def quiet(entry):
    pass


@pytest.fixture
def workflows(tmp_path):
    folder = tmp_path / "workflows"
    folder.mkdir()
    for name, text in WORKFLOWS.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def server(workflows, state):
    started = api.start(workflows, state, env={"hello": {"COLOUR": "blue"}}, log=quiet)
    yield started
    started.stop()


class Client:
    def __init__(self, url):
        self.url, self.session = url, requests.Session()
        self.session.headers["Authorization"] = "Bearer test-token"

    def call(self, method, path, **kwargs):
        response = self.session.request(method, f"{self.url}/v1/{path}", timeout=10, **kwargs)
        return response.status_code, response.json()

    def create(self, workflow, body=None, expect=200):
        status, execution = self.call("POST", f"{PARENT}/{workflow}/executions", json=body or {})
        assert status == expect, execution
        return execution

    def get(self, name, **params):
        status, execution = self.call("GET", name, params=params)
        assert status == 200, execution
        return execution

    def wait(self, name, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            execution = self.get(name)
            if execution["state"] != "ACTIVE":
                return execution
            time.sleep(0.02)
        raise AssertionError(f"{name} still ACTIVE after {timeout}s")

    def list(self, workflow, **params):
        status, body = self.call("GET", f"{PARENT}/{workflow}/executions", params=params)
        assert status == 200, body
        return body


@pytest.fixture
def client(server):
    return Client(server.url)


def assert_google_error(status_body, code, status):
    got_code, body = status_body
    assert got_code == code, body
    assert set(body) == {"error"}
    assert body["error"]["code"] == code and body["error"]["status"] == status
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def instant(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- create, get ---------------------------------------------------------------------------------

def test_create_returns_active_then_the_run_succeeds_with_a_json_result(client):
    argument = json.dumps({"name": "ada"})
    created = client.create("hello", {"argument": argument, "labels": {"team": "data"},
                                      "callLogLevel": "LOG_ERRORS_ONLY"})
    assert created["state"] == "ACTIVE"
    assert created["name"].startswith(f"{PARENT}/hello/executions/")
    assert created["argument"] == argument and created["labels"] == {"team": "data"}
    assert created["callLogLevel"] == "LOG_ERRORS_ONLY"
    assert created["workflowRevisionId"] and created["createTime"] and created["startTime"]
    assert "result" not in created and "endTime" not in created

    done = client.wait(created["name"])
    execution_id = created["name"].rsplit("/", 1)[1]
    assert done["state"] == "SUCCEEDED"
    assert json.loads(done["result"]) == {"greeting": "hello ada", "colour": "blue",
                                          "workflow": "hello", "execution": execution_id}
    assert instant(done["endTime"]) >= instant(done["startTime"])
    assert done["duration"].endswith("s") and float(done["duration"][:-1]) >= 0
    assert done["labels"] == {"team": "data"} and "error" not in done


def test_workflow_without_params_runs_without_argument(client):
    created = client.create("noargs")
    assert "argument" not in created
    assert json.loads(client.wait(created["name"])["result"]) == 2


def test_uncaught_error_fails_the_execution_with_the_payload_as_json(client):
    done = client.wait(client.create("fail")["name"])
    assert done["state"] == "FAILED" and "result" not in done
    assert json.loads(done["error"]["payload"]) == {"code": 7, "message": "boom"}
    assert "boom" in done["error"]["context"]
    assert done["error"]["stackTrace"]["elements"][0]["step"] == "boom"


def test_get_view_basic_has_only_the_basic_fields(client):
    name = client.wait(client.create("hello", {"argument": '{"name": "x"}'})["name"])["name"]
    basic = client.get(name, view="BASIC")
    assert set(basic) == {"name", "startTime", "endTime", "duration", "state", "workflowRevisionId"}
    assert "result" in client.get(name)          # FULL by default


def test_cancel_stops_the_run_and_is_final(client, server):
    created = client.create("slow")
    assert client.get(created["name"])["state"] == "ACTIVE"
    status, cancelled = client.call("POST", f"{created['name']}:cancel", json={})
    assert status == 200 and cancelled["state"] == "CANCELLED" and cancelled["endTime"]
    server.executions.wait(created["name"], timeout=10)     # the thread has ended
    after = client.get(created["name"])
    assert after["state"] == "CANCELLED" and "result" not in after
    assert not any(entry["message"] == "woke up" for entry in server.logs)
    # Cancelling again: the execution is no longer active.
    assert_google_error(client.call("POST", f"{created['name']}:cancel", json={}), 400, "FAILED_PRECONDITION")


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}])
def test_requests_without_a_bearer_token_are_unauthenticated(server, headers):
    response = requests.get(f"{server.url}/v1/{PARENT}/hello/executions", headers=headers, timeout=10)
    assert_google_error((response.status_code, response.json()), 401, "UNAUTHENTICATED")


@pytest.mark.parametrize("path", [
    "projects/other/locations/us-central1/workflows/hello/executions",
    "projects/local-project/locations/europe-west1/workflows/hello/executions",
    f"{PARENT}/missing/executions",
    f"{PARENT}/hello/executions/00000000-0000-0000-0000-000000000000",
    "v2/anything",
])
def test_unknown_resources_are_not_found(client, path):
    assert_google_error(client.call("GET", path), 404, "NOT_FOUND")


def test_create_on_a_missing_workflow_is_not_found(client):
    assert_google_error(client.call("POST", f"{PARENT}/missing/executions", json={}), 404, "NOT_FOUND")


@pytest.mark.parametrize("body", [
    {"argument": "{not json"},
    {"argument": {"name": "a map, not a JSON string"}},
    {"argument": json.dumps({"blob": "x" * (32 * 1024)})},           # over 32 KB
    {"labels": {"Team": "data"}},                                     # uppercase key
    {"labels": {"1team": "data"}},                                    # key must start with a letter
    {"labels": {"team": "Data"}},                                     # uppercase value
    {"labels": {"team": "d" * 64}},                                   # value over 63 characters
    {"labels": {f"k{i}": "v" for i in range(65)}},                   # more than 64 labels
    {"labels": {"team": 3}},
    {"callLogLevel": "EVERYTHING"},
    {"arguments": "{}"},                                              # unknown field
])
def test_invalid_create_bodies_are_rejected(client, body):
    assert_google_error(client.call("POST", f"{PARENT}/hello/executions", json=body), 400, "INVALID_ARGUMENT")


def test_argument_of_exactly_32_kb_and_international_lowercase_labels_are_accepted(client):
    padding = 32 * 1024 - len(json.dumps({"name": "", "pad": ""}))
    argument = json.dumps({"name": "", "pad": "x" * padding})
    assert len(argument.encode()) == 32 * 1024
    created = client.create("hello", {"argument": argument, "labels": {"équipe": "données-1_a", "empty": ""}})
    assert client.wait(created["name"])["state"] == "SUCCEEDED"


def test_malformed_json_and_unknown_query_parameters_are_invalid(client, server):
    response = requests.post(f"{server.url}/v1/{PARENT}/hello/executions", data=b"{oops",
                             headers={"Authorization": "Bearer t"}, timeout=10)
    assert_google_error((response.status_code, response.json()), 400, "INVALID_ARGUMENT")
    assert_google_error(client.call("GET", f"{PARENT}/hello/executions", params={"colour": "red"}),
                        400, "INVALID_ARGUMENT")


def test_a_workflow_that_would_not_deploy_is_refused(client):
    assert_google_error(client.call("POST", f"{PARENT}/broken/executions", json={}), 400, "FAILED_PRECONDITION")


# --- list ----------------------------------------------------------------------------------------

def seed(state_dir, count, start=datetime(2024, 1, 1, tzinfo=timezone.utc)):
    """Terminal executions written straight into the store, as an earlier run would have left them."""
    store = Store(state_dir)
    docs = []
    for i in range(count):
        moment = (start + timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        doc = {"name": f"{PARENT}/hello/executions/e{i:04d}", "createTime": moment, "startTime": moment,
               "endTime": moment, "duration": "0s", "state": ("SUCCEEDED", "FAILED", "CANCELLED")[i % 3],
               "workflowRevisionId": "000001-abc", "argument": json.dumps({"i": i}),
               "labels": {"parity": ("even", "odd")[i % 2], "i": str(i)}}
        store.insert(doc)
        docs.append(doc)
    store.close()
    return docs


@pytest.fixture
def seeded(workflows, state):
    docs = seed(state, 150)
    started = api.start(workflows, state, log=quiet)
    yield Client(started.url), docs
    started.stop()


def ids(executions):
    return [e["name"].rsplit("/", 1)[1] for e in executions]


def all_pages(client, **params):
    seen, token = [], params.pop("pageToken", None)
    while True:
        page = client.list("hello", **params, **({"pageToken": token} if token else {}))
        seen += page.get("executions", [])
        token = page.get("nextPageToken")
        if not token:
            return seen


def test_list_is_newest_first_with_default_and_maximum_page_sizes(seeded):
    client, docs = seeded
    newest_first = ids(sorted(docs, key=lambda d: d["createTime"], reverse=True))
    first = client.list("hello")
    assert ids(first["executions"]) == newest_first[:100] and "nextPageToken" in first
    assert set(first["executions"][0]) <= {"name", "startTime", "endTime", "duration", "state",
                                           "workflowRevisionId"}
    assert len(client.list("hello", pageSize=1000)["executions"]) == 150          # BASIC max 1000
    full = client.list("hello", pageSize=1000, view="FULL")
    assert len(full["executions"]) == 100 and full["executions"][0]["labels"]    # FULL max 100


def test_paging_visits_every_execution_once_even_when_new_ones_arrive(seeded):
    client, docs = seeded
    page = client.list("hello", pageSize=40)
    client.wait(client.create("hello", {"argument": '{"name": "late"}'})["name"])
    rest = all_pages(client, pageSize=40, pageToken=page["nextPageToken"])
    assert ids(page["executions"] + rest) == ids(sorted(docs, key=lambda d: d["createTime"], reverse=True))


def test_later_pages_show_executions_as_they_are_now(seeded, state):
    """Pages after the first keep the first page's order but read each execution afresh: one
    that left the filter meanwhile is left out, one still in it shows its new fields."""
    client, docs = seeded
    page = client.list("hello", filter='labels.parity="odd"', pageSize=10, view="FULL")
    odd_newest_first = ids(sorted((d for d in docs if d["labels"]["parity"] == "odd"),
                                  key=lambda d: d["createTime"], reverse=True))
    left, renamed = f"{PARENT}/hello/executions/{odd_newest_first[15]}", f"{PARENT}/hello/executions/{odd_newest_first[20]}"
    store = Store(state)  # a second writer on the same state, as another localcloud process would be
    store.update(left, lambda doc: {**doc, "labels": {**doc["labels"], "parity": "none"}})
    store.update(renamed, lambda doc: {**doc, "labels": {**doc["labels"], "note": "changed"}})
    store.close()
    rest = all_pages(client, filter='labels.parity="odd"', pageSize=10, view="FULL", pageToken=page["nextPageToken"])
    assert ids(page["executions"] + rest) == [i for i in odd_newest_first if i != odd_newest_first[15]]
    assert next(e for e in rest if e["name"] == renamed)["labels"]["note"] == "changed"


def test_a_page_token_outlives_the_server_that_gave_it(workflows, state):
    docs = seed(state, 150)
    first = api.start(workflows, state, log=quiet)
    page = Client(first.url).list("hello", pageSize=40)
    first.stop()
    second = api.start(workflows, state, log=quiet)
    try:
        rest = all_pages(Client(second.url), pageSize=40, pageToken=page["nextPageToken"])
    finally:
        second.stop()
    assert ids(page["executions"] + rest) == ids(sorted(docs, key=lambda d: d["createTime"], reverse=True))


@pytest.mark.parametrize("text, keep", [
    ('state="FAILED"', lambda d: d["state"] == "FAILED"),
    ('state!="FAILED"', lambda d: d["state"] != "FAILED"),
    ('labels.parity="odd"', lambda d: d["labels"]["parity"] == "odd"),
    ('labels.parity="odd" AND state="CANCELLED"', lambda d: d["labels"]["parity"] == "odd" and d["state"] == "CANCELLED"),
    ('state="FAILED" OR state="CANCELLED"', lambda d: d["state"] in ("FAILED", "CANCELLED")),
    ('labels.parity="even" AND (state="FAILED" OR labels.i="3")',
     lambda d: d["labels"]["parity"] == "even" and (d["state"] == "FAILED" or d["labels"]["i"] == "3")),
    ('NOT state="SUCCEEDED"', lambda d: d["state"] != "SUCCEEDED"),
    ('createTime>="2024-01-01T02:00:00Z"', lambda d: d["createTime"] >= "2024-01-01T02:00:00"),
    ('executionId="e0042"', lambda d: d["name"].endswith("/e0042")),
    ('labels.missing="x"', lambda d: False),
    ('labels.parity="odd" labels.i="3"', lambda d: d["labels"]["i"] == "3"),
    ('labels.parity="odd" AND labels.parity="even"', lambda d: False),
    ('-labels.parity="odd"', lambda d: d["labels"]["parity"] != "odd"),
    ('labels.parity="odd" OR labels.i="4"', lambda d: d["labels"]["parity"] == "odd" or d["labels"]["i"] == "4"),
])
def test_filters_select_what_a_direct_python_check_selects(seeded, text, keep):
    client, docs = seeded
    expected = ids(sorted((d for d in docs if keep(d)), key=lambda d: d["createTime"], reverse=True))
    assert ids(all_pages(client, filter=text, pageSize=7)) == expected


def test_order_by_create_time_ascending(seeded):
    client, docs = seeded
    assert ids(all_pages(client, orderBy="createTime asc")) == ids(docs)


@pytest.mark.parametrize("params", [
    {"filter": 'colour="red"'}, {"filter": 'state="FAILED" AND'}, {"filter": "(state=\"FAILED\""},
    {"orderBy": "colour desc"}, {"pageSize": "ten"}, {"pageSize": "-1"}, {"view": "MOST"},
    {"pageToken": "not-a-token"},
])
def test_bad_list_parameters_are_invalid_arguments(seeded, params):
    client, _ = seeded
    assert_google_error(client.call("GET", f"{PARENT}/hello/executions", params=params), 400, "INVALID_ARGUMENT")


def test_a_page_token_only_works_with_the_same_filter(seeded):
    client, _ = seeded
    token = client.list("hello", filter='state="FAILED"', pageSize=5)["nextPageToken"]
    assert_google_error(client.call("GET", f"{PARENT}/hello/executions",
                                    params={"filter": 'state="SUCCEEDED"', "pageToken": token}),
                        400, "INVALID_ARGUMENT")


def test_an_empty_list_is_an_empty_object(client):
    assert client.list("fail") == {}


# --- persistence, concurrency --------------------------------------------------------------------

def test_history_survives_a_restart_and_active_runs_end_failed(workflows, state):
    first = api.start(workflows, state, log=quiet)
    client = Client(first.url)
    finished = client.wait(client.create("hello", {"argument": '{"name": "kept"}'})["name"])
    running = client.create("slow")
    first.stop()
    # A process that died without stopping leaves ACTIVE records behind.
    crashed = {"name": f"{PARENT}/slow/executions/crashed", "state": "ACTIVE",
               "createTime": "2024-01-01T00:00:00Z", "startTime": "2024-01-01T00:00:00Z"}
    store = Store(state)
    store.insert(crashed)
    store.close()

    second = api.start(workflows, state, log=quiet)
    try:
        client = Client(second.url)
        assert client.get(finished["name"]) == finished
        interrupted = client.get(running["name"])
        assert interrupted["state"] == "FAILED" and interrupted["endTime"]
        assert "UnavailableError" in json.loads(interrupted["error"]["payload"])["tags"]
        after_crash = client.get(crashed["name"])
        assert after_crash["state"] == "FAILED" and after_crash["error"] == interrupted["error"]
        assert ids(client.list("hello")["executions"]) == ids([finished])
    finally:
        second.stop()


def test_a_store_written_before_the_label_index_is_indexed_when_opened(workflows, state):
    import sqlite3
    docs = seed(state, 12)
    with sqlite3.connect(state / "executions.sqlite3") as db:  # as an older localcloud left it
        db.execute("DELETE FROM labels")
        db.execute("PRAGMA user_version = 0")
    started = api.start(workflows, state, log=quiet)
    try:
        found = Client(started.url).list("hello", filter='labels.parity="odd"')
        assert ids(found["executions"]) == ids(sorted((d for d in docs if d["labels"]["parity"] == "odd"),
                                                      key=lambda d: d["createTime"], reverse=True))
    finally:
        started.stop()


def test_concurrent_creates_are_all_recorded_and_run(client):
    with ThreadPoolExecutor(8) as pool:
        names = list(pool.map(lambda i: client.create("hello", {"argument": json.dumps({"name": str(i)})})["name"],
                              range(24)))
    results = sorted(json.loads(client.wait(name)["result"])["greeting"] for name in names)
    assert results == sorted(f"hello {i}" for i in range(24))
    assert sorted(ids(all_pages(client))) == sorted(name.rsplit("/", 1)[1] for name in names)


def test_sys_log_lines_are_structured_and_labelled(workflows, state):
    lines = []
    server = api.start(workflows, state, log=lines.append)
    try:
        client = Client(server.url)
        created = client.create("slow")
        client.call("POST", f"{created['name']}:cancel", json={})
        server.executions.wait(created["name"])
    finally:
        server.stop()
    assert all(isinstance(line.get("severity"), str) and "message" in line for line in lines)
    (logged,) = [line for line in lines if line["message"] == "going to sleep"]
    assert logged["logging.googleapis.com/labels"]["workflows.googleapis.com/execution_id"] == \
        created["name"].rsplit("/", 1)[1]


def test_each_create_uses_the_latest_file_as_a_new_revision(client, workflows):
    first = client.wait(client.create("noargs")["name"])
    (workflows / "noargs.json").write_text(json.dumps([{"done": {"return": "${2 + 2}"}}]))
    second = client.wait(client.create("noargs")["name"])
    assert (json.loads(first["result"]), json.loads(second["result"])) == (2, 4)
    assert first["workflowRevisionId"] != second["workflowRevisionId"]


# --- the filter language itself (AIP-160), on small documents -------------------------------------

def doc(state, labels=None, duration="1s"):
    return {"name": f"{PARENT}/w/executions/x", "state": state, "labels": labels or {}, "duration": duration}


@pytest.mark.parametrize("text, document, expected", [
    # AIP-160: OR binds tighter than AND, so this is a AND (b OR c).
    ('state="FAILED" AND state="SUCCEEDED" OR labels.k="v"', doc("SUCCEEDED", {"k": "v"}), False),
    ('state="FAILED" AND state="SUCCEEDED" OR labels.k="v"', doc("FAILED", {"k": "v"}), True),
    ('state="FAILED" labels.k="v"', doc("FAILED", {"k": "w"}), False),       # juxtaposition is AND
    ('-state="FAILED"', doc("FAILED"), False),
    ('NOT (state="FAILED" OR state="CANCELLED")', doc("SUCCEEDED"), True),
    ("labels:k", doc("FAILED", {"k": ""}), True),
    ("labels.k:*", doc("FAILED", {}), False),
    ('duration>"2.5s"', doc("FAILED", duration="3.000000s"), True),
    ('duration<="2.5s"', doc("FAILED", duration="3.000000s"), False),
    ("state=FAILED", doc("FAILED"), True),                                    # bare words are values
])
def test_filter_language(text, document, expected):
    from localcloud.filters import parse_filter
    assert parse_filter(text)(document) is expected


# The workflows.v1 discovery document, Workflow.userEnvVars: "This map has a maximum length of 20.
# Each string can take up to 4KiB. Keys cannot be empty strings and cannot start with "GOOGLE" or
# "WORKFLOWS"." localcloud refuses to serve what Google would refuse to deploy.
@pytest.mark.parametrize(("env", "message"), [
    ({f"V{n}": "x" for n in range(21)}, "at most 20"),
    ({"GOOGLEISH": "x"}, "may not start with GOOGLE or WORKFLOWS"),
    ({"WORKFLOWSX": "x"}, "may not start with GOOGLE or WORKFLOWS"),
    ({"": "x"}, "needs a name"),
    ({"BIG": "é" * 2049}, "4 KiB"),
])
def test_user_env_vars_follow_the_discovery_documents_rules(tmp_path, env, message):
    with pytest.raises(ValueError, match=message):
        api.start(tmp_path, tmp_path / "state", env={"w": env}, log=lambda entry: None)
    # Refused before the state folder was locked: a valid API can start there now.
    api.start(tmp_path, tmp_path / "state", env={"w": {f"V{n}": "x" * 4096 for n in range(20)}},
              log=lambda entry: None).stop()


# --- the concurrency quota and the backlog ------------------------------------------------------
# Per project and region, 10,000 concurrent executions, then up to 100,000 backlogged (QUEUED),
# started as executions end; past both, or with disableConcurrencyQuotaOverflowBuffering, 429
# (https://cloud.google.com/workflows/quotas, https://cloud.google.com/workflows/docs/backlog-executions,
# Execution.disableConcurrencyQuotaOverflowBuffering in the workflowexecutions.v1 discovery document).
# LOCALCLOUD_CONCURRENT_EXECUTIONS and LOCALCLOUD_BACKLOG lower both for the test.
NAP = """
main:
  params: [args]
  steps:
    - nap:
        call: sys.sleep
        args:
          seconds: ${args.seconds}
    - done:
        return: ${args.n}
"""


@pytest.mark.parametrize("attempt", range(3))
def test_past_the_concurrency_quota_executions_wait_queued_and_past_the_backlog_get_429(
        tmp_path, monkeypatch, attempt):
    monkeypatch.setenv("LOCALCLOUD_CONCURRENT_EXECUTIONS", "2")
    monkeypatch.setenv("LOCALCLOUD_BACKLOG", "2")
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "nap.yaml").write_text(NAP)
    server = api.start(folder, tmp_path / "state", log=quiet)
    url, headers = f"{server.url}/v1/{PARENT}/nap/executions", {"Authorization": "Bearer t"}
    answers: list = [None] * 5

    def create(n):
        answers[n] = requests.post(url, headers=headers, timeout=10,
                                   json={"argument": json.dumps({"n": n, "seconds": 0.6})})
    try:
        threads = [threading.Thread(target=create, args=(n,)) for n in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        refused = requests.post(url, headers=headers, timeout=10, json={
            "argument": json.dumps({"n": 9, "seconds": 0}), "disableConcurrencyQuotaOverflowBuffering": True})
        codes = sorted(answer.status_code for answer in answers)
        created = [answer.json() for answer in answers if answer.status_code == 200]
        for execution in created:
            server.executions.wait(execution["name"], timeout=20)
        final = [requests.get(f"{server.url}/v1/{e['name']}", headers=headers, timeout=10).json() for e in created]
    finally:
        server.stop()
    assert codes == [200, 200, 200, 200, 429]
    assert refused.status_code == 429 and refused.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert sorted(e["state"] for e in created) == ["ACTIVE", "ACTIVE", "QUEUED", "QUEUED"]
    assert all(e["state"] == "SUCCEEDED" for e in final)
    # Never more than 2 running at once; the QUEUED ones started, oldest first, as slots freed.
    events = sorted([(e["startTime"], 1) for e in final] + [(e["endTime"], -1) for e in final])
    assert max(itertools.accumulate(change for _, change in events)) == 2
    queued = sorted((e["createTime"], e["startTime"]) for e, c in zip(final, created) if c["state"] == "QUEUED")
    assert queued[0][1] <= queued[1][1]
    first_end = min(e["endTime"] for e, c in zip(final, created) if c["state"] == "ACTIVE")
    assert all(start >= first_end for _, start in queued)


def test_a_queued_execution_cancelled_never_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALCLOUD_CONCURRENT_EXECUTIONS", "1")
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "nap.yaml").write_text(NAP)
    server = api.start(folder, tmp_path / "state", log=quiet)
    url, headers = f"{server.url}/v1/{PARENT}/nap/executions", {"Authorization": "Bearer t"}
    try:
        busy = requests.post(url, headers=headers, json={"argument": json.dumps({"n": 1, "seconds": 0.5})}).json()
        waiting = requests.post(url, headers=headers, json={"argument": json.dumps({"n": 2, "seconds": 0})}).json()
        cancelled = requests.post(f"{server.url}/v1/{waiting['name']}:cancel", headers=headers, json={}).json()
        server.executions.wait(busy["name"], timeout=10)
        after = requests.get(f"{server.url}/v1/{waiting['name']}", headers=headers).json()
    finally:
        server.stop()
    assert waiting["state"] == "QUEUED" and "startTime" not in waiting
    assert cancelled["state"] == after["state"] == "CANCELLED" and "result" not in after and "startTime" not in after
