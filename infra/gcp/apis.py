"""The Google APIs the site needs, enabled before anything uses them."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.gcp.site import GcpCapability, Site

# The service each capability calls; keys are what the components ask for.
SERVICES: dict[str, str] = {
    # Project lookups (the project number names the Pub/Sub service agent).
    "cloudresourcemanager": "cloudresourcemanager.googleapis.com",
    "compute": "compute.googleapis.com",
    "servicenetworking": "servicenetworking.googleapis.com",
    "run": "run.googleapis.com",
    "redis": "redis.googleapis.com",
    "pubsub": "pubsub.googleapis.com",
    "secretmanager": "secretmanager.googleapis.com",
    "iam": "iam.googleapis.com",
    "logging": "logging.googleapis.com",
    "monitoring": "monitoring.googleapis.com",
}


@dataclass(frozen=True)
class ApisArgs:
    site: Site


class Apis(GcpCapability):
    """Project services. Never disabled on destroy: other workloads in the project may use them."""

    def __init__(self, name: str, args: ApisArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        self.services: dict[str, gcp.projects.Service] = {
            key: gcp.projects.Service(
                f"api-{key}",
                project=args.site.project,
                service=api,
                disable_on_destroy=False,
                disable_dependent_services=False,
                opts=self.child(),
            )
            for key, api in SERVICES.items()
        }
        self.register_outputs({key: svc.service for key, svc in self.services.items()})

    def needed(self, *keys: str) -> list[pulumi.Resource]:
        """The services a component depends on (for ``depends_on``)."""
        return [self.services[k] for k in keys]
