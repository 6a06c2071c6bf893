"""Runs a Pulumi program under Pulumi's unit-test mocks (pulumi.runtime.set_mocks): no Pulumi
CLI, no engine, no cloud. Every resource the program registers is recorded with its inputs.

The mock answers with the inputs plus the few outputs Google computes that the components read
(a service account's email and member, a function's URL and Cloud Run service, a custom
role's name), shaped as the
provider documents them. https://www.pulumi.com/docs/iac/guides/testing/unit/
"""
from dataclasses import dataclass

import pulumi
from pulumi.runtime import config as pulumi_config

STACK_PROJECT = "workflows-runner-tests"


@dataclass(frozen=True)
class Declared:
    type: str  # e.g. gcp:storage/bucket:Bucket
    name: str  # the Pulumi resource name
    inputs: dict  # as sent to the provider: camelCase keys
    custom: bool  # False for component resources


def mock_url(function):
    return f"https://{function}.mock.invalid"


def _computed(type_, inputs):
    if type_ == "gcp:serviceaccount/account:Account":
        email = f"{inputs['accountId']}@{inputs['project']}.iam.gserviceaccount.com"
        return {"email": email, "member": f"serviceAccount:{email}"}
    if type_ == "gcp:cloudfunctionsv2/function:Function":
        url = mock_url(inputs["name"])
        service = f"projects/{inputs['project']}/locations/{inputs['location']}/services/{inputs['name']}"
        return {"url": url, "serviceConfig": {**inputs.get("serviceConfig", {}), "service": service, "uri": url}}
    if type_ == "gcp:projects/iAMCustomRole:IAMCustomRole":
        return {"name": f"projects/{inputs['project']}/roles/{inputs['roleId']}"}
    return {}


class Recorder(pulumi.runtime.Mocks):
    def __init__(self):
        self.resources = []

    def new_resource(self, args):
        self.resources.append(Declared(args.typ, args.name, dict(args.inputs), bool(args.custom)))
        return [f"{args.name}-id", {**args.inputs, **_computed(args.typ, args.inputs)}]

    def call(self, args):
        raise AssertionError(f"the components should call no provider function, called {args.token}")


@dataclass(frozen=True)
class Program:
    resources: list  # of Declared, custom ones first-to-last as registered
    outputs: dict  # what the program function returned, resolved

    def of_type(self, type_):
        return [resource for resource in self.resources if resource.type == type_]

    def one(self, type_, name):
        found = [resource for resource in self.of_type(type_) if resource.name == name]
        assert len(found) == 1, (type_, name, [resource.name for resource in self.of_type(type_)])
        return found[0]


def declare(program, config=None):
    """Run program() (it builds resources and returns a dict of outputs) under mocks; config holds
    stack settings such as {"gcp:project": "p"}."""
    recorder = Recorder()
    pulumi.runtime.set_mocks(recorder, project=STACK_PROJECT, preview=False)
    pulumi_config.set_all_config(dict(config or {}))
    outputs = {}

    @pulumi.runtime.test
    def run():
        return pulumi.Output.from_input(program() or {}).apply(outputs.update)

    try:
        run()
    finally:
        pulumi_config.set_all_config({})
    return Program([resource for resource in recorder.resources if resource.custom], outputs)
