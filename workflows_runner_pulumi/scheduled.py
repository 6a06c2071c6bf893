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


def executions_path(workflow, project, region, time_zone):
    project, location, name = workflow_path(workflow, project, region)
    # '+' in a query string means a space: Etc/GMT+5 must be sent as Etc/GMT%2B5.
    return (f"/v1/projects/{project}/locations/{location}/workflows/{name}/executions"
            f"?timezone={time_zone.replace('+', '%2B')}")


class ScheduledWorkflow(pulumi.ComponentResource):
    """The job PREFIX-NAME: at each time of `schedule` in `time_zone`, POST `body` to the runner's
    proxy, which starts `workflow` once for that scheduled time. Output: job (the job's id)."""

    def __init__(self, name, runner, workflow, schedule, time_zone, body=None, *, opts=None):
        super().__init__("workflows-runner:index:ScheduledWorkflow", name, None, opts)
        job_id = f"{runner.prefix}-{name}"
        if not spec.JOB_ID.fullmatch(job_id):
            raise RunnerConfigError("name", "letters, digits, hyphens and underscores", name)
        if not spec.TIME_ZONE.fullmatch(time_zone or ""):
            raise RunnerConfigError("time_zone", "an IANA time zone such as Europe/Stockholm", time_zone)
        if not isinstance(schedule, str) or not schedule.strip():
            raise RunnerConfigError("schedule", "a unix-cron schedule such as '0 1 * * *'", schedule)
        text = _body(body)
        if isinstance(workflow, str):  # checked now, so the error names the argument before any deployment
            path = executions_path(workflow, runner.project, runner.region, time_zone)
        else:
            path = pulumi.Output.from_input(workflow).apply(
                lambda workflow: executions_path(workflow, runner.project, runner.region, time_zone))
        retry = spec.JOB_RETRY
        self.job = cloudscheduler.Job(
            name, project=runner.project, region=runner.region, name=job_id,
            schedule=schedule, time_zone=time_zone, attempt_deadline=retry.attempt_deadline,
            retry_config=cloudscheduler.JobRetryConfigArgs(
                retry_count=retry.retry_count, min_backoff_duration=retry.min_backoff,
                max_backoff_duration=retry.max_backoff),
            http_target=cloudscheduler.JobHttpTargetArgs(
                uri=pulumi.Output.concat(runner.proxy_url, path), http_method="POST",
                headers={"Content-Type": "application/json"},
                # The API takes the body as bytes, base64 in JSON.
                body=base64.b64encode(text.encode()).decode(),
                oidc_token=cloudscheduler.JobHttpTargetOidcTokenArgs(
                    service_account_email=runner.scheduler_email, audience=runner.proxy_url)),
            # After the runner and its grants (the scheduler may invoke the proxy), so no first delivery is refused.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[runner]))
        self.register_outputs({"job": self.job.name})
