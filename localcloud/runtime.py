"""Run a loaded workflow: steps, scopes, jumps, loops, parallel branches, try/retry/except.

Scoping follows https://cloud.google.com/workflows/docs/reference/syntax/variables: a
subworkflow call has its own variables; a `for` iteration and a parallel branch see their
parent's variables, and variables they create stay inside them; inside `parallel` a parent
variable is writable only when listed in `shared` (the loader rejects the rest).
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from . import model
from . import stdlib
from .context import Context
from .errors import Cancelled, WorkflowError, fail
from .expressions import get_item
from .values import is_int, is_number, type_name
from .checks import MAX_PARALLEL_DEPTH
from .limits import CALL_DEPTH_LIMIT, DEFAULT_CONCURRENCY, MAX_BRANCH_ERRORS, Budget, size_of

UNHANDLED_BRANCH_MESSAGE = ("UnhandledBranchError: One or more branches or iterations "
                            "encountered an unhandled runtime error")


def run(workflow: model.Workflow, argument: Any, context: Context) -> Any:
    """Run `main` to completion and return its result.

    Raises WorkflowError for an uncaught error (see `error_report`), Cancelled when
    `context.cancelled` is set.
    """
    execution = Execution(workflow, context)
    main = workflow.main
    args = {main.params[0].name: argument} if main.params else {}
    return execution.run_subworkflow(main, args, depth=1)


def error_report(err: WorkflowError) -> dict[str, Any]:
    """Execution.error as the Executions API shows it: {payload (JSON string), context, stackTrace}."""
    frames = err.frames
    where = ""
    if frames:
        first = frames[0]
        where = f'\nin step "{first["step"]}", routine "{first["routine"]}", line: {first["position"]["line"]}'

    payload = json.dumps(err.payload, separators=(",", ":"), ensure_ascii=False, default=str)
    return {
        "payload": payload,
        "context": f"RuntimeError: {payload}{where}",
        "stackTrace": {"elements": [{key: f[key] for key in ("step", "routine", "position")} for f in frames]},
    }


def copy_value(value: Any) -> Any:
    """Workflows variables hold values, never references to other variables."""
    if isinstance(value, list):
        return [copy_value(item) for item in value]
    if isinstance(value, dict):
        return {key: copy_value(item) for key, item in value.items()}
    return value


# ------------------------------------------------------------------------------- signals

@dataclass(frozen=True)
class Jump:
    target: str


@dataclass(frozen=True)
class Returned:
    value: Any


BREAK, CONTINUE, END = Jump("break"), Jump("continue"), Jump("end")
_RESERVED_JUMPS = {"break": BREAK, "continue": CONTINUE, "end": END}
Signal = Jump | Returned | None


# -------------------------------------------------------------------------------- scopes

class Scope:
    """Variables of one subworkflow call, `for` iteration or parallel branch."""

    def __init__(self, execution: "Execution", routine: str, depth: int,
                 parent: "Scope | None" = None, shared: frozenset[str] | None = None,
                 parallel_depth: int | None = None):
        self.execution = execution
        self.routine = routine
        self.depth = depth
        # Parallel steps this scope runs inside, across subworkflow calls too.
        self.parallel_depth = parent.parallel_depth if parallel_depth is None and parent else (parallel_depth or 0)
        self.parent = parent
        self.shared = shared          # set for a parallel branch: the parent variables it may write
        self.vars: dict[str, Any] = {}
        self.sizes: dict[str, int] = {}

    # what expressions need (expressions.Env)
    def lookup(self, name: str) -> Any:
        scope: Scope | None = self
        shared = False
        while scope is not None:
            if name in scope.vars:
                if not shared:
                    return scope.vars[name]
                with self.execution.budget.lock:     # another branch may be writing it right now
                    return copy_value(scope.vars[name])
            shared = shared or (scope.shared is not None and name in scope.shared)
            scope = scope.parent
        fail(["KeyError", "LookupError"], f"variable '{name}' is not defined")

    def call(self, name: str, args: list[Any]) -> Any:
        return self.execution.call_function(name, args, self)

    def owner(self, name: str) -> "Scope | None":
        """The scope an assignment to `name` writes to, or None for a new local variable."""
        scope: Scope | None = self
        while scope is not None:
            if name in scope.vars:
                return scope
            if scope.shared is not None and name not in scope.shared:
                return None
            scope = scope.parent
        return None

    def set(self, name: str, value: Any) -> None:
        with self.execution.budget.lock:
            (self.owner(name) or self).store(name, value)

    def store(self, name: str, value: Any) -> None:
        size = size_of(value)
        self.execution.budget.resize(size - self.sizes.get(name, 0))
        self.vars[name] = value
        self.sizes[name] = size

    def release(self) -> None:
        self.execution.budget.resize(-sum(self.sizes.values()))
        self.sizes.clear()


def assign(scope: Scope, target: model.Target, value: Any) -> None:
    value = copy_value(value)
    if not target.path:
        scope.set(target.root, value)
        return
    keys = [node.eval(scope) for node in target.path]
    with scope.execution.budget.lock:
        owner = scope.owner(target.root)
        if owner is None:                       # a parent value this branch may only read: copy it
            owner, root = scope, copy_value(scope.lookup(target.root))
        else:
            root = owner.vars[target.root]
        container = root
        for key in keys[:-1]:
            if isinstance(container, dict) and isinstance(key, str) and key not in container:
                container[key] = {}             # `m.a.b: v` creates the map `a`
            container = get_item(container, key)
        key = keys[-1]
        previous = _slot(container, key)
        container[key] = value
        try:
            owner.store(target.root, root)
        except WorkflowError:
            _restore_slot(container, key, previous)
            raise


_MISSING = object()


def _slot(container: Any, key: Any) -> Any:
    if isinstance(container, dict):
        if not isinstance(key, str):
            fail("TypeError", f"map keys are strings, got {type_name(key)}")
        return container.get(key, _MISSING)
    if isinstance(container, list):
        return get_item(container, key)         # IndexError / TypeError as for a read
    fail("TypeError", f"cannot assign into a {type_name(container)}")


def _restore_slot(container: Any, key: Any, previous: Any) -> None:
    if previous is _MISSING:
        del container[key]
    else:
        container[key] = previous


# ----------------------------------------------------------------------------- execution

class Execution:
    def __init__(self, workflow: model.Workflow, context: Context):
        self.workflow = workflow
        self.context = context
        self.budget = Budget()
        context.count_step = self.budget.step
        context.steps_used = lambda: self.budget.steps

    # -- calls

    def run_subworkflow(self, routine: model.Subworkflow, args: dict[str, Any], depth: int,
                        parallel_depth: int = 0) -> Any:
        if depth > CALL_DEPTH_LIMIT:
            fail("RecursionError", f"maximum call stack depth ({CALL_DEPTH_LIMIT}) exceeded calling '{routine.name}'")
        scope = Scope(self, routine.name, depth, parallel_depth=parallel_depth)
        try:
            for param in routine.params:
                if param.name in args:
                    scope.set(param.name, copy_value(args[param.name]))
                elif param.has_default:
                    scope.set(param.name, copy_value(param.default))
                else:
                    fail("TypeError", f"subworkflow '{routine.name}': missing argument '{param.name}'")
            signal = self.run_steps(routine.steps, scope)
            return signal.value if isinstance(signal, Returned) else None
        finally:
            scope.release()

    def call_function(self, name: str, args: list[Any], scope: Scope) -> Any:
        """A call inside an expression: positional arguments."""
        routine = self.workflow.subworkflows.get(name)
        if routine is not None:
            if len(args) > len(routine.params):
                fail("TypeError", f"subworkflow '{name}' takes {len(routine.params)} arguments, got {len(args)}")
            bound = {param.name: arg for param, arg in zip(routine.params, args)}
            return self.run_subworkflow(routine, bound, scope.depth + 1, scope.parallel_depth)
        return self.call_builtin(name, args=args)

    def call_builtin(self, name: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None) -> Any:
        builtin = stdlib.get(name)
        if builtin is None:
            fail("KeyError", f"unknown function '{name}'")
        try:
            return builtin.call(self.context, args=args, kwargs=kwargs)
        except (WorkflowError, RecursionError):  # RecursionError: see api.DEPTH_MESSAGE
            raise
        except Exception as err:                # a bug in a builtin: fail the run, say where
            fail("SystemError", f"{name}: {type(err).__name__}: {err}")

    def wait(self, seconds: float) -> None:
        """Sleep that a cancellation interrupts at once."""
        if self.context.cancelled.wait(max(0.0, seconds)):
            raise Cancelled()

    # -- steps

    def run_steps(self, steps: model.Steps, scope: Scope) -> Signal:
        position = 0
        while position < len(steps.steps):
            step = steps.steps[position]
            signal = self.run_step(step, scope)
            if signal is None and step.next is not None:
                signal = jump(step.next)
            if signal is None:
                position += 1
            elif isinstance(signal, Jump) and signal.target in steps.index:
                position = steps.index[signal.target]
            else:
                return signal
        return None

    def run_step(self, step: model.Step, scope: Scope) -> Signal:
        if self.context.cancelled.is_set():
            raise Cancelled()
        try:
            self.budget.step()
            return self.handlers[type(step)](self, step, scope)
        except WorkflowError as err:
            frames = err.frames
            if not frames or frames[-1]["depth"] != scope.depth:
                frames.append({"step": step.name, "routine": scope.routine, "depth": scope.depth,
                               "position": {"line": step.line, "column": step.column}})
            raise

    def step_next(self, step: model.Step, scope: Scope) -> Signal:
        return None

    def step_assign(self, step: model.Assign, scope: Scope) -> Signal:
        for target, node in step.items:
            assign(scope, target, node.eval(scope))
        return None

    def step_call(self, step: model.Call, scope: Scope) -> Signal:
        args = {name: node.eval(scope) for name, node in step.args.items()}
        if step.subworkflow:
            result = self.run_subworkflow(self.workflow.subworkflows[step.function], args, scope.depth + 1,
                                          scope.parallel_depth)
        else:
            result = self.call_builtin(step.function, kwargs=args)
        if step.result:
            scope.set(step.result, copy_value(result))
        return None

    def step_switch(self, step: model.Switch, scope: Scope) -> Signal:
        for cond in step.conditions:
            matched = cond.condition.eval(scope)
            if not isinstance(matched, bool):
                fail("TypeError", f"a switch condition must be a boolean, got {type_name(matched)}")
            if not matched:
                continue
            for target, node in cond.assign or []:
                assign(scope, target, node.eval(scope))
            if cond.steps is not None:
                signal = self.run_steps(cond.steps, scope)
                if signal is not None:
                    return signal
            if cond.raise_ is not None:
                raise WorkflowError(copy_value(cond.raise_.eval(scope)))
            if cond.return_ is not None:
                return Returned(cond.return_.eval(scope))
            return jump(cond.next) if cond.next else None
        return None

    def step_for(self, step: model.For, scope: Scope) -> Signal:
        # Variables created in the loop live in the loop's scope, "cleared after exiting the loop".
        loop_scope = Scope(self, scope.routine, scope.depth, parent=scope)
        try:
            for index, value in self.loop_values(step.loop, scope):
                loop_scope.store(step.loop.value, value)
                if step.loop.index:
                    loop_scope.store(step.loop.index, index)
                signal = self.run_steps(step.loop.body, loop_scope)
                if signal is BREAK:
                    break
                if signal is not None and signal is not CONTINUE:
                    return signal
            return None
        finally:
            loop_scope.release()

    def loop_values(self, loop: model.Loop, scope: Scope) -> Iterator[tuple[int, Any]]:
        """(index, value) pairs; each value is a private copy that its iteration may keep as is."""
        if loop.items is not None:
            items = loop.items.eval(scope)
            if not isinstance(items, list):
                fail("TypeError", f"'for in' needs a list, got {type_name(items)} (use keys() for a map)")
            return enumerate(copy_value(items))
        bounds = loop.range.eval(scope)
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(is_number(b) for b in bounds)):
            fail("TypeError", "'for range' needs a list of two numbers [start, end]")
        return enumerate(_inclusive_range(bounds[0], bounds[1]))

    def step_parallel(self, step: model.Parallel, scope: Scope) -> Signal:
        # The loader checks nesting within one subworkflow; a branch that calls a subworkflow
        # holding a parallel step nests too, found only when it runs. "ParallelNestingError:
        # maximum depth that parallel steps can be nested is exceeded" (syntax/error-types).
        if scope.parallel_depth + 1 > MAX_PARALLEL_DEPTH:
            fail("ParallelNestingError", f"parallel steps nest at most {MAX_PARALLEL_DEPTH} deep, "
                                         f"counting those of the subworkflows that call this one")
        limit = DEFAULT_CONCURRENCY
        if step.concurrency_limit is not None:
            limit = step.concurrency_limit.eval(scope)
            if not is_int(limit) or limit < 1:
                fail("ValueError", f"concurrency_limit must be a positive integer, got {limit!r}")
        shared = frozenset(step.shared)
        jobs: list[tuple[str, Callable[[], None]]] = []
        if step.branches is not None:
            for name, body in step.branches:
                jobs.append((name, partial(self.run_branch, body, scope, shared, {})))
        else:
            loop = step.loop
            for index, value in self.loop_values(loop, scope):
                bindings = {loop.value: value, **({loop.index: index} if loop.index else {})}
                jobs.append((str(index), partial(self.run_branch, loop.body, scope, shared, bindings)))
        if not jobs:
            return None
        errors: list[tuple[str, WorkflowError]] = []
        cancelled = False
        with ThreadPoolExecutor(max_workers=min(limit, len(jobs)), thread_name_prefix="branch") as pool:
            futures = [(branch_id, pool.submit(job)) for branch_id, job in jobs]
            for branch_id, future in futures:
                try:
                    future.result()
                except WorkflowError as err:     # continueAll: the other branches keep running
                    errors.append((branch_id, err))
                except Cancelled:
                    cancelled = True
        if cancelled or self.context.cancelled.is_set():
            raise Cancelled()
        if errors:
            raise WorkflowError({
                "message": UNHANDLED_BRANCH_MESSAGE,
                "tags": ["UnhandledBranchError"],
                "branches": [{"id": branch_id, "error": error_report(err)}
                             for branch_id, err in errors[:MAX_BRANCH_ERRORS]],
                "truncated": len(errors) > MAX_BRANCH_ERRORS,
            })
        return None

    def run_branch(self, body: model.Steps, parent: Scope, shared: frozenset[str], bindings: dict[str, Any]) -> None:
        branch = Scope(self, parent.routine, parent.depth, parent=parent, shared=shared,
                       parallel_depth=parent.parallel_depth + 1)
        try:
            for name, value in bindings.items():
                branch.store(name, value)
            signal = self.run_steps(body, branch)
            if signal is not None and signal is not CONTINUE:
                fail("SystemError", f"cannot leave a parallel branch with '{signal}'")
        finally:
            branch.release()

    def step_try(self, step: model.Try, scope: Scope) -> Signal:
        retries, delay, policy = 0, None, step.retry
        while True:
            try:
                return self.run_step(step.body, scope)
            except WorkflowError as err:
                if policy is not None:
                    max_retries, delay, max_delay, multiplier = self.backoff(policy, scope, delay)
                    if retries < max_retries and self.should_retry(policy, err.payload, scope):
                        retries += 1
                        self.wait(min(delay, max_delay))
                        delay = min(delay * multiplier, max_delay)
                        continue
                if step.except_steps is None:
                    raise
                return self.run_except(step, err.payload, scope)

    def run_except(self, step: model.Try, error: Any, scope: Scope) -> Signal:
        # Variables created in an except block, `as` included, stay in it (syntax/variables).
        handler = Scope(self, scope.routine, scope.depth, parent=scope)
        try:
            if step.except_as:
                handler.store(step.except_as, copy_value(error))
            return self.run_steps(step.except_steps, handler)
        finally:
            handler.release()

    def backoff(self, policy: model.RetryPolicy, scope: Scope, delay: float | None) -> tuple[int, float, float, float]:
        max_retries = policy.max_retries.eval(scope)
        if not is_int(max_retries) or max_retries < 0:
            fail("TypeError", f"max_retries must be a non-negative integer, got {max_retries!r}")
        numbers = [node.eval(scope) for node in (policy.initial_delay, policy.max_delay, policy.multiplier)]
        if not all(is_number(n) and n >= 0 for n in numbers):
            fail("TypeError", "backoff initial_delay, max_delay and multiplier must be non-negative numbers")
        initial, max_delay, multiplier = numbers
        return max_retries, (initial if delay is None else delay), max_delay, multiplier

    def should_retry(self, policy: model.RetryPolicy, error: Any, scope: Scope) -> bool:
        if policy.predicate_is_subworkflow:
            routine = self.workflow.subworkflows[policy.predicate]
            bound = {routine.params[0].name: error} if routine.params else {}
            verdict = self.run_subworkflow(routine, bound, scope.depth + 1)
        else:
            verdict = self.call_builtin(policy.predicate, args=[error])
        if not isinstance(verdict, bool):
            fail("TypeError", f"retry predicate '{policy.predicate}' must return a boolean, got {type_name(verdict)}")
        return verdict

    def step_raise(self, step: model.Raise, scope: Scope) -> Signal:
        raise WorkflowError(copy_value(step.value.eval(scope)))

    def step_return(self, step: model.Return, scope: Scope) -> Signal:
        return Returned(step.value.eval(scope))

    def step_nested(self, step: model.Nested, scope: Scope) -> Signal:
        return self.run_steps(step.body, scope)

    handlers: dict[type, Callable[..., Signal]] = {
        model.Step: step_next, model.Assign: step_assign, model.Call: step_call, model.Switch: step_switch,
        model.For: step_for, model.Parallel: step_parallel, model.Try: step_try, model.Raise: step_raise,
        model.Return: step_return, model.Nested: step_nested,
    }


def jump(target: str) -> Jump:
    return _RESERVED_JUMPS.get(target) or Jump(target)


def _inclusive_range(start: int | float, end: int | float) -> Iterator[int | float]:
    """`range: [a, b]` includes both ends; with a double bound the values are doubles."""
    value: int | float = start if isinstance(start, int) and isinstance(end, int) else float(start)
    while value <= end:
        yield value
        value += 1
