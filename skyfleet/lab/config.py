"""The lab's configuration: one pydantic model, loadable from CLI flags or a YAML file.

Unknown keys are errors (a typo never silently falls back to a default) and every error names
the file and the field, because a half-started lab is worse than none.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from agent_app.contract import PLATFORM_ENV, Env
from infra.spec import Routing
from skyfleet.lab.errors import LabConfigError

# The pseudo-site that holds a tie-breaking Sentinel and NATS node when there are two sites,
# like a witness zone: without it, losing either site would leave no majority to fail over.
WITNESS = "witness"
SITE_NAME = re.compile(r"[a-z][a-z0-9]{0,11}")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)?\s*")


def parse_duration_ms(value: Any) -> int:
    """Milliseconds from ``"1s"``, ``"250ms"``, ``"1.5s"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as '1s' or '250ms', got {value!r}")
    if isinstance(value, int | float):
        return round(float(value) * 1000)
    match = _DURATION.fullmatch(str(value))
    if not match:
        raise ValueError(f"expected a duration such as '1s' or '250ms', got {value!r}")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return round(number if unit == "ms" else number * 1000)


# Stored as "<n>ms" so a dumped config loads back to the same value (a bare number is seconds).
DurationMs = Annotated[
    int, BeforeValidator(parse_duration_ms), PlainSerializer(lambda ms: f"{ms}ms", return_type=str)
]
# Bounds of the duration fields, checked with their unit in the message.
_DURATION_BOUNDS = {
    "health_interval_ms": (100, 60_000),
    "redis_down_after_ms": (100, 60_000),
    "redis_failover_timeout_ms": (500, 600_000),
    "request_timeout_ms": (500, 600_000),
}


class LabConfig(BaseModel):
    """Everything ``skyfleet lab up`` needs; defaults give three sites with two replicas each."""

    sites: list[str] = Field(default_factory=lambda: ["aws", "gcp", "onprem"], min_length=1, max_length=6)
    replicas: int = Field(default=2, ge=2, le=8, description="api replicas per site")
    state_dir: Path = Path(".skyfleet-lab")
    base_port: int = Field(default=17000, ge=1024, le=65000)
    health_interval_ms: DurationMs = Field(
        default=1000, alias="health_interval", description="front door check interval"
    )
    health_fall: int = Field(default=2, ge=1, le=10, description="failed checks before a server is down")
    health_rise: int = Field(default=2, ge=1, le=10, description="passed checks before it is up again")
    routing: Routing = Routing.WEIGHTED
    weights: dict[str, int] = Field(default_factory=dict, description="per-site weight, 0-255")
    primary_site: str | None = Field(default=None, description="failover primary; default first site")
    netns: bool = False
    netns_subnet: str | None = Field(default=None, description="IPv4 /24 for the namespaces")
    # Sentinel timings: short, so that a lost Redis primary is replaced within about 3 s.
    redis_down_after_ms: DurationMs = Field(default=1000, alias="redis_down_after")
    redis_failover_timeout_ms: DurationMs = Field(default=3000, alias="redis_failover_timeout")
    request_timeout_ms: DurationMs = Field(default=10000, alias="request_timeout")
    tls: bool = Field(default=True, description="also serve the front door over HTTPS")
    python: str = Field(default=sys.executable, description="interpreter that runs agent_app")
    app_env: dict[str, str] = Field(default_factory=dict, description="extra AGENT_* variables")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator(*_DURATION_BOUNDS)
    @classmethod
    def _duration_bounds(cls, ms: int, info: ValidationInfo) -> int:
        low, high = _DURATION_BOUNDS[str(info.field_name)]
        if not low <= ms <= high:
            raise ValueError(f"must be between {low}ms and {high}ms, got {ms}ms")
        return ms

    @field_validator("sites")
    @classmethod
    def _sites(cls, sites: list[str]) -> list[str]:
        for name in sites:
            if not SITE_NAME.fullmatch(name) or name == WITNESS:
                raise ValueError(
                    f"{name!r} is not a valid site name (lowercase letters and digits, "
                    f"starting with a letter, at most 12 characters, not {WITNESS!r})"
                )
        if len(set(sites)) != len(sites):
            raise ValueError(f"site names must be unique, got {sites}")
        return sites

    @field_validator("weights")
    @classmethod
    def _weights(cls, weights: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        sites = info.data.get("sites", [])
        for name, weight in weights.items():
            if name not in sites:
                raise ValueError(f"{name!r} is not one of the sites {sites}")
            if not 0 <= weight <= 255:
                raise ValueError(f"weight of {name!r} must be between 0 and 255, got {weight}")
        return weights

    @field_validator("primary_site")
    @classmethod
    def _primary(cls, primary: str | None, info: ValidationInfo) -> str | None:
        sites = info.data.get("sites", [])
        if primary is not None and primary not in sites:
            raise ValueError(f"{primary!r} is not one of the sites {sites}")
        return primary

    @field_validator("netns_subnet")
    @classmethod
    def _subnet(cls, subnet: str | None) -> str | None:
        if subnet is None:
            return None
        net = ipaddress.IPv4Network(subnet)  # its ValueError names the problem
        if net.prefixlen != 24 or not net.is_private:
            raise ValueError(f"must be a private IPv4 /24, got {subnet}")
        return subnet

    @field_validator("app_env")
    @classmethod
    def _app_env(cls, env: dict[str, str]) -> dict[str, str]:
        reserved = {e.value for e in PLATFORM_ENV} | {Env.SITE.value, Env.INSTANCE.value}
        for key in env:
            if not key.startswith("AGENT_"):
                raise ValueError(f"{key}: only AGENT_* variables configure the app")
            if key in reserved:
                raise ValueError(f"{key}: set by the lab itself, it cannot be overridden")
        return env

    @property
    def state_path(self) -> Path:
        return self.state_dir.expanduser().resolve()

    @property
    def lab_id(self) -> str:
        """Short id derived from the state folder: names namespaces and links, marks processes."""
        return lab_id_for(self.state_path)

    @property
    def primary(self) -> str:
        return self.primary_site or self.sites[0]

    @property
    def has_witness(self) -> bool:
        return len(self.sites) == 2

    @property
    def quorum_members(self) -> list[str]:
        """Sites that run a Sentinel and a NATS node (the witness included when there is one)."""
        return [*self.sites, WITNESS] if self.has_witness else list(self.sites)

    def weight(self, site: str) -> int:
        return self.weights.get(site, 100)

    def subnet(self) -> ipaddress.IPv4Network:
        """The namespaces' /24: configured, or derived from the base port so two labs differ."""
        if self.netns_subnet:
            return ipaddress.IPv4Network(self.netns_subnet)
        return ipaddress.IPv4Network(f"10.231.{(self.base_port // 100) % 256}.0/24")

    @classmethod
    def load(cls, data: dict[str, Any], *, source: str = "lab config") -> LabConfig:
        """Validate ``data``; raise LabConfigError naming ``source`` and each bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise LabConfigError(describe_validation_error(exc, source)) from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> LabConfig:
        """Load a YAML lab config; ``overrides`` (CLI flags that were given) win over the file."""
        file = Path(path)
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise LabConfigError(f"{file}: cannot read the lab config: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise LabConfigError(f"{file}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise LabConfigError(
                f"{file}: the lab config must be a mapping of fields, got {type(data).__name__}"
            )
        return cls.load({**data, **overrides}, source=str(file))


def describe_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid lab config"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"  field {field!r}: {message}")
    return "\n".join(lines)


def lab_id_for(state_path: Path) -> str:
    return hashlib.sha256(str(state_path).encode()).hexdigest()[:6]
