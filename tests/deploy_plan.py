"""One shape for "what gets deployed", read from two sources so the parity test can compare them:

- plan_of_dry_run: the gcloud commands `deploy.sh --dry-run` prints for a fresh project;
- plan_of_pulumi: the resources workflows_runner_pulumi declares under mocks.

Both readers are strict: a gcloud flag, a command or a resource type they do not know fails the
test, so that a new setting on one path cannot pass unnoticed. Function URLs are unknown before a
deployment; both sides name them url(FUNCTION).
"""
import base64
import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DRY_RUN_LINE = re.compile(r"\[dry-run\] gcloud (.*)")
SA_MEMBER = re.compile(r"serviceAccount:([a-z][-a-z0-9]*)@([-a-z0-9]+)\.iam\.gserviceaccount\.com", re.ASCII)
SA_EMAIL = re.compile(r"([a-z][-a-z0-9]*)@([-a-z0-9]+)\.iam\.gserviceaccount\.com", re.ASCII)


@dataclass(frozen=True)
class Function:
    region: str
    runtime: str
    source: str  # folder, relative to the checkout
    entry_point: str
    account: str  # service account id
    build_account: str  # email
    env: tuple  # sorted (name, value)
    timeout_seconds: int | None


@dataclass(frozen=True)
class Workflow:
    region: str
    source: str
    account: str
    env: tuple


@dataclass(frozen=True)
class Role:
    title: str
    description: str
    permissions: tuple
    stage: str


@dataclass(frozen=True)
class Bucket:
    location: str
    uniform_access: bool
    public_access_prevention: str


@dataclass(frozen=True)
class Job:
    region: str
    schedule: str
    time_zone: str
    uri: str
    method: str
    headers: tuple
    body: str  # canonical JSON
    oidc_account: str
    audience: str
    attempt_deadline: str
    retry_count: int
    min_backoff: str
    max_backoff: str


@dataclass
class Plan:
    project: str = ""
    apis: set = field(default_factory=set)
    accounts: dict = field(default_factory=dict)  # id -> display name
    roles: dict = field(default_factory=dict)  # projects/P/roles/ID -> Role
    grants: set = field(default_factory=set)  # (kind, resource, role, account id or member, condition)
    functions: dict = field(default_factory=dict)
    workflows: dict = field(default_factory=dict)
    buckets: dict = field(default_factory=dict)
    jobs: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # name -> LogMetric config (dict)
    alert_policies: dict = field(default_factory=dict)  # display name -> AlertPolicy (dict)


def canonical_json(text):
    return json.dumps(json.loads(text), sort_keys=True)


def seconds(duration):
    match = re.fullmatch(r"([0-9]+)s", duration, re.ASCII)
    assert match, f"a duration in seconds such as 120s, found {duration!r}"
    return int(match[1])


# --- deploy.sh's plan -----------------------------------------------------------------------

class Flags:
    """The --flags of one gcloud command; each must be taken exactly once (done() checks)."""

    def __init__(self, command, argv):
        self.command, self.words, self.flags = command, [], {}
        for arg in argv:
            if arg.startswith("--"):
                key, sep, value = arg[2:].partition("=")
                assert key not in self.flags, f"{command}: --{key} twice"
                self.flags[key] = value if sep else True
            else:
                self.words.append(arg)

    def take(self, key, default=None):
        return self.flags.pop(key, default)

    def need(self, key, value=None):
        found = self.flags.pop(key, None)
        assert found is not None, f"deploy.sh's `gcloud {self.command}` lacks --{key}"
        assert value is None or found == value, f"`gcloud {self.command}` --{key}={found}, expected {value}"
        return found

    def done(self):
        assert not self.flags, (
            f"deploy.sh passes {sorted(self.flags)} to `gcloud {self.command}`, which the parity test does not "
            "know: declare the same in workflows_runner_pulumi, then teach tests/deploy_plan.py both")


def env_vars(value):
    """gcloud's --set-env-vars, with its ^DELIM^ escape (`gcloud topic escaping`)."""
    delimiter = ","
    if value.startswith("^"):
        delimiter, value = value[1:].split("^", 1)
    return tuple(sorted(tuple(item.split("=", 1)) for item in value.split(delimiter) if item))


def principal(member):
    """A service account member as its id (checked against the project in its email), others as is."""
    match = SA_MEMBER.fullmatch(member)
    return account_of(member, match[2]) if match else member


def account_of(member_or_email, project):
    match = SA_MEMBER.fullmatch(member_or_email) or SA_EMAIL.fullmatch(member_or_email)
    assert match and match[2] == project, f"a service account of {project}, found {member_or_email}"
    return match[1]


def symbols(text, url_pattern):
    """text with each function URL (url_pattern, group 1 the function's name) as url(NAME)."""
    return url_pattern.sub(lambda match: f"url({match[1]})", text)


def plan_of_dry_run(output, placeholder):
    """The plan from deploy.sh's stdout; placeholder is the regex of the URL it prints for a
    function not yet deployed (group 1: the function's name)."""
    plan = Plan()
    commands = [shlex.split(match[1]) for line in output.splitlines() if (match := DRY_RUN_LINE.fullmatch(line))]
    assert commands, f"no [dry-run] command in:\n{output}"
    for argv in commands:
        _read_command(plan, argv, placeholder)
    return plan


def _command(argv):
    for size in (4, 3, 2):
        words = " ".join(argv[:size])
        if words in READERS:
            return words, argv[size:]
    raise AssertionError(f"deploy.sh plans `gcloud {' '.join(argv)}`, which the parity test does not know")


def _read_command(plan, argv, placeholder):
    command, rest = _command(argv)
    flags = Flags(command, rest)
    READERS[command](plan, flags, placeholder)
    flags.done()


def _project(plan, flags):
    project = flags.need("project")
    assert plan.project in ("", project), f"two projects in one plan: {plan.project}, {project}"
    plan.project = project
    return project


def _services_enable(plan, flags, _):
    _project(plan, flags)
    plan.apis.update(flags.words)


def _account_create(plan, flags, _):
    _project(plan, flags)
    [account_id] = flags.words
    plan.accounts[account_id] = flags.need("display-name")


def _project_binding(plan, flags, _):
    [project] = flags.words  # the deployment's project, or another one of the allowlist
    flags.need("condition", "None")
    flags.need("format", "none")
    plan.grants.add(("project", project, flags.need("role"), principal(flags.need("member")), ""))


def _function_deploy(plan, flags, placeholder):
    project = _project(plan, flags)
    [name] = flags.words
    for required in ("gen2", "trigger-http", "no-allow-unauthenticated", "quiet"):
        assert flags.take(required) is True, f"functions deploy {name} without --{required}"
    env = ()
    if flags.take("clear-env-vars") is not True:
        env = tuple((key, symbols(value, placeholder)) for key, value in env_vars(flags.need("set-env-vars")))
    timeout = flags.take("timeout")
    build = re.fullmatch(r"projects/([^/]+)/serviceAccounts/([^/]+)", flags.need("build-service-account"))
    assert build and build[1] == project, "--build-service-account=projects/PROJECT/serviceAccounts/EMAIL"
    plan.functions[name] = Function(
        # An assembled source (.build/functions/NAME, functions/NAME/SHARED) is its function folder's.
        region=flags.need("region"), runtime=flags.need("runtime"), source=flags.need("source").removeprefix(".build/"),
        entry_point=flags.need("entry-point"), account=account_of(flags.need("service-account"), project),
        build_account=build[2], env=env, timeout_seconds=seconds(timeout) if timeout else None)


def _invoker(plan, flags, _):
    project = _project(plan, flags)
    [name] = flags.words
    flags.need("region")
    plan.grants.add(("function", name, "roles/run.invoker", principal(flags.need("member")), ""))


def _workflow_deploy(plan, flags, placeholder):
    project = _project(plan, flags)
    [name] = flags.words
    assert flags.take("quiet") is True
    env = tuple(sorted((key, symbols(value, placeholder)) for key, value in env_vars(flags.need("set-env-vars"))))
    plan.workflows[name] = Workflow(region=flags.need("location"), source=flags.need("source"),
                                    account=account_of(flags.need("service-account"), project), env=env)


def _job_create(plan, flags, placeholder):
    project = _project(plan, flags)
    [name] = flags.words
    assert flags.take("quiet") is True
    headers = flags.need("headers")
    plan.jobs[name] = Job(
        region=flags.need("location"), schedule=flags.need("schedule"), time_zone=flags.need("time-zone"),
        uri=symbols(flags.need("uri"), placeholder), method=flags.need("http-method").upper(),
        headers=tuple(sorted(tuple(item.split("=", 1)) for item in headers.split(","))),
        body=canonical_json(flags.need("message-body")),
        oidc_account=account_of(flags.need("oidc-service-account-email"), project),
        audience=symbols(flags.need("oidc-token-audience"), placeholder),
        attempt_deadline=flags.need("attempt-deadline"), retry_count=int(flags.need("max-retry-attempts")),
        min_backoff=flags.need("min-backoff"), max_backoff=flags.need("max-backoff"))


def _bucket_name(flags):
    [url] = flags.words
    assert url.startswith("gs://"), f"a bucket as gs://NAME, found {url}"
    return url[len("gs://"):].rstrip("/")


def _bucket_create(plan, flags, _):
    _project(plan, flags)
    name = _bucket_name(flags)
    plan.buckets[name] = Bucket(
        location=flags.need("location").upper(), uniform_access=flags.take("uniform-bucket-level-access") is True,
        public_access_prevention="enforced" if flags.take("public-access-prevention") is True else "inherited")


def _bucket_binding(plan, flags, _):
    name = _bucket_name(flags)
    flags.need("format", "none")
    plan.grants.add(("bucket", name, flags.need("role"), principal(flags.need("member")),
                     condition(flags.need("condition"))))


def condition(flag):
    """gcloud's --condition: None, or expression=...,title=... (no comma in either here)."""
    if flag == "None":
        return ""
    fields = dict(item.split("=", 1) for item in flag.split(","))
    assert set(fields) == {"expression", "title"}, f"--condition with expression and title, found {flag!r}"
    return f"{fields['expression']} [{fields['title']}]"


def _role_create(plan, flags, _):
    [role_id] = flags.words
    project = flags.need("project")
    flags.need("format", "none")
    plan.roles[f"projects/{project}/roles/{role_id}"] = Role(
        title=flags.need("title"), description=flags.need("description"),
        permissions=tuple(sorted(flags.need("permissions").split(","))), stage=flags.need("stage"))


def _metric_create(plan, flags, _):
    [name] = flags.words
    _project(plan, flags)
    with open(flags.need("config-from-file")) as file:
        plan.metrics[name] = json.load(file)


def _policy_create(plan, flags, _):
    _project(plan, flags)
    policy = json.loads(flags.need("policy"))
    plan.alert_policies[policy["displayName"]] = policy


READERS = {
    "logging metrics create": _metric_create,
    "alpha monitoring policies create": _policy_create,
    "iam roles create": _role_create,
    "storage buckets create": _bucket_create,
    "storage buckets add-iam-policy-binding": _bucket_binding,
    "services enable": _services_enable,
    "iam service-accounts create": _account_create,
    "projects add-iam-policy-binding": _project_binding,
    "functions deploy": _function_deploy,
    "functions add-invoker-policy-binding": _invoker,
    "workflows deploy": _workflow_deploy,
    "scheduler jobs create http": _job_create,
}


# --- the Pulumi component's declarations ----------------------------------------------------

# Every input the component may set, by resource type; a dict under a name ending in '*' is one
# value (environment variables, headers). Anything else fails: deploy.sh has no flag for it here.
KNOWN_INPUTS = {
    "gcp:projects/service:Service": {"project", "service", "disableOnDestroy"},
    "gcp:serviceaccount/account:Account": {"project", "accountId", "displayName"},
    "gcp:projects/iAMMember:IAMMember": {"project", "role", "member"},
    "gcp:projects/iAMCustomRole:IAMCustomRole": {"project", "roleId", "title", "description", "permissions", "stage"},
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember": {"project", "location", "name", "role", "member"},
    "gcp:storage/bucketIAMMember:BucketIAMMember": {"bucket", "role", "member", "condition.expression",
                                                    "condition.title"},
    "gcp:cloudfunctionsv2/function:Function": {
        "project", "location", "name", "buildConfig.runtime", "buildConfig.entryPoint", "buildConfig.serviceAccount",
        "buildConfig.source.storageSource.bucket", "buildConfig.source.storageSource.object",
        "serviceConfig.serviceAccountEmail", "serviceConfig.environmentVariables*", "serviceConfig.timeoutSeconds"},
    "gcp:workflows/workflow:Workflow": {
        "project", "region", "name", "sourceContents", "serviceAccount", "userEnvVars*", "deletionProtection"},
    "gcp:storage/bucket:Bucket": {"project", "name", "location", "uniformBucketLevelAccess", "publicAccessPrevention"},
    "gcp:logging/metric:Metric": {
        "project", "name", "description", "filter", "labelExtractors*", "metricDescriptor.metricKind",
        "metricDescriptor.valueType", "metricDescriptor.unit", "metricDescriptor.labels"},
    "gcp:monitoring/alertPolicy:AlertPolicy": {
        "project", "displayName", "combiner", "notificationChannels", "conditions", "documentation.mimeType",
        "documentation.content"},
    "gcp:cloudscheduler/job:Job": {
        "project", "region", "name", "schedule", "timeZone", "attemptDeadline",
        "retryConfig.retryCount", "retryConfig.minBackoffDuration", "retryConfig.maxBackoffDuration",
        "httpTarget.uri", "httpTarget.httpMethod", "httpTarget.headers*", "httpTarget.body",
        "httpTarget.oidcToken.serviceAccountEmail", "httpTarget.oidcToken.audience"},
}


def _input_paths(inputs, known, prefix=""):
    for key, value in inputs.items():
        path = prefix + key
        if isinstance(value, dict) and path + "*" not in known:
            yield from _input_paths(value, known, path + ".")
        else:
            yield path + "*" if path + "*" in known else path


def _check_inputs(resource):
    known = KNOWN_INPUTS.get(resource.type)
    assert known is not None, (
        f"workflows_runner_pulumi declares {resource.type} {resource.name}, which the parity test does not "
        "know: deploy.sh must create the same, then teach tests/deploy_plan.py both")
    unknown = set(_input_paths(resource.inputs, known)) - known
    assert not unknown, (
        f"{resource.name} sets {sorted(unknown)}, which deploy.sh does not: set the same in deploy.sh, "
        "then teach tests/deploy_plan.py both")


def plan_of_pulumi(program, url_pattern):
    """The plan from tests.pulumi_mocks.Program; url_pattern matches a mock function URL.

    Left out, as gcloud's own doing on the deploy.sh path: the bucket of function source
    archives and the archives in it (`gcloud functions deploy --source=DIR` uploads DIR to a
    bucket gcloud manages)."""
    plan = Plan()
    sources = {r.inputs["name"] for r in program.of_type("gcp:storage/bucket:Bucket") if r.inputs["name"].endswith("-sources")}
    archives = {r.inputs["name"]: r.inputs["source"] for r in program.of_type("gcp:storage/bucketObject:BucketObject")
                if r.inputs["bucket"] in sources}

    def symbol(url):
        return symbols(url, url_pattern)

    for resource in program.resources:
        inputs, kind = resource.inputs, resource.type
        if kind == "gcp:storage/bucketObject:BucketObject" and inputs["bucket"] in sources:
            continue
        if kind == "gcp:storage/bucket:Bucket" and inputs["name"] in sources:
            continue
        _check_inputs(resource)
        project = inputs.get("project")
        if kind == "gcp:projects/service:Service":
            plan.apis.add(inputs["service"])
        elif kind == "gcp:serviceaccount/account:Account":
            plan.accounts[inputs["accountId"]] = inputs["displayName"]
        elif kind == "gcp:projects/iAMMember:IAMMember":
            plan.grants.add(("project", project, inputs["role"], principal(inputs["member"]), ""))
        elif kind == "gcp:projects/iAMCustomRole:IAMCustomRole":
            plan.roles[f"projects/{project}/roles/{inputs['roleId']}"] = Role(
                title=inputs["title"], description=inputs["description"],
                permissions=tuple(sorted(inputs["permissions"])), stage=inputs["stage"])
        elif kind == "gcp:cloudrunv2/serviceIamMember:ServiceIamMember":
            plan.grants.add(("function", inputs["name"].rsplit("/", 1)[-1], inputs["role"], principal(inputs["member"]), ""))
        elif kind == "gcp:storage/bucketIAMMember:BucketIAMMember":
            ledger = inputs.get("condition")
            plan.grants.add(("bucket", inputs["bucket"], inputs["role"], principal(inputs["member"]),
                             f"{ledger['expression']} [{ledger['title']}]" if ledger else ""))
        elif kind == "gcp:cloudfunctionsv2/function:Function":
            build, service = inputs["buildConfig"], inputs["serviceConfig"]
            archive = archives[build["source"]["storageSource"]["object"]]
            folders = {Path(asset.path).resolve().parent.relative_to(ROOT).as_posix()
                       for name, asset in archive.assets.items() if "/" not in name}
            [folder] = folders
            build_account = re.fullmatch(r"projects/([^/]+)/serviceAccounts/([^/]+)", build["serviceAccount"])
            assert build_account and build_account[1] == project, build["serviceAccount"]
            plan.functions[inputs["name"]] = Function(
                region=inputs["location"], runtime=build["runtime"], source=folder, entry_point=build["entryPoint"],
                account=account_of(service["serviceAccountEmail"], project), build_account=build_account[2],
                env=tuple(sorted((key, symbol(value)) for key, value in service.get("environmentVariables", {}).items())),
                timeout_seconds=int(service["timeoutSeconds"]) if "timeoutSeconds" in service else None)
        elif kind == "gcp:workflows/workflow:Workflow":
            [source] = [path.relative_to(ROOT).as_posix() for path in (ROOT / "workflows").glob("*.yaml")
                        if path.read_text() == inputs["sourceContents"]]
            plan.workflows[inputs["name"]] = Workflow(
                region=inputs["region"], source=source, account=account_of(inputs["serviceAccount"], project),
                env=tuple(sorted((key, symbol(value)) for key, value in inputs["userEnvVars"].items())))
        elif kind == "gcp:storage/bucket:Bucket":
            plan.buckets[inputs["name"]] = Bucket(
                location=inputs["location"].upper(), uniform_access=inputs["uniformBucketLevelAccess"],
                public_access_prevention=inputs["publicAccessPrevention"])
        elif kind == "gcp:logging/metric:Metric":
            plan.metrics[inputs["name"]] = {key: value for key, value in inputs.items() if key not in ("project", "name")}
        elif kind == "gcp:monitoring/alertPolicy:AlertPolicy":
            plan.alert_policies[inputs["displayName"]] = {key: value for key, value in inputs.items() if key != "project"}
        elif kind == "gcp:cloudscheduler/job:Job":
            target, retry, token = inputs["httpTarget"], inputs["retryConfig"], inputs["httpTarget"]["oidcToken"]
            plan.jobs[inputs["name"]] = Job(
                region=inputs["region"], schedule=inputs["schedule"], time_zone=inputs["timeZone"],
                uri=symbol(target["uri"]), method=target["httpMethod"],
                headers=tuple(sorted(target["headers"].items())),
                body=canonical_json(base64.b64decode(target["body"])),
                oidc_account=account_of(token["serviceAccountEmail"], project), audience=symbol(token["audience"]),
                attempt_deadline=inputs["attemptDeadline"], retry_count=retry["retryCount"],
                min_backoff=retry["minBackoffDuration"], max_backoff=retry["maxBackoffDuration"])
        if project and kind not in OTHER_PROJECT_TYPES:
            assert plan.project in ("", project), (plan.project, project, resource)
            plan.project = project
    return plan


# Resources the allowlist's other projects get (a custom role, grants in that project).
OTHER_PROJECT_TYPES = {"gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMCustomRole:IAMCustomRole"}
