"""The Workflows Executions v1 REST API on loopback, for the workflows in one folder.

    POST /v1/projects/P/locations/L/workflows/W/executions              create (returns at once, ACTIVE)
    GET  /v1/projects/P/locations/L/workflows/W/executions              list (filter, orderBy, paging, view)
    GET  /v1/projects/P/locations/L/workflows/W/executions/ID           get (view, default FULL)
    POST /v1/projects/P/locations/L/workflows/W/executions/ID:cancel    cancel

Workflow W is the file W.yaml, W.yml or W.json in the folder, read again at each create (as the
latest revision would be). Every request needs `Authorization: Bearer <anything>`. Errors come
in Google's JSON shape. Each execution runs in its own thread; its record lives in SQLite.

In-process use (tests, the stack launcher):
    server = start("workflows", ".localcloud", env={"backfill": {"RANGE_URL": "..."}})
    server.url ... server.stop()
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
import traceback
import uuid
from collections import deque
from datetime import datetime, timezone
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Callable, Mapping
from urllib.parse import unquote

from . import env_vars, filters
from .context import LOCATION, PROJECT, Context
from .errors import Cancelled, LoadError, WorkflowError
from .google_http import (ApiError, GoogleJSONHandler, LogSink, compact_json, invalid, loads_json,
                          not_found, now_rfc3339, query_params, rfc3339, stdout_log, unknown_url)
from .loader import load_text
from .runtime import error_report, run
from .store import Store, lock_state

Execution = dict[str, Any]

WORKFLOW_SUFFIXES = (".yaml", ".yml", ".json")
LISTINGS_KEPT = 16                            # listings whose order is kept for their next pages
ARGUMENT_LIMIT = 32 * 1024                     # bytes, "The size limit is 32KB" (Execution.argument)
PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX = 100, {"BASIC": 1000, "FULL": 100}
BASIC_FIELDS = ("name", "startTime", "endTime", "duration", "state", "workflowRevisionId")
# The Execution resource of workflowexecutions v1 (its discovery document, schemas.Execution):
# the fields a caller sets, with the enum values each enum field takes, and the output-only fields,
# which Google accepts in a create and ignores. Anything else is refused, as Google does.
EXECUTION_ENUMS = {
    "callLogLevel": ("CALL_LOG_LEVEL_UNSPECIFIED", "LOG_ALL_CALLS", "LOG_ERRORS_ONLY", "LOG_NONE"),
    "executionHistoryLevel": ("EXECUTION_HISTORY_LEVEL_UNSPECIFIED", "EXECUTION_HISTORY_BASIC",
                              "EXECUTION_HISTORY_DETAILED"),
}
EXECUTION_INPUT_FIELDS = {"argument", "labels", "disableConcurrencyQuotaOverflowBuffering", *EXECUTION_ENUMS}
EXECUTION_OUTPUT_FIELDS = {"name", "startTime", "endTime", "duration", "state", "result", "error",
                           "workflowRevisionId", "status", "stateError", "createTime"}
EXECUTION_FIELDS = EXECUTION_INPUT_FIELDS | EXECUTION_OUTPUT_FIELDS
DEPTH_MESSAGE = ("Resource limit exceeded: a value nests deeper than localcloud can process "
                 "(Google's Workflows sets no documented nesting limit)")
INTERRUPTED_MESSAGE = "localcloud stopped while this execution was ACTIVE; it was not resumed"
# Per project and region: "Concurrent executions ... 10,000" and "Backlogged executions ...
# 100,000" (https://cloud.google.com/workflows/quotas). Past the first, a create waits QUEUED and
# starts, oldest first, when an execution ends (https://cloud.google.com/workflows/docs/backlog-executions);
# past both, or with disableConcurrencyQuotaOverflowBuffering, it is refused with 429.
# LOCALCLOUD_CONCURRENT_EXECUTIONS and LOCALCLOUD_BACKLOG lower them (read when the API starts).
CONCURRENT_EXECUTIONS, BACKLOG = 10_000, 100_000
QUOTA_MESSAGE = ("Resource has been exhausted (e.g. check quota): the concurrent executions quota "
                 "({limit}) is reached{why}")

ROUTE = re.compile(r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
                   r"/workflows/(?P<workflow>[^/]+)/executions(?:/(?P<execution>[^/:]+))?"
                   r"(?P<cancel>:cancel)?$")


class Executions:
    """The API's behaviour, free of HTTP: create, get, list, cancel, and the runs themselves."""

    def __init__(self, workflows_dir: str | Path, store: Store, project: str, location: str,
                 env: Mapping[str, Mapping[str, str]] | None, log: LogSink,
                 files: Mapping[str, str | Path] | None = None):
        self.workflows_dir = Path(workflows_dir)
        # Workflows served from a given file rather than from the folder: the one file the CLI's
        # `run` was given (W.json beside a W.yaml), or backfill.yaml beside a user's own folder.
        self.files = {workflow: Path(path) for workflow, path in (files or {}).items()}
        self.store, self.project, self.location = store, project, location
        self.env = {workflow: dict(values) for workflow, values in (env or {}).items()}
        self.log = log
        self.api_url: str | None = None
        self.logs: deque[dict[str, Any]] = deque(maxlen=10_000)   # what sys.log wrote, newest last
        self._running: dict[str, tuple[threading.Thread, Context]] = {}
        self._loaded: dict[str, Any] = {}      # parsed workflows by source hash: parse once, run many
        self._lock = threading.Lock()
        # A listing's order, by (query, snapshot): its later pages read only their own executions,
        # instead of scanning and sorting the workflow's whole history again for each page.
        self._listings: dict[tuple[str, int], list[int]] = {}
        self._stopping = False
        self.concurrency_limit = int(os.environ.get("LOCALCLOUD_CONCURRENT_EXECUTIONS") or CONCURRENT_EXECUTIONS)
        self.backlog_limit = int(os.environ.get("LOCALCLOUD_BACKLOG") or BACKLOG)
        self._backlog: deque[tuple[str, threading.Thread]] = deque()   # QUEUED, oldest first
        self._interrupt_leftovers()

    # --- workflows -------------------------------------------------------------------------
    def workflow_path(self, project: str, location: str, workflow_id: str) -> Path:
        parent = f"projects/{project}/locations/{location}/workflows/{workflow_id}"
        if (project, location) == (self.project, self.location) and "/" not in workflow_id:
            if workflow_id in self.files:
                return self.files[workflow_id]
            for suffix in WORKFLOW_SUFFIXES:
                path = self.workflows_dir / f"{workflow_id}{suffix}"
                if path.is_file():
                    return path
        raise not_found(parent)

    def parent(self, workflow_id: str) -> str:
        return f"projects/{self.project}/locations/{self.location}/workflows/{workflow_id}"

    # --- create ----------------------------------------------------------------------------
    def create(self, project: str, location: str, workflow_id: str, body: Any) -> Execution:
        path = self.workflow_path(project, location, workflow_id)
        argument = self._check_execution_body(body)
        source = path.read_bytes()
        revision = hashlib.sha256(source).hexdigest()
        workflow = self._loaded.get(revision)
        if workflow is None:
            try:
                workflow = self._loaded[revision] = load_text(source.decode())
            except (LoadError, UnicodeDecodeError) as error:
                # Google would have refused to deploy it; say so rather than run it.
                raise ApiError(400, f"workflow {self.parent(workflow_id)} does not deploy: {error}",
                               "FAILED_PRECONDITION") from None
        execution_id = str(uuid.uuid4())
        execution: Execution = {
            "name": f"{self.parent(workflow_id)}/executions/{execution_id}",
            "startTime": "",   # both times are stamped on admission, below
            "state": "ACTIVE",
            "workflowRevisionId": f"000001-{revision[:3]}",
            "createTime": "",
        }
        for field in sorted(EXECUTION_INPUT_FIELDS):
            # Kept as given, but as proto3 JSON writes a resource: false, empty and the enums'
            # *_UNSPECIFIED values are the defaults and are left out.
            value = body.get(field)
            if value and not (field in EXECUTION_ENUMS and value == EXECUTION_ENUMS[field][0]):
                execution[field] = value
        context = Context(project=self.project, location=self.location, workflow_id=workflow_id,
                          execution_id=execution_id, env=dict(self.env.get(workflow_id, {})),
                          api_url=self.api_url, cancelled=threading.Event(),
                          log=self._execution_log(workflow_id, execution_id))
        thread = threading.Thread(target=self._run, args=(execution["name"], workflow, argument, context),
                                  name=f"execution-{execution_id}", daemon=True)
        with self._lock:
            if self._stopping:
                raise ApiError(503, "localcloud is stopping", "UNAVAILABLE")
            # Stamped in the order of admission, so the backlog's order is createTime's.
            execution["startTime"] = execution["createTime"] = now_rfc3339()
            queued = self._admit(execution, body)
            self.store.insert(execution)
            self._running[execution["name"]] = (thread, context)
            if queued:
                self._backlog.append((execution["name"], thread))
        self.log({"severity": "INFO", "message": f"execution created: {execution['name']}",
                  "execution": execution["name"], **({"state": "QUEUED"} if queued else {})})
        if not queued:
            thread.start()
        return execution

    def _admit(self, execution: Execution, body: dict[str, Any]) -> bool:
        """Under self._lock: whether the execution waits QUEUED (it is then so marked), or
        ApiError 429 when neither the concurrency quota nor the backlog has room."""
        active = len(self._running) - len(self._backlog)
        if active < self.concurrency_limit:
            return False
        if body.get("disableConcurrencyQuotaOverflowBuffering"):
            raise ApiError(429, QUOTA_MESSAGE.format(limit=self.concurrency_limit,
                                                     why=" and this execution asked not to be backlogged"),
                           "RESOURCE_EXHAUSTED")
        if len(self._backlog) >= self.backlog_limit:
            raise ApiError(429, QUOTA_MESSAGE.format(limit=self.concurrency_limit,
                                                     why=f" and so is the backlog ({self.backlog_limit})"),
                           "RESOURCE_EXHAUSTED")
        execution["state"] = "QUEUED"
        execution.pop("startTime")
        return True

    def _start_queued(self) -> None:
        """Under self._lock: start backlogged executions, oldest first, while slots are free."""
        while self._backlog and len(self._running) - len(self._backlog) < self.concurrency_limit:
            name, thread = self._backlog.popleft()
            started = self.store.update(name, lambda e: {**e, "state": "ACTIVE", "startTime": now_rfc3339()}
                                        if e["state"] == "QUEUED" else None)
            if started is None:        # cancelled while it waited
                self._running.pop(name, None)
                continue
            thread.start()

    def _check_execution_body(self, body: Any) -> Any:
        """Refuse what Google would refuse; returns the decoded argument (None if none is given)."""
        if not isinstance(body, dict):
            raise invalid("Invalid JSON payload received. Expected an object for 'execution'.")
        for key in body:
            if key not in EXECUTION_FIELDS:
                raise invalid(f'Invalid JSON payload received. Unknown name "{key}" at \'execution\': '
                              "Cannot find field.")
        text, argument = body.get("argument"), None
        if text is not None:
            if not isinstance(text, str):
                raise invalid("Invalid value at 'execution.argument' (TYPE_STRING): the argument must be "
                              "a JSON string, e.g. \"{\\\"a\\\":1}\"")
            size = len(text.encode())
            if size > ARGUMENT_LIMIT:
                raise invalid(f"execution.argument: the argument is {size} bytes; "
                              f"the limit is {ARGUMENT_LIMIT} bytes (32KB)")
            if text:
                try:
                    # Google documents no nesting limit for arguments (only their 32 KB size):
                    # https://cloud.google.com/workflows/quotas#resource_limits
                    argument = loads_json(text, max_depth=None)
                except ValueError as error:
                    raise invalid(f"execution.argument: the argument must be valid JSON: {error}") from None
        for field, values in EXECUTION_ENUMS.items():
            value = body.get(field)
            if value is not None and value not in values:
                raise invalid(f"Invalid value at 'execution.{snake_case(field)}' (type.googleapis.com/"
                              f"google.cloud.workflows.executions.v1.Execution.{field[0].upper()}{field[1:]}), "
                              f"{json.dumps(value)}")
        flag = body.get("disableConcurrencyQuotaOverflowBuffering")
        if flag is not None and not isinstance(flag, bool):
            raise invalid("Invalid value at 'execution.disable_concurrency_quota_overflow_buffering' (TYPE_BOOL), "
                          f"{json.dumps(flag)}")
        check_labels(body.get("labels"))
        return argument

    # --- runs ------------------------------------------------------------------------------
    def _execution_log(self, workflow_id: str, execution_id: str) -> Callable[[str, Any], None]:
        def write(severity: str, payload: Any) -> None:
            entry = {"severity": severity, "message": payload,
                     "logging.googleapis.com/labels": {
                         "workflows.googleapis.com/workflow_id": workflow_id,
                         "workflows.googleapis.com/execution_id": execution_id}}
            self.logs.append(entry)
            self.log(entry)
        return write

    def _run(self, name: str, workflow: Any, argument: Any, context: Context) -> None:
        outcome: dict[str, Any]
        try:
            result = run(workflow, argument, context)
            outcome = {"state": "SUCCEEDED", "result": compact_json(result)}
        except Cancelled:
            # cancel() has already recorded CANCELLED; a stop leaves the run interrupted.
            outcome = interrupted() if self._stopping else {"state": "CANCELLED"}
        except WorkflowError as error:
            outcome = {"state": "FAILED", "error": error_report(error)}
        except RecursionError:
            # A value nested some hundreds of levels deep outruns the engine's recursion. Google
            # documents no nesting limit (https://cloud.google.com/workflows/quotas#resource_limits),
            # so this is localcloud's limit, reported as the documented tag for an exhausted resource.
            outcome = {"state": "FAILED", "error": error_report(WorkflowError(
                {"message": DEPTH_MESSAGE, "tags": ["ResourceLimitError"]}))}
        except Exception as error:  # an engine bug must still end the execution, visibly
            traceback.print_exc()
            outcome = {"state": "FAILED", "error": {
                "payload": compact_json({"message": f"{type(error).__name__}: {error}",
                                         "tags": ["SystemError"]}),
                "context": traceback.format_exc()}}
        try:
            self._finish(name, outcome, steps=context.steps_used())
        except sqlite3.ProgrammingError:
            pass   # the server stopped and closed the store; stop() already recorded this run
        finally:
            with self._lock:   # only now: wait() returns once the ending is recorded
                self._running.pop(name, None)
                if not self._stopping:
                    self._start_queued()

    def _finish(self, name: str, outcome: dict[str, Any], steps: int | None = None) -> Execution | None:
        """Record how an ACTIVE execution ended; the first ending wins (a cancel, a stop, the run).
        Its log line carries the steps it ran, when known (benchmarks read them)."""
        def change(execution: Execution) -> Execution | None:
            return ended(execution, outcome) if execution["state"] in ("ACTIVE", "QUEUED") else None
        final = self.store.update(name, change)
        if final is not None:
            self.log({"severity": "ERROR" if final["state"] == "FAILED" else "INFO",
                      "message": f"execution {final['state']}: {name}", "execution": name,
                      **({"steps": steps} if steps is not None else {})})
        return final

    def _interrupt_leftovers(self) -> None:
        # ACTIVE records from a previous process have no thread any more. Re-running them could
        # repeat side effects twice, so they end FAILED, with a message that says why.
        for execution in self.store.active():
            self._finish(execution["name"], interrupted())

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._stopping = True
            running = [entry for entry in self._running.values() if entry[0].ident is not None]
        for _, context in running:
            context.cancelled.set()
        for thread, _ in running:
            thread.join(timeout)
        self._interrupt_leftovers()     # QUEUED ones too: they never start

    def wait(self, name: str, timeout: float | None = None) -> None:
        """Block until execution `name` ends (tests and the CLI's run)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                entry = self._running.get(name)
            if entry is None:
                return
            if entry[0].ident is not None:        # started (a QUEUED one waits for a slot first)
                entry[0].join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(0.02)

    # --- get, list, cancel -----------------------------------------------------------------
    def find(self, project: str, location: str, workflow_id: str, execution_id: str) -> Execution:
        self.workflow_path(project, location, workflow_id)
        name = f"{self.parent(workflow_id)}/executions/{execution_id}"
        execution = self.store.get(name)
        if execution is None:
            raise not_found(name)
        return execution

    def list(self, project: str, location: str, workflow_id: str, params: dict[str, str]) -> dict[str, Any]:
        self.workflow_path(project, location, workflow_id)
        parent = self.parent(workflow_id)
        view = parse_view(params.get("view"), default="BASIC")
        try:
            predicate = filters.parse_filter(params.get("filter"))
            order = filters.parse_order_by(params.get("orderBy"))
        except ValueError as error:
            raise invalid(str(error)) from None
        page_size = parse_page_size(params.get("pageSize"), view)
        query_key = hashlib.sha256(compact_json([parent, params.get("filter") or "",
                                                 params.get("orderBy") or ""]).encode()).hexdigest()[:16]
        offset, snapshot = 0, self.store.last_seq()
        if params.get("pageToken"):
            offset, snapshot = decode_page_token(params["pageToken"], query_key)
        order_key = (query_key, snapshot)
        with self._lock:
            ordered = self._listings.get(order_key)
        if ordered is None or offset == 0:
            candidates = self.store.scan(parent, max_seq=snapshot,
                                         labels=filters.required_labels(params.get("filter")))
            ordered = [seq for seq, _ in filters.sort_executions(
                [row for row in candidates if predicate(row[1])], order)]
            with self._lock:
                self._listings[order_key] = ordered
                while len(self._listings) > LISTINGS_KEPT:
                    self._listings.pop(next(iter(self._listings)))
        # The page's executions as they are now; one that has left the filter since the first
        # page (its state changed) is left out, so a page may hold fewer than pageSize.
        page = [doc for doc in self.store.docs(ordered[offset:offset + page_size]) if predicate(doc)]
        response: dict[str, Any] = {}
        if page:
            response["executions"] = [shape(execution, view) for execution in page]
        if offset + page_size < len(ordered):
            response["nextPageToken"] = encode_page_token(offset + page_size, snapshot, query_key)
        return response

    def cancel(self, project: str, location: str, workflow_id: str, execution_id: str) -> Execution:
        name = self.find(project, location, workflow_id, execution_id)["name"]
        cancelled = self._finish(name, {"state": "CANCELLED"})
        if cancelled is None:
            raise ApiError(400, f"Execution {name} is not active and cannot be cancelled",
                           "FAILED_PRECONDITION")
        with self._lock:
            entry = self._running.get(name)
            waiting = [queued for queued in self._backlog if queued[0] == name]
            for queued in waiting:     # never started: it leaves the backlog, not a thread
                self._backlog.remove(queued)
                self._running.pop(name, None)
        if entry and not waiting:
            entry[1].cancelled.set()
        return cancelled


def snake_case(field: str) -> str:
    """A JSON field name as the proto field Google's error messages name (callLogLevel -> call_log_level)."""
    return re.sub("[A-Z]", lambda upper: "_" + upper.group(0).lower(), field)


def ended(execution: Execution, outcome: dict[str, Any]) -> Execution:
    now = datetime.now(timezone.utc)
    # A backlogged execution cancelled before it started has no startTime.
    seconds = (now - datetime.fromisoformat(execution.get("startTime") or execution["createTime"])).total_seconds()
    return {**execution, **outcome, "endTime": rfc3339(now), "duration": f"{seconds:.6f}s"}


def interrupted() -> dict[str, Any]:
    return {"state": "FAILED", "error": {
        "payload": compact_json({"message": INTERRUPTED_MESSAGE, "tags": ["UnavailableError"]}),
        "context": INTERRUPTED_MESSAGE}}


def shape(execution: Execution, view: str) -> Execution:
    if view == "BASIC":
        return {key: execution[key] for key in BASIC_FIELDS if key in execution}
    return execution


def parse_view(value: str | None, default: str) -> str:
    if value in (None, "", "EXECUTION_VIEW_UNSPECIFIED"):
        return default
    if value not in ("BASIC", "FULL"):
        raise invalid(f"Invalid value at 'view' (type.googleapis.com/google.cloud.workflows.executions."
                      f"v1.ExecutionView), \"{value}\"")
    return value


def parse_page_size(value: str | None, view: str) -> int:
    if value in (None, ""):
        return PAGE_SIZE_DEFAULT
    try:
        size = int(value)
    except ValueError:
        raise invalid(f"Invalid value at 'page_size' (TYPE_INT32), \"{value}\"") from None
    if size < 0:
        raise invalid("page_size must not be negative")
    # "Values greater than the max value will be coerced down to it"; 0 means the default.
    return min(size or PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX[view])


def encode_page_token(offset: int, snapshot: int, query_key: str) -> str:
    raw = compact_json({"o": offset, "s": snapshot, "q": query_key}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, query_key: str) -> tuple[int, int]:
    try:
        data = loads_json(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)), max_depth=1)
        offset, snapshot, key = int(data["o"]), int(data["s"]), data["q"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise invalid("The page token is invalid.") from None
    if key != query_key:
        raise invalid("The page token does not match the request: filter and orderBy must stay the same.")
    return offset, snapshot


def check_labels(labels: Any) -> None:
    """Labels: at most 64; keys and values at most 63 characters of lowercase letters, digits,
    `_` and `-` (international lowercase letters allowed); keys start with a lowercase letter."""
    if labels is None:
        return
    if not isinstance(labels, dict):
        raise invalid("Invalid value at 'execution.labels': expected a map of strings")
    if len(labels) > 64:
        raise invalid(f"execution.labels: at most 64 labels are allowed, got {len(labels)}")

    def allowed(char: str) -> bool:
        return (char.isalpha() and char.islower()) or char.isdigit() or char in "_-"
    for key, value in labels.items():
        if not isinstance(value, str):
            raise invalid(f"Invalid value at 'execution.labels[{key}]' (TYPE_STRING), {json.dumps(value)}")
        if not (1 <= len(key) <= 63 and key[0].isalpha() and key[0].islower() and all(map(allowed, key))):
            raise invalid(f"execution.labels: invalid label key {key!r}: keys are 1-63 lowercase letters, "
                          "digits, '_' or '-', starting with a lowercase letter")
        if not (len(value) <= 63 and all(map(allowed, value))):
            raise invalid(f"execution.labels: invalid value {value!r} for label {key!r}: values are at most "
                          "63 lowercase letters, digits, '_' or '-'")


class ExecutionsHandler(GoogleJSONHandler):
    server: "ApiServer"
    # Room for a 32 KB argument JSON-escaped (at most 6 bytes per byte, "\u0001") and its labels.
    max_body_bytes = 8 * ARGUMENT_LIMIT

    def route(self, method: str, url: Any) -> tuple[int, Any]:
        match = ROUTE.match(url.path)
        if not match:
            raise unknown_url(url)
        parts = {key: unquote(value) for key, value in match.groupdict().items() if value}
        executions = self.server.executions
        where = (parts["project"], parts["location"], parts["workflow"])
        if "execution" not in parts and method == "POST" and "cancel" not in parts:
            query_params(url, set())
            return 200, executions.create(*where, self.read_json())
        if "execution" not in parts and method == "GET" and "cancel" not in parts:
            return 200, executions.list(*where, query_params(
                url, {"filter", "orderBy", "pageSize", "pageToken", "view"}))
        if "execution" in parts and "cancel" not in parts and method == "GET":
            view = parse_view(query_params(url, {"view"}).get("view"), default="FULL")
            return 200, shape(executions.find(*where, parts["execution"]), view)
        if "execution" in parts and "cancel" in parts and method == "POST":
            query_params(url, set())
            self.read_json()
            return 200, executions.cancel(*where, parts["execution"])
        raise unknown_url(url)


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    executions: Executions
    state_lock: IO[str]

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def logs(self) -> deque[dict[str, Any]]:
        return self.executions.logs

    def stop(self) -> None:
        """Stop serving; running executions are interrupted (recorded FAILED, see docs/localcloud.md)."""
        self.shutdown()
        self.executions.stop()
        self.server_close()
        self.executions.store.close()
        self.state_lock.close()


def start(workflows_dir: str | Path, state_dir: str | Path, host: str = "127.0.0.1", port: int = 0,
          env: Mapping[str, Mapping[str, str]] | None = None, project: str = PROJECT,
          location: str = LOCATION, log: LogSink = stdout_log,
          files: Mapping[str, str | Path] | None = None) -> ApiServer:
    """Serve the Executions API in a background thread; returns the server (`.url`, `.stop()`).
    `files` maps workflow ids to files that take precedence over the folder's.
    Raises store.StateLocked while another API serves `state_dir`, ValueError for env vars
    Workflows would refuse to deploy (env_vars.check)."""
    for workflow, values in (env or {}).items():
        env_vars.check(workflow, values)
    state_lock = lock_state(state_dir)
    try:
        server = ApiServer((host, port), ExecutionsHandler)
    except BaseException:
        state_lock.close()
        raise
    server.state_lock = state_lock
    server.executions = Executions(workflows_dir, Store(state_dir), project, location, env, log, files)
    server.executions.api_url = server.url
    threading.Thread(target=server.serve_forever, args=(0.05,), name="localcloud-api", daemon=True).start()
    return server

