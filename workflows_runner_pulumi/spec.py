"""What the components create, as data: the twin of deploy.sh, which states the same names,
roles and settings in bash. tests/test_pulumi_parity.py compares the plan deploy.sh prints
with what these components declare, so a change to one without the other fails the suite.
"""
import re
from dataclasses import dataclass

DEFAULT_PREFIX = "workflows-runner"
RUNTIME = "python312"
# Enabled, never disabled on destroy: other resources of the project may rely on them.
APIS = (
    "cloudresourcemanager.googleapis.com", "iam.googleapis.com", "cloudfunctions.googleapis.com",
    "run.googleapis.com", "cloudbuild.googleapis.com", "artifactregistry.googleapis.com",
    "workflows.googleapis.com", "workflowexecutions.googleapis.com",
    "cloudscheduler.googleapis.com", "logging.googleapis.com", "storage.googleapis.com",
    "monitoring.googleapis.com",
)

# Service accounts by role in the system: id PREFIX-<key>, display name.
ACCOUNTS = {
    "range": "workflows-runner range function",
    "proxy": "workflows-runner proxy function",
    "scheduler": "workflows-runner Cloud Scheduler jobs",
    "backfill": "workflows-runner backfill workflow",
    "audit": "workflows-runner audit function",
    "queue": "workflows-runner queue waiter",
    # Not created when the caller names its own build_service_account.
    "build": "workflows-runner function builds",
}
@dataclass(frozen=True)
class CustomRole:
    """A custom role, where a predefined one is broader than the calls: Workflows roles can only be
    granted on a project (https://cloud.google.com/iam/docs/roles-permissions/workflows), and
    roles/workflows.invoker also sends callbacks and reads step entries."""
    suffix: str  # the id is PREFIX (hyphens as '_') + '_' + suffix
    title: str
    description: str
    permissions: tuple
    stage: str = "GA"

    def role_id(self, prefix):
        # Custom role ids allow letters, digits, '_' and '.', not '-'.
        return prefix.replace("-", "_") + "_" + self.suffix


# The proxy's runs (create, the reprocess and claim lookups: get and list, an orphan's cancel), in
# every project of the allowlist; and operators' backfills (start, follow, list, cancel).
EXECUTIONS_ROLE = CustomRole(
    "executionUser", "workflows-runner executions",
    "Start, read, list and cancel executions: the proxy's runs and operators' backfills",
    ("workflows.executions.cancel", "workflows.executions.create", "workflows.executions.get",
     "workflows.executions.list"))
# The backfill starts its own next link (a long backfill chains executions) and waits on runs.
BACKFILL_ROLE = CustomRole(
    "backfill", "workflows-runner backfill", "Start the backfill's next link and wait on runs, nothing else",
    ("workflows.executions.create", "workflows.executions.get"))
# In each other project of the allowlist the backfill only waits on runs (roles/workflows.viewer
# would also show every workflow's source and every execution's arguments).
READER_ROLE = CustomRole(
    "executionReader", "workflows-runner execution reader",
    "Read one execution's state, nothing else: the backfill waits on runs with it", ("workflows.executions.get",))
# The audit learns the state of runs the ledger does not show ended yet (get, and list for many at
# once); roles/workflows.viewer would also show every workflow's source.
AUDIT_ROLE = CustomRole(
    "auditReader", "workflows-runner audit reader",
    "Read and list executions, pause a job: the audit learns the state of runs not yet settled and applies pauseAfter",
    ("cloudscheduler.jobs.pause", "workflows.executions.get", "workflows.executions.list"))
# wfr resume: jobs.resume checks cloudscheduler.jobs.enable, and Google has no jobs.resume permission
# (https://cloud.google.com/scheduler/docs/reference/rest/v1beta1/projects.locations.jobs/resume);
# roles/cloudscheduler.admin would also create, change and delete jobs.
RESUMER_ROLE = CustomRole(
    "jobResumer", "workflows-runner job resumer", "Resume a paused Scheduler job, nothing else: wfr resume",
    ("cloudscheduler.jobs.enable",))

# (account, role) on the project; a CustomRole is created in the project first.
PROJECT_ROLES = (
    ("proxy", EXECUTIONS_ROLE),
    ("backfill", BACKFILL_ROLE),
    ("backfill", "roles/logging.logWriter"),  # its sys.log lines
    # The audit lists the Scheduler jobs (their URIs carry the job settings, docs/alerts.md).
    ("audit", "roles/cloudscheduler.viewer"),
    ("audit", AUDIT_ROLE),
    ("queue", "roles/logging.logWriter"),  # the queue waiter's sys.log lines
)
# The three roles Google documents for a function's build account
# (https://cloud.google.com/functions/docs/securing/build-custom-sa), not roles/cloudbuild.builds.builder,
# which may write and delete objects in every bucket of the project.
BUILD_ROLES = ("roles/logging.logWriter", "roles/artifactregistry.writer", "roles/storage.objectViewer")
# What every wfr command and wfr ui call (docs/deploy.md, "Least privilege"), besides the
# functions (INVOKERS) and the bucket (RUNS_BUCKET_ROLES): executions, resuming a paused job, the
# functions' URLs (cloudfunctions.functions.get) and a job's settings (cloudscheduler.jobs.get).
OPERATOR_PROJECT_ROLES = (EXECUTIONS_ROLE, RESUMER_ROLE, "roles/cloudfunctions.viewer", "roles/cloudscheduler.viewer")

# Bucket roles limited to a prefix: runs/ (the ledger, docs/ledger.md) and backfills/ (the
# backfill's hand-overs, docs/backfill.md), by an IAM condition on the object's resource name,
# projects/_/buckets/BUCKET/objects/NAME (https://cloud.google.com/iam/docs/conditions-resource-attributes).
# A listing names the bucket, not an object, so listings need an unconditioned objectViewer.
LEDGER_PREFIX = "runs/"
HANDOVER_PREFIX = "backfills/"
ALERTS_PREFIX = "alerts/"  # the audit's alert records (docs/alerts.md)
CONDITION_TITLES = {LEDGER_PREFIX: "run ledger only", HANDOVER_PREFIX: "backfill hand-overs only",
                    ALERTS_PREFIX: "audit alerts only"}
LEDGER_CONDITION_TITLE = CONDITION_TITLES[LEDGER_PREFIX]


def prefix_condition(bucket, prefix):
    return f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/{prefix}")'


# (who, role, prefix or None) on the runs bucket, and nothing else. The proxy and operators read
# and list the bucket, and under runs/ create claims, record states (update) and overwrite or
# release a claim (delete); the backfill creates and reads its hand-overs under backfills/ (never
# lists, overwrites or deletes them). "operators" stands for each of them.
RUNS_BUCKET_ROLES = (
    ("proxy", "roles/storage.objectViewer", None), ("proxy", "roles/storage.objectUser", LEDGER_PREFIX),
    ("backfill", "roles/storage.objectCreator", HANDOVER_PREFIX),
    ("backfill", "roles/storage.objectViewer", HANDOVER_PREFIX),
    ("operators", "roles/storage.objectViewer", None), ("operators", "roles/storage.objectUser", LEDGER_PREFIX),
    # The audit lists and reads the ledger, writes back the states it learns (runs/), creates its
    # alert records and marks them resolved (alerts/).
    ("audit", "roles/storage.objectViewer", None), ("audit", "roles/storage.objectUser", LEDGER_PREFIX),
    ("audit", "roles/storage.objectUser", ALERTS_PREFIX),
)
# (function, caller): roles/run.invoker on the function's Cloud Run service, which is what
# `gcloud functions add-invoker-policy-binding` grants for 2nd gen
# (https://cloud.google.com/sdk/gcloud/reference/functions/add-invoker-policy-binding). Operators:
# wfr status calls the range function, re-runs call the proxy. The queue waiter re-delivers queued
# times to the proxy.
INVOKERS = (("range", "backfill"), ("proxy", "backfill"), ("proxy", "scheduler"),
            ("range", "operators"), ("proxy", "operators"), ("range", "audit"), ("audit", "scheduler"),
            ("proxy", "queue"))


@dataclass(frozen=True)
class FunctionSpec:
    folder: str  # relative to the checkout
    entry_point: str
    account: str  # key of ACCOUNTS
    timeout_seconds: int | None = None  # None: the platform's default


FUNCTIONS = {
    "range": FunctionSpec("functions/range", "expand_range", "range"),
    # Outlasts the proxy's own 60 s upstream deadline, so it answers a clean 503 first.
    "proxy": FunctionSpec("functions/proxy", "proxy", "proxy", timeout_seconds=120),
    # Deployed with the workflows_runner modules its SHARED file lists (sources.source_archive).
    "audit": FunctionSpec("functions/audit", "audit_pass", "audit", timeout_seconds=180),
}
# The audit pass's own job, PREFIX-audit (docs/alerts.md).
AUDIT_SCHEDULE = "*/5 * * * *"
AUDIT_TIME_ZONE = "Etc/UTC"


def alert_metric(prefix):
    """The log-based metric PREFIX-alerts, as deploy.sh's LogMetric config file has it: the audit's
    alert lines, counted by kind and job."""
    return {
        "description": f"workflows-runner alerts raised by the audit function {prefix}-audit (docs/alerts.md)",
        "filter": f'resource.type="cloud_run_revision" AND resource.labels.service_name="{prefix}-audit" '
                  'AND jsonPayload.event="alert"',
        "labelExtractors": {"kind": "EXTRACT(jsonPayload.kind)", "job": "EXTRACT(jsonPayload.job)"},
        "metricDescriptor": {"metricKind": "DELTA", "valueType": "INT64", "unit": "1", "labels": [
            {"key": "kind", "description": "missing, late, failed or paused"},
            {"key": "job", "description": "the Scheduler job's full name"}]}}


def alert_policy(prefix, channels):
    """The alert policy "PREFIX alerts": any alert line in a 5-minute window notifies `channels`."""
    return {
        "displayName": f"{prefix} alerts", "combiner": "OR", "notificationChannels": list(channels),
        "conditions": [{"displayName": "an alert was raised", "conditionThreshold": {
            "filter": f'metric.type="logging.googleapis.com/user/{prefix}-alerts" AND resource.type="cloud_run_revision"',
            "comparison": "COMPARISON_GT", "thresholdValue": 0, "duration": "0s",
            "aggregations": [{"alignmentPeriod": "300s", "perSeriesAligner": "ALIGN_SUM",
                              "crossSeriesReducer": "REDUCE_SUM",
                              "groupByFields": ["metric.label.kind", "metric.label.job"]}]}}],
        "documentation": {"mimeType": "text/markdown", "content": "A scheduled time of a workflows-runner job is "
                          "missing, late or failed: wfr alerts lists them (docs/alerts.md)."}}


NOTIFICATION_CHANNEL = re.compile(r"projects/[^/,\s]+/notificationChannels/[0-9]+", re.ASCII)
BACKFILL_SOURCE = "workflows/backfill.yaml"
QUEUE_SOURCE = "workflows/queue.yaml"  # the queue waiter (overlap=queue, docs/proxy.md)


@dataclass(frozen=True)
class JobRetry:
    """Cloud Scheduler's retry policy; retries are safe, the proxy starts one execution per
    scheduled time (https://cloud.google.com/scheduler/docs/reference/rest/v1/projects.locations.jobs#retryconfig)."""
    attempt_deadline: str = "180s"
    retry_count: int = 5
    min_backoff: str = "30s"
    max_backoff: str = "600s"


JOB_RETRY = JobRetry()


def names(prefix):
    """Resource ids by key, the same as deploy.sh's set_names."""
    return {"function": {key: f"{prefix}-{key}" for key in FUNCTIONS},
            "account": {key: f"{prefix}-{key}" for key in ACCOUNTS},
            "workflow": f"{prefix}-backfill", "queue_workflow": f"{prefix}-queue"}


def queue_workflow(project, region, prefix):
    """The proxy's QUEUE_WORKFLOW: the full name of the queue waiter it starts."""
    return f"projects/{project}/locations/{region}/workflows/{prefix}-queue"


def runs_bucket(project, prefix):
    return f"{project}-{prefix}-runs"


def sources_bucket(project, prefix):
    """Holds the functions' source archives, as gcloud's own staging bucket does for deploy.sh."""
    return f"{project}-{prefix}-sources"


PREFIX = re.compile(r"[a-z]([a-z0-9-]*[a-z0-9])?", re.ASCII)
# Service account ids are 6-30 characters and the longest is PREFIX-scheduler.
PREFIX_MAX = 30 - len("-scheduler")
REGION = re.compile(r"[a-z][a-z0-9-]*[0-9]", re.ASCII)
SEGMENT = r"[^/,;\s]+"
ALLOWED_ENTRY = re.compile(rf"{SEGMENT}/{SEGMENT}/{SEGMENT}")
CRON_TEXT = re.compile(r"[A-Za-z0-9*/,?#\s-]+", re.ASCII)
TIME_ZONE = re.compile(r"[A-Za-z0-9_+/-]+", re.ASCII)
WORKFLOW_NAME = re.compile(r"[A-Za-z]([A-Za-z0-9_-]{0,62}[A-Za-z0-9])?", re.ASCII)
# Project ids (6-30 characters, or domain:id) and locations, as deploy.sh checks them.
_PROJECT_ID = r"(?:[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]"
_LOCATION = r"[a-z][a-z0-9-]{0,61}[a-z0-9]"
WORKFLOW_PATH = re.compile(rf"projects/({_PROJECT_ID})/locations/({_LOCATION})/workflows/([^/]+)", re.ASCII)
# Scheduler job ids: letters, numbers, hyphens, underscores, at most 500 characters
# (https://cloud.google.com/scheduler/docs/reference/rest/v1/projects.locations.jobs#Job.FIELDS.name);
# deploy.sh takes job names of at most 100, leaving room for PREFIX- and -catch-up.
JOB_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}", re.ASCII)
MEMBER = re.compile(r"(user|group|serviceAccount|domain):[^,\s]+", re.ASCII)
BUILD_EMAIL = re.compile(r"[a-z0-9-]+@[a-z0-9.-]+\.gserviceaccount\.com", re.ASCII)
# ISO 8601 durations in weeks, days, hours, minutes, seconds: the backfill's lookback.
DURATION = re.compile(r"P([0-9]+W)?([0-9]+D)?(T([0-9]+H)?([0-9]+M)?([0-9]+S)?)?", re.ASCII)
# The audit's `since`, as deploy.sh checks it: RFC 3339 with an offset.
RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})", re.ASCII)
# The catch-up job's schedule: daily, at a quiet minute.
CATCH_UP_SCHEDULE = "17 3 * * *"
