"""The few Cloud Storage JSON API v1 calls the run ledger makes, over workflows_api's connection
pool and retry rules. https://cloud.google.com/storage/docs/json_api/v1/objects

Conditional writes are the point: a write whose precondition fails raises PreconditionFailed
(HTTP 412, https://cloud.google.com/storage/docs/request-preconditions), which callers treat as
"someone else wrote first", never as an error to answer.
"""
from __future__ import annotations

import email.utils
import json
import os
from datetime import datetime
from typing import NamedTuple
from urllib.parse import quote

from workflows_api import ApiError, send, upstream_error

GOOGLE_API = "https://storage.googleapis.com"
API = "Cloud Storage API"
# Only the fields the ledger reads: listings stay small (the `fields` system parameter).
OBJECT_FIELDS = "name,generation,metageneration,timeCreated,updated,metadata"


class PreconditionFailed(Exception):
    """412: the object's generation or metageneration was not the one the write required.
    `server_time`: Cloud Storage's clock when it refused (server_time())."""

    def __init__(self, message: str, server_time: datetime | None = None):
        super().__init__(message)
        self.server_time = server_time


class Dated(NamedTuple):
    """An answer with Cloud Storage's clock when it was given (server_time())."""
    value: object
    server_time: datetime | None


def server_time(date: str | None) -> datetime | None:
    """The Date header of an answer (RFC 9110, whole seconds, so up to 1 s behind the server's
    clock when it answered), as an aware datetime; None when missing or unreadable. The run
    ledger judges leases on this clock, which every instance reads alike, not on its own."""
    try:
        return email.utils.parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        return None


def base_url() -> str:
    return (os.environ.get("STORAGE_API") or GOOGLE_API).rstrip("/")


def _object_path(bucket: str, name: str) -> str:
    # The object name is one path segment: every "/" in it is encoded.
    return f"/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"


def _answer(response, ok_missing: bool = False) -> dict | None:
    if response.status == 412:
        raise PreconditionFailed(response.data[:200].decode('utf-8', 'replace'), server_time(response.date))
    if response.status == 404 and ok_missing:
        return None
    if response.status >= 400:
        raise upstream_error(response, API)
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ApiError(502, f"the {API} answered HTTP {response.status} without a JSON object")
    return answer


def list_objects(bucket: str, prefix: str, deadline: float, start_offset: str = "",
                 end_offset: str = "") -> list[dict]:
    """Every object under `prefix`, in name order (all pages); with offsets, only the names
    start_offset <= name < end_offset (a ranged listing: objects.list's startOffset/endOffset)."""
    return list_objects_dated(bucket, prefix, deadline, start_offset, end_offset).value


def list_objects_dated(bucket: str, prefix: str, deadline: float, start_offset: str = "",
                       end_offset: str = "") -> Dated:
    """list_objects, with Cloud Storage's clock at its last page."""
    items, token = [], None
    while True:
        params = {"prefix": prefix, "fields": f"items({OBJECT_FIELDS}),nextPageToken"}
        if start_offset:
            params["startOffset"] = start_offset
        if end_offset:
            params["endOffset"] = end_offset
        if token:
            params["pageToken"] = token
        response = send("GET", f"{base_url()}/storage/v1/b/{quote(bucket, safe='')}/o", deadline, API,
                        params=params)
        page = _answer(response)
        items += page.get("items") or []
        token = page.get("nextPageToken")
        if not token:
            return Dated(items, server_time(response.date))


def get_object(bucket: str, name: str, deadline: float) -> dict | None:
    """The object's resource, None when it does not exist."""
    return get_object_dated(bucket, name, deadline).value


def get_object_dated(bucket: str, name: str, deadline: float) -> Dated:
    """get_object, with Cloud Storage's clock when it answered."""
    response = send("GET", base_url() + _object_path(bucket, name), deadline, API, params={"fields": OBJECT_FIELDS})
    return Dated(_answer(response, ok_missing=True), server_time(response.date))


def insert_object(bucket: str, name: str, content: bytes, metadata: dict[str, str], deadline: float,
                  if_generation_match: str, if_metageneration_match: str | None = None) -> dict:
    """Write the object (content and custom metadata in one multipart upload) only if its
    generation is `if_generation_match` ("0": only if it does not exist) and, when given, its
    metageneration `if_metageneration_match`."""
    conditions = {"ifGenerationMatch": if_generation_match}
    if if_metageneration_match is not None:
        conditions["ifMetagenerationMatch"] = if_metageneration_match
    boundary = "ledger-part-boundary-7f3a9c"
    resource = json.dumps({"name": name, "contentType": "application/json", "metadata": metadata})
    body = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{resource}\r\n"
            f"--{boundary}\r\nContent-Type: application/json\r\n\r\n").encode() + content + \
        f"\r\n--{boundary}--\r\n".encode()
    return _answer(send("POST", f"{base_url()}/upload/storage/v1/b/{quote(bucket, safe='')}/o", deadline, API,
                        params={"uploadType": "multipart", **conditions, "fields": OBJECT_FIELDS},
                        body=body, headers={"Content-Type": f"multipart/related; boundary={boundary}"}))


def patch_metadata(bucket: str, name: str, metadata: dict[str, str], deadline: float,
                   generation: str, metageneration: str) -> dict:
    """Merge `metadata` into the object's custom metadata, only if it is still that generation
    and metageneration. Both: a takeover rewrites the object and restarts metageneration at 1,
    so metageneration alone could match a different claim."""
    return _answer(send("PATCH", base_url() + _object_path(bucket, name), deadline, API,
                        params={"ifGenerationMatch": generation, "ifMetagenerationMatch": metageneration,
                                "fields": OBJECT_FIELDS},
                        body=json.dumps({"metadata": metadata}).encode(),
                        headers={"Content-Type": "application/json; charset=utf-8"}))


def delete_object(bucket: str, name: str, deadline: float, generation: str, metageneration: str) -> None:
    """Delete the object only if it is still that generation and metageneration; gone already is fine."""
    response = send("DELETE", base_url() + _object_path(bucket, name), deadline, API,
                    params={"ifGenerationMatch": generation, "ifMetagenerationMatch": metageneration})
    if response.status == 412:
        raise PreconditionFailed(response.data[:200].decode('utf-8', 'replace'), server_time(response.date))
    if response.status >= 400 and response.status != 404:
        raise upstream_error(response, API)
