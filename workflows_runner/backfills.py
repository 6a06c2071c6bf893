"""Backfills as objects: start one, list them, read one's progress, cancel it.

A backfill is a chain of executions of the backfill workflow: the one wfr (or gcloud) started,
whose id names the backfill, and the continuations each link starts before nearing Workflows'
step limit, labelled `backfill=<first id>`. The runs it starts carry the same label (the proxy
adds it from `?backfill=`), so its progress is readable from the labels even after a cancel.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import http, ids
from .cloud import Cloud
from .errors import ApiError, Unreachable, WfrError
from .status import Status, TimeStatus, Window

ACTIVE = frozenset({"ACTIVE", "QUEUED"})
BACKFILL_LABEL = "backfill"
REQUEST_LABEL = "wfr_request"  # the id of the `wfr backfill start` (or wfr ui) action that started it
# A backfill's outcome, one vocabulary for `wfr backfill list/show` and the page:
#   running    a link of its chain is still active, or (wait: false) runs it started still run
#   succeeded  it ended and every time succeeded or was skipped
#   failed     it ended and a time failed or could not be started
#   cancelled  it was cancelled
#   error      the backfill itself broke (bad input sent straight to the API, a limit): `reason`
OUTCOMES = ("running", "succeeded", "failed", "cancelled", "error")
FAILURES_SHOWN = 20      # failures a summary lists (the backfill's result keeps 20 too)
LINE = 160               # an error's text in a summary: its first line, cut to this many characters


def one_line(text: str | None) -> str:
    """An error's text cut to a line, for summaries and table cells."""
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return first if len(first) <= LINE else first[:LINE - 1] + "…"


@dataclass(frozen=True)
class Failure:
    schedule_time: str
    error: str               # one line
    execution: str | None = None


@dataclass(frozen=True)
class Progress:
    planned: int | None          # times in the window (None until known)
    started: int                 # runs started (labelled with the backfill)
    skipped: int                 # times the reprocess policy skipped, as the links reported
    failed: int                  # times not started, and started runs that ended badly
    running: int                 # started runs still active
    failures: list[Failure] = field(default_factory=list)
    ended_badly: int = 0         # started runs that ended badly (counted in started and failed)

    @property
    def not_started(self) -> int:
        return self.failed - self.ended_badly

    @property
    def succeeded(self) -> int:
        return self.started - self.running - self.ended_badly

    @property
    def done(self) -> int:
        """Times dealt with: skipped, not started, or started and ended (a run still running is
        not done yet)."""
        return self.started - self.running + self.skipped + self.failed - self.ended_badly


@dataclass(frozen=True)
class Backfill:
    id: str
    name: str                    # the first link's execution name
    workflow: str                # the workflow it runs ("" when its argument names none readable)
    argument: dict[str, Any]
    state: str                   # ACTIVE while a link is active, else the last link's state
    links: list[dict[str, Any]]  # the chain's executions (FULL view), first to last
    progress: Progress | None    # None for a dry run, or a backfill broken before it started any
    result: dict[str, Any] | None  # the last link's result, once the chain ended
    reason: str | None = None    # why its outcome is error, in one line

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def outcome(self) -> str:
        if self.active:
            return "running"
        if self.reason is not None:
            return "error"
        if self.state == "CANCELLED":
            return "cancelled"
        if self.state != "SUCCEEDED":
            return "error"
        p = self.progress
        if p is not None and p.failed:
            return "failed"
        if p is not None and p.running:
            return "running"   # it ended, its runs (started with wait: false) still run
        if p is None and self.result and (self.result.get("failed") or self.result.get("notStarted")):
            return "failed"
        return "succeeded"

    @property
    def create_time(self) -> str:
        return self.links[0].get("createTime") or self.links[0].get("startTime", "")

    @property
    def end_time(self) -> str | None:
        return None if self.active else self.links[-1].get("endTime")

    @property
    def window(self) -> str:
        a = self.argument
        return f"{a.get('start')} .. {a.get('stop')}  {a.get('step')}  {a.get('timezone', 'UTC')}"


def would_start(status: Status, reprocess: str, order: str = "asc") -> list[TimeStatus]:
    """The dry run: the times a backfill of `status`'s window would start, in its order, by the
    proxy's rules over the ledger: none starts the missing times; failed also those whose newest
    attempt is recorded FAILED or CANCELLED (not UNAVAILABLE); completed all but the running and
    queued ones (a queued time is in hand: its waiter starts or skips it)."""
    starting = [t for t in status.times if t.state == "missing" or (
        t.rerun_by_failed if reprocess == "failed" else
        reprocess == "completed" and t.state not in ("running", "queued"))]
    return starting[::-1] if order == "desc" else starting


def argument(workflow: str, window: Window, params: dict[str, Any], concurrency: int = 1,
             reprocess: str = "none", order: str = "asc", wait: bool = True) -> dict[str, Any]:
    """The backfill workflow's argument (workflows/backfill.yaml's header documents it)."""
    return {"workflow": workflow, "start": window.start, "stop": window.stop, "step": window.step,
            "timezone": window.timezone, "params": params, "concurrency": concurrency,
            "reprocess": reprocess, "order": order, "wait": wait}


def backfill_workflow(cloud: Cloud) -> str:
    return cloud.target.workflow_name(cloud.target.backfill_workflow)


def start(cloud: Cloud, argument: dict[str, Any]) -> str:
    """Start the backfill workflow; its execution's name. executions.create takes no request id,
    so the user action's id is a label (REQUEST_LABEL): after a transient fault the create is
    sent again only if no execution carries it. A create that lands later than that lookup may
    still make a second, identical backfill, which starts no time twice (docs/backfill.md)."""
    workflow = backfill_workflow(cloud)
    request_id = str(uuid.uuid4())
    for attempt in range(http.RETRIES + 1):
        try:
            return cloud.create_execution(workflow, argument, labels={REQUEST_LABEL: request_id})["name"]
        except (ApiError, Unreachable) as error:
            if attempt == http.RETRIES or (isinstance(error, ApiError) and error.code not in http.TRANSIENT):
                raise
        http.pause(attempt)
        found = next(cloud.executions(workflow, f'labels.{REQUEST_LABEL}="{request_id}"'), None)
        if found is not None:
            return found["name"]
    raise AssertionError("unreachable")


def run_argument(execution: dict[str, Any]) -> dict[str, Any]:
    try:
        argument = json.loads(execution.get("argument") or "{}")
    except ValueError:
        return {}
    return argument if isinstance(argument, dict) else {}


def _result(execution: dict[str, Any]) -> dict[str, Any] | None:
    if execution.get("state") != "SUCCEEDED" or not execution.get("result"):
        return None
    try:
        result = json.loads(execution["result"])
    except ValueError:
        return None
    return result if isinstance(result, dict) else None


def _error_of(execution: dict[str, Any]) -> str:
    """An ended execution's error message (Google's `error.payload`, else its context), one line."""
    error = execution.get("error") or {}
    payload = error.get("payload") or error.get("context") or ""
    try:   # a raised map arrives JSON-encoded: show its message
        decoded = json.loads(payload)
        if isinstance(decoded, dict) and decoded.get("message"):
            payload = str(decoded["message"])
    except (TypeError, ValueError):
        pass
    return one_line(payload) or f"ended {execution.get('state', '?')}"


def _chain(cloud: Cloud, workflow: str, first: dict[str, Any], backfill_id: str) -> list[dict[str, Any]]:
    return [first] + links_in_order(cloud.executions(workflow, f'labels.{BACKFILL_LABEL}="{backfill_id}"',
                                                     view="FULL"))


def links_in_order(continuations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A chain's continuations by link number. A link created twice (a create retried after its
    answer was lost) runs once: the other execution claims nothing and ends at once with
    {"duplicateOf": ...} (workflows/backfill.yaml's take_over), so it is no link."""
    return sorted((link for link in continuations if "duplicateOf" not in (_result(link) or {})),
                  key=lambda e: int((e.get("labels") or {}).get("backfill_link", "0") or 0))


def _target(cloud: Cloud, argument: dict[str, Any]) -> str:
    """The workflow a backfill runs, as its argument names it; "" when it names none readable."""
    text = argument.get("workflow") or argument.get("parent") or ""
    try:
        return cloud.target.workflow_name(text) if isinstance(text, str) and text else ""
    except WfrError:
        return ""


def _state(links: list[dict[str, Any]]) -> str:
    return "ACTIVE" if any(link.get("state") in ACTIVE for link in links) else links[-1].get("state", "")


def show(cloud: Cloud, backfill: str, planned_times: int | None = None) -> Backfill:
    """A backfill's chain, progress and outcome; `backfill` is an id, a unique prefix or a full
    name (ids.execution). `planned_times`, when known from an earlier look, spares the range
    function's count. A backfill broken by its input is shown with its reason, never raised."""
    workflow = backfill_workflow(cloud)
    name = ids.execution(cloud, workflow, backfill, "backfill")
    first = cloud.execution(name, view="FULL")
    backfill_id = name.rsplit("/", 1)[-1]
    if (first.get("labels") or {}).get(BACKFILL_LABEL):
        raise WfrError(f"{backfill_id} continues backfill {first['labels'][BACKFILL_LABEL]}: show that one")
    links = _chain(cloud, workflow, first, backfill_id)
    argument = run_argument(first)
    target = _target(cloud, argument)
    state = _state(links)
    result = None if state in ACTIVE else _result(links[-1])
    reason = _broken(links, state, target)
    progress = None
    if not argument.get("dryRun") and target and reason is None:
        try:
            progress = _progress(cloud, target, backfill_id, links, result, planned_times)
        except ApiError as error:
            if error.code not in (400, 404):
                raise
            reason = one_line(error.api_message)   # its window or workflow is one the APIs refuse
    return Backfill(backfill_id, name, target, argument, state, links, progress, result, reason)


def _broken(links: list[dict[str, Any]], state: str, target: str) -> str | None:
    """Why the backfill itself broke (outcome error), or None: a link that ended FAILED (its
    input refused, a limit reached), or an argument naming no workflow."""
    if state == "FAILED":
        return _error_of(links[-1])
    if not target and state not in ACTIVE:
        return "its argument names no workflow"
    return None


def _progress(cloud: Cloud, target: str, backfill_id: str, links: list[dict[str, Any]],
              result: dict[str, Any] | None, planned_times: int | None) -> Progress:
    """Counters from the labels (the runs started, their states) and from the links: a link that
    continued passed its counters on, so the newest link's argument holds those of all pages
    before it; the last link's result holds them all. Failures: the runs that ended badly, with
    their own error, then the times that could not be started, with the link's."""
    states: dict[str, int] = {}
    for run in cloud.executions(target, f'labels.{BACKFILL_LABEL}="{backfill_id}"'):
        states[run.get("state", "")] = states.get(run.get("state", ""), 0) + 1
    started = sum(states.values())
    running = sum(states.get(s, 0) for s in ACTIVE)
    ended_badly = started - running - states.get("SUCCEEDED", 0)
    carried = result or run_argument(links[-1]).get("continuation") or {}
    not_started = int(carried.get("notStarted", 0))
    failures = _run_failures(cloud, target, backfill_id) if ended_badly else []
    ran = {f.execution for f in failures}
    for item in carried.get("firstFailures", []):
        text = str(item.get("error", ""))
        if len(failures) < FAILURES_SHOWN and not any(name and name in text for name in ran):
            failures.append(Failure(str(item.get("scheduleTime", "")), one_line(text)))
    total = result["planned"] if result and "planned" in result else planned_times if planned_times is not None \
        else planned(cloud, run_argument(links[0]))
    return Progress(planned=total, started=started, skipped=int(carried.get("skipped", 0)),
                    failed=not_started + ended_badly, running=running, failures=failures,
                    ended_badly=ended_badly)


def _run_failures(cloud: Cloud, target: str, backfill_id: str) -> list[Failure]:
    """The backfill's runs that ended badly, with each run's own error (FULL view carries it)."""
    failures = []
    query = f'labels.{BACKFILL_LABEL}="{backfill_id}" AND (state="FAILED" OR state="CANCELLED")'
    for run in cloud.executions(target, query, view="FULL", order_by="createTime"):
        when = run_argument(run).get("scheduleTime") or ""
        failures.append(Failure(str(when), _error_of(run), run["name"]))
        if len(failures) >= FAILURES_SHOWN:
            break
    return sorted(failures, key=lambda f: f.schedule_time)


def runs(cloud: Cloud, b: Backfill, limit: int = 100) -> list[dict[str, Any]]:
    """The runs the backfill started (its label), newest first, at most `limit`."""
    found: list[dict[str, Any]] = []
    if not b.workflow:
        return found
    try:
        for run in cloud.executions(b.workflow, f'labels.{BACKFILL_LABEL}="{b.id}"', view="FULL",
                                    order_by="createTime desc"):
            found.append(run)
            if len(found) >= limit:
                break
    except ApiError as error:
        if error.code != 404:   # the workflow is gone: no runs to show
            raise
    return found


def planned(cloud: Cloud, argument: dict[str, Any]) -> int:
    """The times in a backfill's window (one countOnly call to the range function)."""
    body = {key: argument[key] for key in ("start", "stop", "step") if key in argument}
    body.update(timezone=argument.get("timezone", "UTC"), countOnly=True)
    return int(cloud.call_function("range", "/", body)["count"])


def list_backfills(cloud: Cloud, workflow: str | None = None) -> list[Backfill]:
    """The backfills (first links only), newest first; of one workflow when given. Counts come
    from each ended chain's result (no per-backfill listing): `progress` is None here."""
    wanted = cloud.target.workflow_name(workflow) if workflow else None
    continuations: dict[str, list[dict[str, Any]]] = {}
    firsts = []
    for execution in cloud.executions(backfill_workflow(cloud), view="FULL", order_by="createTime desc"):
        chain = (execution.get("labels") or {}).get(BACKFILL_LABEL)
        if chain:
            continuations.setdefault(chain, []).append(execution)
        else:
            firsts.append(execution)
    found = []
    for first in firsts:
        argument = run_argument(first)
        target = _target(cloud, argument)
        if wanted and target != wanted:
            continue
        backfill_id = first["name"].rsplit("/", 1)[-1]
        links = [first] + links_in_order(continuations.get(backfill_id, []))
        state = _state(links)
        found.append(Backfill(backfill_id, first["name"], target, argument, state, links, None,
                              None if state in ACTIVE else _result(links[-1]), _broken(links, state, target)))
    return found


def counts(b: Backfill) -> dict[str, int | None]:
    """planned, started, skipped, failed, notStarted, running: from the progress when read, else
    from the ended chain's result, else (running, not read) what the newest link carried."""
    p = b.progress
    if p is not None:
        return {"planned": p.planned, "started": p.started, "skipped": p.skipped, "failed": p.failed,
                "notStarted": p.not_started, "running": p.running}
    carried = b.result or run_argument(b.links[-1]).get("continuation") or {}
    def number(key: str) -> int | None:
        value = carried.get(key)
        return value if isinstance(value, int) else None
    return {"planned": number("planned"), "started": number("started"), "skipped": number("skipped"),
            "failed": number("failed"), "notStarted": number("notStarted"), "running": None}


def cancel(cloud: Cloud, backfill_id: str, runs: bool) -> tuple[list[str], list[str]]:
    """Cancel every active link (twice over: a link may have started its continuation meanwhile)
    and, with `runs`, the backfill's runs still active. The names cancelled: (links, runs)."""
    cancelled_links: list[str] = []
    backfill_id = ids.execution(cloud, backfill_workflow(cloud), backfill_id, "backfill").rsplit("/", 1)[-1]
    for _ in range(3):
        backfill = show(cloud, backfill_id)
        active = [link["name"] for link in backfill.links if link.get("state") in ACTIVE]
        if not active:
            break
        for name in active:
            if _cancel(cloud, name):
                cancelled_links.append(name)
    cancelled_runs: list[str] = []
    if runs and backfill.workflow:
        for run in list(cloud.executions(backfill.workflow,
                                         f'labels.{BACKFILL_LABEL}="{backfill.id}" AND (state="ACTIVE" OR state="QUEUED")')):
            if _cancel(cloud, run["name"]):
                cancelled_runs.append(run["name"])
    return cancelled_links, cancelled_runs


def _cancel(cloud: Cloud, name: str) -> bool:
    try:
        cloud.cancel_execution(name)
        return True
    except ApiError as error:
        if error.code == 400:  # FAILED_PRECONDITION: it ended meanwhile
            return False
        raise
