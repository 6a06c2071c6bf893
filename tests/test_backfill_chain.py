"""A backfill longer than one execution's steps continues as a new execution of itself, from its
page token, with its counters: tested at small scale by lowering localcloud's step limit
(LOCALCLOUD_STEP_LIMIT) and the backfill's budget (STEP_BUDGET) together.
Workflows' limit: https://cloud.google.com/workflows/quotas#resource_limits (100,000 steps)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import requests

from localcloud import stack as local_stack
from tests.test_backfill_e2e import AUTH, PARENT, ended, example_runs, scheduled, start_backfill

STEP_LIMIT = 1000


def chain(stack, first: dict) -> list[dict]:
    """The first link and its continuations, in link order, each once it has ended: a link names
    its successor in its result (and labels it backfill=<first id>, backfill_link=N)."""
    links = [first]
    while links[-1]["state"] == "SUCCEEDED" and "continued" in json.loads(links[-1]["result"]):
        links.append(ended(stack, json.loads(links[-1]["result"])["continued"], timeout=120))
    first_id = first["name"].rsplit("/", 1)[-1]
    labelled = requests.get(f"{stack.api.url}/v1/{PARENT}/backfill/executions", headers=AUTH, timeout=10,
                            params={"view": "FULL", "filter": f'labels.backfill="{first_id}"'}).json()
    assert sorted(int(e["labels"]["backfill_link"]) for e in labelled.get("executions", [])) == \
        list(range(1, len(links))), "one execution per link number"
    return links


def window(minutes: int, case: str, **options) -> dict:
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    return {"workflow": "example", "start": start.isoformat(), "stop": (start + timedelta(minutes=minutes)).isoformat(),
            "step": "* * * * *", "params": {"case": case}, **options}


@pytest.mark.timeout(300)
def test_a_backfill_past_its_step_budget_continues_as_linked_executions(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCALCLOUD_STEP_LIMIT", str(STEP_LIMIT))
    stack = local_stack.start(tmp_path / "state", api_log=lambda entry: None, backfill_env={"STEP_BUDGET": "500"})
    try:
        argument = window(300, "chain", pageSize=100, concurrency=3, wait=False)
        first = ended(stack, start_backfill(stack, argument), timeout=120)
        links = chain(stack, first)
        runs = example_runs(stack, "chain")
        # The same window again: every time is skipped, across links too.
        again = chain(stack, ended(stack, start_backfill(stack, argument), timeout=120))
    finally:
        stack.stop()
    assert [link["state"] for link in links] == ["SUCCEEDED"] * len(links), links[-1].get("error")
    assert len(links) >= 3
    results = [json.loads(link["result"]) for link in links]
    assert all(r["continued"] == nxt["name"] for r, nxt in zip(results, links[1:]))
    # A link starts its successor without waiting for it (skip_polling): it ends first.
    assert all(link["endTime"] < nxt["endTime"] for link, nxt in zip(links, links[1:]))
    assert "continued" not in results[-1]
    # Counters carried across links: the last result is the whole backfill's.
    final = results[-1]
    assert (final["planned"], final["started"], final["skipped"], final["failed"], final["links"]) == (300, 300, 0, 0, len(links))
    assert len(final["executions"]) == 20
    expected = {(datetime(2024, 5, 1, tzinfo=timezone.utc) + timedelta(minutes=n)).isoformat() for n in range(300)}
    assert sorted(scheduled(run) for run in runs) == sorted(expected)    # each time once
    again_final = json.loads(again[-1]["result"])
    assert (again_final["planned"], again_final["started"], again_final["skipped"]) == (300, 0, 300)


@pytest.mark.timeout(300)
def test_without_the_budget_the_same_backfill_hits_the_step_limit(tmp_path, monkeypatch):
    """The chain above is needed: one execution over the same window fails at the lowered limit."""
    monkeypatch.setenv("LOCALCLOUD_STEP_LIMIT", str(STEP_LIMIT))
    stack = local_stack.start(tmp_path / "state", api_log=lambda entry: None, backfill_env={"STEP_BUDGET": "1000000"})
    try:
        first = ended(stack, start_backfill(stack, window(300, "no-chain", pageSize=100, concurrency=3, wait=False)),
                      timeout=120)
    finally:
        stack.stop()
    assert first["state"] == "FAILED", first.get("result")
    assert "ResourceLimitError" in first["error"]["payload"]
