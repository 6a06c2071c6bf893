"""Issue 25's operator surface, item by item, as an operator meets it: `wfr` in subprocesses on
`python -m localcloud up`. The independent record is the Executions API itself (what started,
how it ended), never wfr's own reading.

1 checks before acting   2 a typo'd workflow   3 honest outcomes   4 ids that round-trip
5 a stopped stack        6 gcloud-style flags  9 progress at 80 columns
(7, the UI, is tests/test_wfr_ui.py; 8, `make run`'s requirements, tests/test_requirements.py.)
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
import requests

from tests.wfr_stack import AUTH, ROOT, WFR, Up

ZONE = "Europe/Stockholm"
DAYS = [f"2024-03-0{d}T01:00:00+01:00" for d in range(1, 5)]
WINDOW = ["--start", "2024-03-01T00:00:00", "--stop", "2024-03-05T00:00:00", "--step", "0 1 * * *",
          "--timezone", ZONE]
JOBS = """
- name: nightly
  schedule: "0 1 * * *"
  timeZone: Europe/Stockholm
  uri: "{proxy}/v1/projects/local-project/locations/us-central1/workflows/nightly/executions?timezone=Europe/Stockholm"
  body: {"table": "sales"}
- name: direct
  schedule: "0 0 1 1 *"
  uri: "http://127.0.0.1:9/v1/projects/local-project/locations/us-central1/workflows/nightly/executions"
  body: {}
"""


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workflows")
    shutil.copy(ROOT / "workflows" / "example.yaml", folder / "nightly.yaml")
    shutil.copy(ROOT / "workflows" / "example.yaml", folder / "other.yaml")
    jobs = tmp_path_factory.mktemp("jobs") / "jobs.yaml"
    jobs.write_text(JOBS)
    stack = Up(tmp_path_factory.mktemp("state"), folder, jobs)
    yield stack
    stack.stop()


def backfill_runs(up: Up) -> list[dict]:
    return up.executions("backfill")


def one_line_error(done: subprocess.CompletedProcess, status: int = 1) -> str:
    """The command failed with `status` and said why in one line on stderr, nothing on stdout."""
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wfr: "), done.stderr
    assert "Traceback" not in done.stderr and "HTTPConnectionPool" not in done.stderr
    return lines[0]


def settled_backfill(up: Up, backfill_id: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        done = up.wfr("backfill", "show", backfill_id, "--format", "json")
        shown = json.loads(done.stdout)
        if shown["outcome"] != "running" or time.monotonic() > deadline:
            return {**shown, "exit": done.returncode}
        time.sleep(0.3)


# --- 1. a real start makes its dry run's checks -----------------------------------------------
@pytest.mark.parametrize("window, said", [
    (["--start", "2024-03-01T00:00:00", "--stop", "2024-03-05T00:00:00", "--step", "0 1 * * *",
      "--timezone", "Europe/Stockhlm"], "timezone 'Europe/Stockhlm' is not a known IANA time zone"),
    (["--start", "2024-03-05T00:00:00", "--stop", "2024-03-01T00:00:00", "--step", "0 1 * * *"], "stop is before start"),
    (["--start", "2024-03-01T00:00:00", "--stop", "2024-03-05T00:00:00", "--step", "0 25 * * *"], "step"),
    ([*WINDOW, "--params", "[1]"], "--params must be a JSON object"),
])
def test_a_backfill_refuses_what_its_dry_run_refuses_and_starts_nothing(up, window, said):
    before = len(backfill_runs(up))
    for extra in (["--dry-run"], ["--no-follow"]):
        line = one_line_error(up.wfr("backfill", "start", "nightly", *window, *extra))
        assert said in line
    assert len(backfill_runs(up)) == before


def test_a_broken_backfill_started_by_hand_is_listed_with_its_reason_and_breaks_nothing(up):
    argument = {"workflow": "nightly", "start": "2024-03-01T00:00:00", "stop": "2024-03-02T00:00:00",
                "step": "0 1 * * *", "timezone": "Europe/Stockhlm"}
    created = requests.post(f"{up.endpoints['api']}/v1/{up.workflow('backfill')}/executions",
                            json={"argument": json.dumps(argument)}, headers=AUTH, timeout=30).json()
    broken = created["name"].rsplit("/", 1)[-1]
    shown = settled_backfill(up, broken)
    # The independent record: the execution itself ended FAILED.
    state = requests.get(f"{up.endpoints['api']}/v1/{created['name']}", headers=AUTH, timeout=30).json()["state"]
    assert state == "FAILED"
    assert (shown["outcome"], shown["state"], shown["exit"]) == ("error", "FAILED", 3)
    assert "Europe/Stockhlm" in shown["reason"] and "\n" not in shown["reason"]
    listed = up.wfr("backfill", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    [row] = [b for b in json.loads(listed.stdout) if b["id"] == broken]
    assert (row["outcome"], row["state"]) == ("error", "FAILED") and "Europe/Stockhlm" in row["reason"]
    table = up.wfr("backfill", "list")
    assert table.returncode == 0 and broken in table.stdout and "error" in table.stdout
    status = up.wfr("status", "nightly", *WINDOW, "--params", '{"case": "beside a broken one"}')
    assert status.returncode == 4, status.stderr   # all missing, read as usual


# --- 2. a typo in the workflow, or a job for another one --------------------------------------
def test_a_workflow_that_does_not_exist_is_an_error_not_all_missing(up):
    before = len(backfill_runs(up))
    line = one_line_error(up.wfr("status", "reprot", *WINDOW))
    assert "workflow reprot not found" in line
    assert "not found" in one_line_error(up.wfr("backfill", "start", "reprot", *WINDOW, "--no-follow"))
    assert "not found" in one_line_error(up.wfr("rerun", "reprot", "--failed", *WINDOW))
    assert len(backfill_runs(up)) == before


def test_a_job_is_checked_against_the_workflow_and_the_proxy(up):
    window = WINDOW[:4]
    line = one_line_error(up.wfr("status", "other", *window, "--job", "nightly"))
    assert line == "wfr: job nightly starts workflow nightly, not other"
    assert "not the proxy" in one_line_error(up.wfr("status", "nightly", *window, "--job", "direct"))
    assert "not found" in one_line_error(up.wfr("status", "nightly", *window, "--job", "nigthly"))
    done = up.wfr("status", "nightly", *window, "--job", "nightly", "--format", "json")
    assert done.returncode == 4 and len(json.loads(done.stdout)["times"]) == 4


# --- 3. outcomes that do not hide failures ----------------------------------------------------
def test_a_backfill_with_a_failed_time_is_failed_with_counts_and_the_runs_error(up):
    params = {"case": "outcome", "failFor": [DAYS[2]]}
    started = up.wfr("backfill", "start", "nightly", *WINDOW, "--params", json.dumps(params), "--concurrency", "2",
                     "--no-follow", "--format", "json")
    assert started.returncode == 0, started.stderr
    backfill_id = json.loads(started.stdout)["id"]
    shown = settled_backfill(up, backfill_id)
    runs = [r for r in up.settle("nightly") if (r.get("labels") or {}).get("backfill") == backfill_id]
    failed = [r for r in runs if r["state"] != "SUCCEEDED"]
    assert len(runs) == 4 and [json.loads(r["argument"])["scheduleTime"] for r in failed] == [DAYS[2]]
    assert (shown["state"], shown["outcome"], shown["exit"]) == ("SUCCEEDED", "failed", 3)
    assert shown["progress"] == {"planned": 4, "started": 4, "skipped": 0, "failed": 1, "notStarted": 0,
                                 "running": 0}
    [failure] = shown["failures"]
    assert failure == {"scheduleTime": DAYS[2], "execution": failed[0]["name"],
                       "error": f"example failed on purpose for {DAYS[2]}"}
    [row] = [b for b in json.loads(up.wfr("backfill", "list", "nightly", "--format", "json").stdout)
             if b["id"] == backfill_id]
    assert row["outcome"] == "failed" and row["state"] == "SUCCEEDED"
    assert {k: row["counts"][k] for k in ("planned", "started", "skipped", "failed")} == \
        {"planned": 4, "started": 4, "skipped": 0, "failed": 1}
    table = up.wfr("backfill", "show", backfill_id)
    assert table.returncode == 3 and f"failed {DAYS[2]}: example failed on purpose for {DAYS[2]}" in table.stdout


# --- 4. ids as wfr prints them ------------------------------------------------------------------
def test_ids_round_trip(up):
    params = {"case": "ids"}
    assert up.post_run("nightly", {**params, "scheduleTime": DAYS[0]}, timezone=ZONE).status_code == 200
    up.settle("nightly")
    table = up.wfr("status", "nightly", *WINDOW, "--params", json.dumps(params), "--only", "succeeded")
    # The row's EXECUTION column: the bare id, as the table prints it.
    printed = re.search(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", table.stdout.splitlines()[1])[0]
    name = f"{up.workflow('nightly')}/executions/{printed}"
    attempts = []
    for given in (printed, printed[:8], name):
        done = up.wfr("rerun", "nightly", given, "--format", "json")
        assert done.returncode == 0, done.stderr
        [rerun] = json.loads(done.stdout)
        assert (rerun["scheduleTime"], rerun["started"]) == (DAYS[0], True)
        attempts.append(rerun["execution"])
        up.settle("nightly")
    # Three new attempts of that one run, by the Executions API's count.
    runs = [r for r in up.executions("nightly") if json.loads(r["argument"]) == {**params, "scheduleTime": DAYS[0]}]
    assert len(runs) == 4 and set(attempts) <= {r["name"] for r in runs}
    assert "8 characters or more" in one_line_error(up.wfr("rerun", "nightly", printed[:7]))
    assert "belongs to workflow other, not nightly" in one_line_error(
        up.wfr("rerun", "nightly", name.replace("/nightly/", "/other/")))
    backfill_id = json.loads(up.wfr("backfill", "start", "nightly", *WINDOW, "--params", json.dumps(params),
                                    "--no-follow", "--format", "json").stdout)["id"]
    for given in (backfill_id, backfill_id[:8], f"{up.workflow('backfill')}/executions/{backfill_id}"):
        assert settled_backfill(up, given)["id"] == backfill_id


def test_an_ambiguous_prefix_lists_the_candidates():
    from workflows_runner import ids
    from workflows_runner.errors import ApiError, WfrError

    class Executions:
        """The two Executions API calls ids.execution makes: no execution has the id itself,
        and the listing holds two that start with it."""
        def execution(self, name, view="BASIC"):
            raise ApiError(404, "NOT_FOUND", f"{name} not found")

        def executions(self, workflow, filter_=None, view="BASIC", order_by=None):
            return iter({"name": f"{workflow}/executions/{i}"} for i in ("a8a5aa60-1", "a8a5aa60-2", "b8a5aa60-3"))
    with pytest.raises(WfrError) as raised:
        ids.execution(Executions(), "projects/p/locations/l/workflows/w", "a8a5aa60")
    assert raised.value.message == "a8a5aa60 is ambiguous: 2 executions of w start with it (a8a5aa60-1, a8a5aa60-2)"


# --- 5. a stopped stack -------------------------------------------------------------------------
def test_a_stopped_or_killed_stack_is_one_line_with_the_command_to_start_it(tmp_path):
    folder = tmp_path / "workflows"
    folder.mkdir()
    shutil.copy(ROOT / "workflows" / "example.yaml", folder / "nightly.yaml")
    state = tmp_path / "state"
    stack = Up(state, folder)
    endpoints = dict(stack.endpoints)
    stack.stop()   # SIGTERM: up removes endpoints.json
    line = one_line_error(stack.wfr("status", "nightly", *WINDOW))
    assert "endpoints.json not found" in line and "localcloud up" in line
    # Killed (no chance to clean up): the file stays, naming a process that is gone.
    (state / "endpoints.json").write_text(json.dumps(endpoints))
    line = one_line_error(stack.wfr("status", "nightly", *WINDOW))
    assert "has stopped" in line and endpoints["command"] in line
    assert " -m localcloud up --workflows " in endpoints["command"]
    # A file without a pid (an older localcloud): the first call finds nobody at the URL.
    (state / "endpoints.json").write_text(json.dumps({k: v for k, v in endpoints.items() if k != "pid"}))
    line = one_line_error(stack.wfr("status", "nightly", *WINDOW))
    assert line.startswith(f"wfr: cannot reach {endpoints['api']} (connection refused): the local stack in ")
    assert endpoints["command"] in line
    # The command it names starts that very stack again.
    (state / "endpoints.json").unlink()
    again = subprocess.Popen(["bash", "-c", endpoints["command"]], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (state / "endpoints.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        assert stack.wfr("status", "nightly", *WINDOW).returncode == 4
    finally:
        os.killpg(again.pid, signal.SIGTERM)
        again.wait(20)


# --- 6. flags as gcloud takes them --------------------------------------------------------------
def test_target_flags_go_before_or_after_the_command_and_local_takes_no_value(up, tmp_path):
    expected = up.wfr("status", "nightly", *WINDOW, "--format", "json")
    state = str(up.state)
    for argv in (["--local-state", state, "status", "nightly", *WINDOW],
                 ["status", "--local-state", state, "nightly", *WINDOW],
                 ["status", "nightly", *WINDOW, "--local-state", state]):
        done = subprocess.run([str(WFR), *argv, "--format", "json"], capture_output=True, text=True, cwd=ROOT)
        assert (done.returncode, done.stdout) == (expected.returncode, expected.stdout), done.stderr
    # --local is the stack in ./.localcloud/state: it never takes the next word as a folder.
    (tmp_path / ".localcloud").mkdir()
    (tmp_path / ".localcloud" / "state").symlink_to(up.state)
    for argv in (["--local", "status", "nightly", *WINDOW], ["status", "--local", "nightly", *WINDOW]):
        done = subprocess.run([str(WFR), *argv, "--format", "json"], capture_output=True, text=True, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (expected.returncode, expected.stdout), done.stderr


def test_version_help_and_usage_errors():
    def wfr(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(WFR), *args], capture_output=True, text=True, cwd=ROOT)
    version = wfr("--version")
    assert version.returncode == 0 and version.stdout.startswith("wfr ")
    commands = re.findall(r"^    ([a-z-]+) {2,}", wfr("--help").stdout, re.M)   # one per line
    verbs = re.findall(r"^    ([a-z-]+) {2,}", wfr("backfill", "--help").stdout, re.M)
    # One spelling per command: no old hyphenated twins, the backfill verbs only under backfill.
    assert len(commands) == len(set(commands)) and {"backfill", "rerun", "status", "ui"} <= set(commands)
    assert not [c for c in commands if c.startswith("backfill") and c != "backfill"]
    assert sorted(verbs) == ["cancel", "list", "show", "start"]
    typo = wfr("backfill", "shw", "x")
    assert typo.returncode == 2 and "invalid choice: 'shw'" in typo.stderr


def test_every_flag_has_help_text():
    import argparse
    from workflows_runner import cli

    def parsers(parser: argparse.ArgumentParser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)
    silent = [f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
              for parser in parsers(cli.parser()) for action in parser._actions
              if not action.help and not isinstance(action, argparse._SubParsersAction)]
    assert silent == []


# --- 9. progress at 80 columns ------------------------------------------------------------------
@pytest.mark.parametrize("width", [150, 80, 60])
def test_progress_keeps_counts_and_eta_at_any_width(width):
    from workflows_runner import render
    from workflows_runner.backfills import Progress
    p = Progress(planned=125_000, started=61_000, skipped=1_000, failed=20, running=50, ended_badly=10)
    line = render.progress_line(p, (812.5, 3600.0), width)
    assert len(line) <= width
    for part in (f"{p.done}/125000", "61000", "1000", "20", "50", "ETA 1:00:00"):
        assert part in line, line
    assert ("━" in line) == (width == 150)   # the bar is the first thing to go
