"""A dry run (`?dryRun=true`, docs/proxy.md): which runs of a request would start, judged as a
start judges them (claims.should_start on the run's newest attempt), starting and writing nothing.

What it costs does not grow with one call per run:
- The ledger: one ranged listing over the runs' span of instants (object names sort by
  workflow, instant, digest, attempt: docs/ledger.md), 1,000 objects a call.
- Workflows, only for `failed` and `completed`, and only when a newest attempt is recorded as
  running (ACTIVE or QUEUED), since it may have ended since: one executions.list over those
  attempts' createTime span, filtered to the states that change their verdict (FAILED or
  CANCELLED for `failed`, ACTIVE or QUEUED for `completed`), 1,000 a call. An attempt that
  listing does not hold is judged as a start would judge it: for `failed` it did not fail (still
  running, SUCCEEDED, or gone from Workflows' history, which a start records UNAVAILABLE and
  does not re-run); for `completed` it no longer runs, so it would start.
What a start does and a dry run does not: write back the states it learns, and wait for or
recover a claim. A claim with no execution recorded yet (CLAIMED) counts as running, so it
would not start.
"""
from __future__ import annotations

from dataclasses import dataclass

import claims
import ledger
import scheduled_time
import storage_api
import workflows_api
from ledger import Attempt

RUNNING = frozenset({"ACTIVE", "QUEUED"})
# The states that decide a verdict on an attempt recorded as running, by reprocess mode: `none`
# never starts an existing run, so it asks nothing.
DECIDING = {"failed": ("FAILED", "CANCELLED"), "completed": ("ACTIVE", "QUEUED")}
LIST_PAGE = 1000  # executions.list's largest page in the BASIC view (Executions API reference)


@dataclass(frozen=True)
class Verdict:
    would_start: bool
    attempts: int  # the run's attempts in the ledger; 0: it never ran


def judge(runs: list[claims.Run]) -> list[Verdict]:
    """A verdict per run, in order. The runs come from one request: one bucket, workflow,
    reprocess mode and deadline. A run given twice would start once, at its first place, as in
    a real array, where the first claims it."""
    if not runs:
        return []
    request = runs[0]
    attempts = _attempts(request, min(run.instant for run in runs), max(run.instant for run in runs))
    newest = {prefix: max(found, key=lambda a: a.number) for prefix, found in attempts.items()}
    running = [a for a in newest.values() if a.state in RUNNING]
    listed = _listed(request, running) if running and request.reprocess in DECIDING else set()
    verdicts, seen = [], set()
    for run in runs:
        attempt = newest.get(run.prefix)
        start = run.prefix not in seen and _would_start(run.reprocess, attempt, listed)
        seen.add(run.prefix)
        verdicts.append(Verdict(start, len(attempts.get(run.prefix, ()))))
    return verdicts


def _would_start(reprocess: str, newest: Attempt | None, listed: set[str]) -> bool:
    if newest is None:
        return True
    if newest.state == ledger.CLAIMED:
        return False
    if newest.state in RUNNING and reprocess in DECIDING:
        # `listed` holds it only if it is now in a deciding state (see the module docstring).
        return (newest.execution in listed) == (reprocess == "failed")
    return claims.should_start(reprocess, newest.state)


def _attempts(request: claims.Run, first, last) -> dict[str, list[Attempt]]:
    """Every attempt of every run of the workflow at first <= instant <= last, by run prefix."""
    prefix = ledger.workflow_prefix(request.parent)
    # The names at `last` continue with "/" (0x2F), which sorts before "0": ending the range at
    # INSTANT + "0" includes them and nothing later, without computing the next instant.
    objects = workflows_api.with_retries(lambda: storage_api.list_objects(
        request.bucket, prefix, request.deadline, start_offset=prefix + ledger.instant_text(first),
        end_offset=prefix + ledger.instant_text(last) + "0"), request.deadline)
    found: dict[str, list[Attempt]] = {}
    for attempt in filter(None, map(Attempt.from_resource, objects)):
        found.setdefault(attempt.name[:attempt.name.rindex("/") + 1], []).append(attempt)
    return found


def _listed(request: claims.Run, running: list[Attempt]) -> set[str]:
    """The executions of `running` attempts that are now in a state DECIDING names."""
    # AIP-160 filters (https://google.aip.dev/160), as executions.list documents them:
    # https://cloud.google.com/workflows/docs/reference/executions/rest/v1/projects.locations.workflows.executions/list
    text = "(" + " OR ".join(f'state="{state}"' for state in DECIDING[request.reprocess]) + ")"
    try:
        created = sorted((a.metadata["createTime"] for a in running), key=scheduled_time.parse)
        text = f'createTime>="{created[0]}" AND createTime<="{created[-1]}" AND {text}'
    except (KeyError, ValueError):
        pass  # a record without a readable createTime (the proxy always writes one): no time bounds
    names, params = set(), {"filter": text, "pageSize": str(LIST_PAGE), "view": "BASIC"}
    while True:
        page = workflows_api.with_retries(lambda: workflows_api.call(
            "GET", f"/v1/{request.parent}/executions", request.deadline, params=params), request.deadline)
        names.update(e.get("name") for e in page.get("executions") or () if isinstance(e, dict))
        if not page.get("nextPageToken"):
            return names
        params = {**params, "pageToken": page["nextPageToken"]}
