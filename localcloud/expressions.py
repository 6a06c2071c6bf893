"""The Workflows expression language: parse `${...}` once at load time, evaluate many times.

A tokenizer and a precedence-climbing parser build a small tree of nodes; each node has
`eval(env)`. The grammar and operator precedence follow Google's data types page
(https://cloud.google.com/workflows/docs/reference/syntax/datatypes), highest first:
`()`, `.`, `[]`, `not`, unary `-`, `* / // %`, `+ -`, `< <= > >= == != in`, `and`, `or`.
Values are plain Python: None, bool, int (64-bit), float, str, bytes, list, dict.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from .errors import fail
from .values import is_int, is_number, type_name

INT_MIN, INT_MAX = -(2 ** 63), 2 ** 63 - 1
MAX_EXPRESSION_LENGTH = 400   # characters in one expression (Workflows quotas: resource limits)


class ExpressionSyntaxError(ValueError):
    """An expression that does not parse; the loader turns it into a LoadError."""


class Env(Protocol):
    """What evaluation needs from the runtime."""

    def lookup(self, name: str) -> Any: ...
    def call(self, name: str, args: list[Any]) -> Any: ...


# ---------------------------------------------------------------------------------- tokens

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>//|==|!=|<=|>=|[-+*/%<>()\[\]{}.,:])
""", re.VERBOSE | re.DOTALL)

_KEYWORDS = {
    "and": "and", "AND": "and", "or": "or", "OR": "or", "not": "not", "NOT": "not", "in": "in",
}
_CONSTANTS = {
    "true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False,
    "null": None,
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "\\": "\\", '"': '"',
            "'": "'", "/": "/", "0": "\0"}


@dataclass(frozen=True)
class Token:
    kind: str      # number, string, name (keywords included), op, end
    value: Any
    pos: int


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            raise ExpressionSyntaxError(f"unexpected character {text[pos]!r} at position {pos}")
        kind, raw = match.lastgroup, match.group()
        if kind == "number":
            is_int = re.fullmatch(r"\d+", raw) is not None
            tokens.append(Token("number", int(raw) if is_int else float(raw), pos))
        elif kind == "string":
            tokens.append(Token("string", _unescape(raw[1:-1], pos), pos))
        elif kind != "space":
            tokens.append(Token(kind, raw, pos))       # a name (keywords included) or an operator
        pos = match.end()
    tokens.append(Token("end", None, pos))
    return tokens


def _unescape(body: str, pos: int) -> str:
    out, i = [], 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt == "u":
            digits = body[i + 2:i + 6]
            if not re.fullmatch(r"[0-9a-fA-F]{4}", digits):
                raise ExpressionSyntaxError(f"bad \\u escape in string at position {pos}")
            out.append(chr(int(digits, 16)))
            i += 6
        elif nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        else:
            raise ExpressionSyntaxError(f"unknown escape \\{nxt} in string at position {pos}")
    return "".join(out)


# ----------------------------------------------------------------------------------- nodes

class Node:
    def eval(self, env: Env) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Const(Node):
    value: Any

    def eval(self, env: Env) -> Any:
        return self.value


@dataclass(frozen=True)
class Var(Node):
    name: str

    def eval(self, env: Env) -> Any:
        return env.lookup(self.name)


@dataclass(frozen=True)
class Attr(Node):
    target: Node
    key: str

    def eval(self, env: Env) -> Any:
        return get_key(self.target.eval(env), self.key)


@dataclass(frozen=True)
class Index(Node):
    target: Node
    index: Node

    def eval(self, env: Env) -> Any:
        return get_item(self.target.eval(env), self.index.eval(env))


@dataclass(frozen=True)
class Call(Node):
    name: str                  # dotted: "text.split", or a subworkflow name
    args: tuple[Node, ...]

    def eval(self, env: Env) -> Any:
        return env.call(self.name, [arg.eval(env) for arg in self.args])


@dataclass(frozen=True)
class ListLit(Node):
    items: tuple[Node, ...]

    def eval(self, env: Env) -> Any:
        return [item.eval(env) for item in self.items]


@dataclass(frozen=True)
class MapLit(Node):
    items: tuple[tuple[Node, Node], ...]

    def eval(self, env: Env) -> Any:
        result = {}
        for key_node, value_node in self.items:
            key = key_node.eval(env)
            if not isinstance(key, str):
                fail("TypeError", f"map keys must be strings, got {type_name(key)}")
            result[key] = value_node.eval(env)
        return result


@dataclass(frozen=True)
class Unary(Node):
    op: str
    operand: Node

    def eval(self, env: Env) -> Any:
        value = self.operand.eval(env)
        if self.op == "not":
            if not isinstance(value, bool):
                fail("TypeError", f"'not' needs a boolean, got {type_name(value)}")
            return not value
        if not is_number(value):
            fail("TypeError", f"unary '-' needs a number, got {type_name(value)}")
        return check_int(-value)


@dataclass(frozen=True)
class Logical(Node):
    op: str   # "and" | "or": short-circuit, booleans only
    left: Node
    right: Node

    def eval(self, env: Env) -> Any:
        left = _boolean(self.op, self.left.eval(env))
        if (self.op == "and" and not left) or (self.op == "or" and left):
            return left
        return _boolean(self.op, self.right.eval(env))


@dataclass(frozen=True)
class Binary(Node):
    op: str
    left: Node
    right: Node

    def eval(self, env: Env) -> Any:
        return BINARY[self.op](self.left.eval(env), self.right.eval(env))


def _boolean(op: str, value: Any) -> bool:
    if not isinstance(value, bool):
        fail("TypeError", f"'{op}' needs booleans, got {type_name(value)}")
    return value


# --------------------------------------------------------------------------------- values

def check_int(value: Any) -> Any:
    """Integers are 64-bit signed; an overflow is an error, never a silent bignum."""
    if is_int(value) and not INT_MIN <= value <= INT_MAX:
        fail("ValueError", "integer overflow")
    return value


def get_key(container: Any, key: str) -> Any:
    if not isinstance(container, dict):
        fail("TypeError", f"cannot access key '{key}' of a {type_name(container)}")
    if key not in container:
        fail(["KeyError", "LookupError"], f"key not found: {key}")
    return container[key]


def get_item(container: Any, index: Any) -> Any:
    if isinstance(container, dict):
        if not isinstance(index, str):
            fail("TypeError", f"map keys are strings, got {type_name(index)}")
        return get_key(container, index)
    if isinstance(container, list):
        if not is_int(index):
            fail("TypeError", f"list index must be an integer, got {type_name(index)}")
        if not 0 <= index < len(container):
            fail(["IndexError", "LookupError"], f"list index out of range: {index}")
        return container[index]
    fail("TypeError", f"cannot index a {type_name(container)}")


def equal(a: Any, b: Any) -> bool:
    """Workflows equality: numbers by value (1 == 1.0), no bool/int mixing, deep for containers."""
    if is_number(a) and is_number(b):
        return a == b
    if type_name(a) != type_name(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    return a == b


def _arith(op: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if not (is_number(a) and is_number(b)):
            fail("TypeError", f"unsupported operand types for {op}: {type_name(a)} and {type_name(b)}")
        return check_int(fn(a, b))
    return apply


_add_numbers = _arith("+", lambda a, b: a + b)


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, str) and isinstance(b, str):
        return a + b
    return _add_numbers(a, b)


def _nonzero(op: str, fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    checked = _arith(op, fn)

    def apply(a: Any, b: Any) -> Any:
        if is_number(a) and is_number(b) and b == 0:
            fail(["ZeroDivisionError", "ArithmeticError"], "division by zero")
        return checked(a, b)
    return apply


def _floordiv(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int):
        return a // b
    return float(math.floor(a / b))


def _compare(op: str, fn: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def apply(a: Any, b: Any) -> bool:
        if (is_number(a) and is_number(b)) or (isinstance(a, str) and isinstance(b, str)):
            return fn(a, b)
        fail("TypeError", f"cannot compare {type_name(a)} {op} {type_name(b)}")
    return apply


def _contains(item: Any, container: Any) -> bool:
    if isinstance(container, list):
        return any(equal(item, element) for element in container)
    if isinstance(container, dict):
        if not isinstance(item, str):
            fail("TypeError", f"map keys are strings, got {type_name(item)}")
        return item in container
    fail("TypeError", f"'in' needs a list or a map, got {type_name(container)}")


BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": _add,
    "-": _arith("-", lambda a, b: a - b),
    "*": _arith("*", lambda a, b: a * b),
    "/": _nonzero("/", lambda a, b: a / b),            # always a double, like 5 / 2 == 2.5
    "//": _nonzero("//", _floordiv),
    "%": _nonzero("%", lambda a, b: a % b),
    "==": equal,
    "!=": lambda a, b: not equal(a, b),
    "<": _compare("<", lambda a, b: a < b),
    "<=": _compare("<=", lambda a, b: a <= b),
    ">": _compare(">", lambda a, b: a > b),
    ">=": _compare(">=", lambda a, b: a >= b),
    "in": _contains,
}

# --------------------------------------------------------------------------------- parser

# Binding powers of binary operators (higher binds tighter).
_BINARY_POWER = {
    "or": 1, "and": 2,
    "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3, "in": 3,
    "+": 4, "-": 4,
    "*": 5, "/": 5, "//": 5, "%": 5,
}
# `not` and unary `-` bind tighter than any binary operator: `not a == b` is `(not a) == b`.


class _Parser:
    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, op: str) -> None:
        token = self.take()
        if token.kind != "op" or token.value != op:
            raise self.error(token, f"expected '{op}'")

    def error(self, token: Token, what: str) -> ExpressionSyntaxError:
        found = "end of expression" if token.kind == "end" else repr(token.value)
        return ExpressionSyntaxError(f"{what}, found {found} at position {token.pos}")

    def parse(self) -> Node:
        node = self.expression(0)
        if self.peek().kind != "end":
            raise self.error(self.peek(), "unexpected token")
        return node

    def expression(self, min_power: int) -> Node:
        left = self.unary()
        while True:
            op = self.operator(self.peek())
            power = _BINARY_POWER.get(op) if op else None
            if power is None or power <= min_power:
                return left
            self.take()
            right = self.expression(power)
            left = Logical(op, left, right) if op in ("and", "or") else Binary(op, left, right)

    @staticmethod
    def operator(token: Token) -> str | None:
        if token.kind == "op":
            return token.value
        if token.kind == "name":
            return _KEYWORDS.get(token.value)
        return None

    def unary(self) -> Node:
        op = self.operator(self.peek())
        if op in ("not", "-"):
            self.take()
            operand = self.unary()
            if op == "-" and isinstance(operand, Const) and is_number(operand.value):
                return Const(-operand.value)      # so that -9223372036854775808 is a literal
            return Unary(op, operand)
        return self.postfix(self.primary())

    def primary(self) -> Node:
        token = self.take()
        if token.kind == "number":
            return Const(token.value)          # range-checked after folding a leading minus
        if token.kind == "string":
            return Const(token.value)
        if token.kind == "name":
            if token.value in _CONSTANTS:
                return Const(_CONSTANTS[token.value])
            if token.value in _KEYWORDS:
                raise self.error(token, "expected a value")
            return Var(token.value)
        if token.kind == "op" and token.value == "(":
            node = self.expression(0)
            self.expect(")")
            return node
        if token.kind == "op" and token.value == "[":
            return ListLit(tuple(self.items("]")))
        if token.kind == "op" and token.value == "{":
            # Not among the documented expression elements; refuse rather than accept what Google may not.
            raise self.error(token, "map literals are not supported inside ${...}; write the map in YAML")
        raise self.error(token, "expected a value")

    def items(self, close: str) -> list[Node]:
        items: list[Node] = []
        if self.peek().kind == "op" and self.peek().value == close:
            self.take()
            return items
        while True:
            items.append(self.expression(0))
            token = self.take()
            if token.kind == "op" and token.value == close:
                return items
            if not (token.kind == "op" and token.value == ","):
                raise self.error(token, f"expected ',' or '{close}'")

    def postfix(self, node: Node) -> Node:
        while True:
            token = self.peek()
            if token.kind == "op" and token.value == ".":
                self.take()
                name = self.take()
                if name.kind != "name":
                    raise self.error(name, "expected a key after '.'")
                node = Attr(node, name.value)
            elif token.kind == "op" and token.value == "[":
                self.take()
                index = self.expression(0)
                self.expect("]")
                node = Index(node, index)
            elif token.kind == "op" and token.value == "(":
                function = dotted_name(node)
                if function is None:
                    raise self.error(token, "only named functions can be called")
                self.take()
                node = Call(function, tuple(self.items(")")))
            else:
                return node


def dotted_name(node: Node) -> str | None:
    """`text.split` for Attr(Var(text), split); None for anything else."""
    if isinstance(node, Var):
        return node.name
    if isinstance(node, Attr):
        prefix = dotted_name(node.target)
        return f"{prefix}.{node.key}" if prefix else None
    return None


def parse(text: str) -> Node:
    """Parse the inside of `${...}`."""
    if not text.strip():
        raise ExpressionSyntaxError("empty expression")
    tree = _Parser(text).parse()
    for node in _nodes(tree):
        if isinstance(node, Const) and is_int(node.value) and not INT_MIN <= node.value <= INT_MAX:
            raise ExpressionSyntaxError(f"integer literal {node.value} does not fit in 64 bits")
    return tree


def _nodes(node: Any) -> Iterator[Node]:
    if isinstance(node, Node):
        yield node
        for value in vars(node).values():
            yield from _nodes(value)
    elif isinstance(node, tuple):
        for value in node:
            yield from _nodes(value)


def calls(node: Node) -> list[Call]:
    """Every call in the expression, for load-time checks."""
    return [n for n in _nodes(node) if isinstance(n, Call)]


def variables(node: Node) -> set[str]:
    """Every variable the expression reads, for load-time checks."""
    return {n.name for n in _nodes(node) if isinstance(n, Var)}


# ------------------------------------------------------------------ `${...}` inside values

def whole_expression(value: str) -> str | None:
    """The inside of `value` if the whole string is one `${...}`, else None.

    Workflows evaluates a string only when the entire value is one expression; text around
    or between expressions ("abc ${x}") is kept as a literal string.
    """
    if not (value.startswith("${") and value.endswith("}")):
        return None
    depth, quote, i = 0, None, 2
    while i < len(value):
        char = value[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return value[2:i] if i == len(value) - 1 else None
            depth -= 1
        i += 1
    return None
