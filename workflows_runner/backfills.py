"""Backfills as objects: start one, list them, read one's progress, cancel it.

A backfill is a chain of executions of the backfill workflow: the one wfr (or gcloud) started,
whose id names the backfill, and the continuations each link starts before nearing Workflows'
step limit, labelled `backfill=<first id>`. The runs it starts carry the same label (the proxy
adds it from `?backfill=`), so its progress is readable from the labels even after a cancel.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .cloud import Cloud
from .errors import ApiError, WfrError
from .status import Status, TimeStatus, Window

ACTIVE = frozenset({"ACTIVE", "QUEUED"})
BACKFILL_LABEL = "backfill"


@dataclass(frozen=True)
class Progress:
    planned: int | None          # times in the window (None until known)
    started: int                 # runs started (labelled with the backfill)
    skipped: int                 # times the reprocess policy skipped, as the links reported
    failed: int                  # times not started, and started runs that ended badly
    running: int                 # started runs still active
    first_failures: list[dict[str, Any]] = field(default_factory=list)

    ended_badly: int = 0         # started runs that ended badly (counted in started and failed)

    @property
    def done(self) -> int:
        """Times dealt with: skipped, not started, or started and ended (a run still running is
        not done yet)."""
        return self.started - self.running + self.skipped + self.failed - self.ended_badly


@dataclass(frozen=True)
class Backfill:
    id: str
    name: str                    # the first link's execution name
    workflow: str                # the workflow it runs
    argument: dict[str, Any]
    state: str                   # ACTIVE while a link is active, else the last link's state
    links: list[dict[str, Any]]  # the chain's executions (FULL view), first to last
    progress: Progress | None    # None for a dry run
    result: dict[str, Any] | None  # the last link's result, once the chain ended

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def create_time(self) -> str:
        return self.links[0].get("createTime") or self.links[0].get("startTime", "")

    @property
    def end_time(self) -> str | None:
        return None if self.active else self.links[-1].get("endTime")


def would_start(status: Status, reprocess: str, order: str = "asc") -> list[TimeStatus]:
    """The dry run: the times a backfill of `status`'s window would start, in its order, by the
    proxy's rules over the ledger: none starts the missing times; failed also those whose newest
    attempt is recorded FAILED or CANCELLED (not UNAVAILABLE); completed all but the running ones."""
    starting = [t for t in status.times if t.state == "missing" or (
        t.rerun_by_failed if reprocess == "failed" else reprocess == "completed" and t.state != "running")]
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
    """Start the backfill workflow; its execution's name."""
    return cloud.create_execution(backfill_workflow(cloud), argument, labels={})["name"]


def run_argument(execution: dict[str, Any]) -> dict[str, Any]:
    try:
        argument = json.loads(execution.get("argument") or "{}")
    except ValueError:
        return {}
    return argument if isinstance(argument, dict) else {}


def _result(execution: dict[str, Any]) -> dict[str, Any] | None:
    if execution.get("state") != "SUCCEEDED" or not execution.get("result"):
        return None
    result = json.loads(execution["result"])
    return result if isinstance(result, dict) else None


def show(cloud: Cloud, backfill_id: str, planned_times: int | None = None) -> Backfill:
    """A backfill's chain and progress; `planned_times`, when known from an earlier look, spares
    the range function's count."""
    workflow = backfill_workflow(cloud)
    name = backfill_id if backfill_id.startswith("projects/") else f"{workflow}/executions/{backfill_id}"
    first = cloud.execution(name, view="FULL")
    backfill_id = name.rsplit("/", 1)[-1]
    if (first.get("labels") or {}).get(BACKFILL_LABEL):
        raise WfrError(f"{backfill_id} continues backfill {first['labels'][BACKFILL_LABEL]}: show that one")
    links = [first] + sorted(cloud.executions(workflow, f'labels.{BACKFILL_LABEL}="{backfill_id}"', view="FULL"),
                             key=lambda e: int((e.get("labels") or {}).get("backfill_link", "0")))
    argument = run_argument(first)
    target = cloud.target.workflow_name(argument.get("workflow") or argument.get("parent") or "") \
        if (argument.get("workflow") or argument.get("parent")) else ""
    state = "ACTIVE" if any(link.get("state") in ACTIVE for link in links) else links[-1].get("state", "")
    result = None if state in ACTIVE else _result(links[-1])
    progress = None
    if not argument.get("dryRun") and target:
        progress = _progress(cloud, target, backfill_id, links, result, planned_times)
    return Backfill(backfill_id, name, target, argument, state, links, progress, result)


def _progress(cloud: Cloud, target: str, backfill_id: str, links: list[dict[str, Any]],
              result: dict[str, Any] | None, planned_times: int | None) -> Progress:
    """Counters from the labels (the runs started, their states) and from the links: a link that
    continued passed its counters on, so the newest link's argument holds those of all pages
    before it; the last link's result holds them all."""
    states: dict[str, int] = {}
    for run in cloud.executions(target, f'labels.{BACKFILL_LABEL}="{backfill_id}"'):
        states[run.get("state", "")] = states.get(run.get("state", ""), 0) + 1
    started = sum(states.values())
    running = sum(states.get(s, 0) for s in ACTIVE)
    ended_badly = started - running - states.get("SUCCEEDED", 0)
    # Times that failed to start are known to the links only: the last one's result, or what
    # the earlier links passed on to the newest.
    carried = result or run_argument(links[-1]).get("continuation") or {}
    not_started = int(carried.get("notStarted", 0))
    total = result["planned"] if result else planned_times if planned_times is not None \
        else planned(cloud, run_argument(links[0]))
    return Progress(planned=total, started=started,
                    skipped=int(carried.get("skipped", 0)), failed=not_started + ended_badly,
                    running=running, first_failures=list(carried.get("firstFailures", [])),
                    ended_badly=ended_badly)


def planned(cloud: Cloud, argument: dict[str, Any]) -> int:
    """The times in a backfill's window (one countOnly call to the range function)."""
    body = {key: argument[key] for key in ("start", "stop", "step") if key in argument}
    body.update(timezone=argument.get("timezone", "UTC"), countOnly=True)
    return int(cloud.call_function("range", "/", body)["count"])


def list_backfills(cloud: Cloud, workflow: str | None = None) -> list[Backfill]:
    """The backfills (first links only), newest first; of one workflow when given."""
    wanted = cloud.target.workflow_name(workflow) if workflow else None
    found = []
    continuations: dict[str, list[dict[str, Any]]] = {}
    firsts = []
    for execution in cloud.executions(backfill_workflow(cloud), view="FULL", order_by="createTime desc"):
        chain = (execution.get("labels") or {}).get(BACKFILL_LABEL)
        if chain:
            continuations.setdefault(chain, []).append(execution)
        else:
            firsts.append(execution)
    for first in firsts:
        argument = run_argument(first)
        target_text = argument.get("workflow") or argument.get("parent") or ""
        try:
            target = cloud.target.workflow_name(target_text)
        except WfrError:
            target = target_text
        if wanted and target != wanted:
            continue
        backfill_id = first["name"].rsplit("/", 1)[-1]
        links = [first] + sorted(continuations.get(backfill_id, []),
                                 key=lambda e: int((e.get("labels") or {}).get("backfill_link", "0")))
        state = "ACTIVE" if any(link.get("state") in ACTIVE for link in links) else links[-1].get("state", "")
        found.append(Backfill(backfill_id, first["name"], target, argument, state, links, None,
                              None if state in ACTIVE else _result(links[-1])))
    return found


def cancel(cloud: Cloud, backfill_id: str, runs: bool) -> tuple[list[str], list[str]]:
    """Cancel every active link (twice over: a link may have started its continuation meanwhile)
    and, with `runs`, the backfill's runs still active. The names cancelled: (links, runs)."""
    cancelled_links: list[str] = []
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
