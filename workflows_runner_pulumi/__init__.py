"""workflows-runner as Pulumi component resources (docs/pulumi.md).

WorkflowsRunner creates what `deploy.sh` deploys; ScheduledWorkflow is `deploy.sh schedule`.
"""
from .errors import RunnerConfigError
from .runner import WorkflowsRunner
from .scheduled import ScheduledWorkflow

__all__ = ["RunnerConfigError", "ScheduledWorkflow", "WorkflowsRunner"]
