"""Where wfr points: a deployment on Google (deploy.sh's names, from --project/--region/--prefix)
or the local stack (`--local` or `--local-state DIR`, from DIR/endpoints.json that `python -m localcloud up`
writes; the contract is in docs/cli.md)."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import WfrError

DEFAULT_PREFIX = "workflows-runner"   # deploy.sh's default --prefix
DEFAULT_STATE = Path(".localcloud/state")
EXECUTIONS_ROOT = "https://workflowexecutions.googleapis.com"
STORAGE_ROOT = "https://storage.googleapis.com"
SCHEDULER_ROOT = "https://cloudscheduler.googleapis.com"
FUNCTIONS_ROOT = "https://cloudfunctions.googleapis.com"


@dataclass(frozen=True)
class Target:
    project: str
    location: str
    prefix: str
    api_root: str                # Workflows Executions API
    storage_root: str            # Cloud Storage JSON API
    scheduler_root: str          # Cloud Scheduler API
    bucket: str                  # the runs bucket (the ledger)
    backfill_workflow: str       # the backfill workflow's id
    range_url: str | None = None  # None on Google: looked up with the Cloud Functions API
    proxy_url: str | None = None
    local_token: str | None = None  # localcloud's bearer token; None means Google credentials
    # What to do when an API gives no answer at all (errors.Unreachable).
    unreachable_hint: str = "check the network, and that deploy.sh deployed to this project and region"

    def workflow_name(self, workflow: str) -> str:
        """A workflow id (in the target's project and region) or a full name -> the full name."""
        if workflow.startswith("projects/"):
            parts = workflow.split("/")
            if len(parts) != 6 or parts[2] != "locations" or parts[4] != "workflows" or not all(parts[1::2]):
                raise WfrError(f"expected a workflow id or projects/P/locations/L/workflows/W, got {workflow!r}")
            return workflow
        if not workflow or "/" in workflow:
            raise WfrError(f"expected a workflow id or projects/P/locations/L/workflows/W, got {workflow!r}")
        return f"projects/{self.project}/locations/{self.location}/workflows/{workflow}"

    def job_name(self, job: str) -> str:
        """A Scheduler job: its full name, or deploy.sh's `schedule` name PREFIX-WORKFLOW (the
        prefix is added when missing on Google; local jobs are named as configured)."""
        if job.startswith("projects/"):
            return job
        if self.local_token is None and not job.startswith(f"{self.prefix}-"):
            job = f"{self.prefix}-{job}"
        return f"projects/{self.project}/locations/{self.location}/jobs/{job}"


def local(state: str | Path | None) -> Target:
    """The local stack whose state folder is `state` (default DEFAULT_STATE), from its
    endpoints.json; refused when that file is left from a stack that has stopped."""
    folder = Path(state or DEFAULT_STATE)
    path = folder / "endpoints.json"
    try:
        endpoints = json.loads(path.read_text())
        start = endpoints.get("command") or up_command(folder)
        target = Target(project=endpoints["project"], location=endpoints["location"], prefix="",
                        api_root=endpoints["api"], storage_root=endpoints.get("storage", ""),
                        scheduler_root=endpoints.get("scheduler", ""), bucket=endpoints.get("bucket", ""),
                        backfill_workflow=endpoints.get("backfillWorkflow", "backfill"),
                        range_url=endpoints["range"], proxy_url=endpoints["proxy"],
                        local_token=endpoints.get("token", "localcloud"),
                        unreachable_hint=f"the local stack in {folder} is not running; start it with: {start}")
    except FileNotFoundError:
        raise WfrError(f"{path} not found: no local stack runs there; start one with: {up_command(folder)}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise WfrError(f"{path} is not a local stack's endpoints file: {error!r}") from None
    if not _alive(endpoints.get("pid")):
        raise WfrError(f"the local stack in {folder} has stopped (its endpoints.json names process "
                       f"{endpoints.get('pid')}, which is gone); start it with: {start}")
    return target


def up_command(folder: Path) -> str:
    return shlex.join(["python", "-m", "localcloud", "up", "--workflows", "WORKFLOWS_DIR", "--state", str(folder)])


def _alive(pid: object) -> bool:
    """Whether the process that wrote endpoints.json still runs (True when it names none: a
    file from an older localcloud, judged by the first call instead)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # another user's process of that number: alive
    return True


def google(project: str | None, region: str | None, prefix: str | None) -> Target:
    """Precedence, for each setting: the flag, then the environment, then gcloud's config."""
    project = project or os.environ.get("CLOUDSDK_CORE_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT") \
        or _gcloud_config("core/project")
    region = region or os.environ.get("WFR_REGION") or os.environ.get("CLOUDSDK_WORKFLOWS_LOCATION") \
        or _gcloud_config("workflows/location") or _gcloud_config("functions/region")
    prefix = prefix or os.environ.get("WFR_PREFIX") or DEFAULT_PREFIX
    if not project:
        raise WfrError("no project: give --project, set CLOUDSDK_CORE_PROJECT, or 'gcloud config set project P'")
    if not region:
        raise WfrError("no region: give --region, set WFR_REGION, or 'gcloud config set workflows/location R'")
    # deploy.sh's names: PREFIX-backfill, the bucket PROJECT-PREFIX-runs, PREFIX-range/-proxy.
    return Target(project=project, location=region, prefix=prefix, api_root=EXECUTIONS_ROOT,
                  storage_root=STORAGE_ROOT, scheduler_root=SCHEDULER_ROOT,
                  bucket=f"{project}-{prefix}-runs", backfill_workflow=f"{prefix}-backfill")


def _gcloud_config(key: str) -> str | None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    done = subprocess.run([gcloud, "config", "get-value", key], capture_output=True, text=True)
    return done.stdout.strip() or None if done.returncode == 0 else None
