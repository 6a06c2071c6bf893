"""The Execution resource against Google's own description of it: the workflowexecutions v1
discovery document (../shared/google-apis/workflowexecutions.v1.json, schemas.Execution), read
here at test time, so that a field or enum value Google adds shows up as a failure.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from localcloud import api

DISCOVERY = Path(__file__).resolve().parents[3] / "shared" / "google-apis" / "workflowexecutions.v1.json"
pytestmark = pytest.mark.skipif(not DISCOVERY.exists(), reason=f"{DISCOVERY} is absent")
PARENT = "projects/local-project/locations/us-central1/workflows/hello"


@pytest.fixture(scope="module")
def execution_schema():
    return json.loads(DISCOVERY.read_text())["schemas"]["Execution"]["properties"]


@pytest.fixture
def create(tmp_path):
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "hello.yaml").write_text("- done:\n    return: 1\n")
    server = api.start(tmp_path / "wf", tmp_path / "state", log=lambda entry: None)
    session = requests.Session()
    session.headers["Authorization"] = "Bearer t"

    def post(body):
        response = session.post(f"{server.url}/v1/{PARENT}/executions", json=body, timeout=10)
        return response.status_code, response.json()
    yield post
    server.stop()


def example(field: str, schema: dict):
    """A value a client could send for `field`: each type in the document, the last enum value."""
    if "enum" in schema:
        return schema["enum"][-1]
    return {"string": "{}" if field == "argument" else "2024-01-01T00:00:00Z", "boolean": True,
            "object": {"k": "v"}}.get(schema.get("type"), {})


def test_every_field_of_the_execution_resource_is_accepted(create, execution_schema):
    body = {field: example(field, schema) for field, schema in execution_schema.items()}
    code, created = create(body)
    assert code == 200, created
    # What a caller sets is kept; output-only fields are Google's to fill, so what was sent is ignored.
    for field, schema in execution_schema.items():
        if schema.get("readOnly"):
            assert created.get(field) != body[field], field
        else:
            assert created[field] == body[field], field


def test_the_caller_set_fields_are_those_the_document_does_not_mark_output_only(execution_schema):
    settable = {field for field, schema in execution_schema.items() if not schema.get("readOnly")}
    assert settable == api.EXECUTION_INPUT_FIELDS
    assert set(execution_schema) == api.EXECUTION_FIELDS


def test_enum_values_are_the_documents(create, execution_schema):
    enums = {field: schema["enum"] for field, schema in execution_schema.items()
             if "enum" in schema and not schema.get("readOnly")}
    assert {field: list(values) for field, values in api.EXECUTION_ENUMS.items()} == enums
    for field, values in enums.items():
        for value in values[1:]:
            code, created = create({field: value})
            assert code == 200 and created[field] == value
        # The *_UNSPECIFIED default is accepted, and left out as proto3 JSON leaves defaults out.
        code, created = create({field: values[0]})
        assert code == 200 and field not in created
        code, refused = create({field: values[-1].lower()})
        assert code == 400 and refused["error"]["status"] == "INVALID_ARGUMENT", field


def test_labels_levels_and_buffering_are_kept_and_read_back(create):
    body = {"labels": {"team": "data"}, "callLogLevel": "LOG_ALL_CALLS",
            "executionHistoryLevel": "EXECUTION_HISTORY_DETAILED",
            "disableConcurrencyQuotaOverflowBuffering": True}
    code, created = create(body)
    assert code == 200
    assert {field: created[field] for field in body} == body


@pytest.mark.parametrize("body", [
    {"executionHistoryLevel": "EVERYTHING"},
    {"disableConcurrencyQuotaOverflowBuffering": "yes"},
    {"executionHistoryLevels": "EXECUTION_HISTORY_BASIC"},
    {"stepEntries": []},
])
def test_unknown_fields_and_values_outside_the_document_are_refused(create, body):
    code, refused = create(body)
    assert code == 400 and refused["error"]["status"] == "INVALID_ARGUMENT"
    field = next(iter(body))
    assert field in refused["error"]["message"] or api.snake_case(field) in refused["error"]["message"]
