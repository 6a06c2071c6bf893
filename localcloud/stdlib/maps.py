"""map.get, map.merge, map.merge_nested, map.delete.

https://cloud.google.com/workflows/docs/reference/stdlib/map/get (and merge, merge_nested, delete)
Each function returns a new map; its inputs are never modified.
"""
from __future__ import annotations

from ..errors import fail
from . import builtin
from ..values import type_name


@builtin("map.get")
def get(context, map, keys):
    # A string, or a list of strings for a nested lookup; null wherever a key or a map is missing.
    path = [keys] if isinstance(keys, str) else keys
    if not isinstance(path, list) or not all(isinstance(key, str) for key in path):
        fail("TypeError", f"map.get: keys must be a string or a list of strings, got {type_name(keys)}")
    value = map
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


@builtin("map.merge")
def merge(context, first, second):
    _check_maps("map.merge", first, second)
    return {**first, **second}


@builtin("map.merge_nested")
def merge_nested(context, first, second):
    _check_maps("map.merge_nested", first, second)
    return _merge_nested(first, second)


@builtin("map.delete")
def delete(context, map, key):
    if not isinstance(map, dict):
        fail("TypeError", f"map.delete: map must be a map, got {type_name(map)}")
    if not isinstance(key, str):
        fail("TypeError", f"map.delete: key must be a string, got {type_name(key)}")
    return {k: v for k, v in map.items() if k != key}


def _merge_nested(first: dict, second: dict) -> dict:
    merged = dict(first)
    for key, value in second.items():
        if isinstance(merged.get(key), dict) and isinstance(value, dict):
            merged[key] = _merge_nested(merged[key], value)
        else:
            merged[key] = value
    return merged


def _check_maps(function: str, first, second) -> None:
    for name, value in (("first", first), ("second", second)):
        if not isinstance(value, dict):
            fail("TypeError", f"{function}: {name} must be a map, got {type_name(value)}")
