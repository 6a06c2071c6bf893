"""`wfr ui` (docs/ui.md): its guards over plain HTTP, and the page in a real headless Chromium
against the local stack, read against `wfr status --format json` (the CLI is the oracle: the page
must show the same states for the same window).

The browser is Debian's /usr/bin/chromium driven by Playwright (never `playwright install`);
where it is absent the browser tests skip and say so.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import requests

from localcloud import stack as local_stack
from localcloud import up as local_up

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / ".artifacts"
WFR = [sys.executable, "-m", "workflows_runner.cli"]
PARENT = f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/workflows"


def start_ui(state: Path) -> tuple[subprocess.Popen, str]:
    """`wfr ui --local-state STATE --no-browser`; the URL it prints first."""
    process = subprocess.Popen([*WFR, "ui", "--local-state", str(state), "--no-browser"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = process.stdout.readline().strip()
    assert re.fullmatch(r"http://127\.0\.0\.1:[0-9]+/\?token=[A-Za-z0-9_-]{40,}", url), (url, process.stderr.read())
    return process, url


def stop_ui(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    try:
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.stdout.close()
        process.stderr.close()


def with_path(url: str, path: str, **query: str) -> str:
    """The server's URL for `path`, keeping (or, with token=None, dropping) the token."""
    split = urlsplit(url)
    token = dict(p.split("=", 1) for p in split.query.split("&"))["token"]
    if query.get("token", token) is None:
        query.pop("token")
    else:
        query.setdefault("token", token)
    return f"{split.scheme}://{split.netloc}{path}?{urlencode(query)}"


# --- the guards, over HTTP (no cloud needed: every refusal comes before any call) -----------------
def closed_endpoints(state: Path) -> Path:
    """An endpoints.json whose every service is a closed port."""
    closed = f"http://127.0.0.1:{local_stack.free_port()}"
    (state / "endpoints.json").write_text(json.dumps({
        "project": "local-project", "location": "us-central1", "api": closed, "range": closed, "proxy": closed,
        "scheduler": closed, "storage": closed, "bucket": "runs", "backfillWorkflow": "backfill", "token": "localcloud"}))
    return state


@pytest.fixture(scope="module")
def offline_ui(tmp_path_factory):
    process, url = start_ui(closed_endpoints(tmp_path_factory.mktemp("offline")))
    yield url
    stop_ui(process)


def test_the_printed_url_opens_the_page_and_its_assets_are_served_from_the_package(offline_ui):
    page = requests.get(offline_ui, timeout=10)
    assert page.status_code == 200 and '<form class="pick"' in page.text
    for asset, kind in (("/static/ui.js", "text/javascript"), ("/static/ui.css", "text/css")):
        answer = requests.get(with_path(offline_ui, asset), timeout=10)
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith(kind)
        assert answer.content == (ROOT / "workflows_runner/ui/static" / asset.rsplit("/", 1)[1]).read_bytes()
    # Nothing from elsewhere: no URL with a host in the page or its assets.
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)


@pytest.mark.parametrize("token", [None, "", "x", "wrong-token-of-the-right-length-0000000000000"])
def test_a_request_without_the_token_is_refused(offline_ui, token):
    for path in ("/", "/static/ui.js", "/fragment"):
        answer = requests.get(with_path(offline_ui, path, token=token), timeout=10)
        assert answer.status_code == 403 and "token" in answer.text
    answer = requests.post(with_path(offline_ui, "/act", token=token), data={"action": "rerun"}, timeout=10)
    assert answer.status_code == 403


def test_the_token_may_come_in_a_header(offline_ui):
    token = urlsplit(offline_ui).query.split("=", 1)[1]
    assert requests.get(with_path(offline_ui, "/", token=None), headers={"X-Wfr-Token": token}, timeout=10).status_code == 200


def test_another_host_name_is_refused_against_dns_rebinding(offline_ui):
    port = urlsplit(offline_ui).port
    for host in (f"evil.example:{port}", f"127.0.0.1.nip.io:{port}", "127.0.0.1", f"localhost:{port + 1}"):
        answer = requests.get(offline_ui, headers={"Host": host}, timeout=10)
        assert answer.status_code == 403, host
    assert requests.get(offline_ui, headers={"Host": f"localhost:{port}"}, timeout=10).status_code == 200


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Origin": "null"},
                                     {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}])
def test_cross_origin_requests_are_refused(offline_ui, headers):
    form = {"action": "rerun", "workflow": "example", "start": "2024-01-01T00:00:00Z",
            "stop": "2024-01-02T00:00:00Z", "step": "0 * * * *"}
    for path in ("/preview", "/act"):
        answer = requests.post(with_path(offline_ui, path), data=form, headers=headers, timeout=10)
        assert answer.status_code == 403 and "cross-origin" in answer.text


def test_actions_are_post_only_and_no_cors_header_is_sent(offline_ui):
    assert requests.get(with_path(offline_ui, "/act", action="rerun"), timeout=10).status_code == 404
    preflight = requests.options(with_path(offline_ui, "/act"), timeout=10, headers={
        "Origin": f"http://127.0.0.1:{urlsplit(offline_ui).port}", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 405
    for answer in (preflight, requests.get(offline_ui, timeout=10)):
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]
        assert answer.headers["Referrer-Policy"] == "same-origin"  # the token-bearing URL never leaves
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]


def test_it_listens_on_the_loopback_address_only(offline_ui):
    port = urlsplit(offline_ui).port
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if Path(table).exists():
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    listening.append(local.rsplit(":", 1)[0])
    if not listening:
        pytest.skip("no /proc/net/tcp to read listening sockets from")
    assert listening == ["0100007F"]  # 127.0.0.1, and no other address or family


def test_a_port_in_use_is_a_clear_error(offline_ui, tmp_path):
    done = subprocess.run([*WFR, "ui", "--local-state", str(closed_endpoints(tmp_path)), "--port", str(urlsplit(offline_ui).port),
                           "--no-browser"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert f"cannot listen on 127.0.0.1:{urlsplit(offline_ui).port}" in done.stderr


def test_a_bad_window_is_a_clear_400_not_a_trace(offline_ui):
    answer = requests.get(with_path(offline_ui, "/", workflow="example", start="2024-01-01T00:00:00Z",
                                    stop="2024-01-02T00:00:00Z", step="0 * * * *", params="[1]"), timeout=10)
    assert answer.status_code == 400 and "--params must be a JSON object" in answer.text
    assert "Traceback" not in answer.text


def test_a_stopped_stack_is_one_line_with_the_command_to_start_it_on_every_page(offline_ui):
    window = {"workflow": "example", "start": "2024-01-01T00:00:00Z", "stop": "2024-01-02T00:00:00Z",
              "step": "0 * * * *"}
    grid = requests.get(with_path(offline_ui, "/", **window), timeout=60)
    overview = requests.get(offline_ui, timeout=60)
    backfill = requests.get(with_path(offline_ui, "/backfill", id="a8a5aa60"), timeout=60)
    assert (grid.status_code, overview.status_code, backfill.status_code) == (502, 200, 502)
    for answer in (grid, overview, backfill):
        assert re.search(r"cannot reach http://127\.0\.0\.1:[0-9]+ \(connection refused\): the local stack in \S+ "
                         r"is not running; start it with: python -m localcloud up", answer.text), answer.text
        assert "HTTPConnectionPool" not in answer.text and "Max retries" not in answer.text
    # The grid's error keeps what was asked in the form.
    assert 'name="step" size="12" value="0 * * * *"' in grid.text


# --- the page in Chromium, on the local stack ------------------------------------------------------
SLEEP = 20           # seconds each run of the window sleeps: long enough to see one running, even on a busy machine
WINDOW = {"start": "2024-03-01T00:00:00Z", "stop": "2024-03-03T00:00:00Z", "step": "0 */6 * * *"}


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def stack_ui(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    stack = local_stack.start(state, jobs=[], api_log=lambda entry: None, scheduler_log=lambda entry: None)
    try:
        # endpoints.json exactly as `python -m localcloud up` writes it (docs/localcloud.md).
        (state / "endpoints.json").write_text(json.dumps(local_up.endpoints(stack)))
        process, url = start_ui(state)
        yield stack, state, url
        stop_ui(process)
    finally:
        stack.stop()


def start_runs(stack, times: list[str], params: dict) -> list[dict]:
    """Start `example` for `times` through the proxy, as Cloud Scheduler or a backfill would."""
    answer = requests.post(stack.proxy_path("example"), params={"timezone": "UTC"}, timeout=30,
                           json=[{**params, "scheduleTime": t} for t in times])
    assert answer.status_code == 200, answer.text
    return answer.json()["executions"]


def wfr_status(state: Path, params: dict) -> dict:
    done = subprocess.run([*WFR, "status", "example", "--local-state", str(state), *sum(([f"--{k}", v] for k, v in WINDOW.items()), []),
                           "--params", json.dumps(params), "--format", "json"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode in (0, 3, 4, 5), done.stderr
    return json.loads(done.stdout)


def cells(page) -> dict[str, str]:
    return page.eval_on_selector_all(".cell", "cs => Object.fromEntries(cs.map(c => [c.dataset.time, c.dataset.state]))")


@pytest.mark.timeout(300)  # runs sleep SLEEP seconds, three times over
def test_the_grid_shows_what_wfr_status_says_and_rerun_failed_changes_it(stack_ui, browser):
    stack, state, url = stack_ui
    # The times as the range function writes them (and the proxy passes them on): UTC as +00:00.
    times = [f"2024-03-0{d}T{h:02d}:00:00+00:00" for d in (1, 2) for h in (0, 6, 12, 18)]
    params = {"case": "ui", "sleepSeconds": SLEEP, "failFor": [times[4]]}
    # Four succeed and one fails; once they have ended one more starts and is still running
    # while the page is read; the last two are never started (missing).
    for run in start_runs(stack, times[:5], params):
        stack.api.executions.wait(run["name"], timeout=60)
    running = start_runs(stack, times[5:6], params)[0]["name"]

    page = browser.new_page(viewport={"width": 1280, "height": 720})
    selection = {"workflow": "example", **WINDOW, "params": json.dumps(params)}
    page.goto(with_path(url, "/", **selection))
    shown = cells(page)
    expected = wfr_status(state, params)
    assert shown == {t["scheduleTime"]: t["state"] for t in expected["times"]}
    assert shown == {**dict.fromkeys(times[:4], "succeeded"), times[4]: "failed", times[5]: "running",
                     times[6]: "missing", times[7]: "missing"}
    totals = page.eval_on_selector_all("[data-total]", "ts => Object.fromEntries(ts.map(t => [t.dataset.total, +t.querySelector('b').textContent]))")
    assert totals == expected["totals"]
    assert page.locator(".row").count() == 2  # a row per day

    # A cell shows its execution, attempts, duration and error.
    page.click(f'.cell[data-time="{times[4]}"]')
    detail = page.eval_on_selector_all("#detail dd", "ds => Object.fromEntries(ds.map(d => [d.dataset.field, d.textContent]))")
    failed_run = next(t for t in expected["times"] if t["state"] == "failed")
    assert detail["execution"] == failed_run["execution"] and detail["attempts"] == "1"
    assert "example failed on purpose for " + times[4] in detail["error"]
    assert re.fullmatch(r"[0-9]+\.[0-9] s", detail["duration"]) and float(detail["duration"][:-2]) >= SLEEP
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "wfr-ui-grid.png"), full_page=True)

    # Re-run failed: first the dry run and the equivalent command, then confirm.
    page.click('button[data-action="rerun"]')
    page.wait_for_selector('section[data-plan="rerun"]')
    command = page.inner_text("pre.command")
    assert command.startswith("wfr rerun example --failed --start 2024-03-01T00:00:00Z") and "--local" in command
    assert page.inner_text("ul.items").strip().startswith(times[4])
    page.click("text=Back")
    assert cells(page) == shown  # the dry run started nothing
    page.click('button[data-action="rerun"]')
    page.wait_for_selector('section[data-plan="rerun"]')
    page.click('button[data-confirm="rerun"]')
    page.wait_for_selector(".notice")
    assert page.inner_text(".notice") == "1 of 1 re-run"
    rerun_cell = page.locator(f'.cell[data-time="{times[4]}"]')
    assert rerun_cell.get_attribute("data-state") == "running" and rerun_cell.get_attribute("data-attempts") == "2"
    again = next(t for t in wfr_status(state, params)["times"] if t["scheduleTime"] == times[4])
    assert (again["attempts"], again["execution"]) == (2, rerun_cell.get_attribute("data-execution"))
    assert again["execution"] != failed_run["execution"]
    page.screenshot(path=str(ARTIFACTS / "wfr-ui-rerun.png"), full_page=True)

    # Live refresh: without reloading, the running time turns succeeded once its run ends.
    stack.api.executions.wait(running, timeout=60)
    page.wait_for_selector(f'.cell[data-time="{times[5]}"][data-state="succeeded"]', timeout=30_000)
    page.close()


def test_the_browser_is_refused_without_the_token(stack_ui, browser):
    _, _, url = stack_ui
    page = browser.new_page()
    answer = page.goto(with_path(url, "/", token=None))
    assert answer.status == 403 and "token" in page.inner_text("body")
    assert page.locator(".cell").count() == 0
    page.close()


@pytest.mark.timeout(300)
def test_backfill_missing_then_cancel_it_from_the_page(stack_ui, browser):
    stack, state, url = stack_ui
    params = {"case": "ui-backfill", "sleepSeconds": SLEEP}
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(with_path(url, "/", workflow="example", **WINDOW, params=json.dumps(params)))
    assert set(cells(page).values()) == {"missing"}

    page.fill('form.action input[name="concurrency"]', "2")
    page.click('button[data-action="backfill"]')
    page.wait_for_selector('section[data-plan="backfill"]')
    assert page.inner_text("pre.command").startswith(
        "wfr backfill start example --start 2024-03-01T00:00:00Z --stop 2024-03-03T00:00:00Z --step '0 */6 * * *'")
    assert "--concurrency 2 --local" in page.inner_text("pre.command")
    assert "8 would start" in page.inner_text(".plan")
    page.click('button[data-confirm="backfill"]')
    page.wait_for_selector(".notice")
    backfill_id = re.fullmatch(r"backfill (\S+) started", page.inner_text(".notice"))[1]
    row = page.locator(f'tr[data-backfill="{backfill_id}"]')
    assert row.get_attribute("data-backfill-state") == "ACTIVE"
    # Its progress, live: runs appear in the grid and in the row's counts without a reload.
    page.wait_for_selector('.cell[data-state="running"]', timeout=30_000)
    # expect polls from outside the page (a polled wait_for_function is an eval, which the page's CSP refuses).
    from playwright.sync_api import expect
    expect(row.locator(".counts")).to_have_attribute("data-counts", re.compile(r"started [2-8], .* running [1-8]"),
                                                     timeout=30_000)
    expect(row.locator(".bar")).to_have_attribute("data-planned", "8")
    expect(row.locator(".seg.running")).to_have_count(1)
    # Another backfill of this very window would duplicate it: disabled, with the reason.
    expect(page.locator('button[data-action="backfill"]')).to_be_disabled()
    expect(page.locator('[data-reason="backfill"]')).to_have_text(f"backfill {backfill_id[:8]} of this window is running")
    page.screenshot(path=str(ARTIFACTS / "wfr-ui-backfill.png"), full_page=True)

    page.check(f'tr[data-backfill="{backfill_id}"] input[name="runs"]')
    page.click(f'tr[data-backfill="{backfill_id}"] button[data-action="cancel"]')
    page.wait_for_selector('section[data-plan="cancel"]')
    assert page.inner_text("pre.command") == f"wfr backfill cancel {backfill_id} --runs --local-state {state}"
    page.click('button[data-confirm="cancel"]')
    page.wait_for_selector(".notice")
    assert re.fullmatch(r"cancelled [1-9][0-9]* backfill execution\(s\) and [1-9][0-9]* run\(s\)", page.inner_text(".notice"))
    assert page.locator(f'tr[data-backfill="{backfill_id}"]').get_attribute("data-backfill-state") == "CANCELLED"
    shown = cells(page)
    assert "cancelled" in shown.values() and "running" not in shown.values()
    assert shown == {t["scheduleTime"]: t["state"] for t in wfr_status(state, params)["times"]}
    page.close()
