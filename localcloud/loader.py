"""Load a workflow file and check it as `gcloud workflows deploy` would, before anything runs.

The result is a tree of small step objects with every `${...}` already parsed, so the runtime
never parses text. Anything the engine does not support is a LoadError naming the construct.
Syntax: https://cloud.google.com/workflows/docs/reference/syntax
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import expressions as ex
from . import stdlib
from .errors import LoadError
from .values import is_int

MAX_SOURCE_BYTES = 128 * 1024      # workflow source size (Workflows quotas: resource limits)
MAX_ASSIGNMENTS = 50               # per assign step
MAX_CONDITIONS = 50                # per switch step
MAX_BRANCHES = 10                  # per parallel step
MAX_PARALLEL_DEPTH = 2             # parallel steps nested in parallel steps
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


# ----------------------------------------------------------------------------- the model

@dataclass
class Target:
    """An assignment target: `x`, `m.k`, `a[i]`, `m.list[0].k`."""
    root: str
    path: tuple[ex.Node, ...]   # each a key or index expression, evaluated at assignment time
    text: str


@dataclass
class Step:
    name: str
    next: str | None = None
    line: int = field(default=0, kw_only=True)      # where the step is written, for stack traces
    column: int = field(default=0, kw_only=True)


@dataclass
class Steps:
    steps: list[Step]
    index: dict[str, int]


@dataclass
class Assign(Step):
    items: list[tuple[Target, ex.Node]] = field(default_factory=list)


@dataclass
class Call(Step):
    function: str = ""
    subworkflow: bool = False
    args: dict[str, ex.Node] = field(default_factory=dict)
    result: str | None = None


@dataclass
class Condition:
    condition: ex.Node
    assign: list[tuple[Target, ex.Node]] | None = None
    steps: Steps | None = None
    raise_: ex.Node | None = None
    return_: ex.Node | None = None      # `return: null` is Const(None), so None means no return
    next: str | None = None


@dataclass
class Switch(Step):
    conditions: list[Condition] = field(default_factory=list)


@dataclass
class Loop:
    value: str
    index: str | None
    items: ex.Node | None         # `in:`
    range: ex.Node | None         # `range:`
    body: Steps


@dataclass
class For(Step):
    loop: Loop | None = None


@dataclass
class Parallel(Step):
    shared: tuple[str, ...] = ()
    concurrency_limit: ex.Node | None = None
    branches: list[tuple[str, Steps]] | None = None
    loop: Loop | None = None


@dataclass
class RetryPolicy:
    predicate: str                # a builtin or subworkflow name
    predicate_is_subworkflow: bool
    max_retries: ex.Node
    initial_delay: ex.Node
    max_delay: ex.Node
    multiplier: ex.Node


@dataclass
class Try(Step):
    body: Step | None = None
    retry: RetryPolicy | None = None
    except_as: str | None = None
    except_steps: Steps | None = None


@dataclass
class Raise(Step):
    value: ex.Node | None = None


@dataclass
class Return(Step):
    value: ex.Node | None = None


@dataclass
class Nested(Step):
    body: Steps | None = None


@dataclass
class Param:
    name: str
    has_default: bool
    default: Any = None


@dataclass
class Subworkflow:
    name: str
    params: list[Param]
    steps: Steps


@dataclass
class Workflow:
    subworkflows: dict[str, Subworkflow]

    @property
    def main(self) -> Subworkflow:
        return self.subworkflows["main"]


# ---------------------------------------------------------------------------- entry points

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


# ------------------------------------------------------------------------------ compiling

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
            _Checker(result[name]).check()
            _References(result[name]).check()
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
        self.functions(node_list=path, where=where)
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
            self.functions([node], where)
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

    def functions(self, node_list: list[ex.Node], where: str) -> None:
        for node in node_list:
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


# ------------------------------------------------------------------------------- checking

class _Checker:
    """Rules that need the whole tree: `next` targets, parallel scoping, nesting."""

    def __init__(self, routine: Subworkflow):
        self.routine = routine

    def check(self) -> None:
        defined = {p.name for p in self.routine.params}
        self.walk(self.routine.steps, [self.routine.steps], defined, parallel=None, depth=0, in_loop=False)

    def walk(self, steps: Steps, visible: list[Steps], defined: set[str],
             parallel: tuple[set[str], set[str]] | None, depth: int, in_loop: bool) -> None:
        """`visible`: step lists `next` may jump to; `parallel`: (parent variables, shared) in a branch."""
        for step in steps.steps:
            where = f"step '{step.name}'"
            if step.next is not None:
                self.jump(step.next, visible, where, in_loop, parallel is not None)
            if isinstance(step, Assign):
                self.assigns([t for t, _ in step.items], defined, parallel, where)
            elif isinstance(step, Call) and step.result:
                self.assigns([step.result], defined, parallel, where)
            elif isinstance(step, Switch):
                for cond in step.conditions:
                    if cond.next is not None:
                        self.jump(cond.next, visible, where, in_loop, parallel is not None)
                    if cond.assign:
                        self.assigns([t for t, _ in cond.assign], defined, parallel, where)
                    if cond.return_ is not None and parallel is not None:
                        raise LoadError(f"{where}: 'return' inside a parallel branch is not supported")
                    if cond.steps is not None:
                        self.walk(cond.steps, visible + [cond.steps], defined, parallel, depth, in_loop)
            elif isinstance(step, For):
                # "Jumping in or out of a for loop ... is not allowed" (syntax/iteration).
                self.walk(step.loop.body, [step.loop.body], self.loop_defined(defined, step.loop),
                          self.loop_scope(parallel, step.loop), depth, in_loop=True)
            elif isinstance(step, Parallel):
                if depth + 1 > MAX_PARALLEL_DEPTH:
                    raise LoadError(f"{where}: parallel steps nest at most {MAX_PARALLEL_DEPTH} deep")
                missing = [v for v in step.shared if v not in defined]
                if missing:
                    raise LoadError(f"{where}: shared variable '{missing[0]}' must be assigned before the parallel step")
                scope = (set(defined), set(step.shared))
                if step.loop is not None:
                    self.walk(step.loop.body, [step.loop.body], self.loop_defined(defined, step.loop),
                              self.loop_scope(scope, step.loop), depth + 1, in_loop=False)
                else:
                    for _, body in step.branches or []:
                        self.walk(body, [body], set(defined), scope, depth + 1, in_loop=False)
            elif isinstance(step, Try):
                self.walk(Steps([step.body], {}), visible, defined, parallel, depth, in_loop)
                if step.except_steps is not None:
                    # An except block is a scope of its own; `as` binds a new variable in it.
                    inner = set(defined) | ({step.except_as} if step.except_as else set())
                    handler = None if parallel is None else (parallel[0] - {step.except_as}, parallel[1])
                    self.walk(step.except_steps, visible + [step.except_steps], inner, handler, depth, in_loop)
            elif isinstance(step, Nested):
                self.walk(step.body, visible + [step.body], defined, parallel, depth, in_loop)
            elif isinstance(step, Return) and parallel is not None:
                raise LoadError(f"{where}: 'return' inside a parallel branch is not supported")

    @staticmethod
    def loop_defined(defined: set[str], loop: Loop) -> set[str]:
        """A loop body sees the enclosing variables plus its own value and index."""
        return defined | {name for name in (loop.value, loop.index) if name}

    @staticmethod
    def loop_scope(parallel: tuple[set[str], set[str]] | None, loop: Loop) -> tuple[set[str], set[str]] | None:
        if parallel is None:
            return None
        return parallel[0] - {loop.value, loop.index}, parallel[1]

    @staticmethod
    def assigns(targets: list[Target | str], defined: set[str], parallel: tuple[set[str], set[str]] | None,
                where: str) -> None:
        for target in targets:
            root = target if isinstance(target, str) else target.root
            if parallel is not None and root in parallel[0] and root not in parallel[1]:
                raise LoadError(f"{where}: assigns parent variable '{root}' inside a parallel step; "
                                f"list it in 'shared'")
            defined.add(root)

    @staticmethod
    def jump(target: str, visible: list[Steps], where: str, in_loop: bool, in_parallel: bool) -> None:
        if target in ("break", "continue"):
            if not in_loop:
                raise LoadError(f"{where}: 'next: {target}' outside a for loop")
            return
        if target == "end":
            if in_parallel:
                raise LoadError(f"{where}: 'next: end' inside a parallel branch is not supported")
            return
        if not any(target in steps.index for steps in visible):
            raise LoadError(f"{where}: 'next: {target}' does not name a step it can jump to")


class _References:
    """Every variable an expression reads must exist in its scope, as a deploy checks.

    "A variable created inside a for loop belongs to the local scope of that loop ... accessing
    it outside of the loop will raise an error when deploying the workflow. This local scoping
    also applies to any variable created inside an except block." (syntax/variables). A parallel
    branch or iteration is a scope too. Within one scope the order of steps is not considered:
    `next` can jump backwards, so only the run can tell.
    """

    def __init__(self, routine: Subworkflow):
        self.routine = routine

    def check(self) -> None:
        self.scope(self.routine.steps, {p.name for p in self.routine.params})

    def scope(self, steps: Steps, outer: set[str], *own: str | None) -> None:
        visible = outer | {name for name in own if name} | self.defined(steps.steps)
        for step in steps.steps:
            self.step(step, visible)

    def defined(self, steps: list[Step]) -> set[str]:
        """Variables a list of steps creates in its own scope (not in loops, branches, excepts)."""
        names: set[str] = set()
        for step in steps:
            if isinstance(step, Assign):
                names |= {t.root for t, _ in step.items if not t.path}
            elif isinstance(step, Call) and step.result:
                names.add(step.result)
            elif isinstance(step, Switch):
                for cond in step.conditions:
                    names |= {t.root for t, _ in cond.assign or [] if not t.path}
                    names |= self.defined(cond.steps.steps) if cond.steps else set()
            elif isinstance(step, Try):
                names |= self.defined([step.body])
            elif isinstance(step, Nested):
                names |= self.defined(step.body.steps)
        return names

    def step(self, step: Step, visible: set[str]) -> None:
        where = f"step '{step.name}'"
        if isinstance(step, Assign):
            self.assignments(step.items, visible, where)
        elif isinstance(step, Call):
            self.reads(step.args.values(), visible, where)
        elif isinstance(step, Switch):
            for cond in step.conditions:
                self.reads([cond.condition, cond.raise_, cond.return_], visible, where)
                self.assignments(cond.assign or [], visible, where)
                for inner in cond.steps.steps if cond.steps else []:
                    self.step(inner, visible)
        elif isinstance(step, For):
            self.loop(step.loop, visible, where)
        elif isinstance(step, Parallel):
            self.reads([step.concurrency_limit], visible, where)
            if step.loop is not None:
                self.loop(step.loop, visible, where)
            for _, body in step.branches or []:
                self.scope(body, visible)
        elif isinstance(step, Try):
            self.step(step.body, visible)
            if step.retry is not None:
                policy = step.retry
                self.reads([policy.max_retries, policy.initial_delay, policy.max_delay, policy.multiplier],
                           visible, where)
            if step.except_steps is not None:
                self.scope(step.except_steps, visible, step.except_as)
        elif isinstance(step, (Raise, Return)):
            self.reads([step.value], visible, where)
        elif isinstance(step, Nested):
            for inner in step.body.steps:
                self.step(inner, visible)

    def loop(self, loop: Loop, visible: set[str], where: str) -> None:
        self.reads([loop.items, loop.range], visible, where)
        self.scope(loop.body, visible, loop.value, loop.index)

    def assignments(self, items: list[tuple[Target, ex.Node]], visible: set[str], where: str) -> None:
        for target, value in items:
            if target.path and target.root not in visible:
                raise LoadError(f"{where}: assigns into '{target.text}' but '{target.root}' is not defined here")
            self.reads([*target.path, value], visible, where)

    @staticmethod
    def reads(nodes: Any, visible: set[str], where: str) -> None:
        for node in nodes:
            if node is None:
                continue
            missing = sorted(ex.variables(node) - visible)
            if missing:
                raise LoadError(f"{where}: variable '{missing[0]}' is not defined here (variables created "
                                "in a for loop, an except block or a parallel branch stay inside it)")


# -------------------------------------------------------------------------------- helpers

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
