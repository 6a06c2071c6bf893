"""localcloud's Cloud Storage, checked with Google's own client library (google-cloud-storage,
through STORAGE_EMULATOR_HOST) and against the API's discovery document.

Preconditions as Google documents them: https://cloud.google.com/storage/docs/request-preconditions
(ifGenerationMatch=0 "only if the object does not exist"; a failed precondition is 412).
Batch requests as https://cloud.google.com/storage/docs/batch describes them: multipart/mixed,
one application/http part per call, answered in order, a part's Content-ID echoed as
<response-ID>, no more than 100 calls a batch.
"""
from __future__ import annotations

import base64
import email.parser
import hashlib
import json
import threading
from pathlib import Path

import pytest
import requests

from localcloud import storage

gcs = pytest.importorskip("google.cloud.storage")
exceptions = pytest.importorskip("google.api_core.exceptions")

DISCOVERY = Path(__file__).resolve().parents[3] / "shared" / "google-apis" / "storage.v1.json"
BUCKET = "ledger-test"


@pytest.fixture
def server(tmp_path):
    running = storage.start(tmp_path)
    yield running
    running.stop()


@pytest.fixture
def client(server, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
    return gcs.Client(project="local-project")


@pytest.fixture
def bucket(client):
    return client.create_bucket(BUCKET)


def test_a_bucket_exists_once_it_is_created_through_the_api(client):
    with pytest.raises(exceptions.NotFound):
        client.get_bucket(BUCKET)
    client.create_bucket(BUCKET)
    assert client.get_bucket(BUCKET).name == BUCKET
    with pytest.raises(exceptions.Conflict):
        client.create_bucket(BUCKET)


def test_insert_with_if_generation_match_zero_succeeds_only_while_absent(bucket):
    blob = bucket.blob("runs/p/l/w/2024-01-01T00:00:00.000000Z/d/000001")
    blob.metadata = {"state": "CLAIMED"}
    blob.upload_from_string(b'{"attempt":1}', content_type="application/json", if_generation_match=0)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob(blob.name).upload_from_string(b"second", if_generation_match=0)
    stored = bucket.get_blob(blob.name)
    assert (stored.generation, stored.metageneration, stored.metadata) == (blob.generation, 1, {"state": "CLAIMED"})
    assert stored.download_as_bytes() == b'{"attempt":1}'  # the client checks crc32c and md5 too
    assert stored.content_type == "application/json"


def test_checksums_are_crc32c_and_md5_of_the_content(bucket):
    # CRC-32C (CRC-32/ISCSI) of "123456789" is 0xE3069283, the check value of the CRC catalogue.
    bucket.blob("check").upload_from_string(b"123456789")
    stored = bucket.get_blob("check")
    assert stored.crc32c == base64.b64encode((0xE3069283).to_bytes(4, "big")).decode()
    assert stored.md5_hash == base64.b64encode(hashlib.md5(b"123456789").digest()).decode()


def test_a_rewrite_needs_the_current_generation(bucket):
    blob = bucket.blob("claim")
    blob.upload_from_string(b"first", if_generation_match=0)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("claim").upload_from_string(b"stale", if_generation_match=blob.generation + 1)
    taken = bucket.blob("claim")
    taken.upload_from_string(b"taken over", if_generation_match=blob.generation)
    assert taken.generation > blob.generation and taken.metageneration == 1
    with pytest.raises(exceptions.PreconditionFailed):  # the same generation cannot win twice
        bucket.blob("claim").upload_from_string(b"again", if_generation_match=blob.generation)
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("absent").upload_from_string(b"x", if_generation_match=taken.generation)
    bucket.blob("claim").upload_from_string(b"any but", if_generation_not_match=blob.generation)


def test_patch_merges_metadata_under_if_metageneration_match(bucket):
    blob = bucket.blob("attempt")
    blob.metadata = {"state": "CLAIMED", "claim": "abc"}
    blob.upload_from_string(b"{}")
    blob.metadata = {"state": "ACTIVE", "execution": "projects/p/x"}
    blob.patch(if_metageneration_match=1)
    assert blob.metageneration == 2
    assert blob.metadata == {"state": "ACTIVE", "claim": "abc", "execution": "projects/p/x"}
    stale = bucket.blob("attempt")
    stale.metadata = {"state": "FAILED"}
    with pytest.raises(exceptions.PreconditionFailed):
        stale.patch(if_metageneration_match=1)
    with pytest.raises(exceptions.PreconditionFailed):
        stale.patch(if_metageneration_not_match=2)
    assert bucket.get_blob("attempt").metadata["state"] == "ACTIVE"
    blob.metadata = {"claim": None}  # a null value removes the key
    blob.patch()
    assert "claim" not in bucket.get_blob("attempt").metadata


def test_update_replaces_the_writable_fields(bucket):
    blob = bucket.blob("replaced")
    blob.metadata = {"a": "1", "b": "2"}
    blob.upload_from_string(b"x", content_type="text/plain")
    blob.metadata = {"c": "3"}
    blob.update(if_metageneration_match=1)
    stored = bucket.get_blob("replaced")
    assert (stored.metadata, stored.metageneration) == ({"c": "3"}, 2)


def test_delete_honours_preconditions_and_missing_objects_are_404(bucket):
    blob = bucket.blob("gone")
    blob.upload_from_string(b"x")
    with pytest.raises(exceptions.PreconditionFailed):
        bucket.blob("gone").delete(if_generation_match=blob.generation + 1)
    bucket.blob("gone").delete(if_generation_match=blob.generation)
    assert bucket.get_blob("gone") is None
    with pytest.raises(exceptions.NotFound):
        bucket.blob("gone").delete()
    with pytest.raises(exceptions.NotFound):
        bucket.blob("gone").download_as_bytes()


def test_ranged_listing_by_prefix_offsets_and_pages(client, bucket):
    names = [f"runs/p/l/w/2024-01-0{day}T00:00:00.000000Z/d/00000{n}" for day in range(1, 6) for n in (1, 2)]
    for name in reversed(names):
        bucket.blob(name).upload_from_string(b"{}")
    bucket.blob("runs/p/l/other/x").upload_from_string(b"{}")
    everything = [b.name for b in client.list_blobs(BUCKET, prefix="runs/p/l/w/", page_size=3)]
    assert everything == sorted(names)
    window = [b.name for b in client.list_blobs(BUCKET, prefix="runs/p/l/w/",
                                                start_offset="runs/p/l/w/2024-01-02",
                                                end_offset="runs/p/l/w/2024-01-04")]
    assert window == sorted(names)[2:6]
    pages = client.list_blobs(BUCKET, prefix="runs/p/l/w/", max_results=4, page_size=2).pages
    assert [[b.name for b in page] for page in pages] == [sorted(names)[0:2], sorted(names)[2:4]]
    assert list(client.list_blobs(BUCKET, prefix="nothing/")) == []


@pytest.mark.parametrize("delimiter", ["/", "::"])
@pytest.mark.parametrize("page_size", [1, 2, 5, 1000])
def test_a_delimiter_lists_each_directory_once_across_pages(client, bucket, delimiter, page_size):
    """As objects.list's discovery document defines it, checked by brute force over every name:
    names holding the delimiter past the prefix come back once each, cut after it, in prefixes;
    includeTrailingDelimiter also lists a name that ends in its one delimiter; a page holds at
    most maxResults items and prefixes together."""
    names = [name.replace("/", delimiter) for name in (
        "a", "b/", "b/1", "b/2", "c/x/1", "c/x/2", "c/y", "c/z/", "d", "e/", "f0/z", "f1/z", "f1/zz", "g")]
    for name in names:
        bucket.blob(name).upload_from_string(b"1")
    for prefix in ("", "c" + delimiter):
        rests = {name: name[len(prefix):] for name in names if name.startswith(prefix)}
        groups = sorted({prefix + rest[:rest.index(delimiter) + len(delimiter)]
                         for rest in rests.values() if delimiter in rest})
        for trailing in (False, True):
            expected = sorted(name for name, rest in rests.items() if delimiter not in rest or (
                trailing and rest.count(delimiter) == 1 and rest.endswith(delimiter)))
            listing = client.list_blobs(BUCKET, prefix=prefix, delimiter=delimiter, page_size=page_size,
                                        include_trailing_delimiter=trailing)
            items, prefixes = [], []
            for page in listing.pages:
                page_items = [blob.name for blob in page]
                assert len(page_items) + len(page.prefixes) <= page_size + trailing  # a trailing name counts twice
                items += page_items
                prefixes += sorted(page.prefixes)
            assert items == expected and sorted(prefixes) == groups and len(prefixes) == len(groups)


def test_media_upload_and_the_download_path(server, bucket):
    answer = requests.post(f"{server.url}/upload/storage/v1/b/{BUCKET}/o",
                           params={"uploadType": "media", "name": "a/b c", "ifGenerationMatch": "0"},
                           data=b"media bytes", headers={"Content-Type": "text/plain"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["name"], answer.json()["size"], answer.json()["contentType"]) == ("a/b c", "11", "text/plain")
    again = requests.post(f"{server.url}/upload/storage/v1/b/{BUCKET}/o",
                          params={"uploadType": "media", "name": "a/b c", "ifGenerationMatch": "0"},
                          data=b"second", timeout=10)
    assert again.status_code == 412
    assert again.json()["error"]["errors"][0]["reason"] == "conditionNotMet"
    assert bucket.blob("a/b c").download_as_bytes() == b"media bytes"


def test_concurrent_claims_of_one_name_have_exactly_one_winner(client, bucket):
    for trial in range(5):
        name, winners, barrier = f"race/{trial}", [], threading.Barrier(10)

        def claim(worker: int) -> None:
            barrier.wait()
            try:
                bucket.blob(name).upload_from_string(str(worker).encode(), if_generation_match=0)
                winners.append(worker)
            except exceptions.PreconditionFailed:
                pass

        threads = [threading.Thread(target=claim, args=(worker,)) for worker in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(winners) == 1
        assert bucket.blob(name).download_as_bytes() == str(winners[0]).encode()


def test_state_survives_a_restart(tmp_path, monkeypatch):
    first = storage.start(tmp_path)
    storage.create_bucket(first.url, BUCKET, "p")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", first.url)
    written = gcs.Client(project="p").bucket(BUCKET).blob("kept")
    written.upload_from_string(b"x")
    first.stop()
    second = storage.start(tmp_path)
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", second.url)
        kept = gcs.Client(project="p").bucket(BUCKET).get_blob("kept")
        assert kept.generation == written.generation
        again = gcs.Client(project="p").bucket(BUCKET).blob("kept")
        again.upload_from_string(b"y")
        assert again.generation > written.generation
    finally:
        second.stop()


@pytest.mark.parametrize("params", [{"ifGenerationMatch": "x"}, {"maxResults": "0"}, {"unknown": "1"},
                                    {"pageToken": "%%%"}])
def test_bad_parameters_are_400_in_googles_shape(server, bucket, params):
    answer = requests.get(f"{server.url}/storage/v1/b/{BUCKET}/o", params=params, timeout=10)
    assert answer.status_code == 400
    assert set(answer.json()["error"]) >= {"code", "message", "errors"}


@pytest.mark.skipif(not DISCOVERY.exists(), reason="../shared/google-apis is absent")
def test_resources_and_parameters_use_the_discovery_documents_names(server, bucket):
    discovery = json.loads(DISCOVERY.read_text())
    blob = bucket.blob("named")
    blob.metadata = {"k": "v"}
    blob.upload_from_string(b"x")
    resource = requests.get(f"{server.url}/storage/v1/b/{BUCKET}/o/named", timeout=10).json()
    assert set(resource) <= set(discovery["schemas"]["Object"]["properties"])
    for field in ("name", "bucket", "generation", "metageneration", "size", "timeCreated", "updated", "metadata"):
        assert field in resource
    assert all(isinstance(resource[f], str) for f in ("generation", "metageneration", "size"))  # int64 as string
    listing = requests.get(f"{server.url}/storage/v1/b/{BUCKET}/o", timeout=10).json()
    assert set(listing) <= set(discovery["schemas"]["Objects"]["properties"])
    bucket_resource = requests.get(f"{server.url}/storage/v1/b/{BUCKET}", timeout=10).json()
    assert set(bucket_resource) <= set(discovery["schemas"]["Bucket"]["properties"])
    methods = discovery["resources"]["objects"]["methods"]
    for method, served in (("list", storage.LIST_PARAMETERS), ("insert", storage.INSERT_PARAMETERS)):
        assert served <= set(methods[method]["parameters"])
    assert storage.CONDITIONS <= set(methods["patch"]["parameters"])
    batch = requests.post(f"{server.url}/{discovery['batchPath']}", timeout=10, data=(
        "--XYZ\r\nContent-Type: application/http\r\n\r\nGET /storage/v1/b/ledger-test/o/named HTTP/1.1\r\n--XYZ--\r\n"),
        headers={"Content-Type": "multipart/mixed; boundary=XYZ"})
    assert batch.status_code == 200 and b"HTTP/1.1 200 OK" in batch.content


# Partial responses (the `fields` parameter; its syntax is tested in test_field_mask.py).
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


def test_a_selection_nested_past_the_limit_is_a_400_not_a_500(server, bucket):
    answer = requests.get(f"{server.url}/storage/v1/b/{BUCKET}/o", timeout=10,
                          params={"fields": "items(" * 5000 + "name" + ")" * 5000})
    assert answer.status_code == 400 and "deeper than" in answer.json()["error"]["message"]


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


def _objects(bucket, count: int) -> list:
    blobs = []
    for number in range(count):
        blob = bucket.blob(f"runs/p/l/w/2024-01-01T00:{number // 60:02d}:{number % 60:02d}.000000Z/d/000001")
        blob.metadata = {"state": "ACTIVE"}
        blob.upload_from_string(b"{}", if_generation_match=0)
        blobs.append(blob)
    return blobs


def test_a_batch_of_patches_applies_each_and_a_failed_precondition_fails_only_its_own(server, client, bucket):
    blobs = _objects(bucket, 4)
    calls = []
    server.after_write = lambda method, resource: calls.append((method, resource["name"]))
    with pytest.raises(exceptions.PreconditionFailed):   # raised once every call was answered
        with client.batch():
            for number, blob in enumerate(blobs):
                blob.metadata = {"state": "SUCCEEDED", "endTime": f"2024-01-01T01:00:0{number}Z"}
                blob.patch(if_metageneration_match=2 if number == 2 else 1)
    stored = [bucket.get_blob(blob.name) for blob in blobs]
    assert [(s.metadata, s.metageneration) for s in stored] == [
        ({"state": "SUCCEEDED", "endTime": f"2024-01-01T01:00:0{n}Z"}, 2) if n != 2 else ({"state": "ACTIVE"}, 1)
        for n in range(4)]
    assert calls == [("PATCH", blobs[n].name) for n in (0, 1, 3)]   # each call its own write, in order
    again = bucket.get_blob(blobs[2].name)
    with client.batch():   # without a failure nothing is raised
        again.metadata = {"state": "FAILED"}
        again.patch(if_metageneration_match=1)
        bucket.blob(blobs[3].name).delete()
    assert bucket.get_blob(blobs[2].name).metadata == {"state": "FAILED"}
    assert bucket.get_blob(blobs[3].name) is None


def _batch_request(server, parts: list[tuple[str | None, str]], content_type: str | None = None) -> requests.Response:
    """A batch request as Google's page shows one: CRLF lines, path-only URLs, optional Content-IDs."""
    body = "".join(f"--XYZ\r\nContent-Type: application/http\r\n" + (f"Content-ID: {cid}\r\n" if cid else "")
                   + f"\r\n{request}\r\n" for cid, request in parts) + "--XYZ--\r\n"
    return requests.post(f"{server.url}/batch/storage/v1", data=body.encode(), timeout=30,
                         headers={"Content-Type": content_type or "multipart/mixed; boundary=XYZ"})


def _parts(answer: requests.Response) -> list[tuple[str | None, int, dict | None]]:
    """(Content-ID, status, JSON body) per part, read with the standard library's MIME parser."""
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("multipart/mixed; boundary=")
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {answer.headers['Content-Type']}\r\n\r\n".encode() + answer.content)
    parts = []
    for part in message.get_payload():
        assert part.get_content_type() == "application/http"
        status_line, _, rest = part.get_payload(decode=True).partition(b"\r\n")
        inner = email.parser.BytesParser().parsebytes(rest)
        payload = inner.get_payload(decode=True)
        parts.append((part["Content-ID"], int(status_line.split()[1]), json.loads(payload) if payload else None))
    return parts


def test_batch_answers_come_in_order_with_their_content_ids_and_each_calls_own_status(server, bucket):
    blobs = _objects(bucket, 2)
    path = f"/storage/v1/b/{BUCKET}/o"
    patch = '{"metadata": {"state": "SUCCEEDED"}}'
    server.faults.append(storage.Fault(503, "GET", "o/absent"))
    answer = _batch_request(server, [
        ("<b29c+1>", f"PATCH {path}/{requests.utils.quote(blobs[0].name, safe='')}?ifMetagenerationMatch=1 HTTP/1.1\r\n"
                     f"Content-Type: application/json\r\n\r\n{patch}"),
        ("<b29c+2>", f"PATCH {path}/{requests.utils.quote(blobs[1].name, safe='')}?ifMetagenerationMatch=7 HTTP/1.1\r\n"
                     f"Content-Type: application/json\r\n\r\n{patch}"),
        (None, f"GET {path}/absent HTTP/1.1"),
        (None, f"GET {path}/absent HTTP/1.1"),
        ("<b29c+5>", f"DELETE {path}/{requests.utils.quote(blobs[1].name, safe='')} HTTP/1.1"),
        ("<b29c+6>", f"POST /upload{path}?uploadType=media&name=x HTTP/1.1\r\n\r\nbytes"),
    ])
    parts = _parts(answer)
    assert [(cid, code) for cid, code, _ in parts] == [
        ("<response-b29c+1>", 200), ("<response-b29c+2>", 412), (None, 503), (None, 404), ("<response-b29c+5>", 204),
        ("<response-b29c+6>", 400)]
    assert parts[0][2]["metadata"] == {"state": "SUCCEEDED"} and parts[0][2]["metageneration"] == "2"
    assert [parts[n][2]["error"]["code"] for n in (1, 2, 3, 5)] == [412, 503, 404, 400]   # the JSON API's shape
    assert bucket.get_blob(blobs[0].name).metadata == {"state": "SUCCEEDED"}
    assert bucket.get_blob(blobs[1].name) is None
    assert bucket.get_blob("x") is None   # uploads are not batched


def test_a_batch_of_more_than_100_calls_is_refused_whole(client, bucket):
    blobs = _objects(bucket, 101)
    with pytest.raises(exceptions.BadRequest) as refused:
        with client.batch():
            for blob in blobs:
                blob.metadata = {"state": "SUCCEEDED"}
                blob.patch(if_metageneration_match=1)
    assert "at most 100 calls" in refused.value.message
    assert all(bucket.get_blob(blob.name).metageneration == 1 for blob in blobs)   # none applied
    with client.batch():   # 100 is the limit, not past it
        for blob in blobs[:100]:
            fresh = bucket.blob(blob.name)   # the refused batch left its blobs' properties unresolved
            fresh.metadata = {"state": "SUCCEEDED"}
            fresh.patch(if_metageneration_match=1)
    assert [bucket.get_blob(blob.name).metadata["state"] for blob in blobs] == ["SUCCEEDED"] * 100 + ["ACTIVE"]


@pytest.mark.parametrize("content_type, body", [
    ("application/json", b"{}"),
    ("multipart/mixed; boundary=XYZ", b"no parts here"),
    ("multipart/mixed; boundary=XYZ",
     b"--XYZ\r\nContent-Type: text/plain\r\n\r\nGET /storage/v1/b HTTP/1.1\r\n--XYZ--"),
    ("multipart/mixed; boundary=XYZ", b"--XYZ\r\nContent-Type: application/http\r\n\r\nnot a request line\r\n--XYZ--"),
])
def test_a_malformed_batch_is_400_in_googles_shape(server, content_type, body):
    answer = requests.post(f"{server.url}/batch/storage/v1", data=body, headers={"Content-Type": content_type},
                           timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == 400 and answer.json()["error"]["message"]
