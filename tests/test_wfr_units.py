"""wfr's pieces that need no server: the run identity it shares with the proxy (one table, both
twins), the ledger's object names, and reading endpoints.json."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest

from tests.serving import load_module
from workflows_runner import identity, ledger, render, target
from workflows_runner.errors import WfrError

proxy_time = load_module("proxy", "scheduled_time")

# (workflow, RFC 3339 time, argument): both twins must give the same label and digest.
IDENTITIES = [
    ("projects/my-project/locations/europe-west1/workflows/daily_report", "2019-10-12T07:20:50.52Z", {"table": "sales"}),
    ("projects/p/locations/l/workflows/w", "2022-03-27T03:00:00+02:00", {}),
    ("projects/p/locations/l/workflows/w", "2022-10-30T02:30:00.123456+02:00", {"b": [1, 2], "a": {"é": None}}),
    ("projects/p/locations/l/workflows/w", "1999-12-31T23:59:59.000001-05:30", {"n": 1.5}),
    ("projects/p/locations/l/workflows/W-x", "2024-02-29T01:00:00Z", {"s": "\u2603 snow"}),
]


@pytest.mark.parametrize("workflow, text, argument", IDENTITIES)
def test_the_run_identity_is_the_proxys(workflow, text, argument):
    instant = identity.parse_instant(text)
    assert instant == proxy_time.parse(text)
    assert identity.to_label(instant) == proxy_time.to_label(instant)
    assert identity.from_label(identity.to_label(instant)) == instant
    assert identity.run_digest(workflow, instant, argument) == proxy_time.run_digest(workflow, instant, argument)
    later = [instant + timedelta(minutes=minutes) for minutes in (0, 1, 61)]
    assert identity.run_digests(workflow, later, argument) == [proxy_time.run_digest(workflow, i, argument) for i in later]


def test_the_documented_digest_example():
    # docs/proxy.md, label table.
    instant = identity.parse_instant("2019-10-12T07:20:50.52Z")
    assert identity.run_digest("projects/my-project/locations/europe-west1/workflows/daily_report",
                               instant, {"table": "sales"}) == "22cd5851c0873d97ad7b29519b0bc8a6"


@pytest.mark.parametrize("text", ["2019-10-12T07:20:50", "2019-10-12 07:20:50Z", "2019-10-12T07:20:5０Z", ""])
def test_times_without_an_offset_or_with_other_digits_are_refused(text):
    with pytest.raises(ValueError):
        identity.parse_instant(text)


def test_ledger_names_are_the_documented_example_and_sort_by_instant():
    # docs/ledger.md, "Object names".
    instant = identity.parse_instant("2019-10-12T07:20:50.52Z")
    name = ledger.run_prefix("projects/my-project/locations/europe-west1/workflows/daily_report", instant,
                             "22cd5851c0873d97ad7b29519b0bc8a6") + "000001"
    assert name == ("runs/my-project/europe-west1/daily_report/2019-10-12T07:20:50.520000Z/"
                    "22cd5851c0873d97ad7b29519b0bc8a6/000001")
    record = ledger.parse({"name": name, "metageneration": "3", "metadata": {"state": "FAILED", "error": "boom"}})
    assert (record.instant, record.attempt, record.state, record.error, record.settled) == (instant, 1, "FAILED", "boom", True)
    start = datetime(1999, 12, 31, 23, 59, tzinfo=timezone.utc)
    keys = [ledger.instant_key(start + timedelta(microseconds=n * 999_983)) for n in range(500)]
    assert keys == sorted(keys) and {len(k) for k in keys} == {27}


def test_a_claim_without_metadata_is_claimed_and_other_names_are_ignored():
    record = ledger.parse({"name": "runs/p/l/w/2024-01-01T00:00:00.000000Z/" + "a" * 32 + "/000002"})
    assert (record.state, record.attempt, record.execution, record.settled) == ("CLAIMED", 2, None, False)
    assert ledger.parse({"name": "runs/p/l/w/2024-01-01T00:00:00Z/" + "a" * 32 + "/000002"}) is None
    assert ledger.parse({"name": "backfills/x"}) is None


def test_local_target_reads_endpoints_json(tmp_path):
    endpoints = {"project": "local-project", "location": "us-central1", "api": "http://127.0.0.1:1",
                 "range": "http://127.0.0.1:2", "proxy": "http://127.0.0.1:3", "scheduler": "http://127.0.0.1:4",
                 "storage": "http://127.0.0.1:5", "bucket": "runs", "backfillWorkflow": "backfill", "token": "localcloud"}
    (tmp_path / "endpoints.json").write_text(json.dumps(endpoints))
    t = target.local(tmp_path)
    assert t.workflow_name("nightly") == "projects/local-project/locations/us-central1/workflows/nightly"
    assert t.job_name("every-minute") == "projects/local-project/locations/us-central1/jobs/every-minute"
    assert (t.range_url, t.bucket, t.local_token) == ("http://127.0.0.1:2", "runs", "localcloud")
    with pytest.raises(WfrError, match="localcloud up"):
        target.local(tmp_path / "absent")


def test_google_target_uses_deploy_sh_names(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no gcloud: flags and environment only
    t = target.google("my-project", "europe-west1", None)
    assert (t.bucket, t.backfill_workflow) == ("my-project-workflows-runner-runs", "workflows-runner-backfill")
    assert t.job_name("nightly") == "projects/my-project/locations/europe-west1/jobs/workflows-runner-nightly"
    monkeypatch.delenv("CLOUDSDK_CORE_PROJECT", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    with pytest.raises(WfrError, match="--project"):
        target.google(None, "europe-west1", None)
    with pytest.raises(WfrError):
        t.workflow_name("projects/p/locations/l/workflows")


def test_a_followed_backfills_rate_and_eta():
    """The rate counts the times done since the backfill started; the ETA is the rest at that rate."""
    rate, left = render.Pace(since=time.monotonic() - 100).look(done=50, planned=200)
    assert rate == pytest.approx(0.5, rel=0.05) and left == pytest.approx(300, rel=0.05)
    first = render.Pace()   # following a backfill started elsewhere: nothing to measure at the first look
    assert first.look(done=30, planned=200) == (None, None)
    assert render.duration(3725) == "1:02:05" and render.duration(None) == "-:--:--"


def test_dry_run_and_rerun_failed_follow_the_proxy_on_unavailable_runs():
    """A run whose execution left Workflows' history unrecorded shows as failed, but the proxy's
    `reprocess: failed` re-runs only FAILED or CANCELLED records (docs/ledger.md), so neither the
    dry run nor `wfr rerun --failed` may count it; `completed` does re-run it."""
    from datetime import datetime, timezone
    from workflows_runner.backfills import would_start
    from workflows_runner.rerun import failed_records
    from workflows_runner.status import Status, TimeStatus, Window
    recorded = {"00": None, "01": "FAILED", "02": "CANCELLED", "03": "UNAVAILABLE", "04": "SUCCEEDED", "05": "ACTIVE",
                "06": "WAITING"}
    shown = {None: "missing", "FAILED": "failed", "CANCELLED": "cancelled", "UNAVAILABLE": "failed",
             "SUCCEEDED": "succeeded", "ACTIVE": "running", "WAITING": "queued"}
    times = [TimeStatus(f"2024-01-01T{hour}:00:00Z", datetime(2024, 1, 1, int(hour), tzinfo=timezone.utc),
                        shown[state], 0 if state is None else 1, None, record=None if state is None else f"r{hour}",
                        recorded=state) for hour, state in recorded.items()]
    status = Status("projects/p/locations/l/workflows/w", Window("a", "b", "0 * * * *"), {}, times)
    hours = lambda starting: [t.schedule_time[11:13] for t in starting]  # noqa: E731
    assert hours(would_start(status, "none")) == ["00"]
    assert hours(would_start(status, "failed")) == ["00", "01", "02"]
    # Neither a running time nor a queued one (overlap=queue: its waiter starts or skips it).
    assert hours(would_start(status, "completed")) == ["00", "01", "02", "03", "04"]
    assert hours(would_start(status, "failed", order="desc")) == ["02", "01", "00"]
    assert failed_records(times) == ["r01", "r02"]


def test_a_grid_cell_of_several_times_shows_the_one_needing_attention_first():
    """docs/cli.md: a cell standing for several times shows the worst; a queued time (held back
    by its job's runs) comes before a running one, after skipped and missing."""
    from rich.console import Console
    from workflows_runner.status import Status, TimeStatus, Window
    pairs = [("running", "queued"), ("succeeded", "running"), ("queued", "skipped"), ("missing", "queued"),
             ("queued", "succeeded"), ("failed", "queued"), ("cancelled", "missing"), ("succeeded", "succeeded"),
             ("queued", "queued"), ("running", "running")]
    states = [state for pair in pairs for state in pair]
    times = [TimeStatus(f"2024-01-01T00:{n:02d}:00Z", datetime(2024, 1, 1, 0, n, tzinfo=timezone.utc), state, 1, None)
             for n, state in enumerate(states)]
    console = Console(width=22, record=True, color_system=None)   # room for 10 cells: 2 times a cell
    render.status_grid(console, Status("projects/p/locations/l/workflows/w", Window("a", "b", "* * * * *"), {}, times))
    assert console.export_text().splitlines()[-1] == "2024-01-01  ◷▶↷·◷✗⊘✓◷▶"
