"""Parity: the Pulumi component declares what `deploy.sh --dry-run` plans for a fresh project:
the same APIs, service accounts, roles on each resource, functions, workflow, bucket and job
fields (tests/deploy_plan.py reads both into one shape). A change to one path without the
other fails here.
"""
import re
from dataclasses import fields

import pytest

from tests.deploy_plan import Plan, plan_of_dry_run, plan_of_pulumi
from tests.fake_gcloud.harness import FakeCloud
from tests.pulumi_mocks import declare
from workflows_runner_pulumi import ScheduledWorkflow, WorkflowsRunner, spec

# The URL deploy.sh prints for a function it has not deployed yet, and the mocks' URL.
PLACEHOLDER_URL = re.compile(r"https://([a-z][-a-z0-9]*)\.example\.invalid", re.ASCII)
MOCK_URL = re.compile(r"https://([a-z][-a-z0-9]*)\.mock\.invalid", re.ASCII)

SCENARIOS = {
    "defaults": dict(project="demo-proj", region="europe-west1", jobs=[
        dict(workflow="sales", schedule="0 1 * * *", time_zone="Europe/Stockholm", body='{"table": "sales"}',
             catch_up="P7D"),
    ]),
    "custom": dict(project="other-proj", region="us-east4", prefix="wr", allowed="a-proj/b/*,c-proj/*/d",
                   operators="user:ana@example.com,group:ops@example.com",
                   channels="projects/other-proj/notificationChannels/7,projects/ops-proj/notificationChannels/8",
                   build="builder@shared-proj.iam.gserviceaccount.com", jobs=[
        dict(workflow="projects/data-proj/locations/asia-east1/workflows/etl", job="etl-5min", schedule="*/5 * * * *",
             time_zone="Etc/GMT+5", body='{"full": true, "tables": ["a", "b"]}', catch_up="PT36H"),
        dict(workflow="orders", schedule="15 2 * * 1-5", time_zone="America/New_York", body="{}",
             deadline="PT2H", since="2026-03-01T00:00:00+01:00", grace="PT15M", lookback="P3D"),
        dict(workflow="orders", job="orders-eu", schedule="15 2 * * 1-5", time_zone="Europe/Paris",
             body='{"region": "eu"}', overlap="queue", max_active=2, pause_after=3),
        dict(workflow="orders", job="orders-us", schedule="15 3 * * *", time_zone="Etc/UTC", body="{}",
             overlap="skip", pause_after=1),
    ]),
    "any project": dict(project="demo-proj", region="europe-west1", allowed="*/*/*", jobs=[]),
}


def deploy_args(scenario):
    args = ["--project", scenario["project"], "--region", scenario["region"]]
    return args + (["--prefix", scenario["prefix"]] if "prefix" in scenario else [])


def dry_run_output(cloud, scenario):
    """What deploy.sh prints in --dry-run without a gcloud login (the plan for a fresh project):
    deploy, then each schedule."""
    def dry_run(*args):
        result = cloud.run(*args, *deploy_args(scenario), "--dry-run")
        assert result.returncode == 0, result.stderr
        assert "Dry run without a gcloud login" in result.stdout, result.stdout
        # It only asked gcloud who is logged in: nobody, so it looked nothing up.
        assert cloud.calls() == [["auth", "list", "--filter=status:ACTIVE", "--format=value(account)"]]
        return result.stdout

    options = {"allowed": "--allowed-workflows", "operators": "--operators", "build": "--build-service-account",
               "channels": "--notification-channels"}
    outputs = [dry_run(*[item for key, flag in options.items() if key in scenario for item in (flag, scenario[key])])]
    for job in scenario["jobs"]:
        extra = [item for key in ("job", "catch_up", "overlap", "max_active", "pause_after", "deadline", "since",
                                  "grace", "lookback") if key in job
                 for item in (f"--{key.replace('_', '-')}", str(job[key]))]
        outputs.append(dry_run("schedule", job["workflow"], "--schedule", job["schedule"], "--time-zone",
                               job["time_zone"], "--body", job["body"], *extra))
    return "\n".join(outputs)


def offline_cloud(path):
    return FakeCloud(path, account=None)


def pulumi_plan(scenario):
    def program():
        options = {key: scenario[key] for key in ("prefix",) if key in scenario}
        runner = WorkflowsRunner(
            "runner", region=scenario["region"], project=scenario["project"],
            allowed_workflows=scenario.get("allowed"), operators=scenario.get("operators", "").split(",") if "operators" in scenario else (),
            build_service_account=scenario.get("build"),
            notification_channels=scenario["channels"].split(",") if "channels" in scenario else (), **options)
        for job in scenario["jobs"]:
            ScheduledWorkflow(job.get("job", job["workflow"].rsplit("/", 1)[-1]), runner=runner, workflow=job["workflow"],
                              schedule=job["schedule"], time_zone=job["time_zone"], body=job["body"],
                              catch_up=job.get("catch_up"), overlap=job.get("overlap"),
                              max_active=job.get("max_active"), pause_after=job.get("pause_after"),
                              **{key: job[key] for key in ("deadline", "since", "grace", "lookback") if key in job})
    return plan_of_pulumi(declare(program), MOCK_URL)


def assert_same(planned: Plan, declared: Plan):
    for part in fields(Plan):
        assert getattr(declared, part.name) == getattr(planned, part.name), (
            f"{part.name}: the Pulumi component (left) and deploy.sh --dry-run (right) differ")


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_component_declares_what_deploy_sh_plans_for_a_fresh_project(tmp_path, name):
    scenario = SCENARIOS[name]
    planned = plan_of_dry_run(dry_run_output(offline_cloud(tmp_path), scenario), PLACEHOLDER_URL)
    declared = pulumi_plan(scenario)
    assert planned.accounts and planned.functions and planned.workflows and planned.buckets  # the reader read them
    assert len(planned.jobs) == 1 + sum(1 + ("catch_up" in job) for job in scenario["jobs"])  # + the audit's
    assert len(planned.metrics) == 1 and len(planned.alert_policies) == ("channels" in scenario)
    assert_same(planned, declared)


# Edits of deploy.sh (old, new, scenario): each must make the parity test fail.
DEPLOY_SH_EDITS = {
    "another proxy timeout": ("--timeout=120s", "--timeout=90s", "deploy only"),
    "a flag the component does not set": ("--no-allow-unauthenticated", "--no-allow-unauthenticated --memory=512Mi", "deploy only"),
    "another retry policy": ("--max-retry-attempts=5", "--max-retry-attempts=3", "defaults"),
    "a proxy that does not know its queue waiter": (";QUEUE_WORKFLOW=projects/$PROJECT/locations/$REGION/workflows/$WF_QUEUE",
                                                    "", "deploy only"),
}
SCENARIOS_FOR_EDITS = {**SCENARIOS, "deploy only": {**SCENARIOS["defaults"], "jobs": []}}


@pytest.mark.parametrize("edit", DEPLOY_SH_EDITS)
def test_a_change_to_deploy_sh_alone_fails_the_parity_test(tmp_path, edit):
    old, new, scenario = DEPLOY_SH_EDITS[edit]
    scenario = SCENARIOS_FOR_EDITS[scenario]
    cloud = offline_cloud(tmp_path)
    script = cloud.checkout / "deploy.sh"
    text = script.read_text()
    assert old in text, f"deploy.sh no longer has {old!r}: choose another edit for this test"
    script.write_text(text.replace(old, new))
    with pytest.raises(AssertionError, match="differ|does not know"):
        assert_same(plan_of_dry_run(dry_run_output(cloud, scenario), PLACEHOLDER_URL), pulumi_plan(scenario))


PULUMI_EDITS = {
    "another runtime": ("RUNTIME", "python313"),
    "another retry policy": ("JOB_RETRY", spec.JobRetry(retry_count=3)),
    "a role more": ("PROJECT_ROLES", (*spec.PROJECT_ROLES, ("scheduler", "roles/workflows.invoker"))),
    "another display name": ("ACCOUNTS", {**spec.ACCOUNTS, "range": "range"}),
    "an invoker more": ("INVOKERS", (*spec.INVOKERS, ("range", "scheduler"))),
    "a queue waiter that may not log": ("PROJECT_ROLES", tuple(grant for grant in spec.PROJECT_ROLES if grant[0] != "queue")),
}


@pytest.fixture(scope="module")
def defaults_dry_run(tmp_path_factory):
    cloud = offline_cloud(tmp_path_factory.mktemp("defaults"))
    return plan_of_dry_run(dry_run_output(cloud, SCENARIOS["defaults"]), PLACEHOLDER_URL)


@pytest.mark.parametrize("edit", PULUMI_EDITS)
def test_a_change_to_the_component_alone_fails_the_parity_test(monkeypatch, defaults_dry_run, edit):
    name, value = PULUMI_EDITS[edit]
    monkeypatch.setattr(spec, name, value)
    with pytest.raises(AssertionError, match="differ"):
        assert_same(defaults_dry_run, pulumi_plan(SCENARIOS["defaults"]))
