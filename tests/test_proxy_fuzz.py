"""Fuzzed paths, headers and bodies: whatever arrives, the proxy answers without a 5xx, in
Google's error shape when it refuses, and Workflows only ever sees requests it would accept."""
from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from pytest_httpserver import HTTPServer

from tests.test_proxy import (URL_PATH, FakeWorkflows, create_body_problem, ledger_env, raw_post, start_proxy,
                               storage_server)  # noqa: F401 - a fixture

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Header values http.client can send: visible Latin-1, no control characters.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"),
                      max_size=40).map(str.lstrip)
schedule_times = st.one_of(
    header_text,
    st.datetimes().map(lambda moment: moment.isoformat() + "Z"),
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,12})?([Zz]|[+-][0-9]{2}:[0-9]{2})",
                  fullmatch=True))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
bodies = st.one_of(
    st.binary(max_size=300),
    # issue 10: bodies that parsed but broke json.dumps (deep nesting), or overflowed to Infinity
    st.integers(1, 1200).map(lambda depth: b'{"x":' + b"[" * depth + b"]" * depth + b"}"),
    st.tuples(st.integers(-400, 400), st.sampled_from(["1", "-1", "9.5"])).map(
        lambda t: b'{"a":%se%d}' % (t[1].encode(), t[0])),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.lists(st.dictionaries(st.sampled_from(["scheduleTime", "a", "b"]), json_values | schedule_times,
                             max_size=3), max_size=4).map(lambda value: json.dumps(value).encode()))
segment = st.text(st.sampled_from("abcAZ019_-.:~%2F@!$&'()*+,;="), min_size=0, max_size=12)


@pytest.fixture(scope="module")
def workflows():
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    fake = FakeWorkflows()
    server.expect_request(re.compile(r"/.*")).respond_with_handler(fake.handle)
    yield server, fake
    server.stop()


@pytest.fixture(scope="module")
def proxy(workflows, storage_server, tmp_path_factory):
    server, _ = workflows
    env = {**ledger_env(storage_server), "WORKFLOWS_API": server.url_for("/"), "ALLOWED_WORKFLOWS": "*/*/*", "UPSTREAM_DEADLINE_SECONDS": "2"}
    with start_proxy(tmp_path_factory.mktemp("fuzz"), env) as running:
        yield running


def assert_well_formed(response, workflows) -> None:
    assert response.status_code < 500, response.text
    answer = response.json()
    for outcome in answer["executions"] if set(answer) == {"executions"} else [answer]:
        if "error" in outcome:
            assert set(outcome) == {"error"} and set(outcome["error"]) == {"code", "status", "message"}
            assert 400 <= outcome["error"]["code"] < 500
        else:
            assert outcome["name"] and isinstance(outcome["started"], bool)
    _, fake = workflows
    assert all(create_body_problem(call.body) is None for call in fake.creates())
    assert all(call.authorization == "Bearer localcloud" for call in fake.calls)


@FUZZ
@given(body=bodies, content_type=st.sampled_from([None, "application/json", "text/plain", "image/png"]),
       query=st.sampled_from(["", "?timezone=Europe/Stockholm", "?reprocess=failed", "?timezone=Asia/Kathmandu"]))
def test_fuzzed_bodies_never_give_5xx(proxy, workflows, body, content_type, query):
    headers = {"Content-Type": content_type} if content_type else {}
    assert_well_formed(proxy.post(URL_PATH + query, data=body, headers=headers), workflows)


@FUZZ
@given(schedule_time=schedule_times, job=header_text, trace=header_text, traceparent=header_text,
       zone=st.sampled_from(["UTC", "Europe/Stockholm", "Pacific/Kiritimati", "Etc/GMT-14", "America/Adak"]))
def test_fuzzed_scheduler_headers_never_give_5xx(proxy, workflows, schedule_time, job, trace, traceparent, zone):
    headers = {"X-CloudScheduler-ScheduleTime": schedule_time, "X-CloudScheduler-JobName": job,
               "X-Cloud-Trace-Context": trace, "traceparent": traceparent}
    assert_well_formed(proxy.post(f"{URL_PATH}?timezone={zone}", data=b"{}", headers=headers), workflows)


@FUZZ
@given(segments=st.lists(segment, min_size=0, max_size=9) | st.tuples(segment, segment, segment).map(
           lambda ids: ["v1", "projects", ids[0], "locations", ids[1], "workflows", ids[2], "executions"]),
       query=header_text.filter(lambda q: "#" not in q))
def test_fuzzed_paths_never_give_5xx(proxy, workflows, segments, query):
    path = "/" + "/".join(segments)
    if query:
        path += "?" + "".join(ch if 0x21 <= ord(ch) < 0x7f else "+" for ch in query)
    status, answer = raw_post(proxy.url, path)
    assert status < 500
    if status >= 400:
        assert answer["error"]["code"] == status
