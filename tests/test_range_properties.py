"""Property tests of the range function's expansion, in process for volume.

The module is loaded by path (functions deploy alone and are not a package). Two independent
oracles judge it: a brute-force minute scan applying the DST rules literally, and cronsim.
cronsim is compared wherever it is itself right: it loses times on transition days in zones
whose shifts are not whole hours (see test_cronsim_loses_times_on_half_hour_shifts) and can
hang when a repeat crosses midnight (America/St_Johns before 2011), so there only the scan judges.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim, CronSimError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cron_oracle import brute_force, cronsim_times, expand_alias
from tests.serving import load_module

cron_window = load_module("range", "cron_window")

UTC = timezone.utc
ZONES = ["Europe/Stockholm", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "UTC"]
WHOLE_HOUR_SHIFTS = {"Europe/Stockholm", "America/New_York", "UTC"}
SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def transitions(zone: str, years: range) -> list[datetime]:
    """UTC instants where the zone's offset changes (found by scanning, independent of the code)."""
    tz = ZoneInfo(zone)
    found, instant = [], datetime(years.start, 1, 1, tzinfo=UTC)
    previous = instant.astimezone(tz).utcoffset()
    while instant.year < years.stop:
        instant += timedelta(minutes=15)
        offset = instant.astimezone(tz).utcoffset()
        if offset != previous:
            found.append(instant)
            previous = offset
    return found


# Kathmandu moved from +05:30 to +05:45 at the start of 1986; the others change twice a year.
TRANSITIONS = {zone: transitions(zone, range(1985, 1987)) + transitions(zone, range(2021, 2023)) for zone in ZONES}
TRANSITIONS["UTC"] = [datetime(2022, 3, 27, 1, tzinfo=UTC)]


def window(expr: str, zone: str, start: datetime, stop: datetime):
    lo, hi = (int(t.timestamp()) for t in (start, stop))
    return cron_window.CronWindow(cron_window.CronSchedule(expr), ZoneInfo(zone), lo, hi)


def all_pages(w, size: int, desc: bool = False) -> list[str]:
    times, after = w.page(size, desc=desc)
    while after is not None:
        more, after = w.page(size, after, desc=desc)
        times += more
    return times


# -- random expressions --------------------------------------------------------------------
def field(low: int, high: int, names: list[str] | None = None) -> st.SearchStrategy[str]:
    value = st.integers(low, high).map(str)
    if names:
        value = value | st.sampled_from(names + [n.lower() for n in names])
    ranged = st.tuples(st.integers(low, high), st.integers(0, high - low)).map(
        lambda t: f"{t[0]}-{min(high, t[0] + t[1])}")
    stepped = st.tuples(st.sampled_from(["*"]) | ranged | value, st.integers(1, high)).map(lambda t: f"{t[0]}/{t[1]}")
    term = value | ranged | stepped
    return st.just("*") | term | st.lists(term, min_size=2, max_size=3).map(",".join)


DAY_NAMES = "SUN MON TUE WED THU FRI SAT".split()
MONTH_NAMES = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
expressions = st.one_of(
    st.sampled_from(["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"]),
    st.tuples(field(0, 59) | st.sampled_from(["0", "30", "15,45"]), field(0, 23),
              st.just("*") | field(1, 31), st.just("*") | field(1, 12, MONTH_NAMES),
              st.just("*") | field(0, 7, DAY_NAMES)).map(" ".join),
)


@st.composite
def windows_across_changes(draw):
    zone = draw(st.sampled_from(ZONES))
    change = draw(st.sampled_from(TRANSITIONS[zone]))
    start = change - timedelta(minutes=draw(st.integers(0, 30 * 60)))
    return zone, start, change + timedelta(minutes=draw(st.integers(0, 18 * 60)))


def accepted(expr: str) -> bool:
    try:
        CronSim(expand_alias(expr), datetime(2022, 1, 1))
        return True
    except CronSimError:
        return False


@SETTINGS
@given(expressions, windows_across_changes())
def test_matches_the_minute_scan_and_cronsim(expr, case):
    zone, start, stop = case
    if not accepted(expr):  # e.g. "0 0 31 2 *": the range function must refuse it too
        with pytest.raises(cron_window.CronError):
            cron_window.CronSchedule(expr)
        return
    times = window(expr, zone, start, stop).texts()
    assert times == brute_force(expr, zone, start, stop)
    fields = expand_alias(expr).split()
    if zone in WHOLE_HOUR_SHIFTS or not (fields[0].startswith("*") or fields[1].startswith("*")):
        assert times == cronsim_times(expr, zone, start, stop)


@SETTINGS
@given(expressions, windows_across_changes(), st.integers(5, 400))
def test_pages_desc_and_count_agree_with_the_list(expr, case, size):
    zone, start, stop = case
    if not accepted(expr):
        return
    w = window(expr, zone, start, stop)
    times = w.texts()
    assert all_pages(w, size) == times
    assert w.texts(desc=True) == times[::-1]
    assert all_pages(w, size, desc=True) == times[::-1]
    assert w.count() == len(times)
    assert (w.first(), w.first(desc=True)) == ((times[0], times[-1]) if times else (None, None))
    instants = [datetime.fromisoformat(t) for t in times]
    assert instants == sorted(set(instants)), "strictly increasing, no duplicate instant"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="0123456789*/-,LW#?abcdefghijklmnopqrstuvwxyzJANMOSU", max_size=6),
                min_size=5, max_size=5).map(" ".join))
def test_accepts_exactly_what_cronsim_accepts(expr):
    """Same grammar as cronsim, minus its L, W and # extensions; same values when accepted."""
    try:
        reference = CronSim(expr, datetime(2022, 1, 1))
    except CronSimError:
        reference = None
    extension = any(c in expr.upper() for c in "LW#") and reference is not None and (
        any(isinstance(v, tuple) or v < 0 for v in reference.weekdays | reference.days))
    try:
        ours = cron_window.CronSchedule(expr)
    except cron_window.CronError:
        assert reference is None or extension, f"cronsim accepts {expr!r}"
        return
    assert reference is not None and not extension, f"cronsim refuses {expr!r}"
    assert ours.seconds == sorted(h * 3600 + m * 60 for h in reference.hours for m in reference.minutes)
    assert (ours.days, set(ours.months), ours.weekdays) == (reference.days, reference.months,
                                                            {w % 7 for w in reference.weekdays})
    assert ours.day_and == reference.day_and


def test_long_windows_agree_with_cronsim():
    """A year in New York for a few shapes of expression: every transition, every month length."""
    start, stop = datetime(2023, 12, 25, tzinfo=UTC), datetime(2025, 1, 5, tzinfo=UTC)
    for expr in ["17 3 * * *", "0 */6 * * *", "30 2 29 2 *", "0 12 13 * FRI", "@weekly"]:
        w = window(expr, "America/New_York", start, stop)
        times = cronsim_times(expr, "America/New_York", start, stop)
        assert w.texts() == times
        assert w.count() == len(times)


def test_count_of_a_long_window_equals_its_length():
    """The count skips whole months without building them; it must still match the list."""
    start, stop = datetime(2020, 1, 1, 0, 7, tzinfo=UTC), datetime(2023, 6, 1, 13, tzinfo=UTC)
    for expr, zone in [("*/5 * * * *", "Europe/Stockholm"), ("15,45 * * * *", "Australia/Lord_Howe")]:
        w = window(expr, zone, start, stop)
        assert w.count() == len(w.texts())


def test_repeat_that_crosses_midnight():
    """St. John's (until 2011) went back an hour at 00:01: 23:01-00:00 happened twice."""
    start, stop = datetime(2007, 11, 4, 1, tzinfo=UTC), datetime(2007, 11, 4, 5, tzinfo=UTC)
    for expr in ["* * * * *", "*/20 23,0 * * *", "30 23 * * *", "0 0 * * *"]:
        w = window(expr, "America/St_Johns", start, stop)
        assert w.texts() == brute_force(expr, "America/St_Johns", start, stop)
        assert all_pages(w, 7, desc=True) == w.texts()[::-1]


def test_cronsim_loses_times_on_half_hour_shifts():
    """Why cronsim is not the judge in Lord Howe for * jobs: on 2022-10-02 (02:00 -> 02:30)
    `* 19 * * *` fires 60 times, 19:00-19:59, but cronsim returns only 19:30-19:59."""
    start, stop = datetime(2022, 10, 2, tzinfo=ZoneInfo("Australia/Lord_Howe")), datetime(2022, 10, 3, tzinfo=UTC)
    times = window("* 19 * * *", "Australia/Lord_Howe", start, stop).texts()
    assert times == brute_force("* 19 * * *", "Australia/Lord_Howe", start, stop)
    assert times[0] == "2022-10-02T19:00:00+11:00" and len(times) == 60
    assert len(cronsim_times("* 19 * * *", "Australia/Lord_Howe", start, stop)) == 30


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions, st.sampled_from(ZONES + ["America/St_Johns", "Africa/Casablanca", "Europe/London"]),
       st.datetimes(datetime(1901, 1, 1), datetime(2198, 1, 1)), st.integers(3, 120))
def test_count_of_whole_days_and_months_equals_the_listed_times(expr, zone, start, days):
    """count() adds up whole uniform days and months without building them; texts() lists every
    time (and is judged by the minute scan above), so the two must agree on any window."""
    if not accepted(expr):
        return
    w = window(expr, zone, start.replace(tzinfo=UTC), start.replace(tzinfo=UTC) + timedelta(days=days))
    assert w.count() == len(w.texts())


@pytest.mark.parametrize("expr", ["0 0 * * " + "0" * 5000, "*/" + "9" * 5000 + " * * * *", "1" * 5000 + " * * * *",
                                  "0 0 * * 0000000000", "*/1000000000 * * * *"])
def test_numbers_of_over_nine_digits_are_refused(expr):
    """int() refuses over 4,300 digits, so such a field must be a CronError (a 400), never a crash."""
    assert cron_window.CronSchedule("*/100000000 * * * *").seconds == cron_window.CronSchedule("0 * * * *").seconds
    with pytest.raises(cron_window.CronError):
        cron_window.CronSchedule(expr)
