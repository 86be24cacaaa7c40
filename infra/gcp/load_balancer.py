"""The global external Application Load Balancer in front of the api: HTTPS only (a
Google-managed certificate for every name the site answers to, TLS 1.2+ policy), HTTP answered
with a redirect, request logging, and an optional Cloud Armor policy (WAF rules and a
per-client rate limit).

Certificates: Certificate Manager with DNS authorization, because the site also answers to the
edge's global name, whose DNS points at whichever site the edge picks: a load-balancer
authorized certificate could never be issued for it. The authorizations are per project
(``PER_PROJECT_RECORD``): each CNAME sits at ``_acme-challenge_<id>.<name>``, never at
``_acme-challenge.<name>``, where another site's ACME DNS-01 solver (the onprem site's
cert-manager) writes its TXT records for the same global name, and where DNS allows no CNAME
beside them; other projects' authorizations for the name get names of their own too. The CNAMEs
are exported (``dnsAuthorizations``); the edge stack creates them in its Route 53 zone
(``infra/edge/records.py``), and the certificate is issued once they resolve.

How public traffic reaches Cloud Run: a serverless NEG presents no identity, so the api service
has its invoker check disabled, and its ingress setting (internal + load balancer) is what keeps
the internet off its own URL. Clients authenticate to the app with API keys. IAP was not chosen:
it needs Google identities, and the app's callers are machines with API keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from agent_app.contract import FLEET_PATH_PREFIX
from infra.gcp.site import GcpCapability, Site

compute = gcp.compute

# Preconfigured WAF rule sets (OWASP CRS 3.3) Cloud Armor evaluates, highest priority first.
# The edge's per-IP limit is a coarse flood guard, looser than the app's per-key limit (one IP
# may carry several clients behind a NAT); the app enforces the exact per-key limit.
EDGE_RATE_FACTOR = 5
WAF_RULES: tuple[str, ...] = ("sqli-v33-stable", "xss-v33-stable", "lfi-v33-stable", "rce-v33-stable")
# Sensitivity 1 runs only the rules with the fewest false positives (the default, 4, runs all).
WAF_SENSITIVITY = 1
# Free text from users (chat messages, task inputs): an agent's users paste SQL, HTML and shell
# as a matter of course. The app treats that text as data, never as a query or markup, so the
# WAF does not inspect these routes (Cloud Armor cannot exclude a JSON body field); the rate
# limit below still applies to them.
FREE_TEXT_PATHS = r"^/v1/sessions/[^/]+/(messages|tasks)$"
# The fleet's own calls between sites (agent_app/fleet/peers.py): replicated records
# (PUT .../{sessions|tasks}/{id}) and a home's appends, both carrying users' messages, so the
# WAF would refuse a chat with SQL or HTML in it there too; and they come from a peer site's few
# egress (NAT) addresses, so a per-IP limit would throttle all of its replication and takeovers.
# The app refuses them without the fleet's key (a constant-time comparison), and their volume
# follows the client requests behind them, each already counted against its key's limit where it
# was served; so the WAF and the per-IP limit leave them to the app (layer-7 DDoS defence still
# sees them). Only ID characters after the prefix: no dot segments or percent-escapes, so no
# client route hides behind it.
FLEET_PATHS = rf"^{re.escape(FLEET_PATH_PREFIX)}/[A-Za-z0-9_/-]+$"
# How the WAF rules and the per-IP limit let the routes above through (a CEL condition).
NOT_FLEET = f"!request.path.matches('{FLEET_PATHS}')"


@dataclass(frozen=True)
class LoadBalancerArgs:
    site: Site
    host_names: Sequence[str]  # the site's own name first
    api: gcp.cloudrunv2.Service
    cloud_armor: bool
    rate_limit_per_minute: int


class LoadBalancer(GcpCapability):
    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        site = args.site
        labels = dict(site.labels)

        # The api's Cloud Run service as a load balancer backend.
        self.neg = compute.RegionNetworkEndpointGroup(
            "api-neg",
            name=site.resource_name("api-neg"),
            project=site.project,
            region=site.region,
            network_endpoint_type="SERVERLESS",
            cloud_run=compute.RegionNetworkEndpointGroupCloudRunArgs(service=args.api.name),
            opts=self.child(),
        )

        self.security_policy = self._cloud_armor(args) if args.cloud_armor else None

        # The backend: every request logged; Cloud Armor in front when configured. (Serverless
        # NEGs take no health check: Cloud Run routes only to started instances.)
        self.backend = compute.BackendService(
            "api-backend",
            name=site.resource_name("api-backend"),
            project=site.project,
            load_balancing_scheme="EXTERNAL_MANAGED",
            protocol="HTTPS",
            backends=[compute.BackendServiceBackendArgs(group=self.neg.id)],
            log_config=compute.BackendServiceLogConfigArgs(enable=True, sample_rate=1.0),
            security_policy=self.security_policy.self_link if self.security_policy else None,
            opts=self.child(),
        )

        # All HTTPS paths go to the api.
        self.url_map = compute.URLMap(
            "https",
            name=site.resource_name("https"),
            project=site.project,
            default_service=self.backend.id,
            opts=self.child(),
        )

        certificate_map = self._certificates(args)

        # TLS 1.2 and up only, modern ciphers (RESTRICTED in prod: only the strongest suites).
        self.ssl_policy = compute.SSLPolicy(
            "tls",
            name=site.resource_name("tls"),
            project=site.project,
            profile="RESTRICTED" if site.prod else "MODERN",
            min_tls_version="TLS_1_2",
            opts=self.child(),
        )

        self.https_proxy = compute.TargetHttpsProxy(
            "https",
            name=site.resource_name("https"),
            project=site.project,
            url_map=self.url_map.id,
            certificate_map=certificate_map,
            ssl_policy=self.ssl_policy.id,
            opts=self.child(),
        )

        # One global IPv4 address for HTTPS and the redirect; point the domain's A record at it.
        self.address = compute.GlobalAddress(
            "lb-address",
            name=site.resource_name("lb"),
            project=site.project,
            address_type="EXTERNAL",
            ip_version="IPV4",
            labels=labels,
            opts=self.child(),
        )

        self.https_rule = compute.GlobalForwardingRule(
            "https",
            name=site.resource_name("https"),
            project=site.project,
            load_balancing_scheme="EXTERNAL_MANAGED",
            ip_protocol="TCP",
            ip_address=self.address.id,
            port_range="443",
            target=self.https_proxy.id,
            labels=labels,
            opts=self.child(),
        )

        # Port 80 answers only with a permanent redirect to HTTPS; it reaches no backend.
        self.redirect_map = compute.URLMap(
            "http-redirect",
            name=site.resource_name("http-redirect"),
            project=site.project,
            default_url_redirect=compute.URLMapDefaultUrlRedirectArgs(
                https_redirect=True,
                strip_query=False,
                redirect_response_code="MOVED_PERMANENTLY_DEFAULT",
            ),
            opts=self.child(),
        )
        self.http_proxy = compute.TargetHttpProxy(
            "http-redirect",
            name=site.resource_name("http-redirect"),
            project=site.project,
            url_map=self.redirect_map.id,
            opts=self.child(),
        )
        self.http_rule = compute.GlobalForwardingRule(
            "http-redirect",
            name=site.resource_name("http-redirect"),
            project=site.project,
            load_balancing_scheme="EXTERNAL_MANAGED",
            ip_protocol="TCP",
            ip_address=self.address.id,
            port_range="80",
            target=self.http_proxy.id,
            labels=labels,
            opts=self.child(),
        )

        self.ip_address: pulumi.Output[str] = self.address.address
        self.register_outputs(
            {
                "address": self.address.address,
                "httpsForwardingRule": self.https_rule.name,
                "backend": self.backend.name,
            }
        )

    def _certificates(self, args: LoadBalancerArgs) -> pulumi.Output[str]:
        """A managed certificate for every name, proven by DNS; returns the certificate map the
        HTTPS proxy serves from."""
        site, names = args.site, list(args.host_names)
        cm = gcp.certificatemanager
        # Proof of control of each name: a CNAME the edge stack creates in its zone.
        self.dns_authorization = [
            cm.DnsAuthorization(
                f"dns-authorization-{i}",
                name=site.resource_name(f"dns-auth-{i}"),
                project=site.project,
                location="global",
                domain=host,
                # _acme-challenge_<id>.<name>: beside, not at, the name ACME DNS-01 solvers use.
                type="PER_PROJECT_RECORD",
                labels=dict(site.labels),
                opts=self.child(),
            )
            for i, host in enumerate(names)
        ]
        # The site certificate: every name, issued (and renewed) by Google once the CNAMEs exist.
        self.certificate = cm.Certificate(
            "certificate",
            name=site.resource_name("certificate"),
            project=site.project,
            location="global",
            scope="DEFAULT",
            managed=cm.CertificateManagedArgs(
                domains=names, dns_authorizations=[a.id for a in self.dns_authorization]
            ),
            labels=dict(site.labels),
            opts=self.child(),
        )
        # Which certificate answers which name; the primary entry answers clients without SNI.
        self.certificate_map = cm.CertificateMap(
            "certificate-map",
            name=site.resource_name("certificates"),
            project=site.project,
            labels=dict(site.labels),
            opts=self.child(),
        )
        entries = [
            cm.CertificateMapEntry(
                f"certificate-map-{i}",
                name=site.resource_name(f"host-{i}"),
                project=site.project,
                map=self.certificate_map.name,
                hostname=host,
                certificates=[self.certificate.id],
                labels=dict(site.labels),
                opts=self.child(),
            )
            for i, host in enumerate(names)
        ]
        entries.append(
            cm.CertificateMapEntry(
                "certificate-map-primary",
                name=site.resource_name("primary"),
                project=site.project,
                map=self.certificate_map.name,
                matcher="PRIMARY",
                certificates=[self.certificate.id],
                labels=dict(site.labels),
                opts=self.child(),
            )
        )
        self.dns_authorizations: pulumi.Output[list[dict[str, str]]] = pulumi.Output.all(
            *(a.dns_resource_records for a in self.dns_authorization)
        ).apply(
            # Output types are dicts of their properties (typed objects only on the real engine).
            lambda all_records: [
                {"name": r.get("name") or "", "type": r.get("type") or "CNAME", "data": r.get("data") or ""}
                for records in all_records
                for r in records or []
            ]
        )
        # The proxy may only serve the map once its entries exist.
        return pulumi.Output.all(self.certificate_map.id, *(e.id for e in entries)).apply(
            lambda ids: f"//certificatemanager.googleapis.com/{ids[0]}"
        )

    def _cloud_armor(self, args: LoadBalancerArgs) -> compute.SecurityPolicy:
        """WAF rules deny common injection attacks; each client IP is throttled at the edge (429)
        well above the app's per-key limit; layer-7 DDoS defence on. The fleet's own calls
        between sites pass both (``FLEET_PATHS``): the app authenticates them by the fleet key."""
        site = args.site
        rules = [
            compute.SecurityPolicyRuleArgs(
                priority=1000 + i,
                action="deny(403)",
                description=f"WAF {expr}, sensitivity {WAF_SENSITIVITY}; skips free text and fleet",
                match=compute.SecurityPolicyRuleMatchArgs(
                    expr=compute.SecurityPolicyRuleMatchExprArgs(
                        expression=(
                            f"evaluatePreconfiguredWaf('{expr}', {{'sensitivity': {WAF_SENSITIVITY}}})"
                            f" && !request.path.matches('{FREE_TEXT_PATHS}') && {NOT_FLEET}"
                        )
                    )
                ),
            )
            for i, expr in enumerate(WAF_RULES)
        ]
        rules.append(
            compute.SecurityPolicyRuleArgs(
                priority=2000,
                action="throttle",
                description="per-client-IP rate limit, fleet routes excepted",
                # Every source address, every path but the fleet's.
                match=compute.SecurityPolicyRuleMatchArgs(
                    expr=compute.SecurityPolicyRuleMatchExprArgs(expression=NOT_FLEET)
                ),
                rate_limit_options=compute.SecurityPolicyRuleRateLimitOptionsArgs(
                    conform_action="allow",
                    exceed_action="deny(429)",
                    enforce_on_key="IP",
                    rate_limit_threshold=compute.SecurityPolicyRuleRateLimitOptionsRateLimitThresholdArgs(
                        count=args.rate_limit_per_minute * EDGE_RATE_FACTOR, interval_sec=60
                    ),
                ),
            )
        )
        rules.append(
            compute.SecurityPolicyRuleArgs(
                priority=2147483647,
                action="allow",
                description="default: allow what no rule above denied",
                match=compute.SecurityPolicyRuleMatchArgs(
                    versioned_expr="SRC_IPS_V1",
                    config=compute.SecurityPolicyRuleMatchConfigArgs(src_ip_ranges=["*"]),
                ),
            )
        )
        # Cloud Armor in front of the api backend.
        return compute.SecurityPolicy(
            "cloud-armor",
            name=site.resource_name("armor"),
            project=site.project,
            type="CLOUD_ARMOR",
            description=f"Skyfleet {site.name}: WAF and rate limit for the api",
            adaptive_protection_config=compute.SecurityPolicyAdaptiveProtectionConfigArgs(
                layer7_ddos_defense_config=compute.SecurityPolicyAdaptiveProtectionConfigLayer7DdosDefenseConfigArgs(
                    enable=True
                )
            ),
            rules=rules,
            labels=dict(site.labels),
            opts=self.child(),
        )
