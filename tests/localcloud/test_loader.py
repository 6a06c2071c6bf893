"""Load-time checks: what `gcloud workflows deploy` would reject is a LoadError naming the problem.

Syntax reference: https://cloud.google.com/workflows/docs/reference/syntax
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from localcloud import loader, model
from localcloud.errors import LoadError

SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "workflows.schema.json"


def load(source: str) -> model.Workflow:
    return loader.load_text(textwrap.dedent(source))


def rejected(source: str) -> str:
    with pytest.raises(LoadError) as caught:
        load(source)
    return str(caught.value)


# --- what loads

VALID = {
    "steps_list": """
        - first:
            assign:
              - x: 1
        - last:
            return: ${x}
    """,
    "subworkflows": """
        main:
          params: [input]
          steps:
            - call_it:
                call: greet
                args:
                  first_name: ${input.name}
                result: message
            - done:
                return: ${message}
        greet:
          params: [first_name, last_name: "Unknown"]
          steps:
            - build:
                return: ${"Hello " + first_name + " " + last_name}
    """,
    "every_step_kind": """
        main:
          steps:
            - init:
                assign:
                  - items: [1, 2]
                  - total: 0
                  - m: {}
                  - m.k: ${items[0]}
            - loop:
                for:
                  value: v
                  index: i
                  in: ${items}
                  steps:
                    - add:
                        assign:
                          - total: ${total + v}
            - ranged:
                for:
                  value: n
                  range: [1, 3]
                  steps:
                    - skip:
                        next: continue
            - fan_out:
                parallel:
                  shared: [total]
                  concurrency_limit: 2
                  exception_policy: continueAll
                  branches:
                    - one:
                        steps:
                          - a:
                              assign:
                                - total: ${total + 1}
                    - two:
                        steps:
                          - b:
                              assign:
                                - local_only: 1
            - guarded:
                try:
                  steps:
                    - risky:
                        raise: "boom"
                retry:
                  predicate: ${always_retry}
                  max_retries: 2
                  backoff:
                    initial_delay: 0
                    max_delay: 1
                    multiplier: 2
                except:
                  as: e
                  steps:
                    - note:
                        assign:
                          - caught: ${e}
            - pick:
                switch:
                  - condition: ${total > 100}
                    next: finish
                  - condition: ${total > 1}
                    steps:
                      - inner:
                          assign:
                            - big: true
                next: finish
            - finish:
                return: ${total}
        always_retry:
          params: [e]
          steps:
            - answer:
                return: true
    """,
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_workflows_load(name):
    workflow = load(VALID[name])
    assert "main" in workflow.subworkflows


@pytest.mark.skipif(not SCHEMA.exists(), reason="../shared/schemas/workflows.schema.json is absent")
@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_workflows_match_the_published_schema(name):
    import jsonschema
    jsonschema.validate(yaml.safe_load(textwrap.dedent(VALID[name])), json.loads(SCHEMA.read_text()))


def test_a_steps_list_becomes_main_without_params():
    workflow = load(VALID["steps_list"])
    assert list(workflow.subworkflows) == ["main"] and workflow.main.params == []


def test_params_with_defaults():
    params = load(VALID["subworkflows"]).subworkflows["greet"].params
    assert [(p.name, p.has_default, p.default) for p in params] == [
        ("first_name", False, None), ("last_name", True, "Unknown")]


def test_json_source_loads_like_yaml():
    as_json = json.dumps(yaml.safe_load(textwrap.dedent(VALID["subworkflows"])))
    assert list(loader.load_text(as_json).subworkflows) == ["main", "greet"]


def test_load_file(tmp_path):
    path = tmp_path / "flow.yaml"
    path.write_text(textwrap.dedent(VALID["steps_list"]))
    assert loader.load_file(path).main.steps.index == {"first": 0, "last": 1}


def test_unquoted_timestamps_stay_strings():
    step = load("- s:\n    return: 2022-02-15T00:00:00Z\n").main.steps.steps[0]
    assert step.value.value == "2022-02-15T00:00:00Z"


class Variables(dict):
    """The variables an expression reads (expressions.Env), here without a running workflow."""

    def lookup(self, name):
        return self[name]

    def call(self, name, args):
        raise AssertionError(f"unexpected call to {name}")


def test_expressions_are_parsed_at_load_time():
    step = load(VALID["steps_list"]).main.steps.steps[1]
    assert step.value.eval(Variables(x=41)) == 41


# --- what is rejected, and the message names it

@pytest.mark.parametrize("source, words", [
    ("- s:\n    assign:\n      - x: 1\n    nxt: end\n", ["unknown", "nxt"]),
    ("- s:\n    for:\n      value: v\n      in: [1]\n      step: []\n", ["unknown", "step"]),
    ("- s:\n    parallel:\n      branch: []\n", ["unknown", "branch"]),
    ("- s:\n    assign:\n      - x: 1\n    call: sys.log\n", ["assign and call"]),
    ("- s:\n    assign: {x: 1}\n", ["assign", "list"]),
    ("- s:\n    call: sys.log\n    args: [1]\n", ["args", "map"]),
    ("- s:\n    steps: {a: 1}\n", ["steps"]),
    ("- s:\n    raise: x\n    next: end\n", ["unknown", "next"]),
    ("- s: {}\n", ["empty step"]),
    ("- s:\n    return: 1\n- s:\n    return: 2\n", ["duplicate", "'s'"]),
    ("- end:\n    return: 1\n", ["reserved"]),
    ("main:\n  params: [a, b]\n  steps:\n    - s:\n        return: 1\n", ["at most one parameter"]),
    ("sub:\n  steps:\n    - s:\n        return: 1\n", ["no 'main'"]),
    # "Subworkflows are always defined after the main body" (syntax/subworkflows)
    ("sub:\n  steps:\n    - s:\n        return: 1\nmain:\n  steps:\n    - t:\n        return: 1\n", ["first"]),
    ("main:\n  steps:\n    - s:\n        return: 1\n  param: []\n", ["unknown", "param"]),
    ("- s:\n    call: sys.log\n    result: 1bad\n", ["variable name"]),
    ("- s:\n    for:\n      value: v\n      steps:\n        - a:\n            return: 1\n", ["'in' and 'range'"]),
    ("- s:\n    for:\n      value: v\n      index: i\n      range: [1, 2]\n      steps:\n        - a:\n            return: 1\n",
     ["index", "range"]),
    ("- s:\n    switch:\n      - next: end\n", ["condition"]),
    ("- s:\n    try:\n      return: 1\n", ["retry", "except"]),
    ("key: [unclosed\n", ["YAML"]),
    ("- s:\n    assign:\n      - x: 1\n    assign:\n      - y: 2\n", ["duplicate key", "assign"]),
    ("42\n", ["list of steps"]),
])
def test_wrong_shapes_and_unknown_keys(source, words):
    message = rejected(source)
    for word in words:
        assert word in message


def test_next_to_a_missing_step():
    assert "nowhere" in rejected("- s:\n    next: nowhere\n- t:\n    return: 1\n")


def test_jumping_into_or_out_of_a_for_loop_is_not_allowed():
    # "Jumping in or out of a for loop, or between two different for loops, is not allowed."
    # https://cloud.google.com/workflows/docs/reference/syntax/iteration
    out_of = """
        - loop:
            for:
              value: v
              in: [1]
              steps:
                - jump_out:
                    next: after
        - after:
            return: 1
    """
    into = """
        - jump_in:
            next: inside
        - loop:
            for:
              value: v
              in: [1]
              steps:
                - inside:
                    return: 1
    """
    assert "after" in rejected(out_of)
    assert "inside" in rejected(into)


def test_break_and_continue_outside_a_loop():
    assert "outside a for loop" in rejected("- s:\n    next: break\n")


def test_call_to_undefined_subworkflow_or_unknown_function():
    assert "nosuch" in rejected("- s:\n    call: nosuch\n")
    assert "text.nosuch" in rejected("- s:\n    assign:\n      - x: ${text.nosuch(1)}\n")


def test_unregistered_connector_is_reported_as_unsupported():
    message = rejected("- s:\n    call: googleapis.storage.v1.objects.get\n    args: {bucket: b}\n")
    assert "connector" in message and "googleapis.storage.v1.objects.get" in message


def test_unknown_argument_to_a_subworkflow():
    source = """
        main:
          steps:
            - s:
                call: sub
                args: {nope: 1}
        sub:
          params: [a]
          steps:
            - r:
                return: ${a}
    """
    assert "nope" in rejected(source)


@pytest.mark.parametrize("call, words", [
    ("call: sub\n      args: {}", ["missing", "needed"]),
    ("return: ${sub()}", ["missing", "needed"]),
    ("return: ${sub(1, 2, 3)}", ["at most 2"]),
    ("call: sys.log\n      args: {nope: 1}", ["sys.log", "nope"]),
    ("return: ${len()}", ["len", "missing"]),
    ("return: ${len(1, 2)}", ["len", "at most 1"]),
])
def test_arguments_are_bound_at_load_time(call, words):
    source = f"main:\n  steps:\n  - c:\n      {call}\n" \
             "sub:\n  params: [needed, optional: 1]\n  steps:\n  - r:\n      return: ${needed}\n"
    message = rejected(source)
    for word in words:
        assert word in message


def test_invalid_expression_names_the_expression():
    message = rejected("- s:\n    return: ${1 +}\n")
    assert "${1 +}" in message


def test_expression_length_limit():
    # Workflows quotas, resource limits: expression length 400 characters.
    # https://cloud.google.com/workflows/quotas
    long_sum = " + ".join(["1"] * 100)          # 397 characters
    load(f"- s:\n    return: ${{{long_sum}}}\n")
    assert "400" in rejected(f"- s:\n    return: ${{{long_sum} + 10}}\n")


def test_at_most_50_assignments_per_assign_step():
    def source(n):
        lines = "".join(f"      - v{i}: {i}\n" for i in range(n))
        return f"- s:\n    assign:\n{lines}"
    load(source(50))
    assert "50" in rejected(source(51))


def test_assignment_to_a_parent_variable_inside_parallel_must_be_shared():
    # "a list of writable variables with parent scope that allow assignments within the parallel step"
    # https://cloud.google.com/workflows/docs/reference/syntax/parallel-steps
    template = """
        - init:
            assign:
              - total: 0
        - fan_out:
            parallel:
              {shared}
              branches:
                - one:
                    steps:
                      - a:
                          assign:
                            - total: ${{total + 1}}
                - two:
                    steps:
                      - b:
                          assign:
                            - fresh: 1
    """
    message = rejected(template.format(shared=""))
    assert "total" in message and "shared" in message
    load(template.format(shared="shared: [total]"))


def test_partial_assignment_and_call_results_count_as_assignments_in_parallel():
    source = """
        - init:
            assign:
              - m: {}
        - fan_out:
            parallel:
              for:
                value: v
                in: [1, 2]
                steps:
                  - a:
                      assign:
                        - m.k: ${v}
    """
    assert "'m'" in rejected(source)


def test_shared_variables_must_be_defined_before_the_parallel_step():
    source = """
        - fan_out:
            parallel:
              shared: [later]
              branches:
                - one:
                    steps:
                      - a:
                          assign:
                            - later: 1
    """
    assert "later" in rejected(source)


def test_reading_an_undefined_variable_is_a_load_error():
    assert "'nowhere'" in rejected("- s:\n    return: ${nowhere + 1}\n")
    assert "'m'" in rejected("- s:\n    assign:\n      - m.k: 1\n")
    assert "'i'" in rejected("- s:\n    assign:\n      - l: [1]\n      - l[i]: 2\n")


def test_order_within_a_scope_is_left_to_the_run():
    # A later step may define what an earlier one reads, reached again through `next`.
    load("""
        - first:
            switch:
              - condition: ${defined_later == 1}
                return: done
        - later:
            assign:
              - defined_later: 1
            next: first
    """)


def test_only_the_continue_all_exception_policy_exists():
    source = """
        - fan_out:
            parallel:
              exception_policy: unhandled
              branches:
                - one:
                    steps:
                      - a:
                          return: 1
    """
    assert "unhandled" in rejected(source)


def test_return_inside_a_parallel_branch_is_unsupported():
    source = """
        - fan_out:
            parallel:
              branches:
                - one:
                    steps:
                      - a:
                          return: 1
    """
    assert "return" in rejected(source)


def test_at_most_ten_branches():
    branches = "".join(f"          - b{i}:\n              steps:\n                - s{i}:\n                    assign:\n"
                       f"                      - x{i}: 1\n" for i in range(11))
    assert "10" in rejected(f"- p:\n    parallel:\n      branches:\n{branches}")


def test_parallel_nesting_depth():
    def nest(depth):
        body = "- leaf:\n    assign:\n      - x: 1\n"
        for level in range(depth):
            body = (f"- p{level}:\n    parallel:\n      branches:\n        - b{level}:\n            steps:\n"
                    + textwrap.indent(body, " " * 14))
        return body
    load(nest(2))
    assert "nest" in rejected(nest(3))


@pytest.mark.parametrize("policy", ["${retry.always}", "${nope}", "plain"])
def test_unknown_retry_policies(policy):
    source = f"""
        - t:
            try:
              raise: x
            retry: {policy}
    """
    assert "retry" in rejected(source)


def test_retry_predicate_must_exist():
    source = """
        - t:
            try:
              raise: x
            retry:
              predicate: ${missing_predicate}
              max_retries: 1
    """
    assert "missing_predicate" in rejected(source)


def test_named_retry_policies_map_to_documented_values():
    # https://cloud.google.com/workflows/docs/reference/stdlib/http/default_retry: max_retries 5,
    # backoff per retry.default_backoff: initial 1 s, max 60 s, multiplier 1.25.
    for name, predicate in [("http.default_retry", "http.default_retry_predicate"),
                            ("http.default_retry_non_idempotent", "http.default_retry_predicate_non_idempotent")]:
        step = load(f"- t:\n    try:\n      raise: x\n    retry: ${{{name}}}\n").main.steps.steps[0]
        policy = step.retry
        assert policy.predicate == predicate
        assert [n.value for n in (policy.max_retries, policy.initial_delay, policy.max_delay, policy.multiplier)] \
            == [5, 1.0, 60.0, 1.25]
