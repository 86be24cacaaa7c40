"""The base every capability component shares: its type token names the target and the
capability (``skyfleet:aws:Cache``), so the plan, the parity test and the policy pack can see
which capability a resource belongs to without knowing the cloud.
"""

from __future__ import annotations

from typing import Any

import pulumi


class Capability(pulumi.ComponentResource):
    """A capability of a site (Service, LoadBalancer, Cache, Queue, Secrets, ...)."""

    TARGET: str = ""

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"skyfleet:{self.TARGET}:{type(self).__name__}", name, None, opts)

    def child(self, **kwargs: Any) -> pulumi.ResourceOptions:
        """Options for a child resource: parented to this component."""
        return pulumi.ResourceOptions(parent=self, **kwargs)
