"""Rules that span clouds: required tags/labels, allowed regions, deletion protection of data
stores in prod, guessable database passwords, and Skyfleet's site parity (every site provides LB,
cache, queue and DLQ; Skyfleet programs only)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import Severity

from agent_app.contract import ContractError, Env, NatsQueue, parse_queue_url

from ._docs import DocumentError, load_json
from ._plan import Container, plan_containers, secret_value
from ._rule import SKYFLEET, Controls, Rule, StackView, Subject, as_list, get_path, norm, truthy
from ._secrets import is_credential_name, weak_password
from .aws_sqs import QUEUE, dead_letter_targets
from .kubernetes import NAMESPACE, WORKLOADS, containers, pod_spec

AWS_TAGGABLE = (
    "aws:ec2/vpc:Vpc",
    "aws:ec2/subnet:Subnet",
    "aws:ec2/securityGroup:SecurityGroup",
    "aws:ec2/internetGateway:InternetGateway",
    "aws:ec2/natGateway:NatGateway",
    "aws:ec2/eip:Eip",
    "aws:ec2/routeTable:RouteTable",
    "aws:lb/loadBalancer:LoadBalancer",
    "aws:lb/targetGroup:TargetGroup",
    "aws:lb/listener:Listener",
    "aws:ecs/cluster:Cluster",
    "aws:ecs/service:Service",
    "aws:ecs/taskDefinition:TaskDefinition",
    "aws:elasticache/replicationGroup:ReplicationGroup",
    "aws:elasticache/subnetGroup:SubnetGroup",
    "aws:sqs/queue:Queue",
    "aws:s3/bucket:Bucket",
    "aws:cloudwatch/logGroup:LogGroup",
    "aws:cloudwatch/metricAlarm:MetricAlarm",
    "aws:kms/key:Key",
    "aws:secretsmanager/secret:Secret",
    "aws:iam/role:Role",
    "aws:iam/policy:Policy",
    "aws:acm/certificate:Certificate",
    "aws:route53/healthCheck:HealthCheck",
    "aws:appautoscaling/target:Target",
)
GCP_LABELLED = (
    "gcp:cloudrunv2/service:Service",
    "gcp:redis/instance:Instance",
    "gcp:pubsub/topic:Topic",
    "gcp:pubsub/subscription:Subscription",
    "gcp:secretmanager/secret:Secret",
    "gcp:compute/globalAddress:GlobalAddress",
    "gcp:compute/globalForwardingRule:GlobalForwardingRule",
)
K8S_LABELLED = (
    *WORKLOADS,
    *NAMESPACE,
    "kubernetes:core/v1:Service",
    "kubernetes:networking.k8s.io/v1:Ingress",
)
DEFAULT_REQUIRED = ["owner", "environment", "cost-center", "app"]
# Kubernetes recommended labels that carry the same meaning as our keys.
K8S_ALIASES = {"app": ("app.kubernetes.io/name", "app.kubernetes.io/part-of")}


def _norm(key: str) -> str:
    return key.lower().replace("-", "").replace("_", "")


def _provider_defaults(s: Subject, key: str, inner: str | None) -> Mapping[str, Any]:
    """Tags/labels a provider adds to every resource (its config values arrive JSON-encoded)."""
    if s.provider is None:
        return {}
    value = s.provider.props.get(key)
    if not value:
        return {}
    try:
        doc = load_json(value, f"provider {key}")
    except DocumentError:
        return {}
    found = doc.get(inner) if inner and isinstance(doc, dict) else doc
    return found if isinstance(found, dict) else {}


def _missing(present: Mapping[str, Any], required: list[str]) -> list[str]:
    have = {_norm(k) for k, v in present.items() if v not in (None, "")}
    missing = []
    for key in required:
        aliases = K8S_ALIASES.get(key, ())
        if _norm(key) not in have and not any(a in present for a in aliases):
            missing.append(key)
    return missing


def _internal_range(s: Subject) -> bool:
    """A reserved internal range (VPC peering, Private Service Connect): nothing to allocate cost to."""
    return (
        s.type == "gcp:compute/globalAddress:GlobalAddress" and norm(s.props.get("addressType")) == "internal"
    )


def _tag_check(props_key: str, provider_key: str, inner: str | None, what: str):
    def check(s: Subject) -> Iterator[str]:
        if _internal_range(s):
            return
        own = s.props.get(props_key) if props_key != "metadata" else get_path(s.props, "metadata", "labels")
        present = {**_provider_defaults(s, provider_key, inner), **(own or {})}
        missing = _missing(present, list(s.config.get("requiredTags") or DEFAULT_REQUIRED))
        if missing:
            yield f"missing {what}: {', '.join(missing)}"

    return check


_TAG_CONFIG = {"requiredTags": {"type": "array", "items": {"type": "string"}, "default": DEFAULT_REQUIRED}}
_TAG_CONTROLS = Controls(nist=("CM-8", "PM-5"), soc2=("CC6.1", "CC3.2"), pci=("12.5.1",))

# Regions, and the multi- and dual-region locations that keep data within them.
DEFAULT_REGIONS = [
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "eu-north-1",
    "us-central1",
    "us-east1",
    "us-west1",
    "europe-west1",
    "europe-west4",
    "europe-north1",
    "eu",
    "europe",
    "us",
    "eur4",
    "nam4",
    "global",
]
# GCP multi- and dual-region locations and the regions they span (for messages).
MULTI_REGIONS = {
    "eu": "EU member-state regions",
    "europe": "European regions",
    "us": "US regions",
    "asia": "Asian regions",
    "eur4": "europe-north1 + europe-west4",
    "eur5": "europe-west1 + europe-west2",
    "eur7": "europe-west2 + europe-west3",
    "eur8": "europe-west3 + europe-west6",
    "nam4": "us-central1 + us-east1",
    "asia1": "asia-northeast1 + asia-northeast2",
}


def _region_of(s: Subject) -> str | None:
    for key in ("region", "location", "zone", "availabilityZone"):
        value = s.props.get(key)
        if isinstance(value, str) and value:
            return value
    if s.provider is not None:
        for key in ("region", "zone"):
            value = s.provider.props.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def region_base(location: str) -> str:
    """A zone's region (europe-west1-b -> europe-west1, eu-west-1a -> eu-west-1), lower-cased."""
    loc = location.strip().lower()
    if re.fullmatch(r"[a-z]+-[a-z]+\d+-[a-z]", loc):  # GCP zone
        return loc.rsplit("-", 1)[0]
    if re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d[a-z]", loc):  # AWS availability zone
        return loc[:-1]
    return loc


def _regions(s: Subject) -> Iterator[str]:
    location = _region_of(s)
    if location is None:
        return
    allowed = [str(r).strip().lower() for r in (s.config.get("allowedRegions") or DEFAULT_REGIONS)]
    base = region_base(location)
    if base in allowed:
        return
    what = (
        f"multi-region {location} ({MULTI_REGIONS[base]})" if base in MULTI_REGIONS else f"region {location}"
    )
    yield f"{what} is not allowed; allowed: {', '.join(allowed)}"


DATA_STORES = (
    "aws:rds/instance:Instance",
    "aws:rds/cluster:Cluster",
    "aws:docdb/cluster:Cluster",
    "aws:neptune/cluster:Cluster",
    "aws:redshift/cluster:Cluster",
    "aws:dynamodb/table:Table",
    "aws:elasticache/replicationGroup:ReplicationGroup",
    "aws:s3/bucket:Bucket",
    "aws:s3/bucketV2:BucketV2",
    "gcp:sql/databaseInstance:DatabaseInstance",
    "gcp:redis/instance:Instance",
    "gcp:storage/bucket:Bucket",
    "gcp:bigquery/dataset:Dataset",
    "gcp:bigquery/table:Table",
    "gcp:spanner/instance:Instance",
    "kubernetes:apps/v1:StatefulSet",
)


def _deletion_protection(s: Subject) -> Iterator[str]:
    if s.protect:
        return
    p = s.props
    t = s.type
    if t.startswith(("aws:rds/", "aws:docdb/", "aws:neptune/")) or t in (
        "gcp:redis/instance:Instance",
        "gcp:spanner/instance:Instance",
    ):
        ok, fix = truthy(p.get("deletionProtection")), "deletionProtection=true"
    elif t == "aws:redshift/cluster:Cluster":
        ok, fix = not truthy(p.get("skipFinalSnapshot")), "skipFinalSnapshot=false with a final snapshot"
    elif t == "aws:dynamodb/table:Table":
        ok, fix = truthy(p.get("deletionProtectionEnabled")), "deletionProtectionEnabled=true"
    elif t == "aws:elasticache/replicationGroup:ReplicationGroup":
        ok, fix = (
            bool(p.get("finalSnapshotIdentifier")),
            "finalSnapshotIdentifier (a last snapshot on delete)",
        )
    elif t in ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2", "gcp:storage/bucket:Bucket"):
        ok, fix = not truthy(p.get("forceDestroy")), "forceDestroy=false"
    elif t == "gcp:bigquery/dataset:Dataset":
        ok, fix = not truthy(p.get("deleteContentsOnDestroy")), "deleteContentsOnDestroy=false"
    elif t in ("gcp:sql/databaseInstance:DatabaseInstance", "gcp:bigquery/table:Table"):
        ok, fix = p.get("deletionProtection") is not False, "deletionProtection=true"
    elif t == "kubernetes:apps/v1:StatefulSet":
        when = get_path(p, "spec", "persistentVolumeClaimRetentionPolicy", "whenDeleted") or "Retain"
        ok, fix = norm(when) == "retain", "persistentVolumeClaimRetentionPolicy.whenDeleted=Retain"
    else:
        ok, fix = False, "the protect=True resource option"
    if not ok:
        yield f"prod data store is not deletion-protected: set {fix} (or protect=True)"


# Password fields of managed databases; a credential written into the program is in its history.
PASSWORD_FIELDS = {
    "aws:rds/instance:Instance": ("password",),
    "aws:rds/cluster:Cluster": ("masterPassword",),
    "aws:redshift/cluster:Cluster": ("masterPassword",),
    "aws:docdb/cluster:Cluster": ("masterPassword",),
    "aws:elasticache/replicationGroup:ReplicationGroup": ("authToken",),
    "aws:mq/broker:Broker": ("users",),
    "gcp:sql/user:User": ("password",),
    "gcp:sql/databaseInstance:DatabaseInstance": ("rootPassword",),
    "kubernetes:core/v1:Secret": ("stringData", "data"),
}


def _secret_entries(s: Subject, key: str) -> list[tuple[str, Any]]:
    """(where, value) of the credential-named entries of a Kubernetes Secret (data decoded)."""
    entries = s.props.get(key) or {}
    out = []
    for name in entries if hasattr(entries, "keys") else []:
        if is_credential_name(str(name)):
            value = entries[name]
            if key == "data" and isinstance(value, str):
                try:
                    value = base64.b64decode(value, validate=True).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError, ValueError):
                    continue
            out.append((f"{key}.{name}", value))
    return out


def _weak_passwords(s: Subject) -> Iterator[str]:
    for key in PASSWORD_FIELDS[s.type]:
        if s.type == "kubernetes:core/v1:Secret":
            values = _secret_entries(s, key)
        elif key == "users":
            values = [(key, get_path(u, "password")) for u in as_list(s.props.get(key))]
        else:
            values = [(key, s.props.get(key))]
        for where, value in values:
            why = weak_password(value)
            if why is not None:
                yield (
                    f"{where} is guessable ({why}); generate it (random.RandomPassword) or let the "
                    "service manage it"
                )


# -- site parity ------------------------------------------------------------------------------


def _k8s_images(view: StackView) -> list[tuple[Any, str]]:
    return [
        (w, str(c.get("image") or "").rsplit("/", 1)[-1])
        for w in view.of_type(*WORKLOADS)
        for c in containers(pod_spec(w.resource_type, w.props), False)
    ]


def _aws_parts(view: StackView) -> dict[str, bool]:
    queues = view.of_type(*QUEUE)
    targets = dead_letter_targets(view)
    return {
        "load balancer": view.has_type(
            "aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer"
        ),
        "cache": view.has_type("aws:elasticache/replicationGroup:ReplicationGroup"),
        "queue": bool(targets),
        "dead-letter queue": any(view.ids_of(q) & targets for q in queues),
    }


def _gcp_parts(view: StackView) -> dict[str, bool]:
    subs = view.of_type("gcp:pubsub/subscription:Subscription")
    return {
        "load balancer": view.has_type(
            "gcp:compute/globalForwardingRule:GlobalForwardingRule",
            "gcp:compute/forwardingRule:ForwardingRule",
        ),
        "cache": view.has_type("gcp:redis/instance:Instance"),
        "queue": view.has_type("gcp:pubsub/topic:Topic") and bool(subs),
        "dead-letter queue": any(get_path(s.props, "deadLetterPolicy", "deadLetterTopic") for s in subs),
    }


def _k8s_parts(view: StackView) -> dict[str, bool]:
    # The dead-letter queue is judged per workload, against its queue URL (_k8s_dead_letters).
    images = [i for _, i in _k8s_images(view)]
    services = view.of_type("kubernetes:core/v1:Service")
    return {
        "load balancer": view.has_type("kubernetes:networking.k8s.io/v1:Ingress")
        or any(get_path(s.props, "spec", "type") == "LoadBalancer" for s in services),
        "cache": any(i.startswith(("redis", "valkey")) for i in images),
        "queue": any(i.startswith(("nats", "rabbitmq", "kafka")) for i in images),
    }


def _streams(view: StackView) -> list[tuple[str, list[str]]]:
    """JetStream streams the stack declares: (name, subjects) of every StreamConfig JSON document
    (an object with a "subjects" list) held in a ConfigMap, as the stream setup Job applies them."""
    found = []
    for cm in view.of_type("kubernetes:core/v1:ConfigMap"):
        data = cm.props.get("data")
        if not isinstance(data, Mapping):
            continue
        for key in data:
            try:
                doc = json.loads(str(data[key]))
            except ValueError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("subjects"), list):
                found.append((str(doc.get("name") or ""), [str(x) for x in doc["subjects"]]))
    return found


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def _queue_url(view: StackView, c: Container) -> str | None:
    """The container's AGENT_QUEUE_URL, literal or from a Secret the stack holds (None: unknown)."""
    value = c.env.get(Env.QUEUE_URL.value)
    if value is None:
        return None
    if value.kind == "secret" and value.secret is not None:
        return secret_value(view, value.secret)
    return value.value if value.kind == "value" else None


def _k8s_dead_letters(view: StackView) -> dict[str, str | None]:
    """URN of each workload whose AGENT_QUEUE_URL is a NATS queue -> the problem when no stream
    other than the task stream takes the URL's dead-letter subject (None: one does). Without a
    known URL the dead-letter subject is unknown; an app container without one is
    skyfleet-app-env's finding."""
    streams: list[tuple[str, list[str]]] | None = None
    out: dict[str, str | None] = {}
    for c in plan_containers(view, ("kubernetes",)):
        url = _queue_url(view, c)
        if not url:
            continue
        try:
            queue = parse_queue_url(url)
        except ContractError:
            continue  # skyfleet-app-env reports it
        if not isinstance(queue, NatsQueue):
            continue
        streams = _streams(view) if streams is None else streams
        kept = any(
            name != queue.stream and any(subject_matches(s, queue.dlq_subject) for s in subjects)
            for name, subjects in streams
        )
        problem = (
            None
            if kept
            else (
                f"the kubernetes site provides no dead-letter queue: {c.resource.name!r} dead-letters to "
                f"subject {queue.dlq_subject!r} ({Env.QUEUE_URL.value}), which no stream the stack declares "
                f"takes besides the task stream {queue.stream!r}"
            )
        )
        if out.get(c.resource.urn) is None:
            out[c.resource.urn] = problem
    return out


def _site_parity(view: StackView) -> Iterator[tuple[str, str | None]]:
    sites = []
    if view.has_type("aws:ecs/service:Service"):
        sites.append(("aws", _aws_parts(view)))
    if view.has_type("gcp:cloudrunv2/service:Service"):
        sites.append(("gcp", _gcp_parts(view)))
    if view.has_type("kubernetes:apps/v1:Deployment"):
        sites.append(("kubernetes", _k8s_parts(view)))
    for target, parts in sites:
        missing = [name for name, present in parts.items() if not present]
        if missing:
            yield f"the {target} site provides no {', '.join(missing)}", None
    if view.has_type("kubernetes:apps/v1:Deployment"):
        # The dead-letter queue is the stream that takes the dead-letter subject of the app's
        # queue URL, not a ConfigMap that mentions "dlq".
        for urn, problem in _k8s_dead_letters(view).items():
            if problem is not None:
                yield problem, urn


RULES = [
    Rule(
        "aws-required-tags",
        "Taggable AWS resources carry the owner, environment, cost-center and app tags "
        "(directly or through the provider's defaultTags).",
        Severity.LOW,
        _TAG_CONTROLS,
        "Set the provider's default_tags (or tags) with owner, environment, cost-center and app.",
        AWS_TAGGABLE,
        _tag_check("tags", "defaultTags", "tags", "tags"),
        config=_TAG_CONFIG,
    ),
    Rule(
        "gcp-required-labels",
        "Labelled GCP resources carry the owner, environment, cost-center and app "
        "labels (directly or through the provider's defaultLabels).",
        Severity.LOW,
        _TAG_CONTROLS,
        "Set the provider's default_labels (or labels) with owner, environment, cost-center and app.",
        GCP_LABELLED,
        _tag_check("labels", "defaultLabels", None, "labels"),
        config=_TAG_CONFIG,
    ),
    Rule(
        "k8s-required-labels",
        "Kubernetes workloads, namespaces, services and ingresses carry the owner, "
        "environment, cost-center and app labels.",
        Severity.LOW,
        _TAG_CONTROLS,
        "Add the labels to metadata.labels (app may be app.kubernetes.io/name).",
        K8S_LABELLED,
        _tag_check("metadata", "", None, "labels"),
        config=_TAG_CONFIG,
    ),
    Rule(
        "allowed-regions",
        "AWS and GCP resources are created only in allowed regions.",
        Severity.MEDIUM,
        Controls(nist=("SA-9(5)", "SC-7"), soc2=("CC6.1", "P4.1"), pci=("12.5.2",)),
        "Deploy to an allowed region, or add the region to allowedRegions in the policy config after a "
        "data-residency review.",
        ("aws:*", "gcp:*"),
        _regions,
        config={"allowedRegions": {"type": "array", "items": {"type": "string"}, "default": DEFAULT_REGIONS}},
    ),
    Rule(
        "stateful-deletion-protection",
        "Stateful data stores are deletion-protected in prod.",
        Severity.HIGH,
        Controls(nist=("CP-9", "CP-10", "SI-12"), soc2=("A1.2", "CC6.5")),
        "Turn on the service's deletion protection (or a final snapshot), or set protect=True.",
        DATA_STORES,
        _deletion_protection,
        prod_only=True,
        checkov=("CKV_AWS_293", "CKV_AWS_139", "CKV2_AWS_58", "CKV_GCP_121"),
    ),
    Rule(
        "database-password-strength",
        "Passwords the program sets (databases, caches, brokers, Kubernetes Secrets) are not guessable.",
        Severity.HIGH,
        Controls(nist=("IA-5(1)",), soc2=("CC6.1",), pci=("8.3.6",)),
        "Generate the password (random.RandomPassword, stored as a secret) or let the service manage it "
        "(manage_master_user_password=True on RDS).",
        tuple(PASSWORD_FIELDS),
        _weak_passwords,
    ),
    Rule(
        "site-parity",
        "Every site provides a load balancer, a cache, a queue and a dead-letter queue (on Kubernetes: a "
        "stream that takes the dead-letter subject of the app's NATS queue URL).",
        Severity.HIGH,
        Controls(nist=("CP-2", "CP-10"), soc2=("A1.2",)),
        "Add the missing capability with the target's component (infra/<target>) so failover lands on an "
        "equivalent site.",
        stack_check=_site_parity,
        group=SKYFLEET,
    ),
]
