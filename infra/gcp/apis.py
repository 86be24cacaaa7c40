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

# The API each module of the provider calls (gcp:<module>/<resource>:<Type>).
API_BY_MODULE: dict[str, str] = {
    "certificatemanager": "certificatemanager.googleapis.com",
    "cloudrunv2": "run.googleapis.com",
    "compute": "compute.googleapis.com",
    "logging": "logging.googleapis.com",
    "monitoring": "monitoring.googleapis.com",
    "pubsub": "pubsub.googleapis.com",
    "redis": "redis.googleapis.com",
    "secretmanager": "secretmanager.googleapis.com",
    "serviceaccount": "iam.googleapis.com",
    "servicenetworking": "servicenetworking.googleapis.com",
}
# A service agent is generated for the service it names (its ``service`` input), which must be on.
SERVICE_IDENTITY = "gcp:projects/serviceIdentity:ServiceIdentity"
# Enabled for the site; serviceusage itself is on in every project (enabling APIs needs it).
SERVICES: tuple[str, ...] = tuple(sorted({*API_BY_MODULE.values(), "cloudresourcemanager.googleapis.com"}))


def api_for(resource_type: str, props: Mapping[str, Any]) -> str | None:
    """The API a ``gcp:`` resource needs enabled, if any."""
    if resource_type == SERVICE_IDENTITY:
        service = props.get("service")
        return service if isinstance(service, str) else None
    if not resource_type.startswith("gcp:"):
        return None
    module = resource_type.split(":", 2)[1].split("/", 1)[0]
    return API_BY_MODULE.get(module)


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
