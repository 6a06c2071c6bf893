"""math.abs, math.floor, math.max, math.min.

https://cloud.google.com/workflows/docs/reference/stdlib/math/abs (and floor, max, min)
Integers stay integers; math.floor of a double returns an integer.
"""
from __future__ import annotations

import math

from ..errors import fail
from . import builtin
from ..values import is_number, type_name


@builtin("math.abs")
def abs_(context, x):
    _numbers("math.abs", x=x)
    return abs(x)


@builtin("math.floor")
def floor(context, x):
    _numbers("math.floor", x=x)
    if isinstance(x, float) and not math.isfinite(x):
        fail("ValueError", f"math.floor: cannot floor {x}")
    return math.floor(x)


@builtin("math.max")
def max_(context, x, y):
    _numbers("math.max", x=x, y=y)
    return y if y > x else x


@builtin("math.min")
def min_(context, x, y):
    _numbers("math.min", x=x, y=y)
    return y if y < x else x


def _numbers(function: str, **arguments) -> None:
    for name, value in arguments.items():
        if not is_number(value):
            fail("TypeError", f"{function}: {name} must be a number, got {type_name(value)}")
