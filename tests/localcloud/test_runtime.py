"""The runtime against Google's documented behaviour, one test per documented rule or example.

Every workflow here also validates against ../shared/schemas/workflows.schema.json when present,
so the fixtures are real Workflows syntax.
"""
from __future__ import annotations

import json
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from localcloud import limits, loader, model, runtime, stdlib
from localcloud.context import Context
from localcloud.errors import Cancelled, LoadError, WorkflowError, fail

SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "workflows.schema.json"
_schema = json.loads(SCHEMA.read_text()) if SCHEMA.exists() else None


def load(source: str, schema: bool = True) -> model.Workflow:
    source = textwrap.dedent(source)
    if schema and _schema is not None:
        import jsonschema
        jsonschema.validate(yaml.safe_load(source), _schema)
    return loader.load_text(source)


def run(source: str, argument=None, context: Context | None = None):
    return runtime.run(load(source), argument, context or Context())


def failure(source: str, argument=None) -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        run(source, argument)
    return caught.value


@pytest.fixture
def register():
    """Register test-only builtins; removed again after the test."""
    added = []

    def decorate(name):
        def wrap(fn):
            stdlib.get("len")                  # load the real library first so names do not clash
            stdlib.builtin(name)(fn)
            added.append(name)
            return fn
        return wrap
    yield decorate
    for name in added:
        stdlib.REGISTRY.pop(name, None)


@pytest.fixture
def delays(monkeypatch):
    """Record retry backoff delays instead of sleeping through them."""
    recorded = []
    monkeypatch.setattr(runtime.Execution, "wait", lambda self, seconds: recorded.append(seconds))
    return recorded


# --- runtime arguments: https://cloud.google.com/workflows/docs/passing-runtime-arguments

def test_main_param_binds_the_whole_argument():
    source = """
        main:
          params: [args]
          steps:
            - out:
                return: ${args.firstName + " " + args.lastName}
    """
    assert run(source, {"firstName": "Ada", "lastName": "Lovelace"}) == "Ada Lovelace"


def test_main_without_params_ignores_the_argument():
    assert run("- out:\n    return: 1\n", {"ignored": True}) == 1


def test_no_return_gives_null():
    assert run("- a:\n    assign:\n      - x: 1\n") is None


# --- assign: https://cloud.google.com/workflows/docs/reference/syntax/variables

def test_assign_example_from_the_variables_page():
    source = """
        - assign_vars:
            assign:
              - number: 5
              - number_plus_one: ${number+1}
              - other_number: 10
              - string: "hello"
              - my_list: ["zero", "one", "two"]
              - my_map: {"Name": "Lila", "Last Name": "Smith", "Age": 23}
              - my_list[1]: ${"ONE"}
              - my_map.Age: ${my_map.Age + 1}
              - my_map["Last Name"]: "Smith-Jones"
        - out:
            return: ${[number_plus_one, my_list, my_map, string]}
    """
    assert run(source) == [6, ["zero", "ONE", "two"],
                           {"Name": "Lila", "Last Name": "Smith-Jones", "Age": 24}, "hello"]


def test_assigning_a_missing_map_key_creates_it_and_nested_maps():
    source = """
        - a:
            assign:
              - m: {}
              - m.key: 1
              - m.nested.deeper: 2
              - key_name: dynamic
              - m[key_name]: 3
        - out:
            return: ${m}
    """
    assert run(source) == {"key": 1, "nested": {"deeper": 2}, "dynamic": 3}


def test_list_index_assignment_out_of_range_is_an_index_error():
    err = failure("- a:\n    assign:\n      - l: [1]\n      - l[1]: 2\n")
    assert "IndexError" in err.tags


def test_variables_hold_values_not_references():
    source = """
        - a:
            assign:
              - original: {"list": [1, 2]}
              - copy: ${original}
              - copy.list[0]: 99
        - out:
            return: ${[original, copy]}
    """
    assert run(source) == [{"list": [1, 2]}, {"list": [99, 2]}]


def test_strings_with_text_around_an_expression_stay_literal():
    assert run("- a:\n    assign:\n      - x: 1\n- out:\n    return: 'x is ${x}'\n") == "x is ${x}"


def test_nested_values_evaluate_their_expressions():
    source = """
        - a:
            assign:
              - x: 2
              - m:
                  plain: text
                  computed: ${x * 3}
                  list: ["${x}", "${x * 2}"]
        - out:
            return: ${m}
    """
    assert run(source) == {"plain": "text", "computed": 6, "list": [2, 4]}


def test_map_keys_can_be_expressions():
    # The "dynamicKey" map example: https://cloud.google.com/workflows/docs/reference/syntax/variables
    source = """
        - createMap:
            assign:
              - dynamicKey: "MiddleName"
              - myMap:
                  FirstName: "John"
                  ${dynamicKey}: "Apple"
                  Age: 26
        - out:
            return: ${myMap}
    """
    assert run(source) == {"FirstName": "John", "MiddleName": "Apple", "Age": 26}


def test_map_iteration_over_sorted_keys():
    # YAML keys 1, 2, 3 are map keys "1", "2", "3"; the iterate_map sample sums to 60.
    # https://cloud.google.com/workflows/docs/reference/syntax/iteration
    source = """
        - assignStep:
            assign:
              - map:
                  1: 10
                  2: 20
                  3: 30
              - sum: 0
        - loopStep:
            for:
              value: key
              in: ${keys(map)}
              steps:
                - sumStep:
                    assign:
                      - sum: ${sum + map[key]}
        - returnStep:
            return: ${[sum, keys(map)]}
    """
    assert run(source) == [60, ["1", "2", "3"]]


def test_expression_sample_mixes_int_and_double_arithmetic():
    # 27 * 9 / 5 + 32: `/` of integers gives a double. https://cloud.google.com/workflows/docs/reference/syntax/expressions
    source = """
        - get_message:
            assign:
              - temperature_C: 27
              - temperature_F: ${temperature_C * 9/5 + 32}
        - out:
            return: ${temperature_F}
    """
    assert run(source) == pytest.approx(80.6)


def test_integer_overflow_fails_the_run():
    assert failure("- out:\n    return: ${9223372036854775807 + 1}\n").tags == ["ValueError"]


# --- calls and subworkflows: https://cloud.google.com/workflows/docs/reference/syntax/subworkflows

SUBWORKFLOWS = """
    main:
      steps:
        - first:
            call: name_message
            args:
              first_name: "Ada"
              last_name: "Lovelace"
            result: output1
        - second:
            call: name_message
            args:
              first_name: "Sherlock"
            result: output2
        - out:
            return: ${[output1, output2, name_message("Grace", "Hopper")]}
    name_message:
      params: [first_name, last_name: "Unknown"]
      steps:
        - prepare:
            return: ${"Hello " + first_name + " " + last_name}
"""


def test_subworkflow_named_args_defaults_and_expression_calls():
    assert run(SUBWORKFLOWS) == ["Hello Ada Lovelace", "Hello Sherlock Unknown", "Hello Grace Hopper"]


def test_subworkflows_do_not_see_the_callers_variables():
    source = """
        main:
          steps:
            - a:
                assign:
                  - secret: 1
            - c:
                call: peek
        peek:
          steps:
            - r:
                return: ${secret}
    """
    with pytest.raises(LoadError, match="secret"):
        load(source)


def test_builtins_take_named_args_in_call_steps_and_positional_args_in_expressions(register):
    @register("test.join")
    def join(context, first, second="!"):
        return first + second

    source = """
        - named:
            call: test.join
            args:
              second: "b"
              first: "a"
            result: named
        - out:
            return: ${[named, test.join("x"), test.join("x", "y")]}
    """
    assert run(source) == ["ab", "x!", "xy"]


def test_a_builtin_that_crashes_fails_the_run_with_a_system_error(register):
    @register("test.crash")
    def crash(context):
        raise RuntimeError("bug")

    err = failure("- c:\n    call: test.crash\n")
    assert err.tags == ["SystemError"] and "RuntimeError" in err.payload["message"]


def test_infinite_recursion_is_a_recursion_error():
    source = """
        main:
          steps:
            - c:
                return: ${loop(0)}
        loop:
          params: [n]
          steps:
            - again:
                return: ${loop(n + 1)}
    """
    assert failure(source).tags == ["RecursionError"]


# --- switch: https://cloud.google.com/workflows/docs/reference/syntax/conditions

def test_switch_runs_only_the_first_matching_condition():
    source = """
        - init:
            assign:
              - hits: []
        - pick:
            switch:
              - condition: ${1 < 2}
                assign:
                  - hits: ${["first"]}
              - condition: ${true}
                assign:
                  - hits: ${["second"]}
        - out:
            return: ${hits}
    """
    assert run(source) == ["first"]


@pytest.mark.parametrize("value, expected", [(5, "small"), (50, "medium"), (500, "large"), (5000, "raised")])
def test_switch_inline_actions(value, expected):
    source = """
        main:
          params: [n]
          steps:
            - pick:
                switch:
                  - condition: ${n < 10}
                    return: "small"
                  - condition: ${n < 100}
                    next: medium
                  - condition: ${n < 1000}
                    steps:
                      - set:
                          assign:
                            - size: "large"
                      - done:
                          return: ${size}
                  - condition: ${true}
                    raise: "raised"
            - unreachable:
                return: "fell through"
            - medium:
                return: "medium"
    """
    try:
        assert run(source, value) == expected
    except WorkflowError as err:
        assert err.payload == expected


def test_switch_without_a_match_continues_with_next():
    source = """
        - pick:
            switch:
              - condition: ${false}
                return: "no"
            next: target
        - skipped:
            return: "skipped"
        - target:
            return: "jumped"
    """
    assert run(source) == "jumped"


def test_switch_condition_must_be_a_boolean():
    assert failure("- s:\n    switch:\n      - condition: ${1}\n        return: 1\n").tags == ["TypeError"]


# --- jumps: https://cloud.google.com/workflows/docs/reference/syntax/jumps

def test_next_loops_back_and_end_stops():
    source = """
        - init:
            assign:
              - n: 0
        - increment:
            assign:
              - n: ${n + 1}
        - check:
            switch:
              - condition: ${n < 5}
                next: increment
            next: stop
        - not_run:
            return: "not run"
        - stop:
            next: end
    """
    assert run(source) is None


def test_next_end_in_a_subworkflow_returns_null_to_the_caller():
    # "In a subworkflow, you can use next: end ... and return null", syntax/completing
    source = """
        main:
          steps:
            - c:
                call: sub
                result: r
            - out:
                return: ${[r, "after"]}
        sub:
          steps:
            - stop:
                next: end
            - never:
                return: 1
    """
    assert run(source) == [None, "after"]


# --- for: https://cloud.google.com/workflows/docs/reference/syntax/iteration

def test_for_in_with_value_and_index():
    source = """
        - init:
            assign:
              - seen: []
        - loop:
            for:
              value: v
              index: i
              in: ["a", "b", "c"]
              steps:
                - add:
                    assign:
                      - seen: ${list.concat(seen, string(i) + v)}
        - out:
            return: ${seen}
    """
    assert run(source) == ["0a", "1b", "2c"]


@pytest.mark.parametrize("bounds, expected", [
    ("[1, 3]", [1, 2, 3]), ("[3, 3]", [3]), ("[3, 1]", []), ("[1.5, 3.6]", [1.5, 2.5, 3.5]),
])
def test_for_range_is_inclusive(bounds, expected):
    source = f"""
        - init:
            assign:
              - seen: []
        - loop:
            for:
              value: v
              range: ${{{bounds}}}
              steps:
                - add:
                    assign:
                      - seen: ${{list.concat(seen, v)}}
        - out:
            return: ${{seen}}
    """
    result = run(source)
    assert result == expected and [type(v) for v in result] == [type(v) for v in expected]


def test_loop_scope_sample():
    # https://cloud.google.com/workflows/docs/samples/workflows-loop-scope
    source = """
        - init:
            assign:
              - workflowScope: foo
        - outerLoop:
            for:
              value: outerLoopValue
              in: [1, 2, 3, 4]
              steps:
                - outerLoopAssign:
                    assign:
                      - outerLoopScope: ${workflowScope}
                - innerLoop:
                    for:
                      value: innerLoopValue
                      in: [5, 6, 7, 8]
                      steps:
                        - innerLoopAssign:
                            assign:
                              - workflowScope: ${innerLoopValue}
                              - innerLoopScope: ${outerLoopScope}
        - final:
            return:
              - ${workflowScope}
    """
    assert run(source) == [8]
    # "accessing it outside of the loop will raise an error when deploying the workflow"
    for name in ("outerLoopScope", "innerLoopScope", "outerLoopValue"):
        leaked = source.replace("- ${workflowScope}", "- ${" + name + "}")
        with pytest.raises(LoadError, match=name):
            load(leaked)


def test_a_loop_keeps_its_variables_across_iterations():
    # The loop's own scope is "cleared after exiting the loop", not after each iteration.
    source = """
        - loop:
            for:
              value: v
              in: [1, 2, 3]
              steps:
                - start:
                    switch:
                      - condition: ${v == 1}
                        assign:
                          - acc: 0
                - add:
                    assign:
                      - acc: ${acc + v}
                - last:
                    switch:
                      - condition: ${v == 3}
                        return: ${acc}
    """
    assert run(source) == 6


def test_variables_created_in_an_except_block_stay_in_it():
    # "This local scoping also applies to any variable created inside an except block."
    # https://cloud.google.com/workflows/docs/reference/syntax/variables
    source = """
        - init:
            assign:
              - status: "ok"
        - guarded:
            try:
              raise: "boom"
            except:
              as: e
              steps:
                - note:
                    assign:
                      - status: '${"failed: " + e}'
                      - local_note: ${e}
        - out:
            return: ${status}
    """
    assert run(source) == "failed: boom"
    for name in ("local_note", "e"):
        with pytest.raises(LoadError, match=f"'{name}'"):
            load(source.replace("return: ${status}", "return: ${" + name + "}"))


def test_break_and_continue():
    source = """
        - init:
            assign:
              - seen: []
        - loop:
            for:
              value: v
              in: [1, 2, 3, 4, 5]
              steps:
                - skip_even:
                    switch:
                      - condition: ${v % 2 == 0}
                        next: continue
                      - condition: ${v > 3}
                        next: break
                - add:
                    assign:
                      - seen: ${list.concat(seen, v)}
        - out:
            return: ${seen}
    """
    assert run(source) == [1, 3]


def test_return_inside_a_loop_returns_from_the_workflow():
    source = """
        - loop:
            for:
              value: v
              in: [1, 2, 3]
              steps:
                - found:
                    switch:
                      - condition: ${v == 2}
                        return: ${v}
        - out:
            return: "not found"
    """
    assert run(source) == 2


def test_for_in_needs_a_list():
    assert failure("- l:\n    for:\n      value: v\n      in: ${\"abc\"}\n      steps:\n"
                   "        - s:\n            assign:\n              - x: 1\n").tags == ["TypeError"]


# --- parallel: https://cloud.google.com/workflows/docs/reference/syntax/parallel-steps

class Meter:
    """Counts how many calls overlap, from inside the calls themselves."""

    def __init__(self):
        self.lock = threading.Lock()
        self.active = self.peak = 0
        self.order: list = []

    def visit(self, context, label, seconds=0.05):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.order.append(("enter", label))
        context.cancelled.wait(seconds)
        with self.lock:
            self.active -= 1
            self.order.append(("exit", label))
        return label


@pytest.fixture
def meter(register):
    meter = Meter()
    register("test.visit")(meter.visit)
    return meter


def test_parallel_branches_write_shared_variables_only(meter):
    source = """
        - init:
            assign:
              - user: null
              - notification: null
        - fetch:
            parallel:
              shared: [user, notification]
              branches:
                - getUser:
                    steps:
                      - u:
                          call: test.visit
                          args: {label: "user"}
                          result: user
                - getNotification:
                    steps:
                      - n:
                          call: test.visit
                          args: {label: "notification"}
                          result: notification
                      - local:
                          assign:
                            - branch_only: 1
        - out:
            return: ${[user, notification]}
    """
    assert run(source) == ["user", "notification"]
    assert meter.peak == 2                           # both branches ran at the same time
    leaked = source.replace("${[user, notification]}", "${branch_only}")
    with pytest.raises(LoadError, match="branch_only"):
        load(leaked)


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_concurrency_limit_is_enforced(meter, limit):
    source = f"""
        - init:
            assign:
              - results: {{}}
        - fan_out:
            parallel:
              shared: [results]
              concurrency_limit: {limit}
              for:
                value: item
                in: [0, 1, 2, 3, 4, 5, 6]
                steps:
                  - work:
                      call: test.visit
                      args:
                        label: ${{item}}
                        seconds: 0.03
                      result: done
                  - record:
                      assign:
                        - results[string(item)]: ${{done}}
        - out:
            return: ${{results}}
    """
    assert run(source) == {str(i): i for i in range(7)}
    assert meter.peak == limit
    assert sorted(label for event, label in meter.order if event == "exit") == list(range(7))


def test_concurrency_limit_from_an_expression(meter):
    source = """
        main:
          params: [args]
          steps:
            - fan_out:
                parallel:
                  concurrency_limit: ${args.limit}
                  for:
                    value: item
                    range: [1, 4]
                    steps:
                      - work:
                          call: test.visit
                          args: {label: "${item}"}
    """
    # The schema types concurrency_limit as an integer, though its description allows an expression.
    runtime.run(load(source, schema=False), {"limit": 2}, Context())
    assert meter.peak == 2


def test_each_iteration_has_its_own_scope():
    source = """
        - init:
            assign:
              - total: 0
        - fan_out:
            parallel:
              shared: [total]
              concurrency_limit: 1
              for:
                value: v
                in: [1, 2, 3]
                steps:
                  - local:
                      assign:
                        - doubled: ${v * 2}
                  - add:
                      assign:
                        - total: ${total + doubled}
        - out:
            return: ${total}
    """
    assert run(source) == 12


def test_unhandled_branch_errors_let_the_others_finish_then_raise(meter):
    # continueAll, the default and only policy: "all other branches will attempt to run".
    source = """
        - init:
            assign:
              - finished: []
        - guarded:
            try:
              steps:
                - fan_out:
                    parallel:
                      shared: [finished]
                      exception_policy: continueAll
                      branches:
                        - failing:
                            steps:
                              - boom:
                                  raise: {"message": "broken", "code": 7}
                        - slow:
                            steps:
                              - wait:
                                  call: test.visit
                                  args: {label: "slow", seconds: 0.05}
                              - mark:
                                  assign:
                                    - finished: ${list.concat(finished, "slow")}
            except:
              as: e
              steps:
                - out:
                    return: ${[e.tags, finished, e.branches[0].id, json.decode(e.branches[0].error.payload)]}
    """
    tags, finished, branch_id, payload = run(source)
    assert tags == ["UnhandledBranchError"]
    assert finished == ["slow"]
    assert branch_id == "failing" and payload == {"message": "broken", "code": 7}


def test_uncaught_branch_error_fails_the_run():
    source = """
        - fan_out:
            parallel:
              for:
                value: v
                in: [1, 2]
                steps:
                  - boom:
                      raise: ${"bad " + string(v)}
    """
    err = failure(source)
    assert err.tags == ["UnhandledBranchError"]
    assert sorted(b["id"] for b in err.payload["branches"]) == ["0", "1"]


# --- errors: https://cloud.google.com/workflows/docs/reference/syntax/catching-errors,
#     https://cloud.google.com/workflows/docs/reference/syntax/raising-errors

def test_except_binds_a_builtin_error_map_with_tags():
    source = """
        - guarded:
            try:
              steps:
                - bad:
                    assign:
                      - m: {}
                      - x: ${m.missing}
            except:
              as: e
              steps:
                - check:
                    switch:
                      - condition: ${"KeyError" in e.tags}
                        return: ${e.message}
    """
    assert "missing" in run(source)


@pytest.mark.parametrize("raised, expected", [
    ('"Something went wrong."', "Something went wrong."),
    ('{"code": 55, "message": "Something went wrong."}', {"code": 55, "message": "Something went wrong."}),
])
def test_raise_a_string_or_a_map(raised, expected):
    source = f"""
        - guarded:
            try:
              raise: {raised}
            except:
              as: e
              steps:
                - out:
                    return: ${{e}}
    """
    assert run(source) == expected


def test_uncaught_error_report_for_the_executions_api():
    source = """
        main:
          steps:
            - c:
                call: inner
        inner:
          steps:
            - raise_error:
                raise:
                  code: 55
                  message: "Something went wrong."
    """
    err = failure(source)
    report = runtime.error_report(err)
    assert json.loads(report["payload"]) == {"code": 55, "message": "Something went wrong."}
    # The source starts with a blank line: `main:` is on line 2.
    assert report["stackTrace"]["elements"] == [
        {"step": "raise_error", "routine": "inner", "position": {"line": 8, "column": 7}},
        {"step": "c", "routine": "main", "position": {"line": 4, "column": 7}}]
    assert "raise_error" in report["context"] and "line: 8" in report["context"]


# --- retry: https://cloud.google.com/workflows/docs/reference/syntax/retrying

@pytest.fixture
def flaky(register):
    state = {"calls": 0, "fail_times": 10 ** 6, "code": 503}

    @register("test.flaky")
    def call(context):
        state["calls"] += 1
        if state["calls"] <= state["fail_times"]:
            fail("HttpError", f"HTTP server responded with error code {state['code']}", code=state["code"])
        return "ok"
    return state


def test_custom_retry_predicate_and_backoff(flaky, delays):
    source = """
        main:
          steps:
            - read_item:
                try:
                  call: test.flaky
                  result: r
                retry:
                  predicate: ${custom_predicate}
                  max_retries: 4
                  backoff:
                    initial_delay: 2
                    max_delay: 10
                    multiplier: 2
                except:
                  as: e
                  steps:
                    - out:
                        return: ${e.code}
        custom_predicate:
          params: [e]
          steps:
            - what_to_repeat:
                switch:
                  - condition: ${e.code == 503}
                    return: true
            - otherwise:
                return: false
    """
    assert run(source) == 503
    assert flaky["calls"] == 5                   # the first try and max_retries retries
    assert delays == [2, 4, 8, 10]               # multiplied, capped at max_delay


def test_retry_stops_when_the_step_succeeds(flaky, delays):
    flaky["fail_times"] = 2
    source = """
        - read_item:
            try:
              call: test.flaky
              result: r
            retry: ${http.default_retry}
        - out:
            return: ${r}
    """
    assert run(source) == "ok" and flaky["calls"] == 3 and len(delays) == 2


def test_default_retry_policy_values(flaky, delays):
    # http.default_retry: max_retries 5, backoff as retry.default_backoff (1 s, x1.25, max 60 s).
    # https://cloud.google.com/workflows/docs/reference/stdlib/http/default_retry
    err = failure("- r:\n    try:\n      call: test.flaky\n    retry: ${http.default_retry}\n")
    assert err.payload["code"] == 503
    assert flaky["calls"] == 6
    assert delays == pytest.approx([1, 1.25, 1.5625, 1.953125, 2.44140625])


def test_non_idempotent_policy_does_not_retry_a_502(flaky, delays):
    # https://cloud.google.com/workflows/docs/reference/stdlib/http/default_retry_non_idempotent
    flaky["code"] = 502
    failure("- r:\n    try:\n      call: test.flaky\n    retry: ${http.default_retry_non_idempotent}\n")
    assert flaky["calls"] == 1 and delays == []


def test_retry_with_a_builtin_predicate(flaky, delays):
    source = """
        - r:
            try:
              call: test.flaky
            retry:
              predicate: ${retry.always}
              max_retries: 2
              backoff:
                initial_delay: 1
                max_delay: 5
                multiplier: 3
    """
    failure(source)
    assert flaky["calls"] == 3 and delays == [1, 3]


# --- limits: https://cloud.google.com/workflows/quotas#resource_limits

def test_variables_over_512_kb_raise_a_resource_limit_error():
    source = """
        - init:
            assign:
              - s: "x"
        - guarded:
            try:
              steps:
                - grow:
                    for:
                      value: i
                      range: [1, 20]
                      steps:
                        - double:
                            assign:
                              - s: ${s + s}
            except:
              as: e
              steps:
                - out:
                    return: ${[e.tags, len(s)]}
    """
    tags, size = run(source)
    assert "ResourceLimitError" in tags
    assert size == 2 ** 18                       # the last size that fitted; the failed one was not stored


def test_memory_is_counted_as_documented():
    # "a" is 8 + 28 bytes and "b: ${a}" is a copy: 72 bytes together (syntax/variables, Memory usage).
    assert limits.size_of("This is a string of 28 bytes") == 36
    assert limits.size_of({"k": [1, 2.5, True, None]}) == 8 + (8 + 1) + (8 + 4 * 8)


@pytest.mark.parametrize("limit, fits", [(72, True), (71, False)])
def test_a_copy_doubles_memory_usage(monkeypatch, limit, fits):
    monkeypatch.setattr(limits, "MEMORY_LIMIT", limit)
    source = """
        - a:
            assign:
              - a: "This is a string of 28 bytes"
              - b: ${a}
    """
    if fits:
        assert run(source) is None
    else:
        assert "ResourceLimitError" in failure(source).tags


def test_loop_variables_are_released_after_the_loop():
    # 2**17 characters held by `s`, two copies inside the loop, then two outside it:
    # the last two fit only if the loop's copies were freed when it ended.
    source = """
        - init:
            assign:
              - s: "x"
        - grow:
            for:
              value: i
              range: [1, 17]
              steps:
                - double:
                    assign:
                      - s: ${s + s}
        - reuse:
            for:
              value: i
              range: [1, 5]
              steps:
                - copy:
                    assign:
                      - local_copy: ${s}
                      - another: ${s}
        - after:
            assign:
              - outer_copy: ${s}
              - outer_another: ${s}
        - out:
            return: ${len(outer_copy)}
    """
    assert run(source) == 2 ** 17


def test_step_limit(monkeypatch):
    monkeypatch.setattr(limits, "STEP_LIMIT", 50)
    source = """
        - spin:
            next: spin
    """
    assert failure(source).tags == ["ResourceLimitError"]


# --- cancellation

def test_cancelled_before_start():
    context = Context()
    context.cancelled.set()
    with pytest.raises(Cancelled):
        run("- a:\n    return: 1\n", context=context)


def test_cancel_interrupts_a_retry_backoff(flaky):
    context, outcome = Context(), []
    source = """
        - r:
            try:
              call: test.flaky
            retry:
              predicate: ${retry.always}
              max_retries: 3
              backoff:
                initial_delay: 600
                max_delay: 600
                multiplier: 1
    """
    workflow = load(source)

    def target():
        try:
            runtime.run(workflow, None, context)
        except Cancelled:
            outcome.append("cancelled")

    worker = threading.Thread(target=target)
    worker.start()
    while flaky["calls"] == 0:
        time.sleep(0.01)
    context.cancelled.set()
    worker.join(timeout=10)
    assert not worker.is_alive() and outcome == ["cancelled"]


def test_cancel_stops_parallel_branches(meter):
    context = Context()
    source = """
        - fan_out:
            parallel:
              concurrency_limit: 2
              for:
                value: v
                range: [1, 10]
                steps:
                  - work:
                      call: test.visit
                      args: {label: "${v}", seconds: 600}
    """
    workflow = load(source)
    threading.Timer(0.1, context.cancelled.set).start()
    with pytest.raises(Cancelled):
        runtime.run(workflow, None, context)
    assert len([e for e in meter.order if e[0] == "enter"]) < 10


# Parallel steps nest at most 2 deep (https://cloud.google.com/workflows/quotas#resource_limits),
# and nesting through a subworkflow call counts: "ParallelNestingError: maximum depth that parallel
# steps can be nested is exceeded" (https://cloud.google.com/workflows/docs/reference/syntax/error-types).
# Each subworkflow alone passes the loader's check; only running finds the depth.
NESTED_THROUGH_CALLS = """
main:
  params: [levels]
  steps:
    - outer:
        parallel:
          branches:
            - only:
                steps:
                  - down:
                      call: middle
                      args:
                        levels: ${levels}
    - done:
        return: reached
middle:
  params: [levels]
  steps:
    - deeper:
        switch:
          - condition: ${levels > 1}
            steps:
              - inner:
                  parallel:
                    branches:
                      - only:
                          steps:
                            - again:
                                call: leaf
                                args:
                                  levels: ${levels}
leaf:
  params: [levels]
  steps:
    - third:
        switch:
          - condition: ${levels > 2}
            steps:
              - innermost:
                  parallel:
                    branches:
                      - only:
                          steps:
                            - x:
                                assign:
                                  - y: 1
"""


def test_parallel_nesting_is_counted_through_subworkflow_calls():
    assert run(NESTED_THROUGH_CALLS, 2) == "reached"
    error = failure(NESTED_THROUGH_CALLS, 3)
    branch_errors = json.dumps(error.payload)
    assert "ParallelNestingError" in branch_errors and "nest at most 2" in branch_errors
