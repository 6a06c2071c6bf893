"""`wfr ui`'s pages in Debian's Chromium (Playwright's executable_path, never a download) against
the local stack: the overview, a backfill's page, the month calendar, the re-run of one time, a
broken backfill beside a healthy grid, and the form kept after an error. The oracles are
`wfr status --format json` and the Executions API. Each page is also saved as a screenshot at
1400x1000 and at a phone's 390x844 under .artifacts/."""
from __future__ import annotations

import base64
import json
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from localcloud import stack as local_stack
from localcloud import up as local_up
from tests.test_wfr_ui import ARTIFACTS, PARENT, ROOT, WFR, browser, start_ui, stop_ui, with_path  # noqa: F401
from tests.waiting_records import write_waiting

AUTH = {"Authorization": "Bearer localcloud"}
ZONE = "Europe/Stockholm"
MARCH = [f"2024-03-{d:02d}T01:00:00+01:00" for d in range(1, 32)]
SIZES = {"wide": {"width": 1400, "height": 1000}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def stack_ui(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    stack = local_stack.start(state, jobs=[], api_log=lambda entry: None, scheduler_log=lambda entry: None)
    try:
        (state / "endpoints.json").write_text(json.dumps(local_up.endpoints(stack)))
        process, url = start_ui(state)
        yield stack, state, url
        stop_ui(process)
    finally:
        stack.stop()


def wfr(state, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*WFR, *args, "--local-state", str(state)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def start_runs(stack, times: list[str], params: dict) -> list[dict]:
    answer = requests.post(stack.proxy_path("example"), params={"timezone": ZONE}, timeout=30,
                           json=[{**params, "scheduleTime": t} for t in times])
    assert answer.status_code == 200, answer.text
    runs = answer.json()["executions"]
    for run in runs:
        stack.api.executions.wait(run["name"], timeout=60)
    return runs


def executions_of(stack, when: str, params: dict) -> list[dict]:
    """From the Executions API alone: the executions of `example` for one time and params."""
    found, query = [], {"view": "FULL", "pageSize": 100}
    while True:
        page = requests.get(f"{stack.api.url}/v1/{PARENT}/example/executions", params=query, headers=AUTH,
                            timeout=30).json()
        found += [e for e in page.get("executions", []) if json.loads(e["argument"]) == {**params, "scheduleTime": when}]
        if not page.get("nextPageToken"):
            return found
        query["pageToken"] = page["nextPageToken"]


def shoot(browser, url: str, name: str) -> None:
    """The page at both sizes, for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    for size, viewport in SIZES.items():
        page = browser.new_page(viewport=viewport)
        page.goto(url)
        page.screenshot(path=str(ARTIFACTS / f"wfr-ui-{name}-{size}.png"), full_page=True)
        # Nothing wider than the screen but the grids, which scroll in their own box.
        if size == "phone":
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"] + 1, name
        page.close()


def cells(page) -> dict[str, str]:
    return page.eval_on_selector_all(".cell", "cs => Object.fromEntries(cs.map(c => [c.dataset.time, c.dataset.state]))")


def month_window(params: dict) -> dict[str, str]:
    return {"workflow": "example", "start": "2024-03-01T00:00:00", "stop": "2024-04-01T00:00:00",
            "step": "0 1 * * *", "timezone": ZONE, "params": json.dumps(params)}


@pytest.mark.timeout(240)
def test_the_overview_lists_the_jobs_with_their_recent_times_and_the_backfills(stack_ui, browser):
    stack, state, url = stack_ui
    body = {"table": "overview"}
    job = {"name": f"projects/{local_stack.PROJECT}/locations/{local_stack.LOCATION}/jobs/daily",
           "schedule": "0 1 * * *", "timeZone": ZONE,
           "httpTarget": {"uri": f"{stack.proxy_path('example')}?timezone={ZONE}", "httpMethod": "POST",
                          "body": base64.b64encode(json.dumps(body).encode()).decode()}}
    created = requests.post(f"{stack.scheduler.url}/v1/projects/{local_stack.PROJECT}/locations/"
                            f"{local_stack.LOCATION}/jobs", json=job, headers=AUTH, timeout=30)
    assert created.status_code == 200, created.text
    now = datetime.now(timezone.utc)
    window = ["--start", (now - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"), "--stop", now.strftime("%Y-%m-%dT%H:%M:%SZ")]
    started = wfr(state, "backfill", "start", "example", "--job", "daily", *window, "--no-follow", "--format", "json")
    assert started.returncode == 0, started.stderr
    backfill_id = json.loads(started.stdout)["id"]
    deadline = time.monotonic() + 60
    while json.loads(wfr(state, "backfill", "show", backfill_id, "--format", "json").stdout)["outcome"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.5)

    page = browser.new_page(viewport=SIZES["wide"])
    page.goto(url)
    row = page.locator('tr[data-job="daily"]')
    strip = row.locator(".cell").evaluate_all("cs => cs.map(c => [c.dataset.time, c.dataset.state])")
    assert len(strip) == 24
    # The oracle: wfr status over the strip's own span says the same of each time.
    status = json.loads(wfr(state, "status", "example", "--job", "daily", "--start", strip[0][0], "--stop",
                            now.strftime("%Y-%m-%dT%H:%M:%SZ"), "--format", "json").stdout)
    assert strip == [[t["scheduleTime"], t["state"]] for t in status["times"]]
    assert [s for _, s in strip][-3:] == ["succeeded"] * 3 and "missing" in {s for _, s in strip}
    assert row.get_attribute("data-job-state") == "ENABLED"
    listed = page.locator(f'tr[data-backfill="{backfill_id}"]')
    assert listed.get_attribute("data-outcome") == "succeeded"
    # A backfill opens its page; a job opens its grid (a daily schedule: this month's calendar).
    listed.locator("a").click()
    page.wait_for_selector(f'section.backfill-page[data-backfill="{backfill_id}"]')
    assert page.locator("table.runs tbody tr").count() == 3
    assert page.locator(".bar .seg.succeeded").count() == 1
    shoot(browser, page.url, "backfill")
    page.goto(url)
    page.click('tr[data-job="daily"] a')
    page.wait_for_selector(f'table.month[data-month="{now.strftime("%Y-%m")}"]')
    shoot(browser, url, "overview")
    page.close()


@pytest.mark.timeout(240)
def test_a_month_calendar_and_the_rerun_of_one_time(stack_ui, browser):
    stack, state, url = stack_ui
    params = {"case": "calendar", "failFor": [MARCH[4]]}
    start_runs(stack, MARCH[:10], params)
    page = browser.new_page(viewport=SIZES["wide"])
    page.goto(with_path(url, "/", **month_window(params)))
    assert page.locator('table.month[data-month="2024-03"] td[data-day]').count() == 31
    expected = {t["scheduleTime"]: t["state"] for t in json.loads(wfr(
        state, "status", "example", *sum(([f"--{k}", v] for k, v in month_window(params).items() if k != "workflow"), []),
        "--format", "json").stdout)["times"]}
    assert cells(page) == expected and expected[MARCH[4]] == "failed" and expected[MARCH[20]] == "missing"
    shoot(browser, page.url, "calendar")

    # A missing time cannot be re-run (it never ran), and says so.
    page.click(f'.cell[data-time="{MARCH[20]}"]')
    assert page.locator(f'button[data-rerun-time="{MARCH[20]}"]').is_disabled()
    assert "Backfill missing" in page.inner_text('[data-reason="rerun-time"]')
    # The failed one: its dry run, Back (nothing changes), then Confirm: exactly its next attempt.
    before = {when: len(executions_of(stack, when, params)) for when in MARCH[:10]}
    page.click(f'.cell[data-time="{MARCH[4]}"]')
    page.click(f'button[data-rerun-time="{MARCH[4]}"]')
    page.wait_for_selector('section[data-plan="rerun-time"]')
    assert page.inner_text("ul.items").startswith(f"{MARCH[4]} failed, attempt 1, ")
    assert page.inner_text("pre.command").startswith("wfr rerun example ")
    page.click("text=Back")
    page.wait_for_selector("table.month")
    assert cells(page) == expected
    assert {when: len(executions_of(stack, when, params)) for when in MARCH[:10]} == before
    page.click(f'.cell[data-time="{MARCH[4]}"]')
    page.click(f'button[data-rerun-time="{MARCH[4]}"]')
    page.click('button[data-confirm="rerun-time"]')
    page.wait_for_selector(".notice")
    assert page.inner_text(".notice").startswith(f"{MARCH[4]} re-run: attempt 2, ")
    after = {when: len(executions_of(stack, when, params)) for when in MARCH[:10]}
    assert after == {**before, MARCH[4]: before[MARCH[4]] + 1}
    cell = page.locator(f'.cell[data-time="{MARCH[4]}"]')
    assert cell.get_attribute("data-attempts") == "2"
    newest = max(executions_of(stack, MARCH[4], params), key=lambda e: e["createTime"])
    assert cell.get_attribute("data-execution") == newest["name"]
    page.close()


@pytest.mark.timeout(180)
def test_a_broken_backfill_beside_a_healthy_grid(stack_ui, browser):
    stack, state, url = stack_ui
    argument = {"workflow": "example", "start": "2024-03-01T00:00:00", "stop": "2024-03-02T00:00:00",
                "step": "0 1 * * *", "timezone": "Europe/Stockhlm"}
    created = requests.post(f"{stack.api.url}/v1/{PARENT}/backfill/executions",
                            json={"argument": json.dumps(argument)}, headers=AUTH, timeout=30).json()
    stack.api.executions.wait(created["name"], timeout=60)
    broken = created["name"].rsplit("/", 1)[-1]
    params = {"case": "beside"}
    start_runs(stack, MARCH[:3], params)
    page = browser.new_page(viewport=SIZES["wide"])
    page.goto(with_path(url, "/", **month_window(params)))
    assert list(cells(page).values())[:4] == ["succeeded"] * 3 + ["missing"]
    row = page.locator(f'tr[data-backfill="{broken}"]')
    assert row.get_attribute("data-outcome") == "error"
    assert "Europe/Stockhlm" in row.locator(".reason").inner_text()
    shoot(browser, page.url, "grid-beside-broken")
    row.locator("a").click()
    page.wait_for_selector(f'section.backfill-page[data-outcome="error"]')
    assert "not a known IANA time zone" in page.inner_text(".backfill-page .reason")
    shoot(browser, page.url, "broken-backfill")
    page.goto(url)
    assert page.locator(f'tr[data-backfill="{broken}"]').get_attribute("data-outcome") == "error"
    page.close()


def test_an_error_keeps_the_form_filled_in(stack_ui, browser):
    _, _, url = stack_ui
    asked = {"workflow": "example", "start": "2024-03-01T00:00:00", "stop": "2024-03-04T00:00:00",
             "step": "0 1 * * *", "timezone": "Europe/Stockhlm", "params": '{"table": "x"}'}
    page = browser.new_page(viewport=SIZES["wide"])
    answer = page.goto(with_path(url, "/", **asked))
    assert answer.status == 400
    assert "not a known IANA time zone" in page.inner_text(".error")
    kept = page.eval_on_selector_all("form.pick input[name]", "is => Object.fromEntries(is.map(i => [i.name, i.value]))")
    assert {k: kept[k] for k in asked} == asked
    # Corrected in place, the same form shows the grid.
    page.fill('form.pick input[name="timezone"]', ZONE)
    page.click('form.pick button[type="submit"]')
    page.wait_for_selector("table.month")
    shoot(browser, with_path(url, "/", **asked), "error")
    page.close()


@pytest.mark.timeout(180)
def test_a_queued_time_has_its_own_colour_symbol_and_title_and_cannot_be_rerun(stack_ui, browser):
    """A time waiting for a slot of its job (overlap=queue: ledger state WAITING, written here by
    hand as docs/ledger.md describes it) is `queued` in the cells, totals and legend, in the month
    calendar and in the hours grid, as `wfr status` says; it is not re-run from the page."""
    stack, state, url = stack_ui
    params = {"case": "queued", "failFor": [MARCH[2]]}
    start_runs(stack, MARCH[:5], params)
    for when in MARCH[5:7]:
        write_waiting(stack.storage.url, local_stack.RUNS_BUCKET, f"{PARENT}/example", when, params, timezone=ZONE)
    page = browser.new_page(viewport=SIZES["wide"])
    page.goto(with_path(url, "/", **month_window(params)))
    expected = json.loads(wfr(state, "status", "example", *sum(([f"--{k}", v] for k, v in month_window(params).items()
                                                                if k != "workflow"), []), "--format", "json").stdout)
    assert cells(page) == {t["scheduleTime"]: t["state"] for t in expected["times"]}
    assert [cells(page)[when] for when in MARCH[4:8]] == ["succeeded", "queued", "queued", "missing"]
    queued = page.locator(f'.cell[data-time="{MARCH[5]}"]')
    assert queued.inner_text() == "◷" and queued.get_attribute("data-attempts") == "1"
    assert queued.get_attribute("data-execution") == ""
    assert queued.get_attribute("title") == f"{MARCH[5]}  ◷ queued, attempt 1, -"
    totals = page.eval_on_selector_all("[data-total]", "ts => Object.fromEntries(ts.map(t => [t.dataset.total, +t.querySelector('b').textContent]))")
    assert totals == expected["totals"] and totals["queued"] == 2
    assert "◷ queued" in page.inner_text(".legend")
    # Distinct from every other state at a glance: its colours are its own.
    looks = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.legend .key')].map(k => {
        const s = getComputedStyle(k);
        return [k.className, [s.backgroundColor, s.color, s.borderTopStyle, s.borderTopColor].join()];
    }))""")
    assert len(set(looks.values())) == len(looks) == 7, looks
    assert page.get_attribute("#live", "data-live") == "1"      # refreshed until it starts or is skipped
    shoot(browser, page.url, "queued-calendar")
    # Picked, it says why it cannot be re-run; a request the page would not send is refused too.
    queued.click()
    button = page.locator(f'button[data-rerun-time="{MARCH[5]}"]')
    assert button.is_disabled() and "free slot" in page.inner_text('[data-reason="rerun-time"]')
    assert page.inner_text('#detail dd[data-field="state"]') == "◷ queued"
    page.screenshot(path=str(ARTIFACTS / "wfr-ui-queued-picked-wide.png"), full_page=True)
    before = len(executions_of(stack, MARCH[5], params))
    button.evaluate("b => b.disabled = false")
    button.click()
    page.wait_for_selector(".error")
    assert "is queued" in page.inner_text(".error")
    assert len(executions_of(stack, MARCH[5], params)) == before == 0
    page.close()

    # The hours grid (several times a day) shows it alike.
    day = [f"2024-03-02T{h:02d}:00:00+01:00" for h in (1, 7, 13, 19)]
    hourly = {"case": "queued-hours"}
    start_runs(stack, day[:2], hourly)
    write_waiting(stack.storage.url, local_stack.RUNS_BUCKET, f"{PARENT}/example", day[2], hourly, timezone=ZONE)
    window = {"workflow": "example", "start": "2024-03-01T00:00:00", "stop": "2024-03-03T00:00:00",
              "step": "0 1,7,13,19 * * *", "timezone": ZONE, "params": json.dumps(hourly)}
    page = browser.new_page(viewport=SIZES["wide"])
    page.goto(with_path(url, "/", **window))
    assert page.locator("table.hours").count() == 1
    assert [cells(page)[when] for when in day] == ["succeeded", "succeeded", "queued", "missing"]
    shoot(browser, page.url, "queued-hours")
    page.close()
