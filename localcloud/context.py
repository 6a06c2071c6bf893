"""What a running execution knows about where it runs; shared by the runtime and the stdlib."""
from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

# Sent as `Authorization: Bearer ...` wherever Google would send an OIDC or OAuth2 token.
# The local API accepts any non-empty bearer token: on loopback there is no identity to check.
LOCAL_TOKEN = "localcloud"

# Where the local stack says it runs, unless told otherwise: the project and region in every
# resource name (projects/P/locations/L/...), defined here once for the API, scheduler, stack and CLI.
PROJECT = "local-project"
LOCATION = "us-central1"


def _print_log(severity: str, payload: Any) -> None:
    print(json.dumps({"severity": severity, "message": payload}, default=str), file=sys.stderr)


@dataclass
class Context:
    project: str = PROJECT
    location: str = LOCATION
    workflow_id: str = "workflow"
    execution_id: str = "local-execution"
    env: Mapping[str, str] = field(default_factory=dict)   # deploy-time env vars (--set-env-vars)
    api_url: str | None = None                              # base URL of the local Executions API
    cancelled: threading.Event = field(default_factory=threading.Event)
    log: Callable[[str, Any], None] = _print_log            # sys.log sink: (severity, payload)
    # Counts one step against the execution's limit: a connector's polling attempts are billed
    # and counted as steps (https://cloud.google.com/workflows/pricing). The runtime sets it.
    count_step: Callable[[], None] = lambda: None
    steps_used: Callable[[], int] = lambda: 0                # steps run so far (the runtime sets it)

    @property
    def workflow_name(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/workflows/{self.workflow_id}"
