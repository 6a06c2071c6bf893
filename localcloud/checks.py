"""The deploy-time checks that need a whole subworkflow: `next` targets, parallel scoping and
nesting, and that every variable an expression reads exists in its scope.

They walk the tree through each step's `children`, `writes`, `reads` and `jumps` (model.py), so
they know no step kind by name.
"""
from __future__ import annotations

from . import expressions as ex
from .errors import LoadError
from .model import Block, Scoping, Step, Steps, Subworkflow

MAX_PARALLEL_DEPTH = 2             # parallel steps nested in parallel steps

# In a parallel branch: (the parent's variables, those of them listed in `shared`).
ParallelScope = tuple[set[str], set[str]]


def check(routine: Subworkflow) -> None:
    """Raise LoadError for what `gcloud workflows deploy` would refuse in this subworkflow."""
    _Structure(routine).check()
    _References(routine).check()


class _Structure:
    """`next` targets, writes to parent variables in parallel branches, and parallel nesting."""

    def __init__(self, routine: Subworkflow):
        self.routine = routine

    def check(self) -> None:
        defined = {p.name for p in self.routine.params}
        self.walk(self.routine.steps, [self.routine.steps], defined, parallel=None, depth=0, in_loop=False)

    def walk(self, steps: Steps, visible: list[Steps], defined: set[str],
             parallel: ParallelScope | None, depth: int, in_loop: bool) -> None:
        """`visible`: step lists `next` may jump to; `parallel`: set inside a parallel branch."""
        for step in steps.steps:
            where = f"step '{step.name}'"
            for target in step.jumps():
                self.jump(target, visible, where, in_loop, parallel is not None)
            self.assigns(step, defined, parallel, where)
            if step.returns() and parallel is not None:
                raise LoadError(f"{where}: 'return' inside a parallel branch is not supported")
            for block in step.children():
                self.block(block, visible, defined, parallel, depth, in_loop, where)

    def block(self, block: Block, visible: list[Steps], defined: set[str], parallel: ParallelScope | None,
              depth: int, in_loop: bool, where: str) -> None:
        binds = set(block.binds)
        # Outside a parallel branch nothing is read-only; inside one, a block's own variables
        # hide the parent's of the same name.
        inner = None if parallel is None else (parallel[0] - binds, parallel[1])
        if block.scoping is Scoping.INLINE:
            self.walk(block.steps, visible + [block.steps], defined, parallel, depth, in_loop)
        elif block.scoping is Scoping.LOOP:
            # "Jumping in or out of a for loop ... is not allowed" (syntax/iteration).
            self.walk(block.steps, [block.steps], defined | binds, inner, depth, in_loop=True)
        elif block.scoping is Scoping.EXCEPT:
            # An except block is a scope of its own; `as` binds a new variable in it.
            self.walk(block.steps, visible + [block.steps], defined | binds, inner, depth, in_loop)
        else:
            if depth + 1 > MAX_PARALLEL_DEPTH:
                raise LoadError(f"{where}: parallel steps nest at most {MAX_PARALLEL_DEPTH} deep")
            missing = [v for v in block.shared if v not in defined]
            if missing:
                raise LoadError(f"{where}: shared variable '{missing[0]}' must be assigned before the parallel step")
            branch = (set(defined) - binds, set(block.shared))
            self.walk(block.steps, [block.steps], defined | binds, branch, depth + 1, in_loop=False)

    @staticmethod
    def assigns(step: Step, defined: set[str], parallel: ParallelScope | None, where: str) -> None:
        for target in step.writes():
            if parallel is not None and target.root in parallel[0] and target.root not in parallel[1]:
                raise LoadError(f"{where}: assigns parent variable '{target.root}' inside a parallel step; "
                                f"list it in 'shared'")
            defined.add(target.root)

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

    def scope(self, steps: Steps, outer: set[str], own: tuple[str, ...] = ()) -> None:
        visible = outer | set(own) | self.defined(steps.steps)
        for step in steps.steps:
            self.step(step, visible)

    def defined(self, steps: list[Step]) -> set[str]:
        """Variables a list of steps creates in its own scope (not in loops, branches, excepts)."""
        names: set[str] = set()
        for step in steps:
            names |= {target.root for target in step.writes() if not target.path}
            for block in step.children():
                if block.scoping is Scoping.INLINE:
                    names |= self.defined(block.steps.steps)
        return names

    def step(self, step: Step, visible: set[str]) -> None:
        where = f"step '{step.name}'"
        for target in step.writes():
            if target.path and target.root not in visible:
                raise LoadError(f"{where}: assigns into '{target.text}' but '{target.root}' is not defined here")
        for node in step.reads():
            missing = sorted(ex.variables(node) - visible) if node is not None else []
            if missing:
                raise LoadError(f"{where}: variable '{missing[0]}' is not defined here (variables created "
                                "in a for loop, an except block or a parallel branch stay inside it)")
        for block in step.children():
            if block.scoping is Scoping.INLINE:
                for inner in block.steps.steps:
                    self.step(inner, visible)
            else:
                self.scope(block.steps, visible, block.binds)
