"""Runs deploy.sh as a user would, against the fake gcloud in this folder.

A FakeCloud is one project's state (a JSON file the fake gcloud reads and writes), the log of
every gcloud call, and a checkout holding a copy of deploy.sh with stub sources, so the tests
do not depend on what the functions and the workflow contain.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAKE_BIN = Path(__file__).resolve().parent
TOOLS = Path(sys.executable).parent  # the venv's bin: python3 for the fake, shellcheck, ...

# gcloud commands that only read; every other command deploy.sh runs changes something.
READ_ONLY = [
    ["auth", "list"],
    ["config", "get-value"],
    ["services", "list"],
    ["iam", "service-accounts", "describe"],
    ["projects", "get-iam-policy"],
    ["functions", "describe"],
    ["run", "services", "get-iam-policy"],
    ["scheduler", "jobs", "describe"],
    ["scheduler", "jobs", "list"],
    ["iam", "roles", "describe"],
    ["storage", "buckets", "describe"],
    ["storage", "buckets", "get-iam-policy"],
    ["workflows", "describe"],
    ["logging", "metrics", "describe"],
    ["alpha", "monitoring", "policies", "list"],
]


def is_read_only(argv):
    return any(argv[: len(words)] == words for words in READ_ONLY)


class FakeCloud:
    def __init__(self, tmp_path, **state):
        self.dir = tmp_path
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.state_file = tmp_path / "gcloud-state.json"
        self.log_file = tmp_path / "gcloud-calls.jsonl"
        self.checkout = tmp_path / "checkout"
        self.state = {"account": "dev@example.com", "project": None, **state}
        self.make_checkout()

    def make_checkout(self):
        # The audit's SHARED list is the real one: deploy.sh copies each module it names.
        shared = (ROOT / "functions/audit/SHARED").read_text()
        modules = [f"workflows_runner/{line.strip()}" for line in shared.splitlines()
                   if line.strip() and not line.startswith("#")]
        for stub in ("functions/range/main.py", "functions/proxy/main.py", "functions/audit/main.py",
                     "workflows/backfill.yaml", "workflows/queue.yaml", *modules):
            path = self.checkout / stub
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("# stub\n")
        (self.checkout / "functions/audit/SHARED").write_text(shared)
        shutil.copy2(ROOT / "deploy.sh", self.checkout / "deploy.sh")

    @property
    def state(self):
        return json.loads(self.state_file.read_text())

    @state.setter
    def state(self, value):
        self.state_file.write_text(json.dumps(value))

    def calls(self):
        if not self.log_file.exists():
            return []
        return [json.loads(line)["argv"] for line in self.log_file.read_text().splitlines()]

    def changes(self):
        return [argv for argv in self.calls() if not is_read_only(argv)]

    def run(self, *args, path=None, cwd=None):
        """Run deploy.sh with ARGS; the call log is reset first so calls() covers this run."""
        self.log_file.unlink(missing_ok=True)
        env = {
            "PATH": path if path is not None else os.pathsep.join([str(FAKE_BIN), str(TOOLS), "/usr/bin", "/bin"]),
            "HOME": str(self.dir),
            "FAKE_GCLOUD_STATE": str(self.state_file),
            "FAKE_GCLOUD_LOG": str(self.log_file),
            "DEPLOY_RETRY_SECONDS": "0",
        }
        # A fresh deploy is about 90 gcloud calls (95 with one operator) (each check before a grant reads the policy
        # again), each a Python start: some 5 s alone, over 60 s on a 2-core machine shared by
        # several suites. A hang would still end, at the test's own timeout.
        result = subprocess.run(
            ["/bin/bash", str(self.checkout / "deploy.sh"), *args],
            cwd=cwd or self.dir, env=env, capture_output=True, text=True, timeout=180,
        )
        assert "Traceback" not in result.stderr, result.stderr
        for argv in self.calls():
            if argv[:2] == ["functions", "deploy"]:
                assert "--no-allow-unauthenticated" in argv and "--allow-unauthenticated" not in argv, argv
        return result
