"""A workflow's user environment variables, checked as Workflows checks them at deploy.

The workflows.v1 discovery document (Workflow.userEnvVars): "This map has a maximum length of 20.
Each string can take up to 4KiB. Keys cannot be empty strings and cannot start with "GOOGLE" or
"WORKFLOWS"." (../shared/google-apis/workflows.v1.json). `gcloud workflows deploy --set-env-vars`
and every localcloud entry point (the API, `serve --env`, the stack) apply the same rule.
"""
from __future__ import annotations

from typing import Mapping

MAX_VARIABLES = 20
MAX_BYTES = 4 * 1024
RESERVED_PREFIXES = ("GOOGLE", "WORKFLOWS")


def key_error(key: str) -> str | None:
    """Why a key is refused, or None."""
    if not key:
        return "a user env var needs a name"
    if key.startswith(RESERVED_PREFIXES):
        return f"{key}: user env var names may not start with GOOGLE or WORKFLOWS"
    return None


def check(workflow: str, env: Mapping[str, str]) -> None:
    """Raise ValueError naming the first rule `env` breaks."""
    if len(env) > MAX_VARIABLES:
        raise ValueError(f"workflow {workflow}: {len(env)} user env vars; Workflows allows at most {MAX_VARIABLES}")
    for key, value in env.items():
        problem = key_error(key)
        if problem:
            raise ValueError(f"workflow {workflow}: {problem}")
        for text in (key, value):
            if len(text.encode()) > MAX_BYTES:
                raise ValueError(f"workflow {workflow}: user env var {key[:40]} is {len(text.encode())} bytes; "
                                 f"each name and value may take up to {MAX_BYTES} (4 KiB)")
