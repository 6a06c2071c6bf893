"""The times a cron expression fires in a window of instants, on the wall clock of an IANA zone.

Semantics are Debian (Vixie) cron's, as the `cronsim` package implements them: five fields with
lists, ranges, steps and names, 7 = Sunday, the @hourly-style aliases, and day-of-month OR
day-of-week only when neither field starts with `*`. At DST changes a job whose minute and hour
fields are both fixed fires once for a skipped wall time (at the first minute after the gap) and
once for a repeated one (its first occurrence); a job with `*` in either field fires at every
real instant whose wall time matches.

Speed comes from walking local *days*, not minutes: on a day without an offset change every
time is `midnight - offset + seconds_of_day`, so a day costs one string join per time. Only the
rare days touched by a transition take the slow, per-time path.

Instants are whole epoch seconds throughout; windows are half-open [lo, hi).
"""
from __future__ import annotations

import calendar
from bisect import bisect_left
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Iterator, NamedTuple
from zoneinfo import ZoneInfo

DAY = 86400
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EPOCH_ORDINAL = EPOCH.toordinal()

ALIASES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}
FIELD_NAMES = ["minute", "hour", "day-of-month", "month", "day-of-week"]
FIELD_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
SYMBOLS = {3: "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(),
           4: "SUN MON TUE WED THU FRI SAT".split()}
MONTH_LENGTHS = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


class CronError(ValueError):
    pass


def _field_error(index: int, text: str) -> CronError:
    hint = ""
    if any(mark in text for mark in "#?") or any(part in ("L", "LW") or part[-1:] in ("L", "W")
                                                 and part[:-1].isdigit() for part in text.split(",")):
        hint = " (L, W, # and ? are not supported)"
    return CronError(f"bad {FIELD_NAMES[index]} field {text!r}{hint}")


def parse_field(text: str, index: int) -> set[int]:
    """One field into the set of its values, with cronsim's exact grammar minus L, W and #."""
    low, high = FIELD_RANGES[index]

    def number(value: str) -> int:
        if not value or any(ch not in "0123456789" for ch in value):
            raise _field_error(index, text)
        return int(value)

    def value(token: str) -> int:
        if token in SYMBOLS.get(index, ()):
            return SYMBOLS[index].index(token) + (1 if index == 3 else 0)
        result = number(token)
        if not low <= result <= high:
            raise _field_error(index, text)
        return result

    def parse(term: str) -> set[int]:
        if term == "*":
            return set(range(low, high + 1))
        if "," in term:
            return set().union(*(parse(part) for part in term.split(",")))
        if "/" in term:
            base, step_text = term.split("/", 1)
            step = number(step_text)
            if step == 0:
                raise _field_error(index, text)
            items = parse(base)
            if len(items) == 1:  # "a/n" means a-max/n, as in cronsim
                return set(range(items.pop(), high + 1, step))
            return set(sorted(items)[::step])
        if "-" in term:
            first, last = (value(part) for part in term.split("-", 1))
            if last < first:
                raise _field_error(index, text)
            return set(range(first, last + 1))
        return {value(term)}

    return parse(text)


class CronSchedule:
    """A parsed five-field expression."""

    def __init__(self, expression: str):
        text = expression.strip()
        if text.startswith("@"):
            if text.lower() not in ALIASES:
                raise CronError(f"unknown alias {text!r}; known: {', '.join(ALIASES)}")
            text = ALIASES[text.lower()]
        fields = text.upper().split()
        if len(fields) != 5:
            raise CronError(f"needs 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
                            + ("; a seconds or year field is not supported" if len(fields) in (6, 7) else ""))
        minutes, hours, days, months, weekdays = (parse_field(f, i) for i, f in enumerate(fields))
        # Debian cron: DOM and DOW are ANDed if either starts with "*", else ORed.
        self.day_and = fields[2].startswith("*") or fields[4].startswith("*")
        if self.day_and and min(days) > max(MONTH_LENGTHS[m] for m in months):
            raise CronError(f"never matches: no month in {fields[3]!r} has day {min(days)}")
        # Debian cron's DST special case applies to jobs at fixed times only.
        self.fixed = not fields[0].startswith("*") and not fields[1].startswith("*")
        self.days = days
        self.weekdays = {w % 7 for w in weekdays}  # 7 is Sunday
        self.months = sorted(months)
        self.seconds = sorted(h * 3600 + m * 60 for h in hours for m in minutes)
        self.clock = ["T%02d:%02d:00" % divmod(s // 60, 60) for s in self.seconds]
        self._month_days: dict[tuple[int, int], tuple[int, ...]] = {}

    def month_days(self, year: int, month: int) -> tuple[int, ...]:
        """Days of the month that match the day fields (month membership is the caller's job)."""
        first_weekday, length = calendar.monthrange(year, month)
        key = (first_weekday, length)
        if key not in self._month_days:
            matched = []
            for day in range(1, length + 1):
                by_date = day in self.days
                by_weekday = (first_weekday + day) % 7 in self.weekdays  # Monday=0 -> cron's 1
                if (by_date and by_weekday) if self.day_and else (by_date or by_weekday):
                    matched.append(day)
            self._month_days[key] = tuple(matched)
        return self._month_days[key]


def offset_text(offset: int) -> str:
    sign = "-" if offset < 0 else "+"
    hours, rest = divmod(abs(offset), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{sign}{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")


def format_instant(instant: int, offset: int) -> str:
    local = instant + offset
    day, second = divmod(local, DAY)
    return (date.fromordinal(EPOCH_ORDINAL + day).isoformat()
            + "T%02d:%02d:%02d" % (second // 3600, second // 60 % 60, second % 60) + offset_text(offset))


class Run(NamedTuple):
    """Consecutive schedule times in walk order: instant k is base + seconds[k]."""
    base: int
    seconds: list[int]
    texts: Callable[[int | None], list[str]]  # the first n texts (all if None)


class CronWindow:
    """The times of `schedule` in zone `tz` within [lo, hi)."""

    def __init__(self, schedule: CronSchedule, tz: ZoneInfo, lo: int, hi: int):
        self.schedule, self.tz, self.lo, self.hi = schedule, tz, lo, hi
        self._clock_by_offset: dict[int, list[str]] = {}

    # -- the zone ---------------------------------------------------------------------------
    def _offset(self, wall: datetime) -> int:
        return int(self.tz.utcoffset(wall).total_seconds())

    def local_ordinal(self, instant: int) -> int:
        return (EPOCH + timedelta(seconds=instant)).astimezone(self.tz).toordinal()

    def _day_offset(self, year: int, month: int, day: int) -> int | None:
        """The day's single UTC offset, or None when a transition touches its wall times.

        Transitions are always days apart, so reading the offset at 00:00 (fold=0: the offset
        before any change) and at 23:59 (fold=1: the offset after it) brackets the whole day."""
        first = self.tz.utcoffset(datetime(year, month, day))
        if first != self.tz.utcoffset(datetime(year, month, day, 23, 59, fold=1)):
            return None
        return int(first.total_seconds())

    def _month_is_uniform(self, year: int, month: int, length: int) -> bool:
        """True when no transition touches the month: samples two days apart see every one,
        since tz data never has two transitions less than about four days apart."""
        first = self.tz.utcoffset(datetime(year, month, 1))
        return (all(self.tz.utcoffset(datetime(year, month, day)) == first for day in range(3, length + 1, 2))
                and self.tz.utcoffset(datetime(year, month, length, 23, 59, fold=1)) == first)

    def _transition_day(self, ordinal: int) -> list[tuple[int, int]]:
        """(instant, offset) of each time on a day a transition touches, per the DST rules."""
        day = date.fromordinal(ordinal)
        midnight = (ordinal - EPOCH_ORDINAL) * DAY
        seconds = self.schedule.seconds

        def wall(second: int, fold: int = 0) -> datetime:
            return datetime(day.year, day.month, day.day, second // 3600, second // 60 % 60, fold=fold)

        # Only times between the gap's or repeat's edges need the per-time rules.
        before, after = self._offset(wall(0)), self._offset(wall(DAY - 60, fold=1))
        a = bisect_left(seconds, True, key=lambda s: self._offset(wall(s, fold=1)) != before)
        b = bisect_left(seconds, True, key=lambda s: self._offset(wall(s)) == after)
        items = [(midnight + s - before, before) for s in seconds[:a]]
        gap_exit = None  # (wall, instant, offset) of the first real minute after the gap
        for second in seconds[a:b]:
            first, second_offset = self._offset(wall(second)), self._offset(wall(second, fold=1))
            if second_offset < first:  # repeated: first occurrence, and the second unless fixed
                items.append((midnight + second - first, first))
                if not self.schedule.fixed:
                    items.append((midnight + second - second_offset, second_offset))
            elif self.schedule.fixed:  # skipped: fixed jobs fire at the first minute after the gap
                if gap_exit is None or gap_exit[0] <= wall(second):
                    exit_wall = wall(second)
                    while self._offset(exit_wall) < self._offset(exit_wall.replace(fold=1)):
                        exit_wall += timedelta(minutes=1)
                    offset = self._offset(exit_wall)
                    local = (exit_wall - datetime(1970, 1, 1)) // timedelta(seconds=1)
                    gap_exit = (exit_wall, local - offset, offset)
                items.append(gap_exit[1:])
        items += [(midnight + s - after, after) for s in seconds[b:]]
        return items

    def _clock(self, offset: int) -> list[str]:
        if offset not in self._clock_by_offset:
            suffix = offset_text(offset)
            self._clock_by_offset[offset] = [c + suffix for c in self.schedule.clock]
        return self._clock_by_offset[offset]

    # -- walking ----------------------------------------------------------------------------
    def _months(self, first: date, last: date, desc: bool) -> Iterator[tuple[int, int]]:
        months = self.schedule.months
        for year in (range(last.year, first.year - 1, -1) if desc else range(first.year, last.year + 1)):
            for month in (reversed(months) if desc else months):
                if (first.year, first.month) <= (year, month) <= (last.year, last.month):
                    yield year, month

    def runs(self, lo: int | None = None, hi: int | None = None, desc: bool = False,
             totals: bool = False) -> Iterator[Run | int]:
        """Runs of times in [lo, hi), oldest first (newest first if desc).

        With totals=True a month far from the window's ends and free of transitions is
        yielded as its bare count (an int), so counting never builds the times."""
        lo = self.lo if lo is None else max(lo, self.lo)
        hi = self.hi if hi is None else min(hi, self.hi)
        if lo >= hi:
            return
        seconds, count = self.schedule.seconds, len(self.schedule.seconds)
        # One spare day each side: a fold or a gap exit can move a time across midnight.
        first_ordinal, last_ordinal = self.local_ordinal(lo) - 1, self.local_ordinal(hi - 1) + 1
        pending: list[tuple[int, int]] = []  # times of consecutive transition days, merged
        pending_ordinal = 0

        def flush() -> Run | None:
            nonlocal lo, hi, pending
            items = [item for item in sorted(set(pending)) if lo <= item[0] < hi]
            pending = []
            if not items:
                return None
            if desc:
                items.reverse()
                hi = items[-1][0]
            else:
                lo = items[-1][0] + 1
            return Run(0, [u for u, _ in items], lambda n=None: [format_instant(u, o) for u, o in items[:n]])

        for year, month in self._months(date.fromordinal(first_ordinal), date.fromordinal(last_ordinal), desc):
            days = self.schedule.month_days(year, month)
            if not days:
                continue
            month_ordinal = date(year, month, 1).toordinal() - 1
            if (totals and not desc and first_ordinal + 2 < month_ordinal + days[0]
                    and month_ordinal + days[-1] < last_ordinal - 2
                    and self._month_is_uniform(year, month, calendar.monthrange(year, month)[1])):
                if pending and (run := flush()):
                    yield run
                last_base = (month_ordinal + days[-1] - EPOCH_ORDINAL) * DAY - self._offset(datetime(year, month, 1))
                lo = max(lo, last_base + seconds[-1] + 1)
                yield len(days) * count
                continue
            for day in (reversed(days) if desc else days):
                ordinal = month_ordinal + day
                if not first_ordinal <= ordinal <= last_ordinal:
                    continue
                offset = self._day_offset(year, month, day)
                if offset is None:
                    if pending and abs(ordinal - pending_ordinal) != 1 and (run := flush()):
                        yield run
                    pending += self._transition_day(ordinal)
                    pending_ordinal = ordinal
                    continue
                if pending and (run := flush()):
                    yield run
                base = (ordinal - EPOCH_ORDINAL) * DAY - offset
                a = bisect_left(seconds, lo - base) if lo > base else 0
                b = bisect_left(seconds, hi - base) if hi - base <= seconds[-1] else count
                if a >= b:
                    continue
                prefix = "%04d-%02d-%02d" % (year, month, day)
                day_seconds, clock = seconds[a:b], self._clock(offset)[a:b]
                if desc:
                    hi = base + seconds[a]
                    day_seconds.reverse()
                    clock.reverse()
                else:
                    lo = base + seconds[b - 1] + 1
                yield Run(base, day_seconds, lambda n=None, p=prefix, c=clock: [p + t for t in c[:n]])
        if pending and (run := flush()):
            yield run

    # -- what the function answers ------------------------------------------------------------
    def count(self, limit: int | None = None) -> int:
        """The number of times in the window; stops early once past `limit`."""
        total = 0
        for run in self.runs(totals=True):
            total += run if isinstance(run, int) else len(run.seconds)
            if limit is not None and total > limit:
                break
        return total

    def texts(self, desc: bool = False) -> list[str]:
        out: list[str] = []
        for run in self.runs(desc=desc):
            out += run.texts()
        return out

    def page(self, size: int, after: int | None = None, desc: bool = False) -> tuple[list[str], int | None]:
        """Up to `size` times strictly after (before, if desc) the instant `after`, and the
        instant to resume from if more follow."""
        lo, hi = (None, after) if desc else (None if after is None else after + 1, None)
        texts: list[str] = []
        last_instant = None
        for run in self.runs(lo, hi, desc=desc):
            if len(texts) == size:  # one more time exists: there is a next page
                return texts, last_instant
            need = size - len(texts)
            texts += run.texts(need)
            last_instant = run.base + run.seconds[min(need, len(run.seconds)) - 1]
            if len(run.seconds) > need:
                return texts, last_instant
        return texts, None

    def first(self, desc: bool = False) -> str | None:
        for run in self.runs(desc=desc):
            return run.texts(1)[0]
        return None
