"""The expression language, from Google's reference pages.

Operators, precedence and types: https://cloud.google.com/workflows/docs/reference/syntax/datatypes
Expressions: https://cloud.google.com/workflows/docs/reference/syntax/expressions
Error tags: https://cloud.google.com/workflows/docs/reference/syntax/error-types
"""
from __future__ import annotations

import ast
import operator

import pytest
from hypothesis import given, settings, strategies as st

from localcloud import expressions as ex
from localcloud.errors import WorkflowError, fail


class Env:
    def __init__(self, variables=None, functions=None):
        self.variables = variables or {}
        self.functions = functions or {}
        self.calls = []

    def lookup(self, name):
        if name not in self.variables:
            fail("KeyError", f"variable '{name}' is not defined")
        return self.variables[name]

    def call(self, name, args):
        self.calls.append(name)
        return self.functions[name](*args)


def ev(text, **variables):
    return ex.parse(text).eval(Env(variables))


def error_tags(text, **variables):
    with pytest.raises(WorkflowError) as caught:
        ev(text, **variables)
    return caught.value.tags


# --- arithmetic (datatypes page: "Integer (64 bit, signed)", "Double (64 bit ...)")

@pytest.mark.parametrize("text, expected", [
    ("1 + 2", 3), ("7 - 10", -3), ("6 * 7", 42),
    ("7 // 2", 3), ("-7 // 2", -4), ("7 % 3", 1),
    ("1 + 2.5", 3.5), ("2 * 1.5", 3.0),
    ("\"Hello \" + \"world\"", "Hello world"),
])
def test_arithmetic(text, expected):
    assert ev(text) == expected
    assert type(ev(text)) is type(expected)


def test_division_of_integers_gives_a_double():
    assert ev("5 / 2") == 2.5
    assert ev("4 / 2") == 2.0 and isinstance(ev("4 / 2"), float)


def test_floor_division_of_doubles_gives_a_double():
    assert ev("7.5 // 2") == 3.0 and isinstance(ev("7.5 // 2"), float)


@pytest.mark.parametrize("text", ["1 / 0", "1 // 0", "1 % 0", "1.5 / 0.0"])
def test_division_by_zero_is_a_zero_division_error(text):
    assert "ZeroDivisionError" in error_tags(text)


@pytest.mark.parametrize("text", ["9223372036854775807 + 1", "-9223372036854775808 - 1",
                                  "4611686018427387904 * 2", "-x"])
def test_integer_overflow_is_an_error_not_a_bignum(text):
    assert error_tags(text, x=-9223372036854775808) == ["ValueError"]


def test_the_extreme_64_bit_integers_are_values():
    assert ev("9223372036854775807") == 2 ** 63 - 1
    assert ev("-9223372036854775808") == -(2 ** 63)


@pytest.mark.parametrize("text", ["\"a\" + 1", "1 + \"a\"", "[1] + [2]", "true + 1", "null + 1",
                                  "\"a\" * 2", "-\"a\""])
def test_no_implicit_conversion(text):
    assert error_tags(text) == ["TypeError"]


# --- order of operations: (), ., [], not, unary -, * / // %, + -, comparisons/in, and, or

@pytest.mark.parametrize("text, expected", [
    ("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("10 - 4 - 3", 3), ("2 * 3 % 4", 2),
    ("-2 * 3", -6), ("- (2 + 3)", -5), ("1 + 2 == 3", True),
    ("true or false and false", True), ("(true or false) and false", False),
    ("not true or true", True), ("not (true or true)", False),
    ("not true == false", True),        # `not` binds tighter than `==`: (not true) == false
    ("m.list[1] * 2", 4), ("2 in [1, 2] and true", True),
])
def test_precedence(text, expected):
    assert ev(text, m={"list": [1, 2]}) == expected


def test_multi_line_expression():
    assert ev("1 +\n    2 *\n    3") == 7


# --- literals

def test_booleans_and_null_literals():
    assert [ev(t) for t in ("true", "True", "TRUE", "false", "False", "FALSE")] == [True] * 3 + [False] * 3
    assert ev("null") is None


def test_logical_operators_upper_case():
    assert ev("true AND NOT false OR false") is True


def test_numbers():
    assert ev("42") == 42 and isinstance(ev("42"), int)
    assert ev("1.5") == 1.5 and ev("2e3") == 2000.0 and ev(".5") == 0.5


@pytest.mark.parametrize("text, expected", [
    (r'"a\"b"', 'a"b'), (r"'single'", "single"), (r'"tab\there"', "tab\there"),
    (r'"line\nbreak"', "line\nbreak"), (r'"\u00e9"', "é"), (r'"back\\slash"', "back\\slash"),
    ('"}"', "}"),
])
def test_string_escapes(text, expected):
    assert ev(text) == expected


def test_list_literals():
    # `range: ${[BEGIN_EXPRESSION, END_EXPRESSION]}`, https://cloud.google.com/workflows/docs/reference/syntax/iteration
    assert ev('[1, "two", [3], x + 1]', x=3) == [1, "two", [3], 4]
    assert ev("[]") == []


def test_map_literals_are_refused_as_undocumented():
    # Not among the "supported elements" of https://cloud.google.com/workflows/docs/reference/syntax/expressions
    with pytest.raises(ex.ExpressionSyntaxError, match="map literals"):
        ex.parse('{"a": 1}')


# --- access: . and []

def test_property_and_index_access():
    data = {"m": {"a": {"b": [10, {"c": "deep"}]}, "key with space": 1}}
    assert ev("m.a.b[1].c", **data) == "deep"
    assert ev('m["a"]["b"][0]', **data) == 10
    assert ev('m["key with space"]', **data) == 1
    assert ev("m.a.b[i + 1].c", i=0, **data) == "deep"


def test_missing_key_is_a_key_error():
    assert "KeyError" in error_tags("m.missing", m={})
    assert "KeyError" in error_tags('m["missing"]', m={})


@pytest.mark.parametrize("index", [3, -1])
def test_list_index_out_of_range_is_an_index_error(index):
    assert "IndexError" in error_tags("l[i]", l=[1, 2, 3], i=index)


def test_wrong_access_types_are_type_errors():
    assert error_tags("l[\"a\"]", l=[1]) == ["TypeError"]
    assert error_tags("s.x", s="text") == ["TypeError"]
    assert error_tags("l[1.0]", l=[1, 2]) == ["TypeError"]


def test_undefined_variable_is_a_key_error():
    assert "KeyError" in error_tags("nope")


# --- comparisons, membership, logic

@pytest.mark.parametrize("text, expected", [
    ("1 == 1.0", True), ("1 != 2", True), ("\"a\" < \"b\"", True), ("2 >= 2.0", True),
    ("[1, [2]] == [1, [2]]", True), ("m == n", True), ("null == null", True),
    ("true == 1", False), ("null == 0", False), ("\"1\" == 1", False),
])
def test_equality_and_ordering(text, expected):
    assert ev(text, m={"a": 1}, n={"a": 1.0}) is expected


@pytest.mark.parametrize("text", ["1 < \"a\"", "null < 1", "true < false", "[1] < [2]"])
def test_ordering_needs_two_numbers_or_two_strings(text):
    assert error_tags(text) == ["TypeError"]


def test_in_checks_list_elements_and_map_keys():
    # "${'SystemError' in e.tags}" from the error-types page
    assert ev("'SystemError' in e.tags", e={"tags": ["SystemError"]}) is True
    assert ev("2 in [1, 2.0]") is True and ev("3 in [1, 2]") is False
    assert ev('"k" in m', m={"k": None}) is True and ev('"v" in m', m={"k": "v"}) is False
    assert error_tags('"a" in "abc"') == ["TypeError"]


def test_and_or_short_circuit():
    env = Env(functions={"boom": lambda: fail("ValueError", "evaluated")})
    assert ex.parse("false and boom()").eval(env) is False
    assert ex.parse("true or boom()").eval(env) is True
    assert env.calls == []


@pytest.mark.parametrize("text", ["1 and true", "true and 1", "not 1", "null or true"])
def test_logical_operators_need_booleans(text):
    assert error_tags(text) == ["TypeError"]


# --- calls

def test_calls_use_the_dotted_name_and_positional_arguments():
    env = Env({"s": "a,b"}, {"text.split": lambda s, sep: s.split(sep), "len": len})
    assert ex.parse('len(text.split(s, ","))').eval(env) == 2
    assert env.calls == ["text.split", "len"]


def test_function_names_are_listed_for_load_time_checks():
    node = ex.parse('map.get(m, "k") + len(sub(1, x.y))')
    assert sorted(call.name for call in ex.calls(node)) == ["len", "map.get", "sub"]


# --- syntax errors are caught at parse time

@pytest.mark.parametrize("text", ["", "1 +", "(1", "a..b", "[1, 2", "1 2", "[1 2]", "f(", "x[]",
                                  "\"unterminated", "a = 1", "not", "1 +* 2", "(1)(2)", "and",
                                  "9223372036854775808", "-9223372036854775809"])
def test_syntax_errors(text):
    with pytest.raises(ex.ExpressionSyntaxError):
        ex.parse(text)


# --- what counts as an expression inside a YAML string

@pytest.mark.parametrize("value, inside", [
    ("${x}", "x"), ("${a + b}", "a + b"), ('${"}"}', '"}"'), ('${{"a": 1}}', '{"a": 1}'),
    ("abc ${x}", None), ("${a} and ${b}", None), ("${x} tail", None), ("plain", None), ("$x", None),
])
def test_whole_expression(value, inside):
    assert ex.whole_expression(value) == inside


# --- against an independent oracle: Python's ast, checking every intermediate result

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


def oracle(text):
    def walk(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp):
            value = -walk(node.operand)
        else:
            value = _OPS[type(node.op)](walk(node.left), walk(node.right))
        if not -(2 ** 63) <= value <= 2 ** 63 - 1:
            raise OverflowError
        return value
    return walk(ast.parse(text, mode="eval").body)


@st.composite
def arithmetic(draw, depth=0):
    if depth > 3 or draw(st.booleans()):
        return str(draw(st.integers(min_value=0, max_value=10 ** 6)))
    op = draw(st.sampled_from(["+", "-", "*", "//", "%"]))
    left, right = draw(arithmetic(depth + 1)), draw(arithmetic(depth + 1))
    text = f"{left} {op} {right}"
    return f"({text})" if draw(st.booleans()) else (f"-{text}" if draw(st.booleans()) else text)


@settings(max_examples=150, deadline=None)
@given(arithmetic())
def test_integer_arithmetic_matches_an_oracle(text):
    try:
        expected = oracle(text)
    except ZeroDivisionError:
        assert "ZeroDivisionError" in error_tags(text)
        return
    except OverflowError:
        assert error_tags(text) == ["ValueError"]
        return
    assert ev(text) == expected


@settings(max_examples=100, deadline=None)
@given(st.integers(-(2 ** 63), 2 ** 63 - 1), st.integers(-(2 ** 63), 2 ** 63 - 1),
       st.sampled_from(["+", "-", "*"]))
def test_64_bit_overflow_boundary(a, b, op):
    exact = {"+": operator.add, "-": operator.sub, "*": operator.mul}[op](a, b)
    if -(2 ** 63) <= exact <= 2 ** 63 - 1:
        assert ev(f"a {op} b", a=a, b=b) == exact
    else:
        assert error_tags(f"a {op} b", a=a, b=b) == ["ValueError"]
