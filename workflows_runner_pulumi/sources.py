"""A function folder as the zip archive Cloud Functions builds from, named by its content.

The object name carries a digest of the files, so that a changed source is a new object and
Pulumi redeploys the function; an unchanged one leaves it alone.
"""
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi

from .errors import RunnerConfigError


@dataclass(frozen=True)
class SourceArchive:
    object_name: str
    archive: pulumi.AssetArchive
    files: tuple  # relative paths, sorted


def _files(folder):
    # What gcloud would not upload either: byte code and hidden files.
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
        and not any(part.startswith(".") for part in path.relative_to(folder).parts))


def _shared(folder):
    """The workflows_runner modules a function deploys with: its SHARED file, one per line (the
    same list deploy.sh's function_source and localcloud copy; docs/alerts.md)."""
    shared = folder / "SHARED"
    if not shared.is_file():
        return {}
    package = folder.parent.parent / "workflows_runner"
    modules = [line.strip() for line in shared.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return {f"workflows_runner/{module}": package / module for module in modules}


def source_archive(folder: Path, label: str) -> SourceArchive:
    if not (folder / "main.py").is_file():
        raise RunnerConfigError("source_dir", f"a workflows-runner checkout with {folder.name}/main.py", str(folder))
    files = {path.relative_to(folder).as_posix(): path for path in _files(folder)}
    files.update(_shared(folder))
    files = dict(sorted(files.items()))
    digest = hashlib.sha256()
    for relative, path in files.items():
        digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    archive = pulumi.AssetArchive({relative: pulumi.FileAsset(str(path)) for relative, path in files.items()})
    return SourceArchive(f"{label}-{digest.hexdigest()[:16]}.zip", archive, tuple(files))
