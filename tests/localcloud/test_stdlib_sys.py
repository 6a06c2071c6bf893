"""sys.get_env, sys.now, sys.log and sys.sleep against a Context.

Pages: https://cloud.google.com/workflows/docs/reference/stdlib/sys/get_env (log, now) and
https://cloud.google.com/workflows/docs/sleeping
"""
from __future__ import annotations

import threading
import time

import pytest

from localcloud.context import Context
from localcloud.errors import Cancelled
from tests.localcloud.test_stdlib import call, error


def test_get_env_gives_the_built_in_variables_from_the_context():
    # sys/get_env example: sys.get_env("GOOGLE_CLOUD_LOCATION") returns e.g. "us-central1"
    context = Context(project="p1", location="europe-west1", workflow_id="wf",
                      execution_id="e-123")
    assert call("sys.get_env", "GOOGLE_CLOUD_LOCATION", context=context) == "europe-west1"
    assert call("sys.get_env", "GOOGLE_CLOUD_PROJECT_ID", context=context) == "p1"
    assert call("sys.get_env", "GOOGLE_CLOUD_WORKFLOW_ID", context=context) == "wf"
    assert call("sys.get_env", "GOOGLE_CLOUD_WORKFLOW_EXECUTION_ID", context=context) == "e-123"


def test_get_env_gives_deploy_time_variables_or_the_default():
    context = Context(env={"RANGE_URL": "http://127.0.0.1:1/"})
    assert call("sys.get_env", "RANGE_URL", context=context) == "http://127.0.0.1:1/"
    assert call("sys.get_env", "MISSING", context=context) is None
    assert call("sys.get_env", name="MISSING", default="fallback", context=context) == "fallback"
    assert error("sys.get_env", 5)["tags"] == ["TypeError"]
    assert error("sys.get_env", "MISSING", 5)["tags"] == ["TypeError"]


def test_now_is_unix_time_as_a_double():
    before = time.time()
    now = call("sys.now")
    assert isinstance(now, float) and before <= now <= time.time()


def logged(**kwargs) -> list[tuple[str, object]]:
    entries: list[tuple[str, object]] = []
    context = Context(log=lambda severity, payload: entries.append((severity, payload)))
    assert call("sys.log", context=context, **kwargs) is None
    return entries


def test_log_sends_text_or_json_payloads_with_severity():
    # sys/log examples: auto-detected payload, text, and json
    assert logged(data="Log my error message", severity="ERROR") == [("ERROR", "Log my error message")]
    assert logged(data={"Message1": "Log my error message"}) == [("DEFAULT", {"Message1": "Log my error message"})]
    assert logged(text={"a": 1}, severity="INFO") == [("INFO", '{"a":1}')]
    assert logged(json={"a": 1}, severity="WARNING") == [("WARNING", {"a": 1})]
    assert logged(data=[1, True]) == [("DEFAULT", "[1,true]")]


def test_log_takes_positional_arguments_as_in_the_examples():
    # sys/log: args: [${myVar}, "ERROR"] and [${null}, "ERROR", ${myVar}]
    entries = []
    context = Context(log=lambda severity, payload: entries.append((severity, payload)))
    call("sys.log", "m1", "ERROR", context=context)
    call("sys.log", None, "ERROR", "m2", context=context)
    assert entries == [("ERROR", "m1"), ("ERROR", "m2")]


@pytest.mark.parametrize("kwargs, tag", [
    ({}, "TypeError"), ({"data": "a", "text": "b"}, "TypeError"), ({"json": "text"}, "TypeError"),
    ({"data": b"bytes"}, "TypeError"), ({"data": "a", "severity": "LOUD"}, "ValueError"),
])
def test_log_rejects_bad_arguments(kwargs, tag):
    assert error("sys.log", **kwargs)["tags"] == [tag]


def test_sleep_returns_null_after_a_short_sleep():
    assert call("sys.sleep", 0) is None
    assert call("sys.sleep", seconds=0.01) is None


def test_sleep_is_interrupted_by_cancellation():
    context = Context()
    threading.Timer(0.05, context.cancelled.set).start()
    with pytest.raises(Cancelled):
        call("sys.sleep", 3600, context=context)


@pytest.mark.parametrize("seconds, tag", [(-1, "ValueError"), (31_536_001, "ValueError"),
                                          ("1", "TypeError")])
def test_sleep_rejects_bad_durations(seconds, tag):
    assert error("sys.sleep", seconds)["tags"] == [tag]
