"""cloudbuild.yaml: valid for Cloud Build, tests first, then deploy.sh as Cloud Build would run it."""
import re
import subprocess

import yaml

from tests.fake_gcloud.harness import ROOT, TOOLS, FakeCloud

CONFIG = ROOT / "cloudbuild.yaml"


def load():
    return yaml.safe_load(CONFIG.read_text())


def substitute(word, substitutions):
    """Cloud Build's $VAR / ${VAR} substitution, with the config's defaults."""
    return re.sub(r"\$\{?(\w+)\}?", lambda match: substitutions[match.group(1)], word)


def test_valid_against_cloud_builds_schema():
    result = subprocess.run([str(TOOLS / "check-jsonschema"), "--builtin-schema", "vendor.cloudbuild", str(CONFIG)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tests_run_before_the_deploy_and_the_deploy_calls_deploy_sh():
    test, deploy = load()["steps"]
    assert [test.get("entrypoint"), *test["args"]] == ["make", "test"]
    assert "waitFor" not in deploy  # Cloud Build runs steps in order: no deploy after failed tests
    assert deploy["name"].startswith("gcr.io/google.com/cloudsdktool/cloud-sdk")
    assert deploy["entrypoint"] == "bash" and deploy["args"][0] == "./deploy.sh"


def test_every_user_substitution_has_a_default():
    config = load()
    used = set(re.findall(r"\$\{(_\w+)\}", CONFIG.read_text()))
    assert {"_REGION", "_PREFIX"} <= used
    assert used == set(config["substitutions"])


def test_the_deploy_step_deploys_with_the_substitutions(tmp_path):
    config = load()
    values = {"PROJECT_ID": "build-proj", **config["substitutions"], "_REGION": "europe-north1", "_PREFIX": "wr-ci"}
    args = [substitute(arg, values) for arg in config["steps"][1]["args"]]
    cloud = FakeCloud(tmp_path, project="build-proj", account="123@cloudbuild.gserviceaccount.com")
    result = cloud.run(*args[1:], cwd=cloud.checkout)
    assert result.returncode == 0, result.stderr
    deploys = [argv for argv in cloud.changes() if argv[:2] == ["functions", "deploy"]]
    assert [argv[2] for argv in deploys] == ["wr-ci-range", "wr-ci-proxy"]
    assert all("--region=europe-north1" in argv and "--project=build-proj" in argv for argv in deploys)
    # The default (empty) allowlist substitution means the project's own workflows.
    assert ("--set-env-vars=^;^GOOGLE_CLOUD_PROJECT=build-proj;ALLOWED_WORKFLOWS=build-proj/europe-north1/*;"
            "RUNS_BUCKET=build-proj-wr-ci-runs") in deploys[1]
