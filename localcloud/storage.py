"""The Cloud Storage JSON API v1 subset the run ledger uses, on loopback.

    POST   /storage/v1/b?project=P                          buckets.insert
    GET    /storage/v1/b/B                                  buckets.get
    POST   /upload/storage/v1/b/B/o?uploadType=media|multipart   objects.insert
    GET    /storage/v1/b/B/o                                objects.list (prefix, startOffset, endOffset,
                                                            maxResults, pageToken)
    GET    /storage/v1/b/B/o/O[?alt=media]                  objects.get (also /download/storage/v1/...)
    PATCH  /storage/v1/b/B/o/O                              objects.patch
    PUT    /storage/v1/b/B/o/O                              objects.update
    DELETE /storage/v1/b/B/o/O                              objects.delete

Writes honour ifGenerationMatch, ifGenerationNotMatch, ifMetagenerationMatch and
ifMetagenerationNotMatch with 412 (buckets.py). Unlike the Executions API no token is required:
Google's client libraries send none to an emulator (STORAGE_EMULATOR_HOST).

Fault hooks for tests: `server.faults` answers the next matching requests with a given code
before serving them; `server.after_write` is called after each committed object write, before the
answer goes out (a test may kill the writer there). Both are empty unless a test sets them.
"""
from __future__ import annotations

import base64
import json
import re
import threading
import traceback
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from .buckets import Buckets, Preconditions, StorageError, invalid
from .google_http import ApiError, GoogleJSONHandler, loads_json, query_params, unknown_url

_BUCKETS = re.compile(r"/storage/v1/b")
_BUCKET = re.compile(r"/storage/v1/b/([^/]+)")
_OBJECTS = re.compile(r"/(upload/)?storage/v1/b/([^/]+)/o")
_OBJECT = re.compile(r"/(download/)?storage/v1/b/([^/]+)/o/([^/]+)")
CONDITIONS = {"ifGenerationMatch", "ifGenerationNotMatch", "ifMetagenerationMatch", "ifMetagenerationNotMatch"}
IGNORED = {"projection", "userProject", "predefinedAcl", "kmsKeyName", "contentEncoding",
           "predefinedDefaultObjectAcl", "enableObjectRetention", "softDeleted"}
LIST_PARAMETERS = {"prefix", "startOffset", "endOffset", "maxResults", "pageToken"}
INSERT_PARAMETERS = {"name"} | CONDITIONS
MAX_RESULTS = 1000


@dataclass
class Fault:
    """Answer `code` to the next request whose method is `method` (any when None) and whose path
    contains `path_part`."""
    code: int
    method: str | None = None
    path_part: str = ""


@dataclass
class Media:
    data: bytes
    resource: dict[str, Any]


class StorageHandler(GoogleJSONHandler):
    server: "StorageServer"

    def handle_api(self, method: str) -> None:
        url = urlsplit(self.path)
        fault = self.server.take_fault(method, url.path)
        self.body, self.body_read = b"", False
        try:
            self.body = self.read_body()  # whatever the answer, so no unread bytes desync the connection
            self.body_read = True
            if fault is not None:
                raise StorageError(fault.code, f"injected fault {fault.code}", "UNAVAILABLE", "backendError")
            code, body = self.route(method, url)
        except StorageError as error:
            code, body = error.code, error.body()
        except ApiError as error:  # query_params' refusals
            code, body = error.code, StorageError(error.code, error.message, error.status, "invalid").body()
        except Exception:  # a bug of ours: Google's shape, traceback in the log
            traceback.print_exc()
            code, body = 500, StorageError(500, "Internal error encountered.", "INTERNAL", "backendError").body()
        if isinstance(body, Media):
            self.send_media(body)
        elif code == 204:
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_json(code, body)
        if not self.body_read:  # refused before its body was read whole: drop the rest, keep the answer
            self.linger()

    def do_PUT(self) -> None:
        self.handle_api("PUT")

    def send_media(self, media: Media) -> None:
        resource = media.resource
        self.send_response(200)
        self.send_header("Content-Type", resource["contentType"])
        self.send_header("Content-Length", str(len(media.data)))
        self.send_header("x-goog-generation", resource["generation"])
        self.send_header("x-goog-metageneration", resource["metageneration"])
        self.send_header("x-goog-hash", f"crc32c={resource['crc32c']},md5={resource['md5Hash']}")
        self.send_header("x-goog-stored-content-length", resource["size"])
        self.end_headers()
        self.wfile.write(media.data)

    def read_json(self) -> Any:
        if not self.body.strip():
            return {}
        try:
            return loads_json(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise invalid(f"Invalid JSON payload received. {error}") from None

    def route(self, method: str, url: Any) -> tuple[int, Any]:
        store = self.server.buckets
        path = url.path
        if _BUCKETS.fullmatch(path) and method == "POST":
            params = query_params(url, {"project"} | IGNORED)
            if not params.get("project"):
                raise invalid("Required parameter: project")
            return 200, store.insert_bucket(params["project"], self.read_json())
        if (match := _BUCKET.fullmatch(path)) and method == "GET":
            query_params(url, {"ifMetagenerationMatch", "ifMetagenerationNotMatch"} | IGNORED)
            return 200, store.get_bucket(unquote(match[1]))
        if match := _OBJECTS.fullmatch(path):
            bucket = unquote(match[2])
            if method == "POST" and match[1]:
                return 200, self.insert(bucket, query_params(url, INSERT_PARAMETERS | IGNORED))
            if method == "GET" and not match[1]:
                return 200, self.list(bucket, query_params(url, LIST_PARAMETERS | IGNORED))
        if match := _OBJECT.fullmatch(path):
            bucket, name = unquote(match[2]), unquote(match[3])
            params = query_params(url, {"generation"} | CONDITIONS | IGNORED)
            conditions = Preconditions.from_params(params)
            if method == "GET":
                resource, data = store.get(bucket, name, conditions)
                return 200, Media(data, resource) if match[1] or params.get("alt") == "media" else resource
            if not match[1] and method in ("PATCH", "PUT"):
                resource = store.change(bucket, name, self._object_body(), conditions, merge=method == "PATCH")
                self.server.wrote(method, resource)
                return 200, resource
            if not match[1] and method == "DELETE":
                store.delete(bucket, name, conditions)
                return 204, None
        raise StorageError(404, unknown_url(url).message, "NOT_FOUND", "notFound")

    def _object_body(self) -> dict[str, Any]:
        body = self.read_json()
        if not isinstance(body, dict):
            raise invalid("the body must be an Object resource")
        return body

    def insert(self, bucket: str, params: dict[str, str]) -> dict[str, Any]:
        upload = params.get("uploadType")
        content_type = self.headers.get("Content-Type") or "application/octet-stream"
        if upload == "media":
            fields, data = {"contentType": content_type}, self.body
        elif upload == "multipart":
            fields, data = _multipart(content_type, self.body)
        else:
            raise invalid(f"uploadType {upload!r} is not served here: use media or multipart")
        name = params.get("name") or fields.get("name")
        if not isinstance(name, str) or not name:
            raise StorageError(400, "Required", "INVALID_ARGUMENT", "required")
        resource = self.server.buckets.insert(bucket, name, data, fields, Preconditions.from_params(params))
        self.server.wrote("POST", resource)
        return resource

    def list(self, bucket: str, params: dict[str, str]) -> dict[str, Any]:
        limit = params.get("maxResults", str(MAX_RESULTS))
        if not limit.isdigit() or int(limit) < 1:
            raise invalid(f"Invalid value for maxResults: {limit!r}")
        after = None
        if params.get("pageToken"):
            try:
                after = base64.b64decode(params["pageToken"].encode(), altchars=b"-_", validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                raise invalid("Invalid pageToken") from None
        items, last = self.server.buckets.list(
            bucket, prefix=params.get("prefix", ""), start=params.get("startOffset", ""),
            end=params.get("endOffset") or None, after=after, limit=min(int(limit), MAX_RESULTS))
        page: dict[str, Any] = {"kind": "storage#objects"}
        if items:
            page["items"] = items
        if last is not None:
            page["nextPageToken"] = base64.urlsafe_b64encode(last.encode()).decode()
        return page


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes]:
    """multipart/related: first part the Object resource as JSON, second part the data.
    https://cloud.google.com/storage/docs/uploading-objects#uploading-an-object (multipart)"""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/related") or not match:
        raise invalid("a multipart upload needs Content-Type: multipart/related; boundary=...")
    delimiter = b"--" + match[1].encode()
    parts = body.split(delimiter)
    if len(parts) < 4 or not parts[3].startswith(b"--"):
        raise invalid("a multipart upload has exactly two parts: the metadata, then the data")
    sections = []
    for part in parts[1:3]:
        head, separator, content = part.partition(b"\r\n\r\n")
        if not separator:
            raise invalid("a multipart part has no header block")
        sections.append((head, content[:-2] if content.endswith(b"\r\n") else content))
    try:
        fields = json.loads(sections[0][1] or b"{}")
    except ValueError:
        raise invalid("the first multipart part is not JSON") from None
    if not isinstance(fields, dict):
        raise invalid("the first multipart part must be an Object resource")
    media_type = re.search(rb"(?im)^content-type:[ \t]*([^\r\n]+)", sections[1][0])
    if media_type and not fields.get("contentType"):  # the data part's type, when the resource names none
        fields["contentType"] = media_type[1].decode("latin-1").strip()
    return fields, sections[1][1]


class StorageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state_dir: str | Path):
        super().__init__(address, StorageHandler)
        self.url = f"http://{address[0]}:{self.server_address[1]}"
        self.buckets = Buckets(state_dir, self.url)
        self.faults: deque[Fault] = deque()
        self.after_write: Callable[[str, dict[str, Any]], None] | None = None
        self._faults_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._faults_lock:
            for fault in self.faults:
                if fault.method in (None, method) and fault.path_part in path:
                    self.faults.remove(fault)
                    return fault
        return None

    def wrote(self, method: str, resource: dict[str, Any]) -> None:
        if self.after_write is not None:
            self.after_write(method, resource)

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.buckets.close()


def start(state_dir: str | Path, host: str = "127.0.0.1", port: int = 0) -> StorageServer:
    server = StorageServer((host, port), state_dir)
    server._thread = threading.Thread(target=server.serve_forever, name="localcloud-storage", daemon=True)
    server._thread.start()
    return server


def create_bucket(url: str, name: str, project: str) -> None:
    """buckets.insert over HTTP, as deploy.sh's `gcloud storage buckets create` does on Google;
    an existing bucket is fine."""
    request = urllib.request.Request(f"{url}/storage/v1/b?project={project}", method="POST",
                                     data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=30).close()
    except urllib.error.HTTPError as error:
        if error.code != 409:
            raise
