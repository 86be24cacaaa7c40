"""The global HTTPS load balancer: SSL policy strength, policy attached, request logging."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._rule import Controls, Rule, Subject, get_path, truthy

SSL_POLICY = ("gcp:compute/sSLPolicy:SSLPolicy",)
HTTPS_PROXY = ("gcp:compute/targetHttpsProxy:TargetHttpsProxy",)
BACKEND = (
    "gcp:compute/backendService:BackendService",
    "gcp:compute/regionBackendService:RegionBackendService",
)


def _min_tls(s: Subject) -> Iterator[str]:
    version = s.props.get("minTlsVersion") or "TLS_1_0"
    if version not in ("TLS_1_2", "TLS_1_3"):
        yield f"minTlsVersion is {version}; it must be TLS_1_2 or newer"


WEAK_CIPHERS = (
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
)


def _profile(s: Subject) -> Iterator[str]:
    profile = s.props.get("profile") or "COMPATIBLE"
    if profile == "COMPATIBLE":
        yield "profile COMPATIBLE enables weak cipher suites; use MODERN or RESTRICTED"
    elif profile == "CUSTOM":
        weak = [c for c in (s.props.get("customFeatures") or []) if c in WEAK_CIPHERS]
        if weak:
            yield f"custom features include weak ciphers {', '.join(weak)}"


def _proxy_policy(s: Subject) -> Iterator[str]:
    if not s.props.get("sslPolicy"):
        yield "no sslPolicy: the proxy falls back to Google's default (TLS 1.0, COMPATIBLE)"


def _logging(s: Subject) -> Iterator[str]:
    if not truthy(get_path(s.props, "logConfig", "enable")):
        yield "logConfig.enable must be true"


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
    ),
    Rule(
        "gcp-ssl-policy-no-weak-profile",
        "SSL policies use the MODERN or RESTRICTED profile.",
        Severity.HIGH,
        _TLS,
        "Set profile='MODERN' (or 'RESTRICTED').",
        SSL_POLICY,
        _profile,
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
]
