"""What every target runs, independent of cloud: the two processes of the agent app and the
environment they get. Targets translate a ``Workload`` into an ECS task definition, a Cloud
Run service or a Kubernetes Deployment; they never restate commands, ports or env names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent_app import contract
from agent_app.contract import Env
from infra.spec import SECRET_KEYS, SiteSpec


@dataclass(frozen=True)
class Workload:
    """One process of the app (``api`` or ``worker``) as every platform must run it."""

    role: str
    command: tuple[str, ...]
    # Clients reach it through the load balancer (the api). Every process, the worker too,
    # serves its probes and metrics on ``port``.
    public: bool
    cpu: int  # millicores
    memory: int  # MiB
    min_replicas: int
    max_replicas: int
    # Plain settings (never secrets): values may be pulumi Outputs resolved by the target.
    env: Mapping[str, object] = field(default_factory=dict)
    # env var -> logical secret name (a key of ``secret_values``) the platform injects from its
    # secret store.
    secret_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.role

    @property
    def port(self) -> int:
        return contract.DEFAULT_PORT

    @property
    def works_between_requests(self) -> bool:
        """It needs CPU and a running replica with no request in flight (the worker; the api in a
        fleet)."""
        return contract.works_between_requests(self.role, fleet=Env.FLEET_SITES.value in self.env)


# Logical secrets every site keeps in its secret store. Targets create one store entry each.
API_KEYS = "api-keys"
REDIS_AUTH = "redis-auth"
MODEL_API_KEY = "model-api-key"
FLEET_KEY = "fleet-key"

# The secret config key (infra.spec.SECRET_KEYS) behind each logical secret an ``app.secrets``
# entry may name: each its own, so no variable is ever given another secret's value.
SECRET_BY_KEY: Mapping[str, str] = {"apiKeys": API_KEYS, "modelApiKey": MODEL_API_KEY, "fleetKey": FLEET_KEY}
assert set(SECRET_BY_KEY) == SECRET_KEYS, "map every secret config key to its logical secret"


def workloads(
    spec: SiteSpec,
    *,
    redis_url: object,
    queue_url: object,
    api_keys_as_file: bool,
    extra_env: Mapping[str, object] | None = None,
    role_env: Mapping[str, Mapping[str, object]] | None = None,
    role_secret_env: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[Workload, Workload]:
    """The api and worker processes for a site.

    ``redis_url`` and ``queue_url`` come from the target's cache and queue components (they
    may be Outputs). ``api_keys_as_file`` says whether the platform mounts secrets as files
    (Kubernetes, Cloud Run) or only injects them as variables (ECS). ``role_env`` and
    ``role_secret_env`` add what differs between the two processes on a target (a broker user
    per role, say).
    """
    app = spec.app
    env: dict[str, object] = {
        Env.SITE.value: spec.site_name,
        Env.REDIS_URL.value: redis_url,
        Env.QUEUE_URL.value: queue_url,
        Env.RATE_LIMIT_PER_MINUTE.value: str(spec.rate_limit_per_minute),
        Env.LOG_LEVEL.value: contract.DEFAULT_LOG_LEVEL,
        Env.PORT.value: str(contract.DEFAULT_PORT),
        # The worker's task lease is the queue's visibility timeout / ack deadline.
        Env.TASK_LEASE_SECONDS.value: str(spec.queue.visibility_timeout_seconds),
        # The platform's SIGKILL comes after its stop grace; the app finishes before it.
        Env.SHUTDOWN_GRACE_SECONDS.value: str(spec.app_shutdown_grace),
        **app.env,
        **(extra_env or {}),
    }
    secret_env: dict[str, str] = {Env.REDIS_PASSWORD.value: REDIS_AUTH}
    if spec.fleet is not None:
        # The fleet: where the other sites are, how writes reach them, and the key they share.
        env[Env.FLEET_SITES.value] = spec.fleet.env_value()
        env[Env.FLEET_REPLICATION.value] = spec.fleet.replication
        secret_env[Env.FLEET_KEY.value] = FLEET_KEY
    for var, key in app.secrets.items():
        secret_env[var] = SECRET_BY_KEY[key]
    if spec.model_api_key is not None and Env.MODEL_API_KEY.value not in secret_env:
        secret_env[Env.MODEL_API_KEY.value] = MODEL_API_KEY
    # Only the api serves clients: only it gets their keys.
    api_env, api_secret_env = dict(env), dict(secret_env)
    if api_keys_as_file:
        api_env[Env.API_KEYS_FILE.value] = f"{contract.API_KEYS_MOUNT_DIR}/{contract.API_KEYS_FILE_NAME}"
    else:
        api_secret_env[Env.API_KEYS.value] = API_KEYS
    role_env, role_secret_env = role_env or {}, role_secret_env or {}
    api = Workload(
        role=contract.API_ROLE,
        command=contract.API_COMMAND,
        public=True,
        cpu=app.cpu,
        memory=app.memory,
        min_replicas=app.replicas.min,
        max_replicas=app.replicas.max,
        env={**api_env, **role_env.get("api", {})},
        secret_env={**api_secret_env, **role_secret_env.get("api", {})},
    )
    worker = Workload(
        role=contract.WORKER_ROLE,
        command=contract.WORKER_COMMAND,
        public=False,
        cpu=app.cpu,
        memory=app.memory,
        min_replicas=app.worker_replicas.min,
        max_replicas=app.worker_replicas.max,
        env={**env, **role_env.get("worker", {})},
        secret_env={**secret_env, **role_secret_env.get("worker", {})},
    )
    return api, worker


def secret_values(spec: SiteSpec) -> dict[str, str]:
    """The secrets this stack's config provides (Pulumi secrets), by logical name."""
    values = {API_KEYS: spec.api_keys}
    if spec.model_api_key is not None:
        values[MODEL_API_KEY] = spec.model_api_key
    if spec.fleet_key is not None:
        values[FLEET_KEY] = spec.fleet_key
    return values
