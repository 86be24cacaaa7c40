"""The stack outputs every target exports: the contract between the site stacks, the edge
stack (which reads them through StackReference) and the drills (which act on real stacks
from them). Pure pydantic, no Pulumi import, so the drill runner can load it anywhere.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Outputs(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class DnsRecord(_Outputs):
    """One DNS record a site needs in a zone it does not manage (its name, type and value)."""

    name: str = Field(description="the record's fully qualified name (a trailing dot allowed)")
    type: str = Field(description="the record type, e.g. CNAME")
    data: str = Field(description="the record's value")


class SiteOutputs(_Outputs):
    """What every site stack (aws, gcp, onprem) exports, whatever its cloud."""

    target: Literal["aws", "gcp", "onprem"]
    environment: Literal["dev", "prod"]
    site: str = Field(description="the site's name, as the edge and the drills call it")
    endpoint: str = Field(description="public HTTPS URL of the site's load balancer")
    endpoint_host: str = Field(alias="endpointHost", description="DNS name the edge health-checks")
    host_names: list[str] = Field(
        default_factory=list,
        alias="hostNames",
        description="every name the site's certificate covers and its host rules route (its own, "
        "then its aliases such as the edge's global name)",
    )
    endpoint_addresses: list[str] = Field(
        default_factory=list,
        alias="endpointAddresses",
        description="the fixed public IPv4 addresses of the site's front door (what a multivalue "
        "edge answers); a site whose front door has none exports an empty list",
    )
    addresses_host: str | None = Field(
        default=None,
        alias="addressesHost",
        description="a DNS name that resolves to exactly the endpointAddresses, through the front "
        "they belong to (what a multivalue edge health-checks); endpointHost when not set",
    )
    health_check_path: str = Field(alias="healthCheckPath")
    dns_authorizations: list[DnsRecord] = Field(
        default_factory=list,
        alias="dnsAuthorizations",
        description="records that prove control of the site's host names to its certificate "
        "issuer, which the edge creates in its zone (a gcp site's Certificate Manager DNS "
        "authorizations); a site whose certificates need none exports none",
    )
    region: str | None = None
    # AWS
    cluster_name: str | None = Field(default=None, alias="clusterName")
    api_service_name: str | None = Field(default=None, alias="apiServiceName")
    worker_service_name: str | None = Field(default=None, alias="workerServiceName")
    task_security_group_id: str | None = Field(default=None, alias="taskSecurityGroupId")
    # GCP
    project: str | None = None
    # Kubernetes
    namespace: str | None = None
    kube_context: str | None = Field(default=None, alias="kubeContext")
    api_deployment: str | None = Field(default=None, alias="apiDeployment")
    worker_deployment: str | None = Field(default=None, alias="workerDeployment")


class EdgeOutputs(_Outputs):
    """What the edge stack exports."""

    target: Literal["edge"]
    environment: Literal["dev", "prod"]
    fqdn: str = Field(description="the global name clients use")
    routing: Literal["failover", "weighted", "multivalue"]
    health_check_ids: dict[str, str] = Field(alias="healthCheckIds", description="site name -> id")


# Output names, for code that exports them (the infra targets) without repeating strings.
SITE_OUTPUT_KEYS: frozenset[str] = frozenset(f.alias or name for name, f in SiteOutputs.model_fields.items())
EDGE_OUTPUT_KEYS: frozenset[str] = frozenset(f.alias or name for name, f in EdgeOutputs.model_fields.items())
