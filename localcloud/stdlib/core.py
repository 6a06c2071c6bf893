"""Expression helpers: len, keys, default, if, int, double, string.

https://cloud.google.com/workflows/docs/reference/stdlib/expression-helpers
(`in` is an operator and belongs to the expression engine.)
"""
from __future__ import annotations

import math
import re

from ..errors import fail
from . import builtin
from ..values import is_int, type_name

_INT_TEXT = re.compile(r"[+-]?\d+")
_DOUBLE_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1


@builtin("len")
def len_(context, value):
    # Strings count characters (code points), lists elements, maps entries.
    if isinstance(value, (str, list, dict)):
        return len(value)
    fail("TypeError", f"len() takes a string, list or map, got {type_name(value)}")


@builtin("keys")
def keys(context, map):
    if not isinstance(map, dict):
        fail("TypeError", f"keys() takes a map, got {type_name(map)}")
    return list(map)


@builtin("default")
def default(context, val, defaultVal):
    return defaultVal if val is None else val


@builtin("if")
def if_(context, condition, ifTrue, ifFalse):
    # A false or null condition selects ifFalse.
    if condition is not None and not isinstance(condition, bool):
        fail("TypeError", f"if() condition must be a boolean, got {type_name(condition)}")
    return ifTrue if condition else ifFalse


@builtin("int")
def int_(context, value):
    if is_int(value):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            fail("ValueError", f"int(): cannot convert {value} to an integer")
        return _in_range(math.trunc(value))   # int(2.7) == 2, as the syntax cheat sheet shows
    if isinstance(value, str):
        if not _INT_TEXT.fullmatch(value):
            fail("ValueError", f"int(): invalid integer string: {value!r}")
        return _in_range(int(value))
    fail("TypeError", f"int() takes a string or a double, got {type_name(value)}")


@builtin("double")
def double(context, value):
    if isinstance(value, float):
        return value
    if is_int(value):
        return float(value)
    if isinstance(value, str):
        if not _DOUBLE_TEXT.fullmatch(value):
            fail("ValueError", f"double(): invalid number string: {value!r}")
        return float(value)
    fail("TypeError", f"double() takes a string or an integer, got {type_name(value)}")


@builtin("string")
def string(context, value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if is_int(value):
        return str(value)
    if isinstance(value, float):
        # Shortest text that reads back as the same double, e.g. "1635892223.4459958"
        # (the stdlib overview's example of string(sys.now())).
        return repr(value)
    fail("TypeError", f"string() takes an integer, double or boolean, got {type_name(value)}")


def _in_range(number: int) -> int:
    if not INT_MIN <= number <= INT_MAX:
        fail("ValueError", "int(): value out of the 64-bit integer range")
    return number
