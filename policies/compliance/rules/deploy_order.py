"""Creation order the engine cannot infer from property references:

- a GCP resource is created only after the API that serves it is enabled (when the stack
  enables that API itself, the resource must depend on the enablement);
- an IAM grant to a Google-managed service agent waits for the agent to exist
  (``gcp.projects.ServiceIdentity``), which it does only some time after its API is enabled;
- a Route 53 alias record waits for the record it points at (Route 53 refuses an alias whose
  target does not exist yet);
- an internet-facing load balancer waits for its VPC's internet gateway (ELB refuses one in a
  VPC with no gateway attached: InvalidSubnet).

``GCP_API_BY_MODULE`` / ``gcp_api_of`` is the one table of resource type -> API; infra/gcp
imports it to wire the dependencies it checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pulumi_policy import PolicyResource, Severity

from ._plan import Graph, text
from ._rule import Controls, Rule, StackView, as_list

SERVICE = "gcp:projects/service:Service"
SERVICE_IDENTITY = "gcp:projects/serviceIdentity:ServiceIdentity"
RECORD = "aws:route53/record:Record"
LOAD_BALANCERS = (
    "aws:lb/loadBalancer:LoadBalancer",
    "aws:alb/loadBalancer:LoadBalancer",
    "aws:elb/loadBalancer:LoadBalancer",  # Classic
)
SUBNET = ("aws:ec2/subnet:Subnet",)
GATEWAYS = (
    "aws:ec2/internetGateway:InternetGateway",
    "aws:ec2/internetGatewayAttachment:InternetGatewayAttachment",
)

# The API (service name) each pulumi-gcp module's resources are served by. The module is the
# token's middle part: gcp:<module>/<resource>:<Type>.
GCP_API_BY_MODULE: dict[str, str] = {
    "artifactregistry": "artifactregistry.googleapis.com",
    "certificatemanager": "certificatemanager.googleapis.com",
    "cloudrun": "run.googleapis.com",
    "cloudrunv2": "run.googleapis.com",
    "compute": "compute.googleapis.com",
    "container": "container.googleapis.com",
    "dns": "dns.googleapis.com",
    "kms": "cloudkms.googleapis.com",
    "logging": "logging.googleapis.com",
    "monitoring": "monitoring.googleapis.com",
    "pubsub": "pubsub.googleapis.com",
    "redis": "redis.googleapis.com",
    "secretmanager": "secretmanager.googleapis.com",
    "serviceaccount": "iam.googleapis.com",
    "servicenetworking": "servicenetworking.googleapis.com",
    "sql": "sqladmin.googleapis.com",
    "storage": "storage.googleapis.com",
    "vpcaccess": "vpcaccess.googleapis.com",
}
# Resources of the projects module are served by Resource Manager (IAM on the project) or IAM
# (custom roles); enabling a service is what the others wait for, so it needs nothing itself.
GCP_API_BY_TYPE: dict[str, str | None] = {
    SERVICE: None,
    "gcp:projects/iAMMember:IAMMember": "cloudresourcemanager.googleapis.com",
    "gcp:projects/iAMBinding:IAMBinding": "cloudresourcemanager.googleapis.com",
    "gcp:projects/iAMPolicy:IAMPolicy": "cloudresourcemanager.googleapis.com",
    "gcp:projects/iAMCustomRole:IAMCustomRole": "iam.googleapis.com",
}


def gcp_api_of(resource_type: str) -> str | None:
    """The API a GCP resource type needs enabled (None: none this table knows)."""
    if resource_type in GCP_API_BY_TYPE:
        return GCP_API_BY_TYPE[resource_type]
    if not resource_type.startswith("gcp:"):
        return None
    module = resource_type.split(":", 2)[1].split("/", 1)[0]
    return GCP_API_BY_MODULE.get(module)


def gcp_api_needed(resource_type: str, service: object = None) -> str | None:
    """The API a GCP resource waits for: its type's, or for a service agent, the API of the
    service it is the agent of (``service``, its input), which must be on for it to exist."""
    if resource_type == SERVICE_IDENTITY:
        return service if isinstance(service, str) and service else None
    return gcp_api_of(resource_type)


def _needed_api(r: PolicyResource) -> str | None:
    return gcp_api_needed(r.resource_type, text(r.props.get("service")))


def _api_order(view: StackView) -> Iterator[tuple[str, str | None]]:
    enabled: dict[str, list[PolicyResource]] = {}
    for s in view.of_type(SERVICE):
        enabled.setdefault(text(s.props.get("service")), []).append(s)
    if not enabled:
        return
    graph = Graph(view)
    for r in view.with_prefix("gcp:"):
        api = _needed_api(r)
        if api is None or api not in enabled:
            continue
        project = text(r.props.get("project"))
        services = [s for s in enabled[api] if not project or text(s.props.get("project")) in ("", project)]
        if services and not any(graph.depends_on(r, s) for s in services):
            yield (
                f"needs {api}, which this stack enables, but does not depend on the enablement: "
                "the engine may create it first and the API call fails (depends_on the Service)",
                r.urn,
            )


_AGENT = re.compile(r"^serviceAccount:service-\d+@gcp-sa-(?P<service>[a-z0-9-]+)\.iam\.gserviceaccount\.com$")


def _agent_order(view: StackView) -> Iterator[tuple[str, str | None]]:
    # Only an API this stack enables can have an agent that does not exist yet.
    enabled = {text(s.props.get("service")) for s in view.of_type(SERVICE)}
    identities: dict[str, list[PolicyResource]] = {}
    for i in view.of_type(SERVICE_IDENTITY):
        identities.setdefault(text(i.props.get("service")), []).append(i)
    graph = Graph(view)
    for r in view.with_prefix("gcp:"):
        members = [text(m) for m in as_list(r.props.get("members"))] + [text(r.props.get("member"))]
        for member in members:
            m = _AGENT.match(member)
            if m is None:
                continue
            api = f"{m['service']}.googleapis.com"
            if api not in enabled:
                continue
            found = identities.get(api, [])
            if not any(graph.depends_on(r, i) for i in found):
                yield (
                    f"grants a role to the {api} service agent ({member.split(':', 1)[1]}), which exists "
                    "only once the API has created it: take the member from a gcp.projects.ServiceIdentity "
                    f"for {api} (and so depend on it)",
                    r.urn,
                )


def _norm(name: str) -> str:
    return name.lower().rstrip(".")


def _alias_order(view: StackView) -> Iterator[tuple[str, str | None]]:
    records = view.of_type(RECORD)
    graph = Graph(view)
    for r in records:
        for alias in as_list(r.props.get("aliases")):
            name, zone = _norm(text(alias.get("name"))), text(alias.get("zoneId"))
            targets = [
                t
                for t in records
                if t is not r
                and _norm(text(t.props.get("name"))) == name
                and text(t.props.get("zoneId")) == zone
            ]
            if targets and not any(graph.depends_on(r, t) for t in targets):
                yield (
                    f"is an alias to {name}, a record this stack creates, but does not depend on it: "
                    "Route 53 refuses an alias whose target does not exist yet",
                    r.urn,
                )


def _gateway_order(view: StackView) -> Iterator[tuple[str, str | None]]:
    graph = Graph(view)
    for lb in view.of_type(*LOAD_BALANCERS):
        if lb.props.get("internal") is True or str(lb.props.get("internal")).lower() == "true":
            continue
        if str(lb.props.get("loadBalancerType") or "").lower() == "gateway":
            continue  # a Gateway Load Balancer takes no traffic from the internet
        subnet_refs = [*as_list(lb.props.get("subnets"))]
        subnet_refs += [m.get("subnetId") for m in as_list(lb.props.get("subnetMappings"))]
        subnets = view.referenced(subnet_refs, SUBNET)
        vpcs = {text(s.props.get("vpcId")) for s in subnets} - {""}
        gateways = [g for g in view.of_type(*GATEWAYS) if text(g.props.get("vpcId")) in vpcs]
        if gateways and not any(graph.depends_on(lb, g) for g in gateways):
            yield (
                "is internet-facing, but does not depend on its VPC's internet gateway, which this stack "
                "creates: ELB refuses it while no gateway is attached (InvalidSubnet)",
                lb.urn,
            )


ORDER = Controls(nist=("CM-3", "SA-10"), soc2=("CC8.1",))

RULES = [
    Rule(
        "gcp-api-enablement-order",
        "GCP resources depend on the enablement of the API that serves them, when the stack enables it.",
        Severity.HIGH,
        ORDER,
        "Pass the gcp.projects.Service of the API in depends_on (see policies.compliance.rules."
        "deploy_order.gcp_api_of for the API of each resource type).",
        stack_check=_api_order,
    ),
    Rule(
        "gcp-service-agent-order",
        "IAM grants to the service agent of an API the stack enables depend on a ServiceIdentity that "
        "creates it.",
        Severity.HIGH,
        ORDER,
        "Create gcp.projects.ServiceIdentity(service=<api>) and use its email as the member.",
        stack_check=_agent_order,
    ),
    Rule(
        "aws-route53-alias-order",
        "Route 53 alias records depend on the records they point at, when the stack creates them.",
        Severity.HIGH,
        ORDER,
        "Pass the target records in depends_on of the alias record.",
        stack_check=_alias_order,
    ),
    Rule(
        "aws-internet-lb-gateway-order",
        "Internet-facing load balancers depend on their VPC's internet gateway, when the stack creates it.",
        Severity.HIGH,
        ORDER,
        "Pass the InternetGateway (or its attachment, or the public routes through it) in depends_on of "
        "the load balancer.",
        stack_check=_gateway_order,
    ),
]
