"""Every workflow under workflows/ is valid against Google's Workflows JSON Schema and loads in
localcloud, which checks it as strictly as a deploy does."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from localcloud import loader

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT.parent / "shared" / "schemas" / "workflows.schema.json"
WORKFLOWS = sorted((ROOT / "workflows").glob("*.yaml"))


def test_the_workflows_folder_holds_backfill_and_example():
    assert {"backfill.yaml", "example.yaml"} <= {path.name for path in WORKFLOWS}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_valid_against_the_workflows_schema(path):
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA} is not here (it lives beside the repository, never in it)")
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(yaml.safe_load(path.read_text()), json.loads(SCHEMA.read_text()))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_loads_in_localcloud(path):
    loader.load_file(path)
