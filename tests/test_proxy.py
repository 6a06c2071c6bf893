"""The proxy over real HTTP: functions-framework serves it, a stateful fake plays Workflows and
checks every request the way Google would receive it."""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import itertools
import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Response

from localcloud import storage
from localcloud.buckets import Preconditions
from tests.serving import ROOT, free_port, serve_function

WORKFLOW = "projects/my-project/locations/europe-west1/workflows/daily_report"
URL_PATH = f"/v1/{WORKFLOW}/executions"
RUNS_BUCKET = "my-project-runs"
LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
PARENT = re.compile(r"/v1/(projects/[^/]+/locations/[^/]+/workflows/[^/]+)/executions")
EXECUTION = re.compile(r"/v1/(projects/[^/]+/locations/[^/]+/workflows/[^/]+/executions/[^/]+)")
LABEL_FILTER = re.compile(r'labels\.([a-z][a-z0-9_-]*)="([a-z0-9_-]*)"')


def google_error(code: int, status: str, message: str) -> Response:
    body = {"error": {"code": code, "status": status, "message": message}}
    return Response(json.dumps(body), code, content_type="application/json")


@dataclass
class Call:
    method: str
    path: str
    query: dict
    body: dict | None
    authorization: str | None


@dataclass
class FakeWorkflows:
    """Workflows Executions API v1, as far as the proxy uses it: create and list, with state.
    A request Google would refuse (bad argument, labels, filter, token) gets Google's 400/401."""
    executions: list = field(default_factory=list)  # oldest first
    calls: list = field(default_factory=list)
    faults: list = field(default_factory=list)  # (code, message) answered before serving normally
    ambiguous_creates: int = 0  # creates that happen but answer 500
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: itertools.count = field(default_factory=itertools.count)

    def handle(self, request) -> Response:
        with self.lock:
            raw = request.get_data()
            body = json.loads(raw) if raw else None
            self.calls.append(Call(request.method, request.path, request.args.to_dict(flat=False),
                                   body, request.headers.get("Authorization")))
            if request.headers.get("Authorization") != "Bearer localcloud":
                return google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
            if self.faults:
                code, message = self.faults.pop(0)
                return google_error(code, {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED",
                                           404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"}.get(code, "UNAVAILABLE"),
                                    message)
            named = EXECUTION.fullmatch(request.path)
            if named and request.method == "GET":
                return self.get(named[1])
            parent = PARENT.fullmatch(request.path)
            if not parent:
                return google_error(404, "NOT_FOUND", "The requested URL was not found.")
            if request.method == "POST":
                return self.create(parent[1], body)
            if request.method == "GET":
                return self.list(request.args)
            return google_error(404, "NOT_FOUND", "The requested URL was not found.")

    def create(self, parent: str, body) -> Response:
        problem = create_body_problem(body)
        if problem:
            return google_error(400, "INVALID_ARGUMENT", problem)
        execution = {"name": f"{parent}/executions/{next(self.ids):08d}-fake", "state": "ACTIVE",
                     "argument": body["argument"], "labels": body.get("labels", {}),
                     "createTime": datetime.now(timezone.utc).isoformat(), "callLogLevel": "LOG_NONE"}
        self.executions.append(execution)
        if self.ambiguous_creates:
            self.ambiguous_creates -= 1
            return google_error(500, "INTERNAL", "Internal error encountered.")
        return Response(json.dumps(execution), 200, content_type="application/json")

    def get(self, name: str) -> Response:
        for execution in self.executions:
            if execution["name"] == name:
                return Response(json.dumps(execution), 200, content_type="application/json")
        return google_error(404, "NOT_FOUND", f"Resource '{name}' was not found")

    def list(self, args) -> Response:
        if set(args) - {"filter", "orderBy", "pageSize", "pageToken", "view"}:
            return google_error(400, "INVALID_ARGUMENT", "unknown parameter")
        if args.get("orderBy", "createTime desc") != "createTime desc":
            return google_error(400, "INVALID_ARGUMENT", "this fake orders by createTime desc only")
        found = list(reversed(self.executions))
        if "filter" in args:
            terms = [LABEL_FILTER.fullmatch(term) for term in args["filter"].split(" AND ")]
            if not all(terms):
                return google_error(400, "INVALID_ARGUMENT", "invalid filter")
            found = [e for e in found if all(e["labels"].get(t[1]) == t[2] for t in terms)]
        found = found[:int(args.get("pageSize", 100))]
        return Response(json.dumps({"executions": found} if found else {}), 200,
                        content_type="application/json")

    def set_state(self, state: str) -> None:
        for execution in self.executions:
            execution["state"] = state

    def creates(self) -> list[Call]:
        return [call for call in self.calls if call.method == "POST"]


def create_body_problem(body) -> str | None:
    """What Google would refuse in an executions.create body (None when it is fine)."""
    if not isinstance(body, dict) or set(body) - {"argument", "labels", "callLogLevel"}:
        return "body must be an Execution"
    if not isinstance(body.get("argument"), str):
        return "argument must be a JSON string"
    try:  # Infinity and NaN are not JSON (RFC 8259 section 6), though Python writes and reads them
        argument = json.loads(body["argument"], parse_constant=lambda name: 1 / 0)
    except (ValueError, ZeroDivisionError):
        return "argument must be JSON"
    if not isinstance(argument, dict) or len(body["argument"].encode()) > 32 * 1024:
        return "argument must encode a JSON object of at most 32 KB"
    labels = body.get("labels", {})
    if len(labels) > 64 or not all(LABEL_KEY.fullmatch(k) and isinstance(v, str) and LABEL_VALUE.fullmatch(v)
                                   for k, v in labels.items()):
        return "invalid labels"
    return None


@pytest.fixture(scope="module")
def workflows_server():
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def storage_server(tmp_path_factory):
    """localcloud's Cloud Storage, holding the run ledger (checked itself in tests/localcloud/test_storage.py)."""
    server = storage.start(tmp_path_factory.mktemp("storage"))
    storage.create_bucket(server.url, RUNS_BUCKET, "my-project")
    yield server
    server.stop()


def ledger_env(server) -> dict:
    return {"RUNS_BUCKET": RUNS_BUCKET, "STORAGE_API": server.url}


def ledger_objects(server) -> list[dict]:
    return server.buckets.list(RUNS_BUCKET, limit=10_000)[0]


@pytest.fixture
def workflows(workflows_server, storage_server) -> FakeWorkflows:
    """A fresh fake Workflows, and an empty ledger to go with it."""
    for resource in ledger_objects(storage_server):
        storage_server.buckets.delete(RUNS_BUCKET, resource["name"], Preconditions())
    workflows_server.clear()
    fake = FakeWorkflows()
    workflows_server.expect_request(re.compile(r"/.*")).respond_with_handler(fake.handle)
    return fake


@dataclass
class Proxy:
    url: str
    log_path: Path

    def post(self, path: str = URL_PATH, body=None, headers: dict | None = None, data: bytes | None = None):
        if data is None:
            data = json.dumps({} if body is None else body).encode()
        return requests.post(self.url + path, data=data, headers={"Content-Type": "application/json",
                                                                   **(headers or {})}, timeout=30)

    def log_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.startswith("{")]


@contextlib.contextmanager
def start_proxy(tmp_path: Path, env: dict, unset: tuple = ("ALLOWED_WORKFLOWS", "GOOGLE_CLOUD_PROJECT")):
    """Serve the proxy with exactly this configuration (unset variables removed from the parent's)."""
    saved = {name: os.environ.pop(name) for name in unset if name in os.environ}
    log_path = tmp_path / f"proxy-{free_port()}.log"
    try:
        with serve_function("proxy", "proxy", env=env, log_path=log_path) as url:
            yield Proxy(url, log_path)
    finally:
        os.environ.update(saved)


@pytest.fixture(scope="module")
def proxy(workflows_server, storage_server, tmp_path_factory):
    with start_proxy(tmp_path_factory.mktemp("proxy"), {
            **ledger_env(storage_server), "WORKFLOWS_API": workflows_server.url_for("/").rstrip("/"),
            "ALLOWED_WORKFLOWS": "my-project/*/*, other-project/us-east1/nightly",
            "UPSTREAM_DEADLINE_SECONDS": "2"}) as server:
        yield server


def scheduler_headers(schedule_time: str, job: str = "daily-report") -> dict:
    return {"X-CloudScheduler": "true", "X-CloudScheduler-JobName": job,
            "X-CloudScheduler-ScheduleTime": schedule_time, "User-Agent": "Google-Cloud-Scheduler"}


def expected_digest(workflow: str, label: str, argument: dict) -> str:
    """docs/proxy.md's definition, written out independently of the proxy's code."""
    canonical = json.dumps({"workflow": workflow, "scheduleTime": label, "argument": argument},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def expected_job_digest(workflow: str, argument: dict) -> str:
    """docs/proxy.md's job identity (the run identity less the time), written out independently."""
    canonical = json.dumps({"workflow": workflow, "argument": argument}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


# --- what Google receives -------------------------------------------------------------------

def test_scheduler_call_becomes_the_exact_create_request_google_expects(proxy, workflows, storage_server):
    response = proxy.post(URL_PATH + "?timezone=Europe/Stockholm", {"b": 1, "a": "x"},
                          scheduler_headers("2019-10-12T07:20:50.52Z", job="projects/my-project/locations/europe-west1/jobs/Daily.Report"))
    assert response.status_code == 200, response.text
    digest = expected_digest(WORKFLOW, "2019-10-12t07-20-50-520z", {"a": "x", "b": 1})
    (create,) = workflows.calls  # a new run: the ledger's claim decides, no lookup in Workflows
    assert (create.method, create.path, create.authorization) == ("POST", URL_PATH, "Bearer localcloud")
    assert isinstance(create.body["argument"], str)
    assert json.loads(create.body["argument"]) == {"b": 1, "a": "x", "scheduleTime": "2019-10-12T09:20:50.52+02:00"}
    assert create.body["labels"] == {"schedule_time": "2019-10-12t07-20-50-520z", "run_digest": digest,
                                     "trigger": "scheduler", "scheduler_job": "daily-report", "attempt": "1",
                                     "job_digest": expected_job_digest(WORKFLOW, {"a": "x", "b": 1})}
    execution = response.json()
    assert execution["started"] is True
    assert execution == {**workflows.executions[0], "started": True}
    # docs/ledger.md: one object per attempt, its name, content and metadata
    (attempt,) = ledger_objects(storage_server)
    assert attempt["name"] == f"runs/my-project/europe-west1/daily_report/2019-10-12T07:20:50.520000Z/{digest}/000001"
    _, content = storage_server.buckets.get(RUNS_BUCKET, attempt["name"], Preconditions())
    assert json.loads(content) == {
        "workflow": WORKFLOW, "scheduleTime": "2019-10-12T09:20:50.52+02:00", "timezone": "Europe/Stockholm",
        "argument": create.body["argument"], "trigger": "scheduler", "job": "daily-report", "backfill": None,
        "attempt": 1}
    assert {k: v for k, v in attempt["metadata"].items() if k != "claim"} == {
        "state": "ACTIVE", "execution": execution["name"], "createTime": execution["createTime"],
        "lease": "62"}  # UPSTREAM_DEADLINE_SECONDS 2 + LEASE_MARGIN_SECONDS 60, in seconds


def test_repeated_delivery_starts_exactly_one_execution(proxy, workflows):
    same_instant = ["2022-03-27T01:30:00Z", "2022-03-27T01:30:00Z", "2022-03-27T03:30:00.000+02:00",
                    "2022-03-26T20:30:00-05:00", "2022-03-27t01:30:00.000000z"]
    answers = [proxy.post(URL_PATH + "?timezone=Europe/Stockholm", {"x": 1}, scheduler_headers(t)).json()
               for t in same_instant]
    answers.append(proxy.post(URL_PATH, {"x": 1}, scheduler_headers(same_instant[0])).json())  # other zone
    assert [a["started"] for a in answers] == [True] + [False] * 5
    assert len({a["name"] for a in answers}) == 1
    assert len(workflows.executions) == 1 and len(workflows.creates()) == 1


def test_run_identity_ignores_key_order_and_whitespace_but_not_content(proxy, workflows):
    headers = scheduler_headers("2024-01-01T00:00:00Z")
    first = proxy.post(data=b'{"a": 1, "b": [1, 2]}', headers=headers).json()
    same = proxy.post(data=b'{ "b":[1,2],\n "a":1 }', headers=headers).json()
    other = proxy.post(data=b'{"a": 2, "b": [1, 2]}', headers=headers).json()
    assert (first["started"], same["started"], other["started"]) == (True, False, True)
    assert first["name"] == same["name"] != other["name"]
    assert len(workflows.executions) == 2


# --- the scheduled time ---------------------------------------------------------------------

def sent_argument(workflows: FakeWorkflows) -> dict:
    return json.loads(workflows.creates()[-1].body["argument"])


@pytest.mark.parametrize("header, zone, expected", [
    ("2019-10-12T07:20:50.52Z", "Europe/Stockholm", "2019-10-12T09:20:50.52+02:00"),
    ("2019-10-12T07:20:50.000Z", "UTC", "2019-10-12T07:20:50+00:00"),
    ("2023-04-13T12:00:00-07:00", None, "2023-04-13T19:00:00+00:00"),
    # Europe/Stockholm, spring forward 2022-03-27 01:00 UTC (02:00 CET -> 03:00 CEST)
    ("2022-03-27T00:59:59Z", "Europe/Stockholm", "2022-03-27T01:59:59+01:00"),
    ("2022-03-27T01:00:00Z", "Europe/Stockholm", "2022-03-27T03:00:00+02:00"),
    # fall back 2022-10-30 01:00 UTC (03:00 CEST -> 02:00 CET): 02:30 happens twice
    ("2022-10-30T00:30:00Z", "Europe/Stockholm", "2022-10-30T02:30:00+02:00"),
    ("2022-10-30T01:30:00Z", "Europe/Stockholm", "2022-10-30T02:30:00+01:00"),
    ("2022-06-01T12:00:00.000123Z", "Asia/Kathmandu", "2022-06-01T17:45:00.000123+05:45"),
])
def test_header_time_is_written_into_the_body_in_the_requested_zone(proxy, workflows, header, zone, expected):
    query = f"?timezone={zone}" if zone else ""
    response = proxy.post(URL_PATH + query, {"k": "v"}, scheduler_headers(header))
    assert response.status_code == 200, response.text
    assert sent_argument(workflows) == {"k": "v", "scheduleTime": expected}


def test_repeated_wall_time_at_fall_back_gives_two_distinct_runs(proxy, workflows):
    for instant in ("2022-10-30T00:30:00Z", "2022-10-30T01:30:00Z"):
        assert proxy.post(URL_PATH + "?timezone=Europe/Stockholm", {}, scheduler_headers(instant)).json()["started"]
    labels = [e["labels"]["schedule_time"] for e in workflows.executions]
    assert labels == ["2022-10-30t00-30-00z", "2022-10-30t01-30-00z"]


def test_header_wins_over_body_which_wins_over_arrival(proxy, workflows):
    proxy.post(body={"scheduleTime": "2020-01-01T00:00:00Z"}, headers=scheduler_headers("2021-06-01T10:00:00Z"))
    assert sent_argument(workflows)["scheduleTime"] == "2021-06-01T10:00:00+00:00"
    assert workflows.creates()[-1].body["labels"]["trigger"] == "scheduler"

    proxy.post(URL_PATH + "?timezone=America/New_York", {"scheduleTime": "2020-01-01T00:00:00Z"})
    assert sent_argument(workflows)["scheduleTime"] == "2019-12-31T19:00:00-05:00"
    assert workflows.creates()[-1].body["labels"] == {
        "schedule_time": "2020-01-01t00-00-00z", "trigger": "explicit", "attempt": "1",
        "run_digest": expected_digest(WORKFLOW, "2020-01-01t00-00-00z", {}),
        "job_digest": expected_job_digest(WORKFLOW, {})}

    before = datetime.now(timezone.utc)
    proxy.post(body={"n": 1})
    after = datetime.now(timezone.utc)
    arrival = datetime.fromisoformat(sent_argument(workflows)["scheduleTime"])
    assert before <= arrival <= after
    assert workflows.creates()[-1].body["labels"]["trigger"] == "manual"


@pytest.mark.parametrize("headers, body", [
    (scheduler_headers("2019-10-12 07:20:50Z"), {}),
    (scheduler_headers("2019-02-30T00:00:00Z"), {}),
    (scheduler_headers("yesterday"), {}),
    ({}, {"scheduleTime": "2019-10-12T07:20:50"}),
    ({}, {"scheduleTime": 1570864850}),
])
def test_unreadable_scheduled_time_is_400(proxy, workflows, headers, body):
    response = proxy.post(body=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert workflows.calls == []


@pytest.mark.parametrize("query", ["?timezone=Mars/Olympus", "?timezone=../../etc/passwd", "?timezone=",
                                   "?timezone=localtime", "?timezone=Factory", "?timezone=right/UTC",
                                   "?reprocess=all", "?timeZone=UTC", "?timezone=UTC&timezone=UTC"])
def test_bad_query_is_400_and_not_forwarded(proxy, workflows, query):
    response = proxy.post(URL_PATH + query, {})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"code", "status", "message"}
    assert workflows.calls == []


# --- the path and the allowlist -------------------------------------------------------------

def raw_post(base_url: str, path: str, body: bytes = b"{}", method: str = "POST") -> tuple[int, dict]:
    """http.client sends the path byte for byte (requests/urllib3 would normalise dot segments)."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.request(method, path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


@pytest.mark.parametrize("path", [
    URL_PATH + "/",
    URL_PATH + "/extra",
    URL_PATH.replace("/executions", ""),
    "/v1/projects/my-project/locations/europe-west1/workflows/../workflows/daily_report/executions",
    "/v1/projects/my-project/locations/europe-west1/workflows/daily_report/executions/..",
    "/v1/projects/my-project/locations/europe-west1/workflows/daily%2Freport/executions",
    "/v1/projects/my-project/locations/europe-west1/workflows/daily_report%2Fexecutions",
    "/v1/projects/my-project/locations/europe-west1/workflows/daily%5Freport/executions",
    "/v1/projects/my-project/locations/europe-west1/workflows/daily_report:run/executions",
    "/v1/projects/my-project/locations/EUROPE-west1/workflows/daily_report/executions",
    "/v1/projects/My-Project/locations/europe-west1/workflows/daily_report/executions",
    "/v1/projects/ab/locations/europe-west1/workflows/daily_report/executions",
    "/v1/projects/my-project/locations/europe-west1/workflows/1daily/executions",
    "/v1/projects/my-project/locations/europe-west1/workflows/daily_/executions",
    "/v2/projects/my-project/locations/europe-west1/workflows/daily_report/executions",
    "/v1/projects/my-project/locations/europe-west1/functions/daily_report/executions",
    "/v1/projects/my-project/secrets/x/versions/latest:access",
    "//v1/projects/my-project/locations/europe-west1/workflows/daily_report/executions",
    "/",
])
def test_path_tricks_are_refused_and_never_forwarded(proxy, workflows, path):
    status, body = raw_post(proxy.url, path)
    assert status == (400 if "%" in path else 404)
    assert body["error"]["code"] == status
    assert workflows.calls == []


@pytest.mark.parametrize("path", [
    "/v1/projects/my%0Aproject/locations/europe-west1/workflows/daily_report/executions",
    "/favicon.ico",
    "/robots.txt",
])
def test_paths_the_framework_routes_itself_still_get_googles_error_shape(proxy, workflows, path):
    # functions-framework answers these before `proxy` runs (its router cannot match a decoded
    # newline; it reserves the two file names): the answer must still be Google's JSON.
    status, body = raw_post(proxy.url, path)
    assert (status, body["error"]["code"], body["error"]["status"]) == (404, 404, "NOT_FOUND")
    assert workflows.calls == []


def test_only_post_is_served(proxy, workflows):
    status, body = raw_post(proxy.url, URL_PATH, b"", method="GET")
    assert (status, body["error"]["status"]) == (404, "NOT_FOUND")
    assert workflows.calls == []


def test_domain_scoped_project_ids_are_valid_paths(proxy, workflows):
    status, body = raw_post(proxy.url, "/v1/projects/example.com:my-project/locations/us-east1/workflows/w/executions")
    assert status == 403  # a well-formed name, refused only by the allowlist
    assert "example.com:my-project" in body["error"]["message"]


@pytest.mark.parametrize("workflow, allowed", [
    ("projects/my-project/locations/us-central1/workflows/anything", True),
    ("projects/other-project/locations/us-east1/workflows/nightly", True),
    ("projects/other-project/locations/us-east1/workflows/nightly2", False),
    ("projects/other-project/locations/europe-west1/workflows/nightly", False),
    ("projects/my-project2/locations/us-central1/workflows/anything", False),
])
def test_allowlist(proxy, workflows, workflow, allowed):
    response = proxy.post(f"/v1/{workflow}/executions", {})
    if allowed:
        assert response.status_code == 200 and response.json()["name"].startswith(workflow + "/executions/")
    else:
        assert response.status_code == 403
        assert response.json()["error"]["status"] == "PERMISSION_DENIED"
        assert workflows.calls == []


def test_default_allowlist_is_the_functions_own_project(workflows_server, storage_server, workflows, tmp_path):
    env = {**ledger_env(storage_server), "WORKFLOWS_API": workflows_server.url_for("/"), "GOOGLE_CLOUD_PROJECT": "home-project",
           "ALLOWED_WORKFLOWS": ""}
    with start_proxy(tmp_path, env) as home:
        assert home.post("/v1/projects/home-project/locations/us-east1/workflows/w/executions").status_code == 200
        denied = home.post("/v1/projects/away-project/locations/us-east1/workflows/w/executions")
        assert denied.status_code == 403 and "home-project/*/*" in denied.json()["error"]["message"]


def test_without_any_allowlist_nothing_is_allowed_and_the_403_says_why(workflows_server, workflows, tmp_path):
    with start_proxy(tmp_path, {"WORKFLOWS_API": workflows_server.url_for("/")}) as bare:
        response = bare.post()
    assert response.status_code == 403
    assert "neither ALLOWED_WORKFLOWS nor GOOGLE_CLOUD_PROJECT" in response.json()["error"]["message"]
    assert workflows.calls == []


# --- the body -------------------------------------------------------------------------------

@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/octet-stream"])
def test_json_is_read_whatever_the_content_type(proxy, workflows, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = requests.post(proxy.url + URL_PATH, data=b'{"k": "v"}', headers=headers, timeout=30)
    if content_type is None:
        assert "Content-Type" not in response.request.headers
    assert response.status_code == 200, response.text
    assert sent_argument(workflows)["k"] == "v"


@pytest.mark.parametrize("data", [b"", b"  \n"])
def test_empty_body_means_an_empty_object(proxy, workflows, data):
    assert proxy.post(data=data, headers=scheduler_headers("2020-01-01T00:00:00Z")).status_code == 200
    assert sent_argument(workflows) == {"scheduleTime": "2020-01-01T00:00:00+00:00"}


@pytest.mark.parametrize("data", [b"{", b"[1, 2", b'"text"', b"42", b"null", b"true", b'{"a": NaN}',
                                  b'{"a": Infinity}', b"\xff\xfe{", b'{"a": "\\ud800"}', b"[" * 100_000,
                                  b'{"a": 1e400}', b'[{"a": -1e400}]', b'{"x":' + b"[" * 975 + b"]" * 975 + b"}",
                                  b'{"x":' + b"[" * 976 + b"]" * 976 + b"}"])
def test_bodies_that_are_not_json_objects_are_400(proxy, workflows, data):
    response = proxy.post(data=data)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert workflows.calls == []


def test_bodies_nest_at_most_100_deep(proxy, workflows):
    """The proxy's own documented limit (docs/proxy.md): deeper bodies once parsed but could not
    be written back (json.dumps recursed past Python's limit, a 500 at 975 levels)."""
    def nested(depth: int) -> bytes:  # the outer object is the first level
        return b'{"x":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    headers = scheduler_headers("2020-01-01T00:00:00Z")
    assert proxy.post(data=nested(100), headers=headers).status_code == 200
    response = proxy.post(data=nested(101), headers=headers)
    assert response.status_code == 400 and "100 deep" in response.json()["error"]["message"]
    assert len(workflows.creates()) == 1


def test_body_over_one_mebibyte_is_413_before_parsing(proxy, workflows):
    response = proxy.post(data=b"x" * (1024 * 1024 + 1))  # not JSON either: the size is judged first
    assert response.status_code == 413
    assert workflows.calls == []


def test_argument_limit_counts_utf8_bytes_of_the_enriched_argument(proxy, workflows):
    stamp = ',"scheduleTime":"2020-01-01T00:00:00+00:00"'
    headers = scheduler_headers("2020-01-01T00:00:00Z")
    fits = {"p": "x" * (32 * 1024 - len('{"p":""}') - len(stamp))}
    assert proxy.post(body=fits, headers=headers).status_code == 200
    assert len(workflows.creates()[-1].body["argument"].encode()) == 32 * 1024
    one_more = {"p": fits["p"] + "y"}
    assert proxy.post(body=one_more, headers=headers).status_code == 413
    wide = {"p": "é" * (16 * 1024)}  # 16 Ki characters but 32 KiB of UTF-8
    response = proxy.post(body=wide, headers=headers)
    assert response.status_code == 413 and response.json()["error"]["code"] == 413
    assert len(workflows.creates()) == 1


def test_array_body_starts_one_run_per_element_and_reports_each(proxy, workflows):
    body = [{"scheduleTime": "2022-01-01T00:00:00Z"}, "not an object", {"scheduleTime": "bad"},
            {"scheduleTime": "2022-01-02T00:00:00Z"}, {"scheduleTime": "2022-01-01T00:00:00Z"}]
    response = proxy.post(URL_PATH + "?reprocess=none", body)
    assert response.status_code == 400  # the largest element error code; every element is reported
    first, not_object, bad_time, second, repeat = response.json()["executions"]
    assert first["started"] and second["started"] and not repeat["started"]
    assert repeat["name"] == first["name"] != second["name"]
    assert not_object["error"]["code"] == bad_time["error"]["code"] == 400
    assert len(workflows.executions) == 2

    again = proxy.post(URL_PATH + "?reprocess=none", [body[0], body[3]])
    assert again.status_code == 200
    assert [e["started"] for e in again.json()["executions"]] == [False, False]
    assert proxy.post(data=b"[]").json() == {"executions": []}


def test_array_element_refused_upstream_does_not_hide_the_others(proxy, workflows):
    workflows.faults = [(400, "argument rejected")]
    response = proxy.post(URL_PATH + "?reprocess=none", [{"scheduleTime": "2022-01-01T00:00:00Z"},
                                                          {"scheduleTime": "2022-01-02T00:00:00Z"}])
    assert response.status_code == 400
    rejected, started = response.json()["executions"]
    assert rejected["error"] == {"code": 400, "status": "INVALID_ARGUMENT", "message": "argument rejected"}
    assert started["started"] is True


# --- the reprocess policy -------------------------------------------------------------------

@pytest.mark.parametrize("mode, state, starts", [
    ("none", "ACTIVE", False), ("none", "SUCCEEDED", False), ("none", "FAILED", False),
    ("failed", "ACTIVE", False), ("failed", "QUEUED", False), ("failed", "SUCCEEDED", False),
    ("failed", "FAILED", True), ("failed", "CANCELLED", True),
    ("completed", "ACTIVE", False), ("completed", "QUEUED", False),
    ("completed", "SUCCEEDED", True), ("completed", "FAILED", True), ("completed", "CANCELLED", True),
])
def test_reprocess_modes_judge_the_newest_execution_of_the_run(proxy, workflows, mode, state, starts):
    body = {"scheduleTime": "2022-05-01T06:00:00Z", "table": "sales"}
    first = proxy.post(f"{URL_PATH}?reprocess={mode}", body).json()
    assert first["started"] is True  # nothing existed yet: every mode starts one
    workflows.set_state(state)
    second = proxy.post(f"{URL_PATH}?reprocess={mode}", body).json()
    assert second["started"] is starts
    assert len(workflows.executions) == (2 if starts else 1)
    if not starts:
        assert (second["name"], second["state"]) == (first["name"], state)
    other_run = proxy.post(f"{URL_PATH}?reprocess={mode}", {**body, "table": "stock"}).json()
    assert other_run["started"] is True


def test_default_reprocess_is_none_for_scheduler_and_completed_otherwise(proxy, workflows):
    headers = scheduler_headers("2022-05-01T06:00:00Z")
    proxy.post(body={}, headers=headers)
    workflows.set_state("SUCCEEDED")
    assert proxy.post(body={}, headers=headers).json()["started"] is False
    assert proxy.post(body={"scheduleTime": "2022-05-01T06:00:00Z"}).json()["started"] is True
    assert proxy.post(body={"scheduleTime": "2022-05-01T06:00:00Z"}).json()["started"] is False  # ACTIVE
    assert len(workflows.executions) == 2


# --- upstream faults ------------------------------------------------------------------------

def test_transient_faults_are_retried_then_succeed(proxy, workflows):
    workflows.faults = [(503, "busy"), (429, "quota"), (502, "bad gateway")]
    response = proxy.post(body={}, headers=scheduler_headers("2022-01-01T00:00:00Z"))
    assert response.status_code == 200 and response.json()["started"] is True
    assert len(workflows.calls) == 5 and len(workflows.executions) == 1


def test_retry_after_an_ambiguous_create_does_not_start_a_second_run(proxy, workflows):
    workflows.ambiguous_creates = 1  # created, but answered 500
    response = proxy.post(body={}, headers=scheduler_headers("2022-01-01T00:00:00Z"))
    assert response.status_code == 200
    assert len(workflows.executions) == 1 and response.json()["name"] == workflows.executions[0]["name"]


def test_retries_exhausted_within_the_deadline_give_503(proxy, workflows):
    workflows.faults = [(503, "busy")] * 1000
    response = proxy.post(body={}, headers=scheduler_headers("2022-01-01T00:00:00Z"))
    assert response.status_code == 503  # gave up within the 2 s deadline set for this server
    assert response.json()["error"]["status"] == "UNAVAILABLE"
    assert len(workflows.calls) >= 3  # retried first
    assert workflows.executions == []


def test_unreachable_workflows_api_gives_503(storage_server, tmp_path):
    env = {**ledger_env(storage_server), "WORKFLOWS_API": f"http://127.0.0.1:{free_port()}", "ALLOWED_WORKFLOWS": "*/*/*",
           "UPSTREAM_DEADLINE_SECONDS": "1"}
    with start_proxy(tmp_path, env) as lonely:
        response = lonely.post(body={})
    assert response.status_code == 503
    assert response.json()["error"]["status"] == "UNAVAILABLE"


@pytest.mark.parametrize("code, status", [(400, "INVALID_ARGUMENT"), (403, "PERMISSION_DENIED"),
                                          (404, "NOT_FOUND")])
def test_upstream_4xx_is_passed_back_with_googles_message(proxy, workflows, code, status):
    workflows.faults = [(code, f"Google says {code}")]
    response = proxy.post(body={})
    assert response.status_code == code
    assert response.json() == {"error": {"code": code, "status": status, "message": f"Google says {code}"}}
    assert len(workflows.calls) == 1


# --- logs -----------------------------------------------------------------------------------

def test_one_structured_log_line_per_request_without_argument_contents(proxy, workflows):
    before = len(proxy.log_lines())
    trace = "105445aa7843bc8bf206b12000100000"
    proxy.post(URL_PATH + "?timezone=Europe/Stockholm", {"secret": "hunter2-in-body"},
               {**scheduler_headers("2022-01-01T00:00:00Z"), "X-Cloud-Trace-Context": f"{trace}/1;o=1"})
    workflows.faults = [(400, "cannot parse hunter2-in-body")]
    proxy.post(body={"secret": "hunter2-in-body"},
               headers={"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"})
    proxy.post("/v1/projects/my-project/nope", {"secret": "hunter2-in-body"})
    lines = proxy.log_lines()[before:]
    assert len(lines) == 3
    ok, upstream_error, not_found = lines
    assert ok["severity"] == "INFO" and ok["outcome"] == "started"
    assert ok["logging.googleapis.com/trace"] == f"projects/my-project/traces/{trace}"
    assert ok["workflow"] == WORKFLOW and ok["scheduleTime"] == "2022-01-01T01:00:00+01:00"
    assert ok["execution"] == workflows.executions[0]["name"]
    assert isinstance(ok["latencyMs"], float) and ok["message"]
    assert upstream_error["severity"] == "WARNING" and upstream_error["httpStatus"] == 400
    assert upstream_error["logging.googleapis.com/trace"] == f"projects/my-project/traces/{'ab' * 16}"
    assert not_found["httpStatus"] == 404 and "logging.googleapis.com/trace" not in not_found
    assert "hunter2" not in proxy.log_path.read_text()


# --- credentials ----------------------------------------------------------------------------

def test_loopback_api_never_touches_google_auth_and_import_is_light(workflows_server, storage_server, workflows):
    script = f"""
import sys, functions_framework
app = functions_framework.create_app("proxy", {str(ROOT / 'functions/proxy/main.py')!r})
assert "google.auth" not in sys.modules and "main" in sys.modules
response = app.test_client().post({URL_PATH!r}, json={{}})
assert response.status_code == 200, response.data
print("google.auth" in sys.modules)
"""
    env = {**os.environ, **ledger_env(storage_server), "WORKFLOWS_API": workflows_server.url_for("/"),
           "ALLOWED_WORKFLOWS": "*/*/*"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
    assert workflows.creates()[0].authorization == "Bearer localcloud"
