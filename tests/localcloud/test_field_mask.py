"""Partial responses: every localcloud API honours Google's `fields` system parameter.

The discovery documents list it on every API ("Selector specifying which fields to include in a
partial response"); its syntax is Google's (https://cloud.google.com/storage/docs/json_api#partial-response):
`a,b`, `a/b`, `a(b,c)` (applied to each element of an array) and `*`.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from localcloud import api, field_mask, storage

gcs = pytest.importorskip("google.cloud.storage")
exceptions = pytest.importorskip("google.api_core.exceptions")

APIS = Path(__file__).resolve().parents[3] / "shared" / "google-apis"
BUCKET = "partial-test"
LISTING = {"kind": "storage#objects", "nextPageToken": "t",
           "items": [{"name": "a", "size": "1", "metadata": {"state": "ACTIVE", "execution": "e"}},
                     {"name": "b", "size": "2"}]}


@pytest.mark.parametrize("fields, expected", [
    ("kind", {"kind": "storage#objects"}),
    ("kind,nextPageToken", {"kind": "storage#objects", "nextPageToken": "t"}),
    (" kind , nextPageToken ", {"kind": "storage#objects", "nextPageToken": "t"}),
    ("items/name", {"items": [{"name": "a"}, {"name": "b"}]}),
    ("items(name,size),nextPageToken", {"items": [{"name": "a", "size": "1"}, {"name": "b", "size": "2"}],
                                        "nextPageToken": "t"}),
    ("items/metadata/state", {"items": [{"metadata": {"state": "ACTIVE"}}, {}]}),
    ("items(metadata(execution))", {"items": [{"metadata": {"execution": "e"}}, {}]}),
    ("items/name,items", {"items": LISTING["items"]}),  # the whole field wins over a part of it
    ("*", LISTING),
    ("items/*", {"items": LISTING["items"]}),
    ("missing,kind", {"kind": "storage#objects"}),
])
def test_a_selection_keeps_only_the_fields_it_names(fields, expected):
    assert field_mask.apply(LISTING, field_mask.parse(fields)) == expected


@pytest.mark.parametrize("fields", ["items(", "items)", "a//b", ",a", "a,", "()", "a(b))", "a/(b)"])
def test_a_malformed_selection_does_not_parse(fields):
    with pytest.raises(ValueError, match="Invalid field selection"):
        field_mask.parse(fields)


@pytest.mark.skipif(not APIS.exists(), reason="../shared/google-apis is absent")
@pytest.mark.parametrize("document", ["storage.v1.json", "workflowexecutions.v1.json", "cloudscheduler.v1.json"])
def test_every_api_served_lists_fields_as_a_system_parameter(document):
    parameters = json.loads((APIS / document).read_text())["parameters"]
    assert "partial response" in parameters["fields"]["description"]


@pytest.fixture
def server(tmp_path):
    running = storage.start(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def bucket(server, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    return gcs.Client(project="local-project").create_bucket(BUCKET)


def test_googles_client_gets_the_fields_it_asks_for_in_a_listing(bucket):
    blob = bucket.blob("runs/x")
    blob.metadata = {"state": "ACTIVE"}
    blob.upload_from_string(b"{}")
    full = next(iter(bucket.client.list_blobs(BUCKET)))
    partial = next(iter(bucket.client.list_blobs(BUCKET, fields="items(name,metadata),nextPageToken")))
    assert full.size == 2 and full.generation is not None
    assert (partial.name, partial.metadata) == ("runs/x", {"state": "ACTIVE"})
    assert partial.size is None and partial.generation is None


def test_a_write_answers_only_the_fields_asked_for(server, bucket):
    answer = requests.post(f"{server.url}/upload/storage/v1/b/{BUCKET}/o", data=b"{}", timeout=10,
                           params={"uploadType": "media", "name": "o", "fields": "name,generation"})
    assert answer.status_code == 200 and set(answer.json()) == {"name", "generation"}
    # Errors are never cut down: a refused write still says why, in Google's shape.
    again = requests.post(f"{server.url}/upload/storage/v1/b/{BUCKET}/o", data=b"{}", timeout=10, params={
        "uploadType": "media", "name": "o", "ifGenerationMatch": "0", "fields": "name"})
    assert again.status_code == 412 and set(again.json()["error"]) >= {"code", "message"}


def test_a_malformed_selection_is_refused_before_the_write(server, bucket):
    answer = requests.post(f"{server.url}/upload/storage/v1/b/{BUCKET}/o", data=b"{}", timeout=10,
                           params={"uploadType": "media", "name": "never", "fields": "items("})
    assert answer.status_code == 400 and "Invalid field selection" in answer.json()["error"]["message"]
    assert bucket.get_blob("never") is None


def test_each_call_of_a_batch_gets_its_own_fields(server, bucket):
    bucket.blob("named").upload_from_string(b"x")
    parts = "".join(f"--XYZ\r\nContent-Type: application/http\r\nContent-ID: <{n}>\r\n\r\n"
                    f"GET /storage/v1/b/{BUCKET}/o/named{query} HTTP/1.1\r\n\r\n"
                    for n, query in enumerate(["?fields=name", "?fields=size,metageneration", ""]))
    answer = requests.post(f"{server.url}/batch/storage/v1", data=parts + "--XYZ--\r\n", timeout=10,
                           headers={"Content-Type": "multipart/mixed; boundary=XYZ"})
    bodies = [json.loads(chunk[chunk.index("{"):chunk.rindex("}") + 1])
              for chunk in answer.text.split("--batch_")[1:-1]]
    assert [set(body) for body in bodies[:2]] == [{"name"}, {"size", "metageneration"}]
    assert {"name", "size", "generation", "bucket"} <= set(bodies[2])


def test_the_executions_api_answers_partial_responses_too(tmp_path):
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "hello.yaml").write_text("main:\n  steps:\n    - done:\n        return: 1\n")
    running = api.start(workflows, tmp_path / "state", log=lambda entry: None)
    try:
        url = f"{running.url}/v1/projects/{api.PROJECT}/locations/{api.LOCATION}/workflows/hello/executions"
        headers = {"Authorization": "Bearer localcloud"}
        created = requests.post(url, json={}, params={"fields": "name,state"}, headers=headers, timeout=10)
        assert created.status_code == 200 and set(created.json()) == {"name", "state"}
        listed = requests.get(url, params={"fields": "executions/name"}, headers=headers, timeout=10).json()
        assert listed == {"executions": [{"name": created.json()["name"]}]}
    finally:
        running.stop()
