"""Google's `fields` system parameter: a partial response, the answer cut down to the fields
asked for. https://cloud.google.com/storage/docs/json_api#partial-response gives the syntax, which
every Google JSON API shares:

    a,b       several fields
    a/b       field b inside field a
    a(b,c)    fields b and c inside a, or inside each element of a when a is an array
    *         every field at that level

A field the resource lacks is left out of the answer, not refused: Google refuses a name its
schema does not know, and localcloud does not hold the schemas.
"""
from __future__ import annotations

import copy
import functools
import re
from typing import Any, Optional

# A selection: field name -> what to keep of its value (None: all of it).
Selection = dict[str, Optional["Selection"]]
# Deepest selection read (names from the top, through / and parentheses): the request line allows
# 65,536 bytes, and parsing, merging and applying recurse once per level.
MAX_DEPTH = 100
_TOKEN = re.compile(r"\s*(?:([^\s,()/]+)|([,()/]))\s*")


@functools.lru_cache(maxsize=256)  # a client sends the same few selections on every call
def parse(text: str) -> Selection:
    """The selection `text` asks for (shared between calls: never change it); ValueError when it
    does not parse."""
    tokens = _tokens(text)
    selection, position = _list(tokens, 0, text, 0)
    if position != len(tokens):
        raise _invalid(text)
    return selection


def apply(value: Any, selection: Selection | None) -> Any:
    """`value` with only the selected fields, at every depth; arrays are filtered element-wise."""
    if selection is None:
        return value
    if isinstance(value, list):
        return [apply(item, selection) for item in value]
    if not isinstance(value, dict):
        return value
    every = selection.get("*", False)
    kept = {}
    for key, item in value.items():
        own = selection.get(key, False)
        if own is False and every is False:
            continue
        kept[key] = apply(item, _union(own, every))
    return kept


def _tokens(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise _invalid(text)
        tokens.append(match[1] or match[2])
        position = match.end()
    return tokens


def _list(tokens: list[str], position: int, text: str, depth: int) -> tuple[Selection, int]:
    """item (',' item)*, where item is name ('/' name)* ['(' list ')'], `depth` names down."""
    selection: Selection = {}
    while True:
        path = []
        while True:
            if position >= len(tokens) or tokens[position] in ",()/":
                raise _invalid(text)
            path.append(tokens[position])
            position += 1
            if position < len(tokens) and tokens[position] == "/":
                position += 1
                continue
            break
        if depth + len(path) > MAX_DEPTH:
            raise ValueError(f"Invalid field selection: deeper than {MAX_DEPTH} fields")
        inner: Selection | None = None
        if position < len(tokens) and tokens[position] == "(":
            inner, position = _list(tokens, position + 1, text, depth + len(path))
            if position >= len(tokens) or tokens[position] != ")":
                raise _invalid(text)
            position += 1
        for name in reversed(path):
            inner = {name: inner}
        _merge(selection, inner)
        if position < len(tokens) and tokens[position] == ",":
            position += 1
            continue
        return selection, position


def _merge(into: Selection, more: Selection) -> None:
    for key, value in more.items():
        if key not in into:
            into[key] = value
        elif into[key] is None or value is None:
            into[key] = None  # the whole field wins over a part of it
        else:
            _merge(into[key], value)


def _union(first: Selection | None | bool, second: Selection | None | bool) -> Selection | None:
    """Two selections of one field (False: not selected that way)."""
    if first is False:
        return second
    if second is False or first is None:
        return first
    if second is None:
        return None
    merged = copy.deepcopy(first)  # merging must not change the parsed selection
    _merge(merged, copy.deepcopy(second))
    return merged


def _invalid(text: str) -> ValueError:
    return ValueError(f"Invalid field selection {text}")
