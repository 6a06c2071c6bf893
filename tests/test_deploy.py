"""deploy.sh, run for real against a fake gcloud that records every call (tests/fake_gcloud)."""
import base64
import json
import re
import shlex
import shutil
import subprocess

import pytest

from tests.fake_gcloud.harness import FAKE_BIN, ROOT, TOOLS, FakeCloud, is_read_only

P, R, PRE = "demo-proj", "europe-west1", "workflows-runner"
APIS = [
    "cloudresourcemanager.googleapis.com", "iam.googleapis.com", "cloudfunctions.googleapis.com",
    "run.googleapis.com", "cloudbuild.googleapis.com", "artifactregistry.googleapis.com",
    "workflows.googleapis.com", "workflowexecutions.googleapis.com",
    "cloudscheduler.googleapis.com", "logging.googleapis.com", "storage.googleapis.com",
    "monitoring.googleapis.com",
]
ACCOUNTS = {"range": "range function", "proxy": "proxy function",
            "scheduler": "Cloud Scheduler jobs", "backfill": "backfill workflow", "audit": "audit function",
            "queue": "queue waiter", "build": "function builds"}
BUCKET = f"gs://{P}-{PRE}-runs"
POLICY_FLAGS = ["--flatten=bindings[].members", "--format=value(bindings.role,bindings.members,bindings.condition.title)"]
EXECUTIONS_ROLE = f"projects/{P}/roles/workflows_runner_executionUser"
BACKFILL_ROLE = f"projects/{P}/roles/workflows_runner_backfill"
RESUMER_ROLE = f"projects/{P}/roles/workflows_runner_jobResumer"
BUILD_ROLES = ["roles/logging.logWriter", "roles/artifactregistry.writer", "roles/storage.objectViewer"]
# Writes under runs/ only: an IAM condition on the object's resource name.
LEDGER = f'expression=resource.name.startsWith("projects/_/buckets/{P}-{PRE}-runs/objects/runs/"),title=run ledger only'
HANDOVERS = (f'expression=resource.name.startsWith("projects/_/buckets/{P}-{PRE}-runs/objects/backfills/"),'
             "title=backfill hand-overs only")


def sa(name, project=P, prefix=PRE):
    return f"{prefix}-{name}@{project}.iam.gserviceaccount.com"


def member(name):
    return f"serviceAccount:{sa(name)}"


def function_deploy(name, entry, *flags, source=None):
    return ["functions", "deploy", f"{PRE}-{name}", "--gen2", f"--region={R}", f"--project={P}",
            "--runtime=python312", f"--source={source or 'functions/' + name}", f"--entry-point={entry}",
            "--trigger-http", "--no-allow-unauthenticated", f"--service-account={sa(name)}",
            f"--build-service-account=projects/{P}/serviceAccounts/{sa('build')}", *flags, "--quiet"]


RANGE_DEPLOY = function_deploy("range", "expand_range", "--clear-env-vars")
QUEUE_WORKFLOW = f"projects/{P}/locations/{R}/workflows/{PRE}-queue"
PROXY_DEPLOY = function_deploy(
    "proxy", "proxy", f"--set-env-vars=^;^GOOGLE_CLOUD_PROJECT={P};ALLOWED_WORKFLOWS={P}/{R}/*;RUNS_BUCKET={P}-{PRE}-runs;"
    f"QUEUE_WORKFLOW={QUEUE_WORKFLOW}", "--timeout=120s")
RANGE_URL = f"https://{PRE}-range-fake1234-{R}.a.run.app"
PROXY_URL = f"https://{PRE}-proxy-fake1234-{R}.a.run.app"
AUDIT_URL = f"https://{PRE}-audit-fake1234-{R}.a.run.app"
AUDIT_ROLE = f"projects/{P}/roles/workflows_runner_auditReader"
ALERTS = (f'expression=resource.name.startsWith("projects/_/buckets/{P}-{PRE}-runs/objects/alerts/"),'
          "title=audit alerts only")
METRIC = f"{PRE}-alerts"


def audit_deploy(range_url=RANGE_URL, proxy_url=PROXY_URL):
    """The audit function deploys from its assembled folder (functions/audit/SHARED)."""
    return function_deploy(
        "audit", "audit_pass", f"--set-env-vars=GOOGLE_CLOUD_PROJECT={P},LOCATION={R},RUNS_BUCKET={P}-{PRE}-runs,"
        f"RANGE_URL={range_url},PROXY_URL={proxy_url}", "--timeout=180s", source=".build/functions/audit")


def audit_job(verb="create", audit_url=AUDIT_URL):
    return ["scheduler", "jobs", verb, "http", f"{PRE}-audit", f"--location={R}", f"--project={P}",
            "--schedule=*/5 * * * *", "--time-zone=Etc/UTC", f"--uri={audit_url}", "--http-method=post",
            f"--{'headers' if verb == 'create' else 'update-headers'}=Content-Type=application/json",
            "--message-body={}", f"--oidc-service-account-email={sa('scheduler')}",
            f"--oidc-token-audience={audit_url}", "--attempt-deadline=180s", "--max-retry-attempts=5",
            "--min-backoff=30s", "--max-backoff=600s", "--quiet"]


def metric_put(cloud, verb="create"):
    return ["logging", "metrics", verb, METRIC, f"--project={P}",
            f"--config-from-file={cloud.checkout}/.build/{METRIC}.json"]


def normalized(calls, *clouds):
    """Calls with function URLs and checkout folders as symbols: a dry run prints placeholders
    for functions not yet deployed, and each FakeCloud has its own checkout."""
    def one(word):
        word = re.sub(r"https://([a-z][-a-z0-9]*)(?:\.example\.invalid|-fake1234-[a-z0-9-]+\.a\.run\.app)", r"URL(\1)", word)
        for cloud in clouds:
            word = word.replace(str(cloud.checkout), "CHECKOUT")
        return word
    return [[one(word) for word in argv] for argv in calls]


def workflow_deploy(range_url=RANGE_URL, proxy_url=PROXY_URL):
    return ["workflows", "deploy", f"{PRE}-backfill", f"--location={R}", f"--project={P}",
            "--source=workflows/backfill.yaml", f"--service-account={sa('backfill')}",
            f"--set-env-vars=RANGE_URL={range_url},PROXY_URL={proxy_url},RUNS_BUCKET={P}-{PRE}-runs", "--quiet"]


def queue_deploy(proxy_url=PROXY_URL):
    """The queue waiter (overlap=queue), deployed like the backfill: its own account, the proxy's URL."""
    return ["workflows", "deploy", f"{PRE}-queue", f"--location={R}", f"--project={P}",
            "--source=workflows/queue.yaml", f"--service-account={sa('queue')}",
            f"--set-env-vars=PROXY_URL={proxy_url}", "--quiet"]


def invoker_check_and_grant(function, caller):
    return [
        ["run", "services", "get-iam-policy", f"{PRE}-{function}", f"--region={R}", f"--project={P}", *POLICY_FLAGS],
        ["functions", "add-invoker-policy-binding", f"{PRE}-{function}", f"--region={R}",
         f"--project={P}", f"--member={member(caller)}"],
    ]


def project_check_and_grant(name, role, project=P):
    return [
        ["projects", "get-iam-policy", project, *POLICY_FLAGS],
        ["projects", "add-iam-policy-binding", project, f"--member={member(name)}",
         f"--role={role}", "--condition=None", "--format=none"],
    ]


def bucket_check_and_grant(who, role, condition="None"):
    return [
        ["storage", "buckets", "get-iam-policy", BUCKET, *POLICY_FLAGS],
        ["storage", "buckets", "add-iam-policy-binding", BUCKET, f"--member={who}", f"--role={role}",
         f"--condition={condition}", "--format=none"],
    ]


def role_check_and_create(role_id, title, description, permissions, project=P):
    return [
        ["iam", "roles", "describe", role_id, f"--project={project}", "--format=value(name)"],
        ["iam", "roles", "create", role_id, f"--project={project}", f"--title={title}",
         f"--description={description}", f"--permissions={permissions}", "--stage=GA", "--format=none"],
    ]


EXECUTIONS_ROLE_CALLS = role_check_and_create(
    "workflows_runner_executionUser", "workflows-runner executions",
    "Start, read, list and cancel executions: the proxy's runs and operators' backfills",
    "workflows.executions.cancel,workflows.executions.create,workflows.executions.get,workflows.executions.list")
BACKFILL_ROLE_CALLS = role_check_and_create(
    "workflows_runner_backfill", "workflows-runner backfill",
    "Start the backfill's next link and wait on runs, nothing else",
    "workflows.executions.create,workflows.executions.get")
RESUMER_ROLE_CALLS = role_check_and_create(
    "workflows_runner_jobResumer", "workflows-runner job resumer", "Resume a paused Scheduler job, nothing else: wfr resume",
    "cloudscheduler.jobs.enable")


# Written out by hand from the issues: the exact calls, in order, for a fresh project.
FRESH_PROJECT_CALLS = [
    ["auth", "list", "--filter=status:ACTIVE", "--format=value(account)"],
    ["services", "list", "--enabled", f"--project={P}", "--format=value(config.name)"],
    ["services", "enable", *APIS, f"--project={P}"],
    *[call for name, what in ACCOUNTS.items() for call in (
        ["iam", "service-accounts", "describe", sa(name), f"--project={P}", "--format=value(email)"],
        ["iam", "service-accounts", "create", f"{PRE}-{name}", f"--project={P}",
         f"--display-name=workflows-runner {what}"],
    )],
    *EXECUTIONS_ROLE_CALLS,
    *BACKFILL_ROLE_CALLS,
    *project_check_and_grant("proxy", EXECUTIONS_ROLE),
    *project_check_and_grant("backfill", BACKFILL_ROLE),
    *project_check_and_grant("backfill", "roles/logging.logWriter"),
    *project_check_and_grant("queue", "roles/logging.logWriter"),
    *[call for role in BUILD_ROLES for call in project_check_and_grant("build", role)],
    *RESUMER_ROLE_CALLS,
    # Earlier versions' broader roles (proxy and backfill invoker, backfill viewer, builds.builder)?
    *[["projects", "get-iam-policy", P, *POLICY_FLAGS]] * 4,
    *project_check_and_grant("audit", "roles/cloudscheduler.viewer"),
    ["iam", "roles", "describe", "workflows_runner_auditReader", f"--project={P}", "--format=value(name)"],
    ["iam", "roles", "create", "workflows_runner_auditReader", f"--project={P}", "--title=workflows-runner audit reader",
     "--description=Read and list executions, pause a job: the audit learns the state of runs not yet settled and applies pauseAfter",
     "--permissions=cloudscheduler.jobs.pause,workflows.executions.get,workflows.executions.list", "--stage=GA", "--format=none"],
    *project_check_and_grant("audit", AUDIT_ROLE),
    ["storage", "buckets", "describe", BUCKET, "--format=value(name)"],
    ["storage", "buckets", "create", BUCKET, f"--project={P}", f"--location={R}",
     "--uniform-bucket-level-access", "--public-access-prevention"],
    *bucket_check_and_grant(member("proxy"), "roles/storage.objectViewer"),
    *bucket_check_and_grant(member("proxy"), "roles/storage.objectUser", LEDGER),
    *bucket_check_and_grant(member("backfill"), "roles/storage.objectCreator", HANDOVERS),
    *bucket_check_and_grant(member("backfill"), "roles/storage.objectViewer", HANDOVERS),
    *bucket_check_and_grant(member("audit"), "roles/storage.objectViewer"),
    *bucket_check_and_grant(member("audit"), "roles/storage.objectUser", LEDGER),
    *bucket_check_and_grant(member("audit"), "roles/storage.objectUser", ALERTS),
    # Earlier versions' proxy objectUser on the whole bucket, backfill objectViewer?
    *[["storage", "buckets", "get-iam-policy", BUCKET, *POLICY_FLAGS]] * 2,
    RANGE_DEPLOY,
    PROXY_DEPLOY,
    ["functions", "describe", f"{PRE}-range", f"--region={R}", f"--project={P}", "--format=value(serviceConfig.uri)"],
    ["functions", "describe", f"{PRE}-proxy", f"--region={R}", f"--project={P}", "--format=value(serviceConfig.uri)"],
    *invoker_check_and_grant("range", "backfill"),
    *invoker_check_and_grant("proxy", "backfill"),
    *invoker_check_and_grant("proxy", "scheduler"),
    *invoker_check_and_grant("proxy", "queue"),
    audit_deploy(),
    ["functions", "describe", f"{PRE}-audit", f"--region={R}", f"--project={P}", "--format=value(serviceConfig.uri)"],
    *invoker_check_and_grant("range", "audit"),
    *invoker_check_and_grant("audit", "scheduler"),
    ["scheduler", "jobs", "describe", f"{PRE}-audit", f"--location={R}", f"--project={P}", "--format=value(name)"],
    audit_job(),
    ["logging", "metrics", "describe", METRIC, f"--project={P}", "--format=value(name)"],
    "METRIC CREATE",  # metric_put(cloud): the config file lies in the run's own checkout
    workflow_deploy(),
    queue_deploy(),
]


def fresh_project_calls(cloud):
    return [metric_put(cloud) if call == "METRIC CREATE" else call for call in FRESH_PROJECT_CALLS]


def redeploys(cloud, range_url=RANGE_URL, proxy_url=PROXY_URL, audit_url=AUDIT_URL):
    return [RANGE_DEPLOY, PROXY_DEPLOY, audit_deploy(range_url, proxy_url), audit_job("update", audit_url),
            metric_put(cloud, "update"), workflow_deploy(range_url, proxy_url), queue_deploy(proxy_url)]


def everything_exists(range_url=RANGE_URL, proxy_url=PROXY_URL):
    """A project where an earlier deploy created everything, built by hand (not by deploy.sh)."""
    run_service = f"projects/{P}/locations/{R}/services/{PRE}-"
    return {
        "project": P,
        "services": ["compute.googleapis.com", *APIS],
        "serviceAccounts": [sa(name) for name in ACCOUNTS],
        "functions": {f"projects/{P}/locations/{R}/functions/{PRE}-range": {"uri": range_url},
                      f"projects/{P}/locations/{R}/functions/{PRE}-proxy": {
                          "uri": proxy_url, "env": {"ALLOWED_WORKFLOWS": f"{P}/{R}/*"}},
                      f"projects/{P}/locations/{R}/functions/{PRE}-audit": {"uri": AUDIT_URL}},
        "jobs": {f"projects/{P}/locations/{R}/jobs/{PRE}-audit": {"httpTarget": {"uri": AUDIT_URL}}},
        "metrics": {f"projects/{P}/metrics/{METRIC}": {}},

        "workflows": {f"projects/{P}/locations/{R}/workflows/{PRE}-backfill": {}, QUEUE_WORKFLOW: {}},
        "buckets": {BUCKET: {"location": R.upper(), "objects": 3}},
        "roles": {EXECUTIONS_ROLE: {"includedPermissions": [], "stage": "GA"},
                  BACKFILL_ROLE: {"includedPermissions": [], "stage": "GA"},
                  RESUMER_ROLE: {"includedPermissions": ["cloudscheduler.jobs.enable"], "stage": "GA"},
                  AUDIT_ROLE: {"includedPermissions": ["cloudscheduler.jobs.pause", "workflows.executions.get",
                                                       "workflows.executions.list"]}},
        "policies": {
            f"projects/{P}": {"roles/owner": ["user:dev@example.com"],
                              EXECUTIONS_ROLE: [member("proxy")],
                              BACKFILL_ROLE: [member("backfill")],
                              "roles/logging.logWriter": [member("backfill"), member("queue"), member("build")],
                              "roles/artifactregistry.writer": [member("build")],
                              "roles/storage.objectViewer": [member("build")],
                              "roles/cloudscheduler.viewer": [member("audit")],
                              AUDIT_ROLE: [member("audit")]},
            BUCKET: {"roles/storage.objectViewer": [member("proxy"), member("audit")],
                     "roles/storage.objectUser if run ledger only": [member("proxy"), member("audit")],
                     "roles/storage.objectUser if audit alerts only": [member("audit")],
                     "roles/storage.objectCreator if backfill hand-overs only": [member("backfill")],
                     "roles/storage.objectViewer if backfill hand-overs only": [member("backfill")]},
            run_service + "range": {"roles/run.invoker": [member("backfill"), member("audit")]},
            run_service + "proxy": {"roles/run.invoker": [member("scheduler"), member("backfill"), member("queue")]},
            run_service + "audit": {"roles/run.invoker": [member("scheduler")]},
        },
    }


@pytest.fixture
def cloud(tmp_path):
    return FakeCloud(tmp_path, project=None)


def test_fresh_project_gets_exact_commands_in_order(cloud):
    result = cloud.run("--project", P, "--region", R)
    assert result.returncode == 0, result.stderr
    assert cloud.calls() == fresh_project_calls(cloud)
    assert f"gcloud workflows run {PRE}-backfill --location={R} --project={P}" in result.stdout


def test_second_run_only_redeploys(cloud):
    assert cloud.run("--project", P, "--region", R).returncode == 0
    state_after_first = cloud.state
    result = cloud.run("--project", P, "--region", R)
    assert result.returncode == 0, result.stderr
    assert cloud.changes() == redeploys(cloud)
    assert cloud.state["policies"] == state_after_first["policies"]
    assert cloud.state["serviceAccounts"] == state_after_first["serviceAccounts"]


def test_existing_project_creates_nothing_and_reuses_the_deployed_urls(tmp_path):
    cloud = FakeCloud(tmp_path, **everything_exists("https://range-abc-ew.a.run.app", "https://proxy-abc-ew.a.run.app"))
    result = cloud.run("--project", P, "--region", R)
    assert result.returncode == 0, result.stderr
    assert cloud.changes() == redeploys(cloud, "https://range-abc-ew.a.run.app", "https://proxy-abc-ew.a.run.app")
    assert f"= service account {sa('scheduler')} exists" in result.stdout


def test_only_missing_apis_and_bindings_are_added(tmp_path):
    state = everything_exists()
    state["services"].remove("workflows.googleapis.com")
    state["services"].remove("cloudscheduler.googleapis.com")
    state["policies"][f"projects/{P}"]["roles/logging.logWriter"].remove(member("backfill"))
    state["policies"][f"projects/{P}/locations/{R}/services/{PRE}-proxy"]["roles/run.invoker"].remove(member("backfill"))
    cloud = FakeCloud(tmp_path, **state)
    assert cloud.run("--region", R).returncode == 0
    assert cloud.changes() == [
        ["services", "enable", "workflows.googleapis.com", "cloudscheduler.googleapis.com", f"--project={P}"],
        project_check_and_grant("backfill", "roles/logging.logWriter")[1],
        RANGE_DEPLOY, PROXY_DEPLOY,
        invoker_check_and_grant("proxy", "backfill")[1],
        *redeploys(cloud)[2:],
    ]


def test_project_comes_from_gcloud_config(tmp_path):
    cloud = FakeCloud(tmp_path, project="config-proj")
    result = cloud.run("--region", R)
    assert result.returncode == 0, result.stderr
    assert cloud.calls()[1] == ["config", "get-value", "project"]
    for argv in cloud.changes():
        assert ("--project=config-proj" in argv or argv[:3] == ["projects", "add-iam-policy-binding", "config-proj"]
                or "gs://config-proj-workflows-runner-runs" in argv)
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
    assert len(deploys) == 9
    assert all("--no-allow-unauthenticated" in argv and "--trigger-http" in argv and "--gen2" in argv
               for argv in deploys)


def test_allowed_workflows_keep_their_commas(cloud):
    assert cloud.run("--project", P, "--region", R, "--allowed-workflows", "demo-proj/*/*,other/us-east1/etl").returncode == 0
    proxy = next(argv for argv in cloud.calls() if argv[:3] == ["functions", "deploy", f"{PRE}-proxy"])
    # gcloud's ^;^ prefix makes ';' the separator, so the list arrives whole.
    assert (f"--set-env-vars=^;^GOOGLE_CLOUD_PROJECT={P};ALLOWED_WORKFLOWS=demo-proj/*/*,other/us-east1/etl;"
            f"RUNS_BUCKET={P}-{PRE}-runs;QUEUE_WORKFLOW={QUEUE_WORKFLOW}") in proxy


def test_an_empty_allowlist_flag_means_the_default(cloud):
    assert cloud.run("--project", P, "--region", R, "--allowed-workflows=").returncode == 0
    assert PROXY_DEPLOY in cloud.calls()


def test_a_new_service_account_is_retried_until_iam_sees_it(tmp_path):
    cloud = FakeCloud(tmp_path, project=P, failures={"projects add-iam-policy-binding": 2})
    result = cloud.run("--region", R)
    assert result.returncode == 0, result.stderr
    bindings = [argv for argv in cloud.calls() if argv[:2] == ["projects", "add-iam-policy-binding"]]
    assert len(bindings) == 9 + 2  # proxy 1, backfill 2, queue 1, build 3, audit 2, and the first one's two retries
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
    assert normalized(printed, dry) == normalized(real.changes(), real)
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
        ["scheduler", "jobs", "describe", f"{PRE}-nightly-catch-up", f"--location={R}", f"--project={P}",
         "--format=value(name)"],
    ]
    target = cloud.state["jobs"][f"projects/{P}/locations/{R}/jobs/{PRE}-nightly"]["httpTarget"]
    assert target["oidcToken"]["audience"] == PROXY_URL and target["uri"].startswith(PROXY_URL + "/v1/")


@pytest.mark.parametrize("flags, settings", [
    ((), ("allow", 0, 0)),
    (("--overlap", "skip"), ("skip", 1, 0)),
    (("--overlap", "queue", "--max-active", "2", "--pause-after", "3"), ("queue", 2, 3)),
    (("--pause-after", "100", "--time-zone", "Etc/GMT+5"), ("allow", 0, 100)),
])
def test_schedule_writes_the_overlap_settings_on_the_jobs_uri_as_wfr_reads_them(tmp_path, flags, settings):
    from workflows_runner import job_settings
    cloud = FakeCloud(tmp_path, **everything_exists())
    result = cloud.run("schedule", "nightly", "--schedule", "0 1 * * *", "--time-zone", "Europe/Stockholm",
                       *flags, "--region", R)
    assert result.returncode == 0, result.stderr
    read = job_settings.from_uri(job(cloud, "nightly")["httpTarget"]["uri"])
    assert (read.overlap, read.max_active, read.pause_after) == settings
    assert read.timezone == ("Etc/GMT+5" if "Etc/GMT+5" in flags else "Europe/Stockholm")


def test_schedule_again_updates_the_job(tmp_path):
    cloud = FakeCloud(tmp_path, **everything_exists())
    args = ("schedule", "nightly", "--time-zone", "Europe/Stockholm", "--region", R, "--project", P)
    assert cloud.run(*args, "--schedule", "0 1 * * *").returncode == 0
    result = cloud.run(*args, "--schedule", "30 2 * * *")
    assert result.returncode == 0, result.stderr
    uri = f"{PROXY_URL}/v1/projects/{P}/locations/{R}/workflows/nightly/executions?timezone=Europe/Stockholm"
    assert cloud.changes() == [schedule_create(f"{PRE}-nightly", uri, cron="30 2 * * *", verb="update",
                                               headers="--update-headers")]
    assert [name for name in cloud.state["jobs"] if not name.endswith(f"/{PRE}-audit")] == \
        [f"projects/{P}/locations/{R}/jobs/{PRE}-nightly"]


def test_schedule_a_workflow_by_full_name_and_an_offset_zone(tmp_path):
    cloud = FakeCloud(tmp_path, **everything_exists())
    result = cloud.run("schedule", "projects/other-proj/locations/us-east1/workflows/etl_daily",
                       "--schedule", "0 * * * *", "--time-zone", "Etc/GMT+5", "--region", R)
    assert result.returncode == 0, result.stderr
    # A literal '+' in a query string would reach the proxy as a space.
    uri = f"{PROXY_URL}/v1/projects/other-proj/locations/us-east1/workflows/etl_daily/executions?timezone=Etc/GMT%2B5"
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
    (("schedule", "nightly", "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC", "--overlap", "forbid"),
     "invalid --overlap 'forbid'"),
    (("schedule", "nightly", "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC", "--max-active", "2"),
     "--max-active applies only with --overlap"),
    (("schedule", "nightly", "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC", "--overlap", "skip",
      "--max-active", "0"), "invalid --max-active '0'"),
    (("schedule", "nightly", "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC", "--pause-after", "101"),
     "invalid --pause-after '101'"),
    (("--overlap", "skip"), "--overlap only applies to the schedule command"),
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
    assert cloud.calls() == fresh_project_calls(cloud)


@pytest.mark.parametrize("source", ["workflows/backfill.yaml", "workflows/queue.yaml"])
def test_missing_sources_are_reported(cloud, source):
    (cloud.checkout / source).unlink()
    result = cloud.run("--project", P, "--region", R)
    assert result.returncode == 1 and f"{source} is missing" in result.stderr and cloud.calls() == []


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



# ---- IAM: exact membership, other projects, the build account, the runs bucket -------------

def project_roles(state, who, project=P):
    return sorted(role for role, members in state["policies"].get(f"projects/{project}", {}).items() if who in members)


def test_a_deleted_member_with_the_same_email_does_not_count_as_granted(tmp_path):
    # A '=' filter would match it once gcloud turns '=' into word matching; the exact line does not.
    state = everything_exists()
    state["policies"][f"projects/{P}"]["roles/logging.logWriter"] = [f"deleted:{member('backfill')}?uid=123"]
    state["policies"][f"projects/{P}"]["roles/logging.logWriter"] += [member("queue"), member("build")]
    state["policies"][BUCKET]["roles/storage.objectUser if run ledger only"] = [f"{member('proxy')}x", member("audit")]
    # The same role and member without the condition is not the conditional grant either.
    state["policies"][BUCKET]["roles/storage.objectUser"] = [member("proxy")]
    cloud = FakeCloud(tmp_path, **state)
    assert cloud.run("--region", R).returncode == 0
    grants = [argv for argv in cloud.changes() if "add-iam-policy-binding" in argv]
    assert grants == [project_check_and_grant("backfill", "roles/logging.logWriter")[1],
                      bucket_check_and_grant(member("proxy"), "roles/storage.objectUser", LEDGER)[1]]
    # ... and the unconditioned one, an earlier version's grant on the whole bucket, is taken back.
    assert ["storage", "buckets", "remove-iam-policy-binding", BUCKET, f"--member={member('proxy')}",
            "--role=roles/storage.objectUser", "--condition=None", "--format=none"] in cloud.changes()
    assert not any(argv[:2] == ["projects", "get-iam-policy"] and any(f.startswith("--filter") for f in argv)
                   for argv in cloud.calls())


def test_workflows_in_another_project_get_a_reader_role_with_only_executions_get(cloud):
    result = cloud.run("--project", P, "--region", R, "--allowed-workflows", f"{P}/{R}/*,data-proj/us-east1/etl")
    assert result.returncode == 0, result.stderr
    state = cloud.state
    role = "projects/data-proj/roles/workflows_runner_executionReader"
    executions = "projects/data-proj/roles/workflows_runner_executionUser"
    assert state["roles"][role]["includedPermissions"] == ["workflows.executions.get"]
    assert state["roles"][executions]["includedPermissions"] == [
        "workflows.executions.cancel", "workflows.executions.create", "workflows.executions.get",
        "workflows.executions.list"]
    assert project_roles(state, member("backfill"), "data-proj") == [role]
    assert project_roles(state, member("proxy"), "data-proj") == [executions]
    # At home: start its own next link and read runs, never the broad viewer or invoker roles.
    assert project_roles(state, member("backfill")) == [BACKFILL_ROLE, "roles/logging.logWriter"]
    assert state["roles"][BACKFILL_ROLE]["includedPermissions"] == [
        "workflows.executions.create", "workflows.executions.get"]
    assert "roles/workflows.viewer" not in str(state["policies"])
    assert "roles/workflows.invoker" not in str(state["policies"])


def test_an_earlier_versions_broader_roles_are_taken_back(tmp_path):
    state = everything_exists()
    earlier = state["policies"][f"projects/{P}"]
    earlier["roles/workflows.viewer"] = [member("backfill")]
    earlier["roles/workflows.invoker"] = [member("proxy"), member("backfill")]
    earlier["roles/cloudbuild.builds.builder"] = [member("build")]
    state["policies"][BUCKET]["roles/storage.objectViewer"].append(member("backfill"))
    cloud = FakeCloud(tmp_path, **state)
    assert cloud.run("--region", R).returncode == 0
    removed = [tuple(f for f in argv if f.startswith(("--member=", "--role="))) for argv in cloud.changes()
               if "remove-iam-policy-binding" in argv[:3]]
    assert sorted(removed) == sorted([
        (f"--member={member('proxy')}", "--role=roles/workflows.invoker"),
        (f"--member={member('backfill')}", "--role=roles/workflows.invoker"),
        (f"--member={member('backfill')}", "--role=roles/workflows.viewer"),
        (f"--member={member('build')}", "--role=roles/cloudbuild.builds.builder"),
        (f"--member={member('backfill')}", "--role=roles/storage.objectViewer")])
    assert project_roles(cloud.state, member("backfill")) == [BACKFILL_ROLE, "roles/logging.logWriter"]
    assert project_roles(cloud.state, member("build")) == sorted(BUILD_ROLES)


def test_functions_build_with_their_own_build_account_or_the_one_given(tmp_path):
    # https://cloud.google.com/functions/docs/securing/build-custom-sa: new projects may build
    # with an account lacking roles/cloudbuild.builds.builder, and --quiet hides gcloud's prompt.
    default = FakeCloud(tmp_path / "default", project=P)
    assert default.run("--region", R).returncode == 0
    # The three roles Google documents for a build account, nothing broader.
    assert project_roles(default.state, member("build")) == sorted(BUILD_ROLES)
    given = FakeCloud(tmp_path / "given", project=P)
    given.state = {**given.state, "serviceAccounts": [f"ci@{P}.iam.gserviceaccount.com"]}
    assert given.run("--region", R, "--build-service-account", f"ci@{P}.iam.gserviceaccount.com").returncode == 0
    deploys = [argv for argv in given.changes() if argv[:2] == ["functions", "deploy"]]
    assert all(f"--build-service-account=projects/{P}/serviceAccounts/ci@{P}.iam.gserviceaccount.com" in argv
               for argv in deploys) and len(deploys) == 3
    assert sa("build") not in given.state["serviceAccounts"]
    assert f"ci@{P}" not in str(given.state["policies"])  # yours: granted nothing
    assert "roles/cloudbuild.builds.builder" not in str(given.state["policies"])


def test_the_runs_bucket_is_private_and_only_the_proxy_and_operators_write_its_ledger(cloud):
    operators = ["user:ana@example.com", "group:ops@example.com"]
    result = cloud.run("--project", P, "--region", R, "--operators", ",".join(operators))
    assert result.returncode == 0, result.stderr
    state = cloud.state
    assert state["buckets"][BUCKET]["location"] == R.upper()
    # Reads everywhere in the bucket; writes under runs/ only; the backfill only under backfills/.
    assert state["policies"][BUCKET] == {
        "roles/storage.objectViewer": [member("proxy"), member("audit"), *operators],
        "roles/storage.objectUser if run ledger only": [member("proxy"), member("audit"), *operators],
        "roles/storage.objectCreator if backfill hand-overs only": [member("backfill")],
        "roles/storage.objectViewer if backfill hand-overs only": [member("backfill")],
        "roles/storage.objectUser if audit alerts only": [member("audit")]}
    assert '--condition=' + HANDOVERS in str(cloud.changes())
    assert '--condition=' + LEDGER in str(cloud.changes())
    # On the project, storage only for the build account (Google's documented build roles).
    assert [(role, who) for role, members in state["policies"][f"projects/{P}"].items() for who in members
            if role.startswith("roles/storage")] == [("roles/storage.objectViewer", member("build"))]
    # What every wfr command needs besides the bucket (docs/deploy.md, "Least privilege"); wfr
    # resume: jobs.resume checks cloudscheduler.jobs.enable, and Google has no jobs.resume permission
    # (https://cloud.google.com/scheduler/docs/reference/rest/v1beta1/projects.locations.jobs/resume,
    # https://cloud.google.com/iam/docs/roles-permissions/cloudscheduler).
    assert state["roles"][RESUMER_ROLE]["includedPermissions"] == ["cloudscheduler.jobs.enable"]
    for operator in operators:
        assert project_roles(state, operator) == sorted(
            [EXECUTIONS_ROLE, RESUMER_ROLE, "roles/cloudfunctions.viewer", "roles/cloudscheduler.viewer"])
        for function in ("range", "proxy"):
            assert operator in state["policies"][f"projects/{P}/locations/{R}/services/{PRE}-{function}"]["roles/run.invoker"]
    proxy = state["functions"][f"projects/{P}/locations/{R}/functions/{PRE}-proxy"]["env"]
    assert proxy["RUNS_BUCKET"] == f"{P}-{PRE}-runs" and "STORAGE_API" not in proxy


@pytest.mark.parametrize("operators", ["ana@example.com", "user:ana@example.com,", "user:a b"])
def test_bad_operators_are_refused(cloud, operators):
    result = cloud.run("--project", P, "--region", R, "--operators", operators)
    assert result.returncode == 1 and "invalid --operators" in result.stderr and cloud.calls() == []


def test_a_narrow_allowlist_still_lets_catch_up_jobs_start_the_backfill(cloud):
    assert cloud.run("--project", P, "--region", R, "--allowed-workflows", f"{P}/{R}/nightly").returncode == 0
    env = cloud.state["functions"][f"projects/{P}/locations/{R}/functions/{PRE}-proxy"]["env"]
    assert env["ALLOWED_WORKFLOWS"] == f"{P}/{R}/nightly,{P}/{R}/{PRE}-backfill"


# ---- Dry runs -------------------------------------------------------------------------------

def planned(result):
    return [shlex.split(line)[2:] for line in result.stdout.splitlines() if line.startswith("[dry-run] gcloud ")]


@pytest.mark.parametrize("without", ["login", "gcloud"])
def test_dry_run_without_login_or_gcloud_prints_the_fresh_plan(tmp_path, without):
    dry = FakeCloud(tmp_path / "dry", account="")
    path = str(tmp_path / "no-bin") if without == "gcloud" else None
    (tmp_path / "no-bin").mkdir()
    for tool in ("rm", "mkdir", "cp"):  # what assembling the audit's source takes; no gcloud
        (tmp_path / "no-bin" / tool).symlink_to(shutil.which(tool))
    result = dry.run("--project", P, "--region", R, "--dry-run", path=path)
    assert result.returncode == 0, result.stderr
    assert dry.calls() == ([] if without == "gcloud" else [FRESH_PROJECT_CALLS[0]])
    assert (dry.checkout / ".build/functions/audit/workflows_runner/status.py").is_file()  # assembled, even so
    assert "without a gcloud login" in result.stdout and "plan for a fresh project" in result.stdout
    real = FakeCloud(tmp_path / "real", project=P)
    assert real.run("--region", R).returncode == 0
    changes = real.changes()
    plan = planned(result)
    # The same commands; the function URLs are not known before the functions exist.
    assert normalized(plan, dry) == normalized(changes, real)
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("Dry run: nothing was changed.") and "is deployed" not in result.stdout


def test_dry_run_without_login_or_project_says_what_stands_for_the_project(tmp_path):
    result = FakeCloud(tmp_path, account="").run("--region", R, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "PROJECT_ID stands for it" in result.stdout
    assert ["services", "enable", *APIS, "--project=PROJECT_ID"] in planned(result)


def test_dry_run_with_a_login_plans_only_what_is_missing(tmp_path):
    state = everything_exists()
    state["policies"][f"projects/{P}"]["roles/logging.logWriter"] = [member("queue"), member("build")]
    cloud = FakeCloud(tmp_path, **state)
    result = cloud.run("--region", R, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert planned(result) == [project_check_and_grant("backfill", "roles/logging.logWriter")[1], *redeploys(cloud)]
    assert cloud.changes() == []


# ---- Jobs: many per workflow, catch-up, unschedule, listing --------------------------------

def job(cloud, name):
    return cloud.state["jobs"].get(f"projects/{P}/locations/{R}/jobs/{PRE}-{name}")


def body_of(job):
    return json.loads(base64.b64decode(job["httpTarget"]["body"]))


def schedule(cloud, *args):
    result = cloud.run("schedule", *args, "--region", R)
    assert result.returncode == 0, result.stderr
    return result


def test_a_workflow_keeps_many_jobs_each_with_its_own_body_schedule_and_zone(tmp_path):
    cloud = FakeCloud(tmp_path, **everything_exists())
    schedule(cloud, "nightly", "--job", "orders", "--schedule", "0 1 * * *", "--time-zone", "Europe/Stockholm",
             "--body", '{"table": "orders"}')
    schedule(cloud, "nightly", "--job", "sales", "--schedule", "30 2 * * 1-5", "--time-zone", "America/New_York",
             "--body", '{"table": "sales"}')
    orders, sales = job(cloud, "orders"), job(cloud, "sales")
    assert body_of(orders) == {"table": "orders"} and body_of(sales) == {"table": "sales"}
    assert (orders["schedule"], orders["timeZone"]) == ("0 1 * * *", "Europe/Stockholm")
    assert (sales["schedule"], sales["timeZone"]) == ("30 2 * * 1-5", "America/New_York")
    assert sales["httpTarget"]["uri"].endswith("/workflows/nightly/executions?timezone=America/New_York")

    listing = cloud.run("jobs", "--region", R)
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines()]
    assert rows[0] == ["JOB", "WORKFLOW", "SCHEDULE", "TIME_ZONE", "NEXT_RUN", "STATE"]
    assert [row[0] for row in rows[1:]] == ["orders", "sales"]
    assert rows[2][1] == f"projects/{P}/locations/{R}/workflows/nightly" and rows[2][-2:] == ["2024-03-05T00:17:00Z", "ENABLED"]

    assert cloud.run("unschedule", "orders", "--region", R).returncode == 0
    assert job(cloud, "orders") is None and job(cloud, "sales") is not None
    again = cloud.run("unschedule", "orders", "--region", R)
    assert again.returncode == 0 and cloud.changes() == [] and f"= no job {PRE}-orders" in again.stdout


def test_jobs_lists_only_jobs_that_target_the_proxy(tmp_path):
    state = everything_exists()
    state["jobs"] = {f"projects/{P}/locations/{R}/jobs/other": {"schedule": "* * * * *", "httpTarget": {"uri": "https://example.com/x"}}}
    result = FakeCloud(tmp_path, **state).run("jobs", "--region", R)
    assert result.returncode == 0 and "No Scheduler job" in result.stdout and "other" not in result.stdout


def test_catch_up_keeps_a_daily_job_that_backfills_the_lookback_through_the_proxy(tmp_path):
    cloud = FakeCloud(tmp_path, **everything_exists())
    schedule(cloud, "nightly", "--job", "orders", "--schedule", "0 * * * *", "--time-zone", "Etc/GMT+5",
             "--body", '{"table": "orders"}', "--catch-up", "P7D")
    catch_up = job(cloud, "orders-catch-up")
    assert body_of(catch_up) == {"workflow": f"projects/{P}/locations/{R}/workflows/nightly", "step": "0 * * * *",
                                 "timezone": "Etc/GMT+5", "params": {"table": "orders"}, "lookback": "P7D"}
    assert catch_up["httpTarget"]["uri"] == \
        f"{PROXY_URL}/v1/projects/{P}/locations/{R}/workflows/{PRE}-backfill/executions?timezone=Etc/GMT%2B5"
    assert catch_up["httpTarget"]["oidcToken"] == {"serviceAccountEmail": sa("scheduler"), "audience": PROXY_URL}
    assert catch_up["schedule"] == "17 3 * * *" and catch_up["timeZone"] == "Etc/GMT+5"
    # Scheduled again without --catch-up: the catch-up job goes, the job stays.
    schedule(cloud, "nightly", "--job", "orders", "--schedule", "0 * * * *", "--time-zone", "Etc/GMT+5")
    assert job(cloud, "orders-catch-up") is None and job(cloud, "orders") is not None


@pytest.mark.parametrize("duration", ["7D", "P", "PT", "P1M", "P1Y", "P1DT", "-P1D", "P1.5D"])
def test_a_catch_up_that_is_not_a_day_time_duration_is_refused(cloud, duration):
    result = cloud.run("schedule", "nightly", "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC",
                       "--catch-up", duration, "--region", R)
    assert result.returncode == 1 and "invalid --catch-up" in result.stderr and cloud.calls() == []


# ---- migrate ---------------------------------------------------------------------------------

# A job made as Google's guide makes one ("Schedule a workflow using Cloud Scheduler",
# https://cloud.google.com/workflows/docs/schedule-workflow, read 2026-11-28): it POSTs the
# Execution resource, argument as a JSON string, to the Executions API with an OAuth token.
GUIDE_URI = f"https://workflowexecutions.googleapis.com/v1/projects/{P}/locations/{R}/workflows/nightly/executions"
GUIDE_BODY = '{"argument": "{\\"table\\": \\"sales\\"}", "callLogLevel": "LOG_ERRORS_ONLY"}'


def guide_job():
    return {"schedule": "0 9 * * 1", "timeZone": "America/New_York", "state": "ENABLED",
            "scheduleTime": "2024-03-11T13:00:00Z", "attemptDeadline": "180s",
            "retryConfig": {"retryCount": 3, "minBackoffDuration": "10s", "maxBackoffDuration": "300s"},
            "httpTarget": {"uri": GUIDE_URI, "httpMethod": "POST",
                           "body": base64.b64encode(GUIDE_BODY.encode()).decode(),
                           "oauthToken": {"serviceAccountEmail": f"wf-sa@{P}.iam.gserviceaccount.com",
                                          "scope": "https://www.googleapis.com/auth/cloud-platform"}}}


def test_migrate_points_a_workflows_job_at_the_proxy_and_keeps_the_rest(tmp_path):
    state = everything_exists()
    state["jobs"] = {f"projects/{P}/locations/{R}/jobs/weekly": guide_job()}
    cloud = FakeCloud(tmp_path, **state)
    result = cloud.run("migrate", "weekly", "--region", R)
    assert result.returncode == 0, result.stderr
    new_uri = f"{PROXY_URL}/v1/projects/{P}/locations/{R}/workflows/nightly/executions?timezone=America/New_York"
    assert cloud.changes() == [["scheduler", "jobs", "update", "http", "weekly", f"--location={R}", f"--project={P}",
                                f"--uri={new_uri}", "--update-headers=Content-Type=application/json",
                                f"--oidc-service-account-email={sa('scheduler')}",
                                f"--oidc-token-audience={PROXY_URL}", "--quiet"]]
    # The change is shown before it is made.
    assert result.stdout.index(new_uri) < result.stdout.index("+ gcloud scheduler jobs update")
    after, before = cloud.state["jobs"][f"projects/{P}/locations/{R}/jobs/weekly"], guide_job()
    for key in ("schedule", "timeZone", "retryConfig", "attemptDeadline"):
        assert after[key] == before[key]
    assert after["httpTarget"]["body"] == before["httpTarget"]["body"]
    assert after["httpTarget"]["uri"] == new_uri and "oauthToken" not in after["httpTarget"]
    again = cloud.run("migrate", "weekly", "--region", R)
    assert again.returncode == 0 and cloud.changes() == [] and "already" in again.stdout


def test_migrate_dry_run_shows_the_change_and_makes_none(tmp_path):
    state = everything_exists()
    state["jobs"] = {f"projects/{P}/locations/{R}/jobs/weekly": guide_job()}
    cloud = FakeCloud(tmp_path, **state)
    before = cloud.state_file.read_bytes()
    result = cloud.run("migrate", "weekly", "--region", R, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert cloud.state_file.read_bytes() == before and cloud.changes() == []
    assert GUIDE_URI in result.stdout and f"{PROXY_URL}/v1/" in result.stdout
    assert planned(result)[0][:5] == ["scheduler", "jobs", "update", "http", "weekly"]


@pytest.mark.parametrize("uri", ["https://example.com/hook", None])
def test_migrate_refuses_jobs_that_do_not_start_a_workflow(tmp_path, uri):
    state = everything_exists()
    if uri:
        state["jobs"] = {f"projects/{P}/locations/{R}/jobs/weekly": {**guide_job(), "httpTarget": {"uri": uri}}}
    cloud = FakeCloud(tmp_path, **state)
    result = cloud.run("migrate", "weekly", "--region", R)
    assert result.returncode == 1 and cloud.changes() == []
    assert ("nothing to migrate" if uri else "no Scheduler job weekly") in result.stderr


# ---- destroy ---------------------------------------------------------------------------------

def deployed_with_jobs(tmp_path):
    cloud = FakeCloud(tmp_path, project=P)
    assert cloud.run("--region", R, "--allowed-workflows", f"{P}/{R}/*,data-proj/us-east1/etl").returncode == 0
    schedule(cloud, "nightly", "--job", "orders", "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC", "--catch-up", "P7D")
    schedule(cloud, "nightly", "--job", "sales", "--schedule", "0 2 * * *", "--time-zone", "Etc/UTC")
    state = cloud.state
    state["jobs"][f"projects/{P}/locations/{R}/jobs/mine"] = {"httpTarget": {"uri": "https://example.com/x"}}
    cloud.state = state
    return cloud


def test_destroy_removes_everything_bindings_before_their_accounts_and_keeps_the_runs(tmp_path):
    cloud = deployed_with_jobs(tmp_path)
    result = cloud.run("destroy", "--region", R)
    assert result.returncode == 0, result.stderr
    state = cloud.state
    assert not state["functions"] and not state["workflows"]
    assert list(state["jobs"]) == [f"projects/{P}/locations/{R}/jobs/mine"]
    assert state["serviceAccounts"] == []
    # No binding was left to linger as deleted:serviceAccount:...?uid=.
    assert "deleted:" not in json.dumps(state["policies"])
    assert BUCKET in state["buckets"] and state["policies"][BUCKET] == {
        "roles/storage.objectUser if run ledger only": [], "roles/storage.objectViewer": [],
        "roles/storage.objectCreator if backfill hand-overs only": [],
        "roles/storage.objectViewer if backfill hand-overs only": [],
        "roles/storage.objectUser if audit alerts only": []}
    changes = cloud.changes()
    first_account_deletion = next(i for i, argv in enumerate(changes) if argv[:3] == ["iam", "service-accounts", "delete"])
    assert all("remove-iam-policy-binding" not in argv for argv in changes[first_account_deletion:])
    # Idempotent: a second destroy finds nothing to do.
    again = cloud.run("destroy", "--region", R)
    assert again.returncode == 0, again.stderr
    assert cloud.changes() == []


def test_destroy_with_delete_runs_removes_the_bucket(tmp_path):
    cloud = deployed_with_jobs(tmp_path)
    assert cloud.run("destroy", "--delete-runs", "--region", R).returncode == 0
    assert ["storage", "rm", "--recursive", BUCKET] in cloud.changes()
    assert BUCKET not in cloud.state["buckets"]


def test_destroy_warns_about_jobs_it_did_not_make_that_target_the_proxy(tmp_path):
    state = everything_exists()
    job = guide_job()
    job["httpTarget"]["uri"] = f"{PROXY_URL}/v1/projects/{P}/locations/{R}/workflows/nightly/executions?timezone=Etc/UTC"
    state["jobs"] = {f"projects/{P}/locations/{R}/jobs/weekly": job}
    cloud = FakeCloud(tmp_path, **state)
    result = cloud.run("destroy", "--region", R)
    assert result.returncode == 0, result.stderr
    assert "job weekly (not made by deploy.sh) targets the proxy" in result.stderr
    assert f"projects/{P}/locations/{R}/jobs/weekly" in cloud.state["jobs"]


def test_destroy_dry_run_without_login_plans_the_whole_teardown(tmp_path):
    cloud = FakeCloud(tmp_path, account="")
    result = cloud.run("destroy", "--project", P, "--region", R, "--dry-run")
    assert result.returncode == 0, result.stderr
    plan = planned(result)
    assert plan[0][:4] == ["scheduler", "jobs", "delete", f"{PRE}-audit"]
    assert plan[1][:3] == ["logging", "metrics", "delete"] and plan[2][:3] == ["workflows", "delete", f"{PRE}-backfill"]
    assert [argv[3] for argv in plan if argv[:3] == ["iam", "service-accounts", "delete"]] == \
        [sa(name) for name in ("range", "proxy", "scheduler", "backfill", "audit", "queue", "build")]
    assert f"(for each Scheduler job {PRE}-* that targets the proxy)" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "Dry run: nothing was changed."


# ---- The audit: its function, job, metric, alert policy and least privilege (docs/alerts.md) ---

DISCOVERY = ROOT / ".venv/lib"  # google-api-python-client ships Google's discovery documents
CHANNELS = f"projects/{P}/notificationChannels/123,projects/{P}/notificationChannels/456"


def discovery(name):
    [path] = DISCOVERY.glob(f"python3*/site-packages/googleapiclient/discovery_cache/documents/{name}.json")
    return json.loads(path.read_text())["schemas"]


def test_the_audit_account_gets_only_what_a_pass_needs(cloud):
    assert cloud.run("--project", P, "--region", R).returncode == 0
    state = cloud.state
    assert project_roles(state, member("audit")) == [AUDIT_ROLE, "roles/cloudscheduler.viewer"]
    # pauseAfter: the audit pauses a job (docs/proxy.md), and may do nothing else to jobs.
    assert state["roles"][AUDIT_ROLE]["includedPermissions"] == ["cloudscheduler.jobs.pause", "workflows.executions.get",
                                                                 "workflows.executions.list"]
    # Listings name the bucket, not an object, so they take an unconditioned objectViewer; writes
    # only under runs/ (learned states) and alerts/ (its records).
    assert [role for role, who in state["policies"][BUCKET].items() if member("audit") in who] == [
        "roles/storage.objectViewer", "roles/storage.objectUser if run ledger only",
        "roles/storage.objectUser if audit alerts only"]
    assert "--condition=" + ALERTS in str(cloud.changes())
    services = f"projects/{P}/locations/{R}/services/{PRE}-"
    assert member("audit") in state["policies"][services + "range"]["roles/run.invoker"]
    assert member("audit") not in str(state["policies"][services + "proxy"])
    assert state["policies"][services + "audit"] == {"roles/run.invoker": [member("scheduler")]}
    env = state["functions"][f"projects/{P}/locations/{R}/functions/{PRE}-audit"]["env"]
    assert env == {"GOOGLE_CLOUD_PROJECT": P, "LOCATION": R, "RUNS_BUCKET": f"{P}-{PRE}-runs",
                   "RANGE_URL": RANGE_URL, "PROXY_URL": PROXY_URL}
    job = state["jobs"][f"projects/{P}/locations/{R}/jobs/{PRE}-audit"]
    assert job["schedule"] == "*/5 * * * *" and job["httpTarget"]["uri"] == AUDIT_URL
    assert job["httpTarget"]["oidcToken"] == {"serviceAccountEmail": sa("scheduler"), "audience": AUDIT_URL}


def test_the_queue_waiter_gets_only_what_it_needs_and_the_proxy_knows_where_it_is(cloud):
    """overlap=queue: a queued time waits in an execution of PREFIX-queue, which the proxy starts
    (executions.create, in the role it already holds) and which re-delivers it to the proxy."""
    assert cloud.run("--project", P, "--region", R).returncode == 0
    state = cloud.state
    flags = state["workflows"][QUEUE_WORKFLOW]["flags"]
    assert (flags["source"], flags["service-account"], flags["set-env-vars"]) == (
        "workflows/queue.yaml", sa("queue"), f"PROXY_URL={PROXY_URL}")
    proxy = state["functions"][f"projects/{P}/locations/{R}/functions/{PRE}-proxy"]["env"]
    assert proxy["QUEUE_WORKFLOW"] == QUEUE_WORKFLOW
    assert "workflows.executions.create" in state["roles"][EXECUTIONS_ROLE]["includedPermissions"]
    # Its sys.log lines and the proxy's URL (OIDC), nothing else: no bucket, no other function.
    assert project_roles(state, member("queue")) == ["roles/logging.logWriter"]
    services = f"projects/{P}/locations/{R}/services/{PRE}-"
    assert [name for name, policy in state["policies"].items() if member("queue") in json.dumps(policy)] == [
        f"projects/{P}", services + "proxy"]
    assert member("queue") in state["policies"][services + "proxy"]["roles/run.invoker"]


def test_the_metric_counts_the_audits_alert_lines_by_kind_and_job(cloud):
    """Checked against the LogMetric schema of Google's logging v2 discovery document, and
    against the log line the audit writes (workflows_runner/alerts.py)."""
    from workflows_runner import alerts
    assert cloud.run("--project", P, "--region", R).returncode == 0
    [metric] = cloud.state["metrics"].values()
    schema = discovery("logging.v2")
    assert set(metric) <= set(schema["LogMetric"]["properties"])
    assert set(metric["metricDescriptor"]) <= set(schema["MetricDescriptor"]["properties"])
    assert metric["metricDescriptor"]["metricKind"] in schema["MetricDescriptor"]["properties"]["metricKind"]["enum"]
    assert {label["key"] for label in metric["metricDescriptor"]["labels"]} == set(metric["labelExtractors"]) == {"kind", "job"}
    line = alerts.log_entry(alerts.Alert("failed", "projects/p/locations/l/jobs/j", "projects/p/locations/l/workflows/w",
                                         "2026-01-01T00:00:00Z", 1, None, "boom", "2026-01-01T00:20:00Z"), "alert")
    assert line["event"] == "alert" and {"kind", "job"} <= set(line)
    assert 'jsonPayload.event="alert"' in metric["filter"] and f'service_name="{PRE}-audit"' in metric["filter"]


def test_notification_channels_get_one_alert_policy_on_the_metric(cloud):
    assert cloud.run("--project", P, "--region", R).returncode == 0
    assert "alertPolicies" not in cloud.state  # no channels, no policy
    for _ in range(2):  # the second deploy updates the policy it finds by name
        result = cloud.run("--project", P, "--region", R, "--notification-channels", CHANNELS)
        assert result.returncode == 0, result.stderr
    [policy] = cloud.state["alertPolicies"].values()
    schema = discovery("monitoring.v3")
    assert set(policy) <= set(schema["AlertPolicy"]["properties"])
    [condition] = policy["conditions"]
    threshold = condition["conditionThreshold"]
    assert set(threshold) <= set(schema["MetricThreshold"]["properties"])
    assert set(threshold["aggregations"][0]) <= set(schema["Aggregation"]["properties"])
    assert policy["notificationChannels"] == CHANNELS.split(",")
    assert f'metric.type="logging.googleapis.com/user/{METRIC}"' in threshold["filter"]
    assert threshold["comparison"] == "COMPARISON_GT" and threshold["thresholdValue"] == 0
    updates = [argv for argv in cloud.changes() if argv[:4] == ["alpha", "monitoring", "policies", "update"]]
    assert len(updates) == 1


@pytest.mark.parametrize("channels", ["123", f"projects/{P}/notificationChannels/x", f"projects/{P}/notificationChannels/1,"])
def test_bad_notification_channels_are_refused(cloud, channels):
    result = cloud.run("--project", P, "--region", R, "--notification-channels", channels)
    assert result.returncode == 1 and "invalid --notification-channels" in result.stderr and cloud.calls() == []


def test_the_audit_jobs_name_cannot_be_scheduled_over(tmp_path):
    cloud = FakeCloud(tmp_path, **everything_exists())
    result = cloud.run("schedule", "nightly", "--job", "audit", "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC",
                       "--region", R)
    assert result.returncode == 1 and "taken by the audit function" in result.stderr and cloud.changes() == []


def test_destroy_removes_the_audit_job_metric_policy_function_and_grants(tmp_path):
    cloud = FakeCloud(tmp_path, project=P)
    assert cloud.run("--region", R, "--notification-channels", CHANNELS).returncode == 0
    result = cloud.run("destroy", "--region", R)
    assert result.returncode == 0, result.stderr
    state = cloud.state
    assert not state["jobs"] and not state["metrics"] and not state["alertPolicies"] and not state["functions"]
    assert member("audit") not in json.dumps(state["policies"]) and sa("audit") not in state["serviceAccounts"]
    kept = next(line for line in result.stdout.splitlines() if line.startswith("Kept the custom roles"))
    assert "workflows_runner_auditReader" in kept and "workflows_runner_jobResumer" in kept  # ids stay reserved


def test_schedule_writes_the_audit_settings_on_the_jobs_uri_as_wfr_reads_them(tmp_path):
    from workflows_runner import job_settings
    from datetime import datetime, timedelta, timezone
    cloud = FakeCloud(tmp_path, **everything_exists())
    result = cloud.run("schedule", "nightly", "--schedule", "0 1 * * *", "--time-zone", "Etc/GMT+5", "--region", R,
                       "--deadline", "PT2H", "--since", "2026-03-01T00:00:00+01:00", "--grace", "PT15M",
                       "--lookback", "P3D")
    assert result.returncode == 0, result.stderr
    uri = cloud.state["jobs"][f"projects/{P}/locations/{R}/jobs/{PRE}-nightly"]["httpTarget"]["uri"]
    settings = job_settings.from_uri(uri)   # wfr's and the audit's one reader
    assert (settings.timezone, settings.deadline, settings.grace, settings.lookback) == (
        "Etc/GMT+5", timedelta(hours=2), timedelta(minutes=15), timedelta(days=3))
    assert settings.since == datetime(2026, 2, 28, 23, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("flag, value", [("--deadline", "2h"), ("--grace", "P1Y"), ("--lookback", "PT"),
                                         ("--since", "2026-03-01"), ("--since", "2026-03-01T00:00:00")])
def test_bad_audit_settings_are_refused_before_any_call(tmp_path, flag, value):
    cloud = FakeCloud(tmp_path, **everything_exists())
    result = cloud.run("schedule", "nightly", "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC", "--region", R,
                       flag, value)
    assert result.returncode == 1 and f"invalid {flag}" in result.stderr and cloud.calls() == []
