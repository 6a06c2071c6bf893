"""The Workflow Executions connectors, served by the local Executions API over real HTTP.

`googleapis.workflowexecutions.v1.projects.locations.workflows.executions.{create,get,list,cancel,run}`
call the API at `context.api_url` with a bearer token, exactly as a REST client would, so a
workflow sees the API's own answers and errors. As Google documents for connectors:
  - a status >= 400 raises HttpError (code, headers, body); 429 and 503 are retried first;
  - create and run wait for the execution to end, polling with backoff, unless
    `connector_params: {skip_polling: true}`; `connector_params.timeout` (default 1800 s) bounds
    the wait (TimeoutError); an execution that ends FAILED or CANCELLED raises OperationError
    with the final Execution in `operation`;
  - create returns the Execution; run returns the execution's result, JSON-decoded (null when
    skip_polling);
  - each polling attempt is a step of the calling execution, billed and counted against its
    step limit ("each polling attempt ... is billed as a step", https://cloud.google.com/workflows/pricing).
Local polling starts at 0.05 s (Google's starts near 1 s) so tests stay fast; a polling_policy
given in connector_params is honoured as written.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode

from ..context import LOCAL_TOKEN, Context
from ..errors import Cancelled, fail
from . import builtin
from ..values import is_number, type_name
from .http_ import canonical_header

PREFIX = "googleapis.workflowexecutions.v1.projects.locations.workflows.executions."
RETRIED_STATUSES = (429, 503)
ATTEMPTS = 4                  # the first try and 3 retries, 0.1 s, 0.2 s and 0.4 s apart
POLLING = {"initial_delay": 0.05, "multiplier": 1.5, "max_delay": 1.0}
CONNECTOR_PARAMS = {"timeout", "polling_policy", "skip_polling", "scopes"}


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        fail("TypeError", f"argument '{name}' must be a string, got {type_name(value)}")
    return value


def _params(connector_params: Any) -> dict[str, Any]:
    if connector_params is None:
        return {"timeout": 1800.0, "skip_polling": False, "polling": POLLING}
    if not isinstance(connector_params, dict):
        fail("TypeError", f"connector_params must be a map, got {type_name(connector_params)}")
    unknown = set(connector_params) - CONNECTOR_PARAMS
    if unknown:
        fail("ValueError", f"connector_params: unknown keys {sorted(unknown)}")
    timeout = connector_params.get("timeout", 1800)
    if not is_number(timeout) or timeout <= 0 or timeout > 31536000:
        fail("ValueError", "connector_params.timeout must be a number of seconds in (0, 31536000]")
    polling = {**POLLING, **(connector_params.get("polling_policy") or {})}
    return {"timeout": float(timeout), "skip_polling": bool(connector_params.get("skip_polling")),
            "polling": polling}


def _call(context: Context, method: str, path: str, body: Any = None,
          query: dict[str, Any] | None = None) -> Any:
    if not context.api_url:
        fail(["ConnectionFailedError", "OSError"], "no Workflow Executions API is reachable from this execution "
                                      "(run it through `python -m localcloud run` or `serve`)")
    query = {key: _query_value(value) for key, value in (query or {}).items() if value is not None}
    url = f"{context.api_url}/v1/{quote(path, safe='/:-_.~')}" + (f"?{urlencode(query)}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {LOCAL_TOKEN}", "Content-Type": "application/json"}
    for attempt in range(ATTEMPTS):
        if attempt and context.cancelled.wait(0.05 * 2 ** attempt):
            raise Cancelled()
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            raw = error.read()
            if error.code in RETRIED_STATUSES and attempt + 1 < ATTEMPTS:
                continue
            try:
                payload: Any = json.loads(raw)
            except ValueError:
                payload = raw.decode(errors="replace")
            fail("HttpError", f"HTTP server responded with error code {error.code}", code=error.code,
                 headers={canonical_header(key): value for key, value in error.headers.items()}, body=payload)
        except OSError as error:
            if attempt + 1 < ATTEMPTS:
                continue
            fail(["ConnectionFailedError", "OSError"],
                 f"cannot reach the Workflow Executions API at {context.api_url}: {error}")
    raise AssertionError("unreachable")


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _wait(context: Context, execution: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Poll the execution until it ends; return it if SUCCEEDED, else raise OperationError."""
    polling = params["polling"]
    delay, deadline = float(polling["initial_delay"]), time.monotonic() + params["timeout"]
    while execution.get("state") in ("ACTIVE", "QUEUED", None):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            fail("TimeoutError", f"execution {execution.get('name')} did not finish within "
                                 f"{params['timeout']:g} seconds")
        if context.cancelled.wait(min(delay, remaining)):
            raise Cancelled()
        delay = min(delay * float(polling["multiplier"]), float(polling["max_delay"]))
        context.count_step()
        execution = _call(context, "GET", execution["name"])
    if execution["state"] != "SUCCEEDED":
        fail("OperationError", "Execution failed or cancelled.", operation=execution)
    return execution


@builtin(PREFIX + "create")
def create(context: Context, parent: Any, body: Any = None, connector_params: Any = None) -> Any:
    params = _params(connector_params)
    if body is not None and not isinstance(body, dict):
        fail("TypeError", f"argument 'body' must be a map, got {type_name(body)}")
    execution = _call(context, "POST", f"{_text(parent, 'parent')}/executions", body or {})
    return execution if params["skip_polling"] else _wait(context, execution, params)


@builtin(PREFIX + "get")
def get(context: Context, name: Any, view: Any = None, connector_params: Any = None) -> Any:
    _params(connector_params)
    return _call(context, "GET", _text(name, "name"), query={"view": view})


@builtin(PREFIX + "list")
def list_(context: Context, parent: Any, filter: Any = None, orderBy: Any = None,  # noqa: A002,N803
          pageSize: Any = None, pageToken: Any = None, view: Any = None,  # noqa: N803
          connector_params: Any = None) -> Any:
    _params(connector_params)
    return _call(context, "GET", f"{_text(parent, 'parent')}/executions",
                 query={"filter": filter, "orderBy": orderBy, "pageSize": pageSize,
                        "pageToken": pageToken, "view": view})


@builtin(PREFIX + "cancel")
def cancel(context: Context, name: Any, body: Any = None, connector_params: Any = None) -> Any:
    _params(connector_params)
    return _call(context, "POST", f"{_text(name, 'name')}:cancel", body or {})


@builtin(PREFIX + "run")
def run(context: Context, workflow_id: Any, argument: Any = None, project_id: Any = None,
        location: Any = None, connector_params: Any = None) -> Any:
    params = _params(connector_params)
    if not isinstance(argument, (dict, list, str, int, float, bool, type(None))):
        fail("TypeError", f"argument 'argument' has an unsupported type {type_name(argument)}")
    project = _text(project_id, "project_id") if project_id is not None else context.project
    region = _text(location, "location") if location is not None else context.location
    parent = f"projects/{project}/locations/{region}/workflows/{_text(workflow_id, 'workflow_id')}"
    body = {} if argument is None else {"argument": json.dumps(argument, separators=(",", ":"))}
    execution = _call(context, "POST", f"{parent}/executions", body)
    if params["skip_polling"]:
        return None
    result = _wait(context, execution, params).get("result")
    return json.loads(result) if result else None
