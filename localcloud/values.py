"""Small checks on Workflows values, which are plain Python: None, bool, int, float, str, bytes,
list, dict. A bool is never a number here, although Python says it is an int.

The one copy for the expressions, the loader, the runtime and the stdlib."""
from __future__ import annotations

from typing import Any

from .errors import fail


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    for kind, name in ((int, "integer"), (float, "double"), (str, "string"), ((bytes, bytearray), "bytes"),
                       (list, "list"), (dict, "map")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def expect(value: Any, kind: type | tuple[type, ...], what: str, function: str) -> Any:
    """Raise the TypeError Workflows raises when an argument has the wrong type."""
    bad_bool = isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    if bad_bool or not isinstance(value, kind):
        fail("TypeError", f"{function}: {what} must be {_kind_name(kind)}, got {type_name(value)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(dict.fromkeys(type_name(k()) for k in kinds))
