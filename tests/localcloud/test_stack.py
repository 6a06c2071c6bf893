"""localcloud.stack stops every process it started, gunicorn workers included."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from localcloud import stack


def group_members(pgid: int) -> list[str]:
    return subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()


def test_stopping_a_function_ends_its_workers_even_when_the_server_died_first():
    port = stack.free_port()
    process = stack.start_function("range", "expand_range", port)
    assert os.getpgid(process.pid) == process.pid       # the server leads its own process group
    deadline = time.monotonic() + 10
    while len(group_members(process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)                                 # the gunicorn worker forks after listening
    assert len(group_members(process.pid)) >= 2
    process.send_signal(signal.SIGKILL)                  # the server dies without reaping its worker
    process.wait()
    stack.stop_process(process)
    deadline = time.monotonic() + 5
    while group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)                                 # a killed orphan lingers until init reaps it
    assert group_members(process.pid) == []
