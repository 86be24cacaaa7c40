"""cert-manager issuers fit the names they sign: cluster-internal names (``*.svc``,
``*.cluster.local``, single labels) come from a private CA issuer, public names from a publicly
trusted (ACME) issuer, and one issuer never serves both. No public CA issues for ``.svc``
names, and clients outside the cluster do not trust the private CA.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pulumi_policy import PolicyResource, Severity

from ._plan import CERTIFICATE, is_internal_name, text
from ._rule import Controls, Rule, StackView, as_list, get_path

INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
ISSUER = "kubernetes:cert-manager.io/v1:Issuer"
CLUSTER_ISSUER = "kubernetes:cert-manager.io/v1:ClusterIssuer"
CLUSTER_ISSUER_ANNOTATION = "cert-manager.io/cluster-issuer"
ISSUER_ANNOTATION = "cert-manager.io/issuer"


@dataclass(frozen=True)
class _Use:
    user: PolicyResource
    issuer: tuple[str, str, str]  # (kind, name, namespace for namespaced Issuers)
    names: tuple[str, ...]

    @property
    def internal(self) -> bool:
        return bool(self.names) and all(is_internal_name(n) for n in self.names)

    @property
    def public(self) -> list[str]:
        return [n for n in self.names if not is_internal_name(n)]


def _namespace(r: PolicyResource) -> str:
    return text(get_path(r.props, "metadata", "namespace")) or "default"


def _uses(view: StackView) -> list[_Use]:
    uses: list[_Use] = []
    for cert in view.of_type(CERTIFICATE):
        spec: Mapping[str, Any] = cert.props.get("spec") or {}
        ref = spec.get("issuerRef") or {}
        kind = text(ref.get("kind")) or "Issuer"
        issuer = (kind, text(ref.get("name")), _namespace(cert) if kind == "Issuer" else "")
        names = [text(n) for n in as_list(spec.get("dnsNames"))] + [
            text(n) for n in as_list(spec.get("ipAddresses"))
        ]
        if spec.get("commonName"):
            names.append(text(spec.get("commonName")))
        uses.append(_Use(cert, issuer, tuple(n for n in names if n)))
    for ingress in view.of_type(INGRESS):
        annotations: Mapping[str, Any] = get_path(ingress.props, "metadata", "annotations") or {}
        hosts = tuple(
            text(h)
            for tls in as_list(get_path(ingress.props, "spec", "tls"))
            for h in as_list(tls.get("hosts"))
        )
        if annotations.get(CLUSTER_ISSUER_ANNOTATION):
            uses.append(
                _Use(ingress, ("ClusterIssuer", text(annotations[CLUSTER_ISSUER_ANNOTATION]), ""), hosts)
            )
        elif annotations.get(ISSUER_ANNOTATION):
            issuer = ("Issuer", text(annotations[ISSUER_ANNOTATION]), _namespace(ingress))
            uses.append(_Use(ingress, issuer, hosts))
    return uses


def _issuer_resource(view: StackView, key: tuple[str, str, str]) -> PolicyResource | None:
    kind, name, namespace = key
    for r in view.of_type(CLUSTER_ISSUER if kind == "ClusterIssuer" else ISSUER):
        if text(get_path(r.props, "metadata", "name")) == name and (
            kind == "ClusterIssuer" or _namespace(r) == namespace
        ):
            return r
    return None


def _issuer_split(view: StackView) -> Iterator[tuple[str, str | None]]:
    by_issuer: dict[tuple[str, str, str], list[_Use]] = {}
    for use in _uses(view):
        by_issuer.setdefault(use.issuer, []).append(use)
    for key, uses in by_issuer.items():
        label = f"{key[0]} {key[1]!r}"
        internal = [u for u in uses if u.internal]
        public = [u for u in uses if u.public]
        if internal and public:
            inside = ", ".join(sorted({n for u in internal for n in u.names}))
            for u in public:
                yield (
                    f"uses {label} for public names ({', '.join(u.public)}) while it also signs "
                    f"cluster-internal names ({inside}): no issuer can be both publicly trusted and able to "
                    "sign .svc names",
                    u.user.urn,
                )
            continue
        issuer = _issuer_resource(view, key)
        if issuer is None:
            continue
        spec: Mapping[str, Any] = issuer.props.get("spec") or {}
        if spec.get("acme") is not None:
            for u in internal:
                yield (
                    f"asks ACME {label} for cluster-internal names ({', '.join(u.names)}), which no public "
                    "CA issues",
                    u.user.urn,
                )
        elif spec.get("ca") is not None or spec.get("selfSigned") is not None:
            for u in public:
                yield (
                    f"serves public names ({', '.join(u.public)}) with a certificate from the private "
                    f"{label}, which clients outside the cluster do not trust",
                    u.user.urn,
                )


RULES = [
    Rule(
        "cert-manager-issuer-fits-names",
        "A cert-manager issuer signs either cluster-internal names (a CA issuer) or public names (a "
        "publicly trusted issuer), never both.",
        Severity.HIGH,
        Controls(nist=("SC-17", "SC-8"), soc2=("CC6.7",), pci=("4.2.1",)),
        "Use two issuers: a CA ClusterIssuer for the in-cluster Certificates (.svc names) and an ACME "
        "ClusterIssuer for the Ingress (cert-manager.io/cluster-issuer annotation).",
        stack_check=_issuer_split,
    ),
]
