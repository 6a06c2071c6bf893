"""`make run` installs requirements.txt alone, `make test` requirements-dev.txt on top (issue 25):
what running imports is all in requirements.txt, and none of the tests' tools are."""
from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNNING = ["localcloud", "workflows_runner", *(f"functions/{p.name}" for p in sorted((ROOT / "functions").iterdir()) if p.is_dir())]
TEST_TOOLS = {"pytest", "pulumi", "pulumi-gcp", "playwright", "hypothesis", "google-cloud-storage",
              "google-api-python-client", "trustme"}


def pinned(path: Path) -> dict[str, str]:
    """name -> version of a requirements file, following its -r includes."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found.update(pinned(path.parent / line[3:].strip()))
        elif line:
            name, _, version = line.partition("==")
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def imported(folder: Path) -> set[str]:
    """The top-level modules a folder's Python files import, outside the standard library and itself."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    local = {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if p.is_dir()}
    return {n for n in names if n not in sys.stdlib_module_names and n not in local
            and n not in ("localcloud", "workflows_runner")}


def test_running_imports_only_what_requirements_txt_installs():
    runtime = pinned(ROOT / "requirements.txt")
    distributions = metadata.packages_distributions()
    missing = {}
    for folder in RUNNING:
        for module in imported(ROOT / folder):
            names = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions.get(module, [module])}
            # A module may come with a dependency of a pinned package (werkzeug with flask...).
            provided = names & runtime.keys() or {n for n in names if _required_by(n, runtime)}
            if not provided:
                missing[f"{folder}: {module}"] = sorted(names)
    assert missing == {}


def _required_by(name: str, runtime: dict[str, str]) -> bool:
    """Whether `name` is installed as a dependency of something pinned in requirements.txt."""
    for pinned_name in runtime:
        try:
            requires = metadata.requires(pinned_name) or []
        except metadata.PackageNotFoundError:
            continue
        if any(re.sub(r"[-_.]+", "-", re.split(r"[ ;<>=!~\[(]", r, 1)[0]).lower() == name for r in requires):
            return True
    return False


def test_the_tests_tools_are_not_installed_by_make_run():
    runtime, dev = pinned(ROOT / "requirements.txt"), pinned(ROOT / "requirements-dev.txt")
    assert not TEST_TOOLS & runtime.keys()
    assert TEST_TOOLS <= dev.keys() and runtime.items() <= dev.items()   # make test can also run
    # wfr's own dependencies, pinned alike in pyproject.toml and requirements.txt.
    project = (ROOT / "pyproject.toml").read_text()
    for name, version in re.findall(r'"([a-z-]+)==([0-9.]+)"', project.split("dependencies", 1)[1].split("]", 1)[0]):
        assert runtime.get(name) == version, name
