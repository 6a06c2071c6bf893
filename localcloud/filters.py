"""The subset of AIP-160 filters and AIP-132 orderBy that executions.list accepts.

Filter fields, as Google documents them for executions: executionId, state, createTime,
startTime, endTime, duration, workflowRevisionId, and labels as `labels.KEY`. Operators
= != < <= > >= and `:` (has: `labels:KEY` or `labels.KEY:*`), joined by AND, OR, NOT (or `-`)
and parentheses; AND also by juxtaposition. Times compare as instants, so `startTime>"2023-08-01"`
works. Anything else is rejected with a ValueError naming the problem (the API turns it into 400).
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, Callable

Execution = dict[str, Any]
Predicate = Callable[[Execution], bool]

# Parentheses and negations nest at most this deep: the parser and the predicate it builds recurse
# once per level, and a filter is a query, not a program (AIP-160 sets no number; this is ours).
MAX_NESTING = 50
TIME_FIELDS = {"createTime", "startTime", "endTime"}
TEXT_FIELDS = {"executionId", "state", "workflowRevisionId"}
ORDER_FIELDS = TIME_FIELDS | TEXT_FIELDS | {"duration"}

TOKEN = re.compile(r"""\s*(?:
    (?P<lparen>\() | (?P<rparen>\)) |
    (?P<op><=|>=|!=|=|<|>|:) |
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*') |
    (?P<word>[^\s()=!<>:"']+)
)""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, pos, text = [], 0, text.strip()
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ValueError(f"invalid filter at character {pos + 1}: {text[pos:]!r}")
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "string":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        tokens.append((kind, value))
        pos = match.end()
    return tokens


def parse_filter(text: str | None) -> Predicate:
    """Compile a filter into a predicate over Execution JSON documents; empty means all."""
    if not text or not text.strip():
        return lambda execution: True
    parser = _Parser(_tokens(text))
    predicate = parser.expression()
    if parser.pos != len(parser.tokens):
        raise ValueError(f"invalid filter: unexpected {parser.tokens[parser.pos][1]!r}")
    return predicate


def required_labels(text: str | None) -> dict[str, str]:
    """The `labels.KEY="VALUE"` restrictions every match must meet, for an index lookup.
    Only a plain conjunction qualifies; with OR, NOT or parentheses this gives {} (no narrowing)."""
    tokens = _tokens(text or "")
    if any(kind in ("lparen", "rparen") or value in ("OR", "NOT") or
           (kind == "word" and value.startswith("-")) for kind, value in tokens):
        return {}
    required = {}
    for (kind, field), op, (value_kind, value) in zip(tokens, tokens[1:], tokens[2:]):
        if kind == "word" and field.startswith("labels.") and op == ("op", "=") and value_kind != "op":
            if required.get(field[7:], value) != value:
                return {}  # contradictory: the full predicate rejects everything anyway
            required[field[7:]] = value
    return required


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens, self.pos, self.depth = tokens, 0, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if token is None:
            raise ValueError("invalid filter: unexpected end")
        self.pos += 1
        return token

    def expression(self) -> Predicate:
        # AIP-160: OR binds tighter than AND, so `a AND b OR c` is `a AND (b OR c)`.
        terms = [self.disjunction()]
        while (token := self.peek()) and token != ("rparen", ")"):
            if token == ("word", "AND"):
                self.take()
            terms.append(self.disjunction())
        return lambda e: all(term(e) for term in terms)

    def disjunction(self) -> Predicate:
        terms = [self.unary()]
        while self.peek() == ("word", "OR"):
            self.take()
            terms.append(self.unary())
        return lambda e: any(term(e) for term in terms)

    def unary(self) -> Predicate:
        if self.depth > MAX_NESTING:    # depth: the parentheses and negations around this term
            raise ValueError(f"invalid filter: parentheses and negations nest deeper than {MAX_NESTING} levels")
        self.depth += 1
        try:
            return self._unary()
        finally:
            self.depth -= 1

    def _unary(self) -> Predicate:
        token = self.peek()
        if token in (("word", "NOT"), ("word", "-")):
            self.take()
            inner = self.unary()
            return lambda e: not inner(e)
        if token and token[0] == "word" and token[1].startswith("-") and len(token[1]) > 1:
            self.tokens[self.pos] = ("word", token[1][1:])
            inner = self.unary()
            return lambda e: not inner(e)
        if token == ("lparen", "("):
            self.take()
            inner = self.expression()
            if self.take() != ("rparen", ")"):
                raise ValueError("invalid filter: missing ')'")
            return inner
        return self.restriction()

    def restriction(self) -> Predicate:
        kind, field = self.take()
        if kind != "word" or field in ("AND", "OR", "NOT"):
            raise ValueError(f"invalid filter: expected a field, got {field!r}")
        kind, op = self.take()
        if kind != "op":
            raise ValueError(f"invalid filter: expected an operator after {field!r}, got {op!r}")
        kind, value = self.take()
        if kind not in ("word", "string"):
            raise ValueError(f"invalid filter: expected a value after {field} {op}")
        return _restriction(field, op, value)


def _restriction(field: str, op: str, value: str) -> Predicate:
    if field == "labels" and op == ":":
        return lambda e: value in (e.get("labels") or {})
    if field.startswith("labels.") and len(field) > 7:
        key = field[7:]
        if op == ":":
            return lambda e: key in (e.get("labels") or {}) and (
                value == "*" or value in e["labels"][key])
        if op not in ("=", "!="):
            raise ValueError(f"invalid filter: labels support only =, != and ':', not {op!r}")
        return _compare(op, lambda e: (e.get("labels") or {}).get(key), value)
    if field in TIME_FIELDS:
        bound: Any = _instant(value)
    elif field == "duration":
        bound = _seconds(value)
    elif field in TEXT_FIELDS:
        bound, op = value, "=" if op == ":" else op
    else:
        raise ValueError(f"invalid filter: unsupported field {field!r}")
    return _compare(op, lambda e: _field_value(e, field), bound)


def _compare(op: str, get: Callable[[Execution], Any], bound: Any) -> Predicate:
    def check(execution: Execution) -> bool:
        value = get(execution)
        if op == "=":
            return value == bound
        if op == "!=":
            return value != bound
        if value is None:
            return False
        return {"<": value < bound, "<=": value <= bound, ">": value > bound, ">=": value >= bound}[op]
    if op not in ("=", "!=", "<", "<=", ">", ">="):
        raise ValueError(f"invalid filter: operator {op!r} not supported here")
    return check


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"invalid filter: {text!r} is not an RFC 3339 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _seconds(text: str) -> float:
    try:
        return float(text[:-1] if text.endswith("s") else text)
    except ValueError:
        raise ValueError(f"invalid filter: {text!r} is not a duration like '1.5s'") from None


def parse_order_by(text: str | None) -> list[tuple[str, bool]]:
    """'createTime desc, state' -> [("createTime", True), ("state", False)]; default createTime desc."""
    if not text or not text.strip():
        return [("createTime", True)]
    keys = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2 or words[0] not in ORDER_FIELDS or (
                len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise ValueError(f"invalid orderBy: {part.strip()!r}")
        keys.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    return keys


def sort_executions(rows: list[tuple[int, Execution]], keys: list[tuple[str, bool]]) -> list[tuple[int, Execution]]:
    """Stable multi-key sort; creation order (seq) breaks ties the same way as createTime."""
    rows = sorted(rows, key=lambda row: row[0], reverse=keys[0][1])
    for field, descending in reversed(keys):
        keyed = [(_field_value(row[1], field), row) for row in rows]   # parse each value once
        present = sorted((pair for pair in keyed if pair[0] is not None), key=lambda pair: pair[0],
                         reverse=descending)
        rows = [row for _, row in present] + [row for value, row in keyed if value is None]
    return rows


def _field_value(execution: Execution, field: str) -> Any:
    """A field as filters compare and orderBy sorts it: times as instants, durations as seconds."""
    if field in TIME_FIELDS:
        return _instant(execution[field]) if execution.get(field) else None
    if field == "duration":
        return _seconds(execution["duration"]) if execution.get("duration") else None
    if field == "executionId":
        return execution["name"].rsplit("/", 1)[-1]
    return execution.get(field)
