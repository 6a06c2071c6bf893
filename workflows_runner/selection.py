"""What the operator selects, read and checked once for the CLI and the UI: a workflow and a
window of its schedule (start, stop, cron step, zone, params), or a Cloud Scheduler job whose
schedule, zone and body give the step, zone and params.

Every command and every page action reads its selection here, so the checks a dry run makes are
the checks a real start makes (issue 25): the params are a JSON object, the job targets the
proxy and names the workflow given, the workflow exists, and the range function accepts the
window (zone, order, cron, bounds) before anything starts.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from typing import Any, Mapping

from . import job_settings
from .cloud import Cloud, decode_job_body
from .errors import ApiError, WfrError
from .identity import run_argument
from .status import Window



@dataclass(frozen=True)
class Selection:
    """The window flags of `wfr status`/`backfill`/`rerun --failed`, by the same names in the
    page's forms, so the page and the command line select alike."""
    workflow: str | None = None
    start: str | None = None
    stop: str | None = None
    step: str | None = None
    timezone: str | None = None
    params: str | None = None
    job: str | None = None

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> "Selection":
        return cls(**{f.name: (form.get(f.name) or "").strip() or None for f in fields(cls)})

    @classmethod
    def from_args(cls, args: Any, workflow: str | None) -> "Selection":
        return cls(workflow, *(getattr(args, f.name, None) for f in fields(cls)[1:]))

    @property
    def chosen(self) -> bool:
        return bool((self.workflow or self.job) and self.start and self.stop)

    def form(self) -> dict[str, str]:
        return {key: value for key, value in asdict(self).items() if value}

    def window_flags(self) -> list[str]:
        flags = ["--start", self.start or "", "--stop", self.stop or ""]
        if self.job:
            return flags + ["--job", self.job]
        flags += ["--step", self.step or ""]
        if self.timezone:
            flags += ["--timezone", self.timezone]
        if self.params:
            flags += ["--params", self.params]
        return flags


@dataclass(frozen=True)
class Chosen:
    """A checked selection."""
    workflow: str                # the full name
    window: Window
    params: dict[str, Any]       # the runs' argument, without scheduleTime
    planned: int                 # the times in the window (the range function's count)
    deadline: timedelta | None = None  # the job's `deadline` setting, with --job (docs/alerts.md)


def load_params(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        params = json.loads(text)
    except ValueError as error:
        raise WfrError(f"--params must be a JSON object, e.g. '{{\"table\": \"sales\"}}': {error}") from None
    if not isinstance(params, dict):
        raise WfrError(f"--params must be a JSON object, got {type(params).__name__}")
    if "scheduleTime" in params:
        raise WfrError("--params must not hold scheduleTime; each run receives its own")
    return params


def choose(cloud: Cloud, selection: Selection) -> Chosen:
    """Read and check `selection`; raise WfrError (exit 1) naming the first thing wrong."""
    s = selection
    if not s.start or not s.stop:
        raise WfrError("give the window: --start and --stop (RFC 3339)")
    if s.job:
        if s.step or s.timezone or s.params:
            raise WfrError("--job gives the schedule, time zone and body: leave out --step, --timezone and --params")
        workflow, window, params, deadline = _from_job(cloud, s)
    else:
        if not s.workflow:
            raise WfrError("name a workflow, or give --job NAME")
        if not s.step:
            raise WfrError("give --step CRON (with --timezone and --params as the job has them) or --job NAME")
        workflow = cloud.target.workflow_name(s.workflow)
        window = Window(s.start, s.stop, s.step, s.timezone or "UTC")
        params = load_params(s.params)
        deadline = None
    check_workflow(cloud, workflow)
    return Chosen(workflow, window, params, count(cloud, window), deadline)


def _from_job(cloud: Cloud, s: Selection) -> tuple[str, Window, dict[str, Any], timedelta | None]:
    job = cloud.job(cloud.target.job_name(s.job or ""))
    uri = (job.get("httpTarget") or {}).get("uri", "")
    proxy = cloud.function_url("proxy").rstrip("/")
    if not job_settings.targets(uri, proxy):
        raise WfrError(f"job {s.job} calls {uri.split('?')[0] or 'no HTTP target'}, not the proxy ({proxy}): "
                       "its runs are not in the run ledger; point it at the proxy (docs/deploy.md)")
    settings = job_settings.from_uri(uri)   # the one reader of a job's URI
    workflow = settings.workflow
    if s.workflow and cloud.target.workflow_name(s.workflow) != workflow:
        raise WfrError(f"job {s.job} starts workflow {workflow.rsplit('/', 1)[-1]}, not {s.workflow}")
    if not job.get("schedule"):
        raise WfrError(f"job {s.job} has no schedule")
    # The params are the argument the proxy makes of the job's body: a migrated job's
    # Execution-shaped body gives its decoded argument, so its scheduled runs and a backfill of
    # the job (which posts params plus scheduleTime) are the same runs.
    try:
        params = run_argument(decode_job_body(job))
    except ValueError as error:
        raise WfrError(f"job {s.job}: its body is an Execution whose argument the proxy refuses: {error}") from None
    window = Window(s.start or "", s.stop or "", job["schedule"], job.get("timeZone") or "UTC")
    return workflow, window, params, settings.deadline


def check_workflow(cloud: Cloud, workflow: str) -> None:
    """The workflow exists: executions.list of one that does not answers 404 NOT_FOUND."""
    if not cloud.workflow_exists(workflow):
        raise WfrError(f"workflow {workflow.rsplit('/', 1)[-1]} not found in {cloud.target.project}/"
                       f"{cloud.target.location} ({workflow})")


def count(cloud: Cloud, window: Window) -> int:
    """The times in `window`; the range function's refusal (zone, order, cron, bounds) as one line."""
    body = {"start": window.start, "stop": window.stop, "step": window.step, "timezone": window.timezone,
            "countOnly": True}
    try:
        return int(cloud.call_function("range", "/", body)["count"])
    except ApiError as error:
        if error.code == 400:
            raise WfrError(f"the window is refused: {error.api_message}") from None
        raise
