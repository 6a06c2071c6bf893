"""The page's HTML, rendered on the server from a Status (workflows_runner.status) and the
backfills (workflows_runner.backfills): every number shown is theirs, nothing is recounted here.

Every value is escaped (html.escape) where it is written; links and forms carry the token.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from html import escape
from typing import Iterable
from urllib.parse import urlencode

from .. import backfills as backfills_
from ..render import SYMBOL, short_id
from ..status import STATES, Status, TimeStatus
from ..selection import Selection
from .actions import Plan


def url(path: str, token: str, query: dict[str, str] | None = None) -> str:
    return f"{path}?{urlencode({**(query or {}), 'token': token})}"


def document(title: str, body: str, token: str) -> str:
    return f"""<!doctype html>
<html lang="en" data-token="{escape(token)}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>{escape(title)}</title>
<link rel="stylesheet" href="{escape(url('/static/ui.css', token))}">
<script src="{escape(url('/static/ui.js', token))}" defer></script>
</head>
<body>
<header><h1>wfr ui</h1><span class="where">{escape(title)}</span></header>
<main>
{body}
</main>
</body>
</html>
"""


def _attrs(values: dict[str, str]) -> str:
    return " ".join(f'{name}="{escape(value)}"' for name, value in values.items())


def _hidden(form: dict[str, str]) -> str:
    return "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in form.items())


def selection_form(selection: Selection, token: str, start: str, stop: str) -> str:
    """Pick a workflow and a window, or a Scheduler job (whose schedule, zone and body the
    window then uses, as `wfr status --job`)."""
    s = selection

    def field(name: str, label: str, value: str | None, placeholder: str = "", size: int = 22) -> str:
        return (f'<label>{escape(label)} <input name="{name}" size="{size}" value="{escape(value or "")}" '
                f'placeholder="{escape(placeholder)}"></label>')
    return f"""<form class="pick" method="get" action="/">
<input type="hidden" name="token" value="{escape(token)}">
<fieldset><legend>Runs of</legend>
{field("workflow", "workflow", s.workflow, "id or projects/P/locations/L/workflows/W")}
<span class="or">or</span>
{field("job", "Scheduler job", s.job, "job name")}
</fieldset>
<fieldset><legend>Window</legend>
{field("start", "start", s.start or start, "RFC 3339, inclusive", 26)}
{field("stop", "stop", s.stop or stop, "RFC 3339, exclusive", 26)}
{field("step", "step (cron)", s.step, "0 1 * * *", 12)}
{field("timezone", "time zone", s.timezone, "UTC", 14)}
{field("params", "params (JSON)", s.params, "{}", 18)}
</fieldset>
<button type="submit">Show</button>
</form>"""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    return str(timedelta(seconds=whole)) if whole >= 60 else f"{seconds:.1f} s"


def _cell(t: TimeStatus, now: datetime) -> str:
    duration = _duration(t.duration(now))
    title = f"{t.schedule_time}  {SYMBOL[t.state]} {t.state}"
    if t.attempts:
        title += f", attempt {t.attempts}, {duration}"
    if t.error:
        title += f"\n{t.error[:300]}"
    return (f'<button type="button" class="cell s-{t.state}" '
            + _attrs({"data-time": t.schedule_time, "data-state": t.state, "data-attempts": str(t.attempts),
                      "data-execution": t.execution or "", "data-duration": duration,
                      "data-error": t.error or "", "title": title, "aria-label": title})
            + f">{SYMBOL[t.state]}</button>")


def totals(status: Status) -> str:
    parts = "".join(f'<li class="s-{s}" data-total="{s}"><span class="sym">{SYMBOL[s]}</span> '
                    f'<b>{status.totals[s]}</b> {s}</li>' for s in STATES)
    return f'<ul class="totals"><li><b>{len(status.times)}</b> times</li>{parts}</ul>'


def grid(status: Status, now: datetime) -> str:
    """A row per day (in the window's zone), a cell per scheduled time."""
    if not status.times:
        return '<p class="empty">No scheduled time in this window.</p>'
    rows = []
    for day, times in status.days():
        weekday = datetime.strptime(day, "%Y-%m-%d").strftime("%a")
        first, last = times[0].schedule_time[11:16], times[-1].schedule_time[11:16]
        rows.append(f'<div class="row" data-day="{escape(day)}"><span class="day">{escape(day)} {weekday}'
                    f'<small>{escape(first)}–{escape(last)}</small></span>'
                    f'<span class="cells">{"".join(_cell(t, now) for t in times)}</span></div>')
    legend = " ".join(f'<span class="s-{s} key">{SYMBOL[s]}</span> {s}' for s in STATES)
    return f'<div class="grid" role="grid">{"".join(rows)}</div><p class="legend">{legend}</p>'


def _action_form(action: str, label: str, selection: Selection, token: str, count: int, extra: str = "",
                 form: dict[str, str] | None = None) -> str:
    disabled = "" if count else " disabled"
    return (f'<form class="action" method="post" action="{escape(url("/preview", token))}">'
            f'{_hidden({**selection.form(), **(form or {}), "action": action})}{extra}'
            f'<button type="submit" data-action="{action}"{disabled}>{escape(label)}</button></form>')


def actions(status: Status, selection: Selection, token: str) -> str:
    missing = status.totals["missing"]
    failed = status.totals["failed"] + status.totals["cancelled"]
    concurrency = ('<label>runs at once <input name="concurrency" type="number" min="1" max="50" value="1" '
                   'size="3"></label>')
    return ('<div class="actions">'
            + _action_form("backfill", f"Backfill missing ({missing})…", selection, token, missing, concurrency)
            + _action_form("rerun", f"Re-run failed ({failed})…", selection, token, failed)
            + '</div>')


def _progress(b: backfills_.Backfill) -> str:
    p = b.progress
    if p is None:
        return "dry run" if b.argument.get("dryRun") else "-"
    planned = p.planned if p.planned is not None else 0
    bar = f'<progress value="{p.done}" max="{max(planned, 1)}"></progress>' if planned else ""
    return (f'{bar} {p.done}/{planned}<br><span class="counts">started {p.started}, skipped {p.skipped}, '
            f'failed {p.failed}, running {p.running}</span>')


def backfill_list(found: Iterable[backfills_.Backfill], selection: Selection, token: str) -> str:
    rows = []
    for b in found:
        a = b.argument
        cancel = ""
        if b.active:
            cancel = _action_form("cancel", "Cancel…", selection, token, 1,
                                  '<label><input type="checkbox" name="runs" value="1"> and its running runs</label>',
                                  {"backfill": b.id})
        window = f'{a.get("start")} → {a.get("stop")} · {a.get("step")} · reprocess {a.get("reprocess", "none")}'
        rows.append(f'<tr data-backfill="{escape(b.id)}" data-backfill-state="{escape(b.state)}">'
                    f'<td><code>{escape(b.id)}</code><br><small>{escape(b.create_time[:19].replace("T", " "))}'
                    f'</small></td><td>{escape(b.state)}</td><td class="window">{escape(window)}</td>'
                    f'<td>{_progress(b)}</td><td>{cancel}</td></tr>')
    if not rows:
        return '<section class="backfills"><h2>Backfills</h2><p class="empty">None of this workflow.</p></section>'
    return ('<section class="backfills"><h2>Backfills</h2><table><thead><tr><th>id, created</th><th>state</th>'
            '<th>window</th><th>progress</th><th></th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></section>")


def live(status: Status, found: list[backfills_.Backfill], selection: Selection, token: str,
         now: datetime) -> str:
    """What changes while runs go on: refreshed as a whole by the script while `data-live` is 1."""
    active = bool(status.totals["running"]) or any(b.active for b in found)
    w = status.window
    return (f'<section id="live" data-live="{int(active)}" '
            f'data-src="{escape(url("/fragment", token, selection.form()))}">'
            f'<h2>{escape(short_id(status.workflow))} <small>{escape(w.start)} .. {escape(w.stop)} '
            f'<code>{escape(w.step)}</code> {escape(w.timezone)}'
            f'{" · refreshing while runs are active" if active else ""}</small></h2>'
            + totals(status) + actions(status, selection, token) + grid(status, now)
            + backfill_list(found, selection, token) + "</section>")


DETAIL = ('<aside id="detail" aria-live="polite"><h2>Scheduled time</h2>'
          '<p class="hint">Pick a cell to see its execution, attempts, duration and error.</p><dl></dl></aside>')


def notice(text: str | None, kind: str = "notice") -> str:
    return f'<p class="{kind}" role="status">{escape(text)}</p>' if text else ""


def plan_page(plan: Plan, token: str, back: str) -> str:
    items = "".join(f"<li><code>{escape(item)}</code></li>" for item in plan.items)
    more = f"<li>… and {plan.count - len(plan.items)} more</li>" if plan.count > len(plan.items) else ""
    confirm = (f'<form method="post" action="{escape(url("/act", token))}">'
               f'{_hidden({**plan.fields, "action": plan.action})}'
               f'<button type="submit" class="confirm" data-confirm="{plan.action}">Confirm</button> '
               f'<a href="{escape(back)}">Back</a></form>') if plan.count else \
        f'<p>Nothing to do. <a href="{escape(back)}">Back</a></p>'
    return (f'<section class="plan" data-plan="{plan.action}"><h2>{escape(plan.title)}</h2>'
            f'<p>{escape(plan.summary)}</p><ul class="items">{items}{more}</ul>'
            f'<p>The same from a terminal:</p><pre class="command">{escape(plan.command)}</pre>'
            f'{confirm}</section>')
