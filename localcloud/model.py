"""A loaded workflow: a tree of small step objects with every `${...}` already parsed.

The loader builds it, the deploy-time checks walk it, the runtime runs it. Each step kind says
what it holds besides its own fields: the step lists nested in it (`children`), the variables it
assigns itself (`writes`), the expressions it evaluates itself (`reads`) and where it may jump
(`jumps`). So a new step kind is a class here, a compile method in the loader and a handler in the
runtime; the checks need no change.
Syntax: https://cloud.google.com/workflows/docs/reference/syntax
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from . import expressions as ex


@dataclass
class Target:
    """An assignment target: `x`, `m.k`, `a[i]`, `m.list[0].k`."""
    root: str
    path: tuple[ex.Node, ...]   # each a key or index expression, evaluated at assignment time
    text: str


class Scoping(Enum):
    """How a nested step list relates to its parent's variables and jumps (syntax/variables)."""
    INLINE = "inline"   # the parent's scope and jump targets: a switch's or a steps step's steps, a try body
    LOOP = "loop"       # a for loop's body: its own variables; break/continue; no jump in or out
    BRANCH = "branch"   # a parallel branch or iteration: its own variables, the parent's read-only
                        # unless shared; no jump in or out
    EXCEPT = "except"   # an except block: its own variables; may jump to the parent's steps


@dataclass(frozen=True)
class Block:
    """A step list nested in a step."""
    steps: Steps
    scoping: Scoping
    binds: tuple[str, ...] = ()    # variables it starts with: a loop's value and index, except's `as`
    shared: tuple[str, ...] = ()   # BRANCH: the parent variables it may write


@dataclass
class Step:
    """A step with only `next`; the base of every step kind."""
    name: str
    next: str | None = None
    line: int = field(default=0, kw_only=True)      # where the step is written, for stack traces
    column: int = field(default=0, kw_only=True)

    def children(self) -> tuple[Block, ...]:
        return ()

    def writes(self) -> tuple[Target, ...]:
        return ()

    def reads(self) -> tuple[ex.Node | None, ...]:
        return ()

    def jumps(self) -> tuple[str, ...]:
        return (self.next,) if self.next is not None else ()

    def returns(self) -> bool:
        """Whether the step may `return` from its subworkflow itself."""
        return False


@dataclass
class Steps:
    steps: list[Step]
    index: dict[str, int]


def _assignment_reads(items: list[tuple[Target, ex.Node]]) -> tuple[ex.Node, ...]:
    return tuple(node for target, value in items for node in (*target.path, value))


@dataclass
class Assign(Step):
    items: list[tuple[Target, ex.Node]] = field(default_factory=list)

    def writes(self) -> tuple[Target, ...]:
        return tuple(target for target, _ in self.items)

    def reads(self) -> tuple[ex.Node | None, ...]:
        return _assignment_reads(self.items)


@dataclass
class Call(Step):
    function: str = ""
    subworkflow: bool = False
    args: dict[str, ex.Node] = field(default_factory=dict)
    result: str | None = None

    def writes(self) -> tuple[Target, ...]:
        return (Target(self.result, (), self.result),) if self.result else ()

    def reads(self) -> tuple[ex.Node | None, ...]:
        return tuple(self.args.values())


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

    def children(self) -> tuple[Block, ...]:
        return tuple(Block(cond.steps, Scoping.INLINE) for cond in self.conditions if cond.steps is not None)

    def writes(self) -> tuple[Target, ...]:
        return tuple(target for cond in self.conditions for target, _ in cond.assign or [])

    def reads(self) -> tuple[ex.Node | None, ...]:
        return tuple(node for cond in self.conditions
                     for node in (cond.condition, cond.raise_, cond.return_, *_assignment_reads(cond.assign or [])))

    def jumps(self) -> tuple[str, ...]:
        return super().jumps() + tuple(cond.next for cond in self.conditions if cond.next is not None)

    def returns(self) -> bool:
        return any(cond.return_ is not None for cond in self.conditions)


@dataclass
class Loop:
    value: str
    index: str | None
    items: ex.Node | None         # `in:`
    range: ex.Node | None         # `range:`
    body: Steps

    @property
    def binds(self) -> tuple[str, ...]:
        return (self.value, self.index) if self.index else (self.value,)


@dataclass
class For(Step):
    loop: Loop | None = None

    def children(self) -> tuple[Block, ...]:
        return (Block(self.loop.body, Scoping.LOOP, self.loop.binds),)

    def reads(self) -> tuple[ex.Node | None, ...]:
        return (self.loop.items, self.loop.range)


@dataclass
class Parallel(Step):
    shared: tuple[str, ...] = ()
    concurrency_limit: ex.Node | None = None
    branches: list[tuple[str, Steps]] | None = None
    loop: Loop | None = None

    def children(self) -> tuple[Block, ...]:
        if self.loop is not None:
            return (Block(self.loop.body, Scoping.BRANCH, self.loop.binds, self.shared),)
        return tuple(Block(body, Scoping.BRANCH, (), self.shared) for _, body in self.branches or [])

    def reads(self) -> tuple[ex.Node | None, ...]:
        loop = (self.loop.items, self.loop.range) if self.loop is not None else ()
        return (self.concurrency_limit, *loop)


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

    def children(self) -> tuple[Block, ...]:
        # The body is one step in the try step's own list: it has no name to jump to.
        body = Block(Steps([self.body], {}), Scoping.INLINE)
        if self.except_steps is None:
            return (body,)
        binds = (self.except_as,) if self.except_as else ()
        return body, Block(self.except_steps, Scoping.EXCEPT, binds)

    def reads(self) -> tuple[ex.Node | None, ...]:
        policy = self.retry
        if policy is None:
            return ()
        return policy.max_retries, policy.initial_delay, policy.max_delay, policy.multiplier


@dataclass
class Raise(Step):
    value: ex.Node | None = None

    def reads(self) -> tuple[ex.Node | None, ...]:
        return (self.value,)


@dataclass
class Return(Step):
    value: ex.Node | None = None

    def reads(self) -> tuple[ex.Node | None, ...]:
        return (self.value,)

    def returns(self) -> bool:
        return True


@dataclass
class Nested(Step):
    body: Steps | None = None

    def children(self) -> tuple[Block, ...]:
        return (Block(self.body, Scoping.INLINE),)


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
