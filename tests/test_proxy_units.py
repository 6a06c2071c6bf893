"""The proxy's contracts that need no server: time parsing and writing, the label encoding, the
run digest, and the session it makes for Google. Modules are loaded by path under their own
names, so nothing here collides with another function's `main`."""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from tests.serving import load_module

scheduled_time = load_module("proxy", "scheduled_time")
api = load_module("proxy", "workflows_api")

LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
instants = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                        timezones=st.just(timezone.utc))


@pytest.mark.parametrize("text", [
    "2019-10-12T07:20:50.52Z", "2019-10-12T07:20:50.520Z", "2019-10-12t07:20:50.520000z",
    "2019-10-12T09:20:50.52+02:00", "2019-10-12T00:20:50.52-07:00", "2019-10-12T07:20:50.520000999Z",
])
def test_parse_any_rfc3339_form_of_one_instant(text):
    assert scheduled_time.parse(text) == datetime(2019, 10, 12, 7, 20, 50, 520000, timezone.utc)


@pytest.mark.parametrize("text", [
    "2019-10-12T07:20:50", "2019-10-12 07:20:50Z", "2019-10-12T07:20Z", "2019-13-01T00:00:00Z",
    "2019-02-29T00:00:00Z", "2019-10-12T24:00:00Z", "2016-12-31T23:59:60Z", "2019-10-12T07:20:50+24:00",
    "2019-10-12T07:20:50.Z", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "２０１９-10-12T07:20:50Z",
    " 2019-10-12T07:20:50Z", "",
])
def test_parse_refuses_what_is_not_an_rfc3339_instant(text):
    with pytest.raises(ValueError):
        scheduled_time.parse(text)


@pytest.mark.parametrize("utc, zone, expected", [
    ("2019-10-12T07:20:50.52Z", "Europe/Stockholm", "2019-10-12T09:20:50.52+02:00"),
    ("2022-03-27T00:59:59.999Z", "Europe/Stockholm", "2022-03-27T01:59:59.999+01:00"),
    ("2022-03-27T01:00:00Z", "Europe/Stockholm", "2022-03-27T03:00:00+02:00"),
    ("2022-10-30T00:59:59Z", "Europe/Stockholm", "2022-10-30T02:59:59+02:00"),
    ("2022-10-30T01:00:00Z", "Europe/Stockholm", "2022-10-30T02:00:00+01:00"),
    ("2022-11-06T05:30:00Z", "America/New_York", "2022-11-06T01:30:00-04:00"),
    ("2022-11-06T06:30:00Z", "America/New_York", "2022-11-06T01:30:00-05:00"),
    ("2022-04-02T15:00:00Z", "Australia/Lord_Howe", "2022-04-03T01:30:00+10:30"),  # 30-minute DST
    ("2022-06-01T00:00:00Z", "UTC", "2022-06-01T00:00:00+00:00"),
    ("2022-06-01T00:00:00Z", "Etc/GMT+12", "2022-05-31T12:00:00-12:00"),
])
def test_render_uses_the_zones_offset_at_that_instant(utc, zone, expected):
    assert scheduled_time.render(scheduled_time.parse(utc), ZoneInfo(zone)) == expected


def test_render_refuses_offsets_with_seconds():
    # Monrovia kept -00:44:30 until 1972 (Amsterdam's +00:19:32 is in the host's backzone data only:
    # the pinned tzdata links Amsterdam to Brussels before 1970).
    with pytest.raises(ValueError):
        scheduled_time.render(datetime(1960, 1, 1, tzinfo=timezone.utc), ZoneInfo("Africa/Monrovia"))


ORACLE_ZONES = ["Europe/Stockholm", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu",
                "America/St_Johns", "Pacific/Chatham", "Europe/London"]


@settings(max_examples=150, deadline=None)
@given(seconds=st.integers(int(datetime(1990, 1, 1, tzinfo=timezone.utc).timestamp()),
                           int(datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp())),
       micro=st.sampled_from([0, 500000, 123456]), zone=st.sampled_from(ORACLE_ZONES))
def test_render_agrees_with_the_c_library_and_parses_back(seconds, micro, zone):
    instant = datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=micro)
    text = scheduled_time.render(instant, ZoneInfo(zone))
    saved = os.environ.get("TZ")
    os.environ["TZ"] = zone  # libc reads the system's tz files: an independent implementation
    time.tzset()
    try:
        local = time.localtime(seconds)
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()
    offset_minutes = local.tm_gmtoff // 60
    sign = "-" if offset_minutes < 0 else "+"
    fraction = f".{micro:06d}".rstrip("0") if micro else ""
    assert text == (time.strftime("%Y-%m-%dT%H:%M:%S", local) + fraction +
                    f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}")
    assert scheduled_time.parse(text) == instant


@settings(max_examples=200, deadline=None)
@given(instant=instants)
def test_label_is_reversible(instant):
    label = scheduled_time.to_label(instant)
    assert LABEL_VALUE.fullmatch(label)
    assert scheduled_time.from_label(label) == instant


@settings(max_examples=100, deadline=None)
@given(instant=st.datetimes(min_value=datetime(1980, 1, 1), max_value=datetime(2200, 1, 1),
                            timezones=st.just(timezone.utc)),
       zone=st.sampled_from(["UTC", "Europe/Stockholm", "Asia/Kolkata", "America/Denver"]))
def test_label_is_the_same_whatever_zone_or_form_the_time_came_in(instant, zone):
    label = scheduled_time.to_label(instant)
    assert scheduled_time.to_label(instant.astimezone(ZoneInfo(zone))) == label
    assert scheduled_time.to_label(scheduled_time.parse(instant.astimezone(ZoneInfo(zone)).isoformat())) == label
    assert scheduled_time.to_label(scheduled_time.parse(scheduled_time.render(instant, ZoneInfo(zone)))) == label


@pytest.mark.parametrize("instant, label", [
    (datetime(2019, 10, 12, 7, 20, 50, 520000, timezone.utc), "2019-10-12t07-20-50-520z"),
    (datetime(2019, 10, 12, 7, 20, 50, tzinfo=timezone.utc), "2019-10-12t07-20-50z"),
    (datetime(2019, 10, 12, 7, 20, 50, 1, timezone.utc), "2019-10-12t07-20-50-000001z"),
    (datetime(999, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "0999-01-02t03-04-05z"),
])
def test_label_examples_from_the_readme(instant, label):
    assert scheduled_time.to_label(instant) == label


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=5), children, max_size=3), max_leaves=10)


@settings(max_examples=150, deadline=None)
@given(argument=st.dictionaries(st.text(max_size=8), json_values, max_size=5), instant=instants)
def test_run_digest_is_canonical_json_and_ignores_key_order(argument, instant):
    workflow = "projects/p-123456/locations/us-east1/workflows/w"
    digest = scheduled_time.run_digest(workflow, instant, argument)
    reordered = dict(reversed(list(argument.items())))
    assert scheduled_time.run_digest(workflow, instant, reordered) == digest
    canonical = json.dumps({"workflow": workflow, "argument": argument,
                            "scheduleTime": scheduled_time.to_label(instant)},
                           sort_keys=True, separators=(",", ":"))
    assert digest == hashlib.sha256(canonical.encode()).hexdigest()[:32]
    assert scheduled_time.run_digest(workflow, instant + timedelta(microseconds=1), argument) != digest
    assert scheduled_time.run_digest(workflow + "2", instant, argument) != digest


@pytest.mark.parametrize("job, label", [
    ("daily-report", "daily-report"), ("Daily_Report", "daily_report"),
    ("projects/p/locations/europe-west1/jobs/Nightly.ETL", "nightly-etl"), ("x" * 500, "x" * 63),
])
def test_job_label_is_a_valid_label_value(job, label):
    assert scheduled_time.job_label(job) == label and LABEL_VALUE.fullmatch(label)


@pytest.mark.parametrize("url, loopback", [
    ("http://127.0.0.1:8080", True), ("http://127.8.9.10", True), ("http://localhost:1", True),
    ("http://[::1]:9000", True), ("https://workflowexecutions.googleapis.com", False),
    ("http://128.0.0.1", False), ("http://localhost.example.com", False), ("http://10.0.0.1", False),
])
def test_loopback_detection(url, loopback):
    assert api.is_loopback(url) is loopback


def test_google_apis_carry_one_set_of_credentials_asked_for_once_lazily_with_the_cloud_platform_scope(monkeypatch):
    import google.auth
    from google.oauth2.credentials import Credentials

    asked = []

    def fake_default(scopes=None, **_):
        asked.append(scopes)
        return Credentials(token="token"), "a-project"

    module = load_module("proxy", "workflows_api")  # a fresh copy: no credentials yet
    monkeypatch.setattr(google.auth, "default", fake_default)
    assert asked == []
    storage, target = module.origin("https://storage.googleapis.com/storage/v1/b/runs/o?prefix=a")
    again, _ = module.origin("https://storage.googleapis.com/storage/v1/b/runs/o/x")
    workflows, _ = module.origin("https://workflowexecutions.googleapis.com/v1/x")
    assert target == "/storage/v1/b/runs/o?prefix=a"
    assert storage is again and workflows is not storage and (storage.tls, workflows.tls) == (True, True)
    assert storage.credentials is workflows.credentials is not None and "Authorization" not in storage.headers
    assert storage.headers["User-Agent"] == workflows.headers["User-Agent"] == module.USER_AGENT
    assert asked == [["https://www.googleapis.com/auth/cloud-platform"]]


@pytest.mark.parametrize("url", ["http://storage.googleapis.com/storage/v1/b", "http://10.0.0.5:8080/v1/x"])
def test_credentials_are_never_sent_over_plain_http_beyond_loopback(monkeypatch, url):
    import google.auth

    module = load_module("proxy", "workflows_api")
    monkeypatch.setattr(google.auth, "default", lambda **_: pytest.fail("credentials asked for plain http"))
    with pytest.raises(module.ApiError) as refused:
        module.origin(url)
    assert refused.value.code == 500 and "https" in refused.value.message


def test_a_loopback_api_gets_its_own_origin_with_the_local_token_and_no_credentials(monkeypatch):
    import google.auth

    module = load_module("proxy", "workflows_api")
    monkeypatch.setattr(google.auth, "default", lambda **_: pytest.fail("credentials asked for loopback"))
    first, target = module.origin("http://127.0.0.1:8080/storage/v1/b/runs/o/a%2Fb?alt=media")
    again, _ = module.origin("http://127.0.0.1:8080/v1/x")
    other, bare = module.origin("http://localhost:9090")
    assert target == "/storage/v1/b/runs/o/a%2Fb?alt=media" and bare == "/"
    assert first is again and other is not first and not first.tls
    assert first.credentials is None and first.headers == {"Authorization": f"Bearer {module.LOCAL_TOKEN}",
                                                            "User-Agent": module.USER_AGENT}


def test_retries_wait_with_growing_jittered_backoff_and_stop_before_the_deadline(monkeypatch):
    pauses = []
    clock = [0.0]
    monkeypatch.setattr(api.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(api.time, "sleep", lambda seconds: (pauses.append(seconds), clock.__setitem__(0, clock[0] + seconds)))

    def always_transient():
        raise api.Transient("HTTP 503")

    with pytest.raises(api.ApiError) as raised:
        api.with_retries(always_transient, deadline=30.0)
    assert (raised.value.code, raised.value.status) == (503, "UNAVAILABLE")
    assert sum(pauses) < 30.0 and len(pauses) >= 5
    for number, pause in enumerate(pauses):
        ceiling = min(api.FIRST_BACKOFF * 2 ** number, api.MAX_BACKOFF)
        assert ceiling / 2 <= pause <= ceiling
