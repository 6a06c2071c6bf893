"""The status model: every scheduled time of a window with the state of its newest attempt.

Shared by every view (the terminal table and grid, JSON/CSV, the browser grid): they render a
Status and compute nothing of their own.

Cost: the expected times come from the range function (one call per 10,000 times), the runs from
one ranged listing of the ledger (one storage call per 1,000 attempts), and executions only for
records not yet terminal; the terminal states learned are written back to the ledger (at most
WRITE_BACK per status, oldest first, 100 to a batch request), so once written the next status over
the same window costs listings only.
"""
from __future__ import annotations

import itertools
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from . import claims, ledger
from .cloud import Cloud, MetadataPatch, decode_job_body
from .errors import ApiError, WfrError
from .identity import parse_instant, run_argument, run_digests

# The states of a scheduled time, in the order totals list them. `skipped`: the proxy did not
# start it, maxActive runs of its job being active (overlap=skip, docs/proxy.md). `queued`: it
# waits for a free slot of its job (overlap=queue, ledger state WAITING); not Workflows' own
# QUEUED, an execution created but held by its concurrency quota, which has started: running.
STATES = ("succeeded", "failed", "cancelled", "running", "queued", "skipped", "missing")
_STATE_OF = {"SUCCEEDED": "succeeded", "FAILED": "failed", "UNAVAILABLE": "failed",
             "CANCELLED": "cancelled", "SKIPPED": "skipped", ledger.WAITING: "queued",
             "CLAIMED": "running", "ACTIVE": "running", "QUEUED": "running"}
_ENDED_UNSUCCESSFULLY = frozenset({"FAILED", "CANCELLED", ledger.UNAVAILABLE})
RANGE_PAGE = 10_000        # the range function's largest page
BULK_THRESHOLD = 20        # above this many unsettled records, list executions instead of getting each
WORKERS = 16               # concurrent executions.get
# The terminal states one status writes back at most, oldest runs first (those nearest to
# leaving Workflows' history, after which only the ledger knows how they ended). The writes go in
# batch requests of 100 conditional PATCHes (Cloud.patch_metadata), up to 8 requests at once.
# Measured on the local stack over a cold minutely week (2 cores shared with other work, load
# 6-9): the status without write-backs took 2.3-2.7 s; 1,000 write-backs added ~0.5 s, 2,000
# 0.65-1.0 s, 3,000 1.1-1.2 s (1,000 single PATCHes took ~2.3 s before, on an idle machine).
# 2,000 keeps the write-back a fraction of the 3 s cold-status target (set for an idle machine)
# and settles a minutely week in 6 statuses instead of 11; each of those still pays the
# executions listing for the records left.
WRITE_BACK = 2000


@dataclass(frozen=True)
class Window:
    start: str
    stop: str
    step: str
    timezone: str = "UTC"


@dataclass(frozen=True)
class TimeStatus:
    schedule_time: str            # RFC 3339 in the window's zone, as the range function gives it
    instant: datetime             # the same instant, UTC
    state: str                    # one of STATES
    attempts: int
    execution: str | None         # the newest attempt's execution, or None
    error: str | None = None      # the newest attempt's error, when it failed
    record: str | None = None     # the newest attempt's ledger object
    create_time: str | None = None  # the newest attempt's execution's createTime (RFC 3339)
    end_time: str | None = None     # ... and its endTime, once it ended
    recorded: str | None = None     # the newest attempt's state as the ledger has it (UNAVAILABLE
                                    # shows as failed, yet `reprocess: failed` never re-runs it)
    late: bool = False              # not succeeded by its time + the job's deadline (is_late)
    alerts: tuple[str, ...] = ()    # the kinds of its open alerts (alerts.annotate), for the grid

    @property
    def rerun_by_failed(self) -> bool:
        """Whether `reprocess: failed` starts this time again (the proxy's rule, docs/ledger.md)."""
        return self.recorded in ("FAILED", "CANCELLED")

    def duration(self, now: datetime) -> float | None:
        """Seconds the newest attempt ran (until `now` while it runs); None before it started."""
        try:
            start = parse_instant(self.create_time or "")
            end = parse_instant(self.end_time) if self.end_time else now
        except ValueError:
            return None  # not started yet, or a record written by hand
        return max(0.0, (end - start).total_seconds())

    @property
    def day(self) -> str:
        """The local date (in the window's zone) the time falls on: a row of the grid."""
        return self.schedule_time[:10]


@dataclass(frozen=True)
class Status:
    workflow: str                 # projects/P/locations/L/workflows/W
    window: Window
    params: dict[str, Any]
    times: list[TimeStatus]
    totals: dict[str, int] = field(init=False)

    def __post_init__(self):
        counts = dict.fromkeys(STATES, 0)
        for time in self.times:
            counts[time.state] += 1
        object.__setattr__(self, "totals", counts)

    def only(self, states: Iterable[str]) -> list[TimeStatus]:
        wanted = set(states)
        return [t for t in self.times if t.state in wanted]

    def days(self) -> list[tuple[str, list[TimeStatus]]]:
        """The times grouped by local date, in order: the grid's rows."""
        return [(day, list(group)) for day, group in itertools.groupby(self.times, key=lambda t: t.day)]


def job_params(job: dict[str, Any]) -> dict[str, Any]:
    """The runs' params of a Scheduler job: the argument the proxy makes of its body."""
    try:
        return run_argument(decode_job_body(job))
    except ValueError as error:
        raise WfrError(f"job {job.get('name')}: its body is an Execution whose argument the proxy refuses: {error}") from None


def scheduled_times(cloud: Cloud, window: Window) -> list[str]:
    body: dict[str, Any] = {"start": window.start, "stop": window.stop, "step": window.step,
                            "timezone": window.timezone, "pageSize": RANGE_PAGE}
    times: list[str] = []
    while True:
        try:
            page = cloud.call_function("range", "/", body)
        except ApiError as error:
            if error.code == 400:
                raise WfrError(f"the range function refused the window: {error.api_message}") from None
            raise
        times += page["scheduleTimes"]
        if not page.get("nextPageToken"):
            return times
        body["pageToken"] = page["nextPageToken"]


def read(cloud: Cloud, workflow: str, window: Window, params: dict[str, Any],
         deadline: timedelta | None = None, now: datetime | None = None) -> Status:
    """The status of every scheduled time of `window` for runs of `workflow` (a full name) with
    argument `params` (the run identity: the same params the Scheduler job or backfill sends).
    With a `deadline` (the job's setting), times not succeeded by their time + deadline (as of
    `now`) are marked late."""
    texts = scheduled_times(cloud, window)
    if not texts:
        return Status(workflow, window, params, [])
    instants = [parse_instant(text) for text in texts]
    runs = _claims_resolved(cloud, workflow, attempts_by_time(cloud, workflow, instants, params))
    newest = {instant: attempts[-1] for instant, attempts in runs.items()}
    newest.update(settle(cloud, workflow, list(newest.values())))
    now = now or datetime.now(timezone.utc)
    times = []
    for text, instant in zip(texts, instants):
        record = newest.get(instant)
        if record is None:
            times.append(TimeStatus(text, instant, "missing", 0, None))
        else:
            times.append(TimeStatus(text, instant, _STATE_OF.get(record.state, "running"), len(runs[instant]),
                                    record.execution, record.error, record.name, record.create_time,
                                    record.end_time, record.state,
                                    late=deadline is not None and is_late(record, instant + deadline, now)))
    return Status(workflow, window, params, times)


def _claims_resolved(cloud: Cloud, workflow: str,
                     runs: dict[datetime, list[ledger.Record]]) -> dict[datetime, list[ledger.Record]]:
    """`runs` with their CLAIMED newest attempts past the lease resolved (claims.resolve):
    recorded with the execution their labels find, or released (gone from the list)."""
    claimed = {attempts[-1].name for attempts in runs.values() if attempts[-1].state == "CLAIMED"}
    if not claimed:
        return runs
    after = {record.name: record for record in claims.resolve(
        cloud, workflow, [attempts[-1] for attempts in runs.values() if attempts[-1].name in claimed])}
    resolved = {}
    for instant, attempts in runs.items():
        kept = [after.get(r.name) if r.name in claimed else r for r in attempts]
        if any(kept):
            resolved[instant] = [r for r in kept if r is not None]
    return resolved


def is_late(newest: ledger.Record, due: datetime, now: datetime) -> bool:
    """A claimed time is late when its newest attempt has not succeeded by `due` and has not
    failed: still waiting for a slot (WAITING), claimed, queued or running after it, or succeeded
    after it (docs/alerts.md)."""
    if newest.state == "SUCCEEDED":
        try:
            return parse_instant(newest.end_time or "") > due
        except ValueError:
            return False  # a record written by hand: no end time to judge
    if newest.state == "SKIPPED":  # not run on purpose (overlap=skip): nothing was due
        return False
    return newest.state not in _ENDED_UNSUCCESSFULLY and now >= due


def attempts_by_time(cloud: Cloud, workflow: str, instants: list[datetime],
                     params: dict[str, Any]) -> dict[datetime, list[ledger.Record]]:
    """Every attempt (oldest first) of the runs of `workflow` with `params` at `instants` (sorted):
    one ranged listing of the ledger, cut into a few that run at once for long windows."""
    digests = dict(zip(run_digests(workflow, instants, params), instants))
    found: dict[datetime, list[ledger.Record]] = {}
    parts = min(ledger.PARTS, 1 + len(instants) // 1000)  # a part per page of times, or fewer
    for record in ledger.window(cloud, workflow, instants[0], instants[-1], parts):
        if digests.get(record.digest) != record.instant:
            continue  # another run at the same time (other params)
        found.setdefault(record.instant, []).append(record)
    for attempts in found.values():
        attempts.sort(key=lambda record: record.attempt)
    return found


def settle(cloud: Cloud, workflow: str, records: list[ledger.Record]) -> dict[datetime, ledger.Record]:
    """Look up the executions of records not yet settled; write back the terminal states learned,
    and UNAVAILABLE for executions Workflows no longer has (conditionally: a concurrent writer
    wins, and writes the same). Returns the records that changed, by instant."""
    pending = [r for r in records if not r.settled and r.execution]
    if not pending:
        return {}
    executions = _executions(cloud, workflow, pending)
    ended = [(r, executions[r.execution]) for r in pending
             if r.execution in executions and executions[r.execution].get("state") in ledger.TERMINAL | {ledger.UNAVAILABLE}]
    # BASIC views carry no error: read the failed ones in full, for their message.
    failed = [e["name"] for _, e in ended if e["state"] == "FAILED" and "error" not in e]
    with ThreadPoolExecutor(WORKERS) as pool:
        for full in pool.map(lambda name: cloud.execution(name, view="FULL"), failed):
            executions[full["name"]] = full
    learned = [(record, ledger.learned(executions[execution["name"]])) for record, execution in ended]
    changes = {record.instant: ledger.Record(**{**record.__dict__, "state": metadata["state"],
                                                "end_time": metadata.get("endTime"),
                                                "error": metadata.get("error")})
               for record, metadata in learned}
    oldest = sorted(learned, key=lambda pair: (pair[0].create_time or "", pair[0].name))[:WRITE_BACK]
    try:
        cloud.patch_metadata([MetadataPatch(record.name, metadata, record.metageneration) for record, metadata in oldest])
    except ApiError as error:
        if error.code != 403:
            raise
        # A principal that may only read the ledger still gets its answer: the states are learned,
        # just not kept (docs/deploy.md, "Operators").
        print(f"wfr: note: {len(oldest)} state(s) learned from Workflows were not written back to the run "
              "ledger: this principal may not write it (403)", file=sys.stderr)
    return changes


def _executions(cloud: Cloud, workflow: str, pending: list[ledger.Record]) -> dict[str, dict[str, Any]]:
    """The executions of `pending`, by name: one executions.list over their createTime span when
    there are many (1,000 a call), then executions.get for any the listing did not hold."""
    found: dict[str, dict[str, Any]] = {}
    creates = sorted(r.create_time for r in pending if r.create_time)
    if len(pending) > BULK_THRESHOLD and creates:
        budget = len(pending) // 1000 + 3  # pages: stop if the span holds far more than ours
        listing = cloud.executions(workflow, f'createTime>="{creates[0]}" AND createTime<="{creates[-1]}"')
        for index, execution in enumerate(listing):
            found[execution["name"]] = execution
            if index >= budget * 1000:
                break
    missing = [r.execution for r in pending if r.execution not in found]

    def get(name: str) -> dict[str, Any]:
        try:
            return cloud.execution(name)
        except ApiError as error:
            if error.code == 404:
                return ledger.gone(name)  # past Workflows' retention, or deleted with its workflow
            raise
    with ThreadPoolExecutor(WORKERS) as pool:
        found.update(zip(missing, pool.map(get, missing)))
    return found
