"""Every shell command of README.md and docs/*.md, run as a reader would paste it.

Each document runs in order, in a scratch copy of the checkout (its .venv linked), as one terminal
session: variables and the working folder carry from block to block. A `serves` block keeps
running in the background until its document ends, then gets Ctrl-C (SIGINT to its process
group, as a terminal sends it) and must stop cleanly. `not-local` blocks are checked, not run
(tests/doc_blocks.py). gcloud is the real CLI, configured only by what the documents source
(STATE/gcloud.sh of the local stack), in a throwaway CLOUDSDK_CONFIG, with its HTTP(S) proxy a
closed loopback port so that nothing can reach Google. `wfr` is on PATH as a user who installed
it has it; a bare `python` is the system's, so a command that needs the venv must say
`.venv/bin/python`. The one substitution: `make test` inside this test only collects the suite
(PYTEST_ADDOPTS=--collect-only), or the suite would run itself.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.doc_blocks import COMMAND_WORDS, MARKS, Block, blocks, documents
from tests.serving import ROOT

DOCS = documents(ROOT)
BLOCKS = [block for doc in DOCS for block in blocks(doc)]
COMMANDS = [block for block in BLOCKS if block.command]
RUNNABLE_DOCS = sorted({block.path for block in COMMANDS if "not-local" not in block.marks})
# The line each serving command prints once it serves (localcloud up, serve, the demo, wfr ui).
READY = re.compile(r"^(localcloud is up|\{\"api\"|Try it \(|wfr ui serves|http://127\.0\.0\.1:\d+/)")
SERVE_TIMEOUT = 120


def test_every_command_block_is_run_or_marked_not_local():
    assert len(COMMANDS) >= 10
    problems = []
    for block in COMMANDS:
        reasons = block.google_reasons()
        if block.marks - MARKS:
            problems.append(f"{block.where}: unknown mark {sorted(block.marks - MARKS)} (known: {sorted(MARKS)})")
        elif "not-local" in block.marks and not reasons:
            problems.append(f"{block.where}: marked not-local, but nothing in it needs Google: let the test run it")
        elif "not-local" not in block.marks and reasons:
            problems.append(f"{block.where}: needs Google ({'; '.join(reasons)}): mark it ```sh not-local")
    assert not problems, "\n".join(problems)


def test_not_local_blocks_are_valid_bash():
    for block in COMMANDS:
        if "not-local" in block.marks:
            done = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, (block.where, done.stderr)


def test_commands_are_in_labelled_blocks():
    """A command in a block without a shell language would escape this test."""
    for block in BLOCKS:
        if not block.command and block.language in ("", "text", "txt"):
            pasted = [line for line in block.text.splitlines() if COMMAND_WORDS.match(line)]
            assert not pasted, f"{block.where}: commands in a block that is not ```sh: {pasted}"


def test_commands_use_the_venv_python_or_wfr():
    """`python -m localcloud` fails outside the venv (No module named 'cronsim'): say .venv/bin/python."""
    bare = re.compile(r"(?<![/\w.-])python3? -m (?!venv\b)")
    found = [f"{block.where}: {line}" for block in COMMANDS for line in block.text.splitlines()
             if bare.search(re.sub(r"#.*", "", line))]
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            found += [f"{doc.name}:{number}: {code}" for code in re.findall(r"`([^`]+)`", line) if bare.search(code)]
    assert not found, "use .venv/bin/python or wfr:\n" + "\n".join(found)


def cksum(data: bytes) -> int:
    """POSIX cksum, as the Makefile names the venv's stamp."""
    return int(subprocess.run(["cksum"], input=data, capture_output=True, check=True).stdout.split()[0])


# -- running them ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of the checkout's files (tracked and new, not ignored), its .venv linked."""
    requirements = b"".join((ROOT / name).read_bytes() for name in
                            ["requirements-dev.txt", *sorted(str(path.relative_to(ROOT)) for path in
                                                             ROOT.glob("functions/*/requirements.txt"))])
    stamp = ROOT / ".venv" / f".installed-{cksum(requirements)}"
    # `make run` in the copy would reinstall into the shared .venv, with no network.
    assert stamp.exists(), f"{stamp.name} is missing: the venv is older than the requirements, run `make test`"
    repo = tmp_path_factory.mktemp("docs") / "workflows-runner"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    (repo / ".venv").symlink_to(ROOT / ".venv")
    # The stamp names the requirements it installed; a copy's newer file times (a rebase rewrites
    # pyproject.toml) would make `make` reinstall from the copy, pointing the shared .venv's `wfr`
    # script into a folder gone after the test. The copy's prerequisites date from the stamp.
    installed = stamp.stat().st_mtime - 1
    for name in ("requirements-dev.txt", "pyproject.toml", *(str(path.relative_to(ROOT)) for path in
                                                              ROOT.glob("functions/*/requirements.txt"))):
        os.utime(repo / name, (installed, installed))
    home = repo.parent
    shims = home / "bin"
    shims.mkdir()
    if (ROOT / ".venv" / "bin" / "wfr").exists():
        (shims / "wfr").symlink_to(ROOT / ".venv" / "bin" / "wfr")
    venv_bin = str(ROOT / ".venv" / "bin")
    path = [str(shims)] + [part for part in os.environ.get("PATH", "").split(os.pathsep) if part != venv_bin]
    env = {key: value for key, value in os.environ.items()
           if key.lower() not in ("http_proxy", "https_proxy", "no_proxy", "virtual_env")
           and not key.startswith(("CLOUDSDK_", "PYTEST_", "GOOGLE_"))}
    env.update(PATH=os.pathsep.join(path), CLOUDSDK_CONFIG=str(home / "gcloud"),
               CLOUDSDK_CORE_DISABLE_PROMPTS="1", HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9",
               NO_PROXY="127.0.0.1,localhost", PYTEST_ADDOPTS="--collect-only -q -p no:cacheprovider")
    return repo, env


class Session:
    """One terminal: blocks run in order, exported variables and the working folder carried over."""

    def __init__(self, repo: Path, env: dict[str, str], scratch: Path):
        self.repo, self.env, self.scratch = repo, env, scratch
        self.saved, self.cwd = scratch / "env.sh", scratch / "cwd"
        self.saved.write_text("")
        self.cwd.write_text(str(repo))
        self.servers: list[tuple[Block, subprocess.Popen, list[str]]] = []

    def script(self, block: Block, save: bool) -> str:
        # set -a: a plain `NAME=value` reaches later blocks too, as it would in one terminal.
        return "\n".join([f'cd "$(cat {self.cwd})"', "set -a", f". {self.saved}", "set -eo pipefail",
                          block.text,
                          *([f"export -p > {self.saved}.next && mv {self.saved}.next {self.saved}",
                             f"pwd > {self.cwd}"] if save else [])])

    def run(self, block: Block) -> None:
        process = subprocess.Popen(["bash", "-c", self.script(block, save=True)], env=self.env, text=True,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)
        try:
            out, err = process.communicate(timeout=SERVE_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGINT)       # what a reader would do; it must stop on that
            out, err = process.communicate(timeout=60)
            pytest.fail(f"{block.where} still running after {SERVE_TIMEOUT} s (mark it serves?):\n{block.text}\n{out[-3000:]}")
        assert process.returncode == 0, f"{block.where} exited {process.returncode}:\n{block.text}\n" \
                                        f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"

    def serve(self, block: Block) -> None:
        process = subprocess.Popen(["bash", "-c", self.script(block, save=False)], env=self.env, text=True,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        lines: list[str] = []
        ready = threading.Event()

        def read():
            for line in process.stdout:
                lines.append(line)
                if READY.match(line):
                    ready.set()
            ready.set()             # ended: the check below tells which
        threading.Thread(target=read, daemon=True).start()
        self.servers.append((block, process, lines))
        assert ready.wait(SERVE_TIMEOUT) and process.poll() is None, \
            f"{block.where} did not start serving:\n{block.text}\n{''.join(lines)[-3000:]}"

    def stop(self) -> list[str]:
        """Ctrl-C, newest first; each must end on its own, without a traceback or a failed step."""
        problems = []
        for block, process, lines in reversed(self.servers):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                problems.append(f"{block.where}: still running 60 s after Ctrl-C")
            time.sleep(0.1)
            output = "".join(lines)
            if "Traceback" in output or "FAILED:" in output:
                problems.append(f"{block.where}:\n{output[-3000:]}")
        self.servers.clear()
        return problems


@pytest.mark.timeout(600)
@pytest.mark.parametrize("doc", RUNNABLE_DOCS, ids=[str(doc.relative_to(ROOT)) for doc in RUNNABLE_DOCS])
def test_document_commands_run_as_written(doc, checkout, tmp_path):
    repo, env = checkout
    session = Session(repo, env, tmp_path)
    try:
        for block in blocks(doc):
            if block.command and "not-local" not in block.marks:
                (session.serve if "serves" in block.marks else session.run)(block)
    finally:
        problems = session.stop()
    assert not problems, "\n".join(problems)
