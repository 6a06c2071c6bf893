"""The grid page's HTML, rendered on the server from a Status (workflows_runner.status) and the
backfills (workflows_runner.backfills): every number shown is theirs, nothing is recounted here.

Every value is escaped (html.escape) where it is written; links and forms carry the token.
"""
from __future__ import annotations

from datetime import datetime
from html import escape

from .. import backfills as backfills_
from ..render import SYMBOL, short_id
from ..selection import Selection
from ..status import STATES, Status
from . import bars, grid as grid_
from .actions import Plan, duplicate

url = bars.url


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
<header><h1><a href="{escape(url('/', token))}">wfr ui</a></h1><span class="where">{escape(title)}</span></header>
<main>
{body}
</main>
</body>
</html>
"""


def hidden(form: dict[str, str]) -> str:
    return "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in form.items())


def selection_form(selection: Selection, token: str, start: str, stop: str, open_: bool = True) -> str:
    """Pick a workflow and a window, or a Scheduler job (whose schedule, zone and body the
    window then uses, as `wfr status --job`). Filled with what was asked, errors included."""
    s = selection

    def field(name: str, label: str, value: str | None, placeholder: str = "", size: int = 22) -> str:
        return (f'<label>{escape(label)} <input name="{name}" size="{size}" value="{escape(value or "")}" '
                f'placeholder="{escape(placeholder)}"></label>')
    return f"""<details class="pick"{" open" if open_ else ""}><summary>Pick runs: a workflow or a job, and a window</summary>
<form class="pick" method="get" action="/">
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
</form></details>"""


def totals(status: Status) -> str:
    parts = "".join(f'<li class="s-{s}" data-total="{s}"><span class="sym">{SYMBOL[s]}</span> '
                    f'<b>{status.totals[s]}</b> {s}</li>' for s in STATES)
    return f'<ul class="totals"><li><b>{len(status.times)}</b> times</li>{parts}</ul>'


def action_form(action: str, label: str, fields: dict[str, str], token: str, enabled: bool, extra: str = "",
                reason: str = "") -> str:
    disabled = "" if enabled else " disabled"
    why = f'<span class="reason" data-reason="{action}">{escape(reason)}</span>' if reason else ""
    return (f'<form class="action" method="post" action="{escape(url("/preview", token))}">'
            f'{hidden({**fields, "action": action})}{extra}'
            f'<button type="submit" data-action="{action}"{disabled}'
            f'{f" title={chr(34)}{escape(reason)}{chr(34)}" if reason else ""}>{escape(label)}</button>{why}</form>')


def actions(status: Status, selection: Selection, token: str, found: list[backfills_.Backfill]) -> str:
    missing = status.totals["missing"]
    failed = status.totals["failed"] + status.totals["cancelled"]
    running = duplicate(status, found)
    reason = f"backfill {running.id[:8]} of this window is running" if running else \
        ("" if missing else "no missing time")
    concurrency = ('<label>runs at once <input name="concurrency" type="number" min="1" max="50" value="1" '
                   'size="3"></label>')
    return ('<div class="actions">'
            + action_form("backfill", f"Backfill missing ({missing})…", selection.form(), token,
                          bool(missing) and running is None, concurrency, reason)
            + action_form("rerun", f"Re-run failed ({failed})…", selection.form(), token, bool(failed))
            + '</div>')


def live(status: Status, found: list[backfills_.Backfill], selection: Selection, token: str,
         now: datetime) -> str:
    """What changes while runs go on: refreshed as a whole by the script while `data-live` is 1."""
    active = bool(status.totals["running"] or status.totals["queued"]) or any(b.active for b in found)
    w = status.window

    def cancel(b: backfills_.Backfill) -> str:
        return action_form("cancel", "Cancel…", {**selection.form(), "backfill": b.id}, token, True,
                           '<label><input type="checkbox" name="runs" value="1"> and its running runs</label>')
    return (f'<section id="live" data-live="{int(active)}" '
            f'data-src="{escape(url("/fragment", token, selection.form()))}">'
            f'<h2>{escape(short_id(status.workflow))} <small>{escape(w.start)} .. {escape(w.stop)} '
            f'<code>{escape(w.step)}</code> {escape(w.timezone)}'
            f'{" · refreshing while runs are active" if active else ""}</small></h2>'
            + totals(status) + actions(status, selection, token, found) + grid_.grid(status, now)
            + '<section class="backfills"><h2>Backfills of this workflow</h2>'
            + bars.table(found, token, cancel, empty="None of this workflow.") + "</section></section>")


def detail(selection: Selection, token: str) -> str:
    """The picked time's details, and the re-run of that one time (the script fills both in)."""
    rerun = (f'<form class="action rerun-one" method="post" action="{escape(url("/preview", token))}">'
             f'{hidden({**selection.form(), "action": "rerun-time"})}<input type="hidden" name="time" value="">'
             f'<button type="submit" data-rerun-time="" disabled>Re-run this time…</button>'
             f'<span class="reason" data-reason="rerun-time">Pick a time.</span></form>')
    return ('<aside id="detail" aria-live="polite"><h2>Scheduled time</h2>'
            '<p class="hint">Pick a cell to see its execution, attempts, duration and error.</p><dl></dl>'
            f'{rerun}</aside>')


def notice(text: str | None, kind: str = "notice") -> str:
    return f'<p class="{kind}" role="status">{escape(text)}</p>' if text else ""


def plan_page(plan: Plan, token: str, back: str) -> str:
    items = "".join(f"<li><code>{escape(item)}</code></li>" for item in plan.items)
    more = f"<li>… and {plan.count - len(plan.items)} more</li>" if plan.count > len(plan.items) else ""
    confirm = (f'<form method="post" action="{escape(url("/act", token))}">'
               f'{hidden({**plan.fields, "action": plan.action})}'
               f'<button type="submit" class="confirm" data-confirm="{plan.action}">Confirm</button> '
               f'<a href="{escape(back)}">Back</a></form>') if plan.count else \
        f'<p>Nothing to do. <a href="{escape(back)}">Back</a></p>'
    return (f'<section class="plan" data-plan="{plan.action}"><h2>{escape(plan.title)}</h2>'
            f'<p>{escape(plan.summary)}</p><ul class="items">{items}{more}</ul>'
            f'<p>The same from a terminal:</p><pre class="command">{escape(plan.command)}</pre>'
            f'{confirm}</section>')
