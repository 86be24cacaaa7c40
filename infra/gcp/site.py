"""What every GCP component shares: the project, region and labels of the site, and the
``Capability`` flavour whose type tokens read ``skyfleet:gcp:<Name>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from infra.component import Capability
from infra.spec import Environment, GcpStack

# GCP resource names: lower-case letters, digits and hyphens, at most 63 characters.
_NAME_LIMIT = 63


@dataclass(frozen=True)
class Site:
    """The coordinates and defaults of one GCP site, derived once from the spec."""

    name: str
    project: str
    region: str
    labels: Mapping[str, str]
    deletion_protection: bool
    prod: bool

    @classmethod
    def from_spec(cls, spec: GcpStack) -> Site:
        return cls(
            name=spec.site_name,
            project=spec.project,
            region=spec.region,
            labels=spec.labels(),
            deletion_protection=spec.deletion_protection,
            prod=spec.environment is Environment.PROD,
        )

    def resource_name(self, part: str, limit: int = _NAME_LIMIT) -> str:
        """A physical name unique per site, so several sites can share one project."""
        return f"{self.name}-{part}"[:limit].rstrip("-")


class GcpCapability(Capability):
    """A capability of a GCP site."""

    TARGET = "gcp"
