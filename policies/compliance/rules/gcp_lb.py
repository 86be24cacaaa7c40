"""External HTTP(S) load balancers: SSL policy strength, policy attached, request logging, plain
HTTP only redirecting to HTTPS (followed from the proxy to its URL map), Cloud Armor rules within
the API's limits, and DNSSEC for public zones."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from pulumi_policy import EnforcementLevel, PolicyResource, Severity

from ._plan import as_int
from ._rule import Controls, Rule, StackView, Subject, as_list, get_path, norm, truthy

SSL_POLICY = ("gcp:compute/sSLPolicy:SSLPolicy",)
HTTPS_PROXY = ("gcp:compute/targetHttpsProxy:TargetHttpsProxy",)
HTTP_PROXY = (
    "gcp:compute/targetHttpProxy:TargetHttpProxy",
    "gcp:compute/regionTargetHttpProxy:RegionTargetHttpProxy",
)
URL_MAP = ("gcp:compute/uRLMap:URLMap", "gcp:compute/regionUrlMap:RegionUrlMap")
FORWARDING = (
    "gcp:compute/globalForwardingRule:GlobalForwardingRule",
    "gcp:compute/forwardingRule:ForwardingRule",
)
ZONE = ("gcp:dns/managedZone:ManagedZone",)
ARMOR_POLICY = (
    "gcp:compute/securityPolicy:SecurityPolicy",
    "gcp:compute/regionSecurityPolicy:RegionSecurityPolicy",
)
ARMOR_RULE = (
    "gcp:compute/securityPolicyRule:SecurityPolicyRule",
    "gcp:compute/regionSecurityPolicyRule:RegionSecurityPolicyRule",
)
# Cloud Armor's limits (cloud.google.com/armor/docs/best-practices, "Provide rule descriptions";
# .../create-security-policy-rules: "an expression with up to five subexpressions").
ARMOR_DESCRIPTION_MAX = 64
ARMOR_SUBEXPRESSIONS_MAX = 5
_CEL_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
BACKEND = (
    "gcp:compute/backendService:BackendService",
    "gcp:compute/regionBackendService:RegionBackendService",
)


def _min_tls(s: Subject) -> Iterator[str]:
    version = norm(s.props.get("minTlsVersion") or "TLS_1_0")
    if version not in ("tls_1_2", "tls_1_3"):
        yield f"minTlsVersion is {version.upper()}; allowed: TLS_1_2, TLS_1_3"


WEAK_CIPHERS = (
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
)


def _profile(s: Subject) -> Iterator[str]:
    profile = norm(s.props.get("profile") or "COMPATIBLE")
    if profile == "compatible":
        yield "profile COMPATIBLE enables weak cipher suites; allowed: MODERN, RESTRICTED"
    elif profile == "custom":
        weak = [str(c) for c in as_list(s.props.get("customFeatures")) if str(c).upper() in WEAK_CIPHERS]
        if weak:
            yield f"custom features include weak ciphers {', '.join(weak)}"


def _proxy_policy(s: Subject) -> Iterator[str]:
    if not s.props.get("sslPolicy"):
        yield "no sslPolicy: the proxy falls back to Google's default (TLS 1.0, COMPATIBLE)"


def _logging(s: Subject) -> Iterator[str]:
    if not truthy(get_path(s.props, "logConfig", "enable")):
        yield "logConfig.enable must be true"


def _redirect_only(view: StackView) -> Iterator[tuple[str, str | None]]:
    for proxy in view.of_type(*HTTP_PROXY):
        exposed = any(
            norm(f.props.get("loadBalancingScheme") or "EXTERNAL").startswith("external")
            for f in view.referrers(proxy, FORWARDING, "target")
        ) or not view.referrers(proxy, FORWARDING, "target")
        if not exposed:
            continue
        maps = view.refers(proxy, "urlMap", URL_MAP)
        if not maps:
            yield (
                f"HTTP proxy {proxy.name!r} serves a URL map this stack cannot see; it must only redirect",
                proxy.urn,
            )
        for url_map in maps:
            redirect = get_path(url_map.props, "defaultUrlRedirect")
            if not truthy(get_path(redirect, "httpsRedirect")) or url_map.props.get("pathMatchers"):
                yield (
                    f"HTTP proxy {proxy.name!r} serves URL map {url_map.name!r}, which does not "
                    "only redirect "
                    "to HTTPS: plain-HTTP requests reach the backends",
                    proxy.urn,
                )


def _dnssec(s: Subject) -> Iterator[str]:
    if norm(s.props.get("visibility") or "public") != "public":
        return
    cfg = s.props.get("dnssecConfig") or {}
    if norm(get_path(cfg, "state")) != "on":
        yield "DNSSEC is off for a public zone (dnssecConfig.state)"
    for spec in as_list(get_path(cfg, "defaultKeySpecs")):
        if norm(get_path(spec, "algorithm")) == "rsasha1":
            yield f"DNSSEC {get_path(spec, 'keyType')} uses RSASHA1"


def _subexpressions(expression: str) -> int:
    """Subexpressions joined by ``&&`` / ``||`` (outside string literals, which regexes fill)."""
    code = _CEL_STRING.sub("''", expression)
    return 1 + code.count("&&") + code.count("||")


def _rule_limits(rule: Mapping[str, Any]) -> Iterator[str]:
    number = as_int(rule.get("priority"))
    priority = "?" if number is None else str(number)
    description = str(rule.get("description") or "")
    if len(description) > ARMOR_DESCRIPTION_MAX:
        yield (
            f"rule {priority}: description is {len(description)} characters; Cloud Armor takes at most "
            f"{ARMOR_DESCRIPTION_MAX}"
        )
    expression = get_path(rule, "match", "expr", "expression")
    count = _subexpressions(expression) if isinstance(expression, str) else 0
    if count > ARMOR_SUBEXPRESSIONS_MAX:
        yield (
            f"rule {priority}: expression has {count} subexpressions; Cloud Armor takes at most "
            f"{ARMOR_SUBEXPRESSIONS_MAX}"
        )


def _armor_limits(view: StackView) -> Iterator[tuple[str, str | None]]:
    """Each policy's rules (inline, and SecurityPolicyRule resources naming it) within what the API
    takes; a rule resource whose policy is not in the stack on its own."""
    grouped: set[str] = set()
    for policy in view.of_type(*ARMOR_POLICY):
        rules: list[tuple[PolicyResource, Mapping[str, Any]]] = [
            (policy, r) for r in as_list(policy.props.get("rules")) if isinstance(r, Mapping)
        ]
        separate = view.referrers(policy, ARMOR_RULE, "securityPolicy")
        grouped |= {r.urn for r in separate}
        rules += [(r, r.props) for r in separate]
        seen: set[int] = set()
        for holder, rule in rules:
            for problem in _rule_limits(rule):
                yield problem, holder.urn
            priority = as_int(rule.get("priority"))
            if priority is None:
                continue
            if priority in seen:
                yield (
                    f"rule {priority}: another rule of the policy has this priority; each needs its own",
                    holder.urn,
                )
            seen.add(priority)
    for rule in view.of_type(*ARMOR_RULE):
        if rule.urn not in grouped:
            for problem in _rule_limits(rule.props):
                yield problem, rule.urn


_TLS = Controls(cis=("GCP-3.9",), nist=("SC-8", "SC-13"), soc2=("CC6.7",), pci=("4.2.1",))

RULES = [
    Rule(
        "gcp-ssl-policy-min-tls12",
        "SSL policies require TLS 1.2 or newer.",
        Severity.HIGH,
        _TLS,
        "Set min_tls_version='TLS_1_2'.",
        SSL_POLICY,
        _min_tls,
        checkov=("CKV_GCP_4",),
    ),
    Rule(
        "gcp-ssl-policy-no-weak-profile",
        "SSL policies use the MODERN or RESTRICTED profile.",
        Severity.HIGH,
        _TLS,
        "Set profile='MODERN' (or 'RESTRICTED').",
        SSL_POLICY,
        _profile,
        checkov=("CKV_GCP_4",),
    ),
    Rule(
        "gcp-https-proxy-ssl-policy",
        "HTTPS proxies have an SSL policy attached.",
        Severity.MEDIUM,
        _TLS,
        "Set ssl_policy on the TargetHttpsProxy to the TLS 1.2+ SSLPolicy's id.",
        HTTPS_PROXY,
        _proxy_policy,
    ),
    Rule(
        "gcp-lb-logging",
        "Load balancer backend services log requests.",
        Severity.MEDIUM,
        Controls(cis=("GCP-2.16",), nist=("AU-2", "AU-12"), soc2=("CC7.2",), pci=("10.2.1",)),
        "Set log_config={enable: True, sample_rate: 1.0} on the backend service.",
        BACKEND,
        _logging,
    ),
    Rule(
        "gcp-lb-http-redirect-only",
        "Plain-HTTP load balancer frontends only redirect to HTTPS.",
        Severity.HIGH,
        _TLS,
        "Point the TargetHttpProxy at a URL map whose only content is default_url_redirect={https_redirect: "
        "True}.",
        stack_check=_redirect_only,
        checkov=("CKV2_GCP_37", "CKV2_GCP_38"),
    ),
    Rule(
        "gcp-cloud-armor-rules-accepted",
        "Cloud Armor rules fit the API's limits: descriptions of at most 64 characters, at most five "
        "subexpressions per expression, one rule per priority.",
        Severity.HIGH,
        Controls(nist=("CM-6",), soc2=("CC8.1",)),
        "Shorten the rule's description, split its expression over rules, or give it a priority of its own.",
        stack_check=_armor_limits,
    ),
    Rule(
        "gcp-dns-dnssec",
        "Public Cloud DNS zones sign records with DNSSEC, not RSASHA1.",
        Severity.LOW,
        Controls(cis=("GCP-3.3", "GCP-3.4", "GCP-3.5"), nist=("SC-20",), soc2=("CC6.6",)),
        "Set dnssec_config={state: 'on'} with RSASHA256 (or ECDSA) key specs.",
        ZONE,
        _dnssec,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_GCP_16", "CKV_GCP_17"),
    ),
]
