"""The global external Application Load Balancer in front of the api: HTTPS only (Google-managed
certificate, TLS 1.2+ policy), HTTP answered with a redirect, request logging, and an optional
Cloud Armor policy (WAF rules and a per-client rate limit).

How public traffic reaches Cloud Run: a serverless NEG cannot present an identity token, so the
api grants ``roles/run.invoker`` to ``allUsers`` on that one service, and its ingress setting
(internal + load balancer) is what keeps the internet off its own URL: requests to *.run.app
from outside are refused before IAM. Clients authenticate to the app with API keys. IAP was not
chosen: it needs Google identities, and the app's callers are machines with API keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.gcp.site import GcpCapability, Site

compute = gcp.compute

# Preconfigured WAF rule sets (OWASP CRS 3.3) Cloud Armor evaluates, highest priority first.
# The edge's per-IP limit is a coarse flood guard, looser than the app's per-key limit (one IP
# may carry several clients behind a NAT); the app enforces the exact per-key limit.
EDGE_RATE_FACTOR = 5
WAF_RULES: tuple[str, ...] = ("sqli-v33-stable", "xss-v33-stable", "lfi-v33-stable", "rce-v33-stable")


@dataclass(frozen=True)
class LoadBalancerArgs:
    site: Site
    domain: str
    api: gcp.cloudrunv2.Service
    cloud_armor: bool
    rate_limit_per_minute: int
    depends_on: Sequence[pulumi.Resource] = ()


class LoadBalancer(GcpCapability):
    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        site = args.site
        labels = dict(site.labels)
        deps = list(args.depends_on)

        # Lets the load balancer (and nothing else outside the VPC, see the ingress setting) invoke
        # the api; bound on the api service only, never on the project, never on the worker.
        self.invoker = gcp.cloudrunv2.ServiceIamMember(
            "api-lb-invoker",
            project=site.project,
            location=site.region,
            name=args.api.name,
            role="roles/run.invoker",
            member="allUsers",
            opts=self.child(),
        )

        # The api's Cloud Run service as a load balancer backend.
        self.neg = compute.RegionNetworkEndpointGroup(
            "api-neg",
            name=site.resource_name("api-neg"),
            project=site.project,
            region=site.region,
            network_endpoint_type="SERVERLESS",
            cloud_run=compute.RegionNetworkEndpointGroupCloudRunArgs(service=args.api.name),
            opts=self.child(depends_on=deps),
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

        # Google-managed certificate for the site's name (issued once DNS points at the address).
        self.certificate = compute.ManagedSslCertificate(
            "certificate",
            project=site.project,
            managed=compute.ManagedSslCertificateManagedArgs(domains=[args.domain]),
            opts=self.child(),
        )

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
            ssl_certificates=[self.certificate.id],
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

    def _cloud_armor(self, args: LoadBalancerArgs) -> compute.SecurityPolicy:
        """WAF rules deny common injection attacks; each client IP is throttled at the edge (429)
        well above the app's per-key limit; layer-7 DDoS defence on."""
        site = args.site
        rules = [
            compute.SecurityPolicyRuleArgs(
                priority=1000 + i,
                action="deny(403)",
                description=f"OWASP CRS: {expr}",
                match=compute.SecurityPolicyRuleMatchArgs(
                    expr=compute.SecurityPolicyRuleMatchExprArgs(
                        expression=f"evaluatePreconfiguredWaf('{expr}')"
                    )
                ),
            )
            for i, expr in enumerate(WAF_RULES)
        ]
        rules.append(
            compute.SecurityPolicyRuleArgs(
                priority=2000,
                action="throttle",
                description="per-client-IP rate limit",
                match=compute.SecurityPolicyRuleMatchArgs(
                    versioned_expr="SRC_IPS_V1",
                    config=compute.SecurityPolicyRuleMatchConfigArgs(src_ip_ranges=["*"]),
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
