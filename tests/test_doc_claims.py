"""What the docs promise, checked against what the code does.

- The least-privilege table of docs/deploy.md, row by row, against the grants deploy.sh plans and
  the Pulumi component declares (tests/deploy_plan.py reads both into one shape).
- Numbers the docs quote from the code (limits, defaults, deadlines, roles), each against the
  constant it quotes.
- Guarantees (exactly one, never, at most, always): each one listed here names the test that
  checks it, in the doc beside it, and that test exists.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.deploy_plan import plan_of_dry_run
from tests.serving import load_module
from tests.test_pulumi_parity import PLACEHOLDER_URL, dry_run_output, offline_cloud, pulumi_plan
from workflows_runner import batch, exits, status
from workflows_runner_pulumi import spec

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# ---- the least-privilege table --------------------------------------------------------------

PROJECT, OTHER, PREFIX = "demo-proj", "data-proj", spec.DEFAULT_PREFIX
OPERATORS = ("user:ana@example.com", "group:ops@example.com")
SCENARIO = dict(project=PROJECT, region="europe-west1", allowed=f"{PROJECT}/europe-west1/*,{OTHER}/us-east1/etl",
                operators=",".join(OPERATORS), jobs=[])
OPERATOR_ROW = "`--operators` principals"
GRANT = re.compile(r"(`[^`]+`) on (the project|other projects|the bucket, `(runs|backfills|alerts)/` only|the bucket|`PREFIX-[a-z]+`)")


def least_privilege_rows() -> dict[str, dict[str, str]]:
    """docs/deploy.md's table under "### Least privilege", by its Principal cell."""
    text = (DOCS / "deploy.md").read_text()
    section = text[text.index("### Least privilege"):]
    section = section[:section.index("\n\n", section.index("| Principal"))]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split(" | ")]
    assert header == ["Principal", "Calls it makes", "Permissions they need", "Grant"], header
    rows = {}
    for line in lines[2:]:  # after the header and its --- row
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        assert len(cells) == 4, line
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def documented_grants(cell: str) -> set[str]:
    if cell == "none":
        return set()
    items = [item.strip() for item in cell.split(";")]
    assert all(GRANT.fullmatch(item) for item in items), f"grants are written '`ROLE` on WHERE': {items}"
    return set(items)


def planned_grants(plan) -> dict[str, set[str]]:
    """The plan's grants, written as the table writes them: PREFIX for the prefix, where by kind."""
    underscored = PREFIX.replace("-", "_")
    rows: dict[str, set[str]] = {f"`{account.replace(PREFIX, 'PREFIX', 1)}`": set() for account in plan.accounts}
    rows[OPERATOR_ROW] = set()
    for kind, resource, role, who, condition in plan.grants:
        row = OPERATOR_ROW if who in OPERATORS else f"`{who.replace(PREFIX, 'PREFIX', 1)}`"
        if role.startswith("projects/"):
            role = role.rsplit("/", 1)[1].replace(underscored, "PREFIX", 1)
        if kind == "project":
            where = "the project" if resource == PROJECT else "other projects"
        elif kind == "bucket":
            assert resource == spec.runs_bucket(PROJECT, PREFIX)
            prefixes = [prefix for prefix, title in spec.CONDITION_TITLES.items()
                        if condition == f"{spec.prefix_condition(resource, prefix)} [{title}]"]
            assert condition == "" or len(prefixes) == 1, condition
            where = f"the bucket, `{prefixes[0]}` only" if condition else "the bucket"
        else:
            where = f"`{resource.replace(PREFIX, 'PREFIX', 1)}`"
        rows[row].add(f"`{role}` on {where}")
    return rows


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    dry_run = plan_of_dry_run(dry_run_output(offline_cloud(tmp_path_factory.mktemp("plan")), SCENARIO), PLACEHOLDER_URL)
    return {"deploy.sh": dry_run, "Pulumi": pulumi_plan(SCENARIO)}


@pytest.mark.parametrize("source", ["deploy.sh", "Pulumi"])
def test_the_least_privilege_table_is_what_is_granted(plans, source):
    rows = least_privilege_rows()
    planned = planned_grants(plans[source])
    assert set(rows) == set(planned), f"docs/deploy.md's rows vs the accounts {source} creates (and operators)"
    for principal, grants in planned.items():
        assert documented_grants(rows[principal]["Grant"]) == grants, f"{principal}: the table vs {source}"


def test_each_custom_role_holds_what_its_rows_say_they_need(plans):
    rows = least_privilege_rows()
    underscored = PREFIX.replace("-", "_")
    for name, role in plans["deploy.sh"].roles.items():
        label = "`" + name.rsplit("/", 1)[1].replace(underscored, "PREFIX", 1) + "`"
        holders = [row for row in rows.values() if label in row["Grant"]]
        assert holders, f"{label} is created but granted in no row"
        for row in holders:
            needed = set(re.findall(r"`([a-z]+\.[a-zA-Z.]+)`", row["Permissions they need"]))
            assert set(role.permissions) <= needed, (row["Principal"], role.permissions)
        # ... and the paragraph under the table lists them too.
        text = (DOCS / "deploy.md").read_text()
        sentence = re.search(re.escape(label) + r"\s+holds([^;]*)", text)
        assert sentence, f"docs/deploy.md does not say what {label} holds"
        for permission in role.permissions:
            assert f"`.{permission.rsplit('.', 1)[1]}`" in sentence[1] or f"`{permission}`" in sentence[1], permission


def test_the_prefixes_of_the_conditions_are_where_the_pieces_write():
    assert load_module("proxy", "ledger").PREFIX + "/" == spec.LEDGER_PREFIX == "runs/"
    assert "runs/PROJECT/LOCATION/WORKFLOW/INSTANT/DIGEST/ATTEMPT" in (DOCS / "ledger.md").read_text()
    # The backfill's hand-overs: every object name backfill.yaml writes or reads starts so.
    backfill = (ROOT / "workflows" / "backfill.yaml").read_text()
    assert '"backfills/"' in backfill and spec.HANDOVER_PREFIX == "backfills/"
    assert "`backfills/ID/N.json` and `backfills/ID/N.claim`" in (DOCS / "backfill.md").read_text()


# ---- numbers the docs quote from the code ---------------------------------------------------

def constant(function: str, module: str, name: str):
    """A module-level constant of a function's source, read without importing it."""
    tree = ast.parse((ROOT / "functions" / function / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return eval(compile(ast.Expression(node.value), module, "eval"))  # literal arithmetic only
    raise AssertionError(f"{name} not in functions/{function}/{module}.py")


def mib(n: int) -> str:
    assert n % (1024 * 1024) == 0
    return f"{n // (1024 * 1024)} MiB"


def kb(n: int) -> str:
    assert n % 1024 == 0
    return f"{n // 1024} KB"


def seconds(value: float) -> str:
    return f"{value:g} s"


DEPLOY_SH = (ROOT / "deploy.sh").read_text()
QUOTED = [
    # (document, text it must contain, where the value comes from)
    *[(doc, f"| body arrival | {seconds(constant(f, 'request_limits', 'BODY_IDLE_SECONDS'))} of silence, "
            f"{seconds(constant(f, 'request_limits', 'BODY_SECONDS'))} in all", f)
      for doc, f in (("range.md", "range"), ("proxy.md", "proxy"))],
    ("proxy.md", f"| body | {mib(constant('proxy', 'main', 'MAX_BODY_BYTES'))} (Content-Length or chunked)", "MAX_BODY_BYTES"),
    ("proxy.md", f"At most {mib(constant('proxy', 'main', 'MAX_BODY_BYTES'))} (413 beyond)", "MAX_BODY_BYTES"),
    ("range.md", f"| body | {kb(constant('range', 'main', 'MAX_BODY'))} (Content-Length or chunked)", "MAX_BODY"),
    ("proxy.md", f"(at most {constant('proxy', 'main', 'MAX_ELEMENTS')} objects, 413 beyond)", "MAX_ELEMENTS"),
    ("proxy.md", f"nest at most {constant('proxy', 'main', 'MAX_DEPTH')} deep", "MAX_DEPTH"),
    ("range.md", f"at most **{constant('range', 'main', 'MAX_ITEMS'):,}** times", "MAX_ITEMS"),
    ("range.md", f"at most {constant('range', 'main', 'MAX_TOKEN')} characters", "MAX_TOKEN"),
    ("cli.md", f"one call per {constant('range', 'main', 'MAX_ITEMS'):,} times", "MAX_ITEMS"),
    ("cli.md", f"at most {status.WRITE_BACK:,} a status", "status.WRITE_BACK"),
    ("cli.md", f"there are more than {status.BULK_THRESHOLD}", "status.BULK_THRESHOLD"),
    ("cli.md", f"of {batch.MAX_CALLS} PATCHes", "batch.MAX_CALLS"),
    ("deploy.md", f"at most {spec.PREFIX_MAX} characters) starts every resource name", "spec.PREFIX_MAX"),
    ("deploy.md", f"attempt deadline {spec.JOB_RETRY.attempt_deadline.rstrip('s')} s, up to "
                  f"{spec.JOB_RETRY.retry_count} retries with backoff from {spec.JOB_RETRY.min_backoff.rstrip('s')} s "
                  f"to {int(spec.JOB_RETRY.max_backoff.rstrip('s')) // 60} min", "spec.JOB_RETRY"),
    ("deploy.md", f"timeout {spec.FUNCTIONS['proxy'].timeout_seconds} s", "spec.FUNCTIONS['proxy']"),
    ("deploy.md", "It runs daily at {1:02d}:{0:02d} in the\njob's zone".format(
        *map(int, spec.CATCH_UP_SCHEDULE.split()[:2])), "spec.CATCH_UP_SCHEDULE"),
    ("deploy.md", f"`--no-allow-unauthenticated`, {spec.RUNTIME})", "spec.RUNTIME"),
]


def test_the_exit_statuses_cli_md_lists_are_wfrs():
    """docs/cli.md's status exit statuses, each against the constant wfr exits with."""
    text = " ".join((DOCS / "cli.md").read_text().split())
    said = text[text.index("**Exit status**: `0` every time succeeded"):]
    said = said[:said.index("So `wfr status")]
    quoted = {int(code): meaning.strip().rstrip(".") for code, meaning in re.findall(r"`([0-9]+)` ([^;`]+)", said)}
    assert quoted == {
        exits.OK: "every time succeeded (or the window is empty)", exits.FAILED: "a time failed or was cancelled",
        exits.MISSING: "a time is missing (none failed)", exits.RUNNING: "times are still running or queued (none failed or missing)",
        exits.ERROR: "an error (bad input, a refused or failed call)", exits.USAGE: "bad usage",
        exits.INTERRUPTED: "Ctrl-C"}, quoted
    assert exits.of_totals({"failed": 1, "missing": 1}) == exits.FAILED
    assert exits.of_totals({"missing": 1, "running": 1}) == exits.MISSING
    assert exits.of_totals({"running": 1}) == exits.RUNNING and exits.of_totals({}) == exits.OK
    # A queued time is pending like a running one: not a failure, and less than a missing time.
    assert exits.of_totals({"succeeded": 3, "queued": 1}) == exits.RUNNING
    assert exits.of_totals({"missing": 1, "queued": 1}) == exits.MISSING
    assert exits.of_totals({"cancelled": 1, "queued": 1}) == exits.FAILED


@pytest.mark.parametrize("doc, text, source", QUOTED, ids=[f"{d}:{s}" for d, _, s in QUOTED])
def test_a_number_the_docs_quote_is_the_codes(doc, text, source):
    assert text in (DOCS / doc).read_text(), f"docs/{doc} should say {text!r} ({source})"


def test_deploy_sh_states_the_same_numbers_as_the_component():
    """deploy.sh is bash; the component's spec is Python: the values the docs quote, in both."""
    assert f"--timeout={spec.FUNCTIONS['proxy'].timeout_seconds}s" in DEPLOY_SH
    r = spec.JOB_RETRY
    assert (f"--attempt-deadline={r.attempt_deadline} --max-retry-attempts={r.retry_count} "
            f"--min-backoff={r.min_backoff} --max-backoff={r.max_backoff}") in DEPLOY_SH
    assert f'CATCH_UP_SCHEDULE="{spec.CATCH_UP_SCHEDULE}"' in DEPLOY_SH
    assert f"readonly RUNTIME={spec.RUNTIME}" in DEPLOY_SH
    assert f'readonly BUILD_ROLES="{" ".join(spec.BUILD_ROLES)}"' in DEPLOY_SH
    assert f'readonly LEDGER_CONDITION_TITLE="{spec.LEDGER_CONDITION_TITLE}"' in DEPLOY_SH
    # The proxy's own upstream deadline, which the function timeout outlasts (deploy.md).
    deadline = constant("proxy", "main", "DEFAULT_DEADLINE_SECONDS")
    assert deadline < spec.FUNCTIONS["proxy"].timeout_seconds
    assert f"proxy's own {deadline:g} s upstream deadline" in DEPLOY_SH


# ---- guarantees name their tests ------------------------------------------------------------

# (document, the guarantee as the doc words it, the test that checks it). The doc must name the
# test within the paragraph of the guarantee, and the test must exist.
GUARANTEES = [
    ("deploy.md", "the proxy never starts it twice", "tests/test_proxy.py::test_repeated_delivery_starts_exactly_one_execution"),
    ("deploy.md", "A dry run ends with `Dry run: nothing was changed.`, never with \"deployed\"",
     "tests/test_deploy.py::test_dry_run_changes_nothing_and_prints_what_a_real_run_does"),
    ("deploy.md", "Each piece has its own service account",
     "tests/test_doc_claims.py::test_the_least_privilege_table_is_what_is_granted"),
    ("range.md", "holds\none thread for at most 10 s", "tests/test_request_limits.py::test_a_trickled_body_is_cut_off_at_the_total_deadline"),
    ("range.md", "Every piece reads one time-zone database", "tests/test_tz_data.py"),
    ("cli.md", "**Read-only principals.**",
     "tests/test_wfr_e2e.py::test_status_answers_for_a_principal_that_may_only_read_the_ledger"),
    ("cli.md", "a record someone else changed meanwhile answers 412 in its part and keeps their\nwrite",
     "tests/test_wfr_e2e.py::test_a_concurrent_writers_newer_record_wins_over_the_write_back"),
]


def paragraph(text: str, phrase: str) -> str:
    at = text.index(phrase)
    start = text.rfind("\n\n", 0, at) + 2
    end = text.find("\n\n", at)
    return text[start:end if end >= 0 else len(text)]


def test_exists(test_id: str) -> bool:
    path, _, name = test_id.partition("::")
    file = ROOT / path
    return file.is_file() and (not name or re.search(rf"^\s*def {re.escape(name)}\(", file.read_text(), re.M) is not None)


@pytest.mark.parametrize("doc, phrase, test_id", GUARANTEES, ids=[f"{d}:{t.split('::')[-1]}" for d, _, t in GUARANTEES])
def test_a_guarantee_names_the_test_that_checks_it(doc, phrase, test_id):
    text = (DOCS / doc).read_text()
    assert phrase in text, f"docs/{doc} no longer says {phrase!r}: update GUARANTEES"
    assert test_exists(test_id), f"{test_id} does not exist"
    name = test_id.split("::")[-1].rsplit("/", 1)[-1]
    assert name in paragraph(text, phrase), f"docs/{doc}: name {name} beside {phrase!r}"


test_exists.__test__ = False  # a helper, not a test

# The strongest promises: wherever the README or a doc makes one, the paragraph (or the next)
# names the test that checks it.
EXACTLY = re.compile(r"\b(exactly once|exactly one|at most once|never twice|once and only once)\b", re.I)
TEST_FILES = sorted((ROOT / "tests").rglob("test_*.py"))


def defined_tests() -> set[str]:
    return {name for path in TEST_FILES for name in re.findall(r"^\s*def (test_\w+)\(", path.read_text(), re.M)}


def test_every_exactly_once_promise_names_a_test_that_exists():
    tests = defined_tests()
    unnamed, missing = [], []
    for doc in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        paragraphs = doc.read_text().split("\n\n")
        for index, text in enumerate(paragraphs):
            if not EXACTLY.search(text) or text.lstrip().startswith(("|", "```", "#")):
                continue
            near = text + "\n" + (paragraphs[index + 1] if index + 1 < len(paragraphs) else "")
            names = set(re.findall(r"\b(test_\w+)\b", near)) - {f.stem for f in TEST_FILES}
            files = set(re.findall(r"\b(tests/test_\w+\.py)\b", near))
            if not names and not files:
                unnamed.append(f"{doc.name}: {text[:100]!r}")
            missing += [f"{doc.name}: {n}" for n in names if n not in tests]
            missing += [f"{doc.name}: {f}" for f in files if not (ROOT / f).is_file()]
    assert not unnamed, "name the test that checks each of these promises:\n" + "\n".join(unnamed)
    assert not missing, "these named tests do not exist:\n" + "\n".join(missing)
