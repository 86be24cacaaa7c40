"""The scope of rules that once accepted too much, on the real shipped plans: each is quiet on the
shipped stacks and fires on a defect planted in a copy of one (the plants are flips of planned
properties and dependencies, as test_deployability.py plants them), naming the resource."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from skyfleet.plan import Plan, PlannedResource
from tests.integration.policies.test_deployability import (
    _planned,
    assert_names,
    check,
    copy_of,
    edit,
    fires,
    k8s_container,
    remove,
    res,
    set_env,
)
from tests.support.gate import Gate

RUN_SERVICE = "gcp:cloudrunv2/service:Service"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
SG = "aws:ec2/securityGroup:SecurityGroup"
SG_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
TOPIC_MEMBER = "gcp:pubsub/topicIAMMember:TopicIAMMember"
SUBSCRIPTION_MEMBER = "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def quiet(gate: Gate, plan: Plan, rule: str) -> None:
    assert [f.message for f in check(gate, plan).of(rule)] == [], f"{rule} fires on shipped {plan.stack}"


# -- A. Cloud Run: the invoker check turned off is a public invoker ---------------------------------

INVOKER = "gcp-run-public-invoker-behind-lb"


@pytest.mark.parametrize(
    ("service", "plant", "ingress"),
    [
        ("worker", {"invokerIamDisabled": True}, "INGRESS_TRAFFIC_INTERNAL_ONLY"),
        ("api", {"ingress": "INGRESS_TRAFFIC_ALL"}, "INGRESS_TRAFFIC_ALL"),
    ],
    ids=["internal-only worker", "api not limited to the load balancer"],
)
def test_run_invoker_iam_disabled_off_the_load_balancer(
    gate: Gate, plans: dict[str, Plan], service: str, plant: dict[str, Any], ingress: str
) -> None:
    """The shipped api turns its invoker check off behind the load balancer, by design; the same
    setting on a service reachable otherwise opens it to everyone, like an allUsers grant."""
    plan = copy_of(plans, "gcp-prod")
    api = res(plan, "api", RUN_SERVICE)
    assert api.inputs["invokerIamDisabled"] is True  # the shipped case the rule must accept
    quiet(gate, plan, INVOKER)
    svc = res(plan, service, RUN_SERVICE)
    edit(svc, lambda p: p.update(plant))
    fires(gate, plan, INVOKER, svc, f"{service!r} turns its invoker IAM check off", f"(ingress is {ingress})")


# -- B. Kubernetes: the cache admits only the app's pods, in its namespace, on its port -------------

CACHE_K8S = "k8s-cache-ingress-from-service"
SKYFLEET_POD = {"app.kubernetes.io/part-of": "skyfleet"}


def _pods(name: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": {**SKYFLEET_POD, "app.kubernetes.io/name": name}}}


def _redis_rule(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(props: dict[str, Any]) -> None:
        (rule,) = props["spec"]["ingress"]
        change(rule)

    return apply


def _from_any_namespace(rule: dict[str, Any]) -> None:
    rule["from"][0] = {**rule["from"][0], "namespaceSelector": {}}


K8S_PLANTS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "namespaceSelector {}": (
        _from_any_namespace,
        "admits pods of other namespaces (namespaceSelector {}) to the cache",
    ),
    "pods that do not use the cache": (
        lambda rule: rule["from"].append(_pods("nats")),
        "admits the pods of 'nats', which do not use the cache",
    ),
    "pods of no workload": (
        lambda rule: rule["from"].append(_pods("debug")),
        "none of the app's, to the cache",
    ),
    "every port": (
        lambda rule: rule.pop("ports"),
        "admits every port of the cache pods; allow only the cache's (6379, 26379)",
    ),
    "another port": (
        lambda rule: rule["ports"].append({"protocol": "TCP", "port": 9121}),
        "admits port 9121 of the cache pods",
    ),
}


@pytest.mark.parametrize("plant", sorted(K8S_PLANTS))
def test_k8s_cache_ingress_only_from_the_apps_pods(gate: Gate, plans: dict[str, Plan], plant: str) -> None:
    """The shipped policy admits the api, the worker (both use the cache) and the cache's own pods
    on the cache and Sentinel ports; a podSelector alone is not enough."""
    plan = copy_of(plans, "onprem-prod")
    quiet(gate, plan, CACHE_K8S)
    policy = res(plan, "netpol-redis", NETPOL)
    change, message = K8S_PLANTS[plant]
    edit(policy, _redis_rule(change))
    fires(gate, plan, CACHE_K8S, policy, "NetworkPolicy 'netpol-redis'", message, only=True)


# -- C. AWS: the cache admits only an ECS service's security group ----------------------------------

CACHE_AWS = "aws-network-cache-ingress-from-service"


def test_aws_cache_ingress_from_the_load_balancers_group(gate: Gate, plans: dict[str, Plan]) -> None:
    plan = copy_of(plans, "aws-prod")
    quiet(gate, plan, CACHE_AWS)
    tasks_in = res(plan, "network-tasks-to-cache-in", SG_INGRESS)
    alb = res(plan, "network-alb-sg", SG)
    assert alb.outputs["id"] in res(plan, "lb-alb").inputs["securityGroups"]  # the internet-facing ALB's
    # A second source next to the tasks' group, written as the program writes its rules.
    alb_in = _planned(
        tasks_in,
        SG_INGRESS,
        "network-alb-to-cache-in",
        {**tasks_in.inputs, "referencedSecurityGroupId": alb.outputs["id"]},
    )
    alb_in.property_dependencies = {
        **tasks_in.property_dependencies,
        "referencedSecurityGroupId": [alb.urn],
    }
    plan.resources.append(alb_in)
    fires(
        gate,
        plan,
        CACHE_AWS,
        alb_in,
        "cache security group admits security group 'network-alb-sg', which no ECS service runs in",
        only=True,
    )

    # The same source written into the shipped rule itself.
    plan = copy_of(plans, "aws-prod")
    tasks_in = res(plan, "network-tasks-to-cache-in", SG_INGRESS)
    alb = res(plan, "network-alb-sg", SG)
    edit(tasks_in, lambda p: p.update(referencedSecurityGroupId=alb.outputs["id"]))
    tasks_in.property_dependencies["referencedSecurityGroupId"] = [alb.urn]
    fires(gate, plan, CACHE_AWS, tasks_in, "admits security group 'network-alb-sg'", only=True)


# -- D. Pub/Sub: the service agent may use the dead-letter policy ------------------------------------

DEAD_LETTER = "gcp-pubsub-dead-letter"
AGENT = "serviceAccount:service-123456789012@gcp-sa-pubsub.iam.gserviceaccount.com"


def _grant_elsewhere(plan: Plan, name: str, type_: str, key: str, to: PlannedResource) -> None:
    """Point one of the agent's grants at another resource (by value and dependency)."""
    grant = res(plan, name, type_)
    edit(grant, lambda p: p.update({key: to.outputs["name"]}))
    grant.property_dependencies[key] = [to.urn]


def _grant_to_worker(plan: Plan, name: str, type_: str) -> None:
    """Give one of the agent's grants to the worker's service account (by value and dependency)."""
    grant = res(plan, name, type_)
    worker = res(plan, "worker-sa", "gcp:serviceaccount/account:Account")
    edit(grant, lambda p: p.update(member=f"serviceAccount:{worker.outputs['email']}"))
    grant.property_dependencies["member"] = [worker.urn]


PUBSUB_PLANTS: dict[str, tuple[Callable[[Plan], None], str]] = {
    "no publisher grant": (
        lambda plan: remove(plan, res(plan, "dead-letter-agent-publisher", TOPIC_MEMBER)),
        "holds no roles/pubsub.publisher on that topic",
    ),
    "publisher on the task topic": (
        lambda plan: _grant_elsewhere(
            plan,
            "dead-letter-agent-publisher",
            TOPIC_MEMBER,
            "topic",
            res(plan, "tasks", "gcp:pubsub/topic:Topic"),
        ),
        "holds no roles/pubsub.publisher on that topic",
    ),
    "no subscriber grant": (
        lambda plan: remove(plan, res(plan, "dead-letter-agent-subscriber", SUBSCRIPTION_MEMBER)),
        "holds no roles/pubsub.subscriber on it",
    ),
    "subscriber on the hold subscription": (
        lambda plan: _grant_elsewhere(
            plan,
            "dead-letter-agent-subscriber",
            SUBSCRIPTION_MEMBER,
            "subscription",
            res(plan, "tasks-dead-letter-hold", SUBSCRIPTION),
        ),
        "holds no roles/pubsub.subscriber on it",
    ),
    "subscriber granted to the worker instead": (
        lambda plan: _grant_to_worker(plan, "dead-letter-agent-subscriber", SUBSCRIPTION_MEMBER),
        "holds no roles/pubsub.subscriber on it",
    ),
}


@pytest.mark.parametrize("plant", sorted(PUBSUB_PLANTS))
def test_pubsub_dead_letter_needs_the_service_agents_grants(
    gate: Gate, plans: dict[str, Plan], plant: str
) -> None:
    plan = copy_of(plans, "gcp-prod")
    quiet(gate, plan, DEAD_LETTER)
    sub = res(plan, "tasks-worker", SUBSCRIPTION)
    change, message = PUBSUB_PLANTS[plant]
    change(plan)
    fires(
        gate,
        plan,
        DEAD_LETTER,
        sub,
        "subscription 'tasks-worker'",
        "the Pub/Sub service agent (service-<project number>@gcp-sa-pubsub.iam.gserviceaccount.com)",
        message,
        only=True,
    )


def test_pubsub_agent_grants_count_in_every_form(gate: Gate, plans: dict[str, Plan]) -> None:
    """The agent is known by its address or, unknown in a preview, by the grant's dependency on its
    ServiceIdentity; a project-level grant covers the topic."""
    plan = copy_of(plans, "gcp-prod")
    publisher = res(plan, "dead-letter-agent-publisher", TOPIC_MEMBER)
    assert publisher.inputs["member"] == AGENT
    assert publisher.property_dependencies["member"] == [res(plan, "pubsub-agent").urn]
    edit(publisher, lambda p: p.update(member="serviceAccount:pubsub-agent-address-not-known-yet"))
    quiet(gate, plan, DEAD_LETTER)

    plan = copy_of(plans, "gcp-prod")
    publisher = res(plan, "dead-letter-agent-publisher", TOPIC_MEMBER)
    remove(plan, publisher)
    project_grant = _planned(
        publisher,
        "gcp:projects/iAMMember:IAMMember",
        "dead-letter-agent-project-publisher",
        {"project": "skyfleet-prod-replace-me", "role": "roles/pubsub.publisher", "member": AGENT},
    )
    plan.resources.append(project_grant)
    quiet(gate, plan, DEAD_LETTER)


# -- E. Site parity: the Kubernetes dead-letter queue is a stream of the URL's dead-letter subject --

PARITY = "site-parity"


def _stream_subjects(file: str, subjects: list[str]) -> Callable[[dict[str, Any]], None]:
    def apply(props: dict[str, Any]) -> None:
        doc = json.loads(props["data"][file])
        doc["subjects"] = subjects
        props["data"][file] = json.dumps(doc, indent=2)

    return apply


def _task_stream_takes_the_dlq_subject(streams: PlannedResource) -> None:
    edit(streams, _stream_subjects("tasks.json", ["agent.tasks", "agent.tasks.dlq"]))
    edit(streams, _stream_subjects("dlq.json", ["agent.tasks.parked"]))


def _queue_url(plan: Plan, change: Callable[[str], str]) -> None:
    for name in ("api", "worker"):
        w = res(plan, name, DEPLOYMENT)
        url = next(e["value"] for e in k8s_container(w.inputs)["env"] if e["name"] == "AGENT_QUEUE_URL")
        edit(w, lambda p, url=url: set_env(k8s_container(p)["env"], "AGENT_QUEUE_URL", change(url)))


PARITY_PLANTS: dict[str, tuple[Callable[[Plan], None], str]] = {
    # The ConfigMap still says "dlq" (dlq.json, AGENT_TASKS_DLQ): no stream takes the subject.
    "the DLQ stream takes another subject": (
        lambda plan: edit(
            res(plan, "nats-streams", CONFIG_MAP), _stream_subjects("dlq.json", ["agent.tasks.parked"])
        ),
        "agent.tasks.dlq",
    ),
    "the URL dead-letters to a subject no stream takes": (
        lambda plan: _queue_url(plan, lambda url: url.replace("dlq=agent.tasks.dlq", "dlq=agent.poison")),
        "agent.poison",
    ),
    "only the task stream takes the DLQ subject": (
        lambda plan: _task_stream_takes_the_dlq_subject(res(plan, "nats-streams", CONFIG_MAP)),
        "agent.tasks.dlq",
    ),
}


@pytest.mark.parametrize("plant", sorted(PARITY_PLANTS))
def test_site_parity_kubernetes_dead_letter_stream(gate: Gate, plans: dict[str, Plan], plant: str) -> None:
    plan = copy_of(plans, "onprem-prod")
    quiet(gate, plan, PARITY)
    change, subject = PARITY_PLANTS[plant]
    change(plan)
    checked = check(gate, plan)
    for name in ("api", "worker"):
        w = res(plan, name, DEPLOYMENT)
        assert_names(
            checked.on(PARITY, w),
            plan,
            PARITY,
            w,
            f"the kubernetes site provides no dead-letter queue: {name!r} dead-letters to subject "
            f"{subject!r} (AGENT_QUEUE_URL), which no stream the stack declares takes besides the task "
            "stream 'AGENT_TASKS'",
        )


def test_site_parity_a_wildcard_stream_takes_the_dead_letter_subject(
    gate: Gate, plans: dict[str, Plan]
) -> None:
    plan = copy_of(plans, "onprem-prod")
    edit(res(plan, "nats-streams", CONFIG_MAP), _stream_subjects("dlq.json", ["agent.*.dlq"]))
    quiet(gate, plan, PARITY)
