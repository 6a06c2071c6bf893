"""The audit function deploys with the workflows_runner modules functions/audit/SHARED lists,
copied beside it at deploy time. Checked here: the list is closed (no listed module imports an
unlisted one of the package), the assembled function imports its own copy (not the checkout's),
and every assembler builds the same files: localcloud's (what the tests run), deploy.sh's and
the Pulumi component's (what is deployed)."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from localcloud.stack import ROOT, assemble_source

SHARED = ROOT / "functions" / "audit" / "SHARED"


def listed() -> list[str]:
    return [line.strip() for line in SHARED.read_text().splitlines() if line.strip() and not line.startswith("#")]


def package_imports(path: Path) -> set[str]:
    """The workflows_runner modules a module imports (relative imports, or by the package name)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0] + ".py")
            elif node.level == 1:
                found |= {alias.name + ".py" for alias in node.names}
            elif node.module and node.module.startswith("workflows_runner."):
                found.add(node.module.split(".")[1] + ".py")
            elif node.module == "workflows_runner":
                found |= {alias.name + ".py" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] + ".py" for alias in node.names
                      if alias.name.startswith("workflows_runner.")}
    return found


def tree(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file() and "__pycache__" not in path.parts}


def test_the_shared_list_is_closed_under_imports():
    modules = set(listed())
    assert "__init__.py" in modules
    needed = set().union(*(package_imports(ROOT / "workflows_runner" / m) for m in modules),
                         package_imports(ROOT / "functions" / "audit" / "main.py"))
    assert needed <= modules, f"imported but not in SHARED: {sorted(needed - modules)}"


def test_the_assembled_function_imports_its_own_copy(tmp_path):
    """functions-framework appends the source folder to sys.path and loads main.py by path; the
    copy beside main.py is found before the checkout's editable install (a meta path finder
    that comes after sys.path's)."""
    source = assemble_source("audit", tmp_path / "audit")
    probe = ("import sys, importlib.util; sys.path.append(sys.argv[1]); "
             "spec = importlib.util.spec_from_file_location('main', sys.argv[1] + '/main.py'); "
             "main = importlib.util.module_from_spec(spec); spec.loader.exec_module(main); "
             "print('\\n'.join(sorted(m.__file__ for n, m in sys.modules.items() if n.startswith('workflows_runner'))))")
    done = subprocess.run([sys.executable, "-c", probe, str(source)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    files = done.stdout.split()
    assert files and all(f.startswith(str(source)) for f in files), files


def test_localcloud_assembles_the_folder_and_the_listed_modules(tmp_path):
    assembled = tree(assemble_source("audit", tmp_path / "audit"))
    expected = {**tree(ROOT / "functions" / "audit"),
                **{f"workflows_runner/{m}": (ROOT / "workflows_runner" / m).read_bytes() for m in listed()}}
    assert assembled == expected


def test_deploy_sh_and_the_pulumi_component_deploy_what_the_tests_ran(tmp_path):
    """localcloud runs the audit from assemble_source's folder (tests/test_audit_e2e.py); deploy.sh
    uploads .build/functions/audit and the Pulumi component zips source_archive's files: the same
    files, byte for byte."""
    from tests.fake_gcloud.harness import FakeCloud
    from workflows_runner_pulumi.sources import source_archive

    ran = tree(assemble_source("audit", tmp_path / "ran"))
    cloud = FakeCloud(tmp_path / "deploy", account="")
    for part in ("functions/audit", "workflows_runner"):
        shutil.rmtree(cloud.checkout / part)
        shutil.copytree(ROOT / part, cloud.checkout / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    result = cloud.run("--project", "demo-proj", "--region", "europe-west1", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "--source=.build/functions/audit" in result.stdout
    assert tree(cloud.checkout / ".build/functions/audit") == ran
    archive = source_archive(ROOT / "functions/audit", "audit")
    assert {name: Path(asset.path).read_bytes() for name, asset in archive.archive.assets.items()} == ran
