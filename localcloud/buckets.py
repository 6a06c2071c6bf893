"""Cloud Storage buckets and objects in one SQLite file, free of HTTP (storage.py serves them).

Every write checks its preconditions and writes under one lock, so two conditional writes of the
same object cannot both pass: that atomicity is what the run ledger relies on. Objects keep only
their live generation (no versioning). Resources use the JSON API's field names
(../shared/google-apis/storage.v1.json, schemas Bucket and Object): int64 fields such as
`generation` and `size` are strings there.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import google_crc32c

Resource = dict[str, Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (name TEXT PRIMARY KEY, resource TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    name TEXT NOT NULL,
    resource TEXT NOT NULL,   -- the Object resource as JSON
    data BLOB NOT NULL,
    PRIMARY KEY (bucket, name)
);
"""
# https://cloud.google.com/storage/docs/buckets#naming (the dotted, 222-character form aside)
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]")
MAX_NAME_BYTES = 1024  # https://cloud.google.com/storage/docs/objects#naming
PRECONDITION_MESSAGE = "At least one of the pre-conditions you specified did not hold."
# Writable Object fields an update (PUT) replaces and a patch merges.
WRITABLE = ("metadata", "contentType", "cacheControl", "contentDisposition", "contentEncoding",
            "contentLanguage", "customTime")


class StorageError(Exception):
    """A refusal in the JSON API's error shape, which adds `errors[].reason` to Google's."""

    def __init__(self, code: int, message: str, status: str, reason: str):
        super().__init__(message)
        self.code, self.message, self.status, self.reason = code, message, status, reason

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status,
                          "errors": [{"message": self.message, "domain": "global", "reason": self.reason}]}}


def invalid(message: str) -> StorageError:
    return StorageError(400, message, "INVALID_ARGUMENT", "invalid")


def _precondition_failed() -> StorageError:
    return StorageError(412, PRECONDITION_MESSAGE, "FAILED_PRECONDITION", "conditionNotMet")


def no_bucket() -> StorageError:
    return StorageError(404, "The specified bucket does not exist.", "NOT_FOUND", "notFound")


def no_object(bucket: str, name: str) -> StorageError:
    return StorageError(404, f"No such object: {bucket}/{name}", "NOT_FOUND", "notFound")


@dataclass(frozen=True)
class Preconditions:
    """The JSON API's ifGeneration*/ifMetageneration* parameters, as strings or None.
    https://cloud.google.com/storage/docs/request-preconditions"""
    if_generation_match: str | None = None
    if_generation_not_match: str | None = None
    if_metageneration_match: str | None = None
    if_metageneration_not_match: str | None = None
    generation: str | None = None  # the `generation` parameter: this generation, else 404

    @classmethod
    def from_params(cls, params: dict[str, str]) -> "Preconditions":
        values = {}
        for field, key in (("generation", "generation"), ("if_generation_match", "ifGenerationMatch"),
                           ("if_generation_not_match", "ifGenerationNotMatch"),
                           ("if_metageneration_match", "ifMetagenerationMatch"),
                           ("if_metageneration_not_match", "ifMetagenerationNotMatch")):
            if key in params:
                if not re.fullmatch(r"[0-9]{1,19}", params[key]):
                    raise invalid(f"Invalid argument for {key}: {params[key]!r} is not an int64")
                values[field] = str(int(params[key]))
        return cls(**values)

    def hold(self, current: Resource | None) -> bool:
        """Whether the preconditions hold for the object as it is (None: no live object).
        Generation 0 stands for "no live object": ifGenerationMatch=0 passes only when there is
        none, ifGenerationNotMatch=0 only when there is one."""
        generation = current["generation"] if current else "0"
        if self.if_generation_match is not None and generation != self.if_generation_match:
            return False
        if self.if_generation_not_match is not None and generation == self.if_generation_not_match:
            return False
        if self.if_metageneration_match is not None and (
                current is None or current["metageneration"] != self.if_metageneration_match):
            return False
        if self.if_metageneration_not_match is not None and (
                current is not None and current["metageneration"] == self.if_metageneration_not_match):
            return False
        return True


class Buckets:
    def __init__(self, state_dir: str | Path, base_url: str = ""):
        path = Path(state_dir) / "storage.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.base_url = base_url
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        # A commit survives the process (what a test that kills servers needs); only a power cut
        # may lose the last ones. Syncing every write cost ~6 ms of each ledger write.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._last_generation = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- buckets ------------------------------------------------------------------------------
    def insert_bucket(self, project: str, body: Resource) -> Resource:
        name = body.get("name")
        if not isinstance(name, str) or not BUCKET_NAME.fullmatch(name) or ".." in name:
            raise invalid(f"Invalid bucket name: {name!r}")
        now = _now()
        resource = {"kind": "storage#bucket", "id": name, "name": name, "selfLink": f"{self.base_url}/storage/v1/b/{name}",
                    "projectNumber": "0", "metageneration": "1", "location": str(body.get("location") or "US").upper(),
                    "storageClass": body.get("storageClass") or "STANDARD", "locationType": "region",
                    "timeCreated": now, "updated": now, "etag": "CAE=", "iamConfiguration": body.get("iamConfiguration") or {
                        "uniformBucketLevelAccess": {"enabled": True}, "publicAccessPrevention": "enforced"}}
        with self._lock:
            try:
                self._db.execute("INSERT INTO buckets (name, resource) VALUES (?, ?)", (name, json.dumps(resource)))
            except sqlite3.IntegrityError:
                raise StorageError(409, "Your previous request to create the named bucket succeeded and you "
                                        "already own it.", "ALREADY_EXISTS", "conflict") from None
        return resource

    def get_bucket(self, name: str) -> Resource:
        with self._lock:
            row = self._db.execute("SELECT resource FROM buckets WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise no_bucket()
        return json.loads(row[0])

    # --- objects ------------------------------------------------------------------------------
    def insert(self, bucket: str, name: str, data: bytes, fields: Resource, conditions: Preconditions) -> Resource:
        _check_name(name)
        now = _now()
        with self._lock:
            self._require_bucket(bucket)
            current = self._current(bucket, name)
            if not conditions.hold(current):
                raise _precondition_failed()
            generation = self._next_generation()
            resource = {
                "kind": "storage#object", "id": f"{bucket}/{name}/{generation}", "name": name, "bucket": bucket,
                "selfLink": f"{self.base_url}/storage/v1/b/{bucket}/o/{quote(name, safe='')}",
                "mediaLink": f"{self.base_url}/download/storage/v1/b/{bucket}/o/{quote(name, safe='')}"
                             f"?generation={generation}&alt=media",
                "generation": generation, "metageneration": "1",
                "contentType": fields.get("contentType") or "application/octet-stream",
                "storageClass": "STANDARD", "size": str(len(data)),
                "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode(),
                "crc32c": base64.b64encode(google_crc32c.Checksum(data).digest()).decode(),
                "etag": _etag(generation, "1"), "timeCreated": now, "updated": now,
                "timeStorageClassUpdated": now, "timeFinalized": now}
            for key in WRITABLE:
                if fields.get(key) is not None:
                    resource[key] = _strings(fields[key]) if key == "metadata" else fields[key]
            self._db.execute("INSERT OR REPLACE INTO objects (bucket, name, resource, data) VALUES (?, ?, ?, ?)",
                             (bucket, name, json.dumps(resource), data))
        return resource

    def get(self, bucket: str, name: str, conditions: Preconditions) -> tuple[Resource, bytes]:
        with self._lock:
            self._require_bucket(bucket)
            row = self._db.execute("SELECT resource, data FROM objects WHERE bucket = ? AND name = ?",
                                   (bucket, name)).fetchone()
        resource = json.loads(row[0]) if row else None
        _check_existing(bucket, name, resource, conditions)
        return resource, row[1]

    def change(self, bucket: str, name: str, body: Resource, conditions: Preconditions, merge: bool) -> Resource:
        """patch (merge=True: fields given are merged, metadata key by key, null removes) or
        update (merge=False: the writable fields are replaced). metageneration + 1."""
        with self._lock:
            self._require_bucket(bucket)
            current = self._current(bucket, name)
            _check_existing(bucket, name, current, conditions)
            resource = dict(current)
            for key in WRITABLE:
                if merge and key not in body:
                    continue
                value = body.get(key)
                if key == "metadata" and merge and isinstance(value, dict):
                    merged = {**(current.get("metadata") or {}), **value}
                    value = {k: v for k, v in merged.items() if v is not None} or None
                if value is None:
                    resource.pop(key, None)
                else:
                    resource[key] = _strings(value) if key == "metadata" else value
            if "contentType" not in resource:
                resource["contentType"] = "application/octet-stream"
            metageneration = str(int(current["metageneration"]) + 1)
            resource.update(metageneration=metageneration, updated=_now(),
                            etag=_etag(current["generation"], metageneration))
            self._db.execute("UPDATE objects SET resource = ? WHERE bucket = ? AND name = ?",
                             (json.dumps(resource), bucket, name))
        return resource

    def delete(self, bucket: str, name: str, conditions: Preconditions) -> None:
        with self._lock:
            self._require_bucket(bucket)
            current = self._current(bucket, name)
            _check_existing(bucket, name, current, conditions)
            self._db.execute("DELETE FROM objects WHERE bucket = ? AND name = ?", (bucket, name))

    def list(self, bucket: str, prefix: str = "", start: str = "", end: str | None = None,
             after: str | None = None, limit: int = 1000) -> tuple[list[Resource], str | None]:
        """Objects in name order with `prefix`, start <= name < end, name > after; at most
        `limit`, and the last name returned when more follow."""
        # The upper bound keeps the index scan inside the prefix (U+10FFFF sorts after every
        # other character in SQLite's byte order), instead of running to the end of the bucket.
        query = ("SELECT resource FROM objects WHERE bucket = ? AND name >= ? AND name < ? "
                 "AND substr(name, 1, ?) = ?")
        args: list[Any] = [bucket, max(start, prefix), prefix + "\U0010ffff", len(prefix), prefix]
        if end is not None:
            query, args = query + " AND name < ?", args + [end]
        if after is not None:
            query, args = query + " AND name > ?", args + [after]
        with self._lock:
            self._require_bucket(bucket)
            rows = self._db.execute(query + " ORDER BY name LIMIT ?", args + [limit + 1]).fetchall()
        items = [json.loads(row[0]) for row in rows[:limit]]
        return items, (items[-1]["name"] if len(rows) > limit else None)

    # --- under the lock -----------------------------------------------------------------------
    def _require_bucket(self, bucket: str) -> None:
        if self._db.execute("SELECT 1 FROM buckets WHERE name = ?", (bucket,)).fetchone() is None:
            raise no_bucket()

    def _current(self, bucket: str, name: str) -> Resource | None:
        row = self._db.execute("SELECT resource FROM objects WHERE bucket = ? AND name = ?", (bucket, name)).fetchone()
        return json.loads(row[0]) if row else None

    def _next_generation(self) -> str:
        # Google's generations are microsecond timestamps; strictly increasing here, even across restarts.
        self._last_generation = max(time.time_ns() // 1000, self._last_generation + 1)
        return str(self._last_generation)


def _check_existing(bucket: str, name: str, current: Resource | None, conditions: Preconditions) -> None:
    """For methods on an existing object: 404 when it (or the generation asked for) is not
    live, then 412 when a precondition fails."""
    if current is None or conditions.generation not in (None, current["generation"]):
        raise no_object(bucket, name)
    if not conditions.hold(current):
        raise _precondition_failed()


def _check_name(name: str) -> None:
    encoded = name.encode("utf-8", "surrogatepass")
    if not name or len(encoded) > MAX_NAME_BYTES or "\r" in name or "\n" in name or name in (".", ".."):
        raise invalid(f"Invalid object name: {name[:100]!r}")


def _strings(metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, dict):
        raise invalid("metadata must be an object of string values")
    return {str(key): value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}


def _etag(generation: str, metageneration: str) -> str:
    return base64.b64encode(f"{generation}/{metageneration}".encode()).decode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
