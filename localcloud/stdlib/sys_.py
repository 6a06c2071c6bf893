"""sys.get_env, sys.now, sys.log, sys.sleep.

https://cloud.google.com/workflows/docs/reference/stdlib/sys/get_env (and now, log, sleep)
"""
from __future__ import annotations

import time

from ..errors import Cancelled, fail
from . import builtin
from ..values import expect, is_number, type_name
from .json_ import to_json

SEVERITIES = ("DEFAULT", "DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT",
              "EMERGENCY")
MAX_SLEEP_SECONDS = 31_536_000   # one year (https://cloud.google.com/workflows/docs/sleeping)


@builtin("sys.get_env")
def get_env(context, name, default=None):
    expect(name, str, "name", "sys.get_env")
    if default is not None:
        expect(default, str, "default", "sys.get_env")
    builtins = {
        "GOOGLE_CLOUD_PROJECT_ID": context.project,
        "GOOGLE_CLOUD_LOCATION": context.location,
        "GOOGLE_CLOUD_WORKFLOW_ID": context.workflow_id,
        "GOOGLE_CLOUD_WORKFLOW_EXECUTION_ID": context.execution_id,
    }
    if name in builtins:
        return builtins[name]
    return context.env.get(name, default)


@builtin("sys.now")
def now(context):
    return time.time()


@builtin("sys.log")
def log(context, data=None, severity="DEFAULT", text=None, json=None, timeout=None):
    given = [name for name, value in (("data", data), ("text", text), ("json", json))
             if value is not None]
    if len(given) != 1:
        fail("TypeError", "sys.log: exactly one of data, text or json must be given")
    if severity not in SEVERITIES:
        fail("ValueError", f"sys.log: severity must be one of {', '.join(SEVERITIES)}")
    if timeout is not None and not is_number(timeout):
        fail("TypeError", f"sys.log: timeout must be a number, got {type_name(timeout)}")
    if json is not None:
        expect(json, dict, "json", "sys.log")
        payload = json                       # jsonPayload
    else:
        value = data if data is not None else text
        expect(value, (int, float, bool, str, list, dict), given[0], "sys.log")
        # data: a map goes to jsonPayload, anything else to textPayload; text: always text.
        payload = value if data is not None and isinstance(value, dict) else _as_text(value)
    context.log(severity, payload)
    return None


@builtin("sys.sleep")
def sleep(context, seconds):
    if not is_number(seconds):
        fail("TypeError", f"sys.sleep: seconds must be a number, got {type_name(seconds)}")
    if not 0 <= seconds <= MAX_SLEEP_SECONDS:
        fail("ValueError", f"sys.sleep: seconds must be between 0 and {MAX_SLEEP_SECONDS}")
    if context.cancelled.wait(seconds):
        raise Cancelled()
    return None


def _as_text(value) -> str:
    return value if isinstance(value, str) else to_json(value)
