"""The range function as its callers see it: real HTTP to functions-framework on loopback."""
from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.cron_oracle import brute_force, cronsim_times
from tests.serving import serve_function

STOCKHOLM = "Europe/Stockholm"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("range") / "server.log"
    with serve_function("range", "expand_range", env={"GOOGLE_CLOUD_PROJECT": "demo-project"},
                        log_path=log_path) as url:
        yield url, log_path


def call(server, body=None, *, method="POST", path="/", raw: bytes | None = None, headers=None):
    url, _ = server
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def times(server, **body):
    status, answer = call(server, body)
    assert status == 200, answer
    return answer


def all_pages(server, size, **body):
    got, token = [], None
    while True:
        page = times(server, **body, pageSize=size, **({"pageToken": token} if token else {}))
        assert len(page["scheduleTimes"]) <= size
        got += page["scheduleTimes"]
        token = page.get("nextPageToken")
        if token is None:
            return got
        assert len(page["scheduleTimes"]) == size


def aware(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- documented examples ---------------------------------------------------------------------
def test_original_documented_example(server):
    assert times(server, start="2022-02-15T00:00:00Z", stop="2022-02-18T00:00:00Z", step="0 1 * * *") == [
        "2022-02-15T01:00:00+00:00", "2022-02-16T01:00:00+00:00", "2022-02-17T01:00:00+00:00"]


def test_documented_examples_hold_verbatim(server):
    reference = (Path(__file__).resolve().parent.parent / "docs" / "range.md").read_text()
    examples = re.findall(r"^POST (\S+) (\{.*\})\n(\d{3}) (.*)$", reference, re.M)
    assert len(examples) >= 10
    token = None
    for path, request, status, response in examples:
        body = json.loads(request)
        if body.get("pageToken") == "<token>":
            body["pageToken"] = token
        got_status, got = call(server, body, path=path)
        if isinstance(got, dict) and "nextPageToken" in got:
            token, got = got["nextPageToken"], {**got, "nextPageToken": "<token>"}
        assert (got_status, got) == (int(status), json.loads(response)), request


def test_range_path_answers_the_same(server):
    body = {"start": "2022-02-15T00:00:00Z", "stop": "2022-02-18T00:00:00Z", "step": "0 1 * * *"}
    assert call(server, body, path="/range") == call(server, body)


def test_skipped_time_fires_once_after_the_gap(server):
    day = {"start": "2022-03-27T00:00:00", "stop": "2022-03-28T00:00:00", "timezone": STOCKHOLM}
    assert times(server, step="30 2 * * *", **day) == ["2022-03-27T03:00:00+02:00"]
    hourly = times(server, step="0 * * * *", **day)
    assert len(hourly) == 23 and "2022-03-27T01:00:00+01:00" in hourly and "2022-03-27T03:00:00+02:00" in hourly


def test_repeated_time_fires_once_at_its_first_occurrence(server):
    day = {"start": "2022-10-30T00:00:00", "stop": "2022-10-31T00:00:00", "timezone": STOCKHOLM}
    assert times(server, step="30 2 * * *", **day) == ["2022-10-30T02:30:00+02:00"]
    hourly = times(server, step="0 * * * *", **day)
    assert len(hourly) == 25
    assert hourly[2:4] == ["2022-10-30T02:00:00+02:00", "2022-10-30T02:00:00+01:00"]


@pytest.mark.parametrize("zone,start,stop,step", [
    (STOCKHOLM, "2022-03-26T12:00:00Z", "2022-03-28T00:00:00Z", "*/20 1-3 * * *"),
    ("America/New_York", "2022-11-05T00:00:00-04:00", "2022-11-07T00:00:00-05:00", "15,45 1 * * *"),
    ("Australia/Lord_Howe", "2022-10-01T12:00:00Z", "2022-10-02T12:00:00Z", "*/10 * * * *"),
    ("Asia/Kathmandu", "1985-12-31T12:00:00Z", "1986-01-01T06:00:00Z", "5 0 * * *"),
    ("UTC", "2024-02-27T00:00:00Z", "2024-03-02T00:00:00Z", "0 12 29 2 *"),
])
def test_lists_match_the_minute_scan(server, zone, start, stop, step):
    got = times(server, start=start, stop=stop, step=step, timezone=zone)
    assert got == brute_force(step, zone, aware(start), aware(stop))


def test_aliases_names_and_sunday_as_7(server):
    window = {"start": "2024-01-01T00:00:00Z", "stop": "2024-03-01T00:00:00Z", "timezone": STOCKHOLM}
    for step in ["@weekly", "@monthly", "0 9 * JAN-FEB SUN", "0 9 * * 7", "30 8 1,15 * mon-fri"]:
        expected = cronsim_times(step, STOCKHOLM, aware(window["start"]), aware(window["stop"]))
        assert times(server, step=step, **window) == expected, step


def test_offsets_with_seconds_keep_them(server):
    """Liberia kept local mean time, -00:44:30, until 1972: RFC 3339 has no seconds in an offset."""
    window = {"start": "1970-06-01T00:00:00Z", "stop": "1970-06-03T00:00:00Z", "timezone": "Africa/Monrovia"}
    got = times(server, step="0 12 * * *", **window)
    assert got == cronsim_times("0 12 * * *", "Africa/Monrovia", aware(window["start"]), aware(window["stop"]))
    assert got[0] == "1970-06-01T12:00:00-00:44:30"


def test_naive_times_are_read_in_the_zone(server):
    naive = times(server, start="2022-06-01T00:00:00", stop="2022-06-02T00:00:00", step="0 0 * * *",
                  timezone=STOCKHOLM)
    assert naive == ["2022-06-01T00:00:00+02:00"]
    assert times(server, start="2022-06-01T00:00:00Z", stop="2022-06-02T00:00:00Z", step="0 0 * * *",
                 timezone=STOCKHOLM) == ["2022-06-02T00:00:00+02:00"]


def test_window_is_half_open_and_fractions_round_up(server):
    body = {"stop": "2022-01-01T03:00:00Z", "step": "0 * * * *"}
    assert times(server, start="2022-01-01T01:00:00Z", **body) == [
        "2022-01-01T01:00:00+00:00", "2022-01-01T02:00:00+00:00"]
    assert times(server, start="2022-01-01T01:00:00.5Z", **body) == ["2022-01-01T02:00:00+00:00"]
    assert times(server, start="2022-01-01T03:00:00Z", **body) == []


# -- paging, order, count ---------------------------------------------------------------------
DST_YEAR = {"start": "2022-01-01T00:00:00", "stop": "2023-01-01T00:00:00", "timezone": STOCKHOLM}


def test_pages_concatenate_to_the_list_and_desc_reverses_it(server):
    step = "0 */2 * * *"  # 4,379 times across both changes
    full = times(server, step=step, **DST_YEAR)
    assert full == cronsim_times(step, STOCKHOLM, datetime(2022, 1, 1, tzinfo=ZoneInfo(STOCKHOLM)),
                                 datetime(2023, 1, 1, tzinfo=ZoneInfo(STOCKHOLM)))
    assert all_pages(server, 1000, step=step, **DST_YEAR) == full
    assert times(server, step=step, order="desc", **DST_YEAR) == full[::-1]
    assert all_pages(server, 777, step=step, order="desc", **DST_YEAR) == full[::-1]


def test_count_only(server):
    step = "0 */2 * * *"
    full = times(server, step=step, **DST_YEAR)
    assert times(server, step=step, countOnly=True, **DST_YEAR) == {
        "count": len(full), "first": full[0], "last": full[-1]}
    assert times(server, start="2022-01-01T00:00:00Z", stop="2022-01-01T00:00:00Z", step="* * * * *",
                 countOnly=True) == {"count": 0, "first": None, "last": None}


def test_unpaged_limit_is_decided_by_counting(server):
    thirty_years = {"start": "1995-01-01T00:00:00Z", "stop": "2025-01-01T00:00:00Z", "step": "* * * * *"}
    status, answer = call(server, thirty_years)
    assert status == 400 and "pageSize" in answer["error"]["message"]
    minutes = (aware(thirty_years["stop"]) - aware(thirty_years["start"])) // timedelta(minutes=1)
    assert times(server, countOnly=True, **thirty_years)["count"] == minutes
    # Exactly 10,000 is allowed unpaged; one more is not.
    ten_thousand = {"start": "2022-01-01T00:00:00Z", "stop": "2022-01-07T22:40:00Z", "step": "* * * * *"}
    assert len(times(server, **ten_thousand)) == 10_000
    assert call(server, {**ten_thousand, "stop": "2022-01-07T22:41:00Z"})[0] == 400


def test_count_only_over_the_widest_window(server):
    """Every real minute of three centuries in New York, counted without listing them."""
    widest = {"start": "1900-01-01T00:00:00Z", "stop": "2200-01-01T00:00:00Z", "step": "* * * * *",
              "timezone": "America/New_York", "countOnly": True}
    minutes = (aware(widest["stop"]) - aware(widest["start"])) // timedelta(minutes=1)
    assert times(server, **widest) == {"count": minutes, "first": "1899-12-31T19:00:00-05:00",
                                       "last": "2199-12-31T18:59:00-05:00"}


def test_a_page_deep_in_a_long_window_resumes_where_the_token_says(server):
    body = {"start": "1995-01-01T00:00:00Z", "stop": "2025-01-01T00:00:00", "step": "* * * * *",
            "timezone": STOCKHOLM, "order": "desc"}
    newest = aware("2024-12-31T23:59:00+01:00")
    page = times(server, **body, pageSize=10_000)
    assert page["scheduleTimes"][0] == "2024-12-31T23:59:00+01:00"
    assert [aware(t) for t in page["scheduleTimes"]] == [newest - timedelta(minutes=k) for k in range(10_000)]
    following = times(server, **body, pageSize=3, pageToken=page["nextPageToken"])
    assert [aware(t) for t in following["scheduleTimes"]] == [
        newest - timedelta(minutes=k) for k in range(10_000, 10_003)]


def test_token_is_bound_to_its_query(server):
    body = {"start": "2022-01-01T00:00:00Z", "stop": "2022-01-02T00:00:00Z", "step": "0 * * * *", "pageSize": 5}
    token = times(server, **body)["nextPageToken"]
    for changed in [{"step": "30 * * * *"}, {"stop": "2022-01-03T00:00:00Z"}, {"order": "desc"},
                    {"timezone": STOCKHOLM}]:
        status, answer = call(server, {**body, **changed, "pageToken": token})
        assert status == 400 and "pageToken" in answer["error"]["message"], changed
    forged = base64.urlsafe_b64encode(b'{"after": 0, "query": "x"}').decode()
    for bad in [forged, "not a token", "%%%", 12]:
        status, answer = call(server, {**body, "pageToken": bad})
        assert status == 400 and "pageToken" in answer["error"]["message"], bad


# -- bad input --------------------------------------------------------------------------------
GOOD = {"start": "2022-01-01T00:00:00Z", "stop": "2022-01-02T00:00:00Z", "step": "0 * * * *"}


@pytest.mark.parametrize("change,field", [
    ({"start": None}, "start"), ({"stop": None}, "stop"), ({"step": None}, "step"),
    ({"start": "2022-01-01"}, "start"), ({"start": "yesterday"}, "start"), ({"stop": 5}, "stop"),
    ({"start": "2022-02-30T00:00:00Z"}, "start"), ({"stop": "2022-01-02T00:00:00+25:00"}, "stop"),
    ({"start": "1800-01-01T00:00:00Z"}, "start"), ({"stop": "2300-01-01T00:00:00Z"}, "stop"),
    ({"stop": "2021-12-31T00:00:00Z"}, "stop is before start"),
    ({"timezone": "Mars/Olympus"}, "timezone"), ({"timezone": "../../etc/passwd"}, "timezone"),
    ({"timezone": 1}, "timezone"),
    ({"step": "0 0 30 2 *"}, "never matches"), ({"step": "61 * * * *"}, "minute"),
    ({"step": "0 0 * * 8"}, "day-of-week"), ({"step": "0 0 * 13 *"}, "month"), ({"step": "*/0 * * * *"}, "minute"),
    ({"step": "5-1 * * * *"}, "minute"), ({"step": "0 0 * *"}, "5 fields"),
    ({"step": "0 0 0 * * *"}, "seconds"), ({"step": "0 0 L * *"}, "not supported"),
    ({"step": "0 0 * * 5L"}, "not supported"), ({"step": "0 0 * * 1#2"}, "not supported"),
    ({"step": "0 0 15W * *"}, "not supported"), ({"step": "0 0 ? * *"}, "not supported"),
    ({"step": "@reboot"}, "alias"), ({"step": 7}, "step"),
    ({"pageSize": 0}, "pageSize"), ({"pageSize": 10_001}, "pageSize"), ({"pageSize": "10"}, "pageSize"),
    ({"pageSize": True}, "pageSize"), ({"pageToken": "abc"}, "pageToken"),
    ({"order": "newest"}, "order"), ({"countOnly": "yes"}, "countOnly"),
    ({"countOnly": True, "pageSize": 5}, "countOnly"), ({"stepp": "0 * * * *"}, "stepp"),
    # issue 10: each of these was a 500 or was accepted
    ({"step": "0 0 * * " + "0" * 5000}, "day-of-week"), ({"step": "*/" + "9" * 5000 + " * * * *"}, "minute"),
    ({"pageSize": 5, "pageToken": base64.urlsafe_b64encode(b"[" * 40000).decode()}, "pageToken"),
    ({"pageSize": 5, "pageToken": base64.urlsafe_b64encode(b'{"after":' * 3000).decode()[:180]}, "pageToken"),
    ({"timezone": "localtime"}, "timezone"), ({"timezone": "Factory"}, "timezone"),
    ({"timezone": "posixrules"}, "timezone"), ({"timezone": "right/UTC"}, "timezone"),
    ({"start": "2019-10-12T07:20:50.\uff15Z"}, "start"), ({"stop": "2022-01-0\u0662T00:00:00Z"}, "stop"),
])
def test_bad_fields_are_400_naming_the_field(server, change, field):
    body = {key: value for key, value in {**GOOD, **change}.items() if value is not None}
    status, answer = call(server, body)
    assert status == 400
    assert answer["error"]["code"] == 400 and answer["error"]["status"] == "INVALID_ARGUMENT"
    assert field in answer["error"]["message"]


@pytest.mark.parametrize("raw,needle", [
    (b"not json", "JSON"), (b"[1, 2]", "object"), (b'"text"', "object"), (b"", "JSON"),
    (b"[" * 20000 + b"]" * 20000, "JSON"), (b'{"start": "' + b"x" * 70_000 + b'"}', "64 KB"),
])
def test_bad_bodies_are_400(server, raw, needle):
    status, answer = call(server, raw=raw)
    assert status == 400 and needle in answer["error"]["message"]


def test_other_methods_and_paths(server):
    for method in ["GET", "PUT", "DELETE"]:
        status, answer = call(server, method=method)
        assert (status, answer["error"]["code"]) == (405, 405)
    status, answer = call(server, GOOD, path="/elsewhere")
    assert (status, answer["error"]["status"]) == (404, "NOT_FOUND")


@pytest.mark.parametrize("path", ["/range%0A", "/favicon.ico", "/robots.txt"])
def test_paths_the_framework_routes_itself_still_get_googles_error_shape(server, path):
    # functions-framework answers these before expand_range runs (its router cannot match a
    # decoded newline; it reserves the two file names): the answer must still be JSON.
    status, answer = call(server, GOOD, path=path)
    assert (status, answer["error"]["code"], answer["error"]["status"]) == (404, 404, "NOT_FOUND")


# -- logs -------------------------------------------------------------------------------------
def test_one_structured_log_line_per_request(server):
    _, log_path = server
    marker = "0 7 * * *"
    call(server, {**GOOD, "step": marker}, headers={"X-Cloud-Trace-Context": "4bf92f3577b34da6a3ce929d0e0e4736/1;o=1"})
    call(server, {**GOOD, "step": marker, "order": "sideways"})
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    mine = [line for line in lines if line.get("window", {}).get("step") == marker]
    assert len(mine) == 2
    ok, bad = mine
    assert ok["severity"] == "INFO" and ok["count"] == 1 and ok["durationMs"] >= 0
    assert ok["window"] == {"start": GOOD["start"], "stop": GOOD["stop"], "step": marker}
    assert ok["logging.googleapis.com/trace"] == "projects/demo-project/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    assert bad["severity"] == "WARNING" and "order" in bad["message"] and "logging.googleapis.com/trace" not in bad


# -- never a 500 ------------------------------------------------------------------------------
json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=6)
plausible = {
    "start": st.sampled_from(["2022-03-26T00:00:00Z", "2022-10-30T02:30:00", "1900-01-01T00:00:00Z", "2022-13-01T00:00:00Z",
                              "2019-10-12T07:20:50.\uff15Z"]),
    "stop": st.sampled_from(["2022-03-28T00:00:00+02:00", "2199-12-31T23:59:59.999Z", "2022-03-26T00:00:00Z"]),
    "step": st.sampled_from(["* * * * *", "30 2 * * *", "0 0 31 2 MON", "@yearly", "*/0 * * * *", "0 0 L * *",
                             "0 0 * * " + "0" * 5000]) | st.text(max_size=20)
            | st.integers(1, 6000).map(lambda n: "*/" + "7" * n + " * * * *"),
    "timezone": st.sampled_from(["Europe/Stockholm", "Australia/Lord_Howe", "Etc/GMT+14", "", "Europe", "UTC/../UTC",
                                 "localtime", "Factory", "right/UTC", "Europe/London"]),
    "pageSize": st.sampled_from([1, 10_000, 0, -1, 2.5]),
    "pageToken": st.sampled_from(["", "e30", "eyJhZnRlciI6MX0", "=="])
                 | st.integers(1, 40000).map(lambda n: base64.urlsafe_b64encode(b"[" * n).decode()),
    "order": st.sampled_from(["asc", "desc", "DESC"]),
    "countOnly": st.booleans(),
}


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({}, optional={key: value | json_values for key, value in plausible.items()}))
def test_any_body_is_answered_without_a_500(server, body):
    status, answer = call(server, body)
    assert status in (200, 400), answer
    if status == 400:
        assert set(answer["error"]) == {"code", "status", "message"} and answer["error"]["code"] == 400
