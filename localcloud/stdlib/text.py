"""The text module: split, substring, replace_all(_regex), find_all(_regex), match_regex,
to_upper, to_lower, url_encode(_plus), url_decode, encode, decode.

https://cloud.google.com/workflows/docs/reference/stdlib/text/split (and the sibling pages)

Strings index by code point, as Python does. Workflows regular expressions use RE2 syntax, so
they run on RE2 itself (the google-re2 package), not on Python's `re`, which differs where users
notice: RE2's `\\d` is ASCII only, `$` matches only at the very end of the text (never before a
final newline), and there is no lookaround or backreference (ValueError, as Google raises).
https://github.com/google/re2/wiki/Syntax
"""
from __future__ import annotations

import codecs
from urllib.parse import quote, unquote

import re2

from ..errors import fail
from . import builtin
from ..values import expect, is_int, type_name

_URL_SAFE = ".-_"   # letters and digits are never escaped; Python would also keep "~"


@builtin("text.split")
def split(context, source, separator):
    _strings("text.split", source=source, separator=separator)
    if separator == "":
        fail("ValueError", "text.split: separator must not be empty")
    return source.split(separator)


@builtin("text.substring")
def substring(context, source, start, end):
    # Negative indexes count from the end; out-of-range indexes are clamped: Python slicing.
    _strings("text.substring", source=source)
    for name, index in (("start", start), ("end", end)):
        if not is_int(index):
            fail("TypeError", f"text.substring: {name} must be an integer, got {type_name(index)}")
    return source[start:end]


@builtin("text.replace_all")
def replace_all(context, source, substr, repl):
    # An empty substr matches before each code point and at the end, as documented.
    _strings("text.replace_all", source=source, substr=substr, repl=repl)
    return source.replace(substr, repl)


@builtin("text.replace_all_regex")
def replace_all_regex(context, source, regexp, repl):
    _strings("text.replace_all_regex", source=source, regexp=regexp, repl=repl)
    # The replacement is literal text: Workflows supports no backreferences such as \1.
    return _compile("text.replace_all_regex", regexp).sub(lambda match: repl, source)


@builtin("text.find_all")
def find_all(context, source, substr):
    _strings("text.find_all", source=source, substr=substr)
    if substr == "":
        return list(range(len(source) + 1))
    found, index = [], source.find(substr)
    while index >= 0:
        found.append(index)
        index = source.find(substr, index + len(substr))   # non-overlapping, leftmost first
    return found


@builtin("text.find_all_regex")
def find_all_regex(context, source, regexp):
    _strings("text.find_all_regex", source=source, regexp=regexp)
    pattern = _compile("text.find_all_regex", regexp)
    return [{"index": match.start(), "match": match.group(0)} for match in pattern.finditer(source)]


@builtin("text.match_regex")
def match_regex(context, source, regexp):
    # True when the pattern matches anywhere in source (anchor with ^ and $ for a full match).
    _strings("text.match_regex", source=source, regexp=regexp)
    return _compile("text.match_regex", regexp).search(source) is not None


@builtin("text.to_upper")
def to_upper(context, source):
    _strings("text.to_upper", source=source)
    return source.upper()


@builtin("text.to_lower")
def to_lower(context, source):
    _strings("text.to_lower", source=source)
    return source.lower()


@builtin("text.url_encode")
def url_encode(context, source):
    _strings("text.url_encode", source=source)
    return quote(source, safe="").replace("~", "%7E")


@builtin("text.url_encode_plus")
def url_encode_plus(context, source):
    _strings("text.url_encode_plus", source=source)
    return "+".join(quote(part, safe="").replace("~", "%7E") for part in source.split(" "))


@builtin("text.url_decode")
def url_decode(context, source):
    _strings("text.url_decode", source=source)
    return unquote(source, errors="replace")


@builtin("text.encode")
def encode(context, text, charset="UTF-8"):
    _strings("text.encode", text=text, charset=charset)
    try:
        return text.encode(_codec("text.encode", charset))
    except UnicodeEncodeError:
        fail("ValueError", f"text.encode: text is not representable in {charset}")


@builtin("text.decode")
def decode(context, data, charset="UTF-8"):
    expect(data, bytes, "data", "text.decode")
    _strings("text.decode", charset=charset)
    # Undecodable bytes become U+FFFD, as documented.
    return data.decode(_codec("text.decode", charset), errors="replace")


def _codec(function: str, charset: str) -> str:
    try:
        return codecs.lookup(charset).name
    except LookupError:
        fail("ValueError", f"{function}: unsupported charset: {charset}")


def _compile(function: str, regexp: str) -> re2._Regexp:
    options = re2.Options()
    # "If multiple matches start at the same index, then the longest one is replaced" (and, for
    # find_all_regex, "considered"): RE2's leftmost-longest mode, so "a|ab" on "ab" finds "ab".
    # https://cloud.google.com/workflows/docs/reference/stdlib/text/replace_all_regex
    options.longest_match = True
    options.log_errors = False     # RE2 would also print each bad pattern on stderr
    try:
        return re2.compile(regexp, options)
    except re2.error as error:
        reason = error.args[0].decode(errors="replace") if error.args and isinstance(error.args[0], bytes) \
            else str(error)
        fail("ValueError", f"{function}: invalid regular expression: {reason}")


def _strings(function: str, **arguments) -> None:
    for name, value in arguments.items():
        expect(value, str, name, function)
