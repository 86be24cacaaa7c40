"""Each app workload's identity can do what the app does: the permissions its queue and secret
adapters need at start, readiness and work (agent_app/queues/permissions.py), granted to that
workload's identity on the right resource.

- ECS: the task role for the queue (SQS) and the dead-letter queue its redrive policy names
  (the worker sends dead letters there itself), the execution role for the container's secrets
  (Secrets Manager / Parameter Store, and KMS when the secret's key is customer managed), read
  from the role's inline, attached and in-stack managed policies, and the key's policy.
- Cloud Run: the service's account for the topic / subscription and the subscription's
  dead-letter topic (Pub/Sub) and every secret the service references (Secret Manager), from
  IAM members, bindings and policies on the resource or the project, with predefined and
  in-stack custom roles.
- Kubernetes: the NATS user in the queue URL against the users of the nats.conf the broker's
  pods mount (found through the Service's selector).

And each workload of a fleet site can reach the other sites: on Kubernetes, the NetworkPolicies
that restrict its pods' egress admit HTTPS out of the cluster (the sites' regional names are
internet addresses, not known to the plan).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pulumi_policy import PolicyResource, Severity

from agent_app.contract import ContractError, Env, NatsQueue, PubSubQueue, SqsQueue, parse_queue_url
from agent_app.queues import permissions as perm

from . import _nats_conf as nats_conf
from ._plan import K8S_CONFIGMAP, Container, condition_holds, json_doc, k8s_object, k8s_servers, kms_key, text
from ._rule import SKYFLEET, Controls, Rule, StackView, as_list, get_path
from .kubernetes import NETPOL, namespace_of, pod_labels, pod_spec, selects
from .skyfleet_app import app_containers

ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
ROLE_ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
MANAGED_POLICY = "aws:iam/policy:Policy"
SQS_QUEUE = "aws:sqs/queue:Queue"
REDRIVE = ("aws:sqs/redrivePolicy:RedrivePolicy",)
SM_SECRET = "aws:secretsmanager/secret:Secret"
AWS_MANAGED_KEYS = ("alias/aws/sqs", "alias/aws/secretsmanager")


@dataclass(frozen=True)
class Missing:
    need: perm.Need
    resource: str
    why: str = ""

    def __str__(self) -> str:
        why = f"; {self.why}" if self.why else ""
        return f"{self.need.permission} on {self.resource} ({self.need.call}, {self.need.phase}{why})"


def _queue(c: Container) -> Any:
    value = c.env.get(Env.QUEUE_URL.value)
    if value is None or value.kind != "value" or not value.value:
        return None
    try:
        return parse_queue_url(value.value)
    except ContractError:
        return None  # skyfleet-app-env reports it


def _applies(need: perm.Need, conditions: set[str]) -> bool:
    return need.when is None or need.when in conditions


# -- AWS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Statement:
    effect: str
    actions: tuple[str, ...]
    not_actions: tuple[str, ...]
    resources: tuple[str, ...]
    not_resources: tuple[str, ...]
    principals: tuple[str, ...]
    condition: Mapping[str, Any]


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in as_list(value))


def _statements(document: Any) -> list[_Statement]:
    doc = json_doc(document, "policy")
    if not isinstance(doc, Mapping):
        return []
    out = []
    for raw in as_list(doc.get("Statement")):
        if not isinstance(raw, Mapping):
            continue
        principal = raw.get("Principal")
        principals: tuple[str, ...] = ()
        if isinstance(principal, str):
            principals = (principal,)
        elif isinstance(principal, Mapping):
            principals = tuple(str(p) for v in principal.values() for p in as_list(v))
        out.append(
            _Statement(
                str(raw.get("Effect", "")),
                _strings(raw.get("Action")),
                _strings(raw.get("NotAction")),
                _strings(raw.get("Resource")),
                _strings(raw.get("NotResource")),
                principals,
                raw.get("Condition") or {},
            )
        )
    return out


def _action_matches(patterns: Iterable[str], action: str) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in patterns)


def _resource_matches(patterns: Iterable[str], arn: str) -> bool:
    return any(fnmatch.fnmatchcase(arn, p) for p in patterns)


def _statement_applies(s: _Statement, action: str, arn: str, context: Mapping[str, str]) -> bool:
    if s.actions and not _action_matches(s.actions, action):
        return False
    if s.not_actions and _action_matches(s.not_actions, action):
        return False
    if s.resources and not _resource_matches(s.resources, arn):
        return False
    if s.not_resources and _resource_matches(s.not_resources, arn):
        return False
    return condition_holds(s.condition, context)


def _allowed(statements: list[_Statement], action: str, arn: str, context: Mapping[str, str]) -> bool:
    applying = [s for s in statements if _statement_applies(s, action, arn, context)]
    return not any(s.effect == "Deny" for s in applying) and any(s.effect == "Allow" for s in applying)


class AwsRole:
    """A role of the stack with every policy document attached to it."""

    def __init__(self, view: StackView, role: PolicyResource) -> None:
        self.role = role
        self.arn = text(role.props.get("arn"))
        ids = view.ids_of(role)
        docs: list[Any] = [p.get("policy") for p in as_list(role.props.get("inlinePolicies"))]
        docs += [p.props.get("policy") for p in view.of_type(ROLE_POLICY) if text(p.props.get("role")) in ids]
        managed = [text(a) for a in as_list(role.props.get("managedPolicyArns"))]
        managed += [
            text(a.props.get("policyArn"))
            for a in view.of_type(ROLE_ATTACHMENT)
            if text(a.props.get("role")) in ids
        ]
        policies = {text(p.props.get("arn")): p for p in view.of_type(MANAGED_POLICY)}
        docs += [policies[arn].props.get("policy") for arn in managed if arn in policies]
        self.external = [arn for arn in managed if arn not in policies]
        self.statements = [s for d in docs for s in _statements(d)]

    def allows(self, action: str, arn: str, context: Mapping[str, str] | None = None) -> bool:
        return _allowed(self.statements, action, arn, context or {})


def _role(view: StackView, arn: str) -> AwsRole | None:
    for r in view.of_type(ROLE):
        if text(r.props.get("arn")) == arn:
            return AwsRole(view, r)
    return None


def _key_policy_allows(key: PolicyResource, role_arn: str, action: str) -> bool:
    """The key policy lets the role use the key: directly, or by delegating to the account's IAM."""
    account = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ""
    statements = _statements(key.props.get("policy")) if key.props.get("policy") else []
    if not statements:
        return True  # the default key policy delegates to the account's IAM policies
    delegates = (f"arn:aws:iam::{account}:root", account, role_arn, "*")
    for s in statements:
        if s.effect != "Allow" or not (set(s.principals) & set(delegates)):
            continue
        if (not s.actions or _action_matches(s.actions, action)) and not _action_matches(
            s.not_actions, action
        ):
            return True
    return False


def _kms_missing(view: StackView, role: AwsRole, need: perm.Need, key_ref: str, via: str) -> Missing | None:
    key = kms_key(view, key_ref)
    arn = text(key.props.get("arn")) if key is not None else key_ref
    if not role.allows(need.permission, arn, {"kms:ViaService": via}):
        return Missing(need, arn)
    if key is not None and not _key_policy_allows(key, role.arn, need.permission):
        return Missing(need, arn, "the key policy neither names the role nor delegates to the account")
    return None


def _sqs_missing(view: StackView, role: AwsRole, process: str, target: SqsQueue) -> list[Missing]:
    url = urlsplit(target.queue_url)
    account, name = [*url.path.strip("/").split("/"), "", ""][:2]
    # What each need is granted on: the queue, and the DLQ its redrive policy names (the worker
    # sends dead letters there itself), each with the KMS key it is encrypted with.
    on: dict[str, tuple[str, str]] = {"queue": (f"arn:aws:sqs:{target.region}:{account}:{name}", "")}
    conditions: set[str] = set()
    queues = view.of_type(SQS_QUEUE)
    for q in queues:
        if target.queue_url in (text(q.props.get("url")), text(q.props.get("id"))):
            on["queue"] = (text(q.props.get("arn")) or on["queue"][0], _cmk(q, perm.QUEUE_CMK, conditions))
            # Inline, or set by its own resource.
            docs = [q.props.get("redrivePolicy")]
            docs += [r.props.get("redrivePolicy") for r in view.referrers(q, REDRIVE, "queueUrl")]
            redrives = [d for d in (json_doc(doc, "redrivePolicy") for doc in docs) if isinstance(d, Mapping)]
            dlq_arn = next(
                (text(d.get("deadLetterTargetArn")) for d in redrives if d.get("deadLetterTargetArn")), ""
            )
            if dlq_arn:
                dlq = next((d for d in queues if dlq_arn in view.ids_of(d)), None)
                on["dlq"] = (dlq_arn, _cmk(dlq, perm.DLQ_CMK, conditions) if dlq else "")
    needs = [n for n in perm.needs(perm.SQS, process) if _applies(n, conditions)]
    missing = []
    for need in needs:
        queue = "dlq" if need.resource.startswith("dlq") else "queue"
        if queue not in on:
            continue  # no dead-letter queue in the plan: no dead letter is sent
        arn, key_ref = on[queue]
        missing += _aws_missing(view, role, [need], arn, key_ref, f"sqs.{target.region}.amazonaws.com")
    return missing


def _cmk(queue: PolicyResource, condition: str, conditions: set[str]) -> str:
    """The queue's KMS key reference; notes ``condition`` when the key is customer managed."""
    key_ref = text(queue.props.get("kmsMasterKeyId"))
    if key_ref and key_ref not in AWS_MANAGED_KEYS:
        conditions.add(condition)
    return key_ref


def _aws_missing(
    view: StackView, role: AwsRole, needs: list[perm.Need], arn: str, key_ref: str, via: str
) -> list[Missing]:
    """The needs the role is not granted: on ``arn``, or on the KMS key (used through ``via``)."""
    missing = []
    for need in needs:
        if need.resource.endswith("key"):
            found = _kms_missing(view, role, need, key_ref, via)
            if found:
                missing.append(found)
        elif not role.allows(need.permission, arn):
            missing.append(Missing(need, arn))
    return missing


def _secret_missing(view: StackView, role: AwsRole, process: str, value_from: str) -> list[Missing]:
    parts = value_from.split(":")
    conditions: set[str] = set()
    key_ref = ""
    if len(parts) >= 7 and parts[2] == "secretsmanager":
        arn = ":".join(parts[:7])
        for s in view.of_type(SM_SECRET):
            if arn in view.ids_of(s):
                key_ref = text(s.props.get("kmsKeyId"))
                if key_ref and key_ref not in AWS_MANAGED_KEYS:
                    conditions.add(perm.SECRET_CMK)
        region = parts[3]
    elif value_from.startswith("arn:"):
        conditions.add(perm.SSM_PARAMETER)
        arn, region = value_from, parts[3] if len(parts) > 3 else ""
    else:
        return []  # a parameter name: its ARN depends on the account and region ECS runs in
    ssm = perm.SSM_PARAMETER in conditions
    needs = [
        n
        for n in perm.needs(perm.SECRETS_MANAGER, process)
        if (n.when == perm.SSM_PARAMETER) == ssm and _applies(n, conditions)
    ]
    return _aws_missing(view, role, needs, arn, key_ref, f"secretsmanager.{region}.amazonaws.com")


def _ecs(view: StackView, c: Container, process: str | None) -> Iterator[str]:
    queue = _queue(c)
    if process is not None and isinstance(queue, SqsQueue):
        role_arn = text(c.task.get("taskRoleArn"))
        role = _role(view, role_arn) if role_arn else None
        if not role_arn:
            needs = ", ".join(sorted({n.permission for n in perm.needs(perm.SQS, process) if n.when is None}))
            yield f"the task has no task role, so the {process} cannot call SQS ({needs})"
        elif role is not None:
            missing = _sqs_missing(view, role, process, queue)
            if missing:
                yield f"the task role {role.arn} is not granted " + "; ".join(map(str, missing))
    secrets = [v.secret.name for v in c.env.values() if v.kind == "secret" and v.secret is not None]
    if not secrets:
        return
    role_arn = text(c.task.get("executionRoleArn"))
    if not role_arn:
        yield "the task has no execution role, so ECS cannot read the container's secrets"
        return
    role = _role(view, role_arn)
    if role is None:
        return
    refs = [text(s.get("valueFrom")) for s in as_list(c.raw.get("secrets"))]
    # The platform reads the secrets the same way for either process.
    missing = [m for ref in refs for m in _secret_missing(view, role, process or "api", ref)]
    if missing:
        yield f"the execution role {role.arn} is not granted " + "; ".join(map(str, missing))


# -- GCP ---------------------------------------------------------------------------------------

_IAM_TYPES: dict[str, str] = {
    "gcp:pubsub/topicIAMMember:TopicIAMMember": "topic",
    "gcp:pubsub/topicIAMBinding:TopicIAMBinding": "topic",
    "gcp:pubsub/topicIAMPolicy:TopicIAMPolicy": "topic",
    "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember": "subscription",
    "gcp:pubsub/subscriptionIAMBinding:SubscriptionIAMBinding": "subscription",
    "gcp:pubsub/subscriptionIAMPolicy:SubscriptionIAMPolicy": "subscription",
    "gcp:secretmanager/secretIamMember:SecretIamMember": "secret",
    "gcp:secretmanager/secretIamBinding:SecretIamBinding": "secret",
    "gcp:secretmanager/secretIamPolicy:SecretIamPolicy": "secret",
    "gcp:projects/iAMMember:IAMMember": "project",
    "gcp:projects/iAMBinding:IAMBinding": "project",
    "gcp:projects/iAMPolicy:IAMPolicy": "project",
}
_TARGET_PROP = {"topic": "topic", "subscription": "subscription", "secret": "secretId", "project": "project"}
CUSTOM_ROLE = "gcp:projects/iAMCustomRole:IAMCustomRole"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
TOPIC = "gcp:pubsub/topic:Topic"
_PATH = re.compile(r"^projects/(?P<project>[^/]+)/(?:topics|subscriptions|secrets)/(?P<name>[^/]+)$")


@dataclass(frozen=True)
class _Grant:
    kind: str
    project: str | None
    name: str
    role: str
    members: frozenset[str]


def _split(value: str, default_project: str | None) -> tuple[str | None, str]:
    m = _PATH.match(value)
    return (m["project"], m["name"]) if m else (default_project, value)


def _grants(view: StackView) -> list[_Grant]:
    out: list[_Grant] = []
    for token, kind in _IAM_TYPES.items():
        for r in view.of_type(token):
            project = text(r.props.get("project")) or None
            target = text(r.props.get(_TARGET_PROP[kind]))
            gproject, name = (target or project, "") if kind == "project" else _split(target, project)
            if r.props.get("policyData") is not None:
                doc = json_doc(r.props.get("policyData"), "policyData")
                bindings = as_list(doc.get("bindings")) if isinstance(doc, Mapping) else []
                pairs = [(text(b.get("role")), frozenset(_strings(b.get("members")))) for b in bindings]
            else:
                members = _strings(r.props.get("members")) or _strings(r.props.get("member"))
                pairs = [(text(r.props.get("role")), frozenset(members))]
            out += [_Grant(kind, gproject, name, role, members) for role, members in pairs]
    return out


def _role_permissions(view: StackView, role: str) -> frozenset[str]:
    if role in perm.GCP_ROLE_PERMISSIONS:
        return perm.GCP_ROLE_PERMISSIONS[role]
    for custom in view.of_type(CUSTOM_ROLE):
        if role in view.ids_of(custom):
            return frozenset(_strings(custom.props.get("permissions")))
    return frozenset()


def _gcp_granted(
    view: StackView,
    grants: list[_Grant],
    member: str,
    permission: str,
    kind: str,
    project: str | None,
    name: str,
) -> bool:
    for g in grants:
        if member not in g.members:
            continue
        if g.kind == "project":
            if g.project not in (project, None) and project is not None:
                continue
        elif g.kind != kind or g.name != name or (g.project and project and g.project != project):
            continue
        if perm.role_grants(_role_permissions(view, g.role), permission):
            return True
    return False


def _dead_letter_topic(view: StackView, queue: PubSubQueue) -> tuple[str | None, str] | None:
    """The (project, name) of the dead-letter topic of the queue's subscription, as the plan
    sets it (None: no dead-letter policy, or no such subscription in the plan)."""
    for sub in view.of_type(SUBSCRIPTION):
        project, name = _split(text(sub.props.get("name")), text(sub.props.get("project")) or None)
        if name != queue.subscription or project not in (queue.project, None):
            continue
        ref = text(get_path(sub.props, "deadLetterPolicy", "deadLetterTopic"))
        if not ref:
            return None
        for topic in view.of_type(TOPIC):
            if ref in view.ids_of(topic):
                return text(topic.props.get("project")) or queue.project, text(topic.props.get("name"))
        return _split(ref, queue.project)
    return None


def _run(view: StackView, c: Container, process: str | None) -> Iterator[str]:
    account = text(get_path(c.resource.props, "template", "serviceAccount"))
    if not account:
        yield "the service sets no service account, so no grant to it can be checked"
        return
    member = f"serviceAccount:{account}"
    grants = _grants(view)
    missing: list[str] = []
    queue = _queue(c)
    if process is not None and isinstance(queue, PubSubQueue):
        # What each need is granted on: (kind, project, name).
        on: dict[str, tuple[str, str | None, str]] = {
            "topic": ("topic", queue.project, queue.topic),
            "subscription": ("subscription", queue.project, queue.subscription),
        }
        dead_letter = _dead_letter_topic(view, queue)
        if dead_letter is not None:
            on["dead-letter topic"] = ("topic", *dead_letter)
        for need in perm.needs(perm.PUBSUB, process):
            if need.resource not in on:
                continue  # no dead-letter policy in the plan: no dead letter is published
            kind, project, name = on[need.resource]
            if not _gcp_granted(view, grants, member, need.permission, kind, project, name):
                path = f"projects/{project}/{kind}s/{name}"
                missing.append(f"{need.permission} on {path} ({need.call}, {need.phase})")
    secrets = {v.secret.name for v in c.env.values() if v.kind == "secret" and v.secret is not None}
    secrets |= {s.name for m in c.mounts for s in m.sources if s.kind == "secret" and s.name}
    for secret in sorted(secrets):
        project, name = _split(secret, c.scope)
        for need in perm.needs(perm.SECRET_MANAGER, process or "api"):
            if not _gcp_granted(view, grants, member, need.permission, "secret", project, name):
                missing.append(
                    f"{need.permission} on projects/{project}/secrets/{name} ({need.call}, {need.phase})"
                )
    if missing:
        yield f"the service account {account} is not granted " + "; ".join(missing)


# -- NATS --------------------------------------------------------------------------------------


def _nats_conf(view: StackView, host: str, namespace: str | None) -> dict[str, Any] | None:
    """The nats.conf the broker's pods behind ``host`` mount, when the stack holds it."""
    for workload in k8s_servers(view, host, namespace):
        spec = pod_spec(workload.resource_type, workload.props) or {}
        ns = text(get_path(workload.props, "metadata", "namespace")) or "default"
        for volume in as_list(spec.get("volumes")):
            config_map = volume.get("configMap")
            if not isinstance(config_map, Mapping):
                continue
            obj = k8s_object(view, K8S_CONFIGMAP, text(config_map.get("name")), ns)
            for value in (obj.props.get("data") or {}).values() if obj else []:
                try:
                    conf = nats_conf.parse(str(value))
                except nats_conf.NatsConfError:
                    continue
                if nats_conf.looks_like_server_conf(conf):
                    return conf
    return None


def _nats(view: StackView, c: Container, process: str | None) -> Iterator[str]:
    queue = _queue(c)
    if process is None or not isinstance(queue, NatsQueue) or c.platform != "kubernetes":
        return
    first = urlsplit(queue.servers[0])
    conf = _nats_conf(view, first.hostname or "", c.scope)
    if conf is None:
        return
    known = nats_conf.users(conf)
    if known is None:
        yield (
            f"the NATS server at {first.hostname} authenticates no client (no users in its authorization): "
            "any client may publish and subscribe to anything"
        )
        return
    user = queue.user or first.username or text(get_path(conf, "authorization", "no_auth_user"))
    if not user:
        yield f"{Env.QUEUE_URL.value} names no NATS user, and the server requires one"
        return
    if user not in known:
        yield f"NATS user {user!r} is not defined in the server's configuration"
        return
    missing = [
        f"{n.permission} {n.resource} ({n.call}, {n.phase})"
        for n in perm.nats_needs(queue.stream, queue.subject, queue.dlq_subject)
        if n.role == process and not nats_conf.permitted(known[user], n.permission, n.resource)
    ]
    if missing:
        yield f"NATS user {user!r} may not " + "; ".join(dict.fromkeys(missing))


def _permissions(view: StackView) -> Iterator[tuple[str, str | None]]:
    for c, process in app_containers(view):
        checks = {"ecs": _ecs, "cloudrun": _run, "kubernetes": _nats}[c.platform]
        for problem in checks(view, c, process):
            yield f"{c.label} ({process or 'app'}): {problem}", c.resource.urn


def egress_policies(view: StackView, w: PolicyResource) -> list[PolicyResource]:
    """The NetworkPolicies that restrict the egress of ``w``'s pods (none: all egress is open)."""
    labels = pod_labels(w.resource_type, w.props)
    found = []
    for p in view.of_type(*NETPOL):
        spec = get_path(p.props, "spec") or {}
        # policyTypes unset: Egress only when the policy lists egress rules.
        types = as_list(
            spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])
        )
        if (
            namespace_of(p) == namespace_of(w)
            and "Egress" in types
            and selects(spec.get("podSelector"), labels)
        ):
            found.append(p)
    return found


def https_out(rule: Any, port: int = 443) -> bool:
    """An egress rule admitting TCP ``port`` (443: HTTPS) to addresses outside the cluster (an
    ipBlock, or any)."""
    ports = as_list(get_path(rule, "ports"))
    to = as_list(get_path(rule, "to"))

    def covers(p: Any) -> bool:
        first, end = get_path(p, "port"), get_path(p, "endPort")
        if str(get_path(p, "protocol") or "TCP").upper() != "TCP":
            return False
        if first is None:
            return True
        if str(first) == "https":
            return port == 443
        try:
            return int(first) <= port <= int(end if end is not None else first)
        except (TypeError, ValueError):
            return False

    def outside(t: Any) -> bool:  # an address block that reaches past private ranges
        cidr = get_path(t, "ipBlock", "cidr")
        try:
            net = ipaddress.ip_network(str(cidr), strict=False)
        except ValueError:
            return False
        return not net.is_private

    return (not ports or any(covers(p) for p in ports)) and (not to or any(outside(t) for t in to))


def _fleet_egress(view: StackView) -> Iterator[tuple[str, str | None]]:
    seen: set[str] = set()
    for c, process in app_containers(view):
        if (
            c.platform != "kubernetes"
            or c.init
            or Env.FLEET_SITES.value not in c.env
            or c.resource.urn in seen
        ):
            continue
        seen.add(c.resource.urn)
        policies = egress_policies(view, c.resource)
        if policies and not any(
            https_out(rule) for p in policies for rule in as_list(get_path(p.props, "spec", "egress"))
        ):
            names = ", ".join(repr(str(get_path(p.props, "metadata", "name") or p.name)) for p in policies)
            yield (
                f"{c.label} ({process or 'app'}) calls the fleet's other sites ({Env.FLEET_SITES.value}) "
                f"over HTTPS, but the NetworkPolicies restricting its pods' egress ({names}) admit no "
                "TCP 443 out of the cluster: its writes could never reach a majority",
                c.resource.urn,
            )


RULES = [
    Rule(
        "skyfleet-workload-permissions",
        "Each app workload's identity is granted what its queue and secret adapters call at start, "
        "readiness and work, on the resources it calls them on.",
        Severity.HIGH,
        Controls(nist=("AC-3", "AC-6"), soc2=("CC6.1", "CC6.3"), pci=("7.2.1",)),
        "Grant the listed permissions to the named identity on the named resource (IAM policy on the task "
        "or execution role; a role on the topic, subscription or secret for the service account; the "
        "subjects in the NATS user's permissions from agent_app.queues.permissions.nats_permissions).",
        stack_check=_permissions,
        group=SKYFLEET,
    ),
    Rule(
        "skyfleet-fleet-egress",
        "Each workload of a fleet site may reach the other sites over HTTPS.",
        Severity.HIGH,
        Controls(nist=("SC-7",), soc2=("A1.2",)),
        "Add an egress rule to the NetworkPolicy selecting the api and worker pods admitting TCP 443 to an "
        "ipBlock outside the cluster (0.0.0.0/0 except private ranges, or the other sites' addresses).",
        stack_check=_fleet_egress,
        group=SKYFLEET,
    ),
]
