"""Every `python -m localcloud serve|up` example of docs/localcloud.md, run as written from a checkout."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys

from tests.serving import ROOT

COMMANDS = [line for line in (ROOT / "docs" / "localcloud.md").read_text().splitlines()
            if re.match(r"python -m localcloud (serve|up|executions list) ", line)]


def test_the_readme_has_serve_and_up_examples():
    assert any(" up " in line for line in COMMANDS) and any(" serve " in line for line in COMMANDS)


def test_each_readme_example_starts_and_stops_as_written(tmp_path):
    for folder in ("workflows", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for line in COMMANDS:       # up first: executions list then reads the state it left
        argv = [sys.executable, *shlex.split(line)[1:]]
        if " executions list " in line:
            done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (line, done.stderr)
            continue
        process = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        try:
            first = process.stdout.readline()
            assert first.startswith(("localcloud is up", '{"api"')), (line, first, process.stderr.read())
        finally:
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=60)
        assert process.returncode == 0 and "localcloud stopped" in out, (line, err)
