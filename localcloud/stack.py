"""The whole local stack on loopback, as `make run`, the end-to-end tests and the benchmarks use it.

The Executions API with every file of workflows/ deployed (backfill with RANGE_URL and PROXY_URL
set, queue with PROXY_URL, as deploy.sh sets them on Google), both functions served by functions-framework in their
own processes, Cloud Storage with the run ledger's bucket, the proxy pointed at the local API and
storage, and optionally the scheduler and the audit function (run from its assembled source,
exactly as deploy.sh uploads it: assemble_source).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

from . import api, scheduler, storage
from .context import LOCATION, PROJECT
from .google_http import LogSink, stdout_log

ROOT = Path(__file__).resolve().parent.parent
BACKFILL = ROOT / "workflows" / "backfill.yaml"   # always the project's own, beside any workflows folder
QUEUE = ROOT / "workflows" / "queue.yaml"         # the queue's waiter (overlap=queue), likewise
# A waiting time is delivered again every second here (20 s on Google): docs/localcloud.md.
QUEUE_POLL_SECONDS = "1"
RUNS_BUCKET = f"{PROJECT}-runs"  # deploy.sh names it PROJECT-PREFIX-runs


@dataclass
class Ports:
    """Loopback ports of each server; 0 picks a free one."""
    api: int = 0
    range: int = 0
    proxy: int = 0
    scheduler: int = 0
    storage: int = 0
    audit: int = 0


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


def assemble_source(folder: str, destination: Path) -> Path:
    """A function's deployable source in `destination`: its folder, plus the modules of
    workflows_runner/ its SHARED file lists (one per line, # comments), copied into
    workflows_runner/ beside main.py, as deploy.sh's assemble_source and the Pulumi component
    build it (tests/test_audit_source.py holds the three to the same files)."""
    source = ROOT / "functions" / folder
    shutil.rmtree(destination, ignore_errors=True)
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    shared = source / "SHARED"
    if shared.exists():
        (destination / "workflows_runner").mkdir()
        for line in shared.read_text().splitlines():
            module = line.strip()
            if module and not module.startswith("#"):
                shutil.copy2(ROOT / "workflows_runner" / module, destination / "workflows_runner" / module)
    return destination


def start_function(folder: str, target: str, port: int, env: dict[str, str] | None = None,
                   log: IO[bytes] | int = subprocess.DEVNULL, source_dir: Path | None = None) -> subprocess.Popen:
    """Run functions/<folder>/main.py:<target> (or source_dir/main.py) exactly as
    `functions-framework` runs it."""
    source = (source_dir or ROOT / "functions" / folder) / "main.py"
    command = [str(Path(sys.executable).parent / "functions-framework"), "--target", target,
               "--source", str(source), "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                               stdout=log, stderr=subprocess.STDOUT, cwd=source.parent,
                               start_new_session=True)  # its own process group: see stop_process
    try:
        wait_for_port(port, process)
    except BaseException:
        stop_process(process)
        raise
    return process


def stop_process(process: subprocess.Popen) -> None:
    """Stop a function's server together with its gunicorn workers. They share the process group
    that start_function gave the server, so a worker cannot outlive a server that died first;
    and a Ctrl-C at the terminal reaches only our own process, which stops them in order."""
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait()
    _signal_group(process, signal.SIGKILL)  # any worker the server did not reap


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


@contextlib.contextmanager
def serve_function(folder: str, target: str, env: dict[str, str] | None = None,
                   log_path: Path | None = None) -> Iterator[str]:
    """Serve one function on a free loopback port; yields its base URL."""
    port = free_port()
    with open(log_path, "wb") if log_path else contextlib.nullcontext(subprocess.DEVNULL) as log:
        process = start_function(folder, target, port, env, log)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            stop_process(process)


@dataclass
class Stack:
    api: api.ApiServer
    range_url: str
    proxy_url: str
    audit_url: str | None = None
    storage: storage.StorageServer | None = None
    scheduler: scheduler.SchedulerServer | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def proxy_path(self, workflow: str) -> str:
        """The proxy URL that starts `workflow`, as a Cloud Scheduler job targets it."""
        return f"{self.proxy_url}/v1/projects/{PROJECT}/locations/{LOCATION}/workflows/{workflow}/executions"

    def stop(self) -> None:
        if self.scheduler:
            self.scheduler.stop()
        for process in self.processes:
            stop_process(process)
        self.api.stop()
        if self.storage:
            self.storage.stop()
        for log in self.logs:
            log.close()


def start(state_dir: str | Path, workflows_dir: str | Path = ROOT / "workflows",
          jobs: list[dict[str, Any]] | None = None, log_dir: str | Path | None = None,
          proxy_env: dict[str, str] | None = None, api_log: LogSink = stdout_log,
          scheduler_log: LogSink = stdout_log, backfill_env: dict[str, str] | None = None,
          ports: Ports | None = None, jobs_file: Path | None = None, audit: bool = False) -> Stack:
    """Start everything; `jobs` are scheduler job configs whose `uri` may name `{proxy}` and
    `{audit}` (no scheduler when None). `audit` starts the audit function, assembled into
    STATE/functions/audit, auditing the scheduler's jobs (it needs one: jobs not None). `api_log` and `scheduler_log` receive the in-process servers' structured
    log entries. `backfill_env` overrides backfill's env (e.g. RANGE_URL through a fault-injecting
    relay). `ports` fixes the servers' ports; `jobs_file` keeps the scheduler's jobs across restarts."""
    ports = ports or Ports()
    range_port, proxy_port = ports.range or free_port(), ports.proxy or free_port()
    range_url, proxy_url = f"http://127.0.0.1:{range_port}", f"http://127.0.0.1:{proxy_port}"
    server = api.start(workflows_dir, state_dir, port=ports.api, project=PROJECT, location=LOCATION,
                       env={"backfill": {"RANGE_URL": range_url, "PROXY_URL": proxy_url, **(backfill_env or {})},
                            "queue": {"PROXY_URL": proxy_url}},
                       files={"backfill": BACKFILL, "queue": QUEUE}, log=api_log)
    stack = Stack(api=server, range_url=range_url, proxy_url=proxy_url)
    try:
        # The run ledger's bucket is made through the API, as deploy.sh makes it on Google.
        stack.storage = storage.start(state_dir, port=ports.storage)
        storage.create_bucket(stack.storage.url, RUNS_BUCKET, PROJECT)
        # The backfill hands a long chain's state from link to link in the runs bucket.
        for key, value in (("STORAGE_API", stack.storage.url), ("RUNS_BUCKET", RUNS_BUCKET)):
            server.executions.env["backfill"].setdefault(key, value)

        def log_file(name: str) -> IO[bytes] | int:
            if log_dir is None:
                return subprocess.DEVNULL
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            stack.logs.append(open(Path(log_dir) / f"{name}.log", "ab"))
            return stack.logs[-1]

        stack.processes.append(start_function("range", "expand_range", range_port, log=log_file("range")))
        stack.processes.append(start_function(
            "proxy", "proxy", proxy_port, log=log_file("proxy"),
            env={"WORKFLOWS_API": server.url, "GOOGLE_CLOUD_PROJECT": PROJECT, "RUNS_BUCKET": RUNS_BUCKET,
                 "STORAGE_API": stack.storage.url,
                 "QUEUE_WORKFLOW": f"projects/{PROJECT}/locations/{LOCATION}/workflows/queue",
                 "QUEUE_POLL_SECONDS": QUEUE_POLL_SECONDS, **(proxy_env or {})}))
        audit_url = f"http://127.0.0.1:{ports.audit or free_port()}" if audit else None
        if jobs is not None:
            configs = [{**job, "uri": job["uri"].format(proxy=proxy_url, audit=audit_url)} for job in jobs]
            stack.scheduler = scheduler.start([scheduler.job_from_config(c) for c in configs],
                                              port=ports.scheduler, project=PROJECT, location=LOCATION,
                                              log=scheduler_log, jobs_file=jobs_file)
        if audit:
            assert stack.scheduler is not None, "the audit function audits the scheduler's jobs: give jobs"
            source = assemble_source("audit", Path(state_dir) / "functions" / "audit")
            stack.processes.append(start_function(
                "audit", "audit_pass", int(audit_url.rsplit(":", 1)[1]), log=log_file("audit"), source_dir=source,
                env={"GOOGLE_CLOUD_PROJECT": PROJECT, "LOCATION": LOCATION, "RUNS_BUCKET": RUNS_BUCKET,
                     "RANGE_URL": range_url, "PROXY_URL": proxy_url, "WORKFLOWS_API": server.url,
                     "STORAGE_API": stack.storage.url, "SCHEDULER_API": stack.scheduler.url}))
            stack.audit_url = audit_url
    except BaseException:
        stack.stop()
        raise
    return stack
