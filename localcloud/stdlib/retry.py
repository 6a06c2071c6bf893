"""Retry predicates: http.default_retry_predicate(_non_idempotent), retry.always, retry.never.

https://cloud.google.com/workflows/docs/reference/stdlib/http/default_retry_predicate
https://cloud.google.com/workflows/docs/reference/stdlib/http/default_retry_predicate_non_idempotent
https://cloud.google.com/workflows/docs/reference/stdlib/retry/always (and never)

The engine pairs these with max_retries and a backoff for `${http.default_retry}` and
`${http.default_retry_non_idempotent}`.
"""
from __future__ import annotations

from . import builtin

IDEMPOTENT_CODES = frozenset({429, 502, 503, 504})
IDEMPOTENT_TAGS = frozenset({"ConnectionError", "ConnectionFailedError", "TimeoutError"})
NON_IDEMPOTENT_CODES = frozenset({429, 503})
NON_IDEMPOTENT_TAGS = frozenset({"ConnectionFailedError"})


@builtin("http.default_retry_predicate")
def default_retry_predicate(context, exception):
    return _matches(exception, IDEMPOTENT_CODES, IDEMPOTENT_TAGS)


@builtin("http.default_retry_predicate_non_idempotent")
def default_retry_predicate_non_idempotent(context, exception):
    return _matches(exception, NON_IDEMPOTENT_CODES, NON_IDEMPOTENT_TAGS)


@builtin("retry.always")
def always(context, exception):
    return True


@builtin("retry.never")
def never(context, exception):
    return False


def _matches(exception, codes, tags) -> bool:
    # Anything but an error map (a workflow may `raise` a plain string) is not retried.
    if not isinstance(exception, dict):
        return False
    exception_tags = exception.get("tags") or []
    if not isinstance(exception_tags, list):
        return False
    if "HttpError" in exception_tags and exception.get("code") in codes:
        return True
    return any(tag in tags for tag in exception_tags)
