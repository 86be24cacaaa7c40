"""Every name a client can use to reach a site is served: the site's certificate covers it and its
host rules route it.

A site stack declares its names in the ``hostNames`` output (its own name and the edge's global
name; infra/outputs.py) besides its ``endpoint``. The site rule checks them against what its
load balancer serves: the ALB's HTTPS listeners and their ACM certificates, the GCP HTTPS
proxy's certificates (classic managed certificates or a Certificate Manager map) and URL map,
or the Kubernetes Ingress's TLS hosts and rules. The edge rule checks the other side: each site
the edge sends its global name to declares that name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from pulumi_policy import PolicyResource, Severity

from agent_app.contract import ContractError, Env, parse_fleet_sites

from ._plan import name_covers, plan_containers, text
from ._rule import SKYFLEET, Controls, Rule, StackView, as_list, get_path

STACK = "pulumi:pulumi:Stack"
HOST_NAMES = "hostNames"

LISTENER = "aws:lb/listener:Listener"
LISTENER_CERTIFICATE = "aws:lb/listenerCertificate:ListenerCertificate"
LISTENER_RULE = "aws:lb/listenerRule:ListenerRule"
ACM_CERTIFICATE = "aws:acm/certificate:Certificate"
HTTPS_PROXY = "gcp:compute/targetHttpsProxy:TargetHttpsProxy"
URL_MAP = "gcp:compute/uRLMap:URLMap"
MANAGED_SSL = "gcp:compute/managedSslCertificate:ManagedSslCertificate"
CM_CERTIFICATE = "gcp:certificatemanager/certificate:Certificate"
CM_MAP_ENTRY = "gcp:certificatemanager/certificateMapEntry:CertificateMapEntry"
CM_MAP = "gcp:certificatemanager/certificateMap:CertificateMap"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def declared_names(view: StackView) -> list[str]:
    """The names the stack says clients use: ``hostNames`` and the host of ``endpoint``."""
    names: list[str] = []
    for root in view.of_type(STACK):
        names += [text(n).lower() for n in as_list(root.props.get(HOST_NAMES))]
        if root.props.get("endpoint"):
            names.append(_host(text(root.props.get("endpoint"))))
    return list(dict.fromkeys(n for n in names if n))


def _referencing(view: StackView, value: str, types: tuple[str, ...]) -> list[PolicyResource]:
    return [r for r in view.of_type(*types) if value and (value in view.ids_of(r) or value in _self_links(r))]


def _self_links(r: PolicyResource) -> set[str]:
    return {text(r.props.get(k)) for k in ("selfLink", "id", "name") if r.props.get(k)}


# -- what each platform's load balancer serves: (certificate names, routed host patterns) --------
# A routed pattern of "*" routes every host (a default action, service or backend).

# The certificate names a client asking for a host is served (by SNI).
Served = Callable[[str], list[str]]


def _any_of(names: list[str]) -> Served:
    """Certificates the load balancer picks among by SNI: any of them serves a name it covers."""
    return lambda _host: names


def _aws(view: StackView) -> list[tuple[PolicyResource, Served, list[str]]]:
    out = []
    for listener in view.of_type(LISTENER):
        if text(listener.props.get("protocol")).upper() != "HTTPS":
            continue
        arns = [text(listener.props.get("certificateArn"))]
        lid = view.ids_of(listener)
        arns += [
            text(c.props.get("certificateArn"))
            for c in view.of_type(LISTENER_CERTIFICATE)
            if text(c.props.get("listenerArn")) in lid
        ]
        names: list[str] = []
        for cert in view.of_type(ACM_CERTIFICATE):
            if view.ids_of(cert) & set(arns):
                names += [text(cert.props.get("domainName"))]
                names += [text(n) for n in as_list(cert.props.get("subjectAlternativeNames"))]
        routed: list[str] = []
        if any(text(a.get("type")) == "forward" for a in as_list(listener.props.get("defaultActions"))):
            routed.append("*")
        for rule in view.of_type(LISTENER_RULE):
            if text(rule.props.get("listenerArn")) in lid:
                for cond in as_list(rule.props.get("conditions")):
                    routed += [text(v) for v in as_list(get_path(cond, "hostHeader", "values"))]
        out.append((listener, _any_of(names), routed))
    return out


def _cm_certificate_names(view: StackView, refs: list[str]) -> list[str]:
    names: list[str] = []
    for ref in refs:
        for cert in view.of_type(CM_CERTIFICATE):
            ids = _self_links(cert)
            if ref in ids or any(ref.endswith("/" + i) for i in ids if i):
                names += [text(d) for d in as_list(get_path(cert.props, "managed", "domains"))]
    return names


def _map_entries(view: StackView, cert_map: str) -> list[PolicyResource]:
    map_ids = {cert_map, cert_map.removeprefix("//certificatemanager.googleapis.com/")}
    for m in view.of_type(CM_MAP):
        if map_ids & _self_links(m):
            map_ids |= _self_links(m)
    return [
        entry
        for entry in view.of_type(CM_MAP_ENTRY)
        if text(entry.props.get("map")) in map_ids
        or any(i.endswith("/" + text(entry.props.get("map"))) for i in map_ids)
    ]


def _map_served(view: StackView, entries: list[PolicyResource]) -> Served:
    """A certificate map serves a host the certificates of its entry for that hostname (exact,
    else a ``*.`` wildcard), else those of its PRIMARY entry; other entries' certificates never."""

    def served(host: str) -> list[str]:
        hostnames = [(e, text(e.props.get("hostname")).lower().rstrip(".")) for e in entries]
        exact = [e for e, h in hostnames if h == host]
        wildcard = [e for e, h in hostnames if h.startswith("*.") and name_covers(h, host)]
        primary = [e for e in entries if text(e.props.get("matcher")).upper() == "PRIMARY"]
        chosen = exact or wildcard or primary
        return _cm_certificate_names(
            view, [text(c) for e in chosen for c in as_list(e.props.get("certificates"))]
        )

    return served


def _gcp(view: StackView) -> list[tuple[PolicyResource, Served, list[str]]]:
    out = []
    for proxy in view.of_type(HTTPS_PROXY):
        names: list[str] = []
        for ref in as_list(proxy.props.get("sslCertificates")):
            for cert in _referencing(view, text(ref), (MANAGED_SSL,)):
                names += [text(d) for d in as_list(get_path(cert.props, "managed", "domains"))]
        names += _cm_certificate_names(
            view, [text(r) for r in as_list(proxy.props.get("certificateManagerCertificates"))]
        )
        cert_map = text(proxy.props.get("certificateMap"))
        by_map = _map_served(view, _map_entries(view, cert_map)) if cert_map else None

        def served(host: str, names: list[str] = names, by_map: Served | None = by_map) -> list[str]:
            return names + (by_map(host) if by_map else [])

        routed: list[str] = []
        for url_map in _referencing(view, text(proxy.props.get("urlMap")), (URL_MAP,)):
            if url_map.props.get("defaultService") or url_map.props.get("defaultUrlRedirect"):
                routed.append("*")
            for rule in as_list(url_map.props.get("hostRules")):
                routed += [text(h) for h in as_list(rule.get("hosts"))]
        out.append((proxy, served, routed))
    return out


def _k8s(view: StackView) -> list[tuple[PolicyResource, Served, list[str]]]:
    out = []
    for ingress in view.of_type(INGRESS):
        spec: Mapping[str, Any] = ingress.props.get("spec") or {}
        names = [text(h) for tls in as_list(spec.get("tls")) for h in as_list(tls.get("hosts"))]
        routed = ["*"] if spec.get("defaultBackend") else []
        routed += [text(rule.get("host")) or "*" for rule in as_list(spec.get("rules"))]
        out.append((ingress, _any_of(names), routed))
    return out


def _routes(patterns: list[str], host: str) -> bool:
    return any(p == "*" or name_covers(p, host) for p in patterns)


def _site_names(view: StackView) -> Iterator[tuple[str, str | None]]:
    names = declared_names(view)
    if not names:
        return
    for front, served, routed in [*_aws(view), *_gcp(view), *_k8s(view)]:
        for name in names:
            certs = served(name)
            if not any(name_covers(c, name) for c in certs):
                covered = ", ".join(dict.fromkeys(c for c in certs if c)) or "no name"
                yield (
                    f"clients reach the site as {name}, which its certificate does not cover ({covered})",
                    front.urn,
                )
            if not _routes(routed, name):
                yield f"clients reach the site as {name}, which no host rule routes", front.urn


def _fleet_names(view: StackView) -> Iterator[tuple[str, str | None]]:
    """The host the fleet's other sites call this site at is one its load balancer serves."""
    fronts = [*_aws(view), *_gcp(view), *_k8s(view)]
    seen: set[tuple[str, str]] = set()
    for c in plan_containers(view):
        sites, site = c.env.get(Env.FLEET_SITES.value), c.env.get(Env.SITE.value)
        if sites is None or sites.value is None or site is None or site.value is None:
            continue
        try:
            fleet = dict(parse_fleet_sites(sites.value))
        except ContractError as exc:
            yield f"{c.label}: {exc}", c.resource.urn
            continue
        if site.value not in fleet:
            yield (
                f"{c.label}: the fleet ({', '.join(fleet)}) does not list this site ({site.value})",
                c.resource.urn,
            )
            continue
        host = _host(fleet[site.value])
        if (site.value, host) in seen:
            continue
        seen.add((site.value, host))
        for front, served, _ in fronts:
            certs = served(host)
            if not any(name_covers(cert, host) for cert in certs):
                covered = ", ".join(dict.fromkeys(cert for cert in certs if cert)) or "no name"
                yield (
                    f"the fleet's other sites call {site.value} at {host}, which its certificate does not "
                    f"cover ({covered})",
                    front.urn,
                )


NAMES = Controls(nist=("SC-8", "SC-23"), soc2=("CC6.7", "A1.2"))

RULES = [
    Rule(
        "skyfleet-site-host-names",
        "Every name a site declares (hostNames, endpoint) is covered by the certificate its load balancer "
        "serves and routed by its host rules.",
        Severity.HIGH,
        NAMES,
        "Add the name to the certificate (ACM subjectAlternativeNames, the Certificate Manager map, the "
        "Ingress tls.hosts) and a host rule (listener rule, URL map hostRules, an Ingress rule per host).",
        stack_check=_site_names,
        group=SKYFLEET,
    ),
    Rule(
        "skyfleet-fleet-site-name",
        "The host the fleet's other sites call a site at (AGENT_FLEET_SITES) is covered by the "
        "certificate its load balancer serves.",
        Severity.HIGH,
        NAMES,
        "List the site in the fleet (stacks/environments) under its domain.name, or add that name to its "
        "certificate.",
        stack_check=_fleet_names,
        group=SKYFLEET,
    ),
]
