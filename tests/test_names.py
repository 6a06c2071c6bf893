"""One naming rule for workflows, shared by deploy.sh and the proxy, checked on one table.

deploy.sh refuses to schedule a name the proxy would answer with 404 (it once accepted
`my-flow-`). Each row is checked against both: deploy.sh's `schedule` (before any gcloud call)
and the proxy's path pattern `_PATH`, read from its source so the function need not be imported.
Google's rules: a project id is 6-30 lowercase letters, digits and hyphens, starting with a letter
and not ending with a hyphen (optionally domain-scoped, `example.com:my-proj`); a workflow id
starts with a letter, holds letters, digits, `_` and `-`, ends with a letter or digit, and has at
most 64 characters.
"""
import ast
import re

import pytest

from tests.fake_gcloud.harness import ROOT, FakeCloud

# (project, location, workflow, valid)
NAMES = [
    ("my-project", "us-central1", "nightly", True),
    ("my-project", "us-central1", "my-flow", True),
    ("my-project", "us-central1", "my-flow-", False),
    ("my-project", "us-central1", "my_flow_", False),
    ("my-project", "us-central1", "flow_2", True),
    ("my-project", "us-central1", "x", True),
    ("my-project", "us-central1", "9lives", False),
    ("my-project", "us-central1", "_flow", False),
    ("my-project", "us-central1", "a" * 64, True),
    ("my-project", "us-central1", "a" * 65, False),
    ("my-project", "us-central1", "flow.daily", False),
    ("my-project", "us-central1", "flöw", False),
    ("my-project", "us-central1", "Nightly", True),
    ("example.com:my-project", "europe-west1", "nightly", True),
    ("other", "us-east1", "etl", False),  # 5 characters: too short for a project id
    ("other-proj", "us-east1", "etl", True),
    ("my-project-", "us-east1", "etl", False),
    ("My-Project", "us-east1", "etl", False),
    ("p" * 30, "us-east1", "etl", True),
    ("p" * 31, "us-east1", "etl", False),
    ("my-project", "US-EAST1", "etl", False),
]


def proxy_path_pattern() -> re.Pattern:
    """The proxy's `_PATH = re.compile(...)`, wherever in functions/proxy it now lives."""
    for source in sorted((ROOT / "functions" / "proxy").glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_PATH" for t in node.targets):
                return re.compile(ast.literal_eval(node.value.args[0]))
    raise AssertionError("functions/proxy has no _PATH pattern")


@pytest.mark.parametrize("project, location, workflow, valid", NAMES)
def test_the_proxy_accepts_exactly_the_valid_names(project, location, workflow, valid):
    path = f"/v1/projects/{project}/locations/{location}/workflows/{workflow}/executions"
    assert bool(proxy_path_pattern().fullmatch(path)) is valid


@pytest.mark.parametrize("project, location, workflow, valid", NAMES)
def test_deploy_sh_schedules_exactly_the_valid_names(tmp_path, project, location, workflow, valid):
    cloud = FakeCloud(tmp_path, account="")  # a dry run without login: nothing is looked up
    result = cloud.run("schedule", f"projects/{project}/locations/{location}/workflows/{workflow}",
                       "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC", "--region", "us-central1", "--dry-run")
    assert (result.returncode == 0) is valid, result.stderr
    assert ("invalid workflow name" in result.stderr) is not valid
    if location == "us-central1" and project == "my-project":
        short = cloud.run("schedule", workflow, "--job", "j", "--schedule", "0 1 * * *", "--time-zone", "Etc/UTC",
                          "--region", location, "--project", project, "--dry-run")
        assert (short.returncode == 0) is valid, short.stderr


@pytest.mark.parametrize("project, location, workflow, valid", [row for row in NAMES if row[:2] == ("my-project", "us-central1")])
def test_the_pulumi_component_takes_exactly_the_valid_workflow_ids(project, location, workflow, valid):
    from workflows_runner_pulumi import spec
    assert bool(spec.WORKFLOW_NAME.fullmatch(workflow)) is valid
