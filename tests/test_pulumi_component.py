"""workflows_runner_pulumi under Pulumi's unit-test mocks (tests/pulumi_mocks.py): no CLI, no cloud.

Expected values are written out by hand from the issue and deploy.sh's documented behaviour;
tests/test_pulumi_parity.py checks the same declarations against deploy.sh's own plan.
"""
import base64
import json
import runpy
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.pulumi_mocks import declare, mock_url
from workflows_runner_pulumi import RunnerConfigError, ScheduledWorkflow, WorkflowsRunner

ROOT = Path(__file__).resolve().parents[1]
P, R, PRE = "demo-proj", "europe-west1", "wfr-test"
ALLOWED = ["demo-proj/europe-west1/*", "other-proj/us-east1/etl-*"]


def sa(key):
    return f"{PRE}-{key}@{P}.iam.gserviceaccount.com"


def member(key):
    return f"serviceAccount:{sa(key)}"


OPERATORS = ["user:ana@example.com", "group:ops@example.com"]


def runner_and_jobs():
    runner = WorkflowsRunner("runner", region=R, prefix=PRE, allowed_workflows=ALLOWED, project=P, operators=OPERATORS)
    nightly = ScheduledWorkflow("nightly", runner=runner, workflow="sales", schedule="0 1 * * *",
                                time_zone="Europe/Stockholm", body={"table": "sales"}, catch_up="P7D")
    ScheduledWorkflow("elsewhere", runner=runner, workflow="projects/other-proj/locations/us-east1/workflows/etl-a",
                      schedule="*/15 * * * *", time_zone="Etc/GMT+5", body='{"full": true}')
    return {"range_url": runner.range_url, "proxy_url": runner.proxy_url, "workflow": runner.backfill_workflow,
            "bucket": runner.runs_bucket_name, "scheduler": runner.scheduler_email, "job": nightly.job.name}


@pytest.fixture(scope="module")
def program():
    return declare(runner_and_jobs)


def test_the_runner_enables_the_apis_deploy_sh_enables_and_never_disables_them(program):
    apis = program.of_type("gcp:projects/service:Service")
    assert sorted(api.inputs["service"] for api in apis) == sorted([
        "cloudresourcemanager.googleapis.com", "iam.googleapis.com", "cloudfunctions.googleapis.com",
        "run.googleapis.com", "cloudbuild.googleapis.com", "artifactregistry.googleapis.com",
        "workflows.googleapis.com", "workflowexecutions.googleapis.com",
        "cloudscheduler.googleapis.com", "logging.googleapis.com", "storage.googleapis.com",
        "monitoring.googleapis.com"])
    assert all(api.inputs["project"] == P and api.inputs["disableOnDestroy"] is False for api in apis)


def test_seven_service_accounts_named_from_the_prefix(program):
    accounts = {a.inputs["accountId"]: (a.inputs["displayName"], a.inputs["project"])
                for a in program.of_type("gcp:serviceaccount/account:Account")}
    assert accounts == {
        f"{PRE}-range": ("workflows-runner range function", P),
        f"{PRE}-proxy": ("workflows-runner proxy function", P),
        f"{PRE}-scheduler": ("workflows-runner Cloud Scheduler jobs", P),
        f"{PRE}-backfill": ("workflows-runner backfill workflow", P),
        f"{PRE}-audit": ("workflows-runner audit function", P),
        f"{PRE}-queue": ("workflows-runner queue waiter", P),
        f"{PRE}-build": ("workflows-runner function builds", P),
    }


def archive_of(program, function):
    source = function.inputs["buildConfig"]["source"]["storageSource"]
    [obj] = [o for o in program.of_type("gcp:storage/bucketObject:BucketObject") if o.inputs["name"] == source["object"]]
    assert obj.inputs["bucket"] == source["bucket"] == f"{P}-{PRE}-sources"
    return obj.inputs["source"]


def folder_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


def test_the_functions_are_2nd_gen_python312_with_deploy_sh_settings(program):
    functions = {f.inputs["name"]: f.inputs for f in program.of_type("gcp:cloudfunctionsv2/function:Function")}
    assert sorted(functions) == [f"{PRE}-audit", f"{PRE}-proxy", f"{PRE}-range"]
    range_, proxy, audit = functions[f"{PRE}-range"], functions[f"{PRE}-proxy"], functions[f"{PRE}-audit"]
    for inputs in (range_, proxy, audit):
        assert (inputs["project"], inputs["location"], inputs["buildConfig"]["runtime"]) == (P, R, "python312")
        assert "eventTrigger" not in inputs  # HTTP trigger
        assert inputs["buildConfig"]["serviceAccount"] == f"projects/{P}/serviceAccounts/{sa('build')}"
    assert range_["buildConfig"]["entryPoint"] == "expand_range"
    assert proxy["buildConfig"]["entryPoint"] == "proxy"
    assert range_["serviceConfig"] == {"serviceAccountEmail": sa("range"), "environmentVariables": {}}
    assert proxy["serviceConfig"] == {
        "serviceAccountEmail": sa("proxy"), "timeoutSeconds": 120,
        "environmentVariables": {"GOOGLE_CLOUD_PROJECT": P, "ALLOWED_WORKFLOWS": ",".join(ALLOWED),
                                 "RUNS_BUCKET": f"{P}-{PRE}-runs",
                                 "QUEUE_WORKFLOW": f"projects/{P}/locations/{R}/workflows/{PRE}-queue"}}
    assert audit["buildConfig"]["entryPoint"] == "audit_pass"
    assert audit["serviceConfig"] == {
        "serviceAccountEmail": sa("audit"), "timeoutSeconds": 180,
        "environmentVariables": {"GOOGLE_CLOUD_PROJECT": P, "LOCATION": R, "RUNS_BUCKET": f"{P}-{PRE}-runs",
                                 "RANGE_URL": mock_url(f"{PRE}-range"), "PROXY_URL": mock_url(f"{PRE}-proxy")}}


def test_the_audit_is_built_from_its_folder_plus_the_modules_its_shared_file_lists(program):
    [function] = [f for f in program.of_type("gcp:cloudfunctionsv2/function:Function") if f.inputs["name"] == f"{PRE}-audit"]
    archive = archive_of(program, function)
    modules = [line.strip() for line in (ROOT / "functions/audit/SHARED").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert sorted(archive.assets) == sorted([*folder_files(ROOT / "functions/audit"),
                                             *(f"workflows_runner/{m}" for m in modules)])
    assert all(Path(archive.assets[f"workflows_runner/{m}"].path).resolve() == ROOT / "workflows_runner" / m
               for m in modules)


@pytest.mark.parametrize("name", ["range", "proxy"])
def test_each_function_is_built_from_an_archive_of_exactly_its_folder(program, name):
    [function] = [f for f in program.of_type("gcp:cloudfunctionsv2/function:Function") if f.inputs["name"] == f"{PRE}-{name}"]
    archive = archive_of(program, function)
    folder = ROOT / "functions" / name
    assert sorted(archive.assets) == folder_files(folder)
    assert all(Path(asset.path).resolve() == folder / relative for relative, asset in archive.assets.items())


def test_a_changed_source_file_changes_the_archive_name_and_an_unchanged_one_keeps_it(tmp_path):
    checkout = tmp_path / "checkout"
    for part in ("functions", "workflows", "workflows_runner"):
        shutil.copytree(ROOT / part, checkout / part, ignore=shutil.ignore_patterns("__pycache__"))

    def objects():
        program = declare(lambda: WorkflowsRunner("r", region=R, project=P, source_dir=checkout) and None)
        return {o.name: o.inputs["name"] for o in program.of_type("gcp:storage/bucketObject:BucketObject")}

    first = objects()
    assert objects() == first
    with open(checkout / "functions/range/main.py", "a") as file:
        file.write("# changed\n")
    second = objects()
    assert second["r-range-source"] != first["r-range-source"]
    assert second["r-proxy-source"] == first["r-proxy-source"]
    with open(checkout / "workflows_runner/status.py", "a") as file:  # a shared module: the audit's changes
        file.write("# changed\n")
    third = objects()
    assert third["r-audit-source"] != second["r-audit-source"] and third["r-range-source"] == second["r-range-source"]


def workflow(program, name):
    [found] = [w.inputs for w in program.of_type("gcp:workflows/workflow:Workflow") if w.inputs["name"] == f"{PRE}-{name}"]
    return found


def test_the_backfill_workflow_gets_the_function_urls_and_runs_as_its_account(program):
    inputs = workflow(program, "backfill")
    assert (inputs["name"], inputs["region"], inputs["project"], inputs["serviceAccount"]) == (
        f"{PRE}-backfill", R, P, sa("backfill"))
    assert inputs["sourceContents"] == (ROOT / "workflows/backfill.yaml").read_text()
    assert inputs["userEnvVars"] == {"RANGE_URL": mock_url(f"{PRE}-range"), "PROXY_URL": mock_url(f"{PRE}-proxy"),
                                     "RUNS_BUCKET": f"{P}-{PRE}-runs"}
    assert inputs["userEnvVars"] == {"RANGE_URL": program.outputs["range_url"], "PROXY_URL": program.outputs["proxy_url"],
                                     "RUNS_BUCKET": program.outputs["bucket"]}


def test_the_queue_waiter_gets_the_proxy_url_and_runs_as_its_account(program):
    inputs = workflow(program, "queue")
    assert (inputs["region"], inputs["project"], inputs["serviceAccount"]) == (R, P, sa("queue"))
    assert inputs["sourceContents"] == (ROOT / "workflows/queue.yaml").read_text()
    assert inputs["userEnvVars"] == {"PROXY_URL": mock_url(f"{PRE}-proxy")} == {"PROXY_URL": program.outputs["proxy_url"]}
    assert inputs["deletionProtection"] is False
    assert len(program.of_type("gcp:workflows/workflow:Workflow")) == 2


def test_the_buckets_are_private_with_uniform_access_and_the_runs_ledger_is_never_force_destroyed(program):
    buckets = {b.inputs["name"]: b.inputs for b in program.of_type("gcp:storage/bucket:Bucket")}
    assert sorted(buckets) == [f"{P}-{PRE}-runs", f"{P}-{PRE}-sources"]
    for inputs in buckets.values():
        assert (inputs["project"], inputs["location"]) == (P, R.upper())
        assert inputs["uniformBucketLevelAccess"] is True
        assert inputs["publicAccessPrevention"] == "enforced"
    assert not buckets[f"{P}-{PRE}-runs"].get("forceDestroy", False)
    assert program.outputs["bucket"] == f"{P}-{PRE}-runs"


def job(program, name):
    [found] = [j.inputs for j in program.of_type("gcp:cloudscheduler/job:Job") if j.inputs["name"] == f"{PRE}-{name}"]
    return found


def test_a_scheduled_workflow_is_a_job_calling_the_proxy_with_deploy_sh_retry_policy(program):
    inputs = job(program, "nightly")
    proxy = mock_url(f"{PRE}-proxy")
    assert {key: inputs[key] for key in ("project", "region", "schedule", "timeZone", "attemptDeadline")} == {
        "project": P, "region": R, "schedule": "0 1 * * *", "timeZone": "Europe/Stockholm", "attemptDeadline": "180s"}
    assert inputs["retryConfig"] == {"retryCount": 5, "minBackoffDuration": "30s", "maxBackoffDuration": "600s"}
    target = inputs["httpTarget"]
    assert target["uri"] == f"{proxy}/v1/projects/{P}/locations/{R}/workflows/sales/executions?timezone=Europe/Stockholm"
    assert (target["httpMethod"], target["headers"]) == ("POST", {"Content-Type": "application/json"})
    assert json.loads(base64.b64decode(target["body"])) == {"table": "sales"}
    assert program.outputs["job"] == f"{PRE}-nightly"


def test_the_job_signs_its_oidc_token_as_the_scheduler_account_for_the_proxy_audience(program):
    for name in ("nightly", "elsewhere"):
        token = job(program, name)["httpTarget"]["oidcToken"]
        assert token == {"serviceAccountEmail": sa("scheduler"), "audience": mock_url(f"{PRE}-proxy")}
        assert token == {"serviceAccountEmail": program.outputs["scheduler"], "audience": program.outputs["proxy_url"]}


def test_a_workflow_given_by_full_name_and_a_plus_in_the_zone_are_sent_as_such(program):
    inputs = job(program, "elsewhere")
    assert inputs["httpTarget"]["uri"] == (
        f"{mock_url(f'{PRE}-proxy')}/v1/projects/other-proj/locations/us-east1/workflows/etl-a/executions?timezone=Etc/GMT%2B5")
    assert inputs["timeZone"] == "Etc/GMT+5"
    assert json.loads(base64.b64decode(inputs["httpTarget"]["body"])) == {"full": True}


def iam_grants(program):
    """(resource type, resource, role, member, condition title) of every IAM grant declared."""
    grants = set()
    for resource in program.resources:
        if "iam" not in resource.type.lower() or resource.type.endswith("CustomRole"):
            continue
        inputs = resource.inputs
        target = inputs.get("project") if resource.type.startswith("gcp:projects/") else inputs.get("bucket", inputs.get("name"))
        grants.add((resource.type, target, inputs["role"], inputs["member"], inputs.get("condition", {}).get("title")))
    return grants


def test_roles_are_granted_per_resource_and_nowhere_else(program):
    service = f"projects/{P}/locations/{R}/services/{PRE}"
    runs = f"{P}-{PRE}-runs"
    project, bucket, run = ("gcp:projects/iAMMember:IAMMember", "gcp:storage/bucketIAMMember:BucketIAMMember",
                            "gcp:cloudrunv2/serviceIamMember:ServiceIamMember")
    executions = f"projects/{P}/roles/wfr_test_executionUser"
    ledger = "run ledger only"
    assert iam_grants(program) == {
        (project, P, executions, member("proxy"), None),
        (project, P, f"projects/{P}/roles/wfr_test_backfill", member("backfill"), None),
        (project, P, "roles/logging.logWriter", member("backfill"), None),
        # The queue waiter: its log lines and the proxy, nothing else.
        (project, P, "roles/logging.logWriter", member("queue"), None),
        (run, f"{service}-proxy", "roles/run.invoker", member("queue"), None),
        *[(project, P, role, member("build"), None)
          for role in ("roles/logging.logWriter", "roles/artifactregistry.writer", "roles/storage.objectViewer")],
        # The audit: list the jobs, read executions (its own custom role), the ledger, the range function.
        (project, P, "roles/cloudscheduler.viewer", member("audit"), None),
        (project, P, f"projects/{P}/roles/wfr_test_auditReader", member("audit"), None),
        (bucket, runs, "roles/storage.objectViewer", member("audit"), None),
        (bucket, runs, "roles/storage.objectUser", member("audit"), ledger),
        (bucket, runs, "roles/storage.objectUser", member("audit"), "audit alerts only"),
        (run, f"{service}-range", "roles/run.invoker", member("audit"), None),
        (run, f"{service}-audit", "roles/run.invoker", member("scheduler"), None),
        # other-proj is in the allowlist: the proxy starts runs there, the backfill reads them.
        (project, "other-proj", "projects/other-proj/roles/wfr_test_executionUser", member("proxy"), None),
        (project, "other-proj", "projects/other-proj/roles/wfr_test_executionReader", member("backfill"), None),
        (bucket, runs, "roles/storage.objectViewer", member("proxy"), None),
        (bucket, runs, "roles/storage.objectUser", member("proxy"), ledger),
        (bucket, runs, "roles/storage.objectCreator", member("backfill"), "backfill hand-overs only"),
        (bucket, runs, "roles/storage.objectViewer", member("backfill"), "backfill hand-overs only"),
        (run, f"{service}-range", "roles/run.invoker", member("backfill"), None),
        (run, f"{service}-proxy", "roles/run.invoker", member("backfill"), None),
        (run, f"{service}-proxy", "roles/run.invoker", member("scheduler"), None),
        # Operators: what every wfr command needs.
        *[grant for operator in OPERATORS for grant in (
            (project, P, executions, operator, None),
            (project, P, f"projects/{P}/roles/wfr_test_jobResumer", operator, None),  # wfr resume
            (project, P, "roles/cloudfunctions.viewer", operator, None),
            (project, P, "roles/cloudscheduler.viewer", operator, None),
            (bucket, runs, "roles/storage.objectViewer", operator, None),
            (bucket, runs, "roles/storage.objectUser", operator, ledger),
            (run, f"{service}-range", "roles/run.invoker", operator, None),
            (run, f"{service}-proxy", "roles/run.invoker", operator, None))],
    }
    conditions = {r.inputs["condition"]["expression"] for r in program.of_type(bucket) if "condition" in r.inputs}
    assert conditions == {f'resource.name.startsWith("projects/_/buckets/{runs}/objects/runs/")',
                          f'resource.name.startsWith("projects/_/buckets/{runs}/objects/backfills/")',
                          f'resource.name.startsWith("projects/_/buckets/{runs}/objects/alerts/")'}


def test_custom_roles_hold_only_the_calls_made(program):
    roles = {(r.inputs["project"], r.inputs["roleId"]): r.inputs for r in program.of_type("gcp:projects/iAMCustomRole:IAMCustomRole")}
    assert {key: tuple(inputs["permissions"]) for key, inputs in roles.items()} == {
        (P, "wfr_test_executionUser"): ("workflows.executions.cancel", "workflows.executions.create",
                                        "workflows.executions.get", "workflows.executions.list"),
        (P, "wfr_test_backfill"): ("workflows.executions.create", "workflows.executions.get"),
        (P, "wfr_test_auditReader"): ("cloudscheduler.jobs.pause", "workflows.executions.get", "workflows.executions.list"),
        # jobs.resume checks cloudscheduler.jobs.enable; there is no jobs.resume permission
        # (https://cloud.google.com/scheduler/docs/reference/rest/v1beta1/projects.locations.jobs/resume).
        (P, "wfr_test_jobResumer"): ("cloudscheduler.jobs.enable",),
        ("other-proj", "wfr_test_executionUser"): ("workflows.executions.cancel", "workflows.executions.create",
                                                   "workflows.executions.get", "workflows.executions.list"),
        ("other-proj", "wfr_test_executionReader"): ("workflows.executions.get",)}
    assert roles[("other-proj", "wfr_test_executionReader")] == {
        "project": "other-proj", "roleId": "wfr_test_executionReader", "title": "workflows-runner execution reader",
        "description": "Read one execution's state, nothing else: the backfill waits on runs with it",
        "permissions": ["workflows.executions.get"], "stage": "GA"}


def test_a_catch_up_job_starts_the_backfill_daily_over_the_lookback(program):
    inputs = job(program, "nightly-catch-up")
    proxy = mock_url(f"{PRE}-proxy")
    assert (inputs["schedule"], inputs["timeZone"]) == ("17 3 * * *", "Europe/Stockholm")
    assert inputs["httpTarget"]["uri"] == (
        f"{proxy}/v1/projects/{P}/locations/{R}/workflows/{PRE}-backfill/executions?timezone=Europe/Stockholm")
    assert json.loads(base64.b64decode(inputs["httpTarget"]["body"])) == {
        "workflow": f"projects/{P}/locations/{R}/workflows/sales", "step": "0 1 * * *",
        "timezone": "Europe/Stockholm", "params": {"table": "sales"}, "lookback": "P7D"}
    assert inputs["httpTarget"]["oidcToken"] == {"serviceAccountEmail": sa("scheduler"), "audience": proxy}
    assert inputs["retryConfig"] == job(program, "nightly")["retryConfig"]
    assert [j.inputs["name"] for j in program.of_type("gcp:cloudscheduler/job:Job")].count(f"{PRE}-elsewhere-catch-up") == 0


def test_the_allowlist_gains_the_backfill_when_it_does_not_allow_it_for_catch_up_jobs():
    def proxy_allowlist(allowed):
        program = declare(lambda: WorkflowsRunner("r", region=R, project=P, allowed_workflows=allowed) and None)
        [proxy] = [f for f in program.of_type("gcp:cloudfunctionsv2/function:Function") if f.inputs["name"].endswith("-proxy")]
        return proxy.inputs["serviceConfig"]["environmentVariables"]["ALLOWED_WORKFLOWS"]

    assert proxy_allowlist(None) == f"{P}/{R}/*"
    assert proxy_allowlist(f"{P}/*/workflows-runner-*") == f"{P}/*/workflows-runner-*,{P}/{R}/workflows-runner-backfill"
    assert proxy_allowlist(f"{P}/{R}/etl") == f"{P}/{R}/etl,{P}/{R}/workflows-runner-backfill"
    assert proxy_allowlist(f"*/{R}/workflows-runner-backfill") == f"*/{R}/workflows-runner-backfill"


def test_a_build_service_account_of_ones_own_replaces_prefix_build_and_its_role():
    email = "builder@shared-proj.iam.gserviceaccount.com"
    program = declare(lambda: WorkflowsRunner("r", region=R, project=P, build_service_account=email) and None)
    ids = {a.inputs["accountId"] for a in program.of_type("gcp:serviceaccount/account:Account")}
    assert "workflows-runner-build" not in ids and len(ids) == 6
    assert not any(r.inputs["member"].startswith("serviceAccount:workflows-runner-build@")
                   for r in program.of_type("gcp:projects/iAMMember:IAMMember"))
    assert {f.inputs["buildConfig"]["serviceAccount"] for f in program.of_type("gcp:cloudfunctionsv2/function:Function")} == {
        f"projects/{P}/serviceAccounts/{email}"}


def strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def test_no_public_invoker_or_member_anywhere(program):
    # allUsers / allAuthenticatedUsers are the public principals
    # (https://cloud.google.com/iam/docs/principal-identifiers).
    for resource in program.resources:
        for text in strings(resource.inputs):
            assert "allUsers" not in text and "allAuthenticatedUsers" not in text, resource
    members = {grant[3] for grant in iam_grants(program)}
    assert members == {member("proxy"), member("backfill"), member("scheduler"), member("build"), member("audit"),
                       member("queue"), *OPERATORS}
    # No IAM policy or binding resource (which would replace others' grants), only members.
    assert {r.type for r in program.resources if "iam" in r.type.lower()} == {
        "gcp:projects/iAMMember:IAMMember", "gcp:storage/bucketIAMMember:BucketIAMMember",
        "gcp:cloudrunv2/serviceIamMember:ServiceIamMember", "gcp:projects/iAMCustomRole:IAMCustomRole"}


@pytest.mark.parametrize("make, argument", [
    (lambda: WorkflowsRunner("r", region=R, project=P, prefix="a-prefix-that-is-too-long"), "prefix"),
    (lambda: WorkflowsRunner("r", region=R, project=P, prefix="Upper"), "prefix"),
    (lambda: WorkflowsRunner("r", region="europe west1", project=P), "region"),
    (lambda: WorkflowsRunner("r", region=R, project=P, allowed_workflows=["p/l"]), "allowed_workflows"),
    (lambda: WorkflowsRunner("r", region=R, project=P, allowed_workflows=[]), "allowed_workflows"),
    (lambda: WorkflowsRunner("r", region=R), "project"),
    (lambda: WorkflowsRunner("r", region=R, project=P, source_dir="/nonexistent"), "source_dir"),
    (lambda: WorkflowsRunner("r", region=R, project=P, operators=["ana@example.com"]), "operators"),
    (lambda: WorkflowsRunner("r", region=R, project=P, build_service_account="builder"), "build_service_account"),
])
def test_invalid_runner_arguments_fail_before_anything_is_declared_and_name_the_argument(make, argument):
    with pytest.raises(RunnerConfigError) as raised:
        declare(make)
    assert raised.value.argument == argument and "expected" in str(raised.value)


JOB_ERRORS = [
    ("body", dict(body=[1])),
    ("body", dict(body="{")),
    ("time_zone", dict(time_zone="Europe/Stock holm")),
    ("schedule", dict(schedule=" ")),
    ("name", dict(name="j.k")),
    ("name", dict(name="j" * 101)),
    ("schedule", dict(schedule='0 1 * * * "')),
    ("catch_up", dict(catch_up="7 days")),
    ("catch_up", dict(catch_up="PT")),
    ("catch_up", dict(catch_up="P")),
    ("deadline", dict(deadline="2h")),
    ("grace", dict(grace="P1Y")),
    ("lookback", dict(lookback="PT")),
    ("since", dict(since="2026-03-01T00:00:00")),
    ("workflow", dict(workflow="projects/p/locations/l/workflows/-bad")),
    ("workflow", dict(workflow="a" * 65)),
    ("workflow", dict(workflow="ends-with-")),
    ("workflow", dict(workflow="projects/p2/locations/l/workflows/w")),
]


def test_invalid_job_arguments_raise_and_name_the_argument():
    raised = []

    def program():
        runner = WorkflowsRunner("r", region=R, project=P)
        for argument, change in JOB_ERRORS:
            arguments = dict(name="j", workflow="w", schedule="0 1 * * *", time_zone="UTC", body={}) | change
            try:
                ScheduledWorkflow(runner=runner, **arguments)
            except RunnerConfigError as error:
                raised.append((argument, error.argument))
        return {}

    program_ = declare(program)
    assert raised == [(argument, argument) for argument, _ in JOB_ERRORS]
    assert [j.inputs["name"] for j in program_.of_type("gcp:cloudscheduler/job:Job")] == ["workflows-runner-audit"]


def test_the_project_comes_from_the_stack_setting_gcp_project_when_not_given():
    program = declare(lambda: WorkflowsRunner("r", region=R) and None, config={"gcp:project": "from-config"})
    assert {r.inputs["project"] for r in program.of_type("gcp:serviceaccount/account:Account")} == {"from-config"}


def test_the_example_program_declares_one_runner_and_two_scheduled_workflows():
    example = ROOT / "examples/pulumi/__main__.py"
    program = declare(lambda: runpy.run_path(str(example), run_name="__main__") and None,
                      config={"gcp:project": "example-proj", "workflows-runner-tests:region": "us-central1"})
    assert len(program.of_type("gcp:cloudfunctionsv2/function:Function")) == 3
    assert len(program.of_type("gcp:workflows/workflow:Workflow")) == 2  # the backfill and the queue waiter
    jobs = sorted(j.inputs["name"] for j in program.of_type("gcp:cloudscheduler/job:Job"))
    assert jobs == ["workflows-runner-audit", "workflows-runner-orders-hourly", "workflows-runner-sales-nightly",
                    "workflows-runner-sales-nightly-catch-up"]
    assert {j.inputs["region"] for j in program.of_type("gcp:cloudscheduler/job:Job")} == {"us-central1"}


def test_the_package_builds_a_wheel_holding_only_the_component(tmp_path):
    # The PEP 517 hook pip calls, on a copy so the checkout stays clean.
    source = tmp_path / "src"
    shutil.copytree(ROOT / "workflows_runner_pulumi", source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    out = tmp_path / "dist"
    out.mkdir()
    built = subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_wheel({str(out)!r}))"],
                           cwd=source, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    wheel = out / built.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    modules = sorted(n for n in names if not n.startswith("workflows_runner_pulumi-"))
    assert modules == sorted(f"workflows_runner_pulumi/{p.name}" for p in (ROOT / "workflows_runner_pulumi").glob("*.py"))
    assert "Requires-Dist: pulumi<4,>=3.272" in metadata and "Requires-Dist: pulumi-gcp<11,>=10.2" in metadata


def test_no_function_requires_pulumi():
    for requirements in ROOT.glob("functions/*/requirements.txt"):
        assert "pulumi" not in requirements.read_text().lower(), requirements
