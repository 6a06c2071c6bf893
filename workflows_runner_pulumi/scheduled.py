"""ScheduledWorkflow: a Cloud Scheduler job that starts a workflow through the runner's proxy,
as `deploy.sh schedule` creates it: OIDC token for the proxy, the same retry policy.
"""
import base64
import json

import pulumi
from pulumi_gcp import cloudscheduler

from . import spec
from .errors import RunnerConfigError


def _body(body):
    """The workflow's argument as the JSON text the job sends."""
    if body is None:
        return "{}"
    text = body if isinstance(body, str) else json.dumps(body)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise RunnerConfigError("body", "a JSON object (a dict, or its JSON text)", body)
    return text


def workflow_path(workflow, project, region):
    """(project, location, name) of a workflow name in the runner's project and region, or of
    projects/P/locations/L/workflows/W."""
    match = spec.WORKFLOW_PATH.fullmatch(workflow)
    found = match.groups() if match else (project, region, workflow)
    if not spec.WORKFLOW_NAME.fullmatch(found[2]):
        raise RunnerConfigError("workflow", "a workflow name or projects/P/locations/L/workflows/W", workflow)
    return found


def _executions_path(target, time_zone, settings=""):
    project, location, name = target
    # '+' in a query string means a space: Etc/GMT+5 must be sent as Etc/GMT%2B5.
    return (f"/v1/projects/{project}/locations/{location}/workflows/{name}/executions"
            f"?timezone={time_zone.replace('+', '%2B')}{settings}")


OVERLAP_MODES = ("allow", "skip", "queue", "replace")


def _policy_query(overlap, max_active, pause_after):
    """The overlap and failure settings as deploy.sh's policy_query writes them (docs/proxy.md),
    checked by the proxy's rules (functions/proxy/policy.py)."""
    if overlap is not None and overlap not in OVERLAP_MODES:
        raise RunnerConfigError("overlap", "one of allow, skip, queue, replace", overlap)
    if max_active is not None and overlap in (None, "allow"):
        raise RunnerConfigError("max_active", "given only with overlap skip, queue or replace", max_active)
    for name, count in (("max_active", max_active), ("pause_after", pause_after)):
        if count is not None and not (type(count) is int and 1 <= count <= 100):
            raise RunnerConfigError(name, "a whole number from 1 to 100", count)
    query = f"&overlap={overlap}" if overlap not in (None, "allow") else ""
    query += f"&maxActive={max_active}" if max_active is not None else ""
    return query + (f"&pauseAfter={pause_after}" if pause_after is not None else "")


def _audit_query(deadline, since, grace, lookback):
    """The audit's settings (docs/alerts.md) as deploy.sh's audit_query writes them, after the
    policy settings; checked as deploy.sh checks them."""
    settings = {"deadline": deadline, "since": since, "grace": grace, "lookback": lookback}
    for key in ("deadline", "grace", "lookback"):
        value = settings[key]
        if value is not None and not (isinstance(value, str) and spec.DURATION.fullmatch(value)
                                      and any(c.isdigit() for c in value) and not value.endswith("T")):
            raise RunnerConfigError(key, "an ISO 8601 duration in weeks, days, hours, minutes or seconds, e.g. PT2H", value)
    if since is not None and not (isinstance(since, str) and spec.RFC3339.fullmatch(since)):
        raise RunnerConfigError("since", "an RFC 3339 date-time with an offset, e.g. 2026-03-01T00:00:00Z", since)
    # '+' in a query string means a space: an offset's + is sent as %2B.
    return "".join(f"&{key}={value.replace('+', '%2B')}" for key, value in settings.items() if value is not None)


def _check(name, schedule, time_zone, catch_up):
    if not spec.JOB_NAME.fullmatch(name):
        raise RunnerConfigError("name", "at most 100 letters, digits, hyphens and underscores", name)
    # Cron text only: nothing that needs quoting in the catch-up job's JSON body.
    if not (isinstance(schedule, str) and schedule.strip() and spec.CRON_TEXT.fullmatch(schedule)):
        raise RunnerConfigError("schedule", "a unix-cron schedule such as '0 1 * * *'", schedule)
    if not spec.TIME_ZONE.fullmatch(time_zone or ""):
        raise RunnerConfigError("time_zone", "an IANA time zone such as Europe/Stockholm", time_zone)
    if catch_up is not None and not (spec.DURATION.fullmatch(catch_up) and any(c.isdigit() for c in catch_up)
                                     and not catch_up.endswith("T")):
        raise RunnerConfigError("catch_up", "an ISO 8601 duration in weeks, days, hours, minutes or seconds, e.g. P7D", catch_up)


class ScheduledWorkflow(pulumi.ComponentResource):
    """The job PREFIX-NAME: at each time of `schedule` in `time_zone`, POST `body` to the runner's
    proxy, which starts `workflow` once for that scheduled time. Output: job (the job's id).

    catch_up (an ISO 8601 duration such as P7D) adds the daily job PREFIX-NAME-catch-up, which
    starts the runner's backfill over the last catch_up of the schedule's times with reprocess
    none, so missed times run without anyone asking (Airflow's catchup). Output: catch_up_job.

    overlap ("allow", "skip", "queue" or "replace"), max_active and pause_after are the job's
    overlap and failure settings (docs/proxy.md), as deploy.sh's --overlap, --max-active and
    --pause-after. deadline, since, grace, lookback: the audit's settings (docs/alerts.md), as
    --deadline, --since, --grace and --lookback."""

    def __init__(self, name, runner, workflow, schedule, time_zone, body=None, *, catch_up=None,
                 overlap=None, max_active=None, pause_after=None, deadline=None, since=None, grace=None,
                 lookback=None, opts=None):
        super().__init__("workflows-runner:index:ScheduledWorkflow", name, None, opts)
        _check(name, schedule, time_zone, catch_up)
        settings = _policy_query(overlap, max_active, pause_after) + _audit_query(deadline, since, grace, lookback)
        text = _body(body)
        if isinstance(workflow, str):  # checked now, so the error names the argument before any deployment
            target = workflow_path(workflow, runner.project, runner.region)
            path = pulumi.Output.from_input(_executions_path(target, time_zone, settings))
        else:
            target = pulumi.Output.from_input(workflow).apply(
                lambda workflow: workflow_path(workflow, runner.project, runner.region))
            path = target.apply(lambda target: _executions_path(target, time_zone, settings))
        job_id = f"{runner.prefix}-{name}"
        self.job = self._job(name, runner, job_id, schedule, time_zone, path, text)
        outputs = {"job": self.job.name}
        self.catch_up_job = None
        if catch_up is not None:
            backfill = _executions_path((runner.project, runner.region, runner.backfill_id), time_zone)
            catch_up_body = pulumi.Output.from_input(target).apply(lambda target: json.dumps({
                "workflow": "projects/{}/locations/{}/workflows/{}".format(*target), "step": schedule,
                "timezone": time_zone, "params": json.loads(text), "lookback": catch_up}))
            self.catch_up_job = self._job(f"{name}-catch-up", runner, f"{job_id}-catch-up", spec.CATCH_UP_SCHEDULE,
                                          time_zone, pulumi.Output.from_input(backfill), catch_up_body)
            outputs["catch_up_job"] = self.catch_up_job.name
        self.register_outputs(outputs)

    def _job(self, resource_name, runner, job_id, schedule, time_zone, path, text):
        retry = spec.JOB_RETRY
        return cloudscheduler.Job(
            resource_name, project=runner.project, region=runner.region, name=job_id,
            schedule=schedule, time_zone=time_zone, attempt_deadline=retry.attempt_deadline,
            retry_config=cloudscheduler.JobRetryConfigArgs(
                retry_count=retry.retry_count, min_backoff_duration=retry.min_backoff,
                max_backoff_duration=retry.max_backoff),
            http_target=cloudscheduler.JobHttpTargetArgs(
                uri=pulumi.Output.concat(runner.proxy_url, path), http_method="POST",
                headers={"Content-Type": "application/json"},
                # The API takes the body as bytes, base64 in JSON.
                body=pulumi.Output.from_input(text).apply(lambda text: base64.b64encode(text.encode()).decode()),
                oidc_token=cloudscheduler.JobHttpTargetOidcTokenArgs(
                    service_account_email=runner.scheduler_email, audience=runner.proxy_url)),
            # After the runner and its grants (the scheduler may invoke the proxy), so no first delivery is refused.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[runner]))
