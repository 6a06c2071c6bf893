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
    "cloudscheduler.googleapis.com", "logging.googleapis.com",
)

# Service accounts by role in the system: id PREFIX-<key>, display name.
ACCOUNTS = {
    "range": "workflows-runner range function",
    "proxy": "workflows-runner proxy function",
    "scheduler": "workflows-runner Cloud Scheduler jobs",
    "backfill": "workflows-runner backfill workflow",
}
# Workflows roles can only be granted on the project
# (https://cloud.google.com/workflows/docs/access-control).
PROJECT_ROLES = (
    ("proxy", "roles/workflows.invoker"),
    ("backfill", "roles/workflows.viewer"),
    ("backfill", "roles/logging.logWriter"),
)
# (function, caller): roles/run.invoker on the function's Cloud Run service, which is what
# `gcloud functions add-invoker-policy-binding` grants for 2nd gen
# (https://cloud.google.com/sdk/gcloud/reference/functions/add-invoker-policy-binding).
INVOKERS = (("range", "backfill"), ("proxy", "backfill"), ("proxy", "scheduler"))


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
}
BACKFILL_SOURCE = "workflows/backfill.yaml"


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
            "workflow": f"{prefix}-backfill"}


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
TIME_ZONE = re.compile(r"[A-Za-z0-9_+/-]+", re.ASCII)
WORKFLOW_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}", re.ASCII)
WORKFLOW_PATH = re.compile(r"projects/([^/]+)/locations/([^/]+)/workflows/([^/]+)", re.ASCII)
# Scheduler job ids: letters, numbers, hyphens, underscores, at most 500 characters
# (https://cloud.google.com/scheduler/docs/reference/rest/v1/projects.locations.jobs#Job.FIELDS.name).
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,500}", re.ASCII)
# The proxy's role on the runs bucket: create, read, list, patch and overwrite objects
# (docs/ledger.md), nothing on the bucket's own settings or IAM.
RUNS_OBJECT_ROLE = "roles/storage.objectUser"
