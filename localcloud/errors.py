"""Errors as Cloud Workflows shapes them.

A built-in error reaches `except: as: e` as a map with `message` and `tags`, e.g.
{"message": "key not found: x", "tags": ["KeyError", "LookupError"]}; an HttpError adds `code`,
`headers` and `body`. A workflow's own `raise` may raise any value (a string or a map).
"""
from __future__ import annotations

from typing import Any, NoReturn


class WorkflowError(Exception):
    """An error raised inside a running workflow; `payload` is what `except: as: e` binds.

    `frames` is where it went, innermost first: one {"step", "routine", "depth", "position"} per
    subworkflow call it crossed, added by the runtime as it unwinds (the Executions API's stack trace).
    """

    def __init__(self, payload: Any):
        super().__init__(payload)
        self.payload = payload
        self.frames: list[dict[str, Any]] = []

    @property
    def tags(self) -> list[str]:
        if isinstance(self.payload, dict):
            return list(self.payload.get("tags") or [])
        return []


def fail(tags: str | list[str], message: str, **fields: Any) -> NoReturn:
    """Raise a built-in error: fail("KeyError", "key not found: x")."""
    tag_list = [tags] if isinstance(tags, str) else list(tags)
    raise WorkflowError({"message": message, "tags": tag_list, **fields})


class LoadError(Exception):
    """A workflow definition that `gcloud workflows deploy` would reject (checked at load time)."""


class Cancelled(BaseException):
    """The execution was cancelled. A BaseException so that no workflow `try` can catch it."""
