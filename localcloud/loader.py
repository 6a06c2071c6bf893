"""Load a workflow file and check it as `gcloud workflows deploy` would, before anything runs.

The result is a model.Workflow, a tree of small step objects with every `${...}` already parsed,
so the runtime never parses text. Each step is compiled here, with the checks one step can make
on its own; checks.py then checks what needs the whole subworkflow. Anything the engine does not
support is a LoadError naming the construct.
Syntax: https://cloud.google.com/workflows/docs/reference/syntax
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from . import checks, stdlib
from . import expressions as ex
from .errors import LoadError
from .model import (Assign, Call, Condition, For, Loop, Nested, Param, Parallel, Raise, RetryPolicy, Return,
                    Step, Steps, Subworkflow, Switch, Target, Try, Workflow)
from .values import is_int

MAX_SOURCE_BYTES = 128 * 1024      # workflow source size (Workflows quotas: resource limits)
MAX_ASSIGNMENTS = 50               # per assign step
MAX_CONDITIONS = 50                # per switch step
MAX_BRANCHES = 10                  # per parallel step
RESERVED_NEXT = {"end", "break", "continue"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Default retry policies (https://cloud.google.com/workflows/docs/reference/stdlib/http/default_retry,
# .../default_retry_non_idempotent): 5 retries, backoff as retry.default_backoff
# (https://cloud.google.com/workflows/docs/reference/stdlib/retry/default_backoff): 1 s, max 60 s, x1.25.
DEFAULT_BACKOFF = (1.0, 60.0, 1.25)
NAMED_POLICIES = {
    "http.default_retry": "http.default_retry_predicate",
    "http.default_retry_non_idempotent": "http.default_retry_predicate_non_idempotent",
}


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML, except that unquoted dates and times stay the strings they were written as,
    and a key written twice in one map is an error rather than silently the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_file(path: str | Path) -> Workflow:
    return load_text(Path(path).read_text(encoding="utf-8"))


def load_text(text: str) -> Workflow:
    if len(text.encode("utf-8")) > MAX_SOURCE_BYTES:
        raise LoadError(f"workflow source is larger than {MAX_SOURCE_BYTES // 1024} KB")
    try:
        document = json.loads(text) if text.lstrip()[:1] in ("{", "[") else yaml.load(text, _YamlLoader)
    except (ValueError, yaml.YAMLError) as err:
        try:
            document = yaml.load(text, _YamlLoader)
        except yaml.YAMLError:
            raise LoadError(f"not valid YAML or JSON: {err}") from None
    return _Compiler(document, _step_positions(text)).compile()


def _step_positions(text: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(routine, step name) -> (line, column), both from 1, read from the YAML node tree."""
    try:
        root = yaml.compose(text, _YamlLoader)
    except yaml.YAMLError:
        return {}
    positions: dict[tuple[str, str], tuple[int, int]] = {}

    def walk(node: Any, routine: str) -> None:
        if isinstance(node, yaml.SequenceNode):
            for item in node.value:
                if isinstance(item, yaml.MappingNode) and len(item.value) == 1:
                    key, value = item.value[0]
                    if isinstance(key, yaml.ScalarNode) and isinstance(value, yaml.MappingNode):
                        mark = key.start_mark
                        positions.setdefault((routine, key.value), (mark.line + 1, mark.column + 1))
                walk(item, routine)
        elif isinstance(node, yaml.MappingNode):
            for _, value in node.value:
                walk(value, routine)

    if isinstance(root, yaml.MappingNode):
        for key, value in root.value:
            walk(value, key.value)
    else:
        walk(root, "main")
    return positions


class _Compiler:
    def __init__(self, document: Any, positions: dict[tuple[str, str], tuple[int, int]]):
        self.document = document
        self.positions = positions
        self.routines: dict[str, list[Param]] = {}
        self.routine = "main"

    def compile(self) -> Workflow:
        doc = self.document
        if isinstance(doc, list):
            raw_routines = {"main": {"steps": doc}}
        elif isinstance(doc, dict):
            raw_routines = doc
            if "main" not in doc:
                raise LoadError("no 'main' workflow: a file is a list of steps or a map of subworkflows with 'main'")
            if next(iter(doc)) != "main":
                raise LoadError("'main' must come first: subworkflows are defined after the main workflow")
        else:
            raise LoadError("a workflow is a list of steps or a map of subworkflows with 'main'")
        for name, body in raw_routines.items():
            where = f"subworkflow '{name}'"
            if not isinstance(name, str) or not _IDENTIFIER.match(name):
                raise LoadError(f"{where}: invalid subworkflow name")
            _mapping(body, where)
            _keys(body, {"params", "steps"}, where)
            if "steps" not in body:
                raise LoadError(f"{where}: missing 'steps'")
            self.routines[name] = self.params(body.get("params", []), where)
        if len(self.routines["main"]) > 1:
            raise LoadError("main accepts at most one parameter (the whole argument)")
        result = {}
        for name, body in raw_routines.items():
            self.step_names: set[str] = set()
            self.routine = name
            steps = self.steps(body["steps"], f"subworkflow '{name}'")
            result[name] = Subworkflow(name, self.routines[name], steps)
            checks.check(result[name])
        return Workflow(result)

    def params(self, raw: Any, where: str) -> list[Param]:
        if not isinstance(raw, list):
            raise LoadError(f"{where}: 'params' must be a list")
        params = []
        for item in raw:
            if isinstance(item, str):
                params.append(Param(_identifier(item, f"{where} params"), False))
            elif isinstance(item, dict) and len(item) == 1:
                (name, default), = item.items()
                params.append(Param(_identifier(name, f"{where} params"), True, default))
            else:
                raise LoadError(f"{where}: a param is a name or a single 'name: default' map")
        return params

    # -- steps

    def steps(self, raw: Any, where: str) -> Steps:
        if not isinstance(raw, list) or not raw:
            raise LoadError(f"{where}: 'steps' must be a non-empty list of steps")
        steps = []
        for item in raw:
            if not isinstance(item, dict) or len(item) != 1:
                raise LoadError(f"{where}: each step is a map with exactly one key, the step name")
            (name, body), = item.items()
            if not isinstance(name, str) or not name:
                raise LoadError(f"{where}: a step name must be a non-empty string")
            if name in RESERVED_NEXT:
                raise LoadError(f"{where}: '{name}' is reserved and cannot name a step")
            if name in self.step_names:
                raise LoadError(f"{where}: duplicate step name '{name}'")
            self.step_names.add(name)
            step = self.step(name, body, f"step '{name}'")
            step.line, step.column = self.positions.get((self.routine, name), (0, 0))
            steps.append(step)
        return Steps(steps, {step.name: i for i, step in enumerate(steps)})

    def step(self, name: str, body: Any, where: str) -> Step:
        _mapping(body, where)
        kinds = [k for k in ("assign", "call", "switch", "for", "parallel", "try", "raise", "return", "steps")
                 if k in body]
        if len(kinds) > 1:
            raise LoadError(f"{where}: a step has one kind, found {' and '.join(kinds)}")
        kind = kinds[0] if kinds else "next"
        allowed = {
            "assign": {"assign", "next"}, "call": {"call", "args", "result", "next"},
            "switch": {"switch", "next"}, "for": {"for", "next"}, "parallel": {"parallel", "next"},
            "try": {"try", "retry", "except", "next"}, "raise": {"raise"}, "return": {"return"},
            "steps": {"steps", "next"}, "next": {"next"},
        }[kind]
        _keys(body, allowed, where)
        nxt = self.next(body.get("next"), where) if "next" in body else None
        if kind == "next" and nxt is None:
            raise LoadError(f"{where}: empty step (no known step kind)")
        return getattr(self, f"step_{kind}")(name, nxt, body, where)

    def next(self, raw: Any, where: str) -> str:
        if not isinstance(raw, str) or not raw:
            raise LoadError(f"{where}: 'next' must be a step name, end, break or continue")
        return raw

    def step_next(self, name: str, nxt: str | None, body: dict, where: str) -> Step:
        return Step(name, nxt)

    def step_assign(self, name: str, nxt: str | None, body: dict, where: str) -> Step:
        return Assign(name, nxt, self.assignments(body["assign"], where))

    def assignments(self, raw: Any, where: str) -> list[tuple[Target, ex.Node]]:
        if not isinstance(raw, list) or not raw:
            raise LoadError(f"{where}: 'assign' must be a non-empty list of 'name: value' maps")
        if len(raw) > MAX_ASSIGNMENTS:
            raise LoadError(f"{where}: {len(raw)} assignments in one assign step; the limit is {MAX_ASSIGNMENTS}")
        items = []
        for item in raw:
            if not isinstance(item, dict) or len(item) != 1:
                raise LoadError(f"{where}: each assignment is a map with exactly one 'name: value'")
            (target, value), = item.items()
            items.append((self.target(target, where), self.value(value, where)))
        return items

    def target(self, raw: Any, where: str) -> Target:
        if not isinstance(raw, str):
            raise LoadError(f"{where}: assignment target {raw!r} is not a variable name")
        try:
            node = ex.parse(raw)
        except ex.ExpressionSyntaxError as err:
            raise LoadError(f"{where}: invalid assignment target '{raw}': {err}") from None
        path: list[ex.Node] = []
        while isinstance(node, (ex.Attr, ex.Index)):
            path.append(ex.Const(node.key) if isinstance(node, ex.Attr) else node.index)
            node = node.target
        if not isinstance(node, ex.Var):
            raise LoadError(f"{where}: invalid assignment target '{raw}'")
        self.check_calls(path, where)
        return Target(node.name, tuple(reversed(path)), raw)

    def step_call(self, name: str, nxt: str | None, body: dict, where: str) -> Step:
        function = body["call"]
        if not isinstance(function, str):
            raise LoadError(f"{where}: 'call' must name a function or subworkflow")
        args = body.get("args", {})
        if not isinstance(args, dict):
            raise LoadError(f"{where}: 'args' must be a map")
        result = _identifier(body["result"], f"{where} result") if "result" in body else None
        self.check_arguments(function, [], args, where)
        compiled = {str(k): self.value(v, f"{where} args.{k}") for k, v in args.items()}
        return Call(name, nxt, function, function in self.routines, compiled, result)

    def step_switch(self, name: str, nxt: str | None, body: dict, where: str) -> Step:
        raw = body["switch"]
        if not isinstance(raw, list) or not raw:
            raise LoadError(f"{where}: 'switch' must be a non-empty list of conditions")
        if len(raw) > MAX_CONDITIONS:
            raise LoadError(f"{where}: {len(raw)} conditions; the limit is {MAX_CONDITIONS}")
        conditions = []
        for item in raw:
            _mapping(item, f"{where} switch")
            _keys(item, {"condition", "next", "steps", "assign", "return", "raise"}, f"{where} switch")
            if "condition" not in item:
                raise LoadError(f"{where}: each switch entry needs a 'condition'")
            actions = {"next", "steps", "assign", "return", "raise"} & item.keys()
            if not actions:
                raise LoadError(f"{where}: a switch condition needs next, steps, assign, return or raise")
            if len({"return", "raise"} & item.keys()) > 1:
                raise LoadError(f"{where}: a switch condition cannot both return and raise")
            conditions.append(Condition(
                condition=self.value(item["condition"], f"{where} condition"),
                assign=self.assignments(item["assign"], where) if "assign" in item else None,
                steps=self.steps(item["steps"], f"{where} switch") if "steps" in item else None,
                raise_=self.value(item["raise"], where) if "raise" in item else None,
                return_=self.value(item["return"], where) if "return" in item else None,
                next=self.next(item["next"], where) if "next" in item else None,
            ))
        return Switch(name, nxt, conditions)

    def loop(self, raw: Any, where: str) -> Loop:
        _mapping(raw, f"{where} for")
        _keys(raw, {"value", "index", "in", "range", "steps"}, f"{where} for")
        if "value" not in raw or "steps" not in raw:
            raise LoadError(f"{where}: 'for' needs 'value' and 'steps'")
        if ("in" in raw) == ("range" in raw):
            raise LoadError(f"{where}: 'for' needs exactly one of 'in' and 'range'")
        if "index" in raw and "range" in raw:
            raise LoadError(f"{where}: 'index' is only supported with 'in', not with 'range'")
        return Loop(
            value=_identifier(raw["value"], f"{where} for value"),
            index=_identifier(raw["index"], f"{where} for index") if "index" in raw else None,
            items=self.value(raw["in"], f"{where} for in") if "in" in raw else None,
            range=self.value(raw["range"], f"{where} for range") if "range" in raw else None,
            body=self.steps(raw["steps"], f"{where} for"),
        )

    def step_for(self, name: str, nxt: str | None, body: dict, where: str) -> Step:
        return For(name, nxt, self.loop(body["for"], where))

    def step_parallel(self, name: str, nxt: str | None, body: dict, where: str) -> Step:
        raw = body["parallel"]
        _mapping(raw, f"{where} parallel")
        _keys(raw, {"exception_policy", "shared", "concurrency_limit", "branches", "for"}, f"{where} parallel")
        if ("branches" in raw) == ("for" in raw):
            raise LoadError(f"{where}: 'parallel' needs exactly one of 'branches' and 'for'")
        policy = raw.get("exception_policy", "continueAll")
        if policy != "continueAll":
            raise LoadError(f"{where}: exception_policy '{policy}' is not supported (only continueAll exists)")
        shared = raw.get("shared", [])
        if not isinstance(shared, list):
            raise LoadError(f"{where}: 'shared' must be a list of variable names")
        shared = tuple(_identifier(v, f"{where} shared") for v in shared)
        limit = raw.get("concurrency_limit")
        if limit is not None and not (isinstance(limit, str) or (is_int(limit) and limit > 0)):
            raise LoadError(f"{where}: concurrency_limit must be a positive integer")
        limit_node = self.value(limit, f"{where} concurrency_limit") if limit is not None else None
        if "for" in raw:
            return Parallel(name, nxt, shared, limit_node, None, self.loop(raw["for"], where))
        branches_raw = raw["branches"]
        if not isinstance(branches_raw, list) or not branches_raw:
            raise LoadError(f"{where}: 'branches' must be a non-empty list")
        if len(branches_raw) > MAX_BRANCHES:
            raise LoadError(f"{where}: {len(branches_raw)} branches; the limit is {MAX_BRANCHES}")
        branches = []
        for item in branches_raw:
            if not isinstance(item, dict) or len(item) != 1:
                raise LoadError(f"{where}: each branch is a map with exactly one key, the branch name")
            (branch, branch_body), = item.items()
            _mapping(branch_body, f"branch '{branch}'")
            _keys(branch_body, {"steps"}, f"branch '{branch}'")
            if branch in self.step_names:
                raise LoadError(f"{where}: duplicate step name '{branch}'")
            self.step_names.add(branch)
            branches.append((str(branch), self.steps(branch_body.get("steps"), f"branch '{branch}'")))
        return Parallel(name, nxt, shared, limit_node, branches, None)

    def step_try(self, name: str, nxt: str | None, body: dict, where: str) -> Step:
        inner = self.step(name, body["try"], f"{where} try")
        if inner.next is not None:
            raise LoadError(f"{where}: put 'next' on the try step, not inside 'try'")
        retry = self.retry(body["retry"], where) if "retry" in body else None
        except_as, except_steps = None, None
        if "except" in body:
            raw = body["except"]
            _mapping(raw, f"{where} except")
            _keys(raw, {"as", "steps"}, f"{where} except")
            if "steps" not in raw:
                raise LoadError(f"{where}: 'except' needs 'steps'")
            except_as = _identifier(raw["as"], f"{where} except as") if "as" in raw else None
            except_steps = self.steps(raw["steps"], f"{where} except")
        if retry is None and except_steps is None:
            raise LoadError(f"{where}: 'try' needs 'retry' or 'except'")
        return Try(name, nxt, inner, retry, except_as, except_steps)

    def retry(self, raw: Any, where: str) -> RetryPolicy:
        initial, maximum, multiplier = (ex.Const(v) for v in DEFAULT_BACKOFF)
        if isinstance(raw, str):
            name = self.reference(raw, f"{where} retry")
            if name not in NAMED_POLICIES:
                raise LoadError(f"{where}: unknown retry policy '{raw}' (use ${{http.default_retry}}, "
                                "${http.default_retry_non_idempotent} or a map with predicate and max_retries)")
            predicate = NAMED_POLICIES[name]
            self.check_function(predicate, where)
            return RetryPolicy(predicate, False, ex.Const(5), initial, maximum, multiplier)
        _mapping(raw, f"{where} retry")
        _keys(raw, {"predicate", "max_retries", "backoff"}, f"{where} retry")
        if "predicate" not in raw or "max_retries" not in raw:
            raise LoadError(f"{where}: a custom retry policy needs 'predicate' and 'max_retries'")
        predicate = self.reference(raw["predicate"], f"{where} retry predicate")
        is_subworkflow = predicate in self.routines
        if not is_subworkflow:
            self.check_function(predicate, where)
        if "backoff" in raw:
            backoff = raw["backoff"]
            _mapping(backoff, f"{where} backoff")
            _keys(backoff, {"initial_delay", "max_delay", "multiplier"}, f"{where} backoff")
            missing = {"initial_delay", "max_delay", "multiplier"} - backoff.keys()
            if missing:
                raise LoadError(f"{where}: backoff needs '{sorted(missing)[0]}'")
            initial, maximum, multiplier = (self.value(backoff[k], f"{where} backoff")
                                            for k in ("initial_delay", "max_delay", "multiplier"))
        return RetryPolicy(predicate, is_subworkflow, self.value(raw["max_retries"], f"{where} max_retries"),
                           initial, maximum, multiplier)

    def reference(self, raw: Any, where: str) -> str:
        """`${http.default_retry_predicate}` or `${my_predicate}` -> the dotted name."""
        inside = ex.whole_expression(raw) if isinstance(raw, str) else None
        try:
            name = ex.dotted_name(ex.parse(inside)) if inside else None
        except ex.ExpressionSyntaxError:
            name = None
        if not name:
            raise LoadError(f"{where}: expected a name in ${{...}}, got {raw!r}")
        return name

    def step_raise(self, name: str, nxt: str | None, body: dict, where: str) -> Step:
        return Raise(name, None, self.value(body["raise"], where))

    def step_return(self, name: str, nxt: str | None, body: dict, where: str) -> Step:
        return Return(name, None, self.value(body["return"], where))

    def step_steps(self, name: str, nxt: str | None, body: dict, where: str) -> Step:
        return Nested(name, nxt, self.steps(body["steps"], where))

    # -- values and expressions

    def value(self, raw: Any, where: str) -> ex.Node:
        if isinstance(raw, str):
            inside = ex.whole_expression(raw)
            if inside is None:
                return ex.Const(raw)
            if len(inside) > ex.MAX_EXPRESSION_LENGTH:
                raise LoadError(f"{where}: expression longer than {ex.MAX_EXPRESSION_LENGTH} characters")
            try:
                node = ex.parse(inside)
            except ex.ExpressionSyntaxError as err:
                raise LoadError(f"{where}: invalid expression '{raw}': {err}") from None
            self.check_calls([node], where)
            return node
        if isinstance(raw, list):
            return ex.ListLit(tuple(self.value(item, where) for item in raw))
        if isinstance(raw, dict):
            # A key may itself be an expression: `${dynamicKey}: "Apple"` (syntax/variables, maps).
            return ex.MapLit(tuple((self.value(k, where) if isinstance(k, str) else ex.Const(str(k)),
                                    self.value(v, where)) for k, v in raw.items()))
        if raw is None or isinstance(raw, (bool, int, float)):
            if is_int(raw) and not ex.INT_MIN <= raw <= ex.INT_MAX:
                raise LoadError(f"{where}: integer {raw} does not fit in 64 bits")
            return ex.Const(raw)
        raise LoadError(f"{where}: unsupported value {raw!r}")

    def check_calls(self, nodes: list[ex.Node], where: str) -> None:
        for node in nodes:
            for call in ex.calls(node):
                self.check_arguments(call.name, call.args, {}, where)

    def check_arguments(self, function: str, positional: tuple | list, named: dict, where: str) -> None:
        """The same binding as Builtin.call and subworkflow calls, done once before running."""
        if function in self.routines:
            params = self.routines[function]
            names, required = [p.name for p in params], {p.name for p in params if not p.has_default}
        else:
            builtin = self.check_function(function, where)
            names, required = list(builtin.params), builtin.required
        if len(positional) > len(names):
            raise LoadError(f"{where}: {function} takes at most {len(names)} arguments, got {len(positional)}")
        given = set(names[:len(positional)])
        for name in named:
            if name not in names:
                raise LoadError(f"{where}: {function} has no parameter '{name}'")
            given.add(name)
        missing = sorted(set(required) - given)
        if missing:
            raise LoadError(f"{where}: {function} is missing argument '{missing[0]}'")

    def check_function(self, name: str, where: str) -> stdlib.Builtin:
        builtin = stdlib.get(name)
        if builtin is not None:
            return builtin
        if name.startswith("googleapis."):
            raise LoadError(f"{where}: connector '{name}' is not supported by localcloud")
        raise LoadError(f"{where}: unknown function or subworkflow '{name}'")


def _mapping(value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise LoadError(f"{where}: expected a map, got {type(value).__name__}")


def _keys(value: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise LoadError(f"{where}: unknown or unsupported key '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")


def _identifier(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise LoadError(f"{where}: {value!r} is not a valid variable name")
    return value
