"""The Google APIs the site needs, enabled before anything uses them.

Every Google resource of the site waits for its own API: the ``needs_api`` transformation,
passed to every component, adds the dependency from the resource's type (a fresh project has
none of these APIs on, and a resource created before its API is refused).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_gcp as gcp

from infra.gcp.site import GcpCapability, Site
from policies.compliance.rules.deploy_order import gcp_api_needed

# The APIs this site's resources call (the one table of type -> API is the policy pack's, whose
# rule checks every resource waits for its API). serviceusage itself is on in every project.
SERVICES: tuple[str, ...] = (
    "certificatemanager.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "redis.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
)


def api_for(resource_type: str, props: Mapping[str, Any]) -> str | None:
    """The API a ``gcp:`` resource needs enabled, if any."""
    return gcp_api_needed(resource_type, props.get("service"))


@dataclass(frozen=True)
class ApisArgs:
    site: Site


class Apis(GcpCapability):
    """Project services. Never disabled on destroy: other workloads in the project may use them."""

    def __init__(self, name: str, args: ApisArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        self.services: dict[str, gcp.projects.Service] = {
            api: gcp.projects.Service(
                f"api-{api.split('.', 1)[0]}",
                project=args.site.project,
                service=api,
                disable_on_destroy=False,
                disable_dependent_services=False,
                opts=self.child(),
            )
            for api in SERVICES
        }
        self.register_outputs({"services": sorted(self.services)})

    def needs_api(
        self, args: pulumi.ResourceTransformationArgs
    ) -> pulumi.ResourceTransformationResult | None:
        """Adds a dependency on the resource's API (a transformation for every component)."""
        api = api_for(args.type_, args.props)
        if api is None or api not in self.services:
            return None
        depends_on = pulumi.ResourceOptions.merge(
            args.opts, pulumi.ResourceOptions(depends_on=[self.services[api]])
        )
        return pulumi.ResourceTransformationResult(args.props, depends_on)
