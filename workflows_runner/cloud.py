"""The API calls wfr makes, one method per Google API method, on a Target (Google or localcloud).

Shapes follow Google's discovery documents (workflowexecutions v1, storage v1, cloudscheduler v1,
cloudfunctions v2); localcloud serves the same paths.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Iterator, Sequence
from urllib.parse import quote

from . import auth as auth_
from .batch import Call
from .errors import ApiError, Unreachable, WfrError
from .http import Http, api_error
from .target import FUNCTIONS_ROOT, Target


@dataclass(frozen=True)
class MetadataPatch:
    """Merge `metadata` into object `name`'s custom metadata if its metageneration is still
    `metageneration` (ifMetagenerationMatch)."""
    name: str
    metadata: dict[str, str]
    metageneration: str


class Cloud:
    def __init__(self, target: Target, http: Http | None = None, auth: auth_.Auth | None = None):
        self.target = target
        self.http = http or Http()
        self.auth = auth or (auth_.LocalAuth(target.local_token) if target.local_token else auth_.GoogleAuth())
        self._function_urls: dict[str, str] = {}

    def _api(self, service: str, method: str, url: str, **kwargs: Any) -> Any:
        try:
            return self.http.call(service, method, url, headers=self.auth.api_headers(), **kwargs)
        except Unreachable as error:
            raise error.with_hint(self.target.unreachable_hint) from None

    # --- Workflows Executions API ---------------------------------------------------------
    def execution(self, name: str, view: str = "BASIC") -> dict[str, Any]:
        return self._api("executions", "GET", f"{self.target.api_root}/v1/{name}", params={"view": view})

    def executions(self, workflow: str, filter_: str | None = None, view: str = "BASIC",
                   order_by: str | None = None) -> Iterator[dict[str, Any]]:
        """Every execution of `workflow` (a full name) matching `filter_`, page by page
        (1,000 per page in BASIC view, 100 in FULL: the API's maxima)."""
        params: dict[str, Any] = {"view": view, "pageSize": 1000 if view == "BASIC" else 100}
        if filter_:
            params["filter"] = filter_
        if order_by:
            params["orderBy"] = order_by
        while True:
            page = self._api("executions", "GET", f"{self.target.api_root}/v1/{workflow}/executions", params=params)
            yield from page.get("executions", [])
            if not page.get("nextPageToken"):
                return
            params["pageToken"] = page["nextPageToken"]

    def workflow_exists(self, workflow: str) -> bool:
        """Whether `workflow` (a full name) is deployed: executions.list answers 404 NOT_FOUND
        for a workflow that does not exist (one page of one execution, whatever it holds)."""
        try:
            self._api("executions", "GET", f"{self.target.api_root}/v1/{workflow}/executions",
                      params={"pageSize": 1})
        except ApiError as error:
            if error.code == 404:
                return False
            raise
        return True

    def create_execution(self, workflow: str, argument: Any, labels: dict[str, str]) -> dict[str, Any]:
        # Not retried: a create whose answer was lost may have started an execution.
        return self._api("executions", "POST", f"{self.target.api_root}/v1/{workflow}/executions",
                         json={"argument": json.dumps(argument), "labels": labels}, retry=False)

    def cancel_execution(self, name: str) -> dict[str, Any]:
        # Retried: a second cancel changes nothing (it is refused 400 once the execution ended).
        return self._api("executions", "POST", f"{self.target.api_root}/v1/{name}:cancel", json={}, retry=True)

    # --- Cloud Storage JSON API (the ledger) -----------------------------------------------
    def list_objects(self, prefix: str, start_offset: str | None = None, end_offset: str | None = None,
                     page_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Objects of the runs bucket by name, in name order; at most 1,000 per call (the API's cap)."""
        self._need_bucket()
        params: dict[str, Any] = {"prefix": prefix, "maxResults": page_size,
                                  "fields": "items(name,metadata,metageneration),nextPageToken"}
        if start_offset:
            params["startOffset"] = start_offset
        if end_offset:
            params["endOffset"] = end_offset
        url = f"{self.target.storage_root}/storage/v1/b/{self.target.bucket}/o"
        while True:
            page = self._api("storage", "GET", url, params=params)
            yield from page.get("items", [])
            if not page.get("nextPageToken"):
                return
            params["pageToken"] = page["nextPageToken"]

    def read_json_object(self, name: str) -> Any:
        """An object's content, which the ledger writes as JSON (alt=media reads the content)."""
        self._need_bucket()
        url = f"{self.target.storage_root}/storage/v1/b/{self.target.bucket}/o/{quote(name, safe='')}"
        return self._api("storage", "GET", url, params={"alt": "media"})

    def insert_object(self, name: str, content: bytes, metadata: dict[str, str]) -> bool:
        """Create object `name` (content and custom metadata in one multipart upload) only if no
        object has that name (ifGenerationMatch=0): True when created, False when it existed
        (412). https://cloud.google.com/storage/docs/request-preconditions"""
        self._need_bucket()
        boundary = "wfr-part-boundary-5c1e"
        resource = json.dumps({"name": name, "contentType": "application/json", "metadata": metadata})
        body = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{resource}\r\n"
                f"--{boundary}\r\nContent-Type: application/json\r\n\r\n").encode() + content + \
            f"\r\n--{boundary}--\r\n".encode()
        url = f"{self.target.storage_root}/upload/storage/v1/b/{quote(self.target.bucket, safe='')}/o"
        try:
            self.http.call("storage", "POST", url, params={"uploadType": "multipart", "ifGenerationMatch": "0",
                                                           "fields": "name"},
                           headers={**self.auth.api_headers(), "Content-Type": f"multipart/related; boundary={boundary}"},
                           data=body)
        except ApiError as error:
            if error.code == 412:
                return False
            raise
        return True

    def patch_metadata(self, patches: Sequence[MetadataPatch]) -> list[bool]:
        """Per patch, whether it was written: False when somebody changed the object since the
        patch's metageneration (412), so their write wins (that somebody may be this very patch,
        when a retry follows a lost answer). Sent as batch requests, 100 patches a request
        (https://cloud.google.com/storage/docs/batch); any other error of a patch is raised as a
        single call's would be, after the same retries of transient ones."""
        if not patches:
            return []
        self._need_bucket()
        bucket = quote(self.target.bucket, safe="")
        calls = [Call("PATCH", f"/storage/v1/b/{bucket}/o/{quote(patch.name, safe='')}"
                               f"?ifMetagenerationMatch={patch.metageneration}&fields=metageneration",
                      {"metadata": patch.metadata}) for patch in patches]
        try:
            answers = self.http.batch("storage", self.target.storage_root, calls, headers=self.auth.api_headers())
        except Unreachable as error:
            raise error.with_hint(self.target.unreachable_hint) from None
        for call, answer in zip(calls, answers):
            if answer.code >= 400 and answer.code != 412:
                raise api_error(answer.code, answer.reason, answer.content,
                                self.target.storage_root + call.path.split("?")[0])
        return [answer.code < 400 for answer in answers]

    def object_dated(self, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """An object's resource (generation, metageneration, timeCreated, metadata), None when it
        does not exist; and Cloud Storage's clock when it answered (the Date header)."""
        self._need_bucket()
        url = f"{self.target.storage_root}/storage/v1/b/{quote(self.target.bucket, safe='')}/o/{quote(name, safe='')}"
        try:
            return self.http.call_dated("storage", "GET", url, headers=self.auth.api_headers(), params={
                "fields": "name,generation,metageneration,timeCreated,metadata"})
        except ApiError as error:
            if error.code == 404:
                return None, None
            raise

    def write_if_unchanged(self, name: str, generation: str, metageneration: str,
                           metadata: dict[str, str] | None) -> bool:
        """Merge `metadata` into the object's (None: delete the object), only if it is still that
        generation and metageneration: False when it changed or is gone (412, 404)."""
        self._need_bucket()
        url = f"{self.target.storage_root}/storage/v1/b/{quote(self.target.bucket, safe='')}/o/{quote(name, safe='')}"
        params = {"ifGenerationMatch": generation, "ifMetagenerationMatch": metageneration}
        try:
            if metadata is None:
                self._api("storage", "DELETE", url, params=params)
            else:
                self._api("storage", "PATCH", url, params={**params, "fields": "metageneration"},
                          json={"metadata": metadata})
        except ApiError as error:
            if error.code in (404, 412):
                return False
            raise
        return True

    def _need_bucket(self) -> None:
        if not self.target.storage_root or not self.target.bucket:
            raise WfrError("this target has no runs bucket (the local stack was started without storage)")

    # --- Cloud Scheduler --------------------------------------------------------------------
    def job(self, name: str) -> dict[str, Any]:
        if not self.target.scheduler_root:
            raise WfrError("this target has no Cloud Scheduler endpoint")
        try:
            return self._api("scheduler", "GET", f"{self.target.scheduler_root}/v1/{name}")
        except ApiError as error:
            if error.code == 404:   # a typo, or another project or location: say which was asked
                raise WfrError(f"job {name.rsplit('/', 1)[-1]} not found ({name})") from None
            raise

    def set_job_paused(self, name: str, paused: bool) -> dict[str, Any]:
        """jobs.pause or jobs.resume (cloudscheduler v1): the job as it is then."""
        if not self.target.scheduler_root:
            raise WfrError("this target has no Cloud Scheduler endpoint")
        verb = "pause" if paused else "resume"
        return self._api("scheduler", "POST", f"{self.target.scheduler_root}/v1/{name}:{verb}", json={})

    def jobs(self) -> Iterator[dict[str, Any]]:
        """Every Scheduler job of the target's project and location, page by page."""
        if not self.target.scheduler_root:
            raise WfrError("this target has no Cloud Scheduler endpoint")
        url = f"{self.target.scheduler_root}/v1/projects/{self.target.project}/locations/{self.target.location}/jobs"
        params: dict[str, Any] = {"pageSize": 500}
        while True:
            page = self._api("scheduler", "GET", url, params=params)
            yield from page.get("jobs", [])
            if not page.get("nextPageToken"):
                return
            params["pageToken"] = page["nextPageToken"]

    # --- the functions ----------------------------------------------------------------------
    def function_url(self, kind: str) -> str:
        """The root URL of the range or proxy function: from endpoints.json locally, else from
        the Cloud Functions API (deploy.sh names them PREFIX-range and PREFIX-proxy)."""
        local = {"range": self.target.range_url, "proxy": self.target.proxy_url}[kind]
        if local:
            return local
        if kind not in self._function_urls:
            t = self.target
            function = self._api("functions", "GET",
                                 f"{FUNCTIONS_ROOT}/v2/projects/{t.project}/locations/{t.location}/functions/{t.prefix}-{kind}")
            url = function.get("url") or function.get("serviceConfig", {}).get("uri")
            if not url:
                raise WfrError(f"function {t.prefix}-{kind} has no URL yet (is it deployed?)")
            self._function_urls[kind] = url
        return self._function_urls[kind]

    def call_function(self, kind: str, path: str, body: Any, params: dict[str, str] | None = None) -> Any:
        """POST to a function. The range function's answers are pure reads: always retried. The
        proxy's POSTs start runs: retried only with a requestId (http.may_retry)."""
        root = self.function_url(kind)
        try:
            return self.http.call(kind, "POST", root + path, headers=self.auth.function_headers(root),
                                  params=params, json=body, retry=True if kind == "range" else None)
        except Unreachable as error:
            raise error.with_hint(self.target.unreachable_hint) from None


def decode_job_body(job: dict[str, Any]) -> dict[str, Any]:
    """The JSON object a Scheduler job posts (httpTarget.body is base64, per the API)."""
    raw = job.get("httpTarget", {}).get("body")
    if not raw:
        return {}
    try:
        body = json.loads(base64.b64decode(raw))
    except ValueError:
        raise WfrError(f"job {job.get('name')}: its body is not JSON") from None
    if not isinstance(body, dict):
        raise WfrError(f"job {job.get('name')}: its body is not a JSON object")
    return body
