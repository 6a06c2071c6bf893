"""WorkflowsRunner: the range, proxy and audit functions, the backfill and queue workflows, the runs bucket,
their service accounts and least-privilege grants, the audit's job, log-based metric and alert
policy, as deploy.sh creates them (names and roles in spec.py).
"""
import base64
from pathlib import Path

import pulumi
from pulumi_gcp import cloudfunctionsv2, cloudrunv2, cloudscheduler, logging, monitoring, projects, serviceaccount, storage, workflows

from . import allowlist, spec
from .errors import RunnerConfigError
from .sources import source_archive

CHECKOUT = Path(__file__).resolve().parent.parent


def _project(project):
    project = project or pulumi.Config("gcp").get("project")
    if not project:
        raise RunnerConfigError("project", "project=... or the stack setting gcp:project", project)
    return project


def _check(prefix, region, operators, build_service_account, source_dir, notification_channels=()):
    for channel in notification_channels:
        if not spec.NOTIFICATION_CHANNEL.fullmatch(channel):
            raise RunnerConfigError("notification_channels", "channels such as projects/P/notificationChannels/123", channel)
    if not (spec.PREFIX.fullmatch(prefix) and len(prefix) <= spec.PREFIX_MAX):
        raise RunnerConfigError(
            "prefix", f"lowercase letters, digits and hyphens, starting with a letter, at most {spec.PREFIX_MAX} characters", prefix)
    if not spec.REGION.fullmatch(region or ""):
        raise RunnerConfigError("region", "a Google Cloud region such as europe-west1", region)
    for operator in operators:
        if not spec.MEMBER.fullmatch(operator):
            raise RunnerConfigError("operators", "principals such as user:ana@example.com or group:ops@example.com", operator)
    if build_service_account is not None and not spec.BUILD_EMAIL.fullmatch(build_service_account):
        raise RunnerConfigError("build_service_account", "a service account email", build_service_account)
    for workflow in (spec.BACKFILL_SOURCE, spec.QUEUE_SOURCE):
        if not (source_dir / workflow).is_file():
            raise RunnerConfigError("source_dir", f"a workflows-runner checkout with {workflow}", str(source_dir))


class WorkflowsRunner(pulumi.ComponentResource):
    """Everything deploy.sh deploys, as one component.

    Outputs: range_url, proxy_url, backfill_workflow (its id), queue_workflow (the queue waiter's
    id), runs_bucket (its name) and
    scheduler_email (the service account ScheduledWorkflow's jobs sign their OIDC tokens as).
    operators: principals who run wfr; they get what every wfr command and wfr ui need
    (docs/deploy.md, "Least privilege"). build_service_account: the email Cloud Build builds the
    functions as (default: a new PREFIX-build with the three roles Google documents for it).
    notification_channels: Cloud Monitoring channels (projects/P/notificationChannels/ID) the alert
    policy "PREFIX alerts" notifies of each new alert of the audit (docs/alerts.md); none, no policy.
    The function sources and backfill.yaml come from source_dir, by default the checkout that
    holds this package.
    """

    def __init__(self, name, region, prefix=spec.DEFAULT_PREFIX, allowed_workflows=None, *, project=None,
                 operators=(), build_service_account=None, source_dir=None, notification_channels=(), opts=None):
        super().__init__("workflows-runner:index:WorkflowsRunner", name, None, opts)
        source_dir = Path(source_dir) if source_dir is not None else CHECKOUT
        operators = [operators] if isinstance(operators, str) else list(operators)
        channels = [notification_channels] if isinstance(notification_channels, str) else list(notification_channels)
        _check(prefix, region, operators, build_service_account, source_dir, channels)
        self.project, self.region, self.prefix = _project(project), region, prefix
        self._name, self._source_dir = name, source_dir
        self._ids = spec.names(prefix)
        entries = allowlist.entries_of(allowed_workflows, self.project, region)
        entries = allowlist.with_backfill(entries, self.project, region, self._ids["workflow"])
        self.allowed_workflows = ",".join(entries)

        apis = self._apis()
        self.accounts = self._accounts(apis, own_builder=build_service_account is None)
        self._operators = operators
        self._roles = {}  # (CustomRole suffix, project) -> IAMCustomRole
        grants = self._project_roles()
        for other in allowlist.other_projects(entries, self.project):
            self._other_project_roles(other)
        self.build_email = build_service_account or self.accounts["build"].email
        self.runs_bucket = self._runs_bucket(apis)
        self.functions = self._functions([*apis, *grants])
        invokers = self._invokers()
        self.backfill = self._backfill(apis, invokers)
        self.queue = self._queue(apis, invokers)
        self.audit_job = self._audit_job(invokers)
        self.alert_metric = self._alert_metric(apis)
        self.alert_policy = self._alert_policy(channels, apis) if channels else None

        self.range_url = self.functions["range"].url
        self.proxy_url = self.functions["proxy"].url
        self.backfill_id = self._ids["workflow"]
        self.backfill_workflow = self.backfill.name
        self.queue_workflow = self.queue.name
        self.runs_bucket_name = self.runs_bucket.name
        self.scheduler_email = self.accounts["scheduler"].email
        self.register_outputs({
            "range_url": self.range_url, "proxy_url": self.proxy_url,
            "backfill_workflow": self.backfill_workflow, "queue_workflow": self.queue_workflow,
            "runs_bucket": self.runs_bucket_name,
            "scheduler_email": self.scheduler_email,
        })

    def _child(self, **more):
        return pulumi.ResourceOptions(parent=self, **more)

    def _apis(self):
        return [projects.Service(f"{self._name}-api-{api.split('.')[0]}", project=self.project, service=api,
                                 disable_on_destroy=False, opts=self._child())
                for api in spec.APIS]

    def _accounts(self, apis, own_builder):
        return {key: serviceaccount.Account(
                    f"{self._name}-sa-{key}", project=self.project, account_id=self._ids["account"][key],
                    display_name=display, opts=self._child(depends_on=apis))
                for key, display in spec.ACCOUNTS.items() if key != "build" or own_builder}

    def _here(self, project):
        return "" if project == self.project else f"-{project}"

    def _custom_role(self, role, project):
        created = projects.IAMCustomRole(
            f"{self._name}-role-{role.suffix}{self._here(project)}", project=project,
            role_id=role.role_id(self.prefix), title=role.title, description=role.description,
            permissions=list(role.permissions), stage=role.stage, opts=self._child())
        self._roles[(role.suffix, project)] = created
        return created

    def _grant(self, label, member, role, project):
        """`role` (a name, or a spec.CustomRole created in `project`) for `member` on `project`."""
        if isinstance(role, spec.CustomRole):
            name, role = role.suffix, self._roles[(role.suffix, project)].name
        else:
            name = role.rsplit("/", 1)[1]
        return projects.IAMMember(f"{self._name}-{label}-{name}{self._here(project)}", project=project,
                                  role=role, member=member, opts=self._child())

    def _project_roles(self):
        for role in (spec.EXECUTIONS_ROLE, spec.BACKFILL_ROLE, spec.AUDIT_ROLE, spec.RESUMER_ROLE):
            self._custom_role(role, self.project)
        grants = [self._grant(key, self.accounts[key].member, role, self.project) for key, role in spec.PROJECT_ROLES]
        if "build" in self.accounts:
            grants += [self._grant("build", self.accounts["build"].member, role, self.project) for role in spec.BUILD_ROLES]
        grants += [self._grant(operator, operator, role, self.project)
                   for operator in self._operators for role in spec.OPERATOR_PROJECT_ROLES]
        return grants

    def _other_project_roles(self, other):
        """The proxy starts runs in another project of the allowlist, the backfill waits on them."""
        for role in (spec.EXECUTIONS_ROLE, spec.READER_ROLE):
            self._custom_role(role, other)
        self._grant("proxy", self.accounts["proxy"].member, spec.EXECUTIONS_ROLE, other)
        self._grant("backfill", self.accounts["backfill"].member, spec.READER_ROLE, other)

    def _members(self, who):
        """(label, member) of an account key, or of each operator for "operators"."""
        if who == "operators":
            return [(operator, operator) for operator in self._operators]
        return [(who, self.accounts[who].member)]

    def _runs_bucket(self, apis):
        # The run ledger (docs/ledger.md): private, uniform access, public access prevention
        # enforced (https://cloud.google.com/storage/docs/public-access-prevention). Not
        # force_destroy: like `deploy.sh destroy`, the ledger is only removed on purpose.
        bucket = storage.Bucket(
            f"{self._name}-runs", project=self.project, name=spec.runs_bucket(self.project, self.prefix),
            location=self.region.upper(), uniform_bucket_level_access=True,
            public_access_prevention="enforced", opts=self._child(depends_on=apis))
        # The only storage grants of the pieces, on this bucket alone; writes under a prefix only.
        name = spec.runs_bucket(self.project, self.prefix)
        for who, role, prefix in spec.RUNS_BUCKET_ROLES:
            condition = prefix and storage.BucketIAMMemberConditionArgs(
                expression=spec.prefix_condition(name, prefix), title=spec.CONDITION_TITLES[prefix])
            for label, member in self._members(who):
                storage.BucketIAMMember(
                    f"{self._name}-runs-{label}-{role.rsplit('.', 1)[1]}{'-' + prefix.rstrip('/') if prefix else ''}",
                    bucket=bucket.name, role=role, member=member, condition=condition or None, opts=self._child())
        return bucket

    def _functions(self, after):
        sources = storage.Bucket(
            f"{self._name}-sources", project=self.project, name=spec.sources_bucket(self.project, self.prefix),
            location=self.region.upper(), uniform_bucket_level_access=True,
            public_access_prevention="enforced", force_destroy=True, opts=self._child(depends_on=after))
        functions = {}
        env = {
            "range": lambda: {},
            # A queued time waits in an execution of QUEUE_WORKFLOW, which EXECUTIONS_ROLE may start.
            "proxy": lambda: {"GOOGLE_CLOUD_PROJECT": self.project, "ALLOWED_WORKFLOWS": self.allowed_workflows,
                              "RUNS_BUCKET": self.runs_bucket.name,
                              "QUEUE_WORKFLOW": spec.queue_workflow(self.project, self.region, self.prefix)},
            # After the two it calls: their URLs are its settings (functions/audit/main.py).
            "audit": lambda: {"GOOGLE_CLOUD_PROJECT": self.project, "LOCATION": self.region,
                              "RUNS_BUCKET": self.runs_bucket.name, "RANGE_URL": functions["range"].url,
                              "PROXY_URL": functions["proxy"].url},
        }
        for key, function in spec.FUNCTIONS.items():
            source = source_archive(self._source_dir / function.folder, self._ids["function"][key])
            archive = storage.BucketObject(
                f"{self._name}-{key}-source", bucket=sources.name, name=source.object_name,
                source=source.archive, opts=self._child())
            functions[key] = cloudfunctionsv2.Function(
                f"{self._name}-{key}", project=self.project, location=self.region, name=self._ids["function"][key],
                build_config=cloudfunctionsv2.FunctionBuildConfigArgs(
                    runtime=spec.RUNTIME, entry_point=function.entry_point,
                    service_account=pulumi.Output.concat("projects/", self.project, "/serviceAccounts/", self.build_email),
                    source=cloudfunctionsv2.FunctionBuildConfigSourceArgs(
                        storage_source=cloudfunctionsv2.FunctionBuildConfigSourceStorageSourceArgs(
                            bucket=sources.name, object=archive.name))),
                service_config=cloudfunctionsv2.FunctionServiceConfigArgs(
                    service_account_email=self.accounts[function.account].email,
                    environment_variables=env[key](), timeout_seconds=function.timeout_seconds),
                opts=self._child(depends_on=after))
        return functions

    def _invokers(self):
        # Private functions: the only invokers are these service accounts, never allUsers.
        return [cloudrunv2.ServiceIamMember(
                    f"{self._name}-{function}-invoker-{label}", project=self.project, location=self.region,
                    name=self.functions[function].service_config.service, role="roles/run.invoker",
                    member=member, opts=self._child())
                for function, caller in spec.INVOKERS for label, member in self._members(caller)]

    def _audit_job(self, invokers):
        """PREFIX-audit: an audit pass every 5 minutes, as deploy.sh schedules it."""
        retry, url = spec.JOB_RETRY, self.functions["audit"].url
        return cloudscheduler.Job(
            f"{self._name}-audit-job", project=self.project, region=self.region, name=f"{self.prefix}-audit",
            schedule=spec.AUDIT_SCHEDULE, time_zone=spec.AUDIT_TIME_ZONE, attempt_deadline=retry.attempt_deadline,
            retry_config=cloudscheduler.JobRetryConfigArgs(
                retry_count=retry.retry_count, min_backoff_duration=retry.min_backoff,
                max_backoff_duration=retry.max_backoff),
            http_target=cloudscheduler.JobHttpTargetArgs(
                uri=url, http_method="POST", headers={"Content-Type": "application/json"},
                body=base64.b64encode(b"{}").decode(),
                oidc_token=cloudscheduler.JobHttpTargetOidcTokenArgs(
                    service_account_email=self.accounts["scheduler"].email, audience=url)),
            opts=self._child(depends_on=invokers))

    def _alert_metric(self, apis):
        metric = spec.alert_metric(self.prefix)
        descriptor = metric["metricDescriptor"]
        return logging.Metric(
            f"{self._name}-alerts-metric", project=self.project, name=f"{self.prefix}-alerts",
            description=metric["description"], filter=metric["filter"], label_extractors=metric["labelExtractors"],
            metric_descriptor=logging.MetricMetricDescriptorArgs(
                metric_kind=descriptor["metricKind"], value_type=descriptor["valueType"], unit=descriptor["unit"],
                labels=[logging.MetricMetricDescriptorLabelArgs(**label) for label in descriptor["labels"]]),
            opts=self._child(depends_on=apis))

    def _alert_policy(self, channels, apis):
        policy = spec.alert_policy(self.prefix, channels)
        [condition] = policy["conditions"]
        threshold = condition["conditionThreshold"]
        [aggregation] = threshold["aggregations"]
        return monitoring.AlertPolicy(
            f"{self._name}-alerts-policy", project=self.project, display_name=policy["displayName"],
            combiner=policy["combiner"], notification_channels=policy["notificationChannels"],
            conditions=[monitoring.AlertPolicyConditionArgs(
                display_name=condition["displayName"],
                condition_threshold=monitoring.AlertPolicyConditionConditionThresholdArgs(
                    filter=threshold["filter"], comparison=threshold["comparison"],
                    threshold_value=threshold["thresholdValue"], duration=threshold["duration"],
                    aggregations=[monitoring.AlertPolicyConditionConditionThresholdAggregationArgs(
                        alignment_period=aggregation["alignmentPeriod"],
                        per_series_aligner=aggregation["perSeriesAligner"],
                        cross_series_reducer=aggregation["crossSeriesReducer"],
                        group_by_fields=aggregation["groupByFields"])]))],
            documentation=monitoring.AlertPolicyDocumentationArgs(
                mime_type=policy["documentation"]["mimeType"], content=policy["documentation"]["content"]),
            opts=self._child(depends_on=[*apis, self.alert_metric]))

    def _backfill(self, apis, invokers):
        return workflows.Workflow(
            f"{self._name}-backfill", project=self.project, region=self.region, name=self._ids["workflow"],
            source_contents=(self._source_dir / spec.BACKFILL_SOURCE).read_text(),
            service_account=self.accounts["backfill"].email,
            user_env_vars={"RANGE_URL": self.functions["range"].url, "PROXY_URL": self.functions["proxy"].url,
                           "RUNS_BUCKET": self.runs_bucket.name},
            # Holds no data: removing the stack may remove it, as `deploy.sh destroy` does.
            deletion_protection=False,
            opts=self._child(depends_on=[*apis, *invokers]))

    def _queue(self, apis, invokers):
        """The queue waiter: re-delivers a queued time to the proxy (OIDC, audience PROXY_URL)."""
        return workflows.Workflow(
            f"{self._name}-queue", project=self.project, region=self.region, name=self._ids["queue_workflow"],
            source_contents=(self._source_dir / spec.QUEUE_SOURCE).read_text(),
            service_account=self.accounts["queue"].email,
            user_env_vars={"PROXY_URL": self.functions["proxy"].url},
            deletion_protection=False, opts=self._child(depends_on=[*apis, *invokers]))
