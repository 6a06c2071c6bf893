"""Cloud Storage JSON API batch requests: many calls in one HTTP request, and their answers.

As https://cloud.google.com/storage/docs/batch describes them: `POST /batch/storage/v1` (the
discovery document's batchPath) with a multipart/mixed body, one `Content-Type: application/http`
part per call, holding the call as an HTTP request with only the URL's path; the outer request's
headers (Authorization) apply to every call. The answer is multipart/mixed too: a part per call in
the calls' order, each a whole HTTP response, with `Content-ID: <response-ID>` for a call sent
with `Content-ID: <ID>`. At most 100 calls a batch, and the payload under 10 MB. Each call still
counts as one operation for quotas and billing: a batch saves round trips, not operations.
"""
from __future__ import annotations

import email.parser
import email.policy
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any, Sequence

from .errors import WfrError

PATH = "/batch/storage/v1"
MAX_CALLS = 100
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: ([^\r\n]*))?", re.ASCII)


@dataclass(frozen=True)
class Call:
    method: str
    path: str              # the URL's path and query, e.g. /storage/v1/b/B/o/O?ifMetagenerationMatch=3
    body: Any = None       # sent as JSON; None sends no body


@dataclass(frozen=True)
class Answer:
    code: int
    reason: str
    content: bytes         # the answer's body (JSON from the JSON API)


def encode(calls: Sequence[Call]) -> tuple[str, bytes]:
    """The Content-Type and body of a batch request of `calls`, call n with `Content-ID: <n>`."""
    assert 0 < len(calls) <= MAX_CALLS, "split calls into batches of at most MAX_CALLS"
    boundary = f"batch_{secrets.token_hex(16)}"   # 128 random bits: never in a JSON body by chance
    out = bytearray()
    for number, call in enumerate(calls):
        out += (f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <{number}>\r\n\r\n"
                f"{call.method} {call.path} HTTP/1.1\r\n").encode()
        data = b"" if call.body is None else json.dumps(call.body).encode()
        if data:
            out += f"Content-Type: application/json; charset=UTF-8\r\nContent-Length: {len(data)}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/mixed; boundary={boundary}", bytes(out)


def decode(content_type: str, content: bytes, count: int) -> list[Answer]:
    """The answers to a batch of `count` calls made by encode(), in the calls' order (matched by
    Content-ID); a WfrError when the answer does not hold one well-formed part per call."""
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n" + content)
    answers: dict[int, Answer] = {}
    for part in message.get_payload() if message.is_multipart() else []:
        number = re.fullmatch(r"<response-([0-9]{1,3})>", str(part.get("Content-ID") or ""), re.ASCII)
        response = part.get_payload(decode=True) or b""
        head, body = (re.split(rb"\r?\n\r?\n", response, maxsplit=1) + [b""])[:2]
        status = _STATUS_LINE.fullmatch(head.split(b"\n", 1)[0].rstrip(b"\r"))
        if number and status:
            answers[int(number[1])] = Answer(int(status[1]), (status[2] or b"").decode("latin-1"), body)
    if sorted(answers) != list(range(count)):
        raise WfrError(f"a batch of {count} calls was answered with {len(answers)} well-formed parts "
                       f"({content_type or 'no Content-Type'})")
    return [answers[number] for number in range(count)]
