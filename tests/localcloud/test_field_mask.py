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

from localcloud import api, field_mask

APIS = Path(__file__).resolve().parents[3] / "shared" / "google-apis"
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


@pytest.mark.parametrize("fields", ["a(" * 5000 + "b" + ")" * 5000, "a/" * 5000 + "b",
                                    "a/" * 3000 + "b," + "a/" * 3000 + "c"])
def test_a_selection_too_deep_is_refused_not_recursed_into(fields):
    with pytest.raises(ValueError, match=f"deeper than {field_mask.MAX_DEPTH}"):
        field_mask.parse(fields)


def test_a_selection_at_the_depth_limit_still_applies():
    deep = "/".join(["a"] * field_mask.MAX_DEPTH)
    value = current = {}
    for _ in range(field_mask.MAX_DEPTH - 1):
        current["a"], current["b"] = {}, 1
        current = current["a"]
    current["a"] = "leaf"
    kept = field_mask.apply(value, field_mask.parse(deep))
    for _ in range(field_mask.MAX_DEPTH - 1):
        assert set(kept) == {"a"}
        kept = kept["a"]
    assert kept == {"a": "leaf"}


@pytest.mark.skipif(not APIS.exists(), reason="../shared/google-apis is absent")
@pytest.mark.parametrize("document", ["storage.v1.json", "workflowexecutions.v1.json", "cloudscheduler.v1.json"])
def test_every_api_served_lists_fields_as_a_system_parameter(document):
    parameters = json.loads((APIS / document).read_text())["parameters"]
    assert "partial response" in parameters["fields"]["description"]


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
