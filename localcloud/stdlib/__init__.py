"""The Workflows standard library and connectors, as one registry of builtins.

A builtin is called from an expression with positional arguments (`${text.split(s, ",")}`) or
from a `call` step with named ones (`args: {source: ..., separator: ...}`); both bind to the
same parameter names, so each builtin declares them once.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from ..context import Context
from ..errors import fail


@dataclass(frozen=True)
class Builtin:
    name: str                  # "json.encode_to_string"
    fn: Callable[..., Any]     # fn(context, **arguments)
    params: tuple[str, ...]    # parameter names in positional order (the context excluded)
    required: frozenset[str]   # names without a default

    def call(self, context: Context, args: list[Any] | None = None,
             kwargs: dict[str, Any] | None = None) -> Any:
        args, kwargs = list(args or []), dict(kwargs or {})
        if len(args) > len(self.params):
            fail("TypeError", f"{self.name}: expected at most {len(self.params)} arguments, got {len(args)}")
        bound = dict(zip(self.params, args))
        for key, value in kwargs.items():
            if key not in self.params:
                fail("TypeError", f"{self.name}: unexpected argument '{key}'")
            if key in bound:
                fail("TypeError", f"{self.name}: argument '{key}' given twice")
            bound[key] = value
        missing = sorted(self.required - bound.keys())
        if missing:
            fail("TypeError", f"{self.name}: missing argument '{missing[0]}'")
        return self.fn(context, **bound)


REGISTRY: dict[str, Builtin] = {}


def builtin(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register fn(context, a, b=default) as the builtin `name` with parameters (a, b)."""
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        parameters = list(inspect.signature(fn).parameters.values())[1:]
        REGISTRY[name] = Builtin(
            name=name, fn=fn, params=tuple(p.name for p in parameters),
            required=frozenset(p.name for p in parameters if p.default is inspect.Parameter.empty))
        return fn
    return register


def get(name: str) -> Builtin | None:
    """The builtin called `name`, or None (the runtime then reports an unknown function)."""
    _load_all()
    return REGISTRY.get(name)


_loaded = False


def _load_all() -> None:
    # Each submodule registers its builtins on import; import them lazily to keep start-up fast.
    global _loaded
    if _loaded:
        return
    import importlib
    import pkgutil
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    _loaded = True
