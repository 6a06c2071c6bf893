"""The proxy's ALLOWED_WORKFLOWS, as deploy.sh builds it, and the other projects it names."""
import pulumi

from . import spec
from .errors import RunnerConfigError


def entries_of(allowed_workflows, project, region):
    """project/location/workflow entries ('*' per segment); default PROJECT/REGION/*."""
    if allowed_workflows is None:
        return [f"{project}/{region}/*"]
    items = [allowed_workflows] if isinstance(allowed_workflows, str) else list(allowed_workflows)
    entries = [entry for item in items for entry in item.split(",")]
    if not entries:
        raise RunnerConfigError("allowed_workflows", "at least one project/location/workflow", allowed_workflows)
    for entry in entries:
        if not spec.ALLOWED_ENTRY.fullmatch(entry):
            raise RunnerConfigError("allowed_workflows", "project/location/workflow entries, '*' per segment", entry)
    return entries


def allows(entries, project, region, workflow):
    return any(all(want in ("*", have) for want, have in zip(entry.split("/"), (project, region, workflow)))
               for entry in entries)


def with_backfill(entries, project, region, backfill):
    """Catch-up jobs start the backfill through the proxy, so the proxy must be allowed to."""
    if allows(entries, project, region, backfill):
        return entries
    return [*entries, f"{project}/{region}/{backfill}"]


def other_projects(entries, project):
    """Projects of the allowlist other than PROJECT, in order; '*' cannot be granted on, so it
    gets a warning instead, as in deploy.sh."""
    found = []
    for entry in entries:
        other = entry.split("/")[0]
        if other == "*":
            pulumi.log.warn(f"allowed_workflows names '*' projects ({entry}): grant the proxy roles/workflows.invoker "
                            "and the backfill a role with workflows.executions.get in each yourself")
        elif other != project and other not in found:
            found.append(other)
    return found
