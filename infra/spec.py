"""The typed stack spec: everything a stack's ``skyfleet:`` config may say, validated before
any resource is registered.

One model serves every target. Keys are camelCase in ``Pulumi.<stack>.yaml`` (Pulumi's
convention) and snake_case in code. Unknown keys are errors, so a typo never silently falls
back to a default. Dev and prod get different defaults; an explicit value always wins, but
prod refuses values that would make it fragile (one replica, no HA cache).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from agent_app.contract import (
    FLEET_KEY_MIN_LENGTH,
    PLATFORM_ENV,
    SECRET_ENV,
    SHUTDOWN_EXIT_SECONDS,
    Env,
    api_keys,
    fleet_sites_value,
)

NAMESPACE = "skyfleet"

# Config keys (top level, in the skyfleet: namespace) that must be Pulumi secrets.
SECRET_KEYS: frozenset[str] = frozenset({"apiKeys", "modelApiKey", "fleetKey"})


# A site's name is part of its resources' physical names, so it must fit the strictest of them:
# lower-case letters, digits and single hyphens (ElastiCache refuses "--"), starting with a letter
# and ending with a letter or digit. At most 23 characters keeps every derived id whole: the
# ElastiCache replication group id skyfleet-<site>-cache (at most 40), the GCP service account id
# <site>-worker (6 to 30), the Memorystore instance <site>-sessions (at most 40). The S3 bucket for
# the ALB's logs (skyfleet-<site>-alb-logs-<account>-<region>, at most 63) is cut at 63, without
# a trailing hyphen, when a long site name meets a long region.
SITE_NAME_MIN_LENGTH = 3
SITE_NAME_MAX_LENGTH = 23
_SITE_NAME_RE = re.compile(r"[a-z](?:-?[a-z0-9])+")


def _region(cloud: str, form: str, example: str) -> Callable[[str], str]:
    """A validator of a region name of ``cloud`` (its form, not its existence: every resource
    name and endpoint is built from it)."""
    pattern = re.compile(form)

    def check(v: str) -> str:
        if not pattern.fullmatch(v):
            raise ValueError(f"a region name such as {example} ({cloud})")
        return v

    return check


class Target(StrEnum):
    AWS = "aws"
    GCP = "gcp"
    ONPREM = "onprem"
    EDGE = "edge"


SITE_TARGETS = (Target.AWS, Target.GCP, Target.ONPREM)


class Environment(StrEnum):
    DEV = "dev"
    PROD = "prod"


class Routing(StrEnum):
    """How the edge (and the lab's front door) spreads traffic over sites."""

    FAILOVER = "failover"  # active-passive: the lowest priority healthy site takes all
    WEIGHTED = "weighted"  # active-active: healthy sites share by weight
    # Active-active: every healthy site's addresses in each answer, so a client that cannot
    # connect to one tries the next (Route 53 multivalue answers).
    MULTIVALUE = "multivalue"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=False, frozen=True)


# --- App -------------------------------------------------------------------------------

# Immutable references only: a digest, or a tag that is not a moving one.
_IMAGE_RE = re.compile(
    r"^(?P<repo>[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
_MOVING_TAGS = {"latest", "main", "master", "stable", "edge", "dev", "prod", "nightly"}
_SECRET_NAME_RE = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|CREDENTIAL)", re.I)
# Variables the platform sets (plain or from its secret store): neither app.env nor app.secrets
# may name them.
_PLATFORM_VARS: frozenset[str] = frozenset(e.value for e in PLATFORM_ENV | SECRET_ENV)
# Where a stack sets what the platform derives a variable from, for the error that refuses it.
_PLATFORM_SOURCES: dict[str, str] = {
    Env.RATE_LIMIT_PER_MINUTE.value: "app.rateLimitPerMinute, or fleet.rateLimitPerMinute in a fleet",
    Env.TASK_LEASE_SECONDS.value: "queue.visibilityTimeoutSeconds, which the queue redelivers after",
    Env.MODEL_API_KEY.value: "the modelApiKey secret",
    Env.FLEET_KEY.value: "the fleetKey secret",
    Env.API_KEYS.value: "the apiKeys secret",
    Env.API_KEYS_FILE.value: "the apiKeys secret",
}


def _platform_set(names: list[str], section: str) -> str:
    """The error for variables of ``names`` the platform sets itself."""
    parts = [
        f"{n} is set by the platform" + (f" (from {_PLATFORM_SOURCES[n]})" if n in _PLATFORM_SOURCES else "")
        for n in names
    ]
    return f"{'; '.join(parts)}; remove {'it' if len(names) == 1 else 'them'} from {section}"


class Replicas(_Model):
    min: int = Field(ge=0, le=100)
    max: int = Field(ge=1, le=500)

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be >= min ({self.min})")
        return self


class Autoscaling(_Model):
    cpu_target_percent: int = Field(default=60, ge=10, le=95)
    requests_per_target: int = Field(default=200, ge=1, le=100_000)
    queue_messages_per_worker: int = Field(default=20, ge=1, le=10_000)


DEFAULT_RATE_LIMIT_PER_MINUTE = 120


class AppSpec(_Model):
    image: str = Field(description="container image pinned by digest or an immutable tag")
    cpu: int = Field(
        default=512,
        ge=256,
        le=4096,
        description="CPU units, 1024 per vCPU (Fargate's); Kubernetes takes them as millicores, Cloud "
        "Run rounds them up to whole vCPUs",
    )
    memory: int = Field(default=1024, ge=512, le=30720, description="MiB")
    replicas: Replicas
    worker_replicas: Replicas
    autoscaling: Autoscaling = Autoscaling()
    env: dict[str, str] = Field(default_factory=dict)
    # env var name -> name of a secret config key (one of SECRET_KEYS)
    secrets: dict[str, str] = Field(default_factory=dict)
    # A site of a fleet takes the fleet's (fleet.rateLimitPerMinute): see SiteStack.rate_limit_per_minute.
    rate_limit_per_minute: int = Field(default=DEFAULT_RATE_LIMIT_PER_MINUTE, ge=1, le=1_000_000)

    @field_validator("image")
    @classmethod
    def _pinned(cls, v: str) -> str:
        m = _IMAGE_RE.match(v)
        if not m:
            raise ValueError("not a valid image reference (registry/repo[:tag][@sha256:<64 hex>])")
        tag, digest = m.group("tag"), m.group("digest")
        if not digest and not tag:
            raise ValueError("image must be pinned by digest (@sha256:...) or an immutable tag")
        if not digest and tag in _MOVING_TAGS:
            raise ValueError(f"tag {tag!r} moves; pin by digest or an immutable (version) tag")
        return v

    @field_validator("env")
    @classmethod
    def _plain_env(cls, v: dict[str, str]) -> dict[str, str]:
        reserved = sorted(k for k in v if k in _PLATFORM_VARS)
        if reserved:
            raise ValueError(_platform_set(reserved, "app.env"))
        secretish = sorted(k for k in v if _SECRET_NAME_RE.search(k))
        if secretish:
            raise ValueError(
                f"{', '.join(secretish)} looks like a secret; put it in a secret config key and "
                "reference it from app.secrets"
            )
        bad = sorted(k for k in v if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", k))
        if bad:
            raise ValueError(f"{', '.join(bad)}: env names must be UPPER_SNAKE_CASE")
        # The app ignores variables it does not read: a misspelt AGENT_ name would silently
        # fall back to a default.
        known = {e.value for e in Env}
        unknown = sorted(k for k in v if k.startswith("AGENT_") and k not in known)
        if unknown:
            readable = sorted(known - _PLATFORM_VARS)
            raise ValueError(f"{', '.join(unknown)}: the app reads no such variable; it reads {readable}")
        model = v.get(Env.MODEL_BASE_URL.value)
        if model is not None:
            # Every target lets its app out to the internet on HTTPS (443) only: a model API
            # elsewhere would time out at its first call, after the deploy succeeded.
            parts = urlsplit(model)
            try:
                port = parts.port
            except ValueError:
                port = -1
            if parts.scheme != "https" or not parts.hostname or port not in (None, 443):
                raise ValueError(
                    f"{Env.MODEL_BASE_URL.value}: given {model!r}; expected an https:// URL on port 443 "
                    "(the sites' egress admits HTTPS on 443 only)"
                )
        return v

    @field_validator("secrets")
    @classmethod
    def _secret_refs(cls, v: dict[str, str]) -> dict[str, str]:
        # The platform injects its own variables (the client keys, the fleet key, the model key,
        # the cache and broker passwords) from the matching secret; an entry here would replace one.
        reserved = sorted(k for k in v if k in _PLATFORM_VARS)
        if reserved:
            raise ValueError(_platform_set(reserved, "app.secrets"))
        bad = sorted(k for k in v if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", k))
        if bad:
            raise ValueError(f"{', '.join(bad)}: env names must be UPPER_SNAKE_CASE")
        unknown = sorted(f"{k}: {s}" for k, s in v.items() if s not in SECRET_KEYS)
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: a secret must be one of {sorted(SECRET_KEYS)}")
        return v

    @model_validator(mode="after")
    def _env_or_secret(self) -> AppSpec:
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"{', '.join(both)} is in both app.env and app.secrets; keep one")
        return self


# --- Cache and queue ---------------------------------------------------------------------


class CacheSpec(_Model):
    size_gb: float = Field(
        default=1,
        ge=0.5,
        le=300,
        description="memory for the sessions (GB): AWS and on-prem add the server's reserve for forks and "
        "buffers on top; on GCP, the Memorystore instance's capacity",
    )
    node_type: str | None = Field(default=None, description="AWS node type; derived from size if unset")
    ha: bool
    tls: Literal[True] = Field(default=True, description="always on; a plain-text cache is refused")
    engine_version: str = "7.1"
    snapshot_retention_days: int = Field(default=1, ge=0, le=35)


class QueueSpec(_Model):
    max_delivery_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="runs of a task before it is dead-lettered; each broker is set to deliver once more, "
        "for a worker lost during the last (GCP: 4..99, Pub/Sub allowing 5..100 deliveries)",
    )
    retention_seconds: int = Field(default=4 * 24 * 3600, ge=600, le=14 * 24 * 3600)
    dlq_retention_seconds: int = Field(default=14 * 24 * 3600, ge=600, le=14 * 24 * 3600)
    visibility_timeout_seconds: int = Field(default=60, ge=10, le=600)
    # GCP Pub/Sub: exactly-once delivery on the task subscription (the app is idempotent anyway).
    exactly_once_delivery: bool = False


# --- Network, domain, tags, policy --------------------------------------------------------


class NetworkSpec(_Model):
    vpc_cidr: str = "10.40.0.0/16"
    public_subnet_cidrs: list[str] = ["10.40.0.0/22", "10.40.4.0/22"]
    private_subnet_cidrs: list[str] = ["10.40.64.0/19", "10.40.96.0/19"]
    # GCP: the private services range Memorystore peers into.
    services_cidr: str = "10.41.0.0/20"

    @field_validator("vpc_cidr", "services_cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        ipaddress.ip_network(v, strict=True)
        return v

    @field_validator("public_subnet_cidrs", "private_subnet_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for c in v:
            ipaddress.ip_network(c, strict=True)
        return v

    @model_validator(mode="after")
    def _inside_vpc(self) -> NetworkSpec:
        vpc = ipaddress.ip_network(self.vpc_cidr)
        subnets = [ipaddress.ip_network(c) for c in self.public_subnet_cidrs + self.private_subnet_cidrs]
        outside = [str(s) for s in subnets if not s.subnet_of(vpc)]  # type: ignore[arg-type]
        if outside:
            raise ValueError(f"subnets {outside} are not inside vpcCidr {self.vpc_cidr}")
        for i, a in enumerate(subnets):
            for b in subnets[i + 1 :]:
                if a.overlaps(b):
                    raise ValueError(f"subnets {a} and {b} overlap")
        return self


# Kubernetes label syntax: a name (also a value's), and the DNS subdomain a key may be prefixed by.
LABEL_NAME = re.compile(r"(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_FQDN_RE = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")


class DomainSpec(_Model):
    name: str = Field(description="the site's public host name, e.g. aws.agents.example.com")
    aliases: list[str] = Field(
        default_factory=list,
        description="other names clients reach this site by: the edge's global name (its "
        "certificate and host rules cover them too)",
    )
    zone_id: str | None = Field(default=None, description="Route 53 zone for DNS validation (aws)")
    certificate_arn: str | None = Field(default=None, description="an existing ACM certificate (aws)")

    @field_validator("name")
    @classmethod
    def _fqdn(cls, v: str) -> str:
        if not _FQDN_RE.fullmatch(v):
            raise ValueError("must be a lower-case fully qualified domain name")
        return v

    @field_validator("aliases")
    @classmethod
    def _fqdns(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not _FQDN_RE.fullmatch(a)]
        if bad:
            raise ValueError(f"{bad} are not lower-case fully qualified domain names")
        if len(set(v)) != len(v):
            raise ValueError(f"names must be unique, got {v}")
        return v

    @property
    def host_names(self) -> list[str]:
        """Every name clients may use to reach the site: its own first."""
        return [self.name, *(a for a in self.aliases if a != self.name)]


class Tags(_Model):
    owner: str = Field(min_length=1)
    cost_center: str = Field(min_length=1)
    app: str = "agent-app"


class Exclusion(_Model):
    rule: str
    resource: str = Field(description="glob over resource names")
    justification: str = Field(min_length=10)


class PolicySpec(_Model):
    profile: Environment | None = Field(default=None, description="defaults to the environment")
    overrides: dict[str, Literal["advisory", "mandatory", "disabled"]] = Field(default_factory=dict)
    exclusions: list[Exclusion] = Field(default_factory=list)


# --- Targets --------------------------------------------------------------------------------


class ClusterSpec(_Model):
    """An on-prem Kubernetes cluster, reached through a kubeconfig context."""

    context: str
    kubeconfig: str | None = Field(default=None, description="path; defaults to KUBECONFIG")
    namespace: str = "agent-app"
    ingress_class: str = "nginx"
    storage_class: str | None = None
    # Two issuers, because no one issuer can do both: in-cluster names (*.svc) can only be signed
    # by a private CA, and clients on the internet trust only a public CA.
    internal_issuer: str = Field(
        default="skyfleet-internal-ca",
        description="cert-manager ClusterIssuer (a CA issuer) for the Redis and NATS certificates",
    )
    ingress_issuer: str = Field(
        default="letsencrypt-dns01",
        description="cert-manager ClusterIssuer (publicly trusted; DNS-01 for names several sites "
        "serve) for the Ingress certificate",
    )
    # Name of the zone/topology label the scheduler spreads across.
    topology_key: str = "topology.kubernetes.io/zone"
    # Namespaces of the cluster's shared services the NetworkPolicies admit.
    ingress_namespace: str = "ingress-nginx"
    monitoring_namespace: str = "monitoring"
    # Data stores and tools, pinned to immutable version tags (mirror them for air-gapped sites).
    # The data stores' images need a shell with sha256sum, date, sleep and grep (the alpine
    # builds' busybox, which the tests run them on): their servers run through serve.sh
    # (infra/onprem/kube.py); Redis 7.0.1 or later.
    redis_image: str = "docker.io/library/redis:7.2.5-alpine"
    nats_image: str = "docker.io/library/nats:2.10.18-alpine"
    nats_box_image: str = "docker.io/natsio/nats-box:0.14.5"
    nats_exporter_image: str = "docker.io/natsio/prometheus-nats-exporter:0.15.0"
    queue_storage_gb: int = Field(default=10, ge=1, le=1000)
    # host:port of the cluster's log aggregator (fluent-bit forward protocol over TLS).
    log_forward: str = "log-aggregator.logging.svc:24224"
    monitoring_labels: dict[str, str] = Field(
        default_factory=dict,
        description="labels the cluster's Prometheus selects PodMonitors and PrometheusRules by "
        "(kube-prometheus-stack: release: <its Helm release name>)",
    )

    @field_validator("monitoring_labels")
    @classmethod
    def _monitoring_labels(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            prefix, slash, name = key.rpartition("/")
            if not LABEL_NAME.fullmatch(name) or (
                slash and (len(prefix) > 253 or not DNS_SUBDOMAIN.fullmatch(prefix))
            ):
                raise ValueError(
                    f"{key!r}: a label key is a name (63 characters or fewer: letters, digits, "
                    "'-', '_', '.', beginning and ending with a letter or digit), optionally "
                    "prefixed by a DNS subdomain and '/'"
                )
            if value and not LABEL_NAME.fullmatch(value):
                raise ValueError(
                    f"{key}: {value!r}: a label value is empty or 63 characters or fewer: letters, "
                    "digits, '-', '_', '.', beginning and ending with a letter or digit"
                )
            if key.startswith("app.kubernetes.io/"):
                raise ValueError(f"{key!r}: the app's own labels use this prefix; choose another key")
        return v

    @field_validator("namespace")
    @classmethod
    def _ns(cls, v: str) -> str:
        if v == "default":
            raise ValueError("the default namespace is not allowed; name one for the app")
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", v):
            raise ValueError("must be a DNS-1123 label")
        return v


class FleetSite(_Model):
    name: str = Field(min_length=1, max_length=64, description="the site's name (its stack's skyfleet:site)")
    host: str = Field(description="the site's regional host name (its domain.name), reached over HTTPS")

    @field_validator("host")
    @classmethod
    def _fqdn(cls, v: str) -> str:
        if not _FQDN_RE.fullmatch(v):
            raise ValueError("must be a lower-case fully qualified domain name")
        return v


class FleetSpec(_Model):
    """The sites that hold one another's sessions and tasks (``agent_app.fleet``). One
    definition, imported by every site stack of the fleet (a Pulumi ESC environment)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,30}$")
    replication: Literal["sync", "async"] = Field(
        default="sync",
        description="sync: a write is acknowledged once a majority of the sites hold it; async: at once",
    )
    sites: list[FleetSite] = Field(
        min_length=2, description="every site, in takeover order (a lost site's successor is the next one)"
    )
    # The client keys are the fleet's, so is their budget: a key's sessions move to another site
    # when theirs is lost, and a key within its budget must stay within it there.
    rate_limit_per_minute: int = Field(
        default=DEFAULT_RATE_LIMIT_PER_MINUTE,
        ge=1,
        le=1_000_000,
        description="every client API key's budget at each site of the fleet",
    )

    @model_validator(mode="after")
    def _sound(self) -> FleetSpec:
        names = [s.name for s in self.sites]
        hosts = [s.host for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError(f"site names must be unique, got {names}")
        if len(set(hosts)) != len(hosts):
            raise ValueError(f"site hosts must be unique, got {hosts}")
        if self.replication == "sync" and len(self.sites) < 3:
            raise ValueError(
                f"sync replication needs at least 3 sites (a majority must survive the loss of one), "
                f"got {len(self.sites)}"
            )
        return self

    def env_value(self) -> str:
        """``AGENT_FLEET_SITES``."""
        return fleet_sites_value([(s.name, f"https://{s.host}") for s in self.sites])


class EdgeSite(_Model):
    name: str
    stack: str = Field(description="fully qualified stack reference: org/skyfleet/<stack>")
    weight: int = Field(default=100, ge=0, le=255)
    priority: int = Field(default=1, ge=1, le=10, description="failover order; 1 is primary")


class HealthCheck(_Model):
    path: str = "/readyz"
    interval_seconds: Literal[10, 30] = 10  # the values Route 53 accepts
    failure_threshold: int = Field(default=3, ge=1, le=10)


class EdgeSpec(_Model):
    zone_id: str
    record_name: str
    routing: Routing = Routing.FAILOVER
    ttl: int = Field(default=30, ge=1, le=60)
    health_check: HealthCheck = HealthCheck()
    sites: list[EdgeSite] = Field(min_length=2)

    @model_validator(mode="after")
    def _unique(self) -> EdgeSpec:
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError(f"site names must be unique, got {names}")
        if self.routing is Routing.FAILOVER and not any(s.priority == 1 for s in self.sites):
            raise ValueError("failover routing needs one site with priority 1 (the primary)")
        if self.routing is Routing.MULTIVALUE:
            # Route 53 answers every healthy site's addresses, in random order: a weight or a
            # priority here would have no effect, so it is refused rather than ignored.
            ignored = [
                f"sites[{i}] ({s.name}): {key}"
                for i, s in enumerate(self.sites)
                for key in ("weight", "priority")
                if key in s.model_fields_set
            ]
            if ignored:
                raise ValueError(
                    "multivalue routing answers every healthy site alike; drop " + ", ".join(ignored)
                )
        return self


# Environment profiles: what an unset value means in dev and in prod.
PROFILES: dict[Environment, dict[str, Any]] = {
    Environment.DEV: {
        "replicas": {"min": 1, "max": 3},
        "workerReplicas": {"min": 1, "max": 2},
        "cache": {"ha": False, "sizeGb": 1, "snapshotRetentionDays": 0},
        "deletionProtection": False,
        "logRetentionDays": 14,
    },
    Environment.PROD: {
        "replicas": {"min": 2, "max": 20},
        "workerReplicas": {"min": 2, "max": 10},
        "cache": {"ha": True, "sizeGb": 5, "snapshotRetentionDays": 7},
        "deletionProtection": True,
        "logRetentionDays": 365,
    },
}


class _Stack(_Model):
    """What every stack has, whatever its target."""

    target: Target  # each target's model narrows it to its own value (the discriminator)
    environment: Environment
    tags: Tags
    policy: PolicySpec = PolicySpec()
    deletion_protection: bool
    log_retention_days: int = Field(ge=1, le=3653)

    @model_validator(mode="before")
    @classmethod
    def _profile_defaults(cls, data: Any) -> Any:
        """Fill unset values from the environment's profile before validation."""
        if not isinstance(data, dict):
            return data
        try:
            profile = PROFILES[Environment(data.get("environment"))]
        except (ValueError, KeyError):
            return data  # the field validator reports the bad environment
        out = dict(data)
        out.setdefault("deletionProtection", profile["deletionProtection"])
        out.setdefault("logRetentionDays", profile["logRetentionDays"])
        if issubclass(cls, SiteStack):
            app = out.get("app")
            if isinstance(app, dict):
                app = dict(app)
                app.setdefault("replicas", profile["replicas"])
                app.setdefault("workerReplicas", profile["workerReplicas"])
                out["app"] = app
            cache = out.get("cache", {})
            if isinstance(cache, dict):
                out["cache"] = {**profile["cache"], **cache}
        return out

    @property
    def policy_profile(self) -> Environment:
        return self.policy.profile or self.environment

    def labels(self) -> dict[str, str]:
        """Tags/labels for every taggable resource, in the form every cloud accepts."""
        return {
            "owner": self.tags.owner,
            "cost-center": self.tags.cost_center,
            "environment": self.environment.value,
            "app": self.tags.app,
            "managed-by": "skyfleet",
        }


class SiteStack(_Stack):
    """A site: the app with its load balancer, cache and queue, on one target."""

    site: str | None = Field(
        default=None,
        description=f"site name ({SITE_NAME_MIN_LENGTH}-{SITE_NAME_MAX_LENGTH} lower-case letters, digits "
        "and single hyphens); defaults to the target",
    )
    app: AppSpec = Field(description="an app section (at least app.image)")
    cache: CacheSpec
    queue: QueueSpec = QueueSpec()
    domain: DomainSpec = Field(description="a domain section (at least domain.name)")
    network: NetworkSpec = NetworkSpec()
    # Secrets (Pulumi secrets; see SECRET_KEYS). Values are wrapped, never printed.
    api_keys: str = Field(
        repr=False,
        description=f"a Pulumi secret: pulumi config set --secret {NAMESPACE}:apiKeys <keys>",
    )
    model_api_key: str | None = Field(default=None, repr=False)
    # The fleet this site belongs to, and the key its sites present to each other.
    fleet: FleetSpec | None = None
    fleet_key: str | None = Field(default=None, repr=False)

    # Seconds the platform waits between SIGTERM and SIGKILL; the app drains within it.
    stop_grace_seconds: ClassVar[int]

    @field_validator("site")
    @classmethod
    def _site_name(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not (SITE_NAME_MIN_LENGTH <= len(v) <= SITE_NAME_MAX_LENGTH) or not _SITE_NAME_RE.fullmatch(v):
            raise ValueError(
                f"{SITE_NAME_MIN_LENGTH}-{SITE_NAME_MAX_LENGTH} lower-case letters, digits and single "
                "hyphens, starting with a letter and ending with a letter or digit, e.g. aws-prod-eu "
                "(the site's name is part of its cloud resource ids: bucket, cache, service account)"
            )
        return v

    @field_validator("api_keys")
    @classmethod
    def _api_keys_the_app_accepts(cls, v: str) -> str:
        # The app's own reading of AGENT_API_KEYS; the message never holds a key.
        if not api_keys(v):
            raise ValueError("no key: give one or more, separated by commas or new lines")
        return v

    @field_validator("fleet_key")
    @classmethod
    def _fleet_key_length(cls, v: str | None) -> str | None:
        if v is not None and len(v) < FLEET_KEY_MIN_LENGTH:
            raise ValueError(
                f"at least {FLEET_KEY_MIN_LENGTH} characters (the app refuses a shorter "
                f"{Env.FLEET_KEY.value}); generate one with: openssl rand -hex 32"
            )
        return v

    @property
    def app_shutdown_grace(self) -> int:
        """The app's AGENT_SHUTDOWN_GRACE_SECONDS: the platform's wait less the seconds the
        process needs to exit after its own deadline (its watchdog, then the interpreter)."""
        return self.stop_grace_seconds - SHUTDOWN_EXIT_SECONDS

    @model_validator(mode="after")
    def _site_rules(self) -> SiteStack:
        problems: list[str] = []
        grace = self.app.env.get(Env.SHUTDOWN_GRACE_SECONDS.value, "")
        if grace.strip().isdigit() and int(grace) > self.app_shutdown_grace:
            problems.append(
                f"app.env.{Env.SHUTDOWN_GRACE_SECONDS.value} is {grace}; the {self.target.value} "
                f"platform kills the process {self.stop_grace_seconds} s after SIGTERM, so at "
                f"most {self.app_shutdown_grace}"
            )
        # The worker pulls its tasks and, in a fleet, the api takes a lost site's over: nothing
        # starts one when none runs (no platform scales on a message nobody receives).
        if self.app.worker_replicas.min < 1:
            problems.append(
                "app.workerReplicas.min is 0; the worker pulls its tasks and no platform starts one "
                "for a queued message, so at least 1"
            )
        if self.fleet is not None and self.app.replicas.min < 1:
            problems.append(
                "app.replicas.min is 0; in a fleet the api takes a lost site's tasks over without "
                "any request, so at least 1"
            )
        if self.environment is Environment.PROD:
            if self.app.replicas.min < 2:
                problems.append(f"app.replicas.min is {self.app.replicas.min}; prod needs >= 2")
            if not self.cache.ha:
                problems.append("cache.ha is false; prod needs an HA cache")
            if not self.deletion_protection:
                problems.append("deletionProtection is false; prod needs it")
        if self.fleet is not None:
            names = [s.name for s in self.fleet.sites]
            mine = next((s for s in self.fleet.sites if s.name == self.site_name), None)
            if mine is None:
                problems.append(f"fleet.sites lists {names}; this site ({self.site_name}) is not one of them")
            elif mine.host not in self.domain.host_names:
                problems.append(
                    f"fleet.sites names {mine.host} for {self.site_name}, which its certificate does not "
                    f"cover (domain: {self.domain.host_names})"
                )
            budget, own = self.fleet.rate_limit_per_minute, self.app.rate_limit_per_minute
            if "rate_limit_per_minute" in self.app.model_fields_set and own != budget:
                problems.append(
                    f"app.rateLimitPerMinute is {own}, but fleet "
                    f"{self.fleet.name!r} gives every client key {budget} per minute at each site "
                    "(fleet.rateLimitPerMinute): a key's sessions move between the sites, so its "
                    "budget is set once, in the fleet, and not here"
                )
            if self.fleet_key is None:
                problems.append(
                    "fleetKey is not set; a fleet's sites authenticate each other with it "
                    f"(pulumi config set --secret {NAMESPACE}:fleetKey, or the fleet's ESC environment)"
                )
        elif self.fleet_key is not None:
            # Only a fleet's sites use it: a fleet section lost on the way (an ESC environment
            # that kept the keys but not the fleet) must not deploy the site alone.
            problems.append(
                "fleetKey is set but there is no fleet section: the site would deploy alone, "
                "sharing nothing with the other sites; define fleet (the fleet's ESC environment "
                "defines it), or remove fleetKey"
            )
        for env_name, key in self.app.secrets.items():
            if getattr(self, to_snake(key)) is None:
                problems.append(f"app.secrets.{env_name} names {key}, which is not set")
        if problems:
            raise ValueError("\n".join(problems))  # one per line: infra.config names each key
        return self

    @property
    def site_name(self) -> str:
        return self.site or self.target.value

    @property
    def rate_limit_per_minute(self) -> int:
        """A client key's budget at this site (``AGENT_RATE_LIMIT_PER_MINUTE``): the fleet's, in a fleet."""
        return self.fleet.rate_limit_per_minute if self.fleet is not None else self.app.rate_limit_per_minute


class AwsStack(SiteStack):
    """ECS Fargate behind an ALB, ElastiCache, SQS, Secrets Manager, in its own VPC."""

    target: Literal[Target.AWS]  # pyright: ignore[reportIncompatibleVariableOverride]
    # The task definition's stopTimeout (Fargate allows up to 120).
    stop_grace_seconds: ClassVar[int] = 30
    region: Annotated[
        str, AfterValidator(_region("aws", r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]", "eu-west-1"))
    ] = Field(description="the aws region, e.g. eu-west-1")
    account_id: str = Field(
        pattern=r"^[0-9]{12}$",
        description="the 12-digit account the stack deploys into (the provider refuses any other)",
    )

    @model_validator(mode="after")
    def _certificate_source(self) -> AwsStack:
        if not (self.domain.zone_id or self.domain.certificate_arn):
            raise ValueError(
                "domain needs zoneId (a DNS-validated certificate is issued) or certificateArn "
                "for the aws target"
            )
        return self


class GcpStack(SiteStack):
    """Cloud Run behind a global HTTPS load balancer, Memorystore, Pub/Sub, Secret Manager."""

    target: Literal[Target.GCP]  # pyright: ignore[reportIncompatibleVariableOverride]
    # Cloud Run's container contract: SIGKILL 10 s after SIGTERM, not settable.
    stop_grace_seconds: ClassVar[int] = 10
    region: Annotated[str, AfterValidator(_region("gcp", r"[a-z]+-[a-z]+[0-9]", "europe-west1"))] = Field(
        description="the gcp region, e.g. europe-west1"
    )
    project: str = Field(description="the GCP project id")
    cloud_armor: bool = Field(default=False, description="attach a Cloud Armor policy")
    alert_email: str | None = Field(
        default=None,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        description="e-mail notification channel for alert policies",
    )


class OnpremStack(SiteStack):
    """A Kubernetes cluster of your own: Deployments, Redis with Sentinel, NATS JetStream."""

    target: Literal[Target.ONPREM]  # pyright: ignore[reportIncompatibleVariableOverride]
    # The pods' terminationGracePeriodSeconds.
    stop_grace_seconds: ClassVar[int] = 45
    cluster: ClusterSpec = Field(description="a cluster section (at least cluster.context)")

    @model_validator(mode="after")
    def _monitoring_labels_are_extra(self) -> OnpremStack:
        if clash := sorted(set(self.cluster.monitoring_labels) & set(self.labels())):
            raise ValueError(
                f"cluster.monitoringLabels has {', '.join(clash)}, the stack's own labels (from tags "
                "and environment): choose other keys"
            )
        return self


class EdgeStack(_Stack):
    """One global name in front of the sites (Route 53 health-checked routing)."""

    target: Literal[Target.EDGE]  # pyright: ignore[reportIncompatibleVariableOverride]
    edge: EdgeSpec = Field(description="an edge section (zoneId, recordName, sites)")


# A stack's spec: one model per target, told apart by ``target``. What a target requires is
# its model's required fields, so a deploy function never checks for a missing section.
SiteSpec = AwsStack | GcpStack | OnpremStack
StackSpec = Annotated[AwsStack | GcpStack | OnpremStack | EdgeStack, Field(discriminator="target")]
STACK_SPEC: TypeAdapter[AwsStack | GcpStack | OnpremStack | EdgeStack] = TypeAdapter(StackSpec)
MODELS: dict[str, type[_Stack]] = {
    Target.AWS.value: AwsStack,
    Target.GCP.value: GcpStack,
    Target.ONPREM.value: OnpremStack,
    Target.EDGE.value: EdgeStack,
}


def parse_spec(data: Any) -> AwsStack | GcpStack | OnpremStack | EdgeStack:
    """Validate a stack's ``skyfleet:`` values (camelCase keys) into its target's model."""
    return STACK_SPEC.validate_python(data)


def to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


__all__ = [
    "FLEET_KEY_MIN_LENGTH",
    "MODELS",
    "NAMESPACE",
    "PROFILES",
    "SECRET_KEYS",
    "SITE_NAME_MAX_LENGTH",
    "SITE_NAME_MIN_LENGTH",
    "SITE_TARGETS",
    "AppSpec",
    "AwsStack",
    "CacheSpec",
    "ClusterSpec",
    "DomainSpec",
    "EdgeSpec",
    "EdgeStack",
    "Env",
    "Environment",
    "GcpStack",
    "NetworkSpec",
    "OnpremStack",
    "PolicySpec",
    "QueueSpec",
    "Routing",
    "SiteSpec",
    "SiteStack",
    "StackSpec",
    "Target",
    "parse_spec",
]
