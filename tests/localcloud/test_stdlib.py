"""The Workflows standard library, one builtin at a time, from the examples in Google's reference.

Each case cites the page it follows; pages are under
https://cloud.google.com/workflows/docs/reference/stdlib/ unless given in full.
"""
from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from localcloud.context import Context
from localcloud.errors import WorkflowError
from localcloud.stdlib import get


def call(function: str, /, *args: Any, context: Context | None = None, **kwargs: Any) -> Any:
    """Call a builtin as a workflow would: positional (expression) or named (`call` step)."""
    builtin = get(function)
    assert builtin is not None, f"{function} is not registered"
    return builtin.call(context or Context(), list(args), kwargs)


def error(function: str, /, *args: Any, context: Context | None = None, **kwargs: Any) -> dict:
    """The error map that `except: as: e` would bind."""
    with pytest.raises(WorkflowError) as caught:
        call(function, *args, context=context, **kwargs)
    return caught.value.payload


def tags(function: str, /, *args: Any, **kwargs: Any) -> list[str]:
    return error(function, *args, **kwargs)["tags"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=12)


# ------------------------------------------------------------------------------ expression helpers
# expression-helpers; syntax cheat sheet:
# https://cloud.google.com/workflows/docs/reference/syntax/syntax-cheat-sheet

def test_conversions_follow_the_cheat_sheet():
    assert call("double", "2.7") == 2.7
    assert call("int", 2.7) == 2 and call("int", -2.7) == -2
    assert call("string", 1.7) == "1.7"
    assert call("int", "42") == 42 and call("double", 3) == 3.0
    assert call("string", 42) == "42" and call("string", True) == "true"


def test_string_of_a_timestamp_keeps_every_digit():
    # stdlib overview: string(sys.now()) gives e.g. "1635892223.4459958"
    assert call("string", 1635892223.4459958) == "1635892223.4459958"


@pytest.mark.parametrize("name, value, tag", [
    ("int", "2.5x", "ValueError"), ("int", [1], "TypeError"), ("int", True, "TypeError"),
    ("double", "abc", "ValueError"), ("double", None, "TypeError"),
    ("string", [1], "TypeError"), ("string", {"a": 1}, "TypeError"), ("string", None, "TypeError"),
])
def test_conversions_reject_what_they_do_not_accept(name, value, tag):
    assert tags(name, value) == [tag]


def test_len_counts_characters_elements_and_entries():
    assert call("len", "héllo") == 5
    assert call("len", ["zero", "one", "two"]) == 3
    assert call("len", {"a": 1, "b": 2}) == 2
    assert tags("len", 5) == ["TypeError"]


def test_keys_lists_the_keys_of_a_map():
    assert sorted(call("keys", {"key1": "hello", "key2": "world"})) == ["key1", "key2"]
    assert tags("keys", ["key1"]) == ["TypeError"]


def test_default_replaces_only_null():
    assert call("default", None, "fallback") == "fallback"
    assert call("default", "", "fallback") == ""
    assert call("default", 0, 5) == 0
    # with map.get, as the page suggests for optional values
    assert call("default", call("map.get", {"a": 1}, "b"), "none") == "none"


def test_if_picks_by_condition_and_treats_null_as_false():
    assert call("if", True, "yes", "no") == "yes"
    assert call("if", False, "yes", "no") == "no"
    assert call("if", None, "yes", "no") == "no"
    assert tags("if", "true", "yes", "no") == ["TypeError"]


def test_builtins_take_named_arguments_as_call_steps_pass_them():
    assert call("default", val=None, defaultVal=3) == 3
    assert call("text.split", source="a,b", separator=",") == ["a", "b"]
    assert tags("text.split", "a,b", nonsense=",") == ["TypeError"]


# ------------------------------------------------------------------------------------------- json

def test_encode_to_string_is_compact():
    # json/encode_to_string example: "Received " + json.encode_to_string(my_map)
    assert call("json.encode_to_string", {"key1": "hello"}) == '{"key1":"hello"}'
    assert call("json.encode_to_string", [1, 2.5, None, True]) == "[1,2.5,null,true]"


def test_encode_returns_utf8_bytes_of_the_same_text():
    # json/encode: "Encodes given input object to JSON bytes, using UTF-8 charset."
    value = {"b": ["é", 1], "a": {"x": None}}
    encoded = call("json.encode", value)
    assert isinstance(encoded, bytes)
    assert encoded.decode("utf-8") == call("json.encode_to_string", value)
    assert json.loads(encoded) == value


def test_encode_sorts_map_keys():
    assert call("json.encode_to_string", {"b": 1, "a": {"d": 1, "c": 2}}) == '{"a":{"c":2,"d":1},"b":1}'


def test_indent_true_uses_four_spaces_and_a_map_sets_prefix_and_indent():
    # json/encode: indent true == {} == four spaces, no prefix; each element after the first
    # line starts on a new line with prefix, then indent per nesting level.
    assert call("json.encode_to_string", {"a": [1]}, True) == '{\n    "a": [\n        1\n    ]\n}'
    assert call("json.encode_to_string", {"a": 1}, {"prefix": "# ", "indent": "\t"}) == \
        '{\n# \t"a": 1\n# }'
    assert call("json.encode_to_string", {"a": 1}, False) == '{"a":1}'
    assert tags("json.encode_to_string", {"a": 1}, {"indent": 2}) == ["TypeError"]


def test_bytes_cannot_be_json_encoded():
    # json/encode and encode_to_string: ValueError for types such as bytes
    assert tags("json.encode", {"data": b"x"}) == ["ValueError"]
    assert tags("json.encode_to_string", [b"x"]) == ["ValueError"]


def test_decode_reads_bytes_or_a_string():
    # json/decode example: json.decode(base64.decode(message.data))
    message = base64.b64encode(b'{"hello": "world"}').decode()
    assert call("json.decode", call("base64.decode", message)) == {"hello": "world"}
    assert call("json.decode", "[1, 2.5, null]") == [1, 2.5, None]
    assert tags("json.decode", "{not json") == ["ValueError"]
    assert tags("json.decode", "NaN") == ["ValueError"]
    assert tags("json.decode", 12) == ["TypeError"]


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_decode_inverts_encode(value):
    assert call("json.decode", call("json.encode", value)) == value
    assert call("json.decode", call("json.encode_to_string", value, True)) == value


# -------------------------------------------------------------------------------------- map, list

def test_map_get_returns_the_value_or_null():
    my_map = {"key1": "hello", "key2": "world"}           # map/get example
    assert call("map.get", my_map, "key2") == "world"
    assert call("map.get", my_map, "missing") is None
    assert call("map.get", "not a map", "key") is None
    assert tags("map.get", my_map, 3) == ["TypeError"]


def test_map_get_with_a_list_of_keys_looks_up_nested_maps():
    # map/get: map.get(my2DMap, ["key1", "key2"]) == map.get(map.get(my2DMap, "key1"), "key2")
    nested = {"key1": {"key2": "deep"}, "flat": 1}
    assert call("map.get", nested, ["key1", "key2"]) == "deep"
    assert call("map.get", nested, ["key1", "nope"]) is None
    assert call("map.get", nested, ["flat", "key2"]) is None
    assert tags("map.get", nested, ["key1", 2]) == ["TypeError"]


def test_map_merge_copies_first_and_lets_second_win():
    # map/merge examples 1 and 2
    first, second = {"key1": "hello", "key2": "world"}, {"key3": "good", "key4": "morning"}
    assert call("map.merge", first, second) == {"key1": "hello", "key2": "world",
                                                "key3": "good", "key4": "morning"}
    assert call("map.merge", first, {"key1": "good", "key2": "morning"}) == \
        {"key1": "good", "key2": "morning"}
    assert first == {"key1": "hello", "key2": "world"}
    assert tags("map.merge", first, ["x"]) == ["TypeError"]


def test_map_merge_nested_merges_maps_recursively():
    # map/merge_nested example
    first, second = {"key1": {"key2": "value2"}}, {"key1": {"key3": "value3"}}
    assert call("map.merge_nested", first, second) == {"key1": {"key2": "value2", "key3": "value3"}}
    assert first == {"key1": {"key2": "value2"}}
    assert call("map.merge_nested", {"a": {"b": 1}}, {"a": 2}) == {"a": 2}
    assert call("map.merge", {"a": {"b": 1}}, {"a": {"c": 2}}) == {"a": {"c": 2}}


def test_map_delete_removes_a_key_from_a_copy():
    # map/delete example, and the missing-key case from its description
    my_map = {"key1": "hello", "key2": "world"}
    assert call("map.delete", my_map, "key2") == {"key1": "hello"}
    assert call("map.delete", my_map, "key3") == my_map
    assert my_map == {"key1": "hello", "key2": "world"}
    assert tags("map.delete", my_map, 1) == ["TypeError"]


def test_list_concat_and_prepend_copy_the_list():
    # list/concat and list/prepend examples
    my_list = ["zero", "one", "two"]
    assert call("list.concat", my_list, "three") == ["zero", "one", "two", "three"]
    assert call("list.prepend", my_list, "three") == ["three", "zero", "one", "two"]
    assert my_list == ["zero", "one", "two"]
    assert call("list.concat", objs=[], val=[1]) == [[1]]
    assert tags("list.concat", "abc", "d") == ["TypeError"]


# ------------------------------------------------------------------------------------------- text

@pytest.mark.parametrize("source, separator, parts", [
    ("baaab", "aa", ["b", "ab"]), ("abc", "a", ["", "bc"]), ("abc", "c", ["ab", ""]),
    ("abbc", "b", ["a", "", "c"]), ("abc", "x", ["abc"]),
])
def test_split_follows_the_documented_cases(source, separator, parts):
    assert call("text.split", source, separator) == parts        # text/split


def test_split_errors():
    assert tags("text.split", "abc", "") == ["ValueError"]
    assert tags("text.split", 5, ",") == ["TypeError"]


def test_substring_clamps_and_counts_negative_indexes_from_the_end():
    # text/substring examples 1 and 2
    assert call("text.substring", "hello", 2, 4) == "ll"
    assert call("text.substring", "hello", -10, 10) == "hello"
    assert call("text.substring", "hello", -3, -1) == "ll"
    assert tags("text.substring", "hello", 1.0, 2) == ["TypeError"]


def test_replace_all():
    # text/replace_all example; an empty substring matches before each code point and at the end
    assert call("text.replace_all", "Hello World", "Hello", "Goodbye") == "Goodbye World"
    assert call("text.replace_all", "abc", "", "-") == "-a-b-c-"


def test_replace_all_regex_replaces_with_literal_text():
    # text/replace_all_regex example; backreferences are not supported, so \1 stays literal
    assert call("text.replace_all_regex", "one two", "one|two", "three") == "three three"
    assert call("text.replace_all_regex", "ab", "(a)", r"\1") == r"\1b"
    assert tags("text.replace_all_regex", "ab", "(", "x") == ["ValueError"]


def test_find_all_returns_non_overlapping_indexes():
    # text/find_all examples 1 and 2
    assert call("text.find_all", "00000", "00") == [0, 2]
    assert call("text.find_all", "Hello World", "l") == [2, 3, 9]
    assert call("text.find_all", "Hello", "z") == []


def test_find_all_regex_returns_index_and_match():
    # text/find_all_regex example
    assert call("text.find_all_regex", "HelloWorld", "Hello|World") == \
        [{"index": 0, "match": "Hello"}, {"index": 5, "match": "World"}]
    assert call("text.find_all_regex", "abc", "x") == []


def test_match_regex_finds_a_match_anywhere():
    assert call("text.match_regex", "Hello World", "o W") is True
    assert call("text.match_regex", "Hello World", "^World") is False
    assert call("text.match_regex", "2024-05-08", r"^\d{4}-\d{2}-\d{2}$") is True


def test_patterns_outside_re2_are_invalid():
    # RE2 has neither lookaround nor backreferences: https://github.com/google/re2/wiki/Syntax
    assert tags("text.match_regex", "aa", "(a)\\1") == ["ValueError"]
    assert tags("text.find_all_regex", "ab", "a(?=b)") == ["ValueError"]


# The three regex functions "use RE2 syntax" (text/match_regex, text/find_all_regex,
# text/replace_all_regex), whose rules are on https://github.com/google/re2/wiki/Syntax.

def test_regex_digit_class_is_ascii_only():
    # RE2 Syntax, "Perl character classes (all ASCII-only)": \d is "digits (≡ [0-9])"; Python's
    # re would also take Arabic-Indic or fullwidth digits.
    for digit in ("\u0663", "\uff15", "\u0967"):
        assert call("text.match_regex", digit, r"\d") is False
        assert call("text.find_all_regex", f"7{digit}", r"\d+") == [{"index": 0, "match": "7"}]
    assert call("text.replace_all_regex", "a1\u0663", r"\d", "#") == "a#\u0663"


def test_regex_dollar_matches_only_at_the_end_of_the_text():
    # RE2 Syntax: "$ at end of text (like \z not \Z) or line (m=true)"; Python's $ also
    # matches before a final newline.
    assert call("text.match_regex", "done\n", "done$") is False
    assert call("text.match_regex", "done", "done$") is True
    assert call("text.find_all_regex", "a\na", "a$") == [{"index": 2, "match": "a"}]
    assert call("text.match_regex", "one\ntwo", "(?m)one$") is True


def test_regex_takes_the_longest_match_at_the_same_index():
    # text/find_all_regex: "If the overlapping matches start at the same index, then the longest
    # match is considered." https://cloud.google.com/workflows/docs/reference/stdlib/text/find_all_regex
    assert call("text.find_all_regex", "abc", "a|ab") == [{"index": 0, "match": "ab"}]
    # text/replace_all_regex: "if multiple matches start at the same index, then the longest one
    # is replaced." https://cloud.google.com/workflows/docs/reference/stdlib/text/replace_all_regex
    assert call("text.replace_all_regex", "ab", "a|ab", "X") == "X"
    assert call("text.replace_all_regex", "abab", "a|ab", "X") == "XX"


def test_regex_indexes_count_code_points():
    # text/find_all_regex returns "the starting index (zero-based)"; strings index by code point.
    assert call("text.find_all_regex", "\u00e9t\u00e9 \U0001F600x", "x|t") == \
        [{"index": 1, "match": "t"}, {"index": 5, "match": "x"}]


def test_empty_regex_replaces_before_each_code_point_and_at_the_end():
    # text/replace_all_regex: "If the expression is empty, it matches at the beginning of the
    # string and after each code point, yielding up to k+1 replacements"
    assert call("text.replace_all_regex", "h\u00e9", "", "-") == "-h-\u00e9-"


def test_case_conversion():
    assert call("text.to_upper", "Hello") == "HELLO"
    assert call("text.to_lower", "HeLLo") == "hello"
    assert tags("text.to_upper", None) == ["TypeError"]


def test_url_encoding_follows_the_examples():
    # text/url_encode and text/url_encode_plus examples
    assert call("text.url_encode", "a/b/c?item=d+e f") == "a%2Fb%2Fc%3Fitem%3Dd%2Be%20f"
    assert call("text.url_encode_plus", "a/b/c?item=d+e f") == "a%2Fb%2Fc%3Fitem%3Dd%2Be+f"
    # letters, digits and .-_ are the only characters left as they are
    assert call("text.url_encode", "aZ09.-_~!") == "aZ09.-_%7E%21"


def test_url_decode_inverts_url_encode():
    for source in ["a/b/c?item=d+e f", "héllo wörld ~!*"]:
        assert call("text.url_decode", call("text.url_encode", source)) == source


def test_text_encode_and_decode():
    # text/encode and text/decode examples
    assert call("base64.encode", call("text.encode", "Hello World", "UTF-8")) == "SGVsbG8gV29ybGQ="
    assert call("text.decode", call("base64.decode", "SGVsbG8gV29ybGQ="), "UTF-8") == "Hello World"
    assert call("text.decode", "é".encode("latin-1"), "iso-8859-1") == "é"
    assert call("text.decode", b"\xff") == "\ufffd"      # undecodable bytes become U+FFFD
    assert tags("text.encode", "é", "US-ASCII") == ["ValueError"]
    assert tags("text.encode", "x", "no-such-charset") == ["ValueError"]


# ------------------------------------------------------------------------------------ time, math

def test_time_format_follows_the_examples():
    # time/format examples
    assert call("time.format", 1720788633, "GMT") == "2024-07-12T12:50:33.000000Z"
    assert call("time.format", 1720788633) == "2024-07-12T12:50:33.000000Z"
    assert call("time.format", 1720788633, "Europe/Paris") == "2024-07-12T14:50:33.000000+02:00"
    assert call("time.format", 1704903354.615087) == "2024-01-10T16:15:54.615087Z"


def test_time_format_errors():
    assert tags("time.format", "1720788633") == ["TypeError"]
    assert tags("time.format", 0, "Mars/Olympus") == ["ValueError"]


def test_time_parse_follows_the_example():
    # time/parse example
    assert call("time.parse", "2024-05-08T12:01:00.000000Z") == 1715169660
    assert call("time.parse", "2024-05-08T14:01:00.5+02:00") == 1715169660.5
    assert tags("time.parse", "2024-05-08 12:01:00") == ["ValueError"]
    assert tags("time.parse", "2024-02-30T00:00:00Z") == ["ValueError"]
    assert tags("time.parse", 1715169660) == ["TypeError"]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 4_102_444_800_000_000), st.sampled_from(["", "UTC", "Asia/Kolkata", "America/St_Johns"]))
def test_time_parse_inverts_time_format(micros, zone):
    seconds = micros / 1_000_000
    assert call("time.parse", call("time.format", seconds, zone)) == pytest.approx(seconds, abs=1e-6)


def test_math():
    assert call("math.abs", -3) == 3 and call("math.abs", -2.5) == 2.5
    assert call("math.floor", 2.7) == 2 and call("math.floor", -2.5) == -3
    assert isinstance(call("math.floor", 2.7), int)
    assert call("math.max", 1, 2.5) == 2.5 and call("math.min", 1, 2.5) == 1
    assert tags("math.abs", "3") == ["TypeError"]
    assert tags("math.max", 1, True) == ["TypeError"]


# --------------------------------------------------------------------------------- base64, uuid

@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=64))
def test_base64_matches_the_standard_alphabet(data):
    text = call("base64.encode", data)
    assert text == base64.b64encode(data).decode()
    assert call("base64.decode", text) == data
    assert call("base64.decode", call("base64.encode", data, False), False) == data


def test_base64_decode_errors_and_line_breaks():
    # base64/decode: CR and LF are ignored; misaligned input with padding, or a character
    # outside the alphabet, is a ValueError
    assert call("base64.decode", "SGVs\r\nbG8=") == b"Hello"
    assert tags("base64.decode", "SGVsbG8") == ["ValueError"]
    assert call("base64.decode", "SGVsbG8", False) == b"Hello"
    assert tags("base64.decode", "SGV$bG8=") == ["ValueError"]
    assert tags("base64.encode", "text, not bytes") == ["TypeError"]


def test_uuid_generate_returns_distinct_version_4_uuids():
    import uuid
    first, second = call("uuid.generate"), call("uuid.generate")
    assert first != second
    assert uuid.UUID(first).version == 4 and str(uuid.UUID(first)) == first


# -------------------------------------------------------------------------------- retry predicates

def http_error(code: int) -> dict:
    return {"message": f"HTTP server responded with error code {code}", "tags": ["HttpError"],
            "code": code, "headers": {}, "body": ""}


@pytest.mark.parametrize("code", [429, 502, 503, 504])
def test_default_retry_predicate_retries_these_codes(code):
    # http/default_retry_predicate: 429, 502, 503, 504
    assert call("http.default_retry_predicate", http_error(code)) is True


@pytest.mark.parametrize("code", [400, 401, 404, 500, 501])
def test_default_retry_predicate_does_not_retry_other_codes(code):
    assert call("http.default_retry_predicate", http_error(code)) is False


def test_non_idempotent_predicate_retries_fewer_codes():
    # http/default_retry_predicate_non_idempotent: 429 and 503 only
    retried = [code for code in (429, 500, 502, 503, 504)
               if call("http.default_retry_predicate_non_idempotent", http_error(code))]
    assert retried == [429, 503]


@pytest.mark.parametrize("tag, idempotent, non_idempotent", [
    ("ConnectionError", True, False), ("ConnectionFailedError", True, True),
    ("TimeoutError", True, False), ("KeyError", False, False),
])
def test_predicates_on_connection_and_timeout_errors(tag, idempotent, non_idempotent):
    e = {"message": "x", "tags": [tag, "OSError"]}
    assert call("http.default_retry_predicate", e) is idempotent
    assert call("http.default_retry_predicate_non_idempotent", e) is non_idempotent


def test_predicates_on_a_raised_string_and_retry_always_never():
    assert call("http.default_retry_predicate", "custom error") is False
    assert call("retry.always", "anything") is True and call("retry.always", http_error(404)) is True
    assert call("retry.never", http_error(503)) is False
