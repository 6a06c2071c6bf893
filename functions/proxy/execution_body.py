"""The Execution-resource body that Cloud Scheduler jobs send when they call Workflows directly.

Google's guide (https://cloud.google.com/workflows/docs/schedule-workflow) makes jobs that POST
an Execution, `{"argument": "<JSON string>", "callLogLevel": "..."}`, to executions.create. So
that pointing such a job at the proxy is all a migration needs (deploy.sh migrate), the proxy
reads that shape as well as a plain argument (docs/proxy.md, "Execution-shaped bodies"):

- A body is an Execution when it is an object, every key is an Execution field a caller may set
  (EXECUTION_FIELDS: the discovery document's Execution properties that are not output only)
  and `argument` is among them as a string. Anything else is the argument itself, as before.
- `argument` is unwrapped: it must decode to a JSON object, to which the proxy adds
  `scheduleTime`; an empty string is `{}` (as Workflows reads a missing argument).
- callLogLevel, executionHistoryLevel and disableConcurrencyQuotaOverflowBuffering go to
  executions.create as given, once checked against the Executions API's enums.
- labels are added to the execution's labels, except keys the proxy sets itself (RESERVED):
  those stay the proxy's, since it finds runs by them, and the caller's are dropped and logged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# Enum values of the Execution resource (workflowexecutions v1 discovery document).
CALL_LOG_LEVELS = ("CALL_LOG_LEVEL_UNSPECIFIED", "LOG_ALL_CALLS", "LOG_ERRORS_ONLY", "LOG_NONE")
EXECUTION_HISTORY_LEVELS = ("EXECUTION_HISTORY_LEVEL_UNSPECIFIED", "EXECUTION_HISTORY_BASIC",
                            "EXECUTION_HISTORY_DETAILED")
PASSED_THROUGH = ("callLogLevel", "executionHistoryLevel", "disableConcurrencyQuotaOverflowBuffering")
EXECUTION_FIELDS = frozenset({"argument", "labels", *PASSED_THROUGH})


@dataclass(frozen=True)
class Unwrapped:
    argument: dict  # the workflow's argument, before the proxy adds scheduleTime
    fields: dict = field(default_factory=dict)  # PASSED_THROUGH fields, as sent
    labels: dict = field(default_factory=dict)  # the caller's labels
    execution_shaped: bool = False


def is_execution(body) -> bool:
    return (isinstance(body, dict) and isinstance(body.get("argument"), str)
            and body.keys() <= EXECUTION_FIELDS)


def unwrap(body: dict, parse: Callable[[str], object]) -> Unwrapped:
    """The argument and Execution fields of a body object (see the module docstring). `parse`
    reads the argument's JSON by the same rules as the request body. ValueError says what is
    wrong with an Execution body (the proxy answers it as a 400)."""
    if not is_execution(body):
        return Unwrapped(body)
    text = body["argument"]
    argument = parse(text) if text.strip() else {}
    if not isinstance(argument, dict):
        raise ValueError("argument: an Execution's argument must be the JSON of an object, "
                            f"to which the proxy adds scheduleTime; found a {type(argument).__name__}")
    _check_enum(body, "callLogLevel", CALL_LOG_LEVELS)
    _check_enum(body, "executionHistoryLevel", EXECUTION_HISTORY_LEVELS)
    if not isinstance(body.get("disableConcurrencyQuotaOverflowBuffering", False), bool):
        raise ValueError("disableConcurrencyQuotaOverflowBuffering must be true or false")
    labels = body.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ValueError("labels must be a map of strings to strings")
    return Unwrapped(argument, {key: body[key] for key in PASSED_THROUGH if key in body}, labels, True)


def _check_enum(body: dict, key: str, allowed: tuple[str, ...]) -> None:
    if key in body and body[key] not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)}")


def merged_labels(ours: dict, theirs: dict, reserved: frozenset[str]) -> tuple[dict, list[str]]:
    """The execution's labels: the caller's without the reserved keys, then ours; and the
    caller's keys that were dropped."""
    dropped = sorted(key for key in theirs if key in reserved)
    return {**{k: v for k, v in theirs.items() if k not in reserved}, **ours}, dropped
