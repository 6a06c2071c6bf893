"""deploy.sh, run for real against a fake gcloud that records every call (tests/fake_gcloud)."""
import re
import shlex
import subprocess

import pytest

from tests.fake_gcloud.harness import FAKE_BIN, ROOT, TOOLS, FakeCloud, is_read_only

P, R, PRE = "demo-proj", "europe-west1", "workflows-runner"
APIS = [
    "cloudresourcemanager.googleapis.com", "iam.googleapis.com", "cloudfunctions.googleapis.com",
    "run.googleapis.com", "cloudbuild.googleapis.com", "artifactregistry.googleapis.com",
    "workflows.googleapis.com", "workflowexecutions.googleapis.com",
    "cloudscheduler.googleapis.com", "logging.googleapis.com",
]
ACCOUNTS = {"range": "range function", "proxy": "proxy function",
            "scheduler": "Cloud Scheduler jobs", "backfill": "backfill workflow"}


def sa(name, project=P, prefix=PRE):
    return f"{prefix}-{name}@{project}.iam.gserviceaccount.com"


def policy_flags(role, who):
    return ["--flatten=bindings[].members",
            f"--filter=bindings.role={role} AND bindings.members=serviceAccount:{who}",
            "--format=value(bindings.role)"]


def function_deploy(name, entry, *flags):
    return ["functions", "deploy", f"{PRE}-{name}", "--gen2", f"--region={R}", f"--project={P}",
            "--runtime=python312", f"--source=functions/{name}", f"--entry-point={entry}",
            "--trigger-http", "--no-allow-unauthenticated", f"--service-account={sa(name)}",
            *flags, "--quiet"]


RANGE_DEPLOY = function_deploy("range", "expand_range", "--clear-env-vars")
PROXY_DEPLOY = function_deploy(
    "proxy", "proxy", f"--set-env-vars=^;^GOOGLE_CLOUD_PROJECT={P};ALLOWED_WORKFLOWS={P}/{R}/*", "--timeout=120s")
RANGE_URL = f"https://{PRE}-range-fake1234-{R}.a.run.app"
PROXY_URL = f"https://{PRE}-proxy-fake1234-{R}.a.run.app"


def workflow_deploy(range_url=RANGE_URL, proxy_url=PROXY_URL):
    return ["workflows", "deploy", f"{PRE}-backfill", f"--location={R}", f"--project={P}",
            "--source=workflows/backfill.yaml", f"--service-account={sa('backfill')}",
            f"--set-env-vars=RANGE_URL={range_url},PROXY_URL={proxy_url}", "--quiet"]


def invoker_check_and_grant(function, caller):
    return [
        ["run", "services", "get-iam-policy", f"{PRE}-{function}", f"--region={R}", f"--project={P}",
         *policy_flags("roles/run.invoker", sa(caller))],
        ["functions", "add-invoker-policy-binding", f"{PRE}-{function}", f"--region={R}",
         f"--project={P}", f"--member=serviceAccount:{sa(caller)}"],
    ]


def project_check_and_grant(name, role):
    return [
        ["projects", "get-iam-policy", P, *policy_flags(role, sa(name))],
        ["projects", "add-iam-policy-binding", P, f"--member=serviceAccount:{sa(name)}",
         f"--role={role}", "--condition=None", "--format=none"],
    ]


# Written out by hand from the issue: the exact calls, in order, for a fresh project.
FRESH_PROJECT_CALLS = [
    ["auth", "list", "--filter=status:ACTIVE", "--format=value(account)"],
    ["services", "list", "--enabled", f"--project={P}", "--format=value(config.name)"],
    ["services", "enable", *APIS, f"--project={P}"],
    *[call for name, what in ACCOUNTS.items() for call in (
        ["iam", "service-accounts", "describe", sa(name), f"--project={P}", "--format=value(email)"],
        ["iam", "service-accounts", "create", f"{PRE}-{name}", f"--project={P}",
         f"--display-name=workflows-runner {what}"],
    )],
    *project_check_and_grant("proxy", "roles/workflows.invoker"),
    *project_check_and_grant("backfill", "roles/workflows.invoker"),
    *project_check_and_grant("backfill", "roles/logging.logWriter"),
    RANGE_DEPLOY,
    PROXY_DEPLOY,
    ["functions", "describe", f"{PRE}-range", f"--region={R}", f"--project={P}", "--format=value(serviceConfig.uri)"],
    ["functions", "describe", f"{PRE}-proxy", f"--region={R}", f"--project={P}", "--format=value(serviceConfig.uri)"],
    *invoker_check_and_grant("range", "backfill"),
    *invoker_check_and_grant("proxy", "backfill"),
    *invoker_check_and_grant("proxy", "scheduler"),
    workflow_deploy(),
]
REDEPLOYS = [RANGE_DEPLOY, PROXY_DEPLOY, workflow_deploy()]


def everything_exists(range_url=RANGE_URL, proxy_url=PROXY_URL):
    """A project where an earlier deploy created everything, built by hand (not by deploy.sh)."""
    run_service = f"projects/{P}/locations/{R}/services/{PRE}-"
    member = "serviceAccount:{}".format
    return {
        "project": P,
        "services": ["compute.googleapis.com", *APIS],
        "serviceAccounts": [sa(name) for name in ACCOUNTS],
        "functions": {f"projects/{P}/locations/{R}/functions/{PRE}-range": {"uri": range_url},
                      f"projects/{P}/locations/{R}/functions/{PRE}-proxy": {"uri": proxy_url}},
        "policies": {
            f"projects/{P}": {"roles/owner": ["user:dev@example.com"],
                              "roles/workflows.invoker": [member(sa("proxy")), member(sa("backfill"))],
                              "roles/logging.logWriter": [member(sa("backfill"))]},
            run_service + "range": {"roles/run.invoker": [member(sa("backfill"))]},
            run_service + "proxy": {"roles/run.invoker": [member(sa("scheduler")), member(sa("backfill"))]},
        },
    }


@pytest.fixture
def cloud(tmp_path):
    return FakeCloud(tmp_path, project=None)


def test_fresh_project_gets_exact_commands_in_order(cloud):
    result = cloud.run("--project", P, "--region", R)
    assert result.returncode == 0, result.stderr
    assert cloud.calls() == FRESH_PROJECT_CALLS
    assert f"gcloud workflows run {PRE}-backfill --location={R} --project={P}" in result.stdout


def test_second_run_only_redeploys(cloud):
    assert cloud.run("--project", P, "--region", R).returncode == 0
    state_after_first = cloud.state
    result = cloud.run("--project", P, "--region", R)
    assert result.returncode == 0, result.stderr
    assert cloud.changes() == REDEPLOYS
    assert cloud.state["policies"] == state_after_first["policies"]
    assert cloud.state["serviceAccounts"] == state_after_first["serviceAccounts"]


def test_existing_project_creates_nothing_and_reuses_the_deployed_urls(tmp_path):
    cloud = FakeCloud(tmp_path, **everything_exists("https://range-abc-ew.a.run.app", "https://proxy-abc-ew.a.run.app"))
    result = cloud.run("--project", P, "--region", R)
    assert result.returncode == 0, result.stderr
    assert cloud.changes() == [RANGE_DEPLOY, PROXY_DEPLOY,
                               workflow_deploy("https://range-abc-ew.a.run.app", "https://proxy-abc-ew.a.run.app")]
    assert f"= service account {sa('scheduler')} exists" in result.stdout


def test_only_missing_apis_and_bindings_are_added(tmp_path):
    state = everything_exists()
    state["services"].remove("workflows.googleapis.com")
    state["services"].remove("cloudscheduler.googleapis.com")
    del state["policies"][f"projects/{P}"]["roles/logging.logWriter"]
    state["policies"][f"projects/{P}/locations/{R}/services/{PRE}-proxy"]["roles/run.invoker"].pop()
    cloud = FakeCloud(tmp_path, **state)
    assert cloud.run("--region", R).returncode == 0
    assert cloud.changes() == [
        ["services", "enable", "workflows.googleapis.com", "cloudscheduler.googleapis.com", f"--project={P}"],
        project_check_and_grant("backfill", "roles/logging.logWriter")[1],
        RANGE_DEPLOY, PROXY_DEPLOY,
        invoker_check_and_grant("proxy", "backfill")[1],
        workflow_deploy(),
    ]


def test_project_comes_from_gcloud_config(tmp_path):
    cloud = FakeCloud(tmp_path, project="config-proj")
    result = cloud.run("--region", R)
    assert result.returncode == 0, result.stderr
    assert cloud.calls()[1] == ["config", "get-value", "project"]
    for argv in cloud.changes():
        assert "--project=config-proj" in argv or argv[:3] == ["projects", "add-iam-policy-binding", "config-proj"]
    assert "serviceAccount:workflows-runner-proxy@config-proj.iam.gserviceaccount.com" in str(cloud.state["policies"])


def test_no_function_is_ever_deployed_public(tmp_path):
    # FakeCloud.run checks every recorded call; this covers each way deploy.sh deploys.
    fresh, existing = FakeCloud(tmp_path / "fresh"), FakeCloud(tmp_path / "existing", **everything_exists())
    deploys = []
    for cloud, args in [
        (fresh, ("--project", P, "--region", R)),
        (existing, ("--region", R)),
        (fresh, ("--project", P, "--region", "us-east4", "--prefix", "wr", "--allowed-workflows", "a/b/*,c/*/d")),
    ]:
        assert cloud.run(*args).returncode == 0
        deploys += [argv for argv in cloud.calls() if argv[:2] == ["functions", "deploy"]]
    assert len(deploys) == 6
    assert all("--no-allow-unauthenticated" in argv and "--trigger-http" in argv and "--gen2" in argv
               for argv in deploys)


def test_allowed_workflows_keep_their_commas(cloud):
    assert cloud.run("--project", P, "--region", R, "--allowed-workflows", "demo-proj/*/*,other/us-east1/etl").returncode == 0
    proxy = next(argv for argv in cloud.calls() if argv[:3] == ["functions", "deploy", f"{PRE}-proxy"])
    # gcloud's ^;^ prefix makes ';' the separator, so the list arrives whole.
    assert f"--set-env-vars=^;^GOOGLE_CLOUD_PROJECT={P};ALLOWED_WORKFLOWS=demo-proj/*/*,other/us-east1/etl" in proxy


def test_an_empty_allowlist_flag_means_the_default(cloud):
    assert cloud.run("--project", P, "--region", R, "--allowed-workflows=").returncode == 0
    assert PROXY_DEPLOY in cloud.calls()


def test_a_new_service_account_is_retried_until_iam_sees_it(tmp_path):
    cloud = FakeCloud(tmp_path, project=P, failures={"projects add-iam-policy-binding": 2})
    result = cloud.run("--region", R)
    assert result.returncode == 0, result.stderr
    bindings = [argv for argv in cloud.calls() if argv[:2] == ["projects", "add-iam-policy-binding"]]
    assert len(bindings) == 3 + 2
    assert bindings[0] == bindings[1] == bindings[2]
    assert result.stdout.count("retrying in 0s") == 2


def test_a_binding_that_keeps_failing_stops_the_deploy(tmp_path):
    cloud = FakeCloud(tmp_path, project=P, failures={"projects add-iam-policy-binding": 5})
    result = cloud.run("--region", R)
    assert result.returncode != 0
    assert "injected failure" in result.stderr
    assert not any(argv[:2] == ["functions", "deploy"] for argv in cloud.calls())


def test_dry_run_changes_nothing_and_prints_what_a_real_run_does(tmp_path):
    args = ("--region", R, "--allowed-workflows", f"{P}/*/*,other/{R}/it's")  # quoting: * ; ^ '
    dry = FakeCloud(tmp_path / "dry", project=P)
    before = dry.state_file.read_bytes()
    result = dry.run(*args, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert dry.state_file.read_bytes() == before
    assert dry.calls() and all(is_read_only(argv) for argv in dry.calls())
    printed = [shlex.split(line)[2:] for line in result.stdout.splitlines() if line.startswith("[dry-run] gcloud ")]

    real = FakeCloud(tmp_path / "real", project=P)
    assert real.run(*args).returncode == 0
    # The same commands, quoted so a shell gives them back word for word; only the not yet
    # known function URLs differ.
    assert printed[:-1] == real.changes()[:-1]
    assert printed[-1][:-2] == real.changes()[-1][:-2]
    assert "Dry run: nothing was changed." in result.stdout


def schedule_create(job, uri, body="{}", tz="Europe/Stockholm", cron="0 1 * * *", verb="create",
                    headers="--headers"):
    return ["scheduler", "jobs", verb, "http", job, f"--location={R}", f"--project={P}",
            f"--schedule={cron}", f"--time-zone={tz}", f"--uri={uri}", "--http-method=post",
            f"{headers}=Content-Type=application/json", f"--message-body={body}",
            f"--oidc-service-account-email={sa('scheduler')}", f"--oidc-token-audience={PROXY_URL}",
            "--attempt-deadline=180s", "--max-retry-attempts=5", "--min-backoff=30s",
            "--max-backoff=600s", "--quiet"]


def test_schedule_posts_to_the_proxy_with_oidc(tmp_path):
    cloud = FakeCloud(tmp_path, **everything_exists())
    result = cloud.run("schedule", "nightly", "--schedule", "0 1 * * *", "--time-zone", "Europe/Stockholm",
                       "--body", '{"table": "sales"}', "--region", R)
    assert result.returncode == 0, result.stderr
    uri = f"{PROXY_URL}/v1/projects/{P}/locations/{R}/workflows/nightly/executions?timezone=Europe/Stockholm"
    assert cloud.calls() == [
        ["auth", "list", "--filter=status:ACTIVE", "--format=value(account)"],
        ["config", "get-value", "project"],
        ["functions", "describe", f"{PRE}-proxy", f"--region={R}", f"--project={P}", "--format=value(serviceConfig.uri)"],
        ["scheduler", "jobs", "describe", f"{PRE}-nightly", f"--location={R}", f"--project={P}", "--format=value(name)"],
        schedule_create(f"{PRE}-nightly", uri, body='{"table": "sales"}'),
    ]
    job = cloud.state["jobs"][f"projects/{P}/locations/{R}/jobs/{PRE}-nightly"]["flags"]
    assert job["oidc-token-audience"] == PROXY_URL and job["uri"].startswith(PROXY_URL + "/v1/")


def test_schedule_again_updates_the_job(tmp_path):
    cloud = FakeCloud(tmp_path, **everything_exists())
    args = ("schedule", "nightly", "--time-zone", "Europe/Stockholm", "--region", R, "--project", P)
    assert cloud.run(*args, "--schedule", "0 1 * * *").returncode == 0
    result = cloud.run(*args, "--schedule", "30 2 * * *")
    assert result.returncode == 0, result.stderr
    uri = f"{PROXY_URL}/v1/projects/{P}/locations/{R}/workflows/nightly/executions?timezone=Europe/Stockholm"
    assert cloud.changes() == [schedule_create(f"{PRE}-nightly", uri, cron="30 2 * * *", verb="update",
                                               headers="--update-headers")]
    assert list(cloud.state["jobs"]) == [f"projects/{P}/locations/{R}/jobs/{PRE}-nightly"]


def test_schedule_a_workflow_by_full_name_and_an_offset_zone(tmp_path):
    cloud = FakeCloud(tmp_path, **everything_exists())
    result = cloud.run("schedule", "projects/other/locations/us-east1/workflows/etl_daily",
                       "--schedule", "0 * * * *", "--time-zone", "Etc/GMT+5", "--region", R)
    assert result.returncode == 0, result.stderr
    # A literal '+' in a query string would reach the proxy as a space.
    uri = f"{PROXY_URL}/v1/projects/other/locations/us-east1/workflows/etl_daily/executions?timezone=Etc/GMT%2B5"
    assert cloud.changes() == [schedule_create(f"{PRE}-etl_daily", uri, tz="Etc/GMT+5", cron="0 * * * *")]


def test_schedule_needs_the_proxy_deployed(tmp_path):
    cloud = FakeCloud(tmp_path, project=P)
    result = cloud.run("schedule", "nightly", "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC", "--region", R)
    assert result.returncode == 1
    assert "run ./deploy.sh first" in result.stderr
    assert cloud.changes() == []


def test_schedule_dry_run_changes_nothing(tmp_path):
    cloud = FakeCloud(tmp_path, **everything_exists())
    before = cloud.state_file.read_bytes()
    result = cloud.run("schedule", "nightly", "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC",
                       "--region", R, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert cloud.state_file.read_bytes() == before and cloud.changes() == []
    assert f"[dry-run] gcloud scheduler jobs create http {PRE}-nightly" in result.stdout


@pytest.mark.parametrize("args, message", [
    (("schedule", "nightly", "--time-zone", "Etc/UTC"), "needs --schedule"),
    (("schedule", "nightly", "--schedule", "0 1 * * *"), "needs --time-zone"),
    (("schedule", "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC"), "needs a WORKFLOW"),
    (("schedule", "nightly", "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC", "--body", "[1]"), "JSON object"),
    (("schedule", "9lives", "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC"), "invalid workflow name"),
    (("--allowed-workflows", "just-a-project"), "invalid --allowed-workflows"),
])
def test_bad_schedule_and_allowlist_input_is_refused(tmp_path, args, message):
    cloud = FakeCloud(tmp_path, **everything_exists())
    result = cloud.run(*args, "--region", R)
    assert result.returncode == 1
    assert message in result.stderr
    assert cloud.changes() == []


def test_fails_clearly_without_gcloud(tmp_path):
    cloud = FakeCloud(tmp_path, project=P)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = cloud.run("--region", R, path=str(empty))
    assert result.returncode == 1
    assert result.stderr.startswith("deploy.sh: gcloud not found on PATH")
    assert cloud.calls() == []


def test_fails_clearly_when_not_logged_in(tmp_path):
    cloud = FakeCloud(tmp_path, project=P, account="")
    result = cloud.run("--region", R)
    assert result.returncode == 1
    assert "gcloud is not logged in" in result.stderr and "gcloud auth login" in result.stderr
    assert cloud.calls() == [["auth", "list", "--filter=status:ACTIVE", "--format=value(account)"]]


def test_fails_clearly_without_a_project(tmp_path):
    cloud = FakeCloud(tmp_path, project=None)
    result = cloud.run("--region", R)
    assert result.returncode == 1
    assert "no project: pass --project" in result.stderr
    assert cloud.changes() == []


@pytest.mark.parametrize("args, message", [
    (("--region", R, "--prefix", "a-twenty-one-chars-xx"), "exceed 30 characters"),
    (("--region", R, "--prefix", "Workflows"), "invalid prefix"),
    (("--region", R, "--prefix", "ends-with-"), "invalid prefix"),
    (("--project", P), "--region is required"),
    (("--region", R, "--bogus"), "unknown option: --bogus"),
    (("--region", R, "--schedule", "0 1 * * *"), "--schedule only applies to the schedule command"),
    (("--region", R, "nightly"), "unexpected argument: nightly"),
    (("--region",), "--region needs a value"),
])
def test_bad_arguments_fail_before_any_gcloud_call(cloud, args, message):
    result = cloud.run(*args)
    assert result.returncode == 1
    assert message in result.stderr
    assert cloud.calls() == []


def test_the_longest_prefix_makes_valid_service_account_ids(cloud):
    prefix = "p" * 20  # p...p-scheduler is 30 characters, the most IAM accepts
    result = cloud.run("--project", P, "--region", R, "--prefix", prefix)
    assert result.returncode == 0, result.stderr
    assert f"{prefix}-scheduler@{P}.iam.gserviceaccount.com" in cloud.state["serviceAccounts"]


def test_help(cloud):
    result = cloud.run("--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout and "./deploy.sh schedule WORKFLOW" in result.stdout
    assert cloud.calls() == []


def test_runs_from_any_directory(cloud, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert cloud.run("--project", P, "--region", R, cwd=elsewhere).returncode == 0
    assert cloud.calls() == FRESH_PROJECT_CALLS


def test_missing_sources_are_reported(cloud):
    (cloud.checkout / "workflows" / "backfill.yaml").unlink()
    result = cloud.run("--project", P, "--region", R)
    assert result.returncode == 1 and "workflows/backfill.yaml is missing" in result.stderr


def test_deploy_sh_is_clean_under_shellcheck():
    result = subprocess.run([str(TOOLS / "shellcheck"), "--severity=style", str(ROOT / "deploy.sh")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_fake_gcloud_refuses_commands_it_does_not_know(tmp_path):
    # Guards the other tests: an unexpected gcloud call must not pass silently.
    cloud = FakeCloud(tmp_path, project=P)
    env = {"FAKE_GCLOUD_STATE": str(cloud.state_file), "FAKE_GCLOUD_LOG": str(cloud.log_file),
           "PATH": f"{TOOLS}:/usr/bin:/bin"}
    result = subprocess.run([str(FAKE_BIN / "gcloud"), "compute", "instances", "delete", "x"],
                            env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "unknown command" in result.stderr


def test_the_repository_matches_the_deploy_contract():
    """The entry points and env vars deploy.sh relies on."""
    sources = {"functions/range/main.py": r"def expand_range\(", "functions/proxy/main.py": r"def proxy\(",
               "workflows/backfill.yaml": r"RANGE_URL[\s\S]*PROXY_URL|PROXY_URL[\s\S]*RANGE_URL"}
    for path, pattern in sources.items():
        assert re.search(pattern, (ROOT / path).read_text()), path
