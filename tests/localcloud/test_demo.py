"""`python -m localcloud demo` (what `make run` runs), as a user runs it: a real subprocess.

Each story step is checked twice: from what the demo prints and from the executions that exist
afterwards, read back with `python -m localcloud executions list`.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from datetime import datetime, timezone

import pytest
import requests

from localcloud.store import Store
from tests.serving import ROOT

FAILED_LABEL = "2024-02-29t00-00-00z"          # step 3's time, 2024-02-29 01:00 in Stockholm
PARENT = "projects/local-project/locations/us-central1/workflows"


def demo(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localcloud", "demo", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def executions(state, workflow: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "localcloud", "executions", "list", "--state", str(state),
                           "--workflow", workflow, "--format", "json", "--limit", "1000"],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return sorted(json.loads(done.stdout), key=lambda e: e["createTime"])


def label(when: str) -> str:
    return datetime.fromisoformat(when).astimezone(timezone.utc).strftime("%Y-%m-%dt%H-%M-%Sz")


def listening(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), 0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    state = tmp_path_factory.mktemp("demo-state")
    # A previous run's history, which the demo must forget so that its story starts the same.
    old = Store(state)
    old.insert({"name": f"{PARENT}/example/executions/from-before", "state": "SUCCEEDED",
                "createTime": "2024-01-01T00:00:00Z", "labels": {"schedule_time": FAILED_LABEL}})
    old.close()
    first = demo("--no-serve", "--state", str(state))
    assert first.returncode == 0, first.stdout + first.stderr
    # Twice in a row on the same state folder (`make run` twice, issue 28): the reset empties the
    # run ledger too, so the second story is the first one again.
    done = demo("--no-serve", "--state", str(state))
    return done, state


def test_the_story_passes_and_exits_0(story):
    done, _ = story
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All steps passed." in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout.rstrip().endswith("Stopped.")


def test_a_scheduled_run_gets_its_time_once(story):
    done, state = story
    delivered = re.search(r"X-CloudScheduler-ScheduleTime: (\S+);", done.stdout).group(1)
    runs = [e for e in executions(state, "example") if e["labels"]["schedule_time"] == label(delivered)]
    # Delivered, repeated by the demo, and maybe by the job's own tick: still one execution.
    assert len(runs) == 1
    run = runs[0]
    assert run["state"] == "SUCCEEDED"
    assert run["labels"]["trigger"] == "scheduler"
    assert run["labels"]["scheduler_job"] == "example-every-minute"
    argument = json.loads(run["argument"])
    assert argument["table"] == "sales"
    assert datetime.fromisoformat(argument["scheduleTime"]) == datetime.fromisoformat(delivered)
    assert argument["scheduleTime"].endswith(("+01:00", "+02:00"))      # written in Europe/Stockholm
    assert json.loads(run["result"]) == {"scheduleTime": argument["scheduleTime"]}
    assert f"started: false, execution example/{run['name'].rsplit('/', 1)[1]}" in done.stdout


def test_a_failed_time_is_rerun_as_a_new_execution_of_the_same_run(story):
    _, state = story
    runs = [e for e in executions(state, "example") if e["labels"]["schedule_time"] == FAILED_LABEL]
    assert [(e["state"], e["labels"]["trigger"]) for e in runs] == [("FAILED", "scheduler"), ("SUCCEEDED", "explicit")]
    assert runs[0]["labels"]["run_digest"] == runs[1]["labels"]["run_digest"]
    assert json.loads(runs[1]["argument"])["scheduleTime"] == "2024-02-29T01:00:00+01:00"


def test_the_backfill_runs_each_day_once_and_the_dry_run_none(story):
    done, state = story
    days = [f"2024-03-0{day}T01:00:00+01:00" for day in range(1, 6)]
    runs = [e for e in executions(state, "example") if e["labels"]["schedule_time"].startswith("2024-03-0")]
    assert sorted(json.loads(e["argument"])["scheduleTime"] for e in runs) == days
    assert all(e["state"] == "SUCCEEDED" and e["labels"]["trigger"] == "backfill" for e in runs)
    assert sorted(e["labels"]["schedule_time"] for e in runs) == [label(day) for day in days]
    backfills = executions(state, "backfill")
    assert [e["state"] for e in backfills] == ["SUCCEEDED"] * 3          # dry run, backfill, again
    dry, real, again = (json.loads(e["result"]) for e in backfills)
    assert (dry["planned"], dry["first"], dry["last"], dry["firstPage"]) == (5, days[0], days[-1], days[:2])
    assert (dry["wouldStart"], dry["firstToStart"]) == (5, days[0])
    assert (real["planned"], real["started"], real["skipped"], real["failed"]) == (5, 5, 0, 0)
    assert (again["planned"], again["started"], again["skipped"], again["failed"]) == (5, 0, 5, 0)
    assert "log: " in done.stdout                                        # progress while it ran
    for day in days:
        assert re.search(rf"run {re.escape(day)}  SUCCEEDED", done.stdout)


def test_a_wrong_outcome_fails_the_demo(tmp_path):
    workflows = tmp_path / "workflows"
    shutil.copytree(ROOT / "workflows", workflows)
    (workflows / "example.yaml").write_text(
        "main:\n  params: [input]\n  steps:\n    - done:\n        return:\n          scheduleTime: not it\n")
    done = demo("--no-serve", "--state", str(tmp_path / "state"), "--workflows", str(workflows))
    assert done.returncode == 1
    assert "FAILED: example returned" in done.stdout
    assert "2. The same delivery" not in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_ctrl_c_while_serving_stops_every_process(tmp_path):
    state = tmp_path / "state"
    process = subprocess.Popen([sys.executable, "-m", "localcloud", "demo", "--state", str(state)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, process.terminate)     # never hang the suite on a stuck demo
    watchdog.start()
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if " ui --local-state " in line:                   # the last call it prints
                break
        output = "".join(lines)
        assert "All steps passed." in output
        urls = dict(re.findall(r"^  (Executions API|range function|proxy function|Cloud Scheduler)\s+(\S+)",
                               output, re.M))
        assert len(urls) == 4 and all(listening(url) for url in urls.values())
        # The printed calls work as printed: those offered at the end, and the story's run-now.
        calls = output.split("Try it", 1)[1].split("The operator's view", 1)[0].replace("\\\n", "").splitlines()[1:]
        calls += [line.strip().removeprefix("$ ") for line in output.splitlines()
                  if line.strip().startswith("$ curl") and "/jobs/" in line]
        for call in calls:
            if call.strip().startswith("tail"):
                continue
            ran = subprocess.run(["bash", "-c", call], cwd=ROOT, capture_output=True, text=True, timeout=30)
            assert ran.returncode == 0 and '"error"' not in ran.stdout, (call, ran.stdout, ran.stderr)
        # The operator's view of this very stack, as printed: status and the backfills list answer;
        # the page serves its overview.
        wfr = [line.strip() for line in output.split("The operator's view", 1)[1].splitlines()[1:]]
        assert [shlex.split(line)[1] for line in wfr] == ["status", "backfill", "ui"]
        status, listed = (subprocess.run(shlex.split(line), cwd=ROOT, capture_output=True, text=True, timeout=60)
                          for line in wfr[:2])
        assert status.returncode == 0 and "5 times: 5 succeeded" in status.stdout, status.stdout + status.stderr
        assert listed.returncode == 0 and listed.stdout.count("succeeded") >= 3, listed.stdout + listed.stderr   # the story's 3, and the curl above
        ui = subprocess.Popen([*shlex.split(wfr[2]), "--no-browser"], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
        try:
            page = requests.get(ui.stdout.readline().strip(), timeout=30)
            assert page.status_code == 200 and "example-every-minute" in page.text
        finally:
            ui.terminate()
            ui.wait(10)
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=30)
    finally:
        watchdog.cancel()
        if process.poll() is None:     # a failed assertion: still stop the stack, not just the demo
            process.terminate()
            process.wait(30)
    assert process.returncode == 0
    assert rest.rstrip().endswith("Stopped.")
    assert "Traceback" not in output + rest + errors
    assert not any(listening(url) for url in urls.values())
