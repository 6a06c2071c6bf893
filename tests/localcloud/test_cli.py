"""python -m localcloud as a user runs it: real subprocesses, real HTTP on loopback."""
from __future__ import annotations

import importlib.machinery
import json
import signal
import subprocess
import sys
import time
import types

import pytest
import requests

from localcloud import __main__ as cli
from tests.serving import ROOT, free_port

PARENT = "projects/local-project/locations/us-central1/workflows"
HELLO = """
main:
  params: [args]
  steps:
    - greet:
        return:
          greeting: ${"hello " + args.name}
          colour: ${sys.get_env("COLOUR")}
"""
FAIL = """
- boom:
    raise:
      code: 7
      message: boom
"""


def localcloud(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "localcloud", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def workflows(tmp_path):
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "hello.yaml").write_text(HELLO)
    (folder / "fail.yaml").write_text(FAIL)
    (folder / "broken.yaml").write_text("- a:\n    next: nowhere\n")
    return folder


def test_run_prints_the_result_as_json(workflows):
    done = localcloud("run", str(workflows / "hello.yaml"), "--data", '{"name": "ada"}', "--env", "COLOUR=red")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"greeting": "hello ada", "colour": "red"}


def test_run_failure_prints_the_error_and_exits_1(workflows):
    done = localcloud("run", str(workflows / "fail.yaml"))
    assert done.returncode == 1
    assert json.loads(done.stdout) == {"code": 7, "message": "boom"}
    assert "boom" in done.stderr


def test_run_refuses_what_would_not_deploy_or_start(workflows):
    broken = localcloud("run", str(workflows / "broken.yaml"))
    assert broken.returncode == 1
    assert json.loads(broken.stdout)["error"]["status"] == "FAILED_PRECONDITION"
    bad_data = localcloud("run", str(workflows / "hello.yaml"), "--data", "{nope")
    assert bad_data.returncode == 1 and json.loads(bad_data.stdout)["error"]["code"] == 400
    reserved = localcloud("run", str(workflows / "hello.yaml"), "--env", "GOOGLE_X=1")
    assert reserved.returncode == 2 and "GOOGLE_" in reserved.stderr


def test_serve_runs_the_api_and_scheduler_until_sigterm(workflows, tmp_path):
    state, port = tmp_path / "state", free_port()
    api_url = f"http://127.0.0.1:{port}"
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(json.dumps([{
        "name": "hello-job", "schedule": "0 0 1 1 *", "uri": f"{api_url}/v1/{PARENT}/hello/executions",
        "headers": {"Content-Type": "application/json"}, "oidc": True,
        "body": {"argument": json.dumps({"name": "scheduler"}), "labels": {"origin": "scheduler"}}}]))
    server = subprocess.Popen([sys.executable, "-m", "localcloud", "serve", "--workflows", str(workflows),
                               "--state", str(state), "--port", str(port), "--jobs", str(jobs),
                               "--env", "hello:COLOUR=green"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        urls = json.loads(server.stdout.readline())
        assert urls["api"] == api_url and urls["scheduler"].startswith("http://127.0.0.1:")
        session = requests.Session()
        session.headers["Authorization"] = "Bearer t"
        created = session.post(f"{api_url}/v1/{PARENT}/hello/executions",
                               json={"argument": json.dumps({"name": "cli"})}, timeout=10).json()
        # "Run now" on the scheduler: its POST creates an execution through the API.
        run = session.post(f"{urls['scheduler']}/v1/projects/local-project/locations/us-central1/jobs/"
                           "hello-job:run", json={}, timeout=10)
        assert run.status_code == 200
        deadline, executions = time.monotonic() + 15, []
        while time.monotonic() < deadline:
            executions = session.get(f"{api_url}/v1/{PARENT}/hello/executions",
                                     params={"view": "FULL"}, timeout=10).json().get("executions", [])
            if len(executions) == 2 and all(e["state"] == "SUCCEEDED" for e in executions):
                break
            time.sleep(0.05)
        results = sorted(json.loads(e["result"])["greeting"] for e in executions)
        assert results == ["hello cli", "hello scheduler"]
        assert {json.loads(e["result"])["colour"] for e in executions} == {"green"}

        via_api = localcloud("executions", "list", "--api", api_url, "--workflow", "hello",
                             "--filter", 'labels.origin="scheduler"', "--format", "json")
        assert via_api.returncode == 0, via_api.stderr
        assert [e["labels"] for e in json.loads(via_api.stdout)] == [{"origin": "scheduler"}]
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=20)
    assert server.returncode == 0, err
    assert "localcloud stopped" in out

    # The history stays in the state folder after the stack stopped.
    table = localcloud("executions", "list", "--state", str(state))
    lines = table.stdout.splitlines()
    assert table.returncode == 0 and lines[0].split() == ["WORKFLOW", "EXECUTION_ID", "STATE", "START_TIME",
                                                          "END_TIME"]
    assert len(lines) == 3 and all(" SUCCEEDED " in line for line in lines[1:])
    assert created["name"].rsplit("/", 1)[1] in table.stdout
    failed_only = localcloud("executions", "list", "--state", str(state), "--filter", 'state="FAILED"',
                             "--format", "json")
    assert json.loads(failed_only.stdout) == []


def test_executions_list_needs_a_workflow_with_api():
    done = localcloud("executions", "list", "--api", "http://127.0.0.1:9")
    assert done.returncode == 2 and "--workflow" in done.stderr


def test_demo_is_dispatched_to_localcloud_demo_main(monkeypatch):
    calls = []
    demo = types.ModuleType("localcloud.demo")
    demo.__spec__ = importlib.machinery.ModuleSpec("localcloud.demo", loader=None)
    demo.main = lambda argv: calls.append(argv) or 5
    monkeypatch.setitem(sys.modules, "localcloud.demo", demo)
    assert cli.main(["demo", "--fast", "x"]) == 5
    assert calls == [["--fast", "x"]]


def test_serve_refuses_a_missing_workflows_folder_or_a_bad_jobs_file(tmp_path):
    missing = localcloud("serve", "--workflows", str(tmp_path / "nope"), "--state", str(tmp_path / "s"))
    assert missing.returncode == 2 and "no such folder" in missing.stderr
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("- name: j\n  schedule: '* * *'\n  uri: http://127.0.0.1:9/\n")
    bad_jobs = localcloud("serve", "--workflows", str(tmp_path), "--state", str(tmp_path / "s"), "--jobs", str(jobs))
    assert bad_jobs.returncode == 2 and "job j: invalid schedule" in bad_jobs.stderr


def test_executions_list_refuses_a_state_folder_that_does_not_exist(tmp_path):
    done = localcloud("executions", "list", "--state", str(tmp_path / "nonexistent"))
    assert done.returncode == 2 and "no such folder" in done.stderr and done.stdout == ""
    empty = localcloud("executions", "list", "--state", str(tmp_path))   # exists, nothing ran yet
    assert empty.returncode == 0 and empty.stdout.split() == ["WORKFLOW", "EXECUTION_ID", "STATE",
                                                              "START_TIME", "END_TIME"]


def test_executions_list_into_a_closed_pipe_ends_without_a_traceback(tmp_path):
    # `executions list | head -1`: head exits after one line while the table is still printed.
    from localcloud.store import Store
    store = Store(tmp_path)
    for number in range(3000):
        store.insert({"name": f"{PARENT}/hello/executions/e{number:05}", "state": "SUCCEEDED",
                      "startTime": "2024-01-01T00:00:00.000000Z", "createTime": "2024-01-01T00:00:00.000000Z"})
    store.close()
    pipeline = subprocess.run(f"'{sys.executable}' -m localcloud executions list --state '{tmp_path}' "
                              "--limit 3000 | head -1", shell=True, cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
    assert pipeline.stdout.split() == ["WORKFLOW", "EXECUTION_ID", "STATE", "START_TIME", "END_TIME"]
    assert "Traceback" not in pipeline.stderr and "BrokenPipeError" not in pipeline.stderr


def test_run_runs_exactly_the_file_given_beside_a_sibling_of_the_same_name(workflows):
    (workflows / "twin.yaml").write_text("- done:\n    return: from yaml\n")
    (workflows / "twin.json").write_text(json.dumps([{"done": {"return": "from json"}}]))
    for suffix in ("json", "yaml"):
        done = localcloud("run", str(workflows / f"twin.{suffix}"))
        assert done.returncode == 0 and json.loads(done.stdout) == f"from {suffix}", done.stderr
