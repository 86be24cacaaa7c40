"""The sites the edge routes to, as their own stacks describe them: each site stack's exported
SiteOutputs, read through a StackReference, so the edge never restates a site's host name.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pulumi
from pydantic import ValidationError

from infra.outputs import DnsRecord, SiteOutputs
from infra.spec import EdgeSite


@dataclass(frozen=True)
class Site:
    """One site: its config entry and the values its stack exports."""

    config: EdgeSite
    host: pulumi.Output[str]
    health_check_path: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    addresses: pulumi.Output[list[str]]
    addresses_host: pulumi.Output[str]
    # Records the site's certificate issuer checks in the edge's zone (none for most sites).
    dns_authorizations: pulumi.Output[list[DnsRecord]]


def _validated(stack: str, outputs: Any) -> SiteOutputs:
    """The site stack's outputs, checked against the contract; a clear error otherwise."""
    try:
        return SiteOutputs.model_validate(outputs or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(outputs)'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(
            f"stack {stack} does not export the site outputs the edge needs ({problems}); "
            "deploy the site stacks first (pulumi up -s <site>)"
        ) from None


def _unknown() -> pulumi.Output[SiteOutputs]:
    """A value a preview cannot know yet (as a resource's computed output would be)."""
    known: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    known.set_result(False)
    value: asyncio.Future[SiteOutputs] = asyncio.get_running_loop().create_future()
    value.set_result(None)  # type: ignore[arg-type]  # never read: the output is unknown
    return pulumi.Output(set(), value, known)


def _serves(
    stack: str, site: SiteOutputs, edge_site: EdgeSite, environment: str, global_name: str
) -> SiteOutputs:
    """The stack is the site the edge names (a reference to another site's stack, or to a dev
    stack from a prod edge, would send the global name there), and it answers to the global
    name: its certificate must cover it and its host rules route it, or every client's TLS check
    fails there."""
    if site.site != edge_site.name:
        raise ValueError(
            f"stack {stack} is site {site.site!r}, not {edge_site.name!r} as edge.sites names it; "
            "point the entry at that site's stack"
        )
    if site.environment != environment:
        raise ValueError(
            f"stack {stack} is a {site.environment} site; this {environment} edge sends the global name "
            f"only to {environment} sites"
        )
    if global_name not in site.host_names:
        raise ValueError(
            f"stack {stack} does not serve the global name {global_name!r} (its hostNames are "
            f"{site.host_names}); add it to skyfleet:domain.aliases of that stack and deploy it first"
        )
    return site


def _site_outputs(
    site: EdgeSite, outputs: Any, environment: str, global_name: str
) -> SiteOutputs | pulumi.Output[SiteOutputs]:
    # A site stack that exports nothing yet: a preview shows the edge's values as unknown;
    # an update stops with the clear error (deploy the sites first).
    if not outputs and pulumi.runtime.is_dry_run():
        return _unknown()
    return _serves(site.stack, _validated(site.stack, outputs), site, environment, global_name)


def read_site(site: EdgeSite, *, environment: str, global_name: str) -> Site:
    # The site's own stack: its exported endpoint is the only source of its address.
    ref = pulumi.StackReference(site.stack)
    outputs = ref.outputs.apply(lambda o: _site_outputs(site, o, environment, global_name))
    return Site(
        config=site,
        host=outputs.apply(lambda o: o.endpoint_host),
        health_check_path=outputs.apply(lambda o: o.health_check_path),
        endpoint=outputs.apply(lambda o: o.endpoint),
        addresses=outputs.apply(lambda o: o.endpoint_addresses),
        addresses_host=outputs.apply(lambda o: o.addresses_host or o.endpoint_host),
        dns_authorizations=outputs.apply(lambda o: o.dns_authorizations),
    )
