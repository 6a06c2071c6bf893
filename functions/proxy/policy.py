"""A job's overlap and failure policy, read from the query of its URI (docs/proxy.md, "Overlap
and failure policies"): `overlap=allow|skip|queue|replace`, `maxActive=N`, `pauseAfter=N`.

The proxy's one reader of these settings; workflows_runner/job_settings.py is wfr's, held to the
same table by tests/test_job_settings.py. Nothing here does I/O.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from workflows_api import ApiError

OVERLAP_MODES = ("allow", "skip", "queue", "replace")
SETTINGS = ("overlap", "maxActive", "pauseAfter")
# Bounds on the counts: a slot is one object in the runs bucket, and a pass judges pauseAfter
# over that many of the job's latest times.
MAX_ACTIVE_LIMIT = 100
PAUSE_AFTER_LIMIT = 100
_COUNT = re.compile(r"[1-9][0-9]{0,2}", re.ASCII)


class Policy(NamedTuple):
    overlap: str = "allow"
    max_active: int = 0     # 0 when overlap is allow: no limit
    pause_after: int = 0    # 0: never paused

    @property
    def limits(self) -> bool:
        """Whether a scheduled delivery has to count the job's active runs."""
        return self.overlap != "allow"


def _count(args, name: str, limit: int) -> int:
    text = args[name]
    if not _COUNT.fullmatch(text) or int(text) > limit:
        raise ApiError(400, f"{name} must be a whole number from 1 to {limit}, got {text[:20]!r}")
    return int(text)


def from_args(args) -> Policy:
    """The policy of a request's query (a mapping of the parameters given once). Raises a 400
    ApiError naming the setting that is wrong."""
    overlap = args.get("overlap", "allow")
    if overlap not in OVERLAP_MODES:
        raise ApiError(400, f"overlap must be one of {', '.join(OVERLAP_MODES)}, got {overlap[:20]!r}")
    max_active = 0
    if "maxActive" in args:
        if overlap == "allow":
            raise ApiError(400, "maxActive applies only with overlap=skip, queue or replace")
        max_active = _count(args, "maxActive", MAX_ACTIVE_LIMIT)
    elif overlap != "allow":
        max_active = 1
    pause_after = _count(args, "pauseAfter", PAUSE_AFTER_LIMIT) if "pauseAfter" in args else 0
    return Policy(overlap, max_active, pause_after)
