"""Serve a function folder with functions-framework on a free loopback port, for real-HTTP tests.

Each function runs in its own process (two `main.py` files cannot share one interpreter under
functions-framework), exactly as `functions-framework --target ... --source ...` runs it.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def serve_function(folder: str, target: str, env: dict[str, str] | None = None,
                   log_path: Path | None = None) -> Iterator[str]:
    """Run functions/<folder>/main.py:<target> and yield its base URL, e.g. http://127.0.0.1:PORT."""
    port = free_port()
    source = FUNCTIONS / folder / "main.py"
    command = [str(Path(sys.executable).parent / "functions-framework"),
               "--target", target, "--source", str(source), "--host", "127.0.0.1", "--port", str(port)]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                               cwd=source.parent)
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log_path:
            log.close()
