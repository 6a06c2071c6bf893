"""time.format and time.parse.

https://cloud.google.com/workflows/docs/reference/stdlib/time/format
https://cloud.google.com/workflows/docs/reference/stdlib/time/parse

time.format always writes six fractional digits, as in the documented "2024-07-12T12:50:33.000000Z",
and "Z" for a zero UTC offset (the docs show it for GMT and UTC; for a zone that is at +00:00 at
that instant, e.g. Europe/London in winter, they show nothing, and "Z" is the RFC 3339 form).
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone as dt_timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import fail
from . import builtin
from ..values import expect, is_number, type_name

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)


@builtin("time.format")
def format_(context, seconds, timezone=None):
    if not is_number(seconds):
        fail("TypeError", f"time.format: seconds must be an integer or a double, got {type_name(seconds)}")
    if not math.isfinite(seconds):
        fail("ValueError", f"time.format: invalid timestamp: {seconds}")
    zone = _zone(timezone)
    try:
        moment = (_EPOCH + timedelta(seconds=seconds)).astimezone(zone)
    except OverflowError:
        fail("ValueError", f"time.format: timestamp out of range: {seconds}")
    text = moment.isoformat(timespec="microseconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


@builtin("time.parse")
def parse(context, value):
    expect(value, str, "value", "time.parse")
    match = _RFC3339.fullmatch(value)
    if not match:
        fail("ValueError", f"time.parse: not an RFC 3339 timestamp: {value!r}")
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                          tzinfo=_offset(offset))
    except ValueError as error:
        fail("ValueError", f"time.parse: invalid timestamp {value!r}: {error}")
    whole = (moment - _EPOCH) // timedelta(seconds=1)
    return whole + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def _zone(name):
    if name is None or name == "":
        return dt_timezone.utc
    expect(name, str, "timezone", "time.format")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        fail("ValueError", f"time.format: unknown time zone: {name}")


def _offset(text: str) -> dt_timezone:
    if text in "Zz":
        return dt_timezone.utc
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 23 or minutes > 59:
        raise ValueError("offset out of range")
    return dt_timezone(sign * timedelta(hours=hours, minutes=minutes))
