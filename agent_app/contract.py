"""The process contract between Skyfleet's infrastructure and the agent app.

This module is the single source of truth for how a platform runs the app: the commands,
the port, the health paths, the user it runs as, and every ``AGENT_*`` environment
variable. ``infra/`` builds container specs from it and ``agent_app.config`` reads its
settings through it, so the two can never drift apart. It imports nothing but the standard
library, because both the image and the Pulumi program load it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

DEFAULT_PORT = 8080
API_COMMAND: tuple[str, ...] = ("python", "-m", "agent_app.api")
WORKER_COMMAND: tuple[str, ...] = ("python", "-m", "agent_app.worker")
LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
METRICS_PATH = "/metrics"
# The image's non-root user; platforms enforce it with runAsUser / runAsNonRoot.
RUN_AS_UID = 10001
RUN_AS_GID = 10001
# The only writable path; the root filesystem is read-only everywhere.
SCRATCH_DIR = "/tmp"
# Where platforms that can mount secrets as files (Kubernetes, Cloud Run) put the API keys.
API_KEYS_MOUNT_DIR = "/var/run/secrets/skyfleet"
API_KEYS_FILE_NAME = "api-keys"
# How long the api keeps an idle connection open: longer than the load balancers in front of it
# keep theirs (an ALB's idle timeout and ingress-nginx's upstream keepalive timeout are 60 s by
# default), so none sends a request on a connection the app is closing (answered 502).
KEEP_ALIVE_SECONDS = 75
# The shortest client API key a site accepts (the app and the stack spec both check, by api_keys).
API_KEY_MIN_LENGTH = 16
# Response header naming the site that served a request; drills attribute traffic by it.
SITE_HEADER = "X-Skyfleet-Site"
INSTANCE_HEADER = "X-Skyfleet-Instance"
REQUEST_ID_HEADER = "X-Request-Id"
# Methods that change nothing (RFC 9110's safe methods): one whose answer was lost may be sent
# again, by a client or by a site that passed it on.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The shortest AGENT_FLEET_KEY a site accepts (the app's settings and the stack spec both check).
FLEET_KEY_MIN_LENGTH = 32
# The app's log levels; platforms set the default.
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LOG_LEVEL = "INFO"
# Seconds a process may still need after its shutdown grace: its watchdog ends it at the
# deadline, then the interpreter exits. A platform's SIGKILL must come at least this much later.
SHUTDOWN_EXIT_SECONDS = 2
# Redis key prefix for all data that must survive a site loss (replicated across sites).
REPLICATED_KEY_PREFIX = "skyfleet:"
# A request one site of a fleet passed to another (the value names the sender): the receiver
# serves it or refuses, and never passes it on again.
FORWARDED_HEADER = "X-Skyfleet-Forwarded-By"
# On a response another site served for this one: the site the client reached (the one that
# passed the request on). Drills count where requests enter as well as where they are served.
VIA_HEADER = "X-Skyfleet-Via"
# On a 503 ``moved`` answer: the site that is the record's home now.
HOME_HEADER = "X-Skyfleet-Home"
# The fleet's own credential on calls between its sites (replication, takeovers).
FLEET_KEY_HEADER = "X-Skyfleet-Fleet-Key"
# Where sites call each other: replicated records and the appends a home site makes.
FLEET_PATH_PREFIX = "/internal/v1/fleet"
FLEET_REPLICATION_MODES: tuple[str, ...] = ("sync", "async")


class Env(StrEnum):
    """Every environment variable the app reads. Nothing else configures it."""

    PORT = "AGENT_PORT"
    SITE = "AGENT_SITE"
    INSTANCE = "AGENT_INSTANCE"
    LOG_LEVEL = "AGENT_LOG_LEVEL"
    # State: redis:// or rediss:// (TLS). The password never rides in the URL.
    REDIS_URL = "AGENT_REDIS_URL"
    REDIS_PASSWORD = "AGENT_REDIS_PASSWORD"
    REDIS_CA_FILE = "AGENT_REDIS_CA_FILE"
    # Whether the Redis server certificate must name the host connected to ("true", the
    # default). Off only where the server's CA is pinned per instance and the certificate names
    # no connectable host (Memorystore: the CA signs only that instance, the CN is its IP).
    REDIS_TLS_CHECK_HOSTNAME = "AGENT_REDIS_TLS_CHECK_HOSTNAME"
    # Optional Sentinel discovery ("host:port,host:port" and the primary's name): the lab's
    # stand-in for a managed cache's failover endpoint.
    REDIS_SENTINELS = "AGENT_REDIS_SENTINELS"
    REDIS_SENTINEL_MASTER = "AGENT_REDIS_SENTINEL_MASTER"
    # How long a request may wait for the cache to fail over before it answers 503.
    REDIS_FAILOVER_WAIT_SECONDS = "AGENT_REDIS_FAILOVER_WAIT_SECONDS"
    # Replicas that must acknowledge a session write before the turn is acknowledged (RPO 0).
    REDIS_WAIT_REPLICAS = "AGENT_REDIS_WAIT_REPLICAS"
    REDIS_WAIT_TIMEOUT_MS = "AGENT_REDIS_WAIT_TIMEOUT_MS"
    # The fleet this site belongs to: every site's name and regional https:// base URL, in the
    # fleet's order ("name=https://host,name=https://host"), how session and task writes reach
    # the other sites ("sync": acknowledged once a majority of the fleet holds them; "async"),
    # and the credential the sites present to each other.
    FLEET_SITES = "AGENT_FLEET_SITES"
    FLEET_REPLICATION = "AGENT_FLEET_REPLICATION"
    FLEET_KEY = "AGENT_FLEET_KEY"
    # Async work: the scheme picks the adapter (sqs://, pubsub://, nats://).
    QUEUE_URL = "AGENT_QUEUE_URL"
    QUEUE_CA_FILE = "AGENT_QUEUE_CA_FILE"
    # NATS: the password of the user named in AGENT_QUEUE_URL (nats://<user>@host/...).
    QUEUE_PASSWORD = "AGENT_QUEUE_PASSWORD"
    # How long enqueueing a task may retry while the broker fails over (a JetStream leader
    # election, a reconnect to another node) before it answers 503. Retries are deduplicated
    # by task id, so none enqueues a task twice.
    QUEUE_FAILOVER_WAIT_SECONDS = "AGENT_QUEUE_FAILOVER_WAIT_SECONDS"
    # Client API keys: a file mounted from the secret store, or (ECS, which injects
    # secrets only as variables) the secret's value itself.
    API_KEYS_FILE = "AGENT_API_KEYS_FILE"
    API_KEYS = "AGENT_API_KEYS"
    RATE_LIMIT_PER_MINUTE = "AGENT_RATE_LIMIT_PER_MINUTE"
    SESSION_TTL_SECONDS = "AGENT_SESSION_TTL_SECONDS"
    SESSION_MAX_TURNS = "AGENT_SESSION_MAX_TURNS"
    SHUTDOWN_GRACE_SECONDS = "AGENT_SHUTDOWN_GRACE_SECONDS"
    # Worker: how long a received task stays hidden from other workers before redelivery
    # (SQS visibility, NATS ack_wait, Pub/Sub ack deadline; extended while it runs), and
    # how many tasks one worker runs at once.
    TASK_LEASE_SECONDS = "AGENT_TASK_LEASE_SECONDS"
    # Worker: how long a delivered task whose record is not (yet) visible is held and looked
    # up again, on a fresh view of the primary, before it is dead-lettered as an orphan. The
    # api stores the record before it publishes, so only a stale cache view hides it.
    TASK_RECORD_WAIT_SECONDS = "AGENT_TASK_RECORD_WAIT_SECONDS"
    WORKER_CONCURRENCY = "AGENT_WORKER_CONCURRENCY"
    # Model backend: the built-in offline model, or an OpenAI-compatible endpoint.
    MODEL_BACKEND = "AGENT_MODEL_BACKEND"
    MODEL_BASE_URL = "AGENT_MODEL_BASE_URL"
    MODEL_NAME = "AGENT_MODEL_NAME"
    MODEL_API_KEY = "AGENT_MODEL_API_KEY"


# Variables whose values come only from a secret store, never from plain configuration.
SECRET_ENV: frozenset[Env] = frozenset(
    {Env.REDIS_PASSWORD, Env.API_KEYS, Env.MODEL_API_KEY, Env.QUEUE_PASSWORD, Env.FLEET_KEY}
)
# Variables the platform sets; a stack's free-form ``app.env`` may not override them. The rate
# limit is the fleet's budget (or the site's own ``app.rateLimitPerMinute``), and the task lease
# must match the queue's visibility timeout / ack deadline (``queue.visibilityTimeoutSeconds``).
PLATFORM_ENV: frozenset[Env] = frozenset(
    {
        Env.PORT,
        Env.SITE,
        Env.REDIS_URL,
        Env.QUEUE_URL,
        Env.API_KEYS_FILE,
        Env.REDIS_CA_FILE,
        Env.FLEET_SITES,
        Env.FLEET_REPLICATION,
        Env.RATE_LIMIT_PER_MINUTE,
        Env.TASK_LEASE_SECONDS,
    }
)


class ContractError(ValueError):
    """A value does not fit the contract; the message names the variable."""


API_ROLE, WORKER_ROLE = "api", "worker"


def process_role(command: tuple[str, ...]) -> str | None:
    """The process ``command`` starts (``API_ROLE``, ``WORKER_ROLE``), by its module; None when
    it is neither."""
    for role, expected in ((API_ROLE, API_COMMAND), (WORKER_ROLE, WORKER_COMMAND)):
        if len(command) >= 2 and command[-2:] == expected[-2:]:
            return role
    return None


def works_between_requests(role: str | None, *, fleet: bool) -> bool:
    """Whether the process works when no request is in flight: the worker pulls its tasks; in a
    fleet the api also takes a lost site's tasks over (every few seconds) and finishes copying
    writes to the slower sites after it has answered. A platform must give such a process CPU
    between requests and keep at least one running."""
    return role == WORKER_ROLE or (fleet and role == API_ROLE)


# --- The fleet ---------------------------------------------------------------------------
# One format, written by infra from the fleet definition and read by the app.


def fleet_sites_value(sites: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> str:
    """``AGENT_FLEET_SITES`` for ``(name, https base URL)`` pairs in the fleet's order."""
    value = ",".join(f"{name}={url.rstrip('/')}" for name, url in sites)
    parse_fleet_sites(value)
    return value


def parse_fleet_sites(value: str) -> tuple[tuple[str, str], ...]:
    """``(name, base URL)`` pairs from ``AGENT_FLEET_SITES``; ContractError naming what is wrong."""
    name = Env.FLEET_SITES.value
    sites: list[tuple[str, str]] = []
    for item in (i.strip() for i in value.split(",")):
        site, eq, url = item.partition("=")
        parts = urlsplit(url)
        if not eq or not site or parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/"):
            raise ContractError(
                f"{name}: expected <site>=https://<host>[,<site>=https://<host>...], got {item!r}"
            )
        if parts.username or parts.password or parts.query:
            raise ContractError(f"{name}: a site's URL carries no credentials or query, got {item!r}")
        if site in (s for s, _ in sites):
            raise ContractError(f"{name}: site {site!r} is listed twice")
        sites.append((site, url.rstrip("/")))
    if len(sites) < 2:
        raise ContractError(f"{name}: a fleet has at least two sites, got {value!r}")
    return tuple(sites)


# --- Queue URLs -------------------------------------------------------------------------
# One format per broker, built by infra and parsed by the app's adapters.


@dataclass(frozen=True)
class SqsQueue:
    queue_url: str  # the https:// (or endpoint) URL boto3 takes
    region: str
    endpoint_url: str | None = None


@dataclass(frozen=True)
class PubSubQueue:
    project: str
    topic: str
    subscription: str


@dataclass(frozen=True)
class NatsQueue:
    servers: tuple[str, ...]  # nats://host:port or tls://host:port, local node first
    stream: str
    subject: str
    dlq_subject: str
    max_deliver: int
    user: str | None = None  # authenticates with AGENT_QUEUE_PASSWORD


QueueTarget = SqsQueue | PubSubQueue | NatsQueue


def sqs_queue_url(https_url: str, *, endpoint: str | None = None, region: str | None = None) -> str:
    """``sqs://`` form of an SQS queue URL (``https://sqs.<region>.amazonaws.com/<acct>/<name>``)."""
    parts = urlsplit(https_url)
    query = {k: v for k, v in (("region", region), ("endpoint", endpoint)) if v}
    return f"sqs://{parts.netloc}{parts.path}" + (f"?{urlencode(query)}" if query else "")


def pubsub_queue_url(project: str, topic: str, subscription: str) -> str:
    return f"pubsub://{project}/{topic}?{urlencode({'subscription': subscription})}"


def nats_queue_url(
    hosts: str,
    *,
    stream: str,
    subject: str,
    dlq_subject: str,
    max_deliver: int,
    tls: bool = False,
    user: str | None = None,
) -> str:
    query = urlencode(
        {"subject": subject, "dlq": dlq_subject, "max_deliver": max_deliver, "tls": str(tls).lower()}
    )
    auth = f"{quote(user, safe='')}@" if user else ""
    return f"nats://{auth}{hosts}/{quote(stream)}?{query}"


def parse_queue_url(url: str) -> QueueTarget:
    """Parse ``AGENT_QUEUE_URL``; raise ContractError naming what is wrong."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    name = Env.QUEUE_URL.value
    if parts.scheme == "sqs":
        segments = [s for s in parts.path.split("/") if s]
        if not parts.netloc or len(segments) != 2:
            raise ContractError(f"{name}: expected sqs://<host>/<account>/<queue>, got {url!r}")
        endpoint = query.get("endpoint")
        region = query.get("region")
        if region is None:
            host_bits = parts.netloc.split(".")
            region = host_bits[1] if len(host_bits) > 2 and host_bits[0] == "sqs" else "us-east-1"
        base = endpoint.rstrip("/") if endpoint else f"https://{parts.netloc}"
        return SqsQueue(queue_url=f"{base}{parts.path}", region=region, endpoint_url=endpoint)
    if parts.scheme == "pubsub":
        topic = parts.path.strip("/")
        subscription = query.get("subscription", "")
        if not parts.netloc or not topic or not subscription:
            raise ContractError(
                f"{name}: expected pubsub://<project>/<topic>?subscription=<name>, got {url!r}"
            )
        return PubSubQueue(project=parts.netloc, topic=topic, subscription=subscription)
    if parts.scheme == "nats":
        stream = parts.path.strip("/")
        userinfo, at, netloc = parts.netloc.rpartition("@")
        if at and (not userinfo or ":" in userinfo):
            raise ContractError(
                f"{name}: expected nats://[<user>@]<host>:<port>...; the password never rides in the URL "
                f"(set {Env.QUEUE_PASSWORD.value}), got {url.split('@')[-1]!r}"
            )
        hosts = [h for h in netloc.split(",") if h]
        if not hosts or not stream:
            raise ContractError(
                f"{name}: expected nats://<host>:<port>[,<host>:<port>...]/<stream>?subject=..., got {url!r}"
            )
        try:
            max_deliver = int(query.get("max_deliver", "5"))
        except ValueError:
            raise ContractError(f"{name}: max_deliver must be an integer, got {url!r}") from None
        if max_deliver < 1:
            raise ContractError(f"{name}: max_deliver must be at least 1, got {max_deliver}")
        tls = query.get("tls", "false").lower() in ("1", "true", "yes")
        scheme = "tls" if tls else "nats"
        subject = query.get("subject", "agent.tasks")
        return NatsQueue(
            servers=tuple(f"{scheme}://{h if ':' in h else h + ':4222'}" for h in hosts),
            stream=stream,
            subject=subject,
            dlq_subject=query.get("dlq", f"{subject}.dlq"),
            max_deliver=max_deliver,
            user=unquote(userinfo) if userinfo else None,
        )
    raise ContractError(
        f"{name}: unsupported scheme {parts.scheme!r} in {url!r}; expected sqs://, pubsub:// or nats://"
    )


def api_keys(text: str) -> list[str]:
    """The client API keys in ``text`` (AGENT_API_KEYS or the keys file: separated by commas or
    new lines; blank lines and ``#`` comments skipped), or a ValueError naming the entry that is
    not a key. A key never holds whitespace: keys a YAML tool folded onto one line are refused,
    not taken as one key no client sends."""
    keys = []
    for number, line in enumerate(text.replace(",", "\n").splitlines(), start=1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) < API_KEY_MIN_LENGTH:
            raise ValueError(f"key on line {number} is shorter than {API_KEY_MIN_LENGTH} characters")
        if any(c.isspace() for c in key):
            raise ValueError(f"key on line {number} holds whitespace; separate keys with commas or new lines")
        keys.append(key)
    return keys
