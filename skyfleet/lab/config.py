"""The lab's configuration: which stacks it is the twin of, and what a small machine may cap.

Everything the lab runs comes from the stacks' offline plans; this file only says which
stacks, where the program is, and the lab's own housekeeping (state folder, subnet). The one
thing it may change about what a plan runs is the replica count, capped for a small machine,
and that cap is printed by ``lab up`` and in every drill report. Unknown keys are errors and
every error names the file and the field.
"""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from skyfleet.lab.errors import LabConfigError

DEFAULT_SITE_STACKS = ["aws-prod", "gcp-prod", "onprem-prod"]
DEFAULT_EDGE_STACK = "edge-prod"


class LabConfig(BaseModel):
    """What ``skyfleet lab up`` builds: the twin of these stacks."""

    stacks: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SITE_STACKS),
        min_length=1,
        max_length=6,
        description="site stacks",
    )
    edge: str | None = Field(default=DEFAULT_EDGE_STACK, description="the edge stack in front of them")
    program: Path = Field(default=Path("."), description="the Pulumi project (Pulumi.yaml)")
    max_replicas: int | None = Field(
        default=None, ge=1, le=20, description="cap each workload's replicas (a small machine)"
    )
    state_dir: Path = Path(".skyfleet-lab")
    subnet: str | None = Field(default=None, description="the lab's private IPv4 /24")

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("stacks")
    @classmethod
    def _unique(cls, stacks: list[str]) -> list[str]:
        if len(set(stacks)) != len(stacks):
            raise ValueError(f"stacks must be unique, got {stacks}")
        return stacks

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, subnet: str | None) -> str | None:
        if subnet is None:
            return None
        net = ipaddress.IPv4Network(subnet)  # its ValueError names the problem
        if net.prefixlen != 24 or not net.is_private:
            raise ValueError(f"must be a private IPv4 /24, got {subnet}")
        return subnet

    @property
    def state_path(self) -> Path:
        return self.state_dir.expanduser().resolve()

    @property
    def lab_id(self) -> str:
        return lab_id_for(self.state_path)

    @property
    def network(self) -> str:
        """The lab's /24: configured, or derived from its id so that two labs differ (``up``
        takes the next free one when an interface here already uses the derived one)."""
        return self.subnet or f"10.231.{int(self.lab_id, 16) % 250 + 1}.0/24"

    @classmethod
    def load(cls, data: dict[str, Any], *, source: str = "lab config") -> LabConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise LabConfigError(describe_validation_error(exc, source)) from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> LabConfig:
        """A YAML lab config; ``overrides`` (flags that were given) win over the file."""
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
        lines.append(f"  field {field!r}: {err['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def lab_id_for(state_path: Path) -> str:
    return hashlib.sha256(str(state_path).encode()).hexdigest()[:6]
