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
    POST   /batch/storage/v1                                up to 100 of the calls above (not uploads
                                                            or downloads) in one multipart/mixed request

Writes honour ifGenerationMatch, ifGenerationNotMatch, ifMetagenerationMatch and
ifMetagenerationNotMatch with 412 (buckets.py). Unlike the Executions API no token is required:
Google's client libraries send none to an emulator (STORAGE_EMULATOR_HOST).

Fault hooks for tests: `server.faults` answers the next matching requests with a given code
before serving them; `server.after_write` is called after each committed object write, before the
answer goes out (a test may kill the writer there). Both are empty unless a test sets them, and
both see each call of a batch as a request of its own.
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import re
import secrets
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
from .google_http import ApiError, GoogleJSONHandler, loads_json, partial, query_params, unknown_url

_BUCKETS = re.compile(r"/storage/v1/b")
_BUCKET = re.compile(r"/storage/v1/b/([^/]+)")
_OBJECTS = re.compile(r"/(upload/)?storage/v1/b/([^/]+)/o")
_OBJECT = re.compile(r"/(download/)?storage/v1/b/([^/]+)/o/([^/]+)")
_BATCH = re.compile(r"/batch/storage/v1")  # the discovery document's batchPath
_REQUEST_LINE = re.compile(r"([A-Z]{1,20}) ([\x21-\x7e]+) HTTP/1\.[01]", re.ASCII)
CONDITIONS = {"ifGenerationMatch", "ifGenerationNotMatch", "ifMetagenerationMatch", "ifMetagenerationNotMatch"}
IGNORED = {"projection", "userProject", "predefinedAcl", "kmsKeyName", "contentEncoding",
           "predefinedDefaultObjectAcl", "enableObjectRetention", "softDeleted"}
LIST_PARAMETERS = {"prefix", "startOffset", "endOffset", "maxResults", "pageToken", "delimiter",
                   "includeTrailingDelimiter", "includeFoldersAsPrefixes"}  # no folders here: the last is moot
INSERT_PARAMETERS = {"name"} | CONDITIONS
MAX_RESULTS = 1000
# "You should not include more than 100 calls in a single batch request"
# (https://cloud.google.com/storage/docs/batch); here more is refused, so a client that sends more
# learns it locally rather than on Google.
MAX_BATCH_CALLS = 100


@dataclass
class Fault:
    """Answer `code` to the next request whose method is `method` (any when None) and whose path
    contains `path_part`."""
    code: int
    method: str | None = None
    path_part: str = ""

    def error(self) -> StorageError:
        return StorageError(self.code, f"injected fault {self.code}", "UNAVAILABLE", "backendError")


@dataclass
class Media:
    data: bytes
    resource: dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One request of a batch: an application/http part."""
    method: str
    url: Any                 # urlsplit of its path and query
    body: bytes
    content_id: str | None   # the part's Content-ID, which its answer echoes


@dataclass
class Batch:
    """A batch's answers in order: (Content-ID, code, body) per call."""
    answers: list[tuple[str | None, int, Any]]


class StorageHandler(GoogleJSONHandler):
    server: "StorageServer"

    def handle_api(self, method: str) -> None:
        url = urlsplit(self.path)
        fault = self.server.take_fault(method, url.path)
        self.body, self.body_read = b"", False

        def serve() -> tuple[int, Any]:
            self.body = self.read_body()  # whatever the answer, so no unread bytes desync the connection
            self.body_read = True
            if fault is not None:
                raise fault.error()
            if _BATCH.fullmatch(url.path) and method == "POST":
                return 200, self.batch(url)
            return partial(url, lambda: self.route(method, url))
        code, body = _answered(serve)
        if isinstance(body, Media):
            self.send_media(body)
        elif isinstance(body, Batch):
            self.send_batch(body)
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

    def send_batch(self, batch: Batch) -> None:
        boundary = f"batch_{secrets.token_hex(16)}"
        data = _batch_answer(boundary, batch)
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/mixed; boundary={boundary}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def batch(self, url: Any) -> Batch:
        """Each call of a batch is served as a request of its own (its fault, its preconditions,
        after_write), in order, and answered in its own part: a call's refusal is its part's
        answer, never the batch's. https://cloud.google.com/storage/docs/batch"""
        query_params(url, IGNORED)
        answers = []
        for call in _batch_calls(self.headers.get("Content-Type") or "", self.body):
            fault = self.server.take_fault(call.method, call.url.path)
            answers.append((call.content_id, *_answered(lambda: self.serve_call(call, fault))))
        return Batch(answers)

    def serve_call(self, call: Call, fault: Fault | None) -> tuple[int, Any]:
        if fault is not None:
            raise fault.error()
        if not call.url.path.startswith("/storage/v1/"):
            raise invalid(f"{call.method} {call.url.path} cannot be batched: a batch holds JSON API calls "
                          "under /storage/v1/, not uploads, downloads or batches")
        self.body = call.body
        return partial(call.url, lambda: self.route(call.method, call.url))

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
        prefix, limit = params.get("prefix", ""), min(int(limit), MAX_RESULTS)

        def objects(cursor: str | None, count: int) -> tuple[list[dict[str, Any]], str | None]:
            return self.server.buckets.list(bucket, prefix=prefix, start=params.get("startOffset", ""),
                                            end=params.get("endOffset") or None, after=cursor, limit=count)
        if params.get("delimiter"):
            items, prefixes, last = _directory(objects, prefix, params["delimiter"], limit, after,
                                               _boolean(params, "includeTrailingDelimiter"))
        else:
            (items, last), prefixes = objects(after, limit), []
        page: dict[str, Any] = {"kind": "storage#objects"}
        if items:
            page["items"] = items
        if prefixes:
            page["prefixes"] = prefixes
        if last is not None:
            page["nextPageToken"] = base64.urlsafe_b64encode(last.encode()).decode()
        return page


def _directory(objects: Callable[[str | None, int], tuple[list[dict[str, Any]], str | None]], prefix: str,
               delimiter: str, limit: int, after: str | None, trailing: bool
               ) -> tuple[list[dict[str, Any]], list[str], str | None]:
    """objects.list with a delimiter, as the discovery document words it: a name that holds the
    delimiter past the prefix is listed once, in `prefixes`, cut after the delimiter; items and
    prefixes together are at most `limit` (one more when the last is a name listed both ways,
    with includeTrailingDelimiter). The page token is the cursor after the last entry (for a
    prefix, past every name under it)."""
    items: list[dict[str, Any]] = []
    prefixes: list[str] = []
    cursor = after
    while True:
        chunk, more = objects(cursor, limit)
        for resource in chunk:
            rest = resource["name"][len(prefix):]
            cut = rest.find(delimiter)
            if len(items) + len(prefixes) >= limit:
                return items, prefixes, cursor
            if cut < 0:
                items.append(resource)
                cursor = resource["name"]
                continue
            group = prefix + rest[:cut + len(delimiter)]
            prefixes.append(group)
            if trailing and group == resource["name"]:  # ends in its one delimiter: an item too
                items.append(resource)
            cursor = group + "\U0010ffff"  # past the group: its names go on with lower code points
            break
        else:
            if more is None:
                return items, prefixes, None


def _boolean(params: dict[str, str], name: str) -> bool:
    value = params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise invalid(f"Invalid value for {name}: {params[name]!r}")
    return value == "true"


def _answered(serve: Callable[[], tuple[int, Any]]) -> tuple[int, Any]:
    """serve()'s (code, body), or the refusal it raised, in the JSON API's error shape."""
    try:
        return serve()
    except StorageError as error:
        return error.code, error.body()
    except ApiError as error:  # query_params' and read_body's refusals
        return error.code, StorageError(error.code, error.message, error.status, "invalid").body()
    except Exception:  # a bug of ours: Google's shape, traceback in the log
        traceback.print_exc()
        return 500, StorageError(500, "Internal error encountered.", "INTERNAL", "backendError").body()


def _batch_calls(content_type: str, body: bytes) -> list[Call]:
    """A batch request's calls: multipart/mixed, each part `Content-Type: application/http` (and
    an optional Content-ID) whose body is an HTTP request. https://cloud.google.com/storage/docs/batch"""
    if not re.match(r"multipart/mixed\s*;", content_type, re.IGNORECASE):
        raise invalid(f"a batch request needs Content-Type: multipart/mixed; boundary=..., not {content_type!r}")
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart() or not message.get_payload():
        raise invalid("the batch request's body holds no part delimited by its boundary")
    parts = message.get_payload()
    if len(parts) > MAX_BATCH_CALLS:
        raise invalid(f"a batch request holds at most {MAX_BATCH_CALLS} calls, this one {len(parts)}: "
                      "send several batches (https://cloud.google.com/storage/docs/batch)")
    return [_call(number, part) for number, part in enumerate(parts, 1)]


def _call(number: int, part: Any) -> Call:
    if part.get_content_type() != "application/http":
        raise invalid(f"batch part {number} is {part.get_content_type()}, not application/http")
    request = part.get_payload(decode=True) or b""
    head, body = (re.split(rb"\r?\n\r?\n", request, maxsplit=1) + [b""])[:2]
    line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
    match = _REQUEST_LINE.fullmatch(line)
    if not match:
        raise invalid(f"batch part {number} does not start with a request line (METHOD PATH HTTP/1.1): {line[:100]!r}")
    # Google's doc wants only the path; its Python client sends full URLs: the path and query serve both.
    content_id = re.sub(r"[^\x21-\x7e]", "", str(part.get("Content-ID") or ""))  # echoed in a header
    return Call(match[1], urlsplit(match[2]), body, content_id or None)


def _batch_answer(boundary: str, batch: Batch) -> bytes:
    """multipart/mixed, a part per call in the calls' order, each an application/http part holding
    the call's whole HTTP answer; a call with a Content-ID is answered with `<response-ID>`."""
    out = bytearray()
    for content_id, code, body in batch.answers:
        if isinstance(body, Media):
            content_type, data = body.resource["contentType"], body.data
        elif code == 204:
            content_type, data = None, b""
        else:
            content_type, data = "application/json; charset=UTF-8", json.dumps(body).encode()
        out += f"--{boundary}\r\nContent-Type: application/http\r\n".encode()
        if content_id:
            out += f"Content-ID: <response-{content_id.strip('<>')}>\r\n".encode()
        out += f"\r\nHTTP/1.1 {code} {StorageHandler.responses.get(code, ('',))[0]}\r\n".encode()
        if content_type:
            out += f"Content-Type: {content_type}\r\n".encode("latin-1", "replace")
        out += f"Content-Length: {len(data)}\r\n\r\n".encode() + data + b"\r\n"
    return bytes(out + f"--{boundary}--\r\n".encode())


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
