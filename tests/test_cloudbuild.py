"""cloudbuild.yaml (the deploy, as a named deployer account) and cloudbuild.test.yaml (the tests, a
build of their own): valid for Cloud Build, and deploy.sh run as Cloud Build would run it."""
import re
import subprocess

import yaml

from tests.fake_gcloud.harness import ROOT, TOOLS, FakeCloud

CONFIG = ROOT / "cloudbuild.yaml"
TEST_CONFIG = ROOT / "cloudbuild.test.yaml"


def load(config=CONFIG):
    return yaml.safe_load(config.read_text())


def substitute(word, substitutions):
    """Cloud Build's $VAR / ${VAR} substitution, with the config's defaults."""
    return re.sub(r"\$\{?(\w+)\}?", lambda match: substitutions[match.group(1)], word)


def test_valid_against_cloud_builds_schema():
    result = subprocess.run([str(TOOLS / "check-jsonschema"), "--builtin-schema", "vendor.cloudbuild",
                             str(CONFIG), str(TEST_CONFIG)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_deploy_runs_as_the_named_deployer_and_the_tests_in_a_build_of_their_own():
    """Google: a build that names no service account may run as one "unnecessarily broad"
    (https://cloud.google.com/build/docs/securing-builds/configure-user-specified-service-accounts);
    one that names it must log to Cloud Logging or a bucket of its own."""
    deploy_build, test_build = load(), load(TEST_CONFIG)
    [deploy] = deploy_build["steps"]
    assert deploy["name"].startswith("gcr.io/google.com/cloudsdktool/cloud-sdk")
    assert deploy["entrypoint"] == "bash" and deploy["args"][0] == "./deploy.sh"
    assert deploy_build["serviceAccount"] == "projects/$PROJECT_ID/serviceAccounts/${_DEPLOYER}@$PROJECT_ID.iam.gserviceaccount.com"
    assert deploy_build["substitutions"]["_DEPLOYER"] == "workflows-runner-deployer"
    assert deploy_build["options"]["logging"] == "CLOUD_LOGGING_ONLY"
    [test] = test_build["steps"]
    assert [test.get("entrypoint"), *test["args"]] == ["make", "test"]
    assert test_build["serviceAccount"] == "projects/$PROJECT_ID/serviceAccounts/${_TESTER}@$PROJECT_ID.iam.gserviceaccount.com"
    assert test_build["substitutions"] == {"_TESTER": "workflows-runner-tests"}
    assert test_build["options"]["logging"] == "CLOUD_LOGGING_ONLY"
    assert "deploy.sh" not in TEST_CONFIG.read_text().split("steps:")[1]


def test_every_user_substitution_has_a_default():
    config = load()
    used = set(re.findall(r"\$\{(_\w+)\}", CONFIG.read_text()))
    assert {"_REGION", "_PREFIX"} <= used
    assert used == set(config["substitutions"])


def test_the_deploy_step_deploys_with_the_substitutions(tmp_path):
    config = load()
    values = {"PROJECT_ID": "build-proj", **config["substitutions"], "_REGION": "europe-north1", "_PREFIX": "wr-ci"}
    args = [substitute(arg, values) for arg in config["steps"][0]["args"]]
    cloud = FakeCloud(tmp_path, project="build-proj", account="123@cloudbuild.gserviceaccount.com")
    result = cloud.run(*args[1:], cwd=cloud.checkout)
    assert result.returncode == 0, result.stderr
    deploys = [argv for argv in cloud.changes() if argv[:2] == ["functions", "deploy"]]
    assert [argv[2] for argv in deploys] == ["wr-ci-range", "wr-ci-proxy", "wr-ci-audit"]
    # The default (empty) channels substitution: the metric, but no alert policy.
    assert not any(argv[:3] == ["alpha", "monitoring", "policies"] for argv in cloud.changes())
    assert any(argv[:3] == ["logging", "metrics", "create"] for argv in cloud.changes())
    assert all("--region=europe-north1" in argv and "--project=build-proj" in argv for argv in deploys)
    # The default (empty) allowlist substitution means the project's own workflows.
    assert ("--set-env-vars=^;^GOOGLE_CLOUD_PROJECT=build-proj;ALLOWED_WORKFLOWS=build-proj/europe-north1/*;"
            "RUNS_BUCKET=build-proj-wr-ci-runs;QUEUE_WORKFLOW=projects/build-proj/locations/europe-north1/workflows/wr-ci-queue"
            ) in deploys[1]
