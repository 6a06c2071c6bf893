"""Rules the range function and the proxy each keep a copy of (they deploy alone): trace ids,
time zone names and request limits. One table per rule, checked against both copies."""
from __future__ import annotations

import sys

import pytest

from tests.serving import FUNCTIONS, load_module


def load_main(function: str):
    """functions/<function>/main.py in process, with its sibling modules; the siblings leave
    sys.modules again, so the other function's same-named modules load their own copy."""
    folder = str(FUNCTIONS / function)
    before = set(sys.modules)
    sys.path.insert(0, folder)
    try:
        return load_module(function, "main")
    finally:
        sys.path.remove(folder)
        for name in set(sys.modules) - before:
            if str(getattr(sys.modules[name], "__file__", "") or "").startswith(folder):
                del sys.modules[name]


MAINS = {function: load_main(function) for function in ("range", "proxy")}
TRACE = "105445aa7843bc8bf206b12000100000"

# https://cloud.google.com/trace/docs/trace-context: X-Cloud-Trace-Context is
# TRACE_ID/SPAN_ID;o=OPTIONS with a 32-hex-digit TRACE_ID; W3C traceparent is
# VERSION-TRACE_ID-PARENT_ID-FLAGS. Either may come; the Google header wins.
TRACE_TABLE = [
    ({"X-Cloud-Trace-Context": f"{TRACE}/1;o=1"}, TRACE),
    ({"X-Cloud-Trace-Context": TRACE}, TRACE),
    ({"X-Cloud-Trace-Context": TRACE.upper() + "/7"}, TRACE),
    ({"X-Cloud-Trace-Context": "4bf92f3577b34da6/1;o=1"}, None),  # 16 digits: not a trace id
    ({"X-Cloud-Trace-Context": f"{TRACE};o=1"}, None),
    ({"X-Cloud-Trace-Context": " " + TRACE}, None),
    ({"X-Cloud-Trace-Context": "１" * 32}, None),  # full-width digits are not hex
    ({"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}, "ab" * 16),
    ({"traceparent": f" 00-{'AB' * 16}-{'cd' * 8}-01 "}, "ab" * 16),
    ({"traceparent": f"00-{'ab' * 16}-{'cd' * 7}-01"}, None),
    ({"X-Cloud-Trace-Context": f"{TRACE}/1", "traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}, TRACE),
    ({"X-Cloud-Trace-Context": "nope", "traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}, "ab" * 16),
    ({}, None),
]


@pytest.mark.parametrize("function", sorted(MAINS))
@pytest.mark.parametrize("headers, expected", TRACE_TABLE)
def test_both_functions_read_the_same_trace_id(function, headers, expected):
    assert MAINS[function].trace_id(headers) == expected


# Canonical IANA names only: links such as US/Eastern are IANA names too; the host's `localtime`
# and tzdata's `Factory` placeholder are not places, and posix/ and right/ are other encodings.
ZONE_TABLE = [
    ("Europe/Stockholm", True), ("UTC", True), ("Etc/GMT-14", True), ("America/Argentina/Buenos_Aires", True),
    ("US/Eastern", True), ("localtime", False), ("Factory", False), ("posixrules", False),
    ("right/UTC", False), ("posix/Europe/Stockholm", False), ("europe/stockholm", False), ("", False),
    ("Europe/../Europe/Stockholm", False), ("/etc/localtime", False), ("Europe/Stockholm ", False),
]


@pytest.mark.parametrize("function", sorted(MAINS))
@pytest.mark.parametrize("name, known", ZONE_TABLE)
def test_both_functions_accept_the_same_time_zone_names(function, name, known):
    assert (name in MAINS[function].zone_names()) == known


def test_the_twins_are_the_same_code():
    """What the tables above cannot see: the copies stay textually identical."""
    import inspect
    range_main, proxy_main = MAINS["range"], MAINS["proxy"]
    for name in ("trace_id", "zone_names"):
        ours, theirs = (inspect.getsource(getattr(m, name)).replace("functions/proxy", "functions/X")
                        .replace("functions/range", "functions/X") for m in (range_main, proxy_main))
        assert ours == theirs, name
    assert (range_main.TRACE_CONTEXT.pattern, range_main.TRACEPARENT.pattern) == (
        proxy_main.TRACE_CONTEXT.pattern, proxy_main.TRACEPARENT.pattern)
    copies = [(FUNCTIONS / f / "request_limits.py").read_text() for f in ("range", "proxy", "audit")]
    assert copies[0] == copies[1] == copies[2]
