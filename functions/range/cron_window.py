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
        # Past 9 digits (cronsim reads any length, but int() refuses over 4,300) a number is
        # refused: no field needs more than 2, and leading zeros that long are nobody's intent.
        if not value or len(value) > 9 or any(ch not in "0123456789" for ch in value):
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


class Stretch(NamedTuple):
    """Times at one UTC offset whose wall clock is schedule.seconds[i:j]: time k is shift + seconds[k],
    and each is a distinct real instant."""
    shift: int
    offset: int
    i: int
    j: int


def _holds(stretch: Stretch, seconds: list[int], instant: int) -> bool:
    k = bisect_left(seconds, instant - stretch.shift, stretch.i, stretch.j)
    return k < stretch.j and seconds[k] == instant - stretch.shift


class Changeover(NamedTuple):
    """A day an offset change touches: the stretches before and after the change, the (instant,
    offset) of each repeated time that fires (each a distinct real instant), and the gap exit
    where skipped fixed times fire (it may equal a stretch's time, or another day's exit)."""
    stretches: tuple[Stretch, Stretch]
    repeated: list[tuple[int, int]]
    gap_exit: tuple[int, int] | None


class _Cursor:
    """What is left of a walk: [lo, hi).

    Invariant: once a piece is yielded, the bound on the walk's side moves past it (lo = its
    latest time + 1 ascending, hi = its earliest time descending), and every later piece is clipped
    to [lo, hi). A gap exit or a repeat that crosses midnight puts a day's time among the next
    day's; the cursor is what keeps such a time from being yielded twice or out of order."""
    __slots__ = ("lo", "hi", "desc")

    def __init__(self, lo: int, hi: int, desc: bool):
        self.lo, self.hi, self.desc = lo, hi, desc

    @classmethod
    def within(cls, window: CronWindow, lo: int | None, hi: int | None, desc: bool) -> _Cursor:
        return cls(window.lo if lo is None else max(lo, window.lo), window.hi if hi is None else min(hi, window.hi), desc)

    def passed(self, first: int, last: int) -> None:
        """A piece whose times span [first, last] was walked."""
        if self.desc:
            self.hi = first
        else:
            self.lo = last + 1


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

    def _transition_day(self, ordinal: int) -> Changeover:
        """The times of a day a transition touches, per the DST rules."""
        day = date.fromordinal(ordinal)
        midnight = (ordinal - EPOCH_ORDINAL) * DAY
        seconds = self.schedule.seconds

        def wall(second: int, fold: int = 0) -> datetime:
            return datetime(day.year, day.month, day.day, second // 3600, second // 60 % 60, fold=fold)

        # Only times between the gap's or repeat's edges need the per-time rules.
        before, after = self._offset(wall(0)), self._offset(wall(DAY - 60, fold=1))
        a = bisect_left(seconds, True, key=lambda s: self._offset(wall(s, fold=1)) != before)
        b = bisect_left(seconds, True, key=lambda s: self._offset(wall(s)) == after)
        # One transition per day: between the edges fold=0 reads `before` and fold=1 `after`.
        middle, gap_exit = [], None
        if after < before:  # repeated: first occurrence, and the second unless fixed
            middle = [(midnight + s - before, before) for s in seconds[a:b]]
            if not self.schedule.fixed:
                middle += [(midnight + s - after, after) for s in seconds[a:b]]
        elif self.schedule.fixed and a < b:  # skipped: fixed jobs fire at the first minute after the gap
            exit_wall = wall(seconds[a])
            while self._offset(exit_wall) < self._offset(exit_wall.replace(fold=1)):
                exit_wall += timedelta(minutes=1)
            offset = self._offset(exit_wall)
            gap_exit = ((exit_wall - datetime(1970, 1, 1)) // timedelta(seconds=1) - offset, offset)
        return Changeover((Stretch(midnight - before, before, 0, a), Stretch(midnight - after, after, b, len(seconds))),
                          middle, gap_exit)

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

    def runs(self, lo: int | None = None, hi: int | None = None, desc: bool = False) -> Iterator[Run]:
        """Runs of times in [lo, hi), oldest first (newest first if desc)."""
        return self._walk(_Cursor.within(self, lo, hi, desc), totals=False)

    def _walk(self, cursor: _Cursor, totals: bool) -> Iterator[Run | int]:
        """The pieces of the window left to `cursor`: Runs, or with `totals` (ascending only) their
        bare sizes, where a month far from the window's ends and free of transitions is one
        number and a day is counted without building its times."""
        assert not (totals and cursor.desc), "counting walks forwards"
        if cursor.lo >= cursor.hi:
            return
        seconds, count = self.schedule.seconds, len(self.schedule.seconds)
        # One spare day each side: a fold or a gap exit can move a time across midnight.
        first_ordinal, last_ordinal = self.local_ordinal(cursor.lo) - 1, self.local_ordinal(cursor.hi - 1) + 1
        group: list[Changeover] = []  # consecutive transition days, walked as one piece
        group_ordinal = 0
        for year, month in self._months(date.fromordinal(first_ordinal), date.fromordinal(last_ordinal), cursor.desc):
            days = self.schedule.month_days(year, month)
            if not days:
                continue
            month_ordinal = date(year, month, 1).toordinal() - 1
            if (totals and first_ordinal + 2 < month_ordinal + days[0] and month_ordinal + days[-1] < last_ordinal - 2
                    and self._month_is_uniform(year, month, calendar.monthrange(year, month)[1])):
                if group:
                    yield from self._group(group, cursor, totals)
                    group = []
                offset = self._offset(datetime(year, month, 1))
                first = (month_ordinal + days[0] - EPOCH_ORDINAL) * DAY - offset + seconds[0]
                if first >= cursor.lo:  # else an earlier gap exit already gave its first time
                    cursor.passed(first, (month_ordinal + days[-1] - EPOCH_ORDINAL) * DAY - offset + seconds[-1])
                    yield len(days) * count
                    continue
            whole_days, bulk_first, bulk_last = 0, 0, 0  # with totals: uniform days inside the window, counted at once
            for day in (reversed(days) if cursor.desc else days):
                ordinal = month_ordinal + day
                if not first_ordinal <= ordinal <= last_ordinal:
                    continue
                offset = self._day_offset(year, month, day)
                base = (ordinal - EPOCH_ORDINAL) * DAY - (offset or 0)
                if (totals and offset is not None and not group and first_ordinal + 2 < ordinal < last_ordinal - 2
                        and base + seconds[0] >= cursor.lo):
                    bulk_first = bulk_first if whole_days else base + seconds[0]
                    whole_days += 1
                    bulk_last = base + seconds[-1]
                    continue
                if whole_days:
                    cursor.passed(bulk_first, bulk_last)
                    yield whole_days * count
                    whole_days = 0
                if offset is None:
                    if group and abs(ordinal - group_ordinal) != 1:
                        yield from self._group(group, cursor, totals)
                        group = []
                    group.append(self._transition_day(ordinal))
                    group_ordinal = ordinal
                    continue
                if group:
                    yield from self._group(group, cursor, totals)
                    group = []
                a = bisect_left(seconds, cursor.lo - base) if cursor.lo > base else 0
                b = bisect_left(seconds, cursor.hi - base) if cursor.hi - base <= seconds[-1] else count
                if a >= b:
                    continue
                cursor.passed(base + seconds[a], base + seconds[b - 1])
                if totals:
                    yield b - a
                    continue
                prefix = "%04d-%02d-%02d" % (year, month, day)
                day_seconds, clock = seconds[a:b], self._clock(offset)[a:b]
                if cursor.desc:
                    day_seconds.reverse()
                    clock.reverse()
                yield Run(base, day_seconds, lambda n=None, p=prefix, c=clock: [p + t for t in c[:n]])
            if whole_days:
                cursor.passed(bulk_first, bulk_last)
                yield whole_days * count
        if group:
            yield from self._group(group, cursor, totals)

    def _group(self, group: list[Changeover], cursor: _Cursor, totals: bool) -> Iterator[Run | int]:
        """Consecutive transition days as one piece (a gap exit or a repeat may cross midnight,
        so their times are merged and ordered together), or its size with `totals`."""
        seconds = self.schedule.seconds
        spans = [(stretch, *self._span(stretch, cursor)) for day in group for stretch in day.stretches]
        spans = [(stretch, i, j) for stretch, i, j in spans if i < j]
        repeated = [item for day in group for item in day.repeated if cursor.lo <= item[0] < cursor.hi]
        exits = {day.gap_exit for day in group if day.gap_exit and cursor.lo <= day.gap_exit[0] < cursor.hi}
        if totals:  # stretch and repeated times are distinct real instants; an exit may be one of them
            exits = {u for u, _ in exits if not any(_holds(stretch, seconds, u) for stretch, _, _ in spans)}
            ends = [s.shift + seconds[k] for s, i, j in spans for k in (i, j - 1)] + [u for u, _ in repeated] + list(exits)
            if ends:
                cursor.passed(min(ends), max(ends))
                yield sum(j - i for _, i, j in spans) + len(repeated) + len(exits)
            return
        items = sorted({(s.shift + seconds[k], s.offset) for s, i, j in spans for k in range(i, j)}
                       .union(repeated, exits))
        if not items:
            return
        cursor.passed(items[0][0], items[-1][0])
        if cursor.desc:
            items.reverse()
        yield Run(0, [u for u, _ in items], lambda n=None: [format_instant(u, o) for u, o in items[:n]])

    def _span(self, stretch: Stretch, cursor: _Cursor) -> tuple[int, int]:
        """The indexes [i, j) of the stretch's times that lie in the cursor's window."""
        seconds = self.schedule.seconds
        return (max(stretch.i, bisect_left(seconds, cursor.lo - stretch.shift)),
                min(stretch.j, bisect_left(seconds, cursor.hi - stretch.shift)))

    # -- what the function answers ------------------------------------------------------------
    def count(self, limit: int | None = None) -> int:
        """The number of times in the window; stops early once past `limit`."""
        total = 0
        for size in self._walk(_Cursor.within(self, None, None, False), totals=True):
            total += size
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
