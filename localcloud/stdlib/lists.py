"""list.concat and list.prepend: a copy of `objs` with `val` added; `objs` is not modified.

https://cloud.google.com/workflows/docs/reference/stdlib/list/concat
https://cloud.google.com/workflows/docs/reference/stdlib/list/prepend
"""
from __future__ import annotations

from ..errors import fail
from . import builtin
from ..values import type_name


@builtin("list.concat")
def concat(context, objs, val):
    _check_list("list.concat", objs)
    return [*objs, val]


@builtin("list.prepend")
def prepend(context, objs, val):
    _check_list("list.prepend", objs)
    return [val, *objs]


def _check_list(function: str, objs) -> None:
    if not isinstance(objs, list):
        fail("TypeError", f"{function}: objs must be a list, got {type_name(objs)}")
