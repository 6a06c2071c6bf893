"""A backfill of 5,000 times (10 pages of 500) on the local stack stays inside the 512 KB of
variables localcloud enforces, starts every time once and logs progress per page. Its own module
so that, with --dist loadfile, it runs beside test_backfill_e2e.py rather than after it."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from localcloud import stack as local_stack
from tests.test_backfill_e2e import ended, example_runs, scheduled, start_backfill, summary


# The suite's slowest test (about 30 s on two cores, beside the others; over 120 s on a machine
# shared with other work, with or without the run ledger): the default 120 s timeout, and the
# backfill helper's 120 s wait, leave too little room on a slow machine.
@pytest.mark.timeout(300)
def test_five_thousand_times_in_ten_pages_fit_in_memory(tmp_path):
    stack = local_stack.start(tmp_path / "state", api_log=lambda entry: None)
    try:
        start = datetime(2024, 9, 1, tzinfo=timezone.utc)
        argument = {"workflow": "example", "start": start.isoformat(),
                    "stop": (start + timedelta(minutes=5000)).isoformat(), "step": "* * * * *",
                    "concurrency": 20, "wait": False, "params": {"case": "large"}}
        result = summary(ended(stack, start_backfill(stack, argument), timeout=280))
        runs = example_runs(stack, "large")
        progress = [entry["message"] for entry in stack.api.logs
                    if isinstance(entry.get("message"), dict) and "page" in entry["message"]]
    finally:
        stack.stop()
    expected = {(start + timedelta(minutes=n)).isoformat() for n in range(5000)}
    assert {scheduled(run) for run in runs} == expected and len(runs) == 5000
    assert (result["planned"], result["started"], result["failed"]) == (5000, 5000, 0)
    assert len(result["executions"]) == 20 and result["firstFailures"] == []
    # Logged as each page arrives: the runs started by the pages before it.
    assert [(p["page"], p["started"]) for p in progress] == [(n, 500 * (n - 1)) for n in range(1, 11)]
