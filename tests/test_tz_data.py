"""One time-zone database everywhere (docs/range.md#time-zone-data): each piece answers from the
pinned tzdata package, whatever zoneinfo the host has.

Each piece runs in a process of its own whose PYTHONTZPATH points at a doctored zoneinfo folder:
there America/Vancouver holds Asia/Tokyo's rules. Python reads such a folder before the tzdata
package, so a piece that did not reset its search path would answer +09:00. The oracle is the
tzdata package's own file, read by path (ZoneInfo.from_file), whatever any search path says.
"""
from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import os
import re
import subprocess
import sys
import tomllib
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
import requests

from localcloud import api, storage
from tests.serving import ROOT, serve_function
from tests.test_proxy import start_proxy

ZONE = "America/Vancouver"
INSTANT = datetime(2026, 11, 2, 20, 0, tzinfo=timezone.utc)  # 15 zones of this host's data differ here


def pinned(zone: str) -> ZoneInfo:
    with importlib.resources.files("tzdata.zoneinfo").joinpath(zone).open("rb") as data:
        return ZoneInfo.from_file(data, key=zone)


EXPECTED = INSTANT.astimezone(pinned(ZONE)).utcoffset()
DOCTORED = INSTANT.astimezone(pinned("Asia/Tokyo")).utcoffset()


@pytest.fixture(scope="module")
def doctored_env(tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("zoneinfo")
    (folder / "America").mkdir()
    tokyo = importlib.resources.files("tzdata.zoneinfo").joinpath("Asia/Tokyo").read_bytes()
    (folder / ZONE).write_bytes(tokyo)
    return {"PYTHONTZPATH": str(folder)}


def offset_of(text: str):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).utcoffset()


def run_python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


PRINT_OFFSET = (f"from datetime import datetime, timezone; from zoneinfo import ZoneInfo; "
                f"print(datetime({INSTANT.year}, {INSTANT.month}, {INSTANT.day}, {INSTANT.hour}, "
                f"tzinfo=timezone.utc).astimezone(ZoneInfo({ZONE!r})).isoformat())")


def test_the_doctored_folder_changes_a_plain_python_answer(doctored_env):
    """The control: without the reset, Python answers from the doctored folder."""
    assert EXPECTED != DOCTORED
    assert offset_of(run_python(PRINT_OFFSET, doctored_env)) == DOCTORED


def test_the_range_function_answers_from_the_pinned_data(doctored_env):
    with serve_function("range", "expand_range", env=doctored_env) as url:
        answer = requests.post(url, json={"start": "2026-11-02T20:00:00Z", "stop": "2026-11-02T20:00:30Z",
                                          "step": "* * * * *", "timezone": ZONE}, timeout=30)
    assert answer.status_code == 200, answer.text
    (time,) = answer.json()
    assert datetime.fromisoformat(time) == INSTANT and offset_of(time) == EXPECTED


def test_the_proxy_writes_schedule_time_from_the_pinned_data(doctored_env, tmp_path):
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "echo.yaml").write_text("main:\n  params: [input]\n  steps:\n"
                                                      "    - done:\n        return: ${input}\n")
    server = api.start(tmp_path / "workflows", tmp_path / "state", log=lambda entry: None)
    objects = storage.start(tmp_path / "state")
    try:
        storage.create_bucket(objects.url, "local-project-runs", "local-project")
        env = {**doctored_env, "WORKFLOWS_API": server.url, "ALLOWED_WORKFLOWS": "local-project/*/*",
               "RUNS_BUCKET": "local-project-runs", "STORAGE_API": objects.url}
        with start_proxy(tmp_path, env) as proxy:
            started = proxy.post(f"/v1/projects/local-project/locations/us-central1/workflows/echo/executions"
                                 f"?timezone={ZONE}", {}, {"X-CloudScheduler-ScheduleTime": "2026-11-02T20:00:00Z"})
        assert started.status_code == 200, started.text
        execution = requests.get(f"{server.url}/v1/{started.json()['name']}", timeout=10,
                                 headers={"Authorization": "Bearer localcloud"}).json()
    finally:
        objects.stop()
        server.stop()
    schedule_time = json.loads(execution["argument"])["scheduleTime"]
    assert datetime.fromisoformat(schedule_time.replace("Z", "+00:00")) == INSTANT
    assert offset_of(schedule_time) == EXPECTED


def test_localcloud_workflows_format_times_from_the_pinned_data(doctored_env, tmp_path):
    program = tmp_path / "clock.yaml"
    program.write_text(f"main:\n  steps:\n    - done:\n        return: ${{time.format({int(INSTANT.timestamp())}, "
                       f"\"{ZONE}\")}}\n")
    done = subprocess.run([sys.executable, "-m", "localcloud", "run", str(program)], cwd=ROOT, timeout=60,
                          env={**os.environ, **doctored_env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert offset_of(json.loads(done.stdout)) == EXPECTED


def test_wfr_processes_read_the_pinned_data(doctored_env):
    """wfr itself builds no zone today (the range function expands its windows); any it builds
    comes from the pinned data, as the package resets the search path on import."""
    assert offset_of(run_python("import workflows_runner.cli; " + PRINT_OFFSET, doctored_env)) == EXPECTED


def test_every_piece_pins_the_installed_tzdata():
    installed = importlib.metadata.version("tzdata")
    pins = {path.parent.name: re.search(r"^tzdata==(\S+)$", path.read_text(), re.M)
            for path in (ROOT / "functions").glob("*/requirements.txt") if "tzdata" in path.read_text()}
    assert {"range", "proxy"} <= set(pins)
    assert {name: pin and pin[1] for name, pin in pins.items()} == dict.fromkeys(pins, installed)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"tzdata=={installed}" in project


def test_a_function_that_builds_zones_pins_tzdata():
    """A deployable that builds a ZoneInfo needs the package: each resets the search path to it
    alone (the audit function runs wfr's modules, listed in its SHARED file, which build none)."""
    for folder in sorted((ROOT / "functions").iterdir()):
        if not (folder / "requirements.txt").is_file():
            continue
        sources = [*folder.glob("*.py")]
        if (folder / "SHARED").is_file():
            shared = [line.strip() for line in (folder / "SHARED").read_text().splitlines()
                      if line.strip() and not line.startswith("#")]
            sources += [ROOT / "workflows_runner" / name for name in shared]
            assert all(path.is_file() for path in sources), f"{folder.name}/SHARED names a missing module"
        if any("ZoneInfo(" in path.read_text() for path in sources if path.is_file()):
            assert re.search(r"^tzdata==", (folder / "requirements.txt").read_text(), re.M), folder.name
