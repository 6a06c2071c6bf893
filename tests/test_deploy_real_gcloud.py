"""Every gcloud call deploy.sh makes, replayed through the real gcloud CLI, which must parse it.

deploy.sh runs each scenario against the fake gcloud (tests/fake_gcloud), which records the
calls; each distinct call is then given to /usr/bin/gcloud with an empty configuration, so no
account: a well-formed call gets as far as gcloud's "You do not currently have an active account
selected" (exit 1), while a bad flag, value or argument is refused by gcloud's parser first
(exit 2). Nothing reaches Google: there are no credentials to send. Metadata-server probing and
usage reporting are off, and stdin is /dev/null so no prompt can wait.
"""
import os
import shlex
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.test_deploy import P, R, everything_exists, guide_job
from tests.fake_gcloud.harness import FakeCloud

GCLOUD = shutil.which("gcloud", path="/usr/bin:/usr/local/bin:/opt/google-cloud-sdk/bin")
NO_ACCOUNT = "You do not currently have an active account selected"
# These two read only the local configuration, so they succeed without an account.
LOCAL = (["auth", "list"], ["config", "get-value"])

pytestmark = pytest.mark.skipif(GCLOUD is None, reason="the Google Cloud CLI (gcloud) is not installed here, "
                                "so deploy.sh's calls cannot be checked against its parser")


def scenario_calls(tmp_path):
    """Each scenario's calls, by name: fresh, existing, schedule, migrate, destroy, dry runs."""
    runs = {}

    def record(name, cloud, *args):
        result = cloud.run(*args, "--region", R)
        assert result.returncode == 0, (name, result.stderr)
        # A dry run prints the changes instead of making them: those are replayed too.
        printed = [shlex.split(line)[2:] for line in result.stdout.splitlines() if line.startswith("[dry-run] gcloud ")]
        runs[name] = cloud.calls() + printed

    fresh = FakeCloud(tmp_path / "fresh", project=P)
    record("fresh", fresh, "--allowed-workflows", f"{P}/{R}/*,data-proj/us-east1/etl",
           "--operators", "user:ana@example.com,group:ops@example.com")
    existing = FakeCloud(tmp_path / "existing", **everything_exists())
    record("existing", existing)
    ci = f"ci-builds@{P}.iam.gserviceaccount.com"
    state = everything_exists()
    state["serviceAccounts"].append(ci)
    record("build account", FakeCloud(tmp_path / "build", **state), "--build-service-account", ci)
    record("schedule", existing, "schedule", f"projects/other-proj/locations/us-east1/workflows/etl", "--job", "orders",
           "--schedule", "0 1 * * 1-5", "--time-zone", "Etc/GMT+5", "--body", '{"table": "orders"}', "--catch-up", "P7D")
    record("schedule again", existing, "schedule", "nightly", "--job", "orders",
           "--schedule", "30 1 * * *", "--time-zone", "Europe/Stockholm",
           "--overlap", "skip", "--max-active", "2", "--pause-after", "3")  # a URI with a query of settings
    record("jobs", existing, "jobs")
    record("unschedule", existing, "unschedule", "orders")
    state = existing.state
    state["jobs"][f"projects/{P}/locations/{R}/jobs/weekly"] = guide_job()
    existing.state = state
    record("migrate dry run", existing, "migrate", "weekly", "--dry-run")
    record("migrate", existing, "migrate", "weekly")
    record("destroy", existing, "destroy", "--delete-runs")
    record("destroy again", existing, "destroy")
    offline = FakeCloud(tmp_path / "offline", account="")
    record("dry run without login", offline, "--project", P, "--dry-run")
    record("destroy dry run without login", offline, "destroy", "--project", P, "--dry-run")
    record("dry run with login", FakeCloud(tmp_path / "online", project=P), "--dry-run")
    alerting = FakeCloud(tmp_path / "alerting", project=P)
    channels = f"projects/{P}/notificationChannels/123,projects/{P}/notificationChannels/456"
    record("deploy with notification channels", alerting, "--notification-channels", channels)
    record("deploy again with notification channels", alerting, "--notification-channels", channels)
    record("destroy with an alert policy", alerting, "destroy")
    return runs


def gcloud_argv(runs):
    """The distinct calls of all scenarios, in the order first made."""
    seen = {}
    for calls in runs.values():
        for argv in calls:
            seen.setdefault(tuple(argv), None)
    return [list(argv) for argv in seen]


def replay(argv, config_dir):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(config_dir),
        "CLOUDSDK_CONFIG": str(config_dir),
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
    }
    return subprocess.run([GCLOUD, *argv, "--quiet"], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


# About 75 distinct calls at 1-3 s of gcloud start-up each, on a shared 2-core machine.
@pytest.mark.timeout(900)
def test_every_call_parses_with_the_real_gcloud(tmp_path):
    runs = scenario_calls(tmp_path)
    assert len(runs) == 17 and all(runs.values())
    calls = gcloud_argv(runs)
    commands = {" ".join(argv[:3]) for argv in calls}
    for expected in ("scheduler jobs update", "scheduler jobs delete", "storage buckets create", "storage rm --recursive",
                     "iam roles create", "projects remove-iam-policy-binding", "iam service-accounts delete",
                     "logging metrics create", "logging metrics update", "logging metrics delete",
                     "alpha monitoring policies", "workflows deploy workflows-runner-queue",
                     "workflows delete workflows-runner-queue"):
        assert any(command.startswith(expected) for command in commands), expected
    config_dir = tmp_path / "empty-gcloud-config"
    config_dir.mkdir()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda argv: replay(argv, config_dir), calls))
    problems = []
    for argv, result in zip(calls, results):
        local = any(argv[: len(words)] == words for words in LOCAL)
        expected = result.returncode == 0 if local else (result.returncode == 1 and NO_ACCOUNT in result.stderr)
        if not expected:
            problems.append(f"gcloud {' '.join(argv)}\n  exit {result.returncode}: {result.stderr.strip()[:400]}")
    assert not problems, "\n".join(problems)


def test_a_malformed_call_is_refused_before_the_account_check(tmp_path):
    # Guards the test above: gcloud's parser must reject these before asking for an account.
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    for argv in (["scheduler", "jobs", "update", "http", "j", f"--location={R}", "--oidc-token-audience"],
                 ["storage", "buckets", "create", "gs://b", "--public-access-prevention=maybe"],
                 ["functions", "deploy", "f", "--gen2", "--no-such-flag"]):
        result = replay(argv, config_dir)
        assert result.returncode == 2 and NO_ACCOUNT not in result.stderr, (argv, result.stderr)
