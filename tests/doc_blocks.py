"""The shell commands of README.md and docs/*.md: fenced blocks, their marks, and what needs Google.

A command block is a fenced block whose info string starts with `sh` (or `bash`, `shell`,
`console`). Words after the language are marks, which GitHub ignores when it renders:

    ```sh               run as written, against the local stack where it needs one
    ```sh serves        starts something that keeps serving (a stack, the demo, the UI): it runs in
                        the background while the rest of its document runs, then gets Ctrl-C
    ```sh not-local     needs a real Google project: not run, only checked (below)

A `not-local` block must hold a command that needs Google (NEEDS_GOOGLE), and a block without the
mark must hold none, so the mark can neither hide a command that would run locally nor be missing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SHELLS = {"sh", "bash", "shell", "console"}
MARKS = {"serves", "not-local"}
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$", re.ASCII)
# The first word of a line that, in an unlabelled block, is a command someone will paste.
COMMAND_WORDS = re.compile(r"^\s*(\$ )?(wfr|make|gcloud|curl|\./deploy\.sh|\.venv/bin/\S+|python3?|pulumi|pip)\b",
                           re.ASCII)

# What localcloud does not serve, so a command that does it needs a real Google project. localcloud
# serves Workflow Executions, Cloud Scheduler and Cloud Storage for project local-project in
# us-central1 (docs/localcloud.md); gcloud is pointed at it by STATE/gcloud.sh.
NEEDS_GOOGLE = {
    "a gcloud group localcloud does not serve (IAM, functions, Cloud Build, projects, auth, ...)":
        re.compile(r"\bgcloud\s+(functions|iam|projects|builds|services|auth|run|logging)\b"),
    "a gcloud storage command beyond reading objects (localcloud serves the JSON API the ledger uses)":
        re.compile(r"\bgcloud\s+storage\s+(?!(ls|cat)\b|objects\s+(describe|list)\b|buckets\s+describe\b)"),
    "gcloud or wfr on a project other than local-project":
        re.compile(r"\b(gcloud|wfr)\b[^\n]*--project[= ](?!local-project\b)\S"),
    "gcloud or wfr in a region other than us-central1":
        re.compile(r"\b(gcloud|wfr)\b[^\n]*(--location|--region)[= ](?!us-central1\b)\S"),
    "deploy.sh changing a project (only --dry-run and --help only read)":
        re.compile(r"\./deploy\.sh\b(?!.*--(dry-run|help))"),
    "pulumi, which deploys to Google": re.compile(r"\bpulumi\s+(up|preview|destroy|login|stack)\b"),
}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int            # 1-based line of the opening fence
    language: str
    marks: frozenset[str]
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def command(self) -> bool:
        return self.language in SHELLS

    def google_reasons(self) -> list[str]:
        """Why this block cannot run on the local stack (empty when it can)."""
        text = re.sub(r"(?m)^\s*#.*$", "", self.text).replace("\\\n", " ")   # comments out, lines joined
        return [why for why, pattern in NEEDS_GOOGLE.items() if pattern.search(text)]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, in order."""
    found, lines = [], path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, words = opening["fence"], opening["info"].split()
        body, end = [], index + 1
        while end < len(lines) and not re.match(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[end]):
            body.append(lines[end])
            end += 1
        found.append(Block(path, index + 1, words[0] if words else "", frozenset(words[1:]), "\n".join(body) + "\n"))
        index = end + 1
    return found


def documents(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]
