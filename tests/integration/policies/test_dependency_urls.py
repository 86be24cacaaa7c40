# ruff: noqa: F811 (the `shipped` fixture is imported from test_deployability and requested by name)
"""skyfleet-dependency-endpoints on the real shipped plans: the cache and broker URLs in the app's
environment name a server the stack runs, on a port it serves, with TLS exactly when that server
requires it. Each test plants one defect a program bug would produce (a URL built with the wrong
scheme, port or host, or a server configured differently) into a copy of a shipped plan, and checks
the finding through the real pack, naming the resource and the variable.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from policies.compliance.rules import ALL_RULES, skyfleet_endpoints
from skyfleet.plan import Plan, PlannedResource
from tests.integration.policies.test_deployability import (  # noqa: F401 (shipped: a fixture)
    APP_WORKLOADS,
    _nats_conf,
    _planned,
    _queue_url,
    assert_names,
    check,
    copy_of,
    edit,
    fires,
    k8s_container,
    res,
    set_app_env,
    shipped,
)
from tests.support.gate import Gate, sdk_class

RULE = "skyfleet-dependency-endpoints"
ECS = "aws:ecs/taskDefinition:TaskDefinition"
RUN = "gcp:cloudrunv2/service:Service"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def _app(plan: Plan, type_: str) -> tuple[PlannedResource, PlannedResource]:
    """The api and the worker of a site."""
    names = ("service-api", "service-worker") if type_ == ECS else ("api", "worker")
    api, worker = (res(plan, name, type_) for name in names)
    return api, worker


def _env(r: PlannedResource, name: str) -> str:
    """A plain variable of the app container (ECS, Cloud Run or Kubernetes)."""
    if r.type == ECS:
        defs = json.loads(r.inputs["containerDefinitions"])
        env = next(d for d in defs if d.get("essential", True))["environment"]
    elif r.type == RUN:
        env = r.inputs["template"]["containers"][0]["envs"]
    else:
        env = k8s_container(r.inputs)["env"]
    return next(e["value"] for e in env if e["name"] == name)


def _both(plan: Plan, api: PlannedResource, worker: PlannedResource, gate: Gate, *text: str) -> None:
    """The rule fires on the api and on the worker, naming each of ``text``, and on nothing else."""
    checked = check(gate, plan)
    for r in (api, worker):
        assert_names(checked.on(RULE, r), plan, RULE, r, *text)
    assert {f.urn for f in checked.of(RULE)} == {api.urn, worker.urn}


# -- the shipped stacks, the pack, preview ------------------------------------------------------


def test_shipped_stacks_pass(gate: Gate, shipped: dict[str, Plan]) -> None:
    """Every shipped stack's URLs resolve to its own servers with the TLS they require."""
    assert RULE in gate.rules
    found = [
        (stack, f.resource_name, f.message)
        for stack, plan in shipped.items()
        for f in check(gate, plan).of(RULE)
    ]
    assert found == []


def test_rule_is_in_the_pack_mandatory_for_every_environment(gate: Gate) -> None:
    rule = next(r for r in ALL_RULES if r.id == RULE)
    assert rule.kind == "stack" and not rule.prod_only and rule.enforcement.name == "MANDATORY"
    assert gate.rules[RULE].enforcement == "mandatory"


def test_preview_unknowns_propagate_as_the_sdk_does(gate: Gate, previews: dict[str, Plan]) -> None:
    """In a preview the rule runs (on-prem: every value it reads is known) or answers the SDK's
    advisory 'can't run during preview' (ECS and Cloud Run: the URL embeds an unknown endpoint)."""
    assert RULE in gate.rules
    assert [f.preview_unknown for f in check(gate, previews["aws-prod"]).of(RULE)] == [True]
    for plan in previews.values():
        for f in check(gate, plan).of(RULE):
            assert f.preview_unknown and not f.mandatory and "during preview" in f.message, f.message
    onprem = check(gate, previews["onprem-prod"]).of(RULE)
    assert onprem == []


def test_type_tokens_the_rule_reads_are_the_sdks() -> None:
    token = re.compile(r"^(aws|gcp|kubernetes):[^:]+:[A-Za-z]+$")
    found = {v for v in vars(skyfleet_endpoints).values() if isinstance(v, str) and token.match(v)}
    assert "aws:elasticache/replicationGroup:ReplicationGroup" in found
    for t in sorted(found):
        assert sdk_class(t) is not None, t


# -- ElastiCache (aws-prod) ----------------------------------------------------------------------


def test_aws_plain_redis_url_against_elasticache_that_requires_tls(
    gate: Gate, shipped: dict[str, Plan]
) -> None:
    plan = copy_of(shipped, "aws-prod")
    group = res(plan, "cache-redis", "aws:elasticache/replicationGroup:ReplicationGroup")
    assert group.outputs["transitEncryptionEnabled"] is True
    assert group.outputs["transitEncryptionMode"] == "required"
    api, worker = _app(plan, ECS)
    url = _env(api, "AGENT_REDIS_URL")
    assert url.startswith("rediss://")
    for r in (api, worker):
        set_app_env(r, "AGENT_REDIS_URL", url.replace("rediss://", "redis://"))
    _both(
        plan,
        api,
        worker,
        gate,
        f"AGENT_REDIS_URL connects to {group.outputs['primaryEndpointAddress']}:6379 without TLS (redis://), "
        "but ElastiCache replication group 'skyfleet-aws-prod-cache' serves only TLS there "
        "(transitEncryptionEnabled, transitEncryptionMode required): use rediss://",
    )


def test_aws_transit_encryption_preferred_takes_either(gate: Gate, shipped: dict[str, Plan]) -> None:
    """'preferred' serves plaintext and TLS alike: a redis:// URL connects (the ElastiCache rule, not
    this one, asks for 'required')."""
    plan = copy_of(shipped, "aws-prod")
    group = res(plan, "cache-redis", "aws:elasticache/replicationGroup:ReplicationGroup")
    api, _ = _app(plan, ECS)
    set_app_env(api, "AGENT_REDIS_URL", _env(api, "AGENT_REDIS_URL").replace("rediss://", "redis://"))
    fires(gate, plan, RULE, api, "serves only TLS there", only=True)  # 'required'
    edit(group, lambda p: p.update(transitEncryptionMode="preferred"))
    assert check(gate, plan).of(RULE) == []


def test_aws_tls_url_against_elasticache_without_tls(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")
    group = res(plan, "cache-redis", "aws:elasticache/replicationGroup:ReplicationGroup")
    edit(group, lambda p: p.update(transitEncryptionEnabled=False, transitEncryptionMode=None))
    api, worker = _app(plan, ECS)
    _both(
        plan,
        api,
        worker,
        gate,
        "with TLS (rediss://), but ElastiCache replication group 'skyfleet-aws-prod-cache' serves no TLS "
        "there (transitEncryptionEnabled is not true)",
    )


def test_aws_redis_url_on_another_port_or_another_stacks_cache(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "aws-prod")
    api, _ = _app(plan, ECS)
    url = _env(api, "AGENT_REDIS_URL")
    set_app_env(api, "AGENT_REDIS_URL", url.replace(":6379", ":6380"))
    fires(
        gate,
        plan,
        RULE,
        api,
        "AGENT_REDIS_URL connects to master.skyfleet-aws-prod-cache.920adc.ew1.cache.amazonaws.com:6380, but "
        "ElastiCache replication group 'skyfleet-aws-prod-cache' serves port 6379",
        only=True,
    )

    # The dev site's cache endpoint in the prod site's task (a copied stack file, say).
    plan = copy_of(shipped, "aws-prod")
    api, _ = _app(plan, ECS)
    dev = _env(_app(shipped["aws-dev"], ECS)[0], "AGENT_REDIS_URL")
    set_app_env(api, "AGENT_REDIS_URL", dev)
    fires(
        gate,
        plan,
        RULE,
        api,
        "AGENT_REDIS_URL connects to master.skyfleet-aws-dev-cache.0f5b0a.ew1.cache.amazonaws.com, which is "
        "none of the stack's ElastiCache endpoints (",
        "master.skyfleet-aws-prod-cache.920adc.ew1.cache.amazonaws.com",
        only=True,
    )


def test_aws_serverless_cache_in_the_stack_is_a_server(gate: Gate, shipped: dict[str, Plan]) -> None:
    """An endpoint of any ElastiCache kind the stack runs resolves (no 'none of the stack's endpoints');
    a serverless cache serves only TLS."""
    plan = copy_of(shipped, "aws-prod")
    group = res(plan, "cache-redis", "aws:elasticache/replicationGroup:ReplicationGroup")
    address = "sessions-x1y2z3.serverless.euw1.cache.amazonaws.com"
    serverless = _planned(
        group,
        "aws:elasticache/serverlessCache:ServerlessCache",
        "sessions",
        {"id": "sessions", "engine": "valkey", "endpoints": [{"address": address, "port": 6379}]},
    )
    plan.resources.append(serverless)
    api, _ = _app(plan, ECS)
    set_app_env(api, "AGENT_REDIS_URL", f"rediss://{address}:6379")
    assert check(gate, plan).of(RULE) == []
    set_app_env(api, "AGENT_REDIS_URL", f"redis://{address}:6379")
    fires(
        gate,
        plan,
        RULE,
        api,
        f"AGENT_REDIS_URL connects to {address}:6379 without TLS (redis://), but ElastiCache serverless "
        "cache 'sessions' serves only TLS there (serverless caches serve only TLS): use rediss://",
        only=True,
    )


# -- Memorystore (gcp-prod) -----------------------------------------------------------------------


def test_gcp_plain_redis_url_against_memorystore_server_authentication(
    gate: Gate, shipped: dict[str, Plan]
) -> None:
    plan = copy_of(shipped, "gcp-prod")
    instance = res(plan, "redis", "gcp:redis/instance:Instance").outputs
    assert instance["transitEncryptionMode"] == "SERVER_AUTHENTICATION" and instance["port"] == 6378
    api, worker = _app(plan, RUN)
    url = _env(api, "AGENT_REDIS_URL")
    assert url == f"rediss://{instance['host']}:6378"
    for r in (api, worker):
        set_app_env(r, "AGENT_REDIS_URL", url.replace("rediss://", "redis://"))
    _both(
        plan,
        api,
        worker,
        gate,
        f"AGENT_REDIS_URL connects to {instance['host']}:6378 without TLS (redis://), but Memorystore "
        "instance 'gcp-prod-sessions' serves only TLS there (transitEncryptionMode SERVER_AUTHENTICATION): "
        "use rediss://",
    )


def test_gcp_tls_url_on_the_plaintext_port(gate: Gate, shipped: dict[str, Plan]) -> None:
    """With SERVER_AUTHENTICATION Memorystore serves TLS on 6378: rediss:// on Redis's usual 6379
    reaches nothing."""
    plan = copy_of(shipped, "gcp-prod")
    host = res(plan, "redis", "gcp:redis/instance:Instance").outputs["host"]
    api, worker = _app(plan, RUN)
    for r in (api, worker):
        set_app_env(r, "AGENT_REDIS_URL", f"rediss://{host}:6379")
    _both(
        plan,
        api,
        worker,
        gate,
        f"AGENT_REDIS_URL connects to {host}:6379, but Memorystore instance 'gcp-prod-sessions' serves port "
        "6378 (TLS) (transitEncryptionMode SERVER_AUTHENTICATION)",
    )


def test_gcp_redis_url_at_an_address_no_instance_has(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "gcp-prod")
    host = res(plan, "redis", "gcp:redis/instance:Instance").outputs["host"]
    _, worker = _app(plan, RUN)
    set_app_env(worker, "AGENT_REDIS_URL", "rediss://10.41.0.99:6378")
    fires(
        gate,
        plan,
        RULE,
        worker,
        f"AGENT_REDIS_URL connects to 10.41.0.99, which is the address of none of the stack's Memorystore "
        f"instances ({host})",
        only=True,
    )


# -- Redis on Kubernetes (onprem-prod) ---------------------------------------------------------------


def test_onprem_plain_redis_url_against_tls_only_redis(gate: Gate, shipped: dict[str, Plan]) -> None:
    """The shipped redis.conf serves TLS only (port 0, tls-port 6379): redis:// reaches nothing. With
    Sentinel the URL's scheme still decides how the app talks to the primary."""
    plan = copy_of(shipped, "onprem-prod")
    conf = res(plan, "redis-config", "kubernetes:core/v1:ConfigMap").inputs["data"]["redis.conf"]
    assert "port 0\ntls-port 6379\n" in conf
    api, worker = _app(plan, DEPLOYMENT)
    url = _env(api, "AGENT_REDIS_URL")
    for r in (api, worker):
        set_app_env(r, "AGENT_REDIS_URL", url.replace("rediss://", "redis://"))
    _both(
        plan,
        api,
        worker,
        gate,
        "AGENT_REDIS_URL connects to redis-0.redis-headless.agent-app.svc.cluster.local:6379 without TLS "
        "(redis://), but the redis-server of StatefulSet 'redis' serves only TLS there "
        "(port 0, tls-port 6379 in redis.conf of ConfigMap 'redis-config'): use rediss://",
    )

    # The same without Sentinel: the app dials the URL's host itself.
    for r in (api, worker):
        set_app_env(r, "AGENT_REDIS_SENTINELS", None)
    _both(
        plan, api, worker, gate, "AGENT_REDIS_URL connects to redis-0.redis-headless", "serves only TLS there"
    )


def test_onprem_tls_url_against_a_plaintext_redis(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "onprem-prod")
    edit(
        res(plan, "redis-config", "kubernetes:core/v1:ConfigMap"),
        lambda p: p["data"].update(
            {"redis.conf": p["data"]["redis.conf"].replace("port 0\ntls-port 6379\n", "")}
        ),
    )
    api, worker = _app(plan, DEPLOYMENT)
    _both(
        plan,
        api,
        worker,
        gate,
        "AGENT_REDIS_URL connects to redis-0.redis-headless.agent-app.svc.cluster.local:6379 with TLS "
        "(rediss://), but the redis-server of StatefulSet 'redis' serves no TLS there (port 6379, tls-port 0 "
        "in redis.conf of ConfigMap 'redis-config')",
    )


def test_onprem_redis_server_options_on_its_command_line_count(gate: Gate, shipped: dict[str, Plan]) -> None:
    """redis-server's command-line options override its file: --port 6379 --tls-port 0 turns TLS off."""
    plan = copy_of(shipped, "onprem-prod")
    sts = res(plan, "redis", "kubernetes:apps/v1:StatefulSet")
    edit(sts, lambda p: k8s_container(p)["command"].extend(["--port", "6379", "--tls-port", "0"]))
    api, worker = _app(plan, DEPLOYMENT)
    _both(
        plan,
        api,
        worker,
        gate,
        "serves no TLS there (port 6379, tls-port 0 in redis.conf of ConfigMap 'redis-config' and its "
        "command line)",
    )


def test_onprem_sentinels_judged_when_their_command_line_says_how_they_serve(
    gate: Gate, shipped: dict[str, Plan]
) -> None:
    """The shipped Sentinels' configuration is written at start (not in the plan): not judged. Their
    command line, when it sets both ports, says how they serve; the app speaks TLS to them as
    AGENT_REDIS_URL's scheme says."""
    plan = copy_of(shipped, "onprem-prod")
    sts = res(plan, "redis", "kubernetes:apps/v1:StatefulSet")

    def sentinel(p: dict[str, Any]) -> dict[str, Any]:
        found = next(c for c in p["spec"]["template"]["spec"]["containers"] if c["name"] == "sentinel")
        # serve.sh runs it: the server's own words come last.
        assert found["command"][-3:] == ["redis-server", "/run/sentinel/sentinel.conf", "--sentinel"]
        return found

    api, worker = _app(plan, DEPLOYMENT)
    for r in (api, worker):
        set_app_env(r, "AGENT_REDIS_URL", _env(r, "AGENT_REDIS_URL").replace("rediss://", "redis://"))
    said = [f.message.splitlines()[-1] for f in check(gate, plan).of(RULE)]  # not the description
    assert said and not any("AGENT_REDIS_SENTINELS" in m for m in said), said

    edit(sts, lambda p: sentinel(p)["command"].extend(["--port", "0", "--tls-port", "26379"]))
    _both(
        plan,
        api,
        worker,
        gate,
        "AGENT_REDIS_SENTINELS connects to redis-1.redis-headless.agent-app.svc.cluster.local:26379 without "
        "TLS (AGENT_REDIS_URL is redis://), but the redis-server --sentinel of StatefulSet 'redis' serves "
        "only TLS there (port 0, tls-port 26379 in its command line): use rediss:// in AGENT_REDIS_URL",
    )


# -- NATS on Kubernetes (onprem-prod) ----------------------------------------------------------------


def test_onprem_nats_url_without_tls_against_a_tls_only_nats_conf(
    gate: Gate, shipped: dict[str, Plan]
) -> None:
    plan = copy_of(shipped, "onprem-prod")
    api, worker = _app(plan, DEPLOYMENT)
    for r in (api, worker):
        _queue_url(r, lambda url: url.replace("tls=true", "tls=false"))
    _both(
        plan,
        api,
        worker,
        gate,
        "AGENT_QUEUE_URL connects to nats.agent-app.svc:4222 without TLS (tls=false), but the nats-server of "
        "StatefulSet 'nats' serves only TLS there (a tls block without allow_non_tls in nats.conf of "
        "ConfigMap 'nats-config'): set tls=true in the URL",
    )

    # allow_non_tls: the server takes both, so the plaintext URL connects.
    _nats_conf(plan, lambda text: "allow_non_tls: true\n" + text)
    assert check(gate, plan).of(RULE) == []


def test_onprem_nats_url_with_tls_against_a_nats_conf_without_tls(
    gate: Gate, shipped: dict[str, Plan]
) -> None:
    plan = copy_of(shipped, "onprem-prod")
    _nats_conf(plan, lambda text: re.sub(r"(?ms)^tls \{.*?^\}\n", "", text, count=1))
    api, worker = _app(plan, DEPLOYMENT)
    _both(
        plan,
        api,
        worker,
        gate,
        "AGENT_QUEUE_URL connects to nats.agent-app.svc:4222 with TLS (tls=true), but the nats-server of "
        "StatefulSet 'nats' serves no TLS there (no tls block in nats.conf of ConfigMap 'nats-config')",
    )


# -- hosts and ports no server of the stack answers (onprem-prod) ------------------------------------


def test_onprem_nats_host_no_service_answers(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "onprem-prod")
    api, worker = _app(plan, DEPLOYMENT)
    for r in (api, worker):
        _queue_url(r, lambda url: url.replace("@nats.agent-app.svc:", "@nats-x.agent-app.svc:"))
    _both(
        plan,
        api,
        worker,
        gate,
        "AGENT_QUEUE_URL connects to nats-x.agent-app.svc, which no Service of the stack answers "
        "(no Service 'nats-x' in namespace 'agent-app'",
    )


def test_onprem_nats_port_the_service_does_not_serve(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "onprem-prod")
    _, worker = _app(plan, DEPLOYMENT)
    _queue_url(worker, lambda url: url.replace("nats.agent-app.svc:4222", "nats.agent-app.svc:4223"))
    fires(
        gate,
        plan,
        RULE,
        worker,
        "AGENT_QUEUE_URL connects to nats.agent-app.svc:4223, but Service 'nats' serves no port 4223 "
        "(its ports: 4222)",
        only=True,
    )


def test_onprem_redis_hosts_no_service_or_pod_answers(gate: Gate, shipped: dict[str, Plan]) -> None:
    plan = copy_of(shipped, "onprem-prod")
    api, worker = _app(plan, DEPLOYMENT)
    sentinels = _env(api, "AGENT_REDIS_SENTINELS")
    for r in (api, worker):
        set_app_env(
            r, "AGENT_REDIS_SENTINELS", sentinels.replace("redis-2.redis-headless.", "redis-2.redis-x.")
        )
    _both(
        plan,
        api,
        worker,
        gate,
        "AGENT_REDIS_SENTINELS connects to redis-2.redis-x.agent-app.svc.cluster.local, which no Service "
        "of the stack answers (no Service 'redis-x' in namespace 'agent-app' with a pod 'redis-2')",
    )

    # A pod the StatefulSet does not run (three replicas: redis-0 to redis-2).
    plan = copy_of(shipped, "onprem-prod")
    api, worker = _app(plan, DEPLOYMENT)
    for r in (api, worker):
        set_app_env(r, "AGENT_REDIS_SENTINELS", sentinels.replace("redis-2.", "redis-3."))
    _both(
        plan,
        api,
        worker,
        gate,
        "AGENT_REDIS_SENTINELS connects to redis-3.redis-headless.agent-app.svc.cluster.local, but no pod "
        "'redis-3' runs under Service 'redis-headless' (StatefulSet 'redis' runs redis-0 to redis-2)",
    )

    # Without Sentinel the app dials the URL's host: a Service the stack does not have.
    plan = copy_of(shipped, "onprem-prod")
    api, worker = _app(plan, DEPLOYMENT)
    for r in (api, worker):
        set_app_env(r, "AGENT_REDIS_SENTINELS", None)
        set_app_env(r, "AGENT_REDIS_URL", "rediss://redis.agent-app.svc:6379")
    _both(
        plan,
        api,
        worker,
        gate,
        "AGENT_REDIS_URL connects to redis.agent-app.svc, which no Service of the stack answers "
        "(no Service 'redis' in namespace 'agent-app')",
    )


def test_hosts_the_stack_need_not_run_are_not_flagged(gate: Gate, shipped: dict[str, Plan]) -> None:
    """Not findings: with Sentinel the URL's host (the app dials the Sentinels and the primary they
    announce); a Service in a namespace the stack does not manage; a model API's https URL."""
    plan = copy_of(shipped, "onprem-prod")
    api, worker = _app(plan, DEPLOYMENT)
    set_app_env(api, "AGENT_REDIS_URL", "rediss://redis.agent-app.svc:6379")  # Sentinels still set
    set_app_env(worker, "AGENT_REDIS_SENTINELS", None)
    set_app_env(worker, "AGENT_REDIS_URL", "rediss://redis.shared-cache.svc:6379")
    for r in (api, worker):
        set_app_env(r, "AGENT_MODEL_BASE_URL", "https://models.internal.example.com/v1")
    checked = check(gate, plan)
    assert checked.of(RULE) == []
    assert checked.of("skyfleet-app-env") == []  # the plants are settings the app accepts

    # Without the Sentinels the api dials its URL's host, which no Service answers.
    set_app_env(api, "AGENT_REDIS_SENTINELS", None)
    fires(
        gate, plan, RULE, api, "AGENT_REDIS_URL connects to redis.agent-app.svc, which no Service", only=True
    )


@pytest.mark.parametrize("stack", ["aws-prod", "gcp-prod", "onprem-prod"])
def test_fleet_site_urls_are_not_dependencies(gate: Gate, shipped: dict[str, Plan], stack: str) -> None:
    """The other sites' https:// URLs are internet names outside every stack: never a finding."""
    assert RULE in gate.rules
    plan = copy_of(shipped, stack)
    sites = _env(next(r for r in plan.resources if r.type in APP_WORKLOADS), "AGENT_FLEET_SITES")
    sites += ",other-site=https://other.example.net"
    for r in plan.resources:
        if r.type in APP_WORKLOADS:
            set_app_env(r, "AGENT_FLEET_SITES", sites)
    assert check(gate, plan).of(RULE) == []
