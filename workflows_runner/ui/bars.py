"""A backfill as HTML: its outcome, its progress bar by outcome (succeeded, failed, not started,
skipped, running, still to do, each in its own colour and counted in the legend), its row in a
list, and its own page. Every number is backfills.Backfill's (`wfr backfill show`'s)."""
from __future__ import annotations

import json
from html import escape
from typing import Iterable
from urllib.parse import urlencode

from .. import backfills as backfills_

# The bar's parts, in order, and their words.
PARTS = (("succeeded", "succeeded"), ("failed", "failed"), ("not-started", "not started"), ("skipped", "skipped"),
         ("running", "running"), ("todo", "to do"))


def url(path: str, token: str, query: dict[str, str] | None = None) -> str:
    return f"{path}?{urlencode({**(query or {}), 'token': token})}"


def parts(b: backfills_.Backfill) -> dict[str, int] | None:
    """The times of the window by how they went; None when unknown (a dry run, a broken backfill)."""
    p = b.progress
    if p is None:
        c = backfills_.counts(b)
        if c["planned"] is None or c["started"] is None:
            return None
        failed, not_started = c["failed"] or 0, c["notStarted"] or 0
        counts = {"succeeded": c["started"] - (failed - not_started), "failed": failed - not_started,
                  "not-started": not_started, "skipped": c["skipped"] or 0, "running": 0}
    else:
        counts = {"succeeded": p.succeeded, "failed": p.ended_badly, "not-started": p.not_started,
                  "skipped": p.skipped, "running": p.running}
    planned = (p.planned if p is not None else backfills_.counts(b)["planned"]) or 0
    counts["todo"] = max(0, planned - sum(counts.values()))
    return counts


def bar(b: backfills_.Backfill) -> str:
    counts = parts(b)
    if counts is None:
        return '<span class="counts">dry run: starts nothing</span>' if b.argument.get("dryRun") else \
            '<span class="counts">nothing started</span>'
    total = max(1, sum(counts.values()))
    # An SVG, not styled spans: the page's Content-Security-Policy forbids inline styles.
    rects, x = [], 0
    for key, words in PARTS:
        if counts[key]:
            rects.append(f'<rect class="seg {key}" x="{x}" width="{counts[key]}" height="1">'
                         f'<title>{counts[key]} {words}</title></rect>')
            x += counts[key]
    legend = " ".join(f'<span class="item"><span class="k {key}"></span>{counts[key]} {words}</span>'
                      for key, words in PARTS if counts[key])
    p = b.progress
    text = "" if p is None else (f'started {p.started}, skipped {p.skipped}, failed {p.failed}, '
                                 f'running {p.running}')
    return (f'<svg class="bar" data-planned="{total}" viewBox="0 0 {total} 1" preserveAspectRatio="none" '
            f'role="img" aria-label="{escape(_plain(counts))}">{"".join(rects)}</svg>'
            f'<div class="counts" data-counts="{escape(text)}">{legend}</div>')


def _plain(counts: dict[str, int]) -> str:
    return ", ".join(f"{counts[key]} {words}" for key, words in PARTS if counts[key])


def outcome(b: backfills_.Backfill) -> str:
    reason = f'<br><small class="reason">{escape(b.reason)}</small>' if b.reason else ""
    dry = " <small>(dry run)</small>" if b.argument.get("dryRun") else ""
    return f'<span class="outcome o-{b.outcome}" data-outcome="{b.outcome}">{b.outcome}</span>{dry}{reason}'


def window(b: backfills_.Backfill) -> str:
    a = b.argument
    return (f'{escape(str(a.get("start")))} → {escape(str(a.get("stop")))} · <code>{escape(str(a.get("step")))}</code> · '
            f'{escape(str(a.get("timezone", "UTC")))}')


def rows(found: Iterable[backfills_.Backfill], token: str, cancel_form=None, show_workflow: bool = False) -> str:
    """The backfills as table rows, each linking to its page; `cancel_form(b)` adds a cancel."""
    out = []
    for b in found:
        link = f'<a href="{escape(url("/backfill", token, {"id": b.id}))}"><code>{escape(b.id[:8])}</code></a>'
        workflow = f'<td class="col-workflow">{escape(b.workflow.rsplit("/", 1)[-1] or "-")}</td>' if show_workflow else ""
        cancel = cancel_form(b) if cancel_form and b.active else ""
        out.append(f'<tr data-backfill="{escape(b.id)}" data-backfill-state="{escape(b.state)}" '
                   f'data-outcome="{b.outcome}"><td>{link}<br><small>{escape(b.create_time[:16].replace("T", " "))}'
                   f'</small></td>{workflow}<td>{outcome(b)}</td><td class="window col-window">{window(b)}</td>'
                   f'<td class="progress">{bar(b)}</td><td>{cancel}</td></tr>')
    return "".join(out)


def table(found: list[backfills_.Backfill], token: str, cancel_form=None, show_workflow: bool = False,
          empty: str = "None yet.") -> str:
    if not found:
        return f'<p class="empty">{escape(empty)}</p>'
    head = '<th class="col-workflow">workflow</th>' if show_workflow else ""
    return (f'<table class="backfill-list"><thead><tr><th>backfill</th>{head}<th>outcome</th><th class="col-window">window</th>'
            f'<th>progress</th><th></th></tr></thead><tbody>{rows(found, token, cancel_form, show_workflow)}'
            f'</tbody></table>')


def page(b: backfills_.Backfill, runs: list[dict], token: str, cancel: str) -> str:
    """A backfill's own page: window and policy, progress by outcome, failures, its runs."""
    a = b.argument
    grid = url("/", token, {"workflow": b.workflow.rsplit("/", 1)[-1], "start": str(a.get("start", "")),
                            "stop": str(a.get("stop", "")), "step": str(a.get("step", "")),
                            "timezone": str(a.get("timezone", "UTC")),
                            **({"params": _json(a["params"])} if a.get("params") else {})}) if b.workflow else ""
    facts = [("outcome", outcome(b)), ("state", escape(b.state)), ("workflow", escape(b.workflow or "-")),
             ("window", window(b)),
             ("policy", escape(f'reprocess {a.get("reprocess", "none")} · {a.get("concurrency", 1)} at once · '
                               f'order {a.get("order", "asc")} · {"waits for each run" if a.get("wait", True) else "no wait"}')),
             ("created", escape(b.create_time)), ("ended", escape(b.end_time or "-")),
             ("links", str(len(b.links)))]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    failures = b.progress.failures if b.progress else []
    failed = "".join(f'<tr><td><code>{escape(f.schedule_time)}</code></td><td>{escape(f.error)}</td>'
                     f'<td><code>{escape((f.execution or "-").rsplit("/", 1)[-1])}</code></td></tr>' for f in failures)
    failed_html = (f'<table class="failures"><thead><tr><th>time</th><th>error</th><th>execution</th></tr></thead>'
                   f'<tbody>{failed}</tbody></table>') if failures else '<p class="empty">No failure.</p>'
    runs = sorted(runs, key=_time)
    run_rows = "".join(f'<tr data-run-state="{escape(r.get("state", ""))}"><td><code>{escape(_time(r))}</code></td>'
                       f'<td>{escape(r.get("state", ""))}</td><td><code>{escape(r["name"].rsplit("/", 1)[-1])}</code>'
                       f'</td></tr>' for r in runs)
    runs_html = (f'<table class="runs"><thead><tr><th>time</th><th>state</th><th>execution</th></tr></thead>'
                 f'<tbody>{run_rows}</tbody></table>') if runs else '<p class="empty">No run started.</p>'
    to_grid = f'<p><a href="{escape(grid)}">Open this window\'s grid</a></p>' if grid and not b.reason else ""
    return (f'<section class="backfill-page" data-backfill="{escape(b.id)}" data-outcome="{b.outcome}">'
            f'<h2>Backfill <code>{escape(b.id)}</code></h2><dl class="facts">{dl}</dl>'
            f'<h3>Progress</h3>{bar(b)}{cancel}{to_grid}<h3>Failures</h3>{failed_html}'
            f'<h3>Runs <small>({len(runs)} shown, in time order)</small></h3>{runs_html}</section>')


def _json(value) -> str:
    return json.dumps(value, separators=(", ", ": "))


def _time(run: dict) -> str:
    labels = run.get("labels") or {}
    argument = backfills_.run_argument(run)
    return str(argument.get("scheduleTime") or labels.get("schedule_time", "-"))
