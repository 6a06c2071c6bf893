"""The grid of a window's times, in the layout that reads at a glance (docs/ui.md):

- at most one time a day (a daily or weekly schedule): a month calendar per month, weeks as rows;
- up to 48 times of day: a row per day, a column per time of day, the hours labelled above;
- more (a minutely schedule): a row per day, its times flowing, first and last time beside it.

Every time is one `cell` button carrying data-time/data-state (the contract with scripts and
tests) and the rest of what the detail panel shows. Rendered from the Status alone.
"""
from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta
from html import escape

from ..render import SYMBOL
from ..status import STATES, Status, TimeStatus

MAX_COLUMNS = 48     # times of day up to which each gets its own labelled column


def _attrs(values: dict[str, str]) -> str:
    return " ".join(f'{name}="{escape(value)}"' for name, value in values.items())


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    return str(timedelta(seconds=whole)) if whole >= 60 else f"{seconds:.1f} s"


def cell(t: TimeStatus, now: datetime) -> str:
    duration = _duration(t.duration(now))
    title = f"{t.schedule_time}  {SYMBOL[t.state]} {t.state}"
    if t.attempts:
        title += f", attempt {t.attempts}, {duration}"
    if t.late:
        title += ", late"
    if t.alerts:
        title += f", alert: {', '.join(t.alerts)}"
    if t.error:
        title += f"\n{t.error[:300]}"
    # Late (the job's deadline passed) and alerted (an open alert of the audit) are marks on the
    # cell, beside its state (docs/ui.md): data-late and data-alert.
    marks = "".join(f" {mark}" for mark, on in (("late", t.late), ("alerted", bool(t.alerts))) if on)
    return (f'<button type="button" class="cell s-{t.state}{marks}" '
            + _attrs({"data-time": t.schedule_time, "data-state": t.state, "data-attempts": str(t.attempts),
                      "data-execution": t.execution or "", "data-duration": duration,
                      "data-error": t.error or "", "data-late": "true" if t.late else "false",
                      "data-alert": ",".join(t.alerts), "title": title, "aria-label": title})
            + f">{SYMBOL[t.state]}</button>")


def legend() -> str:
    keys = " ".join(f'<span class="s-{s} key">{SYMBOL[s]}</span> {s}' for s in STATES)
    return f'<p class="legend">{keys}</p>'


def grid(status: Status, now: datetime) -> str:
    if not status.times:
        return '<p class="empty">No scheduled time in this window.</p>'
    days = status.days()
    if all(len(times) == 1 for _, times in days):
        return months(status, now) + legend()
    slots = sorted({t.schedule_time[11:16] for t in status.times})
    if len(slots) <= MAX_COLUMNS:
        return hours(days, slots, now) + legend()
    return flow(days, now) + legend()


def months(status: Status, now: datetime) -> str:
    """A calendar per month the times fall in, Monday first; a day without a time is blank."""
    by_day = {t.day: t for t in status.times}
    first, last = date.fromisoformat(status.times[0].day), date.fromisoformat(status.times[-1].day)
    out = []
    year, month = first.year, first.month
    while (year, month) <= (last.year, last.month):
        weeks = calendar.Calendar(firstweekday=0).monthdatescalendar(year, month)
        rows = []
        for week in weeks:
            tds = []
            for day in week:
                if day.month != month:
                    tds.append('<td class="out"></td>')
                    continue
                t = by_day.get(day.isoformat())
                inner = cell(t, now) if t else ""
                tds.append(f'<td data-day="{day.isoformat()}"{"" if t else " class=none"}>'
                           f'<span class="date">{day.day}</span>{inner}</td>')
            rows.append(f'<tr>{"".join(tds)}</tr>')
        head = "".join(f"<th>{name}</th>" for name in calendar.day_abbr)
        out.append(f'<table class="month" data-month="{year:04d}-{month:02d}"><caption>{calendar.month_name[month]} '
                   f'{year}</caption><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return f'<div class="months" role="grid">{"".join(out)}</div>'


def hours(days: list[tuple[str, list[TimeStatus]]], slots: list[str], now: datetime) -> str:
    """A column per time of day (local), labelled with its hour where an hour starts. A day of a
    daylight-saving change may hold two times in one column (the repeated hour) or none."""
    labels = []
    for index, slot in enumerate(slots):
        hour_starts = index == 0 or slots[index - 1][:2] != slot[:2]
        labels.append(f'<th title="{slot}" data-slot="{slot}">{slot[:2] if hour_starts else ""}</th>')
    rows = []
    for day, times in days:
        by_slot: dict[str, list[TimeStatus]] = {}
        for t in times:
            by_slot.setdefault(t.schedule_time[11:16], []).append(t)
        weekday = datetime.strptime(day, "%Y-%m-%d").strftime("%a")
        tds = "".join(f'<td>{"".join(cell(t, now) for t in by_slot.get(slot, []))}</td>' for slot in slots)
        rows.append(f'<tr class="row" data-day="{escape(day)}"><th class="day" scope="row">{escape(day)} '
                    f'{weekday}</th>{tds}</tr>')
    return (f'<div class="hours-wrap"><table class="hours" role="grid"><thead><tr><th class="corner">hour →</th>'
            f'{"".join(labels)}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def flow(days: list[tuple[str, list[TimeStatus]]], now: datetime) -> str:
    rows = []
    for day, times in days:
        weekday = datetime.strptime(day, "%Y-%m-%d").strftime("%a")
        first, last = times[0].schedule_time[11:16], times[-1].schedule_time[11:16]
        rows.append(f'<div class="row" data-day="{escape(day)}"><span class="day">{escape(day)} {weekday}'
                    f'<small>{escape(first)}–{escape(last)}</small></span>'
                    f'<span class="cells">{"".join(cell(t, now) for t in times)}</span></div>')
    return f'<div class="grid" role="grid">{"".join(rows)}</div>'


def strip(times: list[TimeStatus], now: datetime) -> str:
    """A job's recent times in a row, oldest first (the overview)."""
    return f'<span class="cells strip">{"".join(cell(t, now) for t in times)}</span>'
