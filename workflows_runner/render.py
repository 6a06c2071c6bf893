"""Views of a Status: JSON (the contract in docs/cli.md), CSV, and the terminal's table, grid
and totals; and the text beside a followed backfill's bar. rich draws them; on a pipe it prints
plain text (no colour, no box characters)."""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .status import STATES, Status, TimeStatus

if TYPE_CHECKING:
    from .backfills import Progress

# ◷ (a clock face) for queued: DejaVu Sans and Sans Mono have it, as they have the others.
SYMBOL = {"succeeded": "✓", "failed": "✗", "cancelled": "⊘", "running": "▶", "queued": "◷", "skipped": "↷",
          "missing": "·"}
STYLE = {"succeeded": "green", "failed": "bold red", "cancelled": "yellow", "running": "cyan",
         "queued": "blue", "skipped": "magenta", "missing": "dim"}
OUTCOME_STYLE = {"succeeded": "green", "failed": "bold red", "error": "bold red", "cancelled": "yellow",
                 "running": "cyan"}
# A grid cell that stands for several times shows the one needing attention first.
# Queued before running: a time held back by its job's runs is nearer to trouble than one running.
SEVERITY = ("failed", "cancelled", "missing", "skipped", "queued", "running", "succeeded")


def status_json(status: Status, times: list[TimeStatus]) -> dict[str, Any]:
    """The documented JSON: `times` are those selected (--only), `totals` count the whole window."""
    w = status.window
    return {"workflow": status.workflow,
            "window": {"start": w.start, "stop": w.stop, "step": w.step, "timezone": w.timezone},
            "times": [{"scheduleTime": t.schedule_time, "state": t.state, "attempts": t.attempts,
                       "execution": t.execution, "error": t.error, "late": t.late} for t in times],
            "totals": dict(status.totals)}


def status_csv(times: list[TimeStatus]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["scheduleTime", "state", "attempts", "execution", "error"])
    for t in times:
        writer.writerow([t.schedule_time, t.state, t.attempts, t.execution or "", t.error or ""])
    return out.getvalue()


def short_id(name: str | None) -> str:
    return name.rsplit("/", 1)[-1] if name else "-"


def status_table(console: Console, times: list[TimeStatus]) -> None:
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    # "#" is the attempts: with it, time, state and a whole id fit in 80 columns.
    for column in ("TIME", "STATE", "#", "EXECUTION", "ERROR"):
        # Ids whole whatever the width (they are typed back to wfr rerun); the error wraps.
        table.add_column(column, no_wrap=column != "ERROR", overflow="fold",
                         min_width={"TIME": max((len(t.schedule_time) for t in times), default=4),
                                    "STATE": 11, "EXECUTION": max((len(short_id(t.execution)) for t in times),
                                                                   default=9)}.get(column))
    for t in times:
        # `late`: not succeeded by its time + the job's deadline (docs/alerts.md).
        state = f"{SYMBOL[t.state]} {t.state}" + (", late" if t.late else "")
        table.add_row(t.schedule_time, Text(state, style=STYLE[t.state]),
                      str(t.attempts), short_id(t.execution), (t.error or "")[:120])
    console.print(table)


def status_grid(console: Console, status: Status) -> None:
    """A row per local day, a cell per time; when a day has more times than fit, each cell
    stands for several consecutive times and shows the worst of them."""
    days = status.days()
    if not days:
        return
    room = max(10, console.width - 12)
    widest = max(len(times) for _, times in days)
    per_cell = -(-widest // room)
    if per_cell > 1:
        console.print(Text(f"each cell: {per_cell} consecutive times, the worst shown", style="dim"))
    for day, times in days:
        row = Text(f"{day}  ")
        for i in range(0, len(times), per_cell):
            state = min((t.state for t in times[i:i + per_cell]), key=SEVERITY.index)
            row.append(SYMBOL[state], style=STYLE[state])
        console.print(row, no_wrap=True, overflow="crop")


def totals_line(status: Status) -> Text:
    line = Text(f"{len(status.times)} times: ")
    line.append_text(Text(", ").join(Text(f"{status.totals[s]} {s}", style=STYLE[s] if status.totals[s] else "")
                                     for s in STATES))
    return line


@dataclass
class Pace:
    """A followed backfill's rate (times done per second) and ETA, counted from when wfr started
    it (`since`, time.monotonic()), or else from the first look at it."""
    since: float | None = None
    done_then: int = 0

    def look(self, done: int, planned: int | None) -> tuple[float | None, float | None]:
        """(rate, seconds left), each None until known."""
        now = time.monotonic()
        if self.since is None:
            self.since, self.done_then = now, done
        if done <= self.done_then or now <= self.since:
            return None, None
        rate = (done - self.done_then) / (now - self.since)
        return rate, (max(0, planned - done) / rate if planned is not None else None)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    minutes, second = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{second:02d}"


def progress_line(p: Progress, pace: tuple[float | None, float | None], width: int = 200) -> str:
    """The line of a followed backfill: what is done of what is planned (a time is done once
    skipped, not started, or its run ended), the counters, the rate and the ETA, fitted to
    `width`: the bar goes first, then the counters' words and the rate;
    the counts and the ETA always stay."""
    rate, left = pace
    planned = "?" if p.planned is None else str(p.planned)
    speed, eta = f"{'-' if rate is None else f'{rate:.1f}'} times/s", f"ETA {duration(left)}"
    texts = [f"{p.done}/{planned} done · planned {planned}, started {p.started}, skipped {p.skipped}, "
             f"failed {p.failed}, running {p.running} · {speed} · {eta}",
             f"{p.done}/{planned} · started {p.started}, skipped {p.skipped}, failed {p.failed}, "
             f"running {p.running} · {eta}",
             f"{p.done}/{planned} st {p.started} sk {p.skipped} f {p.failed} r {p.running} {eta}"]
    room = width - len(texts[0]) - 1
    if room >= 10 and p.planned:
        cells = min(room, 40)
        filled = min(cells, cells * p.done // p.planned)
        return "━" * filled + "─" * (cells - filled) + " " + texts[0]
    return next((t for t in texts if len(t) <= width), texts[-1])
