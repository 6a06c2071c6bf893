"""Who wfr is to each service: an OAuth access token for Google's APIs (Application Default
Credentials), an ID token for the private functions, or localcloud's fixed bearer token.

Nothing is read at import: google-auth is imported, and credentials are looked up, on the first
call that needs them.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
from typing import Protocol

from .errors import WfrError

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"


class Auth(Protocol):
    def api_headers(self) -> dict[str, str]: ...
    def function_headers(self, audience: str) -> dict[str, str]: ...


class LocalAuth:
    """localcloud accepts one fixed bearer token everywhere (endpoints.json `token`)."""

    def __init__(self, token: str):
        self._headers = {"Authorization": f"Bearer {token}"}

    def api_headers(self) -> dict[str, str]:
        return self._headers

    def function_headers(self, audience: str) -> dict[str, str]:
        return self._headers


class GoogleAuth:
    """Application Default Credentials for the APIs, ID tokens for the functions.

    A 2nd-gen function that requires authentication takes an ID token whose audience is its URL
    (https://cloud.google.com/functions/docs/securing/authenticating). google.oauth2.id_token
    mints one from service-account credentials (a key file or the metadata server); for a user's
    credentials Google documents `gcloud auth print-identity-token` instead
    (https://cloud.google.com/run/docs/authenticating/developers)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._credentials = None
        self._request = None
        self._id_tokens: dict[str, object] = {}

    def _transport(self):
        import google.auth.transport.requests
        if self._request is None:
            self._request = google.auth.transport.requests.Request()
        return self._request

    def api_headers(self) -> dict[str, str]:
        import google.auth
        import google.auth.exceptions
        with self._lock:
            try:
                if self._credentials is None:
                    self._credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM])
                if not self._credentials.valid:
                    self._credentials.refresh(self._transport())
            except google.auth.exceptions.GoogleAuthError as error:
                raise WfrError(f"no usable Application Default Credentials ({error}); "
                               "run 'gcloud auth application-default login'") from None
            return {"Authorization": f"Bearer {self._credentials.token}"}

    def function_headers(self, audience: str) -> dict[str, str]:
        with self._lock:
            token = self._id_tokens.get(audience)
            if token is None:
                token = self._id_tokens[audience] = self._fetch_id_token(audience)
            return {"Authorization": f"Bearer {token}"}

    def _fetch_id_token(self, audience: str) -> str:
        import google.auth.exceptions
        import google.oauth2.id_token
        try:
            return google.oauth2.id_token.fetch_id_token(self._transport(), audience)
        except google.auth.exceptions.GoogleAuthError:
            pass  # user credentials cannot mint ID tokens for an audience: ask gcloud
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise WfrError("cannot get an ID token for the functions: the credentials are not a "
                           "service account's and gcloud is not on PATH")
        done = subprocess.run([gcloud, "auth", "print-identity-token"], capture_output=True, text=True)
        if done.returncode != 0 or not done.stdout.strip():
            raise WfrError(f"gcloud auth print-identity-token failed: {done.stderr.strip()}")
        return done.stdout.strip()
