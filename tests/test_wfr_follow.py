"""`wfr backfill` as an operator watches it: in a pseudo-terminal of its own (so `--follow` is the
default and rich draws its live bar), Ctrl-C typed as a terminal sends it, the prompt answered on
the same terminal; and on a pipe, where it does not follow unless asked. Against
`python -m localcloud up`, with wfr in a subprocess.

The oracle is the Executions API itself (the runs labelled `backfill=<id>`, their states, one
execution per scheduled time), never wfr's own reading. The runs that must outlast an action are
held by the workflow `held` below, and released by cancelling them through the API, so no test
depends on how fast the machine is.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.wfr_stack import AUTH, ROOT, WFR, Up

STOCKHOLM = ZoneInfo("Europe/Stockholm")
DAYS = [datetime(2024, 3, d, 1, tzinfo=STOCKHOLM).isoformat() for d in range(1, 9)]


def window(days: int) -> list[str]:
    return ["--start", "2024-03-01T00:00:00", "--stop", f"2024-03-{days + 1:02d}T00:00:00",
            "--step", "0 1 * * *", "--timezone", "Europe/Stockholm"]


# The run for `hold` sleeps until it is cancelled (an hour); any other returns at once, or fails
# when its time is in `failFor`.
HELD = """
main:
  params: [input]
  steps:
    - hold:
        switch:
          - condition: ${input.scheduleTime == input.hold}
            steps:
              - sleep:
                  call: sys.sleep
                  args:
                    seconds: 3600
    - check:
        switch:
          - condition: ${input.scheduleTime in input.failFor}
            raise: ${"failed on purpose [/for] " + input.scheduleTime}
    - done:
        return: ${input.scheduleTime}
"""
ANSI = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|\][^\x07]*\x07|[=>])")
REDRAW = re.compile(r"\x1b\[[0-9]*[AK]")   # cursor up, erase line: the live bar drawn again
# The bar's text (commands._follow, render.progress_line).
PROGRESS = re.compile(r"(?P<done>[0-9]+)/(?P<total>[0-9]+) done · planned (?P<planned>[0-9]+), "
                      r"started (?P<started>[0-9]+), skipped (?P<skipped>[0-9]+), failed (?P<failed>[0-9]+), "
                      r"running (?P<running>[0-9]+) · (?P<rate>-|[0-9]+\.[0-9]) times/s · ETA (?P<eta>-:--:--|[0-9]+:[0-9]{2}:[0-9]{2})")
PROMPT = re.compile(r"\[c\]ancel backfill (?P<id>\S+), cancel it and its \[r\]unning runs, "
                    r"or \[d\]etach and let it go on\? \[d\]")


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workflows")
    (folder / "held.yaml").write_text(HELD)
    stack = Up(tmp_path_factory.mktemp("state"), folder)
    yield stack
    stack.stop()


class Terminal:
    """A command on a pseudo-terminal that is its controlling terminal, as a shell runs it: rich
    sees a terminal, and \\x03 typed on it reaches the command as SIGINT through the line
    discipline, like Ctrl-C."""

    def __init__(self, argv: list[str], columns: int = 150):
        self.main, child = os.openpty()
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))   # rows, columns

        def own_terminal() -> None:   # in the child, after setsid (start_new_session)
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(argv, stdin=child, stdout=child, stderr=child, cwd=ROOT,
                                        start_new_session=True, preexec_fn=own_terminal,
                                        env={**os.environ, "COLUMNS": str(columns), "LINES": "40",
                                             "TERM": "xterm-256color"})
        os.close(child)
        self.raw = b""

    @property
    def screen(self) -> str:
        """Everything written so far, without ANSI codes."""
        return ANSI.sub("", REDRAW.sub("\n", self.raw.decode(errors="replace")))

    @property
    def lines(self) -> list[str]:
        """Each line as it was drawn: each redraw of the live bar counts as a line of its own."""
        return [line.strip() for line in re.split(r"[\r\n]+", self.screen) if line.strip()]

    def _read(self, timeout: float) -> bool:
        """Read what is there within `timeout`; False at the end of the output."""
        if select.select([self.main], [], [], timeout)[0]:
            try:
                chunk = os.read(self.main, 65536)
            except OSError:   # EIO: the command exited and closed the terminal
                return False
            self.raw += chunk
            return bool(chunk)
        return True

    def expect(self, pattern: re.Pattern, where=lambda match: True, timeout: float = 90) -> re.Match:
        """The newest line matching `pattern` (and `where`), once one is drawn."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in map(pattern.search, self.lines) if m and where(m)]
            if found:
                return found[-1]
            if time.monotonic() > deadline or not self._read(0.2):
                raise AssertionError(f"no {pattern.pattern!r} in:\n{self.screen[-3000:]}")

    def type(self, text: str) -> None:
        os.write(self.main, text.encode())

    def finish(self, timeout: float = 90) -> int:
        """Its exit status, once it wrote everything and ended."""
        deadline = time.monotonic() + timeout
        while self._read(0.2) and time.monotonic() < deadline:
            pass
        return self.process.wait(max(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self.process.poll() is None:   # a test that failed half-way
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self.main)


@pytest.fixture
def terminal(up):
    """wfr ARGS... --local-state STATE on a terminal of its own."""
    opened = []

    def run(*args: str, columns: int = 150) -> Terminal:
        opened.append(Terminal([str(WFR), *args, "--local-state", str(up.state)], columns))
        return opened[-1]
    yield run
    for term in opened:
        term.close()


PIPE_ENV = {key: value for key, value in os.environ.items() if key not in ("COLUMNS", "LINES")}


def on_a_pipe(up: Up, *args: str) -> subprocess.CompletedProcess:
    """wfr with its output piped, as a script or a CI log has it, without the COLUMNS that
    readline (imported by pytest) or xdist export."""
    return subprocess.run([str(WFR), *args, "--local-state", str(up.state)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=PIPE_ENV)


def labelled(up: Up, workflow_id: str, backfill_id: str) -> list[dict]:
    return [r for r in up.executions(workflow_id) if (r.get("labels") or {}).get("backfill") == backfill_id]


def execution(up: Up, name: str) -> dict:
    return requests.get(f"{up.endpoints['api']}/v1/{name}", headers=AUTH, timeout=30).json()


def backfill_name(up: Up, backfill_id: str) -> str:
    return f"{up.workflow(up.endpoints['backfillWorkflow'])}/executions/{backfill_id}"


def cancel(up: Up, name: str) -> None:
    assert requests.post(f"{up.endpoints['api']}/v1/{name}:cancel", headers=AUTH, timeout=30).status_code == 200


def wait_for(condition, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def held_run(up: Up, backfill_id: str) -> dict:
    """The backfill's held run, once it started."""
    return wait_for(lambda: next((r for r in labelled(up, "held", backfill_id) if r["state"] == "ACTIVE"), None),
                    f"the held run of {backfill_id}")


SUMMARY_ROWS = ("backfill", "workflow", "outcome", "state", "window", "links", "created", "ended", "planned", "started",
                "skipped", "failed", "running")


def summary(lines: list[str]) -> dict[str, str]:
    """The last summary table (commands._print_backfill): its rows, in order, as a dict."""
    rows = [line.strip().split(None, 1) for line in lines]
    first = max(i for i, row in enumerate(rows) if row[:1] == ["backfill"] and rows[i + 1][:1] == ["workflow"])
    table = dict(row for row in rows[first:first + len(SUMMARY_ROWS)] if len(row) == 2)
    assert list(table) == list(SUMMARY_ROWS), lines[first:]
    return table


def show(up: Up, backfill_id: str) -> dict:
    done = on_a_pipe(up, "backfill", "show", backfill_id, "--format", "json")
    shown = json.loads(done.stdout)
    # docs/cli.md: show's exit status follows the outcome.
    assert done.returncode == {"succeeded": 0, "failed": 3, "error": 3, "cancelled": 3, "running": 5}[shown["outcome"]]
    return shown


def test_follow_draws_the_counts_rate_and_eta_then_the_summary(up, terminal):
    """8 times: 2 ran before (skipped); 6 start, two at a time: one fails, and the last is held
    until the test has seen the bar with a rate and an ETA, then cancelled (a run that ended badly)."""
    params = {"case": "bar", "hold": DAYS[7], "failFor": [DAYS[4]]}
    for day in DAYS[:2]:
        assert up.post_run("held", {**params, "scheduleTime": day}, timezone="Europe/Stockholm").status_code == 200
    up.settle("held")
    term = terminal("backfill", "start", "held", *window(8), "--params", json.dumps(params), "--concurrency", "2")
    backfill_id = term.expect(re.compile(r"^backfill (\S+) started$"))[1]
    # Once all but the held run ended (it keeps the backfill going): the counts, a rate, an ETA.
    paced = term.expect(PROGRESS, lambda m: (m["started"], m["running"]) == ("6", "1") and m["eta"] != "-:--:--")
    assert (paced["total"], paced["planned"], paced["failed"]) == ("8", "8", "1")
    assert int(paced["done"]) >= 5 and float(paced["rate"]) > 0
    cancel(up, held_run(up, backfill_id)["name"])
    assert term.finish() == 3   # a time failed
    last = [m for m in map(PROGRESS.search, term.lines) if m][-1]   # the bar at the end
    assert (last["done"], last["started"], last["skipped"], last["failed"], last["running"]) == ("8", "6", "2", "2", "0")
    table = summary(term.lines)
    runs = labelled(up, "held", backfill_id)
    assert {key: table[key] for key in ("backfill", "workflow", "outcome", "state", "planned", "started", "skipped", "failed",
                                        "running")} == {
        "backfill": backfill_id, "workflow": up.workflow("held"), "outcome": "failed", "state": "SUCCEEDED", "planned": str(len(DAYS)),
        "started": str(len(runs)), "skipped": "2", "failed": str(sum(r["state"] != "SUCCEEDED" for r in runs)),
        "running": "0"}
    assert sorted(r["state"] for r in runs) == ["CANCELLED", "FAILED"] + ["SUCCEEDED"] * 4
    assert "Traceback" not in term.screen


def test_ctrl_c_then_detach_leaves_the_backfill_going(up, terminal):
    params = {"case": "detach", "hold": DAYS[0], "failFor": []}
    term = terminal("backfill", "start", "held", *window(3), "--params", json.dumps(params))
    backfill_id = term.expect(re.compile(r"^backfill (\S+) started$"))[1]
    term.expect(PROGRESS, lambda m: m["started"] == "1")   # the held run started
    term.type("\x03")
    assert term.expect(PROMPT)["id"] == backfill_id
    term.type("d\n")
    assert term.finish() == 0
    assert f"Follow it again with: wfr backfill show {backfill_id} --follow" in term.screen
    assert execution(up, backfill_name(up, backfill_id))["state"] == "ACTIVE"
    [run] = labelled(up, "held", backfill_id)
    assert run["state"] == "ACTIVE" and json.loads(run["argument"])["scheduleTime"] == DAYS[0]
    cancelled = on_a_pipe(up, "backfill", "cancel", backfill_id, "--runs")
    assert cancelled.returncode == 0, cancelled.stderr
    assert execution(up, backfill_name(up, backfill_id))["state"] == "CANCELLED"
    assert execution(up, run["name"])["state"] == "CANCELLED"


@pytest.mark.parametrize("answer, held_state", [("c", "ACTIVE"), ("r", "CANCELLED")])
def test_ctrl_c_then_cancel_and_resume(up, terminal, answer, held_state):
    """[c]ancel leaves the run it started running, [r] cancels it too; either way the summary is
    still readable, and the same backfill started again starts only the times not run yet."""
    params = {"case": f"cancel-{answer}", "hold": DAYS[0], "failFor": []}
    args = ["held", *window(4), "--params", json.dumps(params)]
    term = terminal("backfill", "start", *args)
    backfill_id = term.expect(re.compile(r"^backfill (\S+) started$"))[1]
    term.expect(PROGRESS, lambda m: m["started"] == "1")   # the held run started
    term.type("\x03")
    term.expect(PROMPT)
    term.type(f"{answer}\n")
    assert term.finish() == 130
    assert f"cancelled 1 backfill execution(s) and {int(answer == 'r')} run(s)" in term.screen
    assert summary(term.lines)["state"] == "CANCELLED"
    assert execution(up, backfill_name(up, backfill_id))["state"] == "CANCELLED"
    [run] = labelled(up, "held", backfill_id)
    assert json.loads(run["argument"])["scheduleTime"] == DAYS[0] and run["state"] == held_state

    shown = show(up, backfill_id)   # from the runs' labels: the cancelled backfill has no result
    assert shown["state"] == "CANCELLED" and shown["result"] is None
    assert shown["progress"] == {"planned": 4, "started": 1, "skipped": 0, "failed": int(answer == "r"),
                                 "notStarted": 0, "running": int(answer == "c")}
    assert shown["outcome"] == "cancelled"

    resumed = on_a_pipe(up, "backfill", "start", *args, "--concurrency", "3")   # reprocess none, on a pipe: not followed
    assert resumed.returncode == 0, resumed.stderr
    second = re.fullmatch(r"backfill (\S+) started; follow it with: wfr backfill show \1 --follow\n",
                          resumed.stdout)[1]
    wait_for(lambda: show(up, second)["state"] != "ACTIVE", "the resumed backfill's end")
    assert sorted(json.loads(r["argument"])["scheduleTime"] for r in labelled(up, "held", second)) == DAYS[1:4]
    assert show(up, second)["progress"] == {"planned": 4, "started": 3, "skipped": 1, "failed": 0, "notStarted": 0, "running": 0}
    mine = [json.loads(r["argument"])["scheduleTime"] for r in up.executions("held")
            if json.loads(r["argument"])["case"] == params["case"]]
    assert sorted(mine) == DAYS[:4]   # each time ran once: nothing started twice
    if held_state == "ACTIVE":
        cancel(up, run["name"])


def test_on_a_pipe_it_starts_and_returns_unless_asked_to_follow(up):
    params = {"case": "pipe", "hold": DAYS[0], "failFor": []}
    started = on_a_pipe(up, "backfill", "start", "held", *window(2), "--params", json.dumps(params))
    assert started.returncode == 0, started.stderr
    backfill_id = re.fullmatch(r"backfill (\S+) started; follow it with: wfr backfill show \1 --follow\n",
                               started.stdout)[1]
    assert execution(up, backfill_name(up, backfill_id))["state"] == "ACTIVE"
    # Followed again, on a pipe: plain text, and the exit status once it ends (the held run
    # cancelled: a time failed).
    follow = subprocess.Popen([str(WFR), "backfill", "show", backfill_id, "--follow", "--local-state", str(up.state)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=PIPE_ENV)
    held = held_run(up, backfill_id)
    assert follow.poll() is None   # following: the held run keeps the backfill going
    cancel(up, held["name"])
    out, err = follow.communicate(timeout=90)
    assert follow.returncode == 3, err
    assert "\x1b" not in out and summary(out.splitlines())["failed"] == "1"


@pytest.mark.parametrize("fail, status", [([], 0), ([DAYS[1]], 3)])
def test_follow_on_a_pipe_ends_with_the_documented_exit_status(up, fail, status):
    """docs/cli.md: 0 when every time succeeded, 3 when a time failed."""
    params = {"case": f"pipe-follow-{len(fail)}", "hold": "never", "failFor": fail}
    done = on_a_pipe(up, "backfill", "start", "held", *window(3), "--params", json.dumps(params), "--concurrency", "3", "--follow")
    assert done.returncode == status, done.stderr
    table = summary(done.stdout.splitlines())
    assert (table["state"], table["planned"], table["started"], table["failed"]) == ("SUCCEEDED", "3", "3", str(len(fail)))
    # The failed time's error as the run raised it, brackets and all: data, not rich markup.
    failed = on_a_pipe(up, "status", "held", *window(3), "--params", json.dumps(params), "--only", "failed")
    assert failed.returncode == status and "Traceback" not in failed.stderr, failed.stderr
    assert all(f"failed on purpose [/for] {day}" in failed.stdout for day in fail)


# At 80 columns the bar goes first; the counts and the ETA stay (render.progress_line).
NARROW = re.compile(r"(?P<done>[0-9]+)/(?P<planned>[0-9]+) · started (?P<started>[0-9]+), skipped [0-9]+, "
                    r"failed (?P<failed>[0-9]+), running (?P<running>[0-9]+) · ETA (?P<eta>-:--:--|[0-9]+:[0-9]{2}:[0-9]{2})")


def test_follow_at_80_columns_keeps_the_counts_and_the_eta(up, terminal):
    params = {"case": "narrow", "hold": "never", "failFor": [DAYS[1]]}
    term = terminal("backfill", "start", "held", *window(3), "--params", json.dumps(params), "--concurrency", "3",
                    columns=80)
    assert term.finish() == 3
    drawn = [line for line in term.lines if NARROW.search(line)]
    assert drawn and all(len(line) <= 80 for line in drawn)
    last = NARROW.search(drawn[-1])
    assert (last["done"], last["planned"], last["started"], last["failed"], last["running"]) == ("3", "3", "3", "1", "0")
    assert not any(PROGRESS.search(line) for line in term.lines)   # the wide line never drawn cut
