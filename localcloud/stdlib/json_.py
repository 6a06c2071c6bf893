"""json.encode, json.encode_to_string, json.decode.

https://cloud.google.com/workflows/docs/reference/stdlib/json/encode
https://cloud.google.com/workflows/docs/reference/stdlib/json/encode_to_string
https://cloud.google.com/workflows/docs/reference/stdlib/json/decode

Bytes are Python `bytes` everywhere in localcloud (json.encode returns them; json.decode,
text.decode, base64.encode and http bodies accept them). They cannot be JSON-encoded.

Output is compact (no spaces) with map keys sorted: the docs do not state a key order, but the
maps Google returns (error maps such as {"body","code","headers","message","tags"}) come out in
key order, and a stable order makes encoded text comparable. With `indent` the layout follows
the documented rule, the same as Go's MarshalIndent: every element after the first line starts
on a new line with `prefix` and one `indent` per nesting level, and a colon is followed by a space.
"""
from __future__ import annotations

import json
import math
from typing import Any

from ..errors import fail
from . import builtin
from ..values import type_name


@builtin("json.encode")
def encode(context, data, indent=None):
    return to_json(data, indent, "json.encode").encode("utf-8")


@builtin("json.encode_to_string")
def encode_to_string(context, data, indent=None):
    return to_json(data, indent, "json.encode_to_string")


@builtin("json.decode")
def decode(context, data):
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")   # as text.decode(data, "UTF-8") would
    if not isinstance(data, str):
        fail("TypeError", f"json.decode: data must be bytes or a string, got {type_name(data)}")
    try:
        return json.loads(data, parse_constant=_reject_constant)
    except ValueError as error:
        fail("ValueError", f"json.decode: invalid JSON: {error}")


def to_json(data: Any, indent: Any = None, function: str = "json.encode") -> str:
    """The JSON text of a Workflows value (shared with sys.log and http bodies)."""
    _check_encodable(data, function)
    if indent is None or indent is False:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    prefix, step = _indent_options(indent, function)
    text = json.dumps(data, sort_keys=True, indent=step, ensure_ascii=False)
    return text.replace("\n", "\n" + prefix)


def _indent_options(indent: Any, function: str) -> tuple[str, str]:
    if indent is True:
        return "", "    "
    if isinstance(indent, dict):
        unknown = set(indent) - {"prefix", "indent"}
        prefix, step = indent.get("prefix", ""), indent.get("indent", "    ")
        if not unknown and isinstance(prefix, str) and isinstance(step, str):
            return prefix, step
    fail("TypeError", f"{function}: indent must be a boolean or a map with string "
                      "attributes prefix and indent")


def _check_encodable(value: Any, function: str) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            fail("ValueError", f"{function}: {value} cannot be JSON-encoded")
        return
    if isinstance(value, list):
        for item in value:
            _check_encodable(item, function)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                fail("ValueError", f"{function}: map keys must be strings")
            _check_encodable(item, function)
        return
    fail("ValueError", f"{function}: a value of type {type_name(value)} cannot be JSON-encoded")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
