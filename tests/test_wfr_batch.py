"""wfr's batched metadata patches (Cloud.patch_metadata, the ledger's write-backs) against
localcloud's Cloud Storage over real HTTP: 100 patches a batch request
(https://cloud.google.com/storage/docs/batch), a 412 in a part means another writer's newer
metageneration won, transient parts are retried, other errors raise."""
from __future__ import annotations

import json
import threading
from urllib.parse import quote

import pytest
import requests

from localcloud import storage
from workflows_runner.cloud import Cloud, MetadataPatch
from workflows_runner.errors import ApiError
from workflows_runner.target import Target

BUCKET = "runs-test"


@pytest.fixture
def server(tmp_path):
    running = storage.start(tmp_path)
    storage.create_bucket(running.url, BUCKET, "p")
    yield running
    running.stop()


def _cloud(server) -> Cloud:
    return Cloud(Target(project="p", location="l", prefix="", api_root="", storage_root=server.url,
                        scheduler_root="", bucket=BUCKET, backfill_workflow="backfill", local_token="localcloud"))


def _put(server, names: list[str]) -> None:
    """Objects as the proxy claims them: metadata and content in one multipart upload."""
    with requests.Session() as session:
        for name in names:
            resource = json.dumps({"name": name, "metadata": {"state": "ACTIVE"}})
            body = (f"--B\r\nContent-Type: application/json\r\n\r\n{resource}\r\n"
                    "--B\r\nContent-Type: application/json\r\n\r\n{}\r\n--B--\r\n")
            session.post(f"{server.url}/upload/storage/v1/b/{BUCKET}/o", data=body.encode(), timeout=30,
                         params={"uploadType": "multipart", "ifGenerationMatch": "0"},
                         headers={"Content-Type": "multipart/related; boundary=B"}).raise_for_status()


def _object(server, name: str) -> dict:
    return requests.get(f"{server.url}/storage/v1/b/{BUCKET}/o/{quote(name, safe='')}", timeout=30).json()


def _other_writer_patch(server, name: str, state: str) -> int:
    return requests.patch(f"{server.url}/storage/v1/b/{BUCKET}/o/{quote(name, safe='')}",
                          params={"ifMetagenerationMatch": "1"}, json={"metadata": {"state": state}},
                          timeout=30).status_code


def test_patches_go_100_to_a_request_and_a_newer_metageneration_is_not_overwritten(server):
    names = [f"runs/p/l/w/{n:04d}/d/000001" for n in range(250)]
    _put(server, names)
    newer = {names[0], names[99], names[100], names[249]}
    assert {_other_writer_patch(server, name, "FAILED") for name in newer} == {200}
    cloud = _cloud(server)
    written = cloud.patch_metadata([MetadataPatch(name, {"state": "SUCCEEDED", "endTime": "2024-01-01T00:00:00Z"}, "1")
                                    for name in names])
    assert written == [name not in newer for name in names]
    assert cloud.http.calls["storage"] == 3      # 250 patches: 100 + 100 + 50
    for name in names:
        resource = _object(server, name)
        if name in newer:
            assert (resource["metadata"], resource["metageneration"]) == ({"state": "FAILED"}, "2")
        else:
            assert (resource["metadata"], resource["metageneration"]) == (
                {"state": "SUCCEEDED", "endTime": "2024-01-01T00:00:00Z"}, "2")
    assert cloud.patch_metadata([]) == [] and cloud.http.calls["storage"] == 3


def test_racing_a_concurrent_writer_exactly_one_write_lands_and_wfr_knows_which(server):
    for trial in range(3):
        names = [f"runs/p/l/w/{trial}/{n:04d}/d/000001" for n in range(150)]
        _put(server, names)
        barrier, theirs = threading.Barrier(2), {}

        def other_writer() -> None:
            barrier.wait()
            with requests.Session() as session:
                for name in reversed(names):
                    theirs[name] = session.patch(f"{server.url}/storage/v1/b/{BUCKET}/o/{quote(name, safe='')}",
                                                 params={"ifMetagenerationMatch": "1"},
                                                 json={"metadata": {"state": "CANCELLED"}}, timeout=30).status_code

        thread = threading.Thread(target=other_writer)
        thread.start()
        barrier.wait()
        written = _cloud(server).patch_metadata([MetadataPatch(name, {"state": "SUCCEEDED"}, "1") for name in names])
        thread.join()
        for name, ours in zip(names, written):
            resource = _object(server, name)
            assert resource["metageneration"] == "2"                       # one write, never two
            assert resource["metadata"]["state"] == ("SUCCEEDED" if ours else "CANCELLED")
            assert theirs[name] == (412 if ours else 200)


def test_a_transient_part_is_retried_and_other_part_errors_raise(server):
    names = [f"runs/p/l/w/{n:04d}/d/000001" for n in range(3)]
    _put(server, names)
    server.faults.append(storage.Fault(503, "PATCH", quote(names[1], safe="")))
    cloud = _cloud(server)
    assert cloud.patch_metadata([MetadataPatch(name, {"state": "FAILED"}, "1") for name in names]) == [True] * 3
    assert cloud.http.calls["storage"] == 2       # the batch, then the 503 call again alone
    assert _object(server, names[1])["metadata"] == {"state": "FAILED"}
    with pytest.raises(ApiError) as missing:      # as a single PATCH of a missing object would
        cloud.patch_metadata([MetadataPatch(names[0], {"state": "FAILED"}, "2"),
                              MetadataPatch("runs/p/l/w/absent", {"state": "FAILED"}, "1")])
    assert missing.value.code == 404 and "runs%2Fp%2Fl%2Fw%2Fabsent" in str(missing.value)
    assert _object(server, names[0])["metageneration"] == "3"   # the batch's other call still landed
