"""wfr end to end: `python -m localcloud up` (API, functions, scheduler, the ledger's storage) and
`wfr --local` in subprocesses, as an operator runs them. Each module-level scenario gives its runs
their own params, so they never mix.

The independent count is the Executions API itself (labels schedule_time and run_digest, newest
by createTime), not the ledger wfr reads."""
from __future__ import annotations

import csv
import http.server
import io
import json
import os
import pty
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.waiting_records import write_waiting
from tests.wfr_stack import ROOT, WFR, Up
from workflows_runner import identity, ledger, target
from workflows_runner.cloud import Cloud
from workflows_runner.status import settle

STOCKHOLM = ZoneInfo("Europe/Stockholm")
DAYS = [datetime(2024, 3, d, 1, tzinfo=STOCKHOLM).isoformat() for d in range(1, 11)]
WINDOW = ["--start", "2024-03-01T00:00:00", "--stop", "2024-03-11T00:00:00", "--step", "0 1 * * *",
          "--timezone", "Europe/Stockholm"]
STATE_OF = {"SUCCEEDED": "succeeded", "FAILED": "failed", "CANCELLED": "cancelled", "ACTIVE": "running",
            "QUEUED": "running"}


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workflows")
    shutil.copy(ROOT / "workflows" / "example.yaml", folder / "nightly.yaml")
    stack = Up(tmp_path_factory.mktemp("state"), folder)
    yield stack
    stack.stop()


def oracle(up: Up, params: dict, days: list[str]) -> dict[str, tuple[str, int]]:
    """From the Executions API alone: per day, the newest execution's state and the count."""
    runs = [r for r in up.executions("nightly")
            if {k: v for k, v in json.loads(r["argument"]).items() if k != "scheduleTime"} == params]
    by_time: dict[str, list[dict]] = {}
    for run in runs:
        by_time.setdefault(json.loads(run["argument"])["scheduleTime"], []).append(run)
    result = {}
    for day in days:
        attempts = sorted(by_time.get(day, []), key=lambda r: r["createTime"])
        result[day] = (STATE_OF[attempts[-1]["state"]], len(attempts)) if attempts else ("missing", 0)
    return result


@pytest.fixture(scope="module")
def mixed(up):
    """Ten days: 0-7 ran once, 1 and 6 ran twice, 3 and 5 failed, 8 and 9 never ran."""
    params = {"case": "mixed", "failFor": [DAYS[3], DAYS[5]]}
    for day in DAYS[:8]:
        assert up.post_run("nightly", {**params, "scheduleTime": day}, timezone="Europe/Stockholm").status_code == 200
    up.settle("nightly")
    for day in (DAYS[1], DAYS[6]):
        again = up.post_run("nightly", {**params, "scheduleTime": day}, timezone="Europe/Stockholm", reprocess="completed")
        assert again.json()["started"] is True
    up.settle("nightly")
    return params


def test_status_json_matches_an_independent_count(up, mixed):
    done = up.wfr("status", "nightly", *WINDOW, "--params", json.dumps(mixed), "--format", "json")
    report = json.loads(done.stdout)
    expected = oracle(up, mixed, DAYS)
    assert report["workflow"] == up.workflow("nightly")
    assert report["window"] == {"start": "2024-03-01T00:00:00", "stop": "2024-03-11T00:00:00",
                                "step": "0 1 * * *", "timezone": "Europe/Stockholm"}
    assert [t["scheduleTime"] for t in report["times"]] == DAYS
    assert {t["scheduleTime"]: (t["state"], t["attempts"]) for t in report["times"]} == expected
    assert report["totals"] == {"succeeded": 6, "failed": 2, "cancelled": 0, "running": 0, "queued": 0, "skipped": 0,
                                "missing": 2}
    assert report["totals"] == dict(Counter(s for s, _ in expected.values()), cancelled=0, running=0, queued=0, skipped=0)
    newest = {json.loads(r["argument"])["scheduleTime"]: r["name"] for r in
              sorted(up.executions("nightly"), key=lambda r: r["createTime"])
              if json.loads(r["argument"]).get("case") == "mixed"}
    assert all(t["execution"] == newest.get(t["scheduleTime"]) for t in report["times"])
    assert done.returncode == 3     # a time failed


def ledger_items(up: Up) -> list[dict]:
    """Every ledger object, read over HTTP from the stack's storage."""
    items, params = [], {"prefix": "runs/"}
    while True:
        page = requests.get(f"{up.endpoints['storage']}/storage/v1/b/{up.endpoints['bucket']}/o", params=params,
                            timeout=30).json()
        items += page.get("items", [])
        if not page.get("nextPageToken"):
            return items
        params["pageToken"] = page["nextPageToken"]


def test_a_status_writes_the_terminal_states_it_learns_back_to_the_ledger(up, mixed):
    up.settle("nightly")
    assert up.wfr("status", "nightly", *WINDOW, "--params", json.dumps(mixed), "--format", "json").returncode == 3
    newest = {}   # per day, the newest execution and its state, from the Executions API
    for run in sorted(up.executions("nightly"), key=lambda r: r["createTime"]):
        argument = json.loads(run["argument"])
        if {k: v for k, v in argument.items() if k != "scheduleTime"} == mixed:
            newest[argument["scheduleTime"]] = (run["name"], run["state"])
    metadata = [item.get("metadata") or {} for item in ledger_items(up)]
    recorded = {m.get("execution"): m.get("state") for m in metadata}
    assert len(newest) == 8 and {state for _, state in newest.values()} == {"SUCCEEDED", "FAILED"}
    assert {day: recorded.get(name) for day, (name, _) in newest.items()} == {
        day: state for day, (_, state) in newest.items()}


def test_a_concurrent_writers_newer_record_wins_over_the_write_back(up):
    """The write-back is conditional (ifMetagenerationMatch of the listing, in a batch request): a
    record another writer changed meanwhile answers 412 in its part and keeps that writer's
    metadata; the others are written."""
    params = {"case": "race"}
    for day in DAYS[:3]:
        assert up.post_run("nightly", {**params, "scheduleTime": day}, timezone="Europe/Stockholm").status_code == 200
    up.settle("nightly")
    cloud = Cloud(target.local(up.state))
    workflow, instants = up.workflow("nightly"), [datetime.fromisoformat(day) for day in DAYS[:3]]
    digests = {identity.run_digest(workflow, instant, params) for instant in instants}
    records = [r for r in ledger.window(cloud, workflow, instants[0], instants[-1]) if r.digest in digests]
    assert [r.state for r in records] == ["ACTIVE"] * 3          # as the proxy recorded them
    other = requests.patch(f"{up.endpoints['storage']}/storage/v1/b/{up.endpoints['bucket']}/o/"
                           f"{quote(records[1].name, safe='')}", timeout=30,
                           params={"ifMetagenerationMatch": records[1].metageneration},
                           json={"metadata": {"state": "CANCELLED", "error": "written by another writer"}})
    assert other.status_code == 200
    settle(cloud, workflow, records)                              # with the listing's metagenerations
    after = {i["name"]: i["metadata"] for i in ledger_items(up) if i["name"] in {r.name for r in records}}
    assert [after[r.name]["state"] for r in records] == ["SUCCEEDED", "CANCELLED", "SUCCEEDED"]
    assert after[records[1].name]["error"] == "written by another writer"
    assert cloud.http.calls["storage"] == 2                       # the listing, then one batch


def test_a_window_listed_in_parts_is_the_window_listed_whole(up, mixed):
    """A long window is listed as several ranged listings at once: together they hold every
    record once, in name order, whatever the cut."""
    cloud = Cloud(target.local(up.state))
    workflow = up.workflow("nightly")
    first, last = datetime.fromisoformat(DAYS[0]), datetime.fromisoformat(DAYS[-1])
    whole = ledger.window(cloud, workflow, first, last)
    assert len(whole) > 3
    for parts in (2, 3, 4, 7):
        assert ledger.window(cloud, workflow, first, last, parts) == whole


def test_only_and_csv_select_times_but_not_the_exit_status(up, mixed):
    done = up.wfr("status", "nightly", *WINDOW, "--params", json.dumps(mixed), "--only", "missing", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["scheduleTime"], r["state"], r["attempts"]) for r in rows] == [(DAYS[8], "missing", "0"), (DAYS[9], "missing", "0")]
    assert done.returncode == 3


def test_exit_statuses(up, mixed):
    ok = up.wfr("status", "nightly", "--start", "2024-03-01T00:00:00", "--stop", "2024-03-03T00:00:00",
                "--step", "0 1 * * *", "--timezone", "Europe/Stockholm", "--params", json.dumps(mixed))
    missing = up.wfr("status", "nightly", "--start", "2024-03-09T00:00:00", "--stop", "2024-03-11T00:00:00",
                     "--step", "0 1 * * *", "--timezone", "Europe/Stockholm", "--params", json.dumps(mixed))
    bad = up.wfr("status", "nightly", *WINDOW[:4], "--step", "0 0 30 2 *", "--params", "{}")
    usage = up.wfr("status", "nightly", "--start", "2024-03-01T00:00:00")
    assert (ok.returncode, missing.returncode, bad.returncode, usage.returncode) == (0, 4, 1, 2)
    assert "never matches" in bad.stderr and "Traceback" not in bad.stderr


def test_the_terminal_shows_a_line_per_time_a_grid_and_totals(up, mixed):
    main, child = pty.openpty()
    process = subprocess.Popen([str(WFR), "status", "nightly", "--local-state", str(up.state), *WINDOW,
                                "--params", json.dumps(mixed)], stdout=child, stderr=child, cwd=ROOT,
                               env={**os.environ, "COLUMNS": "120", "LINES": "50", "TERM": "xterm-256color"})
    os.close(child)
    output = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    process.wait(60)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode()).replace("\r", "")
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    assert lines[0].split() == ["TIME", "STATE", "#", "EXECUTION", "ERROR"]
    rows = [line for line in lines if line.startswith("2024-03-") and "T01:00:00+01:00" in line]
    assert [row.split()[0] for row in rows] == DAYS
    assert [row.split()[2] for row in rows] == ["succeeded", "succeeded", "succeeded", "failed", "succeeded",
                                                "failed", "succeeded", "succeeded", "missing", "missing"]
    grid = [line for line in lines if re.fullmatch(r"2024-03-[0-9]{2}  \S", line)]
    assert [g.split()[1] for g in grid] == ["✓", "✓", "✓", "✗", "✓", "✗", "✓", "✓", "·", "·"]
    assert lines[-1] == "10 times: 6 succeeded, 2 failed, 0 cancelled, 0 running, 0 queued, 0 skipped, 2 missing"
    assert process.returncode == 3


def test_a_time_waiting_for_a_slot_is_queued_pending_not_missing_nor_failed(up):
    """overlap=queue writes a waiting time as attempt 1 in state WAITING, with no execution
    (docs/ledger.md). Written here by hand: day 1 ran, day 2 waits, day 3 never ran."""
    params = {"case": "queued"}
    assert up.post_run("nightly", {**params, "scheduleTime": DAYS[0]}, timezone="Europe/Stockholm").status_code == 200
    up.settle("nightly")
    waiting = write_waiting(up.endpoints["storage"], up.endpoints["bucket"], up.workflow("nightly"), DAYS[1], params,
                            timezone="Europe/Stockholm")
    three = ["--start", "2024-03-01T00:00:00", "--stop", "2024-03-04T00:00:00", "--step", "0 1 * * *",
             "--timezone", "Europe/Stockholm", "--params", json.dumps(params)]
    done = up.wfr("status", "nightly", *three, "--format", "json")
    report = json.loads(done.stdout)
    assert [(t["scheduleTime"], t["state"], t["attempts"], t["execution"], t["error"], t["late"]) for t in report["times"]] \
        == [(DAYS[0], "succeeded", 1, report["times"][0]["execution"], None, False),
            (DAYS[1], "queued", 1, None, None, False), (DAYS[2], "missing", 0, None, None, False)]
    assert report["totals"] == {"succeeded": 1, "failed": 0, "cancelled": 0, "running": 0, "queued": 1, "skipped": 0,
                                "missing": 1}
    assert done.returncode == 4                      # missing decides over queued
    # Queued is pending, as running is: exit 5 while it waits, never 3 (failed) or 4 (missing).
    two = [*three[:2], "--stop", "2024-03-03T00:00:00", *three[4:]]
    only = up.wfr("status", "nightly", *two, "--only", "queued", "--format", "csv")
    assert [(r["scheduleTime"], r["state"], r["attempts"], r["execution"]) for r in csv.DictReader(io.StringIO(only.stdout))] \
        == [(DAYS[1], "queued", "1", "")]
    assert only.returncode == 5
    table = up.wfr("status", "nightly", *two)
    row = next(line for line in table.stdout.splitlines() if line.startswith(DAYS[1]))
    assert row.split()[1:4] == ["◷", "queued", "1"]
    assert " ".join(table.stdout.split()).endswith(   # the totals (wrapped to the tests' COLUMNS)
        "2 times: 1 succeeded, 0 failed, 0 cancelled, 0 running, 1 queued, 0 skipped, 0 missing")
    assert table.returncode == 5
    # Nothing was asked of Workflows for it, and nothing written to it: still WAITING, no execution.
    [item] = [i for i in ledger_items(up) if i["name"] == waiting]
    assert item["metadata"]["state"] == "WAITING" and "execution" not in item["metadata"]
    assert up.wfr("status", "nightly", *two, "--only", "queued,nope").returncode == 1


def test_rerun_failed_reruns_each_failed_time_with_its_original_argument(up):
    params = {"case": "rerun", "failFor": [DAYS[2]], "failUntil": (datetime.now(timezone.utc) + timedelta(seconds=4)).isoformat()}
    for day in DAYS[:4]:
        up.post_run("nightly", {**params, "scheduleTime": day}, timezone="Europe/Stockholm")
    up.settle("nightly")
    time.sleep(max(0.0, (datetime.fromisoformat(params["failUntil"]) - datetime.now(timezone.utc)).total_seconds()))
    window = ["--start", "2024-03-01T00:00:00", "--stop", "2024-03-05T00:00:00", "--step", "0 1 * * *",
              "--timezone", "Europe/Stockholm", "--params", json.dumps(params)]
    done = up.wfr("rerun", "nightly", "--failed", *window, "--format", "json")
    assert done.returncode == 0, done.stderr
    reruns = json.loads(done.stdout)
    assert [(r["scheduleTime"], r["started"]) for r in reruns] == [(DAYS[2], True)]
    up.settle("nightly")
    after = json.loads(up.wfr("status", "nightly", *window, "--format", "json").stdout)
    assert [(t["state"], t["attempts"]) for t in after["times"]] == [("succeeded", 1)] * 2 + [("succeeded", 2), ("succeeded", 1)]
    rerun_run = next(r for r in up.executions("nightly") if r["name"] == reruns[0]["execution"])
    assert json.loads(rerun_run["argument"]) == {**params, "scheduleTime": DAYS[2]}   # the same argument
    first = [r for r in up.executions("nightly") if json.loads(r["argument"]) == {**params, "scheduleTime": DAYS[2]}]
    assert len({r["labels"]["run_digest"] for r in first}) == 1 and len(first) == 2   # same run, new attempt


def test_rerun_named_executions(up, mixed):
    report = json.loads(up.wfr("status", "nightly", *WINDOW, "--params", json.dumps(mixed), "--format", "json").stdout)
    name = report["times"][0]["execution"]
    done = up.wfr("rerun", "nightly", name, "--format", "json")
    assert done.returncode == 0, done.stderr
    assert [(r["scheduleTime"], r["started"]) for r in json.loads(done.stdout)] == [(DAYS[0], True)]


def backfill_show(up: Up, backfill_id: str, until_ended: bool = True) -> dict:
    deadline = time.monotonic() + 120
    while True:
        shown = json.loads(up.wfr("backfill", "show", backfill_id, "--format", "json").stdout)
        if not until_ended or shown["state"] != "ACTIVE" or time.monotonic() > deadline:
            return shown
        time.sleep(0.3)


def test_a_backfill_starts_the_missing_times_and_is_listed(up):
    params = {"case": "backfill"}
    up.post_run("nightly", {**params, "scheduleTime": DAYS[0]}, timezone="Europe/Stockholm")
    window = [*WINDOW, "--params", json.dumps(params)]
    dry = json.loads(up.wfr("backfill", "start", "nightly", *window, "--dry-run", "--format", "json").stdout)
    assert (dry["planned"], dry["wouldStart"], dry["first"][0]) == (10, 9, DAYS[1])
    started = up.wfr("backfill", "start", "nightly", *window, "--concurrency", "3", "--no-follow", "--format", "json")
    assert started.returncode == 0, started.stderr
    backfill_id = json.loads(started.stdout)["id"]
    shown = backfill_show(up, backfill_id)
    assert shown["state"] == "SUCCEEDED"
    assert shown["progress"] == {"planned": 10, "started": 9, "skipped": 1, "failed": 0, "notStarted": 0, "running": 0}
    assert shown["outcome"] == "succeeded"
    listed = json.loads(up.wfr("backfill", "list", "nightly", "--format", "json").stdout)
    assert backfill_id in [b["id"] for b in listed]
    assert json.loads(up.wfr("status", "nightly", *window, "--format", "json").stdout)["totals"]["succeeded"] == 10


def test_a_concurrency_the_backfill_refuses_is_refused_before_anything_starts(up):
    """The bounds of workflows/backfill.yaml's read_argument: 50 runs in flight with wait, 20
    starts at once without (issue 28: never silently capped)."""
    before = json.loads(up.wfr("backfill", "list", "nightly", "--format", "json").stdout)
    window = [*WINDOW, "--params", json.dumps({"case": "too-many"}), "--no-follow"]
    for flags, limit in ((["--concurrency", "51"], 50), (["--concurrency", "21", "--no-wait"], 20),
                         (["--concurrency", "0"], 50)):
        refused = up.wfr("backfill", "start", "nightly", *window, *flags)
        assert refused.returncode == 1 and f"--concurrency must be 1 to {limit}" in refused.stderr, refused.stderr
    assert json.loads(up.wfr("backfill", "list", "nightly", "--format", "json").stdout) == before


def test_cancel_then_resume(up):
    params = {"case": "cancel", "sleepSeconds": 1}
    window = [*WINDOW, "--params", json.dumps(params)]
    backfill_id = json.loads(up.wfr("backfill", "start", "nightly", *window, "--no-follow", "--format", "json").stdout)["id"]
    deadline = time.monotonic() + 30
    while backfill_show(up, backfill_id, until_ended=False)["progress"]["started"] < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    cancelled = up.wfr("backfill", "cancel", backfill_id, "--runs")
    assert cancelled.returncode == 0, cancelled.stderr
    shown = backfill_show(up, backfill_id)
    assert shown["state"] == "CANCELLED"
    progress = shown["progress"]
    # Readable after the cancel: the runs it started, from their labels, and how they ended.
    labelled = [r for r in up.settle("nightly") if (r.get("labels") or {}).get("backfill") == backfill_id]
    assert progress["started"] == len(labelled) >= 2 and progress["running"] == 0
    assert progress["failed"] == sum(r["state"] != "SUCCEEDED" for r in labelled)
    status = json.loads(up.wfr("status", "nightly", *window, "--format", "json").stdout)
    assert status["totals"]["missing"] > 0
    resumed = up.wfr("backfill", "start", "nightly", *window, "--reprocess", "failed", "--concurrency", "5", "--no-follow",
                     "--format", "json")
    second = backfill_show(up, json.loads(resumed.stdout)["id"])
    assert second["state"] == "SUCCEEDED"
    final = up.wfr("status", "nightly", *window, "--format", "json")
    assert json.loads(final.stdout)["totals"]["succeeded"] == 10 and final.returncode == 0


def test_a_run_gone_from_workflows_history_is_recorded_unavailable(up):
    """An execution the ledger recorded as running that Workflows no longer has (executions.get
    answers 404 once its history retention passed) is written back UNAVAILABLE (docs/ledger.md,
    write 4) and counts as failed, and stays so."""
    from localcloud.store import Store
    params = {"case": "gone"}
    assert up.post_run("nightly", {**params, "scheduleTime": DAYS[0]}, timezone="Europe/Stockholm").status_code == 200
    [run] = [r for r in up.settle("nightly") if json.loads(r["argument"]) == {**params, "scheduleTime": DAYS[0]}]
    store = Store(up.state)
    try:
        assert store.delete(run["name"])   # as Workflows forgets it after the retention period
    finally:
        store.close()
    window = ["--start", "2024-03-01T00:00:00", "--stop", "2024-03-02T00:00:00", "--step", "0 1 * * *",
              "--timezone", "Europe/Stockholm", "--params", json.dumps(params)]
    done = up.wfr("status", "nightly", *window, "--format", "json")
    assert [(t["state"], t["execution"]) for t in json.loads(done.stdout)["times"]] == [("failed", run["name"])]
    assert done.returncode == 3
    storage, bucket = up.endpoints["storage"], up.endpoints["bucket"]
    [item] = [i for i in requests.get(f"{storage}/storage/v1/b/{bucket}/o", params={"prefix": "runs/"},
                                      headers={"Authorization": "Bearer localcloud"}, timeout=30).json()["items"]
              if (i.get("metadata") or {}).get("execution") == run["name"]]
    assert item["metadata"]["state"] == "UNAVAILABLE" and "history" in item["metadata"]["error"]
    again = up.wfr("status", "nightly", *window, "--format", "json")
    assert json.loads(again.stdout)["times"][0]["state"] == "failed"


class _ReadOnlyStorage(http.server.BaseHTTPRequestHandler):
    """Cloud Storage as a principal with only roles/storage.objectViewer sees it: reads pass to the
    stack's storage, every write is 403 (in a batch request, each part: Google authorizes parts
    one by one, https://cloud.google.com/storage/docs/batch)."""
    upstream = ""
    refused: list = []

    def do_GET(self):
        answer = requests.get(self.upstream + self.path, headers={"Authorization": self.headers.get("Authorization", "")},
                              timeout=30)
        self._send(answer.status_code, answer.headers.get("Content-Type", "application/json"), answer.content)

    def _refuse(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        denied = json.dumps({"error": {"code": 403, "message": "does not have storage.objects.update access"}})
        if self.path.startswith("/batch/"):
            ids = re.findall(rb"Content-ID: <([0-9]+)>", body)
            self.refused.extend(ids)
            parts = "".join(f"--end\r\nContent-Type: application/http\r\nContent-ID: <response-{int(i)}>\r\n\r\n"
                            f"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n\r\n{denied}\r\n"
                            for i in ids)
            self._send(200, "multipart/mixed; boundary=end", (parts + "--end--\r\n").encode())
        else:
            self.refused.append(self.path)
            self._send(403, "application/json", denied.encode())

    do_POST = do_PATCH = do_PUT = do_DELETE = _refuse

    def _send(self, code, content_type, data):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_status_answers_for_a_principal_that_may_only_read_the_ledger(up, tmp_path):
    params = {"case": "read-only"}
    for day in DAYS[:3]:
        assert up.post_run("nightly", {**params, "scheduleTime": day}, timezone="Europe/Stockholm").status_code == 200
    up.settle("nightly")
    handler = type("Handler", (_ReadOnlyStorage,), {"upstream": up.endpoints["storage"], "refused": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (tmp_path / "endpoints.json").write_text(json.dumps(
            {**up.endpoints, "storage": f"http://127.0.0.1:{server.server_address[1]}"}))
        done = subprocess.run([str(WFR), "status", "nightly", *WINDOW, "--params", json.dumps(params),
                               "--format", "json", "--local-state", str(tmp_path)],
                              capture_output=True, text=True, timeout=120, cwd=ROOT)
    finally:
        server.shutdown()
        server.server_close()
    report = json.loads(done.stdout)
    assert [t["state"] for t in report["times"][:3]] == ["succeeded"] * 3     # learned from Workflows
    assert all(t["error"] is None for t in report["times"])
    assert len(handler.refused) == 3                                          # each write-back refused
    assert "not written back" in done.stderr and "403" in done.stderr
    assert done.returncode == 4                                               # days 4-10 missing
    kept = {m.get("execution"): m.get("state") for m in (item.get("metadata") or {} for item in ledger_items(up))}
    assert [kept[t["execution"]] for t in report["times"][:3]] == ["ACTIVE"] * 3   # the ledger is unchanged
