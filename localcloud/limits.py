"""The execution limits a deployed workflow hits, with the errors Workflows raises for them.

Memory is accounted per assignment: each variable remembers its own size, so an assignment
costs one measurement of the assigned variable, not a walk over every variable.
Memory usage: https://cloud.google.com/workflows/docs/reference/syntax/variables
Limits: https://cloud.google.com/workflows/quotas#resource_limits
"""
from __future__ import annotations

import os
import threading
from typing import Any

from .errors import fail

MEMORY_LIMIT = 512 * 1024      # all variables, arguments and events together
STEP_LIMIT = 100_000           # steps executed in one execution
CALL_DEPTH_LIMIT = 20          # nested subworkflow calls
DEFAULT_CONCURRENCY = 20       # branches or iterations running at once in one parallel step
MAX_BRANCH_ERRORS = 100        # unhandled branch errors reported by one parallel step


def size_of(value: Any) -> int:
    """Bytes a value takes, as Workflows counts them (syntax/variables, "Memory usage"):
    8 for a number, boolean or null; 8 + its elements for a string, bytes or list;
    8 + keys + values for a map. A character counts as its UTF-8 bytes."""
    if isinstance(value, str):
        return 8 + (len(value) if value.isascii() else len(value.encode("utf-8")))
    if isinstance(value, list):
        return 8 + sum(map(size_of, value))
    if isinstance(value, dict):
        return 8 + sum(size_of(key) + size_of(item) for key, item in value.items())
    if isinstance(value, (bytes, bytearray)):
        return 8 + len(value)
    return 8


class Budget:
    """Counters shared by every branch of one execution."""

    def __init__(self):
        self.memory_limit = MEMORY_LIMIT    # read per execution, so a test can lower them
        # LOCALCLOUD_STEP_LIMIT lowers it for a whole stack (the backfill chaining tests).
        self.step_limit = int(os.environ.get("LOCALCLOUD_STEP_LIMIT") or STEP_LIMIT)
        self.memory = 0
        self.steps = 0
        self.lock = threading.RLock()   # also serialises writes to variables shared by branches

    def resize(self, delta: int) -> None:
        """Account `delta` bytes; refuse (before anything is stored) past the limit."""
        with self.lock:
            if delta > 0 and self.memory + delta > self.memory_limit:
                fail(["ResourceLimitError", "MemoryLimitExceededError"],
                     f"Memory usage limit exceeded: variables would use {self.memory + delta} bytes, "
                     f"the limit is {self.memory_limit}")
            self.memory += delta

    def step(self) -> None:
        self.steps += 1   # a lost increment between branches only delays the error by a step
        if self.steps > self.step_limit:
            fail("ResourceLimitError", f"Step limit exceeded: more than {self.step_limit} steps")
