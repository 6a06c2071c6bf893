"""Execution ids as the operator types them: what wfr prints (the bare id), a full name, or a
unique prefix of at least MIN_PREFIX characters, as gcloud takes a resource id or its name."""
from __future__ import annotations

import re

from .cloud import Cloud
from .errors import ApiError, WfrError

MIN_PREFIX = 8
SCANNED = 10_000      # a prefix is looked for among the workflow's newest executions, this many
SHOWN = 10            # candidates named when a prefix is ambiguous
_ID = re.compile(r"[A-Za-z0-9_-]{1,100}", re.ASCII)


def execution(cloud: Cloud, workflow: str, text: str, what: str = "execution") -> str:
    """The full name of `workflow`'s execution that `text` names (a full name, an id or a unique
    prefix of one); WfrError when none or several do."""
    short = workflow.rsplit("/", 1)[-1]
    of = f" of {short}" if what == "execution" else ""
    if text.startswith("projects/"):
        head, _, execution_id = text.partition("/executions/")
        if not _ID.fullmatch(execution_id):
            raise WfrError(f"expected {what} name {workflow}/executions/ID, got {text!r}")
        if head != workflow:
            raise WfrError(f"{text} belongs to workflow {head.rsplit('/', 1)[-1]}, not {short}")
        return text
    if not _ID.fullmatch(text):
        raise WfrError(f"expected a {what} id (letters, digits, '-' and '_'), got {text!r}")
    name = f"{workflow}/executions/{text}"
    try:
        cloud.execution(name)
        return name
    except ApiError as error:
        if error.code != 404:
            raise
    if len(text) < MIN_PREFIX:
        raise WfrError(f"no {what} {text}{of}; a prefix needs {MIN_PREFIX} characters or more")
    matches = []
    for index, found in enumerate(cloud.executions(workflow, order_by="createTime desc")):
        if index >= SCANNED:
            break
        if found["name"].rsplit("/", 1)[-1].startswith(text):
            matches.append(found["name"])
    if not matches:
        raise WfrError(f"no {what}{of} has an id starting {text}")
    if len(matches) > 1:
        ids = ", ".join(m.rsplit("/", 1)[-1] for m in matches[:SHOWN])
        raise WfrError(f"{text} is ambiguous: {len(matches)} {what}s{of} start with it ({ids}"
                       f"{', ...' if len(matches) > SHOWN else ''})")
    return matches[0]
