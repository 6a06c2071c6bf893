"""Worker memory while refused bodies are sent, and what a 16 MB request line costs, for both
functions under functions-framework (issue 10).

Run: .venv/bin/python bench/bench_limits.py  (prints figures; asserts nothing about time)
Before request_limits.py a refused 200 MB body grew a worker from about 40 to about 240 MB (the
framework's after-request hook read it whole), and a 16 MB request line cost 30 s of CPU.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.serving import serve_function  # noqa: E402

TARGETS = {"range": ("expand_range", b"/"),
           "proxy": ("proxy", b"/v1/projects/my-project/locations/europe-west1/workflows/w/executions")}
BODY = 200 * 1024 * 1024


def worker(port: int) -> int:
    """The pid of the gunicorn worker: the process holding a connection to `port`."""
    with socket.create_connection(("127.0.0.1", port)) as probe:
        probe.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        probe.recv(100)
        local = probe.getsockname()[1]
        inodes = {line.split()[9] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                  if int(line.split()[2].split(":")[1], 16) == local}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if any(os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]"
                       for fd in os.listdir(f"/proc/{pid}/fd") for inode in inodes):
                    return int(pid)
            except OSError:
                continue
    raise RuntimeError("no worker found")


def rss_mb(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024


def peak_mb(pid: int) -> float:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmHWM"].split()[0]) / 1024


def cpu_s(pid: int) -> float:
    utime, stime = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


def send_all(port: int, data: bytes, chunk: bytes, count: int) -> tuple[int, str]:
    """Send `data`, then `chunk` `count` times unless the server answers first; (bytes sent, status)."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        answer: list[bytes] = []
        reader = threading.Thread(target=lambda: answer.append(_recv(sock)))
        reader.start()
        sent = 0
        try:
            sock.sendall(data)
            for _ in range(count):
                if answer:
                    break
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        reader.join(60)
        status = answer[0].split(b"\r\n", 1)[0].decode() if answer and answer[0] else "(closed)"
        return sent, status


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(4096)
    except OSError:
        return b""


def main() -> None:
    print(f"{'function':<9}{'case':<28}{'answer':<30}{'sent MB':>9}{'RSS before':>12}{'after':>8}"
          f"{'peak':>8}{'CPU s':>8}")
    for name, (target, path) in TARGETS.items():
        with serve_function(name, target, env={"ALLOWED_WORKFLOWS": "*/*/*", "WORKFLOWS_API": "http://127.0.0.1:9"}) as url:
            port = urlsplit(url).port
            pid = worker(port)
            chunk = b"x" * (1024 * 1024)
            cases = [
                ("200 MB body, Content-Length", b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % BODY),
                ("200 MB body, chunked", b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ]
            for case, start in cases:
                before, cpu = rss_mb(pid), cpu_s(pid)
                body = b"%x\r\n%s\r\n" % (len(chunk), chunk) if "chunked" in case else chunk
                sent, status = send_all(port, start, body, BODY // len(chunk))
                time.sleep(0.5)
                print(f"{name:<9}{case:<28}{status[:29]:<30}{sent / 2**20:>9.1f}{before:>12.1f}{rss_mb(pid):>8.1f}"
                      f"{peak_mb(pid):>8.1f}{cpu_s(pid) - cpu:>8.2f}")
            before, cpu = rss_mb(pid), cpu_s(pid)
            line = b"GET /" + b"a" * (16 * 1024 * 1024)
            sent, status = send_all(port, b"", line, 1)
            time.sleep(0.5)
            print(f"{name:<9}{'16 MB request line':<28}{status[:29]:<30}{len(line) / 2**20:>9.1f}{before:>12.1f}"
                  f"{rss_mb(pid):>8.1f}{peak_mb(pid):>8.1f}{cpu_s(pid) - cpu:>8.2f}")


if __name__ == "__main__":
    main()
