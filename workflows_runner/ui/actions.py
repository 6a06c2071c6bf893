"""What the page selects and what its buttons do: each action is planned first (the dry run and
the equivalent `wfr` command, shown for confirmation), then performed by the very functions the
CLI's commands call (backfills.start/cancel, rerun.rerun_records)."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Mapping

from .. import alerts, backfills, rerun as rerun_, selection as selection_, status as status_
from ..cloud import Cloud
from ..errors import ApiError, WfrError
from ..render import short_id
from ..selection import Selection

MAX_TIMES = 10_000       # a larger window is refused: the page would be too heavy to be useful
SHOWN = 20               # times or executions listed in a plan


@dataclass(frozen=True)
class Plan:
    """An action's dry run, for the confirmation page."""
    action: str                  # backfill | rerun | cancel
    title: str
    summary: str
    items: list[str]             # the first times or executions it touches
    count: int                   # how many it touches; 0: nothing to do
    command: str                 # the equivalent `wfr` command line
    fields: dict[str, str]       # what the confirmation posts back


def load(cloud: Cloud, selection: Selection) -> status_.Status:
    """The status of the selected window: what `wfr status` reads for the same flags, after the
    same checks (selection.choose)."""
    picked = selection_.choose(cloud, selection)
    if picked.planned > MAX_TIMES:
        raise WfrError(f"the window holds {picked.planned} times, more than the page shows ({MAX_TIMES}): "
                       "narrow it, or use wfr status")
    status = status_.read(cloud, picked.workflow, picked.window, picked.params, deadline=picked.deadline)
    return alerts.annotate(cloud, status)


def recent_backfills(cloud: Cloud, workflow: str, limit: int = 5) -> list[backfills.Backfill]:
    """The workflow's newest backfills, each with its progress (backfills.show, as `wfr backfill show`);
    none where the backfill workflow is not deployed (404), so the grid still shows."""
    try:
        found = backfills.list_backfills(cloud, workflow)[:limit]
    except ApiError as error:
        if error.code == 404:
            return []
        raise
    return [backfills.show(cloud, b.id) for b in found]


def duplicate(status: status_.Status, found: list[backfills.Backfill]) -> backfills.Backfill | None:
    """A running backfill of this very window and params, which a new one would duplicate."""
    w = status.window
    for b in found:
        a = b.argument
        if b.active and b.workflow == status.workflow and not a.get("dryRun") and \
                (a.get("start"), a.get("stop"), a.get("step"), a.get("timezone", "UTC"), a.get("params") or {}) == \
                (w.start, w.stop, w.step, w.timezone, status.params):
            return b
    return None


def _one_time(cloud: Cloud, form: Mapping[str, str]) -> tuple[status_.Status, status_.TimeStatus]:
    """The selected window's time `form["time"]`, which must have run and not be running or queued."""
    status = load(cloud, Selection.from_form(form))
    wanted = form.get("time") or ""
    t = next((t for t in status.times if t.schedule_time == wanted), None)
    if t is None:
        raise WfrError(f"{wanted or 'no time'} is not a scheduled time of this window")
    if t.state == "missing" or not t.record:
        raise WfrError(f"{wanted} never ran: start it with Backfill missing")
    if t.state == "running":
        raise WfrError(f"{wanted} is still running (attempt {t.attempts})")
    if t.state == "queued":
        raise WfrError(f"{wanted} is queued: it waits for a free slot of its job (overlap=queue)")
    return status, t


def _command(words: list[str], target_flags: list[str]) -> str:
    return shlex.join(["wfr", *words, *target_flags])


def _workflow_id(workflow: str) -> str:
    return workflow.rsplit("/", 1)[-1]


def _concurrency(form: Mapping[str, str]) -> int:
    text = form.get("concurrency") or "1"
    if not re.fullmatch(r"[0-9]{1,2}", text, re.ASCII) or not 1 <= int(text) <= 50:
        raise WfrError(f"concurrency must be 1 to 50, got {text!r}")
    return int(text)


def plan(cloud: Cloud, action: str, form: Mapping[str, str], target_flags: list[str]) -> Plan:
    selection = Selection.from_form(form)
    if action == "backfill":
        status = load(cloud, selection)
        concurrency = _concurrency(form)
        starting = backfills.would_start(status, "none")
        return Plan("backfill", f"Backfill {len(starting)} missing time(s)",
                    f"{len(status.times)} times planned; {len(starting)} would start (reprocess none), "
                    f"{len(status.times) - len(starting)} would be skipped; {concurrency} at once.",
                    [t.schedule_time for t in starting[:SHOWN]], len(starting),
                    _command(["backfill", "start", _workflow_id(status.workflow), *selection.window_flags(),
                              "--concurrency", str(concurrency)], target_flags),
                    {**selection.form(), "concurrency": str(concurrency)})
    if action == "rerun":
        status = load(cloud, selection)
        records = set(rerun_.failed_records(status.times))
        again = [t for t in status.times if t.record in records]
        return Plan("rerun", f"Re-run {len(again)} failed time(s)",
                    f"Each failed or cancelled time starts again with its original argument "
                    f"(a new attempt of the same run); {status.totals['running']} running time(s) are left alone.",
                    [f"{t.schedule_time}  {t.state}, attempt {t.attempts}" for t in again[:SHOWN]], len(again),
                    _command(["rerun", _workflow_id(status.workflow), "--failed", *selection.window_flags()],
                             target_flags),
                    selection.form())
    if action == "rerun-time":
        status, t = _one_time(cloud, form)
        return Plan("rerun-time", f"Re-run {t.schedule_time}",
                    f"Its attempt {t.attempts} ended {t.state}; attempt {t.attempts + 1} starts with the run's "
                    "original argument (the same run, a new attempt). Nothing else of the window is touched.",
                    [f"{t.schedule_time}  {t.state}, attempt {t.attempts}, {short_id(t.execution)}"], 1,
                    _command(["rerun", _workflow_id(status.workflow), short_id(t.execution)], target_flags),
                    {**selection.form(), "time": t.schedule_time})
    if action == "cancel":
        backfill_id, runs = _backfill_id(form), form.get("runs") == "1"
        shown = backfills.show(cloud, backfill_id)
        active = [link["name"].rsplit("/", 1)[-1] for link in shown.links if link.get("state") in backfills.ACTIVE]
        running = shown.progress.running if shown.progress else 0
        return Plan("cancel", f"Cancel backfill {backfill_id}",
                    f"{len(active)} active execution(s) of the backfill would be cancelled; its {running} running "
                    + ("run(s) too." if runs else "run(s) go on (tick 'and its running runs' to cancel them)."),
                    active, len(active) + (running if runs else 0),
                    _command(["backfill", "cancel", backfill_id, *(["--runs"] if runs else [])], target_flags),
                    {**selection.form(), "backfill": backfill_id, **({"runs": "1"} if runs else {})})
    raise WfrError(f"unknown action {action!r}")


def perform(cloud: Cloud, action: str, form: Mapping[str, str]) -> str:
    """Do what the plan showed; a one-line report for the page."""
    selection = Selection.from_form(form)
    if action == "backfill":
        picked = selection_.choose(cloud, selection)
        status = status_.read(cloud, picked.workflow, picked.window, picked.params)
        running = duplicate(status, recent_backfills(cloud, picked.workflow))
        if running is not None:   # started meanwhile, from another page or a terminal
            raise WfrError(f"backfill {running.id} of this window is running; follow it rather than start another")
        name = backfills.start(cloud, backfills.argument(picked.workflow, picked.window, picked.params,
                                                         _concurrency(form)))
        return f"backfill {name.rsplit('/', 1)[-1]} started"
    if action == "rerun":
        status = load(cloud, selection)
        reruns = rerun_.rerun_records(cloud, rerun_.failed_records(status.times), "failed")
        errors = [f"{r.schedule_time}: {r.error}" for r in reruns if r.error]
        return f"{sum(r.started for r in reruns)} of {len(reruns)} re-run" + (f"; errors: {'; '.join(errors[:3])}" if errors else "")
    if action == "rerun-time":
        _, t = _one_time(cloud, form)
        [r] = rerun_.rerun_records(cloud, [t.record or ""], "completed")
        if r.error or not r.started:
            raise WfrError(f"{t.schedule_time} was not re-run: {r.error or 'it is running'}")
        return f"{t.schedule_time} re-run: attempt {t.attempts + 1}, {short_id(r.execution)}"
    if action == "cancel":
        links, runs = backfills.cancel(cloud, _backfill_id(form), form.get("runs") == "1")
        return f"cancelled {len(links)} backfill execution(s) and {len(runs)} run(s)"
    raise WfrError(f"unknown action {action!r}")


def _backfill_id(form: Mapping[str, str]) -> str:
    backfill_id = form.get("backfill") or ""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,100}", backfill_id, re.ASCII):
        raise WfrError(f"expected a backfill's execution id, got {backfill_id!r}")
    return backfill_id
