"""Settings of the agent app, read once from ``AGENT_*`` variables.

Every field is bound to its name in :class:`agent_app.contract.Env`, so the variable names
exist in exactly one place and infra can never set a name the app does not read. Start-up
turns any validation error into a one-line-per-variable message and exit code 2, because
an orchestrator shows the last lines of stderr and a traceback would bury the cause.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import sys
from typing import Annotated, Literal, NoReturn
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent_app.contract import (
    DEFAULT_LOG_LEVEL,
    DEFAULT_PORT,
    FLEET_KEY_MIN_LENGTH,
    LOG_LEVELS,
    ContractError,
    Env,
    QueueTarget,
    parse_fleet_sites,
    parse_queue_url,
)

EXIT_CONFIG = 2
# user:password@ inside a URL: never echoed back in an error message.
_CREDENTIALS = re.compile(r"(://[^:/@]*:)[^@/]*@")


def _default_instance() -> str:
    # A random part too: every Cloud Run instance has the host name "localhost" and, running the
    # same image, usually the same pid, where ECS tasks and pods have names of their own.
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def _redis_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("expected redis://host:port[/db] or rediss://host:port[/db] (TLS)")
    if parts.password:
        raise ValueError(f"the password must not ride in the URL; set {Env.REDIS_PASSWORD.value} instead")
    return value


def _queue_url(value: str) -> str:
    try:
        parse_queue_url(value)
    except ContractError as exc:
        raise ValueError(str(exc)) from None
    return value


def _fleet_sites(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        parse_fleet_sites(value)
    except ContractError as exc:
        raise ValueError(str(exc).removeprefix(f"{Env.FLEET_SITES.value}: ")) from None
    return value


def _sentinels(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    for item in value.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"expected host:port[,host:port...], got {item.strip()!r}")
    return value


def _log_level(value: object) -> object:
    # "info" and "INFO" mean the same to everyone who writes a config.
    if isinstance(value, str):
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(LOG_LEVELS)} (any case)")
        return value.upper()
    return value


LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_log_level)]
RedisUrl = Annotated[str, AfterValidator(_redis_url)]
QueueUrl = Annotated[str, AfterValidator(_queue_url)]
Sentinels = Annotated[str | None, AfterValidator(_sentinels)]
FleetSites = Annotated[str | None, AfterValidator(_fleet_sites)]


def _env(name: Env) -> str:
    return name.value


class Settings(BaseSettings):
    """What one api or worker process needs; unknown variables are ignored by design."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=False, frozen=True)

    port: int = Field(DEFAULT_PORT, ge=1, le=65535, validation_alias=_env(Env.PORT))
    site: str = Field("local", min_length=1, max_length=64, validation_alias=_env(Env.SITE))
    instance: str = Field(
        default_factory=_default_instance, min_length=1, max_length=128, validation_alias=_env(Env.INSTANCE)
    )
    log_level: LogLevel = Field(DEFAULT_LOG_LEVEL, validation_alias=_env(Env.LOG_LEVEL))

    redis_url: RedisUrl = Field(validation_alias=_env(Env.REDIS_URL))
    redis_password: SecretStr | None = Field(None, validation_alias=_env(Env.REDIS_PASSWORD))
    redis_ca_file: FilePath | None = Field(None, validation_alias=_env(Env.REDIS_CA_FILE))
    redis_tls_check_hostname: bool = Field(True, validation_alias=_env(Env.REDIS_TLS_CHECK_HOSTNAME))
    redis_sentinels: Sentinels = Field(None, validation_alias=_env(Env.REDIS_SENTINELS))
    redis_sentinel_master: str = Field(
        "skyfleet", min_length=1, validation_alias=_env(Env.REDIS_SENTINEL_MASTER)
    )
    redis_failover_wait_seconds: float = Field(
        0.5, ge=0, le=30, validation_alias=_env(Env.REDIS_FAILOVER_WAIT_SECONDS)
    )
    redis_wait_replicas: int = Field(0, ge=0, le=16, validation_alias=_env(Env.REDIS_WAIT_REPLICAS))
    redis_wait_timeout_ms: int = Field(500, ge=1, le=10_000, validation_alias=_env(Env.REDIS_WAIT_TIMEOUT_MS))

    fleet_sites: FleetSites = Field(None, validation_alias=_env(Env.FLEET_SITES))
    fleet_replication: Literal["sync", "async"] = Field("sync", validation_alias=_env(Env.FLEET_REPLICATION))
    fleet_key: SecretStr | None = Field(None, validation_alias=_env(Env.FLEET_KEY))

    queue_url: QueueUrl = Field(validation_alias=_env(Env.QUEUE_URL))
    queue_failover_wait_seconds: float = Field(
        0.5, ge=0, le=30, validation_alias=_env(Env.QUEUE_FAILOVER_WAIT_SECONDS)
    )
    queue_ca_file: FilePath | None = Field(None, validation_alias=_env(Env.QUEUE_CA_FILE))
    queue_password: SecretStr | None = Field(None, validation_alias=_env(Env.QUEUE_PASSWORD))

    api_keys_file: FilePath | None = Field(None, validation_alias=_env(Env.API_KEYS_FILE))
    api_keys: SecretStr | None = Field(None, validation_alias=_env(Env.API_KEYS))
    rate_limit_per_minute: int = Field(
        600, ge=1, le=1_000_000, validation_alias=_env(Env.RATE_LIMIT_PER_MINUTE)
    )

    session_ttl_seconds: int = Field(
        86_400, ge=60, le=30 * 86_400, validation_alias=_env(Env.SESSION_TTL_SECONDS)
    )
    session_max_turns: int = Field(50, ge=1, le=1000, validation_alias=_env(Env.SESSION_MAX_TURNS))
    shutdown_grace_seconds: float = Field(
        20, ge=0, le=3600, validation_alias=_env(Env.SHUTDOWN_GRACE_SECONDS)
    )
    task_lease_seconds: int = Field(30, ge=2, le=43_200, validation_alias=_env(Env.TASK_LEASE_SECONDS))
    task_record_wait_seconds: float = Field(
        15, ge=0, le=300, validation_alias=_env(Env.TASK_RECORD_WAIT_SECONDS)
    )
    worker_concurrency: int = Field(4, ge=1, le=256, validation_alias=_env(Env.WORKER_CONCURRENCY))

    model_backend: Literal["offline", "openai"] = Field("offline", validation_alias=_env(Env.MODEL_BACKEND))
    model_base_url: str | None = Field(None, validation_alias=_env(Env.MODEL_BASE_URL))
    model_name: str = Field("gpt-4o-mini", min_length=1, validation_alias=_env(Env.MODEL_NAME))
    model_api_key: SecretStr | None = Field(None, validation_alias=_env(Env.MODEL_API_KEY))

    @model_validator(mode="after")
    def _model_backend_complete(self) -> Settings:
        if self.model_backend == "openai":
            url = self.model_base_url or ""
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(
                    f"{Env.MODEL_BASE_URL.value}: expected an http(s):// base URL when "
                    f"{Env.MODEL_BACKEND.value}=openai, got {url!r}"
                )
        return self

    @model_validator(mode="after")
    def _fleet_complete(self) -> Settings:
        if self.fleet_sites is None:
            return self
        names = [name for name, _ in parse_fleet_sites(self.fleet_sites)]
        if self.site not in names:
            raise ValueError(
                f"{Env.FLEET_SITES.value}: this site ({Env.SITE.value}={self.site!r}) is not one of the "
                f"fleet's sites ({', '.join(names)})"
            )
        if self.fleet_key is None or len(self.fleet_key.get_secret_value()) < FLEET_KEY_MIN_LENGTH:
            raise ValueError(
                f"{Env.FLEET_KEY.value}: a fleet's sites authenticate each other with a key of at least "
                f"{FLEET_KEY_MIN_LENGTH} characters from the secret store; set it when "
                f"{Env.FLEET_SITES.value} is set"
            )
        return self

    @property
    def fleet(self) -> tuple[tuple[str, str], ...]:
        return parse_fleet_sites(self.fleet_sites) if self.fleet_sites else ()

    @property
    def queue(self) -> QueueTarget:
        return parse_queue_url(self.queue_url)

    @property
    def sentinel_hosts(self) -> list[tuple[str, int]]:
        if not self.redis_sentinels:
            return []
        hosts = []
        for item in self.redis_sentinels.split(","):
            host, _, port = item.strip().rpartition(":")
            hosts.append((host, int(port)))
        return hosts


class ConfigError(Exception):
    """Configuration that passed type checks but cannot work (e.g. no API keys)."""


def describe(exc: ValidationError) -> list[str]:
    """One line per bad variable: its name, what is wrong and what is expected."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "configuration"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is required but not set"
        given = err.get("input")
        if isinstance(given, str):
            given = _CREDENTIALS.sub(r"\1***@", given)
        shown = "" if err["type"] == "missing" or "PASSWORD" in loc or "KEY" in loc else f" (got {given!r})"
        lines.append(f"{loc}: {msg}{shown}")
    return lines


def fail(lines: list[str]) -> NoReturn:
    print("agent_app: invalid configuration", file=sys.stderr)
    for line in lines:
        print(f"  {line}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG)


def load_settings() -> Settings:
    """Read the environment or exit 2 with a message naming every bad variable."""
    try:
        return Settings()  # type: ignore[call-arg]  # values come from the environment
    except ValidationError as exc:
        fail(describe(exc))
