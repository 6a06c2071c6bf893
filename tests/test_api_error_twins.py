"""localcloud's ApiError and the proxy's are twins (the proxy deploys alone, so it keeps its own
copy): one table, checked against both, keeps their argument order and error shape the same."""
from __future__ import annotations

import pytest

from localcloud import google_http
from tests.serving import load_module

TWINS = {"localcloud": google_http.ApiError, "proxy": load_module("proxy", "workflows_api").ApiError}

# Google's error shape: https://cloud.google.com/apis/design/errors#http_mapping
TABLE = [
    (400, "Invalid JSON payload received.", "INVALID_ARGUMENT"),
    (400, "Execution x is not active and cannot be cancelled", "FAILED_PRECONDITION"),
    (401, "Request is missing required authentication credential.", "UNAUTHENTICATED"),
    (404, "Resource 'projects/p' was not found", "NOT_FOUND"),
    (503, "localcloud is stopping", "UNAVAILABLE"),
]


@pytest.mark.parametrize("twin", sorted(TWINS))
@pytest.mark.parametrize("code, message, status", TABLE)
def test_both_api_errors_take_code_message_status_and_answer_googles_shape(twin, code, message, status):
    error = TWINS[twin](code, message, status)
    assert (error.code, error.message, error.status) == (code, message, status)
    assert error.body() == {"error": {"code": code, "message": message, "status": status}}
