"""The deployability rules on the real shipped plans: each rule fires on a defect planted in a copy
of a shipped stack, naming the stack, the resource and the rule (mandatory in prod), and is quiet
once that defect is fixed in the copy. The checks read values, references and the graph, so the
plants are flips of planned properties and dependencies, as a user's stack would have them.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from agent_app.queues.permissions import nats_permissions
from policies.compliance.rules import ALL_RULES, deploy_order, skyfleet_app
from skyfleet.check.analyzer import PolicyPackProcess
from skyfleet.check.model import Finding
from skyfleet.check.runner import DEFAULT_PACK, check_stack
from skyfleet.cli import app
from skyfleet.plan import Plan, PlannedResource
from tests.infra.conftest import plans, previews, project, temp_project  # noqa: F401 - fixtures
from tests.policies.conftest import Gate

DEPLOYABILITY = {
    "skyfleet-app-env",
    "skyfleet-app-secret-values",
    "skyfleet-worker-no-api-keys",
    "skyfleet-app-tls-names",
    "skyfleet-workload-permissions",
    "gcp-api-enablement-order",
    "gcp-service-agent-order",
    "aws-route53-alias-order",
    "skyfleet-site-host-names",
    "skyfleet-edge-site-names",
    "cert-manager-issuer-fits-names",
    "aws-alarm-topic-deliverable",
    "aws-ecs-writable-volume-prepared",
}


# -- editing a copy of a planned stack ---------------------------------------------------------


def res(plan: Plan, name: str, type_: str | None = None) -> PlannedResource:
    found = [r for r in plan.resources if r.name == name and (type_ is None or r.type == type_)]
    assert len(found) == 1, f"{plan.stack}: {len(found)} resources named {name!r}"
    return found[0]


def edit(r: PlannedResource, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply one change to the resource's inputs (Analyze) and outputs (AnalyzeStack) alike."""
    change(r.inputs)
    if r.outputs:
        change(r.outputs)


def containers_json(change: Callable[[list[dict[str, Any]]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(props: dict[str, Any]) -> None:
        defs = json.loads(props["containerDefinitions"])
        change(defs)
        props["containerDefinitions"] = json.dumps(defs)

    return apply


def set_env(env: list[dict[str, Any]], name: str, value: str | None, *, key: str = "value") -> None:
    """Set (or with None remove) a variable in an ECS / Kubernetes / Cloud Run env list."""
    env[:] = [e for e in env if e.get("name") != name]
    if value is not None:
        env.append({"name": name, key: value})


def k8s_container(props: dict[str, Any]) -> dict[str, Any]:
    return props["spec"]["template"]["spec"]["containers"][0]


def run_container(props: dict[str, Any]) -> dict[str, Any]:
    return props["template"]["containers"][0]


def drop_dependency(r: PlannedResource, on: PlannedResource) -> None:
    r.dependencies = [d for d in r.dependencies if d != on.urn]
    r.property_dependencies = {k: [d for d in v if d != on.urn] for k, v in r.property_dependencies.items()}


def add_dependency(r: PlannedResource, on: PlannedResource) -> None:
    r.dependencies = [*r.dependencies, on.urn]


def _planned(template: PlannedResource, type_: str, name: str, props: dict[str, Any]) -> PlannedResource:
    """A new resource next to ``template`` (same parent and provider), its outputs as the provider's."""
    parent_type = template.urn.split("::")[2].rsplit("$", 1)[0]
    return PlannedResource(
        type=type_,
        name=name,
        urn=f"{template.urn.rsplit('::', 2)[0]}::{parent_type}${type_}::{name}",
        parent=template.parent,
        provider=template.provider,
        inputs=copy.deepcopy(props),
        outputs=copy.deepcopy(props),
        dependencies=[],
    )


def policy_doc(props: dict[str, Any], key: str = "policy") -> dict[str, Any]:
    return json.loads(props[key])


@dataclass
class Checked:
    plan: Plan
    findings: list[Finding]

    def of(self, rule: str) -> list[Finding]:
        return [f for f in self.findings if f.rule == rule]

    def on(self, rule: str, r: PlannedResource) -> list[Finding]:
        return [f for f in self.of(rule) if f.urn == r.urn]


@pytest.fixture(scope="module")
def shipped(plans: dict[str, Plan]) -> dict[str, Plan]:  # noqa: F811 - the session fixture
    return plans


def check(gate: Gate, plan: Plan) -> Checked:
    return Checked(plan, check_stack(gate.pack, gate.info, gate.rules, plan).findings)


def copy_of(shipped: dict[str, Plan], stack: str) -> Plan:
    return copy.deepcopy(shipped[stack])


def assert_names(found: list[Finding], plan: Plan, rule: str, r: PlannedResource, *text: str) -> None:
    """The finding names the stack, the resource and the rule, and is mandatory (prod profile)."""
    assert found, f"{rule} did not fire on {r.name} in {plan.stack}"
    f = found[0]
    assert (f.stack, f.rule, f.urn, f.resource_name) == (plan.stack, rule, r.urn, r.urn.rsplit("::", 1)[-1])
    assert f.mandatory, f"{rule} is {f.enforcement} in {plan.stack}"
    for t in text:
        assert any(t in x.message for x in found), f"{t!r} not in {[x.message for x in found]}"


# -- the app accepts its environment -----------------------------------------------------------


def _info_level(defs: list[dict[str, Any]]) -> None:
    for d in defs:
        set_env(d["environment"], "AGENT_LOG_LEVEL", "INFO")


def _fix_log_level(plan: Plan) -> None:
    """The lead's fix of the log level, so a test sees only its own plant."""
    for r in plan.resources:
        if r.type == "aws:ecs/taskDefinition:TaskDefinition":
            edit(r, containers_json(_info_level))
        elif r.type == "gcp:cloudrunv2/service:Service":
            edit(r, lambda p: set_env(run_container(p)["envs"], "AGENT_LOG_LEVEL", "INFO"))
        elif r.type == "kubernetes:apps/v1:Deployment":
            edit(r, lambda p: set_env(k8s_container(p)["env"], "AGENT_LOG_LEVEL", "INFO"))


@pytest.mark.parametrize("stack", ["aws-prod", "gcp-prod", "onprem-prod"])
def test_app_env_log_level_of_todays_stacks_and_its_fix(
    gate: Gate, shipped: dict[str, Plan], stack: str
) -> None:
    plan = copy_of(shipped, stack)
    today = check(gate, plan)
    api = next(
        r
        for r in plan.resources
        if r.type
        in (
            "aws:ecs/taskDefinition:TaskDefinition",
            "gcp:cloudrunv2/service:Service",
            "kubernetes:apps/v1:Deployment",
        )
        and r.name in ("service-api", "api")
    )
    assert_names(
        today.on("skyfleet-app-env", api), plan, "skyfleet-app-env", api, "AGENT_LOG_LEVEL", "got 'info'"
    )
    _fix_log_level(plan)
    assert check(gate, plan).of("skyfleet-app-env") == []


def test_app_env_ecs_value_out_of_range(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")
    _fix_log_level(plan)
    worker = res(plan, "service-worker", "aws:ecs/taskDefinition:TaskDefinition")
    edit(worker, containers_json(lambda d: set_env(d[0]["environment"], "AGENT_WORKER_CONCURRENCY", "0")))
    found = check(gate, plan).on("skyfleet-app-env", worker)
    assert_names(
        found,
        plan,
        "skyfleet-app-env",
        worker,
        "AGENT_WORKER_CONCURRENCY: Input should be greater than or equal to 1",
    )


def test_app_env_cloud_run_missing_required(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")
    _fix_log_level(plan)
    worker = res(plan, "worker", "gcp:cloudrunv2/service:Service")
    edit(worker, lambda p: set_env(run_container(p)["envs"], "AGENT_REDIS_URL", None))
    found = check(gate, plan).on("skyfleet-app-env", worker)
    assert_names(found, plan, "skyfleet-app-env", worker, "AGENT_REDIS_URL: is required but not set")


def test_app_env_kubernetes_queue_url_the_contract_rejects(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "onprem-prod")
    _fix_log_level(plan)
    api = res(plan, "api", "kubernetes:apps/v1:Deployment")
    edit(api, lambda p: set_env(k8s_container(p)["env"], "AGENT_QUEUE_URL", "kafka://broker/tasks"))
    found = check(gate, plan).on("skyfleet-app-env", api)
    assert_names(found, plan, "skyfleet-app-env", api, "unsupported scheme 'kafka'")


def test_app_env_kubernetes_env_from_a_config_map(gate: Gate, shipped: dict[str, Plan]) -> None:
    """envFrom counts: keys of an in-stack ConfigMap are validated; a source outside the stack may
    hold what looks missing."""
    plan = copy_of(shipped, "onprem-prod")
    _fix_log_level(plan)
    api = res(plan, "api", "kubernetes:apps/v1:Deployment")
    settings = _planned(
        res(plan, "nats-streams", "kubernetes:core/v1:ConfigMap"),
        "kubernetes:core/v1:ConfigMap",
        "api-settings",
        {
            "metadata": {"name": "api-settings", "namespace": "agent-app"},
            "data": {"AGENT_SESSION_MAX_TURNS": "0"},
        },
    )
    plan.resources.append(settings)

    def env_from(p: dict[str, Any]) -> None:
        k8s_container(p)["envFrom"] = [{"configMapRef": {"name": "api-settings"}}]

    edit(api, env_from)
    found = check(gate, plan).on("skyfleet-app-env", api)
    assert_names(
        found,
        plan,
        "skyfleet-app-env",
        api,
        "AGENT_SESSION_MAX_TURNS: Input should be greater than or equal to 1",
    )

    edit(settings, lambda p: p["data"].update(AGENT_SESSION_MAX_TURNS="10"))
    edit(api, lambda p: set_env(k8s_container(p)["env"], "AGENT_REDIS_URL", None))
    found = check(gate, plan).on("skyfleet-app-env", api)
    assert_names(found, plan, "skyfleet-app-env", api, "AGENT_REDIS_URL: is required but not set")
    edit(api, lambda p: k8s_container(p)["envFrom"].append({"secretRef": {"name": "made-elsewhere"}}))
    assert check(gate, plan).on("skyfleet-app-env", api) == []


def test_app_env_file_setting_not_mounted(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "onprem-prod")
    _fix_log_level(plan)
    api = res(plan, "api", "kubernetes:apps/v1:Deployment")
    edit(
        api,
        lambda p: set_env(k8s_container(p)["env"], "AGENT_REDIS_CA_FILE", "/etc/skyfleet/tls/redis/root.pem"),
    )
    found = check(gate, plan).on("skyfleet-app-env", api)
    assert_names(found, plan, "skyfleet-app-env", api, "AGENT_REDIS_CA_FILE", "has no root.pem")
    edit(api, lambda p: set_env(k8s_container(p)["env"], "AGENT_REDIS_CA_FILE", "/nowhere/ca.crt"))
    found = check(gate, plan).on("skyfleet-app-env", api)
    assert_names(found, plan, "skyfleet-app-env", api, "no volume is mounted at or above /nowhere/ca.crt")


def test_app_env_secret_value_the_app_rejects(gate: Gate, shipped: dict[str, Plan]) -> None:
    """Where the plan holds the secret, its value is checked as the app checks it."""
    plan = copy_of(shipped, "aws-prod")
    _fix_log_level(plan)
    version = res(plan, "secrets-api-keys", "aws:secretsmanager/secretVersion:SecretVersion")
    edit(version, lambda p: p["secretString"].update(value="too-short"))
    api = res(plan, "service-api", "aws:ecs/taskDefinition:TaskDefinition")
    found = check(gate, plan).on("skyfleet-app-secret-values", api)
    assert_names(
        found,
        plan,
        "skyfleet-app-secret-values",
        api,
        "AGENT_API_KEYS: key on line 1 is shorter than 16 characters",
    )


def test_app_secret_values_missing_kubernetes_secret_key_and_mounted_keys(
    gate: Gate, shipped: dict[str, Plan]
) -> None:
    plan = copy_of(shipped, "onprem-prod")
    assert check(gate, plan).of("skyfleet-app-secret-values") == []
    worker = res(plan, "worker", "kubernetes:apps/v1:Deployment")
    edit(
        res(plan, "redis-auth", "kubernetes:core/v1:Secret"),
        lambda p: p["stringData"]["value"].update(pass_word="x"),
    )
    edit(
        res(plan, "redis-auth", "kubernetes:core/v1:Secret"),
        lambda p: p["stringData"]["value"].pop("password"),
    )
    found = check(gate, plan).on("skyfleet-app-secret-values", worker)
    assert_names(
        found, plan, "skyfleet-app-secret-values", worker, "Secret 'redis-auth' has no key 'password'"
    )

    plan = copy_of(shipped, "onprem-prod")
    edit(
        res(plan, "api-keys", "kubernetes:core/v1:Secret"),
        lambda p: p["stringData"]["value"].update({"api-keys": "short\n"}),
    )
    api = res(plan, "api", "kubernetes:apps/v1:Deployment")
    found = check(gate, plan).on("skyfleet-app-secret-values", api)
    assert_names(
        found,
        plan,
        "skyfleet-app-secret-values",
        api,
        "AGENT_API_KEYS_FILE (/var/run/secrets/skyfleet/api-keys)",
    )


def test_app_env_api_without_keys(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")
    _fix_log_level(plan)
    api = res(plan, "api", "gcp:cloudrunv2/service:Service")
    edit(api, lambda p: set_env(run_container(p)["envs"], "AGENT_API_KEYS_FILE", None))
    found = check(gate, plan).on("skyfleet-app-env", api)
    assert_names(found, plan, "skyfleet-app-env", api, "no API keys")


def test_app_env_ignores_the_checking_machines_environment(shipped: dict[str, Plan]) -> None:
    """The settings model must see only the plan: a variable in the pack's own environment does
    not fill a gap in a container's."""
    plan = copy_of(shipped, "gcp-prod")
    _fix_log_level(plan)
    worker = res(plan, "worker", "gcp:cloudrunv2/service:Service")
    edit(worker, lambda p: set_env(run_container(p)["envs"], "AGENT_REDIS_URL", None))
    saved = dict(os.environ)
    os.environ.update(
        {"AGENT_REDIS_URL": "redis://from-the-checking-machine:6379", "AGENT_LOG_LEVEL": "INFO"}
    )
    try:
        with PolicyPackProcess(DEFAULT_PACK, timeout=60) as pack:
            local = Gate(pack)
            found = check(local, plan).on("skyfleet-app-env", worker)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert_names(found, plan, "skyfleet-app-env", worker, "AGENT_REDIS_URL: is required but not set")


def test_app_env_settings_model_reads_the_environment_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Why the rule subclasses the model: pydantic-settings' model_validate merges os.environ."""
    from agent_app.config import Settings

    monkeypatch.setenv("AGENT_REDIS_URL", "redis://env:6379")
    monkeypatch.setenv("AGENT_QUEUE_URL", "nats://env:4222/S")
    assert Settings.model_validate({}).redis_url == "redis://env:6379"
    with pytest.raises(Exception, match="AGENT_REDIS_URL"):
        skyfleet_app.PlannedSettings.model_validate({})


def test_worker_api_keys_today_and_fixed(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")
    worker = res(plan, "service-worker", "aws:ecs/taskDefinition:TaskDefinition")
    assert_names(
        check(gate, plan).on("skyfleet-worker-no-api-keys", worker),
        plan,
        "skyfleet-worker-no-api-keys",
        worker,
    )
    edit(
        worker,
        containers_json(
            lambda d: d[0].update(secrets=[s for s in d[0]["secrets"] if s["name"] != "AGENT_API_KEYS"])
        ),
    )
    assert check(gate, plan).on("skyfleet-worker-no-api-keys", worker) == []


# -- TLS names of the cache and broker ---------------------------------------------------------


def test_tls_memorystore_hostname_today(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")
    api = res(plan, "api", "gcp:cloudrunv2/service:Service")
    found = check(gate, plan).on("skyfleet-app-tls-names", api)
    assert_names(found, plan, "skyfleet-app-tls-names", api, "names that address only in its subject CN")


def test_tls_memorystore_hostname_check_off_passes(gate: Gate, shipped: dict[str, Plan]) -> None:
    """Goes green once agent_app.config has AGENT_REDIS_TLS_CHECK_HOSTNAME (the lead's fix)."""
    plan = copy_of(shipped, "gcp-prod")
    _fix_log_level(plan)
    for name in ("api", "worker"):
        edit(
            res(plan, name, "gcp:cloudrunv2/service:Service"),
            lambda p: set_env(run_container(p)["envs"], "AGENT_REDIS_TLS_CHECK_HOSTNAME", "false"),
        )
    assert [f.message for f in check(gate, plan).of("skyfleet-app-tls-names")] == []


def test_tls_in_cluster_certificate_must_name_the_host(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "onprem-prod")
    worker = res(plan, "worker", "kubernetes:apps/v1:Deployment")
    assert check(gate, plan).on("skyfleet-app-tls-names", worker) == []
    cert = res(plan, "redis-tls", "kubernetes:cert-manager.io/v1:Certificate")
    edit(cert, lambda p: p["spec"].update(dnsNames=[n for n in p["spec"]["dnsNames"] if ".svc" not in n]))
    found = check(gate, plan).on("skyfleet-app-tls-names", worker)
    assert_names(
        found, plan, "skyfleet-app-tls-names", worker, "redis.agent-app.svc, which the server's certificate"
    )
    edit(worker, lambda p: set_env(k8s_container(p)["env"], "AGENT_QUEUE_CA_FILE", None))
    found = check(gate, plan).on("skyfleet-app-tls-names", worker)
    assert_names(found, plan, "skyfleet-app-tls-names", worker, "set AGENT_QUEUE_CA_FILE")


# -- the workload's identity can do what the app does ------------------------------------------


def test_permissions_ecs_task_role_missing_an_sqs_action(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")
    worker = res(plan, "service-worker", "aws:ecs/taskDefinition:TaskDefinition")
    assert check(gate, plan).of("skyfleet-workload-permissions") == []

    def drop(props: dict[str, Any]) -> None:
        doc = policy_doc(props)
        doc["Statement"][0]["Action"].remove("sqs:ReceiveMessage")
        props["policy"] = json.dumps(doc)

    edit(res(plan, "service-task-queue", "aws:iam/rolePolicy:RolePolicy"), drop)
    found = check(gate, plan).on("skyfleet-workload-permissions", worker)
    assert_names(found, plan, "skyfleet-workload-permissions", worker, "sqs:ReceiveMessage on arn:aws:sqs:")
    api = res(plan, "service-api", "aws:ecs/taskDefinition:TaskDefinition")
    assert check(gate, plan).on("skyfleet-workload-permissions", api) == []  # the api does not receive


def test_permissions_ecs_task_role_scoped_to_another_queue(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")

    def elsewhere(props: dict[str, Any]) -> None:
        doc = policy_doc(props)
        doc["Statement"][0]["Resource"] = doc["Statement"][0]["Resource"] + "-dlq"
        props["policy"] = json.dumps(doc)

    edit(res(plan, "service-task-queue", "aws:iam/rolePolicy:RolePolicy"), elsewhere)
    api = res(plan, "service-api", "aws:ecs/taskDefinition:TaskDefinition")
    found = check(gate, plan).on("skyfleet-workload-permissions", api)
    assert_names(
        found, plan, "skyfleet-workload-permissions", api, "sqs:SendMessage", "sqs:GetQueueAttributes"
    )


def test_permissions_ecs_execution_role_and_secret_key(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")
    api = res(plan, "service-api", "aws:ecs/taskDefinition:TaskDefinition")

    def no_decrypt(props: dict[str, Any]) -> None:
        doc = policy_doc(props)
        doc["Statement"] = [s for s in doc["Statement"] if s.get("Action") != "kms:Decrypt"]
        props["policy"] = json.dumps(doc)

    edit(res(plan, "service-execution", "aws:iam/rolePolicy:RolePolicy"), no_decrypt)
    found = check(gate, plan).on("skyfleet-workload-permissions", api)
    assert_names(
        found, plan, "skyfleet-workload-permissions", api, "execution role", "kms:Decrypt on arn:aws:kms:"
    )


def test_permissions_cloud_run_subscription_and_secret_grants(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")
    assert check(gate, plan).of("skyfleet-workload-permissions") == []
    plan.resources.remove(res(plan, "worker-subscription-subscriber"))
    plan.resources.remove(res(plan, "api-api-keys-accessor"))
    checked = check(gate, plan)
    worker, api = (
        res(plan, "worker", "gcp:cloudrunv2/service:Service"),
        res(plan, "api", "gcp:cloudrunv2/service:Service"),
    )
    assert_names(
        checked.on("skyfleet-workload-permissions", worker),
        plan,
        "skyfleet-workload-permissions",
        worker,
        "pubsub.subscriptions.consume on projects/skyfleet-prod-replace-me/subscriptions/"
        "gcp-prod-tasks-worker",
    )
    assert_names(
        checked.on("skyfleet-workload-permissions", api),
        plan,
        "skyfleet-workload-permissions",
        api,
        "secretmanager.versions.access on projects/skyfleet-prod-replace-me/secrets/gcp-prod-api-keys",
    )


def test_permissions_cloud_run_project_level_grant_counts(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")
    member = res(plan, "worker-subscription-subscriber")
    plan.resources.remove(member)
    project_grant = copy.deepcopy(member)
    project_grant.type = "gcp:projects/iAMMember:IAMMember"
    project_grant.urn = member.urn.replace(
        "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember", project_grant.type
    )
    edit(project_grant, lambda p: p.pop("subscription"))
    plan.resources.append(project_grant)
    assert check(gate, plan).of("skyfleet-workload-permissions") == []


def _nats_with_users(plan: Plan, permissions: dict[str, Any]) -> None:
    """NATS users in the broker's nats.conf and the user in each app's queue URL."""
    conf = res(plan, "nats-config", "kubernetes:core/v1:ConfigMap")
    users = [
        {"user": u, "password": f"$NATS_{u.upper()}_PASSWORD", "permissions": p}
        for u, p in permissions.items()
    ]
    edit(
        conf,
        lambda p: p["data"].update(
            {"nats.conf": p["data"]["nats.conf"] + f"authorization: {json.dumps({'users': users})}\n"}
        ),
    )
    for role in ("api", "worker"):
        deployment = res(plan, role, "kubernetes:apps/v1:Deployment")

        def with_user(p: dict[str, Any], role: str = role) -> None:
            env = k8s_container(p)["env"]
            url = next(e["value"] for e in env if e["name"] == "AGENT_QUEUE_URL")
            set_env(env, "AGENT_QUEUE_URL", url.replace("nats://", f"nats://{role}@"))

        edit(deployment, with_user)


def test_permissions_nats_users(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "onprem-prod")
    api = res(plan, "api", "kubernetes:apps/v1:Deployment")
    found = check(gate, plan).on("skyfleet-workload-permissions", api)
    assert_names(found, plan, "skyfleet-workload-permissions", api, "authenticates no client")

    table = nats_permissions("AGENT_TASKS", "agent.tasks", "agent.tasks.dlq")
    _nats_with_users(plan, table)
    assert check(gate, plan).of("skyfleet-workload-permissions") == []

    plan = copy_of(shipped, "onprem-prod")
    broken = copy.deepcopy(table)
    broken["worker"]["publish"]["allow"].remove("$JS.API.CONSUMER.MSG.NEXT.AGENT_TASKS.agent-worker")
    _nats_with_users(plan, broken)
    worker = res(plan, "worker", "kubernetes:apps/v1:Deployment")
    found = check(gate, plan).on("skyfleet-workload-permissions", worker)
    assert_names(
        found,
        plan,
        "skyfleet-workload-permissions",
        worker,
        "NATS user 'worker' may not publish $JS.API.CONSUMER.MSG.NEXT",
    )


# -- order --------------------------------------------------------------------------------------


def test_order_gcp_resource_without_its_api(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")
    topic = res(plan, "tasks", "gcp:pubsub/topic:Topic")
    assert check(gate, plan).on("gcp-api-enablement-order", topic) == []
    drop_dependency(topic, res(plan, "api-pubsub"))
    found = check(gate, plan).on("gcp-api-enablement-order", topic)
    assert_names(found, plan, "gcp-api-enablement-order", topic, "pubsub.googleapis.com")


def test_order_gcp_todays_races_and_their_fix(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")
    sa = res(plan, "api-sa", "gcp:serviceaccount/account:Account")
    assert_names(
        check(gate, plan).on("gcp-api-enablement-order", sa),
        plan,
        "gcp-api-enablement-order",
        sa,
        "iam.googleapis.com",
    )
    services = {r.inputs["service"]: r for r in plan.of_type("gcp:projects/service:Service")}
    for r in plan.resources:
        api = deploy_order.gcp_api_of(r.type)
        if api in services:
            add_dependency(r, services[api])
    assert check(gate, plan).of("gcp-api-enablement-order") == []


def test_order_service_agent_needs_a_service_identity(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")
    grant = res(plan, "dead-letter-agent-publisher")
    assert_names(
        check(gate, plan).on("gcp-service-agent-order", grant),
        plan,
        "gcp-service-agent-order",
        grant,
        "ServiceIdentity",
    )
    api = res(plan, "api-pubsub")
    identity = PlannedResource(
        type="gcp:projects/serviceIdentity:ServiceIdentity",
        name="pubsub-agent",
        urn=api.urn.replace(
            "gcp:projects/service:Service::api-pubsub",
            "gcp:projects/serviceIdentity:ServiceIdentity::pubsub-agent",
        ),
        parent=api.parent,
        provider=api.provider,
        inputs={"service": "pubsub.googleapis.com", "project": "skyfleet-prod-replace-me"},
        outputs={"service": "pubsub.googleapis.com", "project": "skyfleet-prod-replace-me", "email": "x"},
        dependencies=[api.urn],
    )
    plan.resources.append(identity)
    for name in ("dead-letter-agent-publisher", "dead-letter-agent-subscriber"):
        add_dependency(res(plan, name), identity)
    assert check(gate, plan).of("gcp-service-agent-order") == []


def test_order_route53_alias_today_and_fixed(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "edge-prod")
    alias = res(plan, "secondary-tier-1")
    assert_names(
        check(gate, plan).on("aws-route53-alias-order", alias), plan, "aws-route53-alias-order", alias
    )
    add_dependency(alias, res(plan, "primary-gcp-prod"))
    assert check(gate, plan).of("aws-route53-alias-order") == []


# -- names ----------------------------------------------------------------------------------------


GLOBAL = "api.agents.example.com"


def _declare(plan: Plan, *names: str) -> None:
    plan.outputs = {**plan.outputs, "hostNames": [*names]}


def test_names_aws_certificate_must_cover_the_global_name(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")
    _declare(plan, "aws.agents.example.com", GLOBAL)
    listener = res(plan, "lb-https", "aws:lb/listener:Listener")
    found = check(gate, plan).on("skyfleet-site-host-names", listener)
    assert_names(
        found,
        plan,
        "skyfleet-site-host-names",
        listener,
        f"as {GLOBAL}, which its certificate does not cover",
    )
    edit(
        res(plan, "lb-cert", "aws:acm/certificate:Certificate"),
        lambda p: p.update(subjectAlternativeNames=[GLOBAL]),
    )
    assert check(gate, plan).of("skyfleet-site-host-names") == []


def test_names_gcp_managed_certificate(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")
    _declare(plan, "gcp.agents.example.com", GLOBAL)
    proxy = res(plan, "https", "gcp:compute/targetHttpsProxy:TargetHttpsProxy")
    found = check(gate, plan).on("skyfleet-site-host-names", proxy)
    assert_names(found, plan, "skyfleet-site-host-names", proxy, GLOBAL)
    cert = res(plan, "certificate", "gcp:compute/managedSslCertificate:ManagedSslCertificate")
    edit(cert, lambda p: p["managed"].update(domains=[*p["managed"]["domains"], GLOBAL]))
    assert check(gate, plan).of("skyfleet-site-host-names") == []


def test_names_gcp_certificate_manager_map(gate: Gate, shipped: dict[str, Plan]) -> None:
    """The lead's GCP shape: Certificate Manager certificates in a map on the HTTPS proxy, with the
    provider's id formats (map id, entry's map by name, certificates by id, proxy's // URL)."""
    plan = copy_of(shipped, "gcp-prod")
    _declare(plan, "gcp.agents.example.com", GLOBAL)
    proxy = res(plan, "https", "gcp:compute/targetHttpsProxy:TargetHttpsProxy")
    base = "projects/skyfleet-prod-replace-me/locations/global"
    certs = []
    for i, domain in enumerate(("gcp.agents.example.com", GLOBAL)):
        props = {"name": f"site-{i}", "id": f"{base}/certificates/site-{i}", "managed": {"domains": [domain]}}
        certs.append(_planned(proxy, "gcp:certificatemanager/certificate:Certificate", f"cert-{i}", props))
    cert_map = _planned(
        proxy,
        "gcp:certificatemanager/certificateMap:CertificateMap",
        "cert-map",
        {"name": "gcp-prod-map", "id": f"{base}/certificateMaps/gcp-prod-map"},
    )
    entries = [
        _planned(
            proxy,
            "gcp:certificatemanager/certificateMapEntry:CertificateMapEntry",
            f"entry-{i}",
            {
                "map": "gcp-prod-map",
                "hostname": c.inputs["managed"]["domains"][0],
                "certificates": [c.inputs["id"]],
            },
        )
        for i, c in enumerate(certs)
    ]
    plan.resources += [*certs, cert_map, *entries]

    def use_map(p: dict[str, Any]) -> None:
        p.pop("sslCertificates")
        p["certificateMap"] = f"//certificatemanager.googleapis.com/{base}/certificateMaps/gcp-prod-map"

    edit(proxy, use_map)
    assert check(gate, plan).of("skyfleet-site-host-names") == []
    plan.resources.remove(entries[1])
    found = check(gate, plan).on("skyfleet-site-host-names", proxy)
    assert_names(
        found, plan, "skyfleet-site-host-names", proxy, f"as {GLOBAL}, which its certificate does not cover"
    )


def test_names_ingress_tls_hosts_and_rules(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "onprem-prod")
    _declare(plan, "onprem.agents.example.com", GLOBAL)
    ingress = res(plan, "api", "kubernetes:networking.k8s.io/v1:Ingress")
    found = check(gate, plan).on("skyfleet-site-host-names", ingress)
    assert_names(
        found, plan, "skyfleet-site-host-names", ingress, "certificate does not cover", "no host rule routes"
    )

    def serve(p: dict[str, Any]) -> None:
        p["spec"]["tls"][0]["hosts"].append(GLOBAL)
        p["spec"]["rules"].append({**copy.deepcopy(p["spec"]["rules"][0]), "host": GLOBAL})

    edit(ingress, serve)
    assert check(gate, plan).of("skyfleet-site-host-names") == []


def test_names_edge_sites_must_declare_the_global_name(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "edge-prod")
    ref = res(plan, "org/skyfleet/gcp-prod", "pulumi:pulumi:StackReference")
    found = check(gate, plan).on("skyfleet-edge-site-names", ref)
    assert_names(found, plan, "skyfleet-edge-site-names", ref, f"clients of {GLOBAL} to site gcp-prod")
    for r in plan.of_type("pulumi:pulumi:StackReference"):
        r.outputs["outputs"]["hostNames"] = [GLOBAL]  # what each fixed site stack exports
    assert check(gate, plan).of("skyfleet-edge-site-names") == []


# -- cert-manager issuers --------------------------------------------------------------------------


def test_issuer_used_for_internal_and_public_names(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "onprem-prod")
    ingress = res(plan, "api", "kubernetes:networking.k8s.io/v1:Ingress")
    found = check(gate, plan).on("cert-manager-issuer-fits-names", ingress)
    assert_names(found, plan, "cert-manager-issuer-fits-names", ingress, "ClusterIssuer 'skyfleet-ca'")
    edit(
        ingress,
        lambda p: p["metadata"]["annotations"].update({"cert-manager.io/cluster-issuer": "letsencrypt"}),
    )
    assert check(gate, plan).of("cert-manager-issuer-fits-names") == []


def test_issuer_kind_must_fit_when_the_stack_defines_it(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "onprem-prod")
    ingress = res(plan, "api", "kubernetes:networking.k8s.io/v1:Ingress")
    edit(ingress, lambda p: p["metadata"]["annotations"].update({"cert-manager.io/cluster-issuer": "public"}))
    template = res(plan, "redis-tls", "kubernetes:cert-manager.io/v1:Certificate")
    issuer = copy.deepcopy(template)
    issuer.type = "kubernetes:cert-manager.io/v1:ClusterIssuer"
    issuer.urn = template.urn.replace(
        "kubernetes:cert-manager.io/v1:Certificate::redis-tls", f"{issuer.type}::public"
    )
    body = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "ClusterIssuer",
        "metadata": {"name": "public"},
        "spec": {"ca": {"secretName": "ca"}},
    }
    issuer.inputs, issuer.outputs = copy.deepcopy(body), copy.deepcopy(body)
    plan.resources.append(issuer)
    found = check(gate, plan).on("cert-manager-issuer-fits-names", ingress)
    assert_names(found, plan, "cert-manager-issuer-fits-names", ingress, "do not trust")
    edit(issuer, lambda p: p.update(spec={"acme": {"server": "https://acme.example/directory"}}))
    assert check(gate, plan).of("cert-manager-issuer-fits-names") == []


# -- alarm delivery ---------------------------------------------------------------------------------


def test_alarm_topic_aws_managed_key_and_a_customer_key(gate: Gate, shipped: dict[str, Plan]) -> None:
    edge = copy_of(shipped, "edge-prod")
    topic = res(edge, "edge-alarms", "aws:sns/topic:Topic")
    found = check(gate, edge).on("aws-alarm-topic-deliverable", topic)
    assert_names(found, edge, "aws-alarm-topic-deliverable", topic, "alias/aws/sns")

    site = copy_of(shipped, "aws-prod")  # its alarm topic's key already lets CloudWatch in
    site_topic = res(site, "alarms-topic", "aws:sns/topic:Topic")
    assert check(gate, site).of("aws-alarm-topic-deliverable") == []

    def without_cloudwatch(props: dict[str, Any]) -> None:
        doc = policy_doc(props)
        doc["Statement"] = [
            s for s in doc["Statement"] if s.get("Principal") != {"Service": "cloudwatch.amazonaws.com"}
        ]
        props["policy"] = json.dumps(doc)

    edit(res(site, "secrets-key", "aws:kms/key:Key"), without_cloudwatch)
    found = check(gate, site).on("aws-alarm-topic-deliverable", site_topic)
    assert_names(
        found, site, "aws-alarm-topic-deliverable", site_topic, "kms:GenerateDataKey and kms:Decrypt"
    )


# -- Fargate scratch volume --------------------------------------------------------------------------


def test_ecs_scratch_volume_today_and_with_an_init_container(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")
    api = res(plan, "service-api", "aws:ecs/taskDefinition:TaskDefinition")
    found = check(gate, plan).on("aws-ecs-writable-volume-prepared", api)
    assert_names(found, plan, "aws-ecs-writable-volume-prepared", api, "'scratch' at /tmp")

    def init(defs: list[dict[str, Any]]) -> None:
        app_container = defs[0]
        defs.append(
            {
                "name": "scratch-init",
                "image": app_container["image"],
                "essential": False,
                "user": "0",
                "command": ["sh", "-c", "chown 10001:10001 /tmp && chmod 0700 /tmp"],
                "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/tmp", "readOnly": False}],
            }
        )
        app_container["dependsOn"] = [{"containerName": "scratch-init", "condition": "SUCCESS"}]

    edit(api, containers_json(init))
    assert check(gate, plan).on("aws-ecs-writable-volume-prepared", api) == []


# -- the shipped stacks, preview, end to end ------------------------------------------------------


def test_shipped_stacks_pass_the_deployability_rules(gate: Gate, shipped: dict[str, Plan]) -> None:
    """Red until the lead's infra fixes for issue #10 land; the findings list is the regression
    evidence of which rule catches which shipped defect."""
    found = [
        (stack, f.rule, f.resource_name, f.message.splitlines()[-1])
        for stack, plan in shipped.items()
        for f in check(gate, plan).findings
        if f.rule in DEPLOYABILITY
    ]
    assert found == []


def test_every_deployability_rule_is_in_the_pack_and_mandatory() -> None:
    rules = {r.id: r for r in ALL_RULES}
    assert set(rules) >= DEPLOYABILITY
    for rule_id in DEPLOYABILITY:
        assert rules[rule_id].kind == "stack" and not rules[rule_id].prod_only
        assert rules[rule_id].enforcement.name == "MANDATORY"


def test_preview_unknowns_propagate_as_the_sdk_does(gate: Gate, previews: dict[str, Plan]) -> None:  # noqa: F811
    """In a preview the rules either run or answer the SDK's advisory 'can't run during preview':
    never a crash, never a mandatory finding made of an unknown."""
    for plan in previews.values():
        for f in check(gate, plan).findings:
            if f.rule in DEPLOYABILITY and f.preview_unknown:
                assert not f.mandatory and "during preview" in f.message


def test_cli_end_to_end_bad_app_env_in_a_stack_file(
    temp_project: Callable[[str, str], Path],  # noqa: F811 - the fixture from tests/infra
    tmp_path: Path,
) -> None:
    shipped_file = Path(__file__).resolve().parents[2] / "stacks" / "Pulumi.aws-prod.yaml"
    doc = yaml.safe_load(shipped_file.read_text())
    doc["config"]["skyfleet:app"]["env"]["AGENT_SESSION_TTL_SECONDS"] = "5"
    root = temp_project("aws-bad", yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app, ["check", "--program", str(root), "--stack", "aws-bad", "--json", str(out)]
    )
    assert result.exit_code == 1, result.output
    findings = [f for s in json.loads(out.read_text())["stacks"] for f in s["findings"]]
    bad = [f for f in findings if "AGENT_SESSION_TTL_SECONDS" in f["message"]]
    assert {(f["stack"], f["rule"], f["resource_name"], f["enforcement"]) for f in bad} == {
        ("aws-bad", "skyfleet-app-env", "service-api", "mandatory"),
        ("aws-bad", "skyfleet-app-env", "service-worker", "mandatory"),
    }
    assert all("greater than or equal to 60 (got '5')" in f["message"] for f in bad)


def test_type_tokens_the_rules_read_are_the_sdks() -> None:
    """Every resource type the deployability rules look for is a token the provider SDK registers
    (cert-manager's are CRDs, outside the Kubernetes SDK)."""
    import re

    from policies.compliance.rules import (
        _plan,
        alarm_delivery,
        ecs_scratch,
        skyfleet_names,
        skyfleet_permissions,
        tls_names,
    )
    from tests.policies.test_gate import _sdk_class

    modules = (
        _plan,
        alarm_delivery,
        deploy_order,
        ecs_scratch,
        skyfleet_app,
        skyfleet_names,
        skyfleet_permissions,
        tls_names,
    )
    token = re.compile(r"^(aws|gcp|kubernetes):[^:]+:[A-Za-z]+$")
    found: set[str] = set(skyfleet_permissions._IAM_TYPES) | set(deploy_order.GCP_API_BY_TYPE)
    for module in modules:
        found |= {v for v in vars(module).values() if isinstance(v, str) and token.match(v)}
    checked = sorted(t for t in found if not t.startswith("kubernetes:cert-manager.io/"))
    assert len(checked) > 30
    for t in checked:
        cls = _sdk_class(t)
        assert cls is not None, t


def test_nats_conf_reader_forms() -> None:
    """The nats.conf forms the permissions rule must read (nats-server's own syntax)."""
    from policies.compliance.rules import _nats_conf

    text = """
    # comment
    PASS: "s3cret"            // another comment
    listen 0.0.0.0:4222
    authorization {
      default_permissions = { publish = "_INBOX.>" }
      users = [
        {user: api, password: $PASS,
         permissions: {publish: {allow: ["agent.tasks"], deny: "agent.tasks.dlq"}}}
        {user: "worker"; password: 'x'}
      ]
    }
    jetstream { max_file_store: 19GB }
    """
    conf = _nats_conf.parse(text)
    assert conf["listen"] == "0.0.0.0:4222" and conf["jetstream"]["max_file_store"] == "19GB"
    users = _nats_conf.users(conf)
    assert users is not None and users["api"] is not None
    assert conf["authorization"]["users"][0]["password"] == "s3cret"
    assert _nats_conf.permitted(users["api"], "publish", "agent.tasks")
    assert not _nats_conf.permitted(users["api"], "publish", "agent.tasks.dlq")
    assert _nats_conf.permitted(users["worker"], "publish", "_INBOX.x")  # the default permissions
    assert not _nats_conf.permitted(users["worker"], "publish", "agent.tasks")
    assert _nats_conf.users(_nats_conf.parse("port: 4222\n")) is None
    with pytest.raises(_nats_conf.NatsConfError, match="line 1"):
        _nats_conf.parse('authorization { user: "x }')
