"""The deployability rules on the real shipped plans: each rule is quiet on the shipped stacks and
fires on a defect planted in a copy of one, naming the stack, the resource and the rule (mandatory
in prod) and what is wrong. The checks read values, references and the graph, so the plants are
flips of planned properties and dependencies, as a program bug would produce them.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from agent_app import contract
from agent_app.queues.permissions import nats_permissions
from policies.compliance.rules import ALL_RULES, deploy_order, skyfleet_app
from skyfleet.check.analyzer import PolicyPackProcess
from skyfleet.check.model import Finding
from skyfleet.check.runner import DEFAULT_PACK, check_stack
from skyfleet.cli import app
from skyfleet.plan import Plan, PlannedResource
from tests.support.gate import Gate

DEPLOYABILITY = {
    "skyfleet-app-env",
    "skyfleet-app-secret-values",
    "skyfleet-worker-no-api-keys",
    "skyfleet-app-cpu-between-requests",
    "skyfleet-app-outlasts-lb-idle",
    "skyfleet-app-tls-names",
    "skyfleet-workload-permissions",
    "gcp-api-enablement-order",
    "gcp-service-agent-order",
    "aws-route53-alias-order",
    "aws-internet-lb-gateway-order",
    "skyfleet-site-host-names",
    "cert-manager-issuer-fits-names",
    "aws-alarm-topic-deliverable",
    "aws-log-group-key-usable",
    "aws-ecs-writable-volume-prepared",
    "skyfleet-fleet-site-name",
    "skyfleet-fleet-egress",
    "skyfleet-dependency-endpoints",
    "skyfleet-network-paths",
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


def _env_value(r: PlannedResource, name: str) -> str:
    return next(e["value"] for e in k8s_container(r.inputs)["env"] if e["name"] == name)


def k8s_container(props: dict[str, Any]) -> dict[str, Any]:
    return props["spec"]["template"]["spec"]["containers"][0]


def run_container(props: dict[str, Any]) -> dict[str, Any]:
    return props["template"]["containers"][0]


def drop_dependency(r: PlannedResource, on: PlannedResource) -> None:
    r.dependencies = [d for d in r.dependencies if d != on.urn]
    r.property_dependencies = {k: [d for d in v if d != on.urn] for k, v in r.property_dependencies.items()}


def remove(plan: Plan, r: PlannedResource) -> None:
    """Take a resource out of the plan, and every dependency on it."""
    plan.resources.remove(r)
    for other in plan.resources:
        drop_dependency(other, r)


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
def shipped(plans: dict[str, Plan]) -> dict[str, Plan]:
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


def fires(gate: Gate, plan: Plan, rule: str, r: PlannedResource, *text: str, only: bool = False) -> None:
    """Checking ``plan``, ``rule`` fires on ``r`` naming each of ``text`` (with ``only``: on nothing
    else)."""
    checked = check(gate, plan)
    assert_names(checked.on(rule, r), plan, rule, r, *text)
    if only:
        assert {f.urn for f in checked.of(rule)} == {r.urn}, [f.resource_name for f in checked.of(rule)]


# -- the app accepts its environment -----------------------------------------------------------


APP_WORKLOADS = (
    "aws:ecs/taskDefinition:TaskDefinition",
    "gcp:cloudrunv2/service:Service",
    "kubernetes:apps/v1:Deployment",
)


def ecs_app(defs: list[dict[str, Any]]) -> dict[str, Any]:
    """The app container of a task definition (the essential one; the setup step is not)."""
    found = [d for d in defs if d.get("essential", True)]
    assert len(found) == 1, [d["name"] for d in defs]
    return found[0]


def set_app_env(r: PlannedResource, name: str, value: str | None) -> None:
    """Set (or with None remove) a plain variable of the app container of an ECS task definition,
    Cloud Run service or Kubernetes workload."""
    if r.type == "aws:ecs/taskDefinition:TaskDefinition":
        edit(r, containers_json(lambda defs: set_env(ecs_app(defs)["environment"], name, value)))
    elif r.type == "gcp:cloudrunv2/service:Service":
        edit(r, lambda p: set_env(run_container(p)["envs"], name, value))
    else:
        edit(r, lambda p: set_env(k8s_container(p)["env"], name, value))


@pytest.mark.parametrize("stack", ["aws-prod", "gcp-prod", "onprem-prod"])
def test_app_env_log_level_the_app_rejects(gate: Gate, shipped: dict[str, Plan], stack: str) -> None:
    plan = copy_of(shipped, stack)
    assert check(gate, plan).of("skyfleet-app-env") == []
    api = next(r for r in plan.resources if r.type in APP_WORKLOADS and r.name in ("service-api", "api"))
    set_app_env(api, "AGENT_LOG_LEVEL", "info")  # the app reads any case
    assert check(gate, plan).of("skyfleet-app-env") == []
    set_app_env(api, "AGENT_LOG_LEVEL", "verbose")
    fires(
        gate,
        plan,
        "skyfleet-app-env",
        api,
        "AGENT_LOG_LEVEL: expected one of DEBUG, INFO, WARNING, ERROR (any case) (got 'verbose')",
        only=True,
    )


def test_app_env_ecs_value_out_of_range(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")
    worker = res(plan, "service-worker", "aws:ecs/taskDefinition:TaskDefinition")
    set_app_env(worker, "AGENT_WORKER_CONCURRENCY", "0")
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
    worker = res(plan, "worker", "gcp:cloudrunv2/service:Service")
    edit(worker, lambda p: set_env(run_container(p)["envs"], "AGENT_REDIS_URL", None))
    found = check(gate, plan).on("skyfleet-app-env", worker)
    assert_names(found, plan, "skyfleet-app-env", worker, "AGENT_REDIS_URL: is required but not set")


def test_app_env_kubernetes_queue_url_the_contract_rejects(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "onprem-prod")
    api = res(plan, "api", "kubernetes:apps/v1:Deployment")
    edit(api, lambda p: set_env(k8s_container(p)["env"], "AGENT_QUEUE_URL", "kafka://broker/tasks"))
    found = check(gate, plan).on("skyfleet-app-env", api)
    assert_names(found, plan, "skyfleet-app-env", api, "unsupported scheme 'kafka'")


def test_app_env_kubernetes_env_from_a_config_map(gate: Gate, shipped: dict[str, Plan]) -> None:
    """envFrom counts: keys of an in-stack ConfigMap are validated; a source outside the stack may
    hold what looks missing."""
    plan = copy_of(shipped, "onprem-prod")
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
    assert check(gate, plan).of("skyfleet-app-secret-values") == []
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
    api = res(plan, "api", "gcp:cloudrunv2/service:Service")
    edit(api, lambda p: set_env(run_container(p)["envs"], "AGENT_API_KEYS_FILE", None))
    found = check(gate, plan).on("skyfleet-app-env", api)
    assert_names(found, plan, "skyfleet-app-env", api, "no API keys")


def test_app_env_ignores_the_checking_machines_environment(shipped: dict[str, Plan]) -> None:
    """The settings model must see only the plan: a variable in the pack's own environment does
    not fill a gap in a container's."""
    plan = copy_of(shipped, "gcp-prod")
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


def test_worker_api_keys(gate: Gate, shipped: dict[str, Plan]) -> None:
    """A program that hands both roles the same secrets gives the worker the client keys."""
    plan = copy_of(shipped, "aws-prod")
    assert check(gate, plan).of("skyfleet-worker-no-api-keys") == []
    api = res(plan, "service-api", "aws:ecs/taskDefinition:TaskDefinition")
    worker = res(plan, "service-worker", "aws:ecs/taskDefinition:TaskDefinition")
    api_secrets = ecs_app(json.loads(api.inputs["containerDefinitions"]))["secrets"]
    keys = next(s for s in api_secrets if s["name"] == "AGENT_API_KEYS")
    edit(worker, containers_json(lambda defs: ecs_app(defs)["secrets"].append(keys)))
    checked = check(gate, plan)
    assert_names(
        checked.on("skyfleet-worker-no-api-keys", worker),
        plan,
        "skyfleet-worker-no-api-keys",
        worker,
        "(worker) is given AGENT_API_KEYS, which the worker never reads",
    )
    assert checked.on("skyfleet-worker-no-api-keys", api) == []


# -- TLS names of the cache and broker ---------------------------------------------------------


def test_cloud_run_process_that_works_between_requests(gate: Gate, shipped: dict[str, Plan]) -> None:
    """Cloud Run gives CPU only during requests and may scale to zero: the worker and a fleet's
    api work between requests, so each needs CPU then and one instance at least."""
    rule, run = "skyfleet-app-cpu-between-requests", "gcp:cloudrunv2/service:Service"
    plan = copy_of(shipped, "gcp-prod")
    api, worker = res(plan, "api", run), res(plan, "worker", run)
    assert check(gate, plan).of(rule) == []
    edit(api, lambda p: run_container(p)["resources"].update(cpuIdle=True))
    fires(gate, plan, rule, api, "(api) takes a lost site's tasks over", "resources.cpuIdle", only=True)
    # The API's default: with resources set, CPU is always allocated; without them, in requests only.
    edit(api, lambda p: run_container(p)["resources"].pop("cpuIdle"))
    assert check(gate, plan).of(rule) == []
    edit(api, lambda p: run_container(p).pop("resources"))
    fires(gate, plan, rule, api, "resources.cpuIdle", only=True)
    # An api outside a fleet works only in requests.
    set_app_env(api, "AGENT_FLEET_SITES", None)
    assert check(gate, plan).of(rule) == []
    edit(worker, lambda p: p["template"]["scaling"].update(minInstanceCount=0))
    fires(gate, plan, rule, worker, "(worker) pulls its tasks", "minInstanceCount", only=True)
    # Manual scaling keeps its count running.
    edit(worker, lambda p: p.update(scaling={"scalingMode": "MANUAL", "manualInstanceCount": 2}))
    assert check(gate, plan).of(rule) == []


def test_the_app_keeps_idle_connections_longer_than_the_alb(gate: Gate, shipped: dict[str, Plan]) -> None:
    """An ALB reuses a connection to the app until it has been idle for its idle timeout: the
    app must keep it open longer, or a request sent as the app closes it is answered 502."""
    rule = "skyfleet-app-outlasts-lb-idle"
    plan = copy_of(shipped, "aws-prod")
    alb = res(plan, "lb-alb", "aws:lb/loadBalancer:LoadBalancer")
    assert check(gate, plan).of(rule) == []
    edit(alb, lambda p: p.update(idleTimeout=float(contract.KEEP_ALIVE_SECONDS)))
    fires(
        gate,
        plan,
        rule,
        alb,
        f"keeps idle connections to the app open {contract.KEEP_ALIVE_SECONDS} s (idleTimeout), but the "
        f"app closes them after {contract.KEEP_ALIVE_SECONDS} s",
        only=True,
    )
    # Unset, the ALB keeps them 60 s: less than the app.
    edit(alb, lambda p: p.pop("idleTimeout"))
    assert check(gate, plan).of(rule) == []


def test_tls_memorystore_hostname_check(gate: Gate, shipped: dict[str, Plan]) -> None:
    """Memorystore's certificate names its address only in the subject CN: the shipped services
    turn the name check off and verify the instance's CA; either one undone fails."""
    plan = copy_of(shipped, "gcp-prod")
    assert check(gate, plan).of("skyfleet-app-tls-names") == []
    api, worker = (res(plan, name, "gcp:cloudrunv2/service:Service") for name in ("api", "worker"))
    host = res(plan, "redis", "gcp:redis/instance:Instance").outputs["host"]
    set_app_env(api, "AGENT_REDIS_TLS_CHECK_HOSTNAME", None)  # the app's default: check
    set_app_env(worker, "AGENT_REDIS_TLS_CHECK_HOSTNAME", "true")
    checked = check(gate, plan)
    for r in (api, worker):
        assert_names(
            checked.on("skyfleet-app-tls-names", r),
            plan,
            "skyfleet-app-tls-names",
            r,
            f"AGENT_REDIS_URL connects to Memorystore at {host}, whose certificate names that address only "
            "in its subject CN",
        )

    plan = copy_of(shipped, "gcp-prod")
    worker = res(plan, "worker", "gcp:cloudrunv2/service:Service")
    set_app_env(worker, "AGENT_REDIS_CA_FILE", None)
    fires(
        gate,
        plan,
        "skyfleet-app-tls-names",
        worker,
        "Memorystore's certificate is signed by the instance's own CA; set AGENT_REDIS_CA_FILE",
        only=True,
    )


def test_tls_in_cluster_certificate_must_name_the_host(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "onprem-prod")
    assert check(gate, plan).of("skyfleet-app-tls-names") == []
    api, worker = (res(plan, name, "kubernetes:apps/v1:Deployment") for name in ("api", "worker"))

    # The cache's certificate names its Service but not the pods the app reaches through Sentinel.
    cert = res(plan, "redis-tls", "kubernetes:cert-manager.io/v1:Certificate")
    edit(
        cert, lambda p: p["spec"].update(dnsNames=[n for n in p["spec"]["dnsNames"] if "-headless" not in n])
    )
    checked = check(gate, plan)
    for r in (api, worker):
        assert_names(
            checked.on("skyfleet-app-tls-names", r),
            plan,
            "skyfleet-app-tls-names",
            r,
            "AGENT_REDIS_URL connects to redis-0.redis-headless.agent-app.svc.cluster.local, which the "
            "server's certificate does not name (redis, redis.agent-app.svc, "
            "redis.agent-app.svc.cluster.local, localhost)",
        )

    # The same certificate with the app's URL on the Service name: the Sentinels the app asks for
    # the primary are still reached by their pod names, with the same TLS settings.
    set_app_env(worker, "AGENT_REDIS_URL", "rediss://redis.agent-app.svc:6379")
    checked = check(gate, plan)
    assert_names(
        checked.on("skyfleet-app-tls-names", worker),
        plan,
        "skyfleet-app-tls-names",
        worker,
        "AGENT_REDIS_SENTINELS connects to redis-1.redis-headless.agent-app.svc.cluster.local, which the "
        "server's certificate does not name",
    )
    assert not any("AGENT_REDIS_URL" in f.message for f in checked.on("skyfleet-app-tls-names", worker))

    # The broker's certificate has only the long form of the Service name the app uses.
    plan = copy_of(shipped, "onprem-prod")
    worker = res(plan, "worker", "kubernetes:apps/v1:Deployment")
    cert = res(plan, "nats-tls", "kubernetes:cert-manager.io/v1:Certificate")
    edit(cert, lambda p: p["spec"]["dnsNames"].remove("nats.agent-app.svc"))
    fires(
        gate,
        plan,
        "skyfleet-app-tls-names",
        worker,
        "AGENT_QUEUE_URL connects to nats.agent-app.svc, which the server's certificate does not name",
    )

    plan = copy_of(shipped, "onprem-prod")
    worker = res(plan, "worker", "kubernetes:apps/v1:Deployment")
    set_app_env(worker, "AGENT_QUEUE_CA_FILE", None)
    fires(
        gate,
        plan,
        "skyfleet-app-tls-names",
        worker,
        "AGENT_QUEUE_URL: the server's certificate comes from an in-cluster issuer; set AGENT_QUEUE_CA_FILE",
    )


# -- the workload's identity can do what the app does ------------------------------------------


@pytest.mark.parametrize(
    "action",
    [
        "sqs:ReceiveMessage",
        "sqs:SendMessage",  # the copy of a delivery the worker hands back on shutdown
    ],
)
def test_permissions_ecs_task_role_missing_an_sqs_action(
    gate: Gate, shipped: dict[str, Plan], action: str
) -> None:
    plan = copy_of(shipped, "aws-prod")
    worker = res(plan, "service-worker", "aws:ecs/taskDefinition:TaskDefinition")
    assert check(gate, plan).of("skyfleet-workload-permissions") == []

    def drop(props: dict[str, Any]) -> None:
        doc = policy_doc(props)
        doc["Statement"][0]["Action"].remove(action)
        props["policy"] = json.dumps(doc)

    edit(res(plan, "service-worker-task-queue", "aws:iam/rolePolicy:RolePolicy"), drop)
    found = check(gate, plan).on("skyfleet-workload-permissions", worker)
    assert_names(found, plan, "skyfleet-workload-permissions", worker, f"{action} on arn:aws:sqs:")
    assert "-tasks-dlq" not in " ".join(f.message for f in found)  # the DLQ's own grant is whole
    api = res(plan, "service-api", "aws:ecs/taskDefinition:TaskDefinition")
    assert check(gate, plan).on("skyfleet-workload-permissions", api) == []  # the api's role is whole


def test_permissions_ecs_task_role_scoped_to_another_queue(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")

    def elsewhere(props: dict[str, Any]) -> None:
        doc = policy_doc(props)
        doc["Statement"][0]["Resource"] = doc["Statement"][0]["Resource"] + "-dlq"
        props["policy"] = json.dumps(doc)

    edit(res(plan, "service-api-task-queue", "aws:iam/rolePolicy:RolePolicy"), elsewhere)
    api = res(plan, "service-api", "aws:ecs/taskDefinition:TaskDefinition")
    found = check(gate, plan).on("skyfleet-workload-permissions", api)
    assert_names(
        found, plan, "skyfleet-workload-permissions", api, "sqs:SendMessage", "sqs:GetQueueAttributes"
    )


def _redrive_as_its_own_resource(plan: Plan) -> None:
    """Move the task queue's redrive policy to an aws.sqs.RedrivePolicy resource."""
    queue = next(r for r in plan.resources if r.type == "aws:sqs/queue:Queue" and not r.name.endswith("-dlq"))
    redrive = queue.outputs["redrivePolicy"]
    edit(queue, lambda p: p.pop("redrivePolicy"))
    props = {"id": queue.outputs["url"], "queueUrl": queue.outputs["url"], "redrivePolicy": redrive}
    plan.resources.append(_planned(queue, "aws:sqs/redrivePolicy:RedrivePolicy", "tasks-redrive", props))


@pytest.mark.parametrize("redrive", ["inline", "own-resource"])
def test_permissions_ecs_worker_must_send_to_its_dead_letter_queue(
    gate: Gate, shipped: dict[str, Plan], redrive: str
) -> None:
    """The worker dead-letters a message itself: SendMessage on the DLQ its queue's redrive names,
    inline or in its own aws.sqs.RedrivePolicy resource."""
    plan = copy_of(shipped, "aws-prod")
    if redrive == "own-resource":
        _redrive_as_its_own_resource(plan)
    worker = res(plan, "service-worker", "aws:ecs/taskDefinition:TaskDefinition")
    assert check(gate, plan).on("skyfleet-workload-permissions", worker) == []

    def drop(props: dict[str, Any]) -> None:
        doc = policy_doc(props)
        doc["Statement"] = [s for s in doc["Statement"] if s.get("Sid") != "ItsDeadLetterQueue"]
        props["policy"] = json.dumps(doc)

    edit(res(plan, "service-worker-task-queue", "aws:iam/rolePolicy:RolePolicy"), drop)
    found = check(gate, plan).on("skyfleet-workload-permissions", worker)
    assert_names(
        found, plan, "skyfleet-workload-permissions", worker, "sqs:SendMessage on arn:aws:sqs:", "-tasks-dlq"
    )
    assert "ReceiveMessage" not in " ".join(f.message for f in found)  # the queue's own grant is whole


def test_permissions_ecs_dead_letter_queue_with_its_own_key(gate: Gate, shipped: dict[str, Plan]) -> None:
    """A DLQ encrypted with a customer managed key: the worker needs that key to send to it."""
    plan = copy_of(shipped, "aws-prod")
    dlq = next(r for r in plan.resources if r.type == "aws:sqs/queue:Queue" and r.name.endswith("-dlq"))
    key = next(r for r in plan.resources if r.type == "aws:kms/key:Key")

    def own_key(props: dict[str, Any]) -> None:
        props.pop("sqsManagedSseEnabled", None)
        props["kmsMasterKeyId"] = key.outputs["arn"]

    edit(dlq, own_key)
    worker = res(plan, "service-worker", "aws:ecs/taskDefinition:TaskDefinition")
    found = check(gate, plan).on("skyfleet-workload-permissions", worker)
    assert_names(found, plan, "skyfleet-workload-permissions", worker, "kms:GenerateDataKey on arn:aws:kms:")


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


@pytest.mark.parametrize(
    ("grant", "topic"),
    [
        ("worker-dead-letter-publisher", "gcp-prod-tasks-dead-letter"),  # what it dead-letters
        ("worker-topic-publisher", "gcp-prod-tasks"),  # what it hands back on shutdown
    ],
)
def test_permissions_cloud_run_worker_must_publish_to_its_topics(
    gate: Gate, shipped: dict[str, Plan], grant: str, topic: str
) -> None:
    plan = copy_of(shipped, "gcp-prod")
    plan.resources.remove(res(plan, grant))
    worker = res(plan, "worker", "gcp:cloudrunv2/service:Service")
    found = check(gate, plan).on("skyfleet-workload-permissions", worker)
    assert_names(
        found,
        plan,
        "skyfleet-workload-permissions",
        worker,
        f"pubsub.topics.publish on projects/skyfleet-prod-replace-me/topics/{topic}",
    )
    assert len(found) == 1


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


def _nats_conf(plan: Plan, change: Callable[[str], str]) -> None:
    """Edit the broker's nats.conf text (as infra/onprem/queue.py renders it)."""
    conf = res(plan, "nats-config", "kubernetes:core/v1:ConfigMap")

    def apply(p: dict[str, Any]) -> None:
        before = p["data"]["nats.conf"]
        p["data"]["nats.conf"] = change(before)
        assert p["data"]["nats.conf"] != before, "the plant changed nothing"

    edit(conf, apply)


def _queue_url(r: PlannedResource, change: Callable[[str], str]) -> None:
    def apply(p: dict[str, Any]) -> None:
        env = k8s_container(p)["env"]
        set_env(
            env, "AGENT_QUEUE_URL", change(next(e["value"] for e in env if e["name"] == "AGENT_QUEUE_URL"))
        )

    edit(r, apply)


def test_fleet_egress_a_site_whose_pods_cannot_reach_the_other_sites(
    gate: Gate, shipped: dict[str, Plan]
) -> None:
    assert check(gate, copy_of(shipped, "onprem-prod")).of("skyfleet-fleet-egress") == []

    def private_only(props: dict[str, Any]) -> None:
        # HTTPS, but only to addresses inside private ranges: the other sites are on the internet
        for rule in props["spec"]["egress"]:
            for peer in rule.get("to", []):
                if "ipBlock" in peer:
                    peer["ipBlock"] = {"cidr": "10.0.0.0/8"}

    def offline_only(props: dict[str, Any]) -> None:
        # the egress an offline model needs: its stores, nothing out of the cluster
        props["spec"]["egress"] = [r for r in props["spec"]["egress"] if "ipBlock" not in json.dumps(r)]

    for change in (private_only, offline_only):
        plan = copy_of(shipped, "onprem-prod")
        api = res(plan, "api", "kubernetes:apps/v1:Deployment")
        worker = res(plan, "worker", "kubernetes:apps/v1:Deployment")
        edit(res(plan, "netpol-api", "kubernetes:networking.k8s.io/v1:NetworkPolicy"), change)
        fires(
            gate,
            plan,
            "skyfleet-fleet-egress",
            api,
            "calls the fleet's other sites (AGENT_FLEET_SITES) over HTTPS, but the NetworkPolicies "
            "restricting its pods' egress ('allow-dns', 'allow-api', 'default-deny') admit no TCP 443 out "
            "of the cluster",
            only=True,
        )
        assert check(gate, plan).on("skyfleet-fleet-egress", worker) == []
    # Out of the fleet, the same policy is right.
    set_app_env(api, "AGENT_FLEET_SITES", None)
    assert check(gate, plan).on("skyfleet-fleet-egress", api) == []


def test_permissions_nats_users(gate: Gate, shipped: dict[str, Plan]) -> None:
    """The shipped broker has one user per role with exactly its permission table, and each app's
    queue URL names its user; each way of getting that wrong fails on the workload it breaks."""
    plan = copy_of(shipped, "onprem-prod")
    assert check(gate, plan).of("skyfleet-workload-permissions") == []
    table = nats_permissions("AGENT_TASKS", "agent.tasks", "agent.tasks.dlq")
    assert "api@" in _env_value(res(plan, "api", "kubernetes:apps/v1:Deployment"), "AGENT_QUEUE_URL")

    # No authorization block: the server lets anyone in.
    plan = copy_of(shipped, "onprem-prod")
    _nats_conf(plan, lambda text: re.sub(r"(?ms)^authorization \{.*?^\}\n", "", text))
    checked = check(gate, plan)
    for role in ("api", "worker"):
        r = res(plan, role, "kubernetes:apps/v1:Deployment")
        assert_names(
            checked.on("skyfleet-workload-permissions", r),
            plan,
            "skyfleet-workload-permissions",
            r,
            "the NATS server at nats.agent-app.svc authenticates no client",
        )

    # The worker's user rendered without one subject the worker's table needs.
    plan = copy_of(shipped, "onprem-prod")
    subject = "$JS.API.CONSUMER.MSG.NEXT.AGENT_TASKS.agent-worker"
    assert subject in table["worker"]["publish"]["allow"]
    _nats_conf(plan, lambda text: text.replace(f'"{subject}", ', ""))
    worker = res(plan, "worker", "kubernetes:apps/v1:Deployment")
    fires(
        gate,
        plan,
        "skyfleet-workload-permissions",
        worker,
        f"NATS user 'worker' may not publish {subject}",
        only=True,
    )

    # The worker given the api's queue URL (user): the api's permissions do not let it consume.
    plan = copy_of(shipped, "onprem-prod")
    worker = res(plan, "worker", "kubernetes:apps/v1:Deployment")
    _queue_url(worker, lambda url: url.replace("nats://worker@", "nats://api@"))
    fires(
        gate,
        plan,
        "skyfleet-workload-permissions",
        worker,
        "NATS user 'api' may not publish $JS.API.CONSUMER.DURABLE.CREATE.AGENT_TASKS.agent-worker",
        f"publish {subject} (CONSUMER.MSG.NEXT, work)",
    )

    # A queue URL without a user, and one naming a user the server does not define.
    plan = copy_of(shipped, "onprem-prod")
    api, worker = (res(plan, name, "kubernetes:apps/v1:Deployment") for name in ("api", "worker"))
    _queue_url(api, lambda url: url.replace("nats://api@", "nats://"))
    _queue_url(worker, lambda url: url.replace("nats://worker@", "nats://workers@"))
    checked = check(gate, plan)
    assert_names(
        checked.on("skyfleet-workload-permissions", api),
        plan,
        "skyfleet-workload-permissions",
        api,
        "AGENT_QUEUE_URL names no NATS user, and the server requires one",
    )
    assert_names(
        checked.on("skyfleet-workload-permissions", worker),
        plan,
        "skyfleet-workload-permissions",
        worker,
        "NATS user 'workers' is not defined in the server's configuration",
    )


# -- order --------------------------------------------------------------------------------------


def test_order_gcp_resource_without_its_api(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")
    topic = res(plan, "tasks", "gcp:pubsub/topic:Topic")
    assert check(gate, plan).on("gcp-api-enablement-order", topic) == []
    drop_dependency(topic, res(plan, "api-pubsub"))
    found = check(gate, plan).on("gcp-api-enablement-order", topic)
    assert_names(found, plan, "gcp-api-enablement-order", topic, "pubsub.googleapis.com")


def test_order_gcp_every_resource_waits_for_its_api(gate: Gate, shipped: dict[str, Plan]) -> None:
    """A program that enables the APIs but passes no depends_on races every resource against its
    API: the rule names each one and the API it needs."""
    plan = copy_of(shipped, "gcp-prod")
    assert check(gate, plan).of("gcp-api-enablement-order") == []
    services = {r.inputs["service"]: r for r in plan.of_type("gcp:projects/service:Service")}
    racing: dict[str, str] = {}
    for r in plan.resources:
        for service in services.values():
            drop_dependency(r, service)
        api = deploy_order.gcp_api_needed(r.type, r.inputs.get("service"))
        if api is not None and api in services:
            racing[r.urn] = api
    assert len(racing) > 40 and "iam.googleapis.com" in racing.values()
    checked = check(gate, plan)
    assert {f.urn for f in checked.of("gcp-api-enablement-order")} == set(racing)
    for r in plan.resources:
        if r.urn in racing:
            assert_names(
                checked.on("gcp-api-enablement-order", r), plan, "gcp-api-enablement-order", r, racing[r.urn]
            )


def test_order_service_agent_needs_a_service_identity(gate: Gate, shipped: dict[str, Plan]) -> None:
    """A program that writes the Pub/Sub agent's address from the project number instead of
    taking it from a ServiceIdentity grants a role to an account that may not exist yet."""
    plan = copy_of(shipped, "gcp-prod")
    assert check(gate, plan).of("gcp-service-agent-order") == []
    remove(plan, res(plan, "pubsub-agent", "gcp:projects/serviceIdentity:ServiceIdentity"))
    checked = check(gate, plan)
    grants = [res(plan, name) for name in ("dead-letter-agent-publisher", "dead-letter-agent-subscriber")]
    for grant in grants:
        assert_names(
            checked.on("gcp-service-agent-order", grant),
            plan,
            "gcp-service-agent-order",
            grant,
            "grants a role to the pubsub.googleapis.com service agent "
            "(service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com)",
            "gcp.projects.ServiceIdentity",
        )
    assert {f.urn for f in checked.of("gcp-service-agent-order")} == {g.urn for g in grants}


def test_order_route53_alias_waits_for_its_target(gate: Gate, shipped: dict[str, Plan]) -> None:
    """The failover alias points at the tier-1 records; created before them, Route 53 refuses it.
    Depending on any one record of that name is enough."""
    plan = copy_of(shipped, "edge-prod")
    assert check(gate, plan).of("aws-route53-alias-order") == []
    alias = res(plan, "failover-0-secondary")
    targets = [res(plan, "failover-1-primary"), res(plan, "failover-1-secondary")]
    assert all(t.inputs["name"] == alias.inputs["aliases"][0]["name"] for t in targets)
    drop_dependency(alias, targets[0])
    assert check(gate, plan).of("aws-route53-alias-order") == []
    drop_dependency(alias, targets[1])
    fires(
        gate,
        plan,
        "aws-route53-alias-order",
        alias,
        "is an alias to failover-1.api.agents.example.com, a record this stack creates, but does not "
        "depend on it",
        only=True,
    )


@pytest.mark.parametrize("lb", ["lb-alb", "lb-nlb"])
def test_order_internet_facing_load_balancer_waits_for_the_gateway(
    gate: Gate, shipped: dict[str, Plan], lb: str
) -> None:
    """ELB refuses an internet-facing load balancer in a VPC with no internet gateway attached;
    nothing the load balancer references leads to the gateway, so it must say it waits for it."""
    rule = "aws-internet-lb-gateway-order"
    plan = copy_of(shipped, "aws-prod")
    assert check(gate, plan).of(rule) == []
    balancer = res(plan, lb, "aws:lb/loadBalancer:LoadBalancer")
    gateway = res(plan, "network-igw", "aws:ec2/internetGateway:InternetGateway")
    routes = [res(plan, f"network-public-{v}", "aws:ec2/route:Route") for v in ("v4", "v6")]
    assert gateway.urn in balancer.dependencies
    drop_dependency(balancer, gateway)
    assert check(gate, plan).of(rule) == []  # the public routes lead to it
    for route in routes:
        drop_dependency(balancer, route)
    fires(gate, plan, rule, balancer, "does not depend on its VPC's internet gateway", only=True)
    # Internal load balancers need no gateway, nor does a Gateway Load Balancer.
    edit(balancer, lambda p: p.update(internal=True))
    assert check(gate, plan).of(rule) == []
    edit(balancer, lambda p: p.update(internal=None, loadBalancerType="gateway"))
    assert check(gate, plan).of(rule) == []


# -- names ----------------------------------------------------------------------------------------


GLOBAL = "api.agents.example.com"


def _without(names: list[str], name: str) -> list[str]:
    assert name in names, names
    return [n for n in names if n != name]


def test_names_aws_certificate_must_cover_the_global_name(gate: Gate, shipped: dict[str, Plan]) -> None:
    """A program that builds the certificate from the site's own aliases forgets the edge's name."""
    plan = copy_of(shipped, "aws-prod")
    assert GLOBAL in plan.outputs["hostNames"]
    assert check(gate, plan).of("skyfleet-site-host-names") == []
    edit(
        res(plan, "lb-cert", "aws:acm/certificate:Certificate"),
        lambda p: p.update(subjectAlternativeNames=_without(p["subjectAlternativeNames"], GLOBAL)),
    )
    listener = res(plan, "lb-https", "aws:lb/listener:Listener")
    fires(
        gate,
        plan,
        "skyfleet-site-host-names",
        listener,
        f"clients reach the site as {GLOBAL}, which its certificate does not cover (aws.agents.example.com)",
        only=True,
    )


def _https_proxy_with(plan: Plan, certificates: list[PlannedResource]) -> PlannedResource:
    """The GCP site's HTTPS proxy serving classic certificates instead of its Certificate Manager map."""
    proxy = res(plan, "https", "gcp:compute/targetHttpsProxy:TargetHttpsProxy")
    plan.resources += certificates

    def use(p: dict[str, Any]) -> None:
        p.pop("certificateMap")
        p["sslCertificates"] = [c.outputs["selfLink"] for c in certificates]

    edit(proxy, use)
    return proxy


def _managed_ssl(template: PlannedResource, name: str, domains: list[str]) -> PlannedResource:
    base = "projects/skyfleet-prod-replace-me/global/sslCertificates"
    return _planned(
        template,
        "gcp:compute/managedSslCertificate:ManagedSslCertificate",
        name,
        {
            "name": name,
            "id": f"{base}/{name}",
            "selfLink": f"https://www.googleapis.com/compute/v1/{base}/{name}",
            "managed": {"domains": domains},
        },
    )


def test_names_gcp_managed_certificate(gate: Gate, shipped: dict[str, Plan]) -> None:
    """The classic shape: managed certificates on the HTTPS proxy, any of which may carry a name."""
    plan = copy_of(shipped, "gcp-prod")
    template = res(plan, "https", "gcp:compute/targetHttpsProxy:TargetHttpsProxy")
    site_only = _managed_ssl(template, "gcp-prod-site", ["gcp.agents.example.com"])
    proxy = _https_proxy_with(plan, [site_only])
    fires(
        gate,
        plan,
        "skyfleet-site-host-names",
        proxy,
        f"clients reach the site as {GLOBAL}, which its certificate does not cover (gcp.agents.example.com)",
        only=True,
    )

    plan = copy_of(shipped, "gcp-prod")
    global_name = _managed_ssl(template, "gcp-prod-global", [GLOBAL])
    _https_proxy_with(
        plan, [_managed_ssl(template, "gcp-prod-site", ["gcp.agents.example.com"]), global_name]
    )
    assert check(gate, plan).of("skyfleet-site-host-names") == []


def test_names_gcp_certificate_manager_map(gate: Gate, shipped: dict[str, Plan]) -> None:
    """The shipped GCP shape: a Certificate Manager certificate in a map on the HTTPS proxy, with
    the provider's id formats (map id, entry's map by name, certificates by id, proxy's // URL).
    A client gets the certificates of the entry for its hostname, else the primary entry's."""
    plan = copy_of(shipped, "gcp-prod")
    assert check(gate, plan).of("skyfleet-site-host-names") == []
    proxy = res(plan, "https", "gcp:compute/targetHttpsProxy:TargetHttpsProxy")
    assert proxy.inputs["certificateMap"].startswith("//certificatemanager.googleapis.com/")
    cert = res(plan, "certificate", "gcp:certificatemanager/certificate:Certificate")
    not_covered = f"clients reach the site as {GLOBAL}, which its certificate does not cover"

    # The certificate requested for the site's own name only.
    def site_name_only(p: dict[str, Any]) -> None:
        p["managed"]["domains"] = _without(p["managed"]["domains"], GLOBAL)
        p["managed"]["dnsAuthorizations"] = p["managed"]["dnsAuthorizations"][:1]

    edit(cert, site_name_only)
    fires(
        gate,
        plan,
        "skyfleet-site-host-names",
        proxy,
        f"{not_covered} (gcp.agents.example.com)",
        only=True,
    )

    # One certificate per name, the global name's entry wired to the site name's certificate:
    # the map holds a certificate for every name, but not where the global name is looked up.
    plan = copy_of(shipped, "gcp-prod")
    proxy = res(plan, "https", "gcp:compute/targetHttpsProxy:TargetHttpsProxy")
    cert = res(plan, "certificate", "gcp:certificatemanager/certificate:Certificate")
    site_cert = copy.deepcopy(cert)
    site_cert.name = "certificate-site"
    site_cert.urn = cert.urn.replace("::certificate", "::certificate-site")
    site_id = cert.outputs["id"] + "-site"
    edit(site_cert, site_name_only)
    edit(site_cert, lambda p: p.update(name=p["name"] + "-site", id=site_id))
    plan.resources.append(site_cert)
    global_entry = res(plan, "certificate-map-1")
    assert global_entry.inputs["hostname"] == GLOBAL
    edit(global_entry, lambda p: p.update(certificates=[site_id]))
    fires(
        gate,
        plan,
        "skyfleet-site-host-names",
        proxy,
        f"{not_covered} (gcp.agents.example.com)",
    )

    # Without the global name's entry, the primary entry's certificate (which has it) serves it;
    # without that too, the global name finds no certificate in the map.
    plan = copy_of(shipped, "gcp-prod")
    proxy = res(plan, "https", "gcp:compute/targetHttpsProxy:TargetHttpsProxy")
    remove(plan, res(plan, "certificate-map-1"))
    assert check(gate, plan).of("skyfleet-site-host-names") == []
    remove(plan, res(plan, "certificate-map-primary"))
    checked = check(gate, plan)
    assert_names(
        checked.on("skyfleet-site-host-names", proxy),
        plan,
        "skyfleet-site-host-names",
        proxy,
        f"{not_covered} (no name)",
    )
    assert len(checked.of("skyfleet-site-host-names")) == 1


def test_names_ingress_tls_hosts_and_rules(gate: Gate, shipped: dict[str, Plan]) -> None:
    """An Ingress rendered for the site's own name only: neither its certificate nor its rules
    serve the global name."""
    plan = copy_of(shipped, "onprem-prod")
    assert check(gate, plan).of("skyfleet-site-host-names") == []
    ingress = res(plan, "api", "kubernetes:networking.k8s.io/v1:Ingress")

    def site_name_only(p: dict[str, Any]) -> None:
        p["spec"]["tls"][0]["hosts"] = _without(p["spec"]["tls"][0]["hosts"], GLOBAL)
        p["spec"]["rules"] = [rule for rule in p["spec"]["rules"] if rule["host"] != GLOBAL]

    edit(ingress, site_name_only)
    fires(
        gate,
        plan,
        "skyfleet-site-host-names",
        ingress,
        f"clients reach the site as {GLOBAL}, which its certificate does not cover "
        "(onprem.agents.example.com)",
        f"clients reach the site as {GLOBAL}, which no host rule routes",
    )

    plan = copy_of(shipped, "onprem-prod")
    ingress = res(plan, "api", "kubernetes:networking.k8s.io/v1:Ingress")
    edit(ingress, lambda p: p["spec"].update(rules=[r for r in p["spec"]["rules"] if r["host"] != GLOBAL]))
    found = check(gate, plan).on("skyfleet-site-host-names", ingress)
    assert_names(found, plan, "skyfleet-site-host-names", ingress, "which no host rule routes")
    assert not any("certificate does not cover" in f.message for f in found)


# -- cert-manager issuers --------------------------------------------------------------------------


def test_issuer_used_for_internal_and_public_names(gate: Gate, shipped: dict[str, Plan]) -> None:
    """The shipped cluster uses a CA issuer for the data stores and an ACME one for the Ingress; a
    program that passes one issuer to both gets a certificate no one can issue or trust."""
    plan = copy_of(shipped, "onprem-prod")
    assert check(gate, plan).of("cert-manager-issuer-fits-names") == []
    ingress = res(plan, "api", "kubernetes:networking.k8s.io/v1:Ingress")
    cert = res(plan, "redis-tls", "kubernetes:cert-manager.io/v1:Certificate")
    internal, public = cert.inputs["spec"]["issuerRef"]["name"], "letsencrypt-dns01"
    annotation = "cert-manager.io/cluster-issuer"
    assert ingress.inputs["metadata"]["annotations"][annotation] == public != internal

    edit(ingress, lambda p: p["metadata"]["annotations"].update({annotation: internal}))
    fires(
        gate,
        plan,
        "cert-manager-issuer-fits-names",
        ingress,
        f"uses ClusterIssuer {internal!r} for public names (onprem.agents.example.com, {GLOBAL}) while it "
        "also signs cluster-internal names",
        only=True,
    )

    plan = copy_of(shipped, "onprem-prod")
    ingress = res(plan, "api", "kubernetes:networking.k8s.io/v1:Ingress")
    edit(
        res(plan, "nats-tls", "kubernetes:cert-manager.io/v1:Certificate"),
        lambda p: p["spec"]["issuerRef"].update(name=public),
    )
    fires(
        gate,
        plan,
        "cert-manager-issuer-fits-names",
        ingress,
        f"uses ClusterIssuer {public!r} for public names",
        "nats.agent-app.svc",
    )


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
    """Both shipped alarm topics use a customer managed key that lets CloudWatch in; the AWS-managed
    key, or a key policy without CloudWatch, drops every notification."""
    edge = copy_of(shipped, "edge-prod")
    assert check(gate, edge).of("aws-alarm-topic-deliverable") == []
    topic = res(edge, "edge-alarms", "aws:sns/topic:Topic")
    edit(topic, lambda p: p.update(kmsMasterKeyId="alias/aws/sns"))
    fires(
        gate,
        edge,
        "aws-alarm-topic-deliverable",
        topic,
        "encrypted with the AWS-managed key alias/aws/sns",
        only=True,
    )

    def without_cloudwatch(props: dict[str, Any]) -> None:
        doc = policy_doc(props)
        kept = [s for s in doc["Statement"] if s.get("Principal") != {"Service": "cloudwatch.amazonaws.com"}]
        assert len(kept) < len(doc["Statement"])
        doc["Statement"] = kept
        props["policy"] = json.dumps(doc)

    site = copy_of(shipped, "aws-prod")
    assert check(gate, site).of("aws-alarm-topic-deliverable") == []
    site_topic = res(site, "alarms-topic", "aws:sns/topic:Topic")
    edit(res(site, "secrets-key", "aws:kms/key:Key"), without_cloudwatch)
    found = check(gate, site).on("aws-alarm-topic-deliverable", site_topic)
    assert_names(
        found, site, "aws-alarm-topic-deliverable", site_topic, "kms:GenerateDataKey and kms:Decrypt"
    )

    edge = copy_of(shipped, "edge-prod")
    topic = res(edge, "edge-alarms", "aws:sns/topic:Topic")
    edit(res(edge, "edge-alarms", "aws:kms/key:Key"), without_cloudwatch)
    found = check(gate, edge).on("aws-alarm-topic-deliverable", topic)
    assert_names(found, edge, "aws-alarm-topic-deliverable", topic, "kms:GenerateDataKey and kms:Decrypt")


def _cloudwatch_condition(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """Edit the condition of the key policy's grant to CloudWatch (alarms)."""

    def edit_policy(props: dict[str, Any]) -> None:
        doc = policy_doc(props)
        found = [s for s in doc["Statement"] if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
        assert len(found) == 1, doc
        change(found[0]["Condition"])
        props["policy"] = json.dumps(doc)

    return edit_policy


def test_alarm_topic_key_grant_must_admit_each_alarm(gate: Gate, shipped: dict[str, Plan]) -> None:
    """The site key's grant to CloudWatch is scoped to the site's alarms by aws:SourceArn and
    aws:SourceAccount. A pattern that leaves some alarms out (one written for the first alarm
    only), or another account, drops those alarms' notifications, silently."""
    site = copy_of(shipped, "aws-prod")
    topic = res(site, "alarms-topic", "aws:sns/topic:Topic")
    alarms = sorted(r.name for r in site.resources if r.type == "aws:cloudwatch/metricAlarm:MetricAlarm")
    assert "alarms-5xx-rate" in alarms and len(alarms) >= 3

    def only_the_5xx_alarm(condition: dict[str, Any]) -> None:
        pattern = condition["ArnLike"]["aws:SourceArn"]
        assert pattern.endswith("-*"), pattern
        condition["ArnLike"]["aws:SourceArn"] = pattern[:-1] + "alb-5xx-*"

    edit(res(site, "secrets-key", "aws:kms/key:Key"), _cloudwatch_condition(only_the_5xx_alarm))
    others = ", ".join(a for a in alarms if a != "alarms-5xx-rate")
    fires(gate, site, "aws-alarm-topic-deliverable", topic, f"leaves them out): {others};", only=True)

    site = copy_of(shipped, "aws-prod")
    topic = res(site, "alarms-topic", "aws:sns/topic:Topic")

    def another_account(condition: dict[str, Any]) -> None:
        condition["StringEquals"]["aws:SourceAccount"] = "999999999999"

    edit(res(site, "secrets-key", "aws:kms/key:Key"), _cloudwatch_condition(another_account))
    fires(
        gate, site, "aws-alarm-topic-deliverable", topic, f"leaves them out): {', '.join(alarms)};", only=True
    )

    # The edge's topic and its key, scoped the same way.
    edge = copy_of(shipped, "edge-prod")
    topic = res(edge, "edge-alarms", "aws:sns/topic:Topic")
    edit(res(edge, "edge-alarms", "aws:kms/key:Key"), _cloudwatch_condition(only_the_5xx_alarm))
    site_down = sorted(r.name for r in edge.resources if r.type == "aws:cloudwatch/metricAlarm:MetricAlarm")
    assert len(site_down) == 3, site_down
    fires(
        gate,
        edge,
        "aws-alarm-topic-deliverable",
        topic,
        f"leaves them out): {', '.join(site_down)};",
        only=True,
    )


# -- log groups and their key ------------------------------------------------------------------------


LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"


def _logs_statement(doc: dict[str, Any]) -> dict[str, Any]:
    found = [s for s in doc["Statement"] if "logs." in str(s.get("Principal", {}).get("Service", ""))]
    assert len(found) == 1, doc
    return found[0]


def _edit_logs_grant(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def edit_policy(props: dict[str, Any]) -> None:
        doc = policy_doc(props)
        change(doc)
        props["policy"] = json.dumps(doc)

    return edit_policy


def test_log_groups_can_use_their_key(gate: Gate, shipped: dict[str, Plan]) -> None:
    """Each log group of a site is encrypted with the site's key, whose policy lets CloudWatch Logs
    use it for exactly the site's groups. A group the grant does not name (a new log role not
    added to the key's list), or an action left out, fails CreateLogGroup at deploy."""
    site = copy_of(shipped, "aws-prod")
    groups = [r for r in site.resources if r.type == LOG_GROUP]
    assert len(groups) >= 3  # api, worker, flow logs
    assert check(gate, site).of("aws-log-group-key-usable") == []
    key = res(site, "secrets-key", "aws:kms/key:Key")

    # No statement for CloudWatch Logs: no group can be created.
    edit(key, _edit_logs_grant(lambda doc: doc["Statement"].remove(_logs_statement(doc))))
    found = check(gate, site).of("aws-log-group-key-usable")
    assert {f.urn for f in found} == {g.urn for g in groups}
    assert_names(
        check(gate, site).on("aws-log-group-key-usable", groups[0]),
        site,
        "aws-log-group-key-usable",
        groups[0],
        "kms:Encrypt, kms:Decrypt, kms:ReEncryptFrom, kms:GenerateDataKey, kms:DescribeKey",
    )

    # The grant's encryption-context condition leaves one group out: that group alone fails.
    site = copy_of(shipped, "aws-prod")
    flow = next(
        g for g in site.resources if g.type == LOG_GROUP and str(g.inputs["name"]).endswith("/vpc-flow-logs")
    )

    def without_flow_logs(doc: dict[str, Any]) -> None:
        arns = _logs_statement(doc)["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"]
        kept = [a for a in arns if not a.endswith(":log-group:" + flow.inputs["name"])]
        assert len(kept) == len(arns) - 1, arns
        _logs_statement(doc)["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"] = kept

    edit(res(site, "secrets-key", "aws:kms/key:Key"), _edit_logs_grant(without_flow_logs))
    fires(gate, site, "aws-log-group-key-usable", flow, repr(flow.inputs["name"]), only=True)

    # An action left out of the grant.
    site = copy_of(shipped, "aws-prod")

    def without_describe(doc: dict[str, Any]) -> None:
        statement = _logs_statement(doc)
        statement["Action"] = [a for a in statement["Action"] if a != "kms:DescribeKey"]

    edit(res(site, "secrets-key", "aws:kms/key:Key"), _edit_logs_grant(without_describe))
    found = check(gate, site).of("aws-log-group-key-usable")
    assert {f.urn for f in found} == {g.urn for g in site.resources if g.type == LOG_GROUP}
    assert all("for log group" in f.message and "kms:DescribeKey for" in f.message for f in found)


# -- Fargate scratch volume --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plant",
    [
        "no setup container",
        "app does not wait",
        "app waits only for the start",
        "setup not root",
        "setup essential",
        "setup mounts read-only",
        "setup mounts another volume",
    ],
)
def test_ecs_scratch_volume_prepared_by_a_setup_container(
    gate: Gate, shipped: dict[str, Plan], plant: str
) -> None:
    """The shipped tasks open the scratch volume with a root, non-essential setup container the app
    waits for; each way of undoing one of those leaves /tmp unwritable to the app."""
    plan = copy_of(shipped, "aws-prod")
    assert check(gate, plan).of("aws-ecs-writable-volume-prepared") == []
    api = res(plan, "service-api", "aws:ecs/taskDefinition:TaskDefinition")

    def undo(defs: list[dict[str, Any]]) -> None:
        app_container = ecs_app(defs)
        (wait,) = app_container["dependsOn"]
        setup = next(d for d in defs if d["name"] == wait["containerName"])
        assert wait["condition"] == "SUCCESS" and setup["essential"] is False
        if plant == "no setup container":
            defs.remove(setup)
            del app_container["dependsOn"]
        elif plant == "app does not wait":
            del app_container["dependsOn"]
        elif plant == "app waits only for the start":
            wait["condition"] = "START"
        elif plant == "setup not root":
            setup["user"] = app_container["user"]
        elif plant == "setup essential":
            setup["essential"] = True
        elif plant == "setup mounts read-only":
            setup["mountPoints"][0]["readOnly"] = True
        else:
            setup["mountPoints"][0]["sourceVolume"] = "other"

    edit(api, containers_json(undo))
    fires(
        gate,
        plan,
        "aws-ecs-writable-volume-prepared",
        api,
        "container 'api'",
        "runs as 10001:10001 on a read-only root and mounts task volume 'scratch' at /tmp writable",
        only=True,
    )


# -- the shipped stacks, preview, end to end ------------------------------------------------------


def test_shipped_stacks_pass_the_deployability_rules(gate: Gate, shipped: dict[str, Plan]) -> None:
    """Every shipped stack passes every deployability rule (the list names any that does not)."""
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


def test_preview_unknowns_propagate_as_the_sdk_does(gate: Gate, previews: dict[str, Plan]) -> None:
    """In a preview the rules either run or answer the SDK's advisory 'can't run during preview':
    never a crash, never a mandatory finding made of an unknown."""
    for plan in previews.values():
        for f in check(gate, plan).findings:
            if f.rule in DEPLOYABILITY and f.preview_unknown:
                assert not f.mandatory and "during preview" in f.message


def test_cli_end_to_end_bad_app_env_in_a_stack_file(
    temp_project: Callable[[str, str], Path],
    tmp_path: Path,
) -> None:
    shipped_file = Path(__file__).resolve().parents[3] / "stacks" / "Pulumi.aws-prod.yaml"
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
    from tests.support.gate import sdk_class

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
        cls = sdk_class(t)
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


# --- the fleet ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["aws-prod", "gcp-prod", "onprem-prod"])
def test_fleet_host_the_certificate_does_not_cover(gate: Gate, shipped: dict[str, Plan], stack: str) -> None:
    plan = copy_of(shipped, stack)
    assert check(gate, plan).of("skyfleet-fleet-site-name") == []
    site = stack
    for r in plan.resources:
        if r.type in APP_WORKLOADS:
            bad = (
                "aws-prod=https://aws.agents.example.com,gcp-prod=https://gcp.agents.example.com,"
                "onprem-prod=https://onprem.agents.example.com"
            ).replace(f"{site}=https://{site.split('-')[0]}.agents", f"{site}=https://{site}.elsewhere")
            set_app_env(r, "AGENT_FLEET_SITES", bad)
    found = check(gate, plan).of("skyfleet-fleet-site-name")
    assert found, "a fleet host the certificate does not cover passed"
    assert all(
        f"the fleet's other sites call {site} at {site}.elsewhere.example.com" in f.message for f in found
    )


def test_fleet_the_app_would_reject(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")
    api = res(plan, "api", "gcp:cloudrunv2/service:Service")
    set_app_env(
        api, "AGENT_FLEET_SITES", "gcp-prod=http://gcp.agents.example.com,aws-prod=https://a.example.com"
    )
    found = check(gate, plan).on("skyfleet-app-env", api)
    assert_names(found, plan, "skyfleet-app-env", api, "AGENT_FLEET_SITES", "expected <site>=https://")
