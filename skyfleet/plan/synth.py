"""Plausible values for the fields no hand-written model covers, from the SDK's declared types.

A field's type (from ``skyfleet.plan.sdk``) says what shape the value has; its name says what
kind of string it is (an ARN, an id, an address, a host name, a certificate, a time). Values
are deterministic: every one is derived from the stack, the resource and the field's path, so
the same program always gets the same plan.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from skyfleet.plan import sdk

if TYPE_CHECKING:
    from skyfleet.plan.mocks import MockContext

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
CREATED = "2026-01-01T00:00:00Z"
_MAX_DEPTH = 6

# AWS id prefixes by the noun a field or data source names (vpcId -> vpc-..., getAmi -> ami-...).
_AWS_ID_PREFIX = {
    "vpc": "vpc",
    "subnet": "subnet",
    "securitygroup": "sg",
    "group": "sg",
    "internetgateway": "igw",
    "natgateway": "nat",
    "routetable": "rtb",
    "instance": "i",
    "ami": "ami",
    "image": "ami",
    "volume": "vol",
    "snapshot": "snap",
    "networkinterface": "eni",
    "eni": "eni",
    "allocation": "eipalloc",
    "eip": "eipalloc",
    "association": "eipassoc",
    "networkacl": "acl",
    "acl": "acl",
    "prefixlist": "pl",
    "transitgateway": "tgw",
    "endpoint": "vpce",
    "vpcendpoint": "vpce",
    "launchtemplate": "lt",
    "keypair": "key",
    "peeringconnection": "pcx",
    "customergateway": "cgw",
    "vpngateway": "vgw",
    "dhcpoptions": "dopt",
    "capacityreservation": "cr",
}


def _computed_string(name: str) -> bool:
    """Optional string fields a provider fills in inside an object the program configures:
    certificates, endpoints, fingerprints (never a setting such as an address or a mode)."""
    ws = words(name)
    return bool(ws) and (ws[-1] in ("certificate", "cert", "endpoint", "fingerprint") or "ca" in ws[:-1])


def _conform(hint: Any, value: Any) -> Any:
    """An argument echoed into a result field, as the field's type (a data source returns its
    query in its own types: ``most_recent="true"`` comes back a bool), or None if it is not."""
    if value is None or value == UNKNOWN:
        return None
    hint = sdk.strip_optional(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        return {"true": True, "false": False}.get(str(value).lower())
    if hint is int:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer()
        return int(value) if ok else None
    if hint is float:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if hint is str:
        return value if isinstance(value, str) else None
    if sdk.sequence_item(hint) is not None:
        return value if isinstance(value, list) else None
    if sdk.mapping_value(hint) is not None or sdk.is_output_type(hint):
        return value if isinstance(value, dict) else None
    return None


def words(name: str) -> list[str]:
    """``clusterCaCertificate`` / ``cluster_ca_certificate`` -> ['cluster', 'ca', 'certificate']."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name.replace("_", " ").replace("-", " "))
    return [w.lower() for w in spaced.split() if w]


class Synth:
    """Values for one resource, invoke result or method result.

    ``token`` names what the value belongs to (its package and module pick the formats),
    ``name`` is the resource's logical name (or the function's), ``args`` the invoke's
    arguments (echoed into same-named result fields, as a data source echoes its query).
    """

    def __init__(
        self,
        ctx: MockContext,
        token: str,
        name: str,
        *,
        args: dict[str, Any] | None = None,
        resource_ref: Callable[[type, str, int], Any] | None = None,
        counts: dict[str, int] | None = None,
    ) -> None:
        self.ctx = ctx
        self.token = token
        self.name = name
        self.args = args or {}
        self.resource_ref = resource_ref
        # How many items a top-level list field holds, where a model knows (else 1 or 2).
        self.counts = counts or {}
        parts = token.split(":")
        self.package = parts[0]
        module = parts[1] if len(parts) > 1 else ""
        self.service = module.split("/", 1)[0] if module not in ("index", "") else self.package
        self.kind = parts[2].split("/")[-1] if len(parts) > 2 else name

    # --- the entry points -----------------------------------------------------------------

    def fill(
        self,
        cls: type,
        given: dict[str, Any],
        *,
        inputs: frozenset[str],
        preview: bool,
        everything: bool = False,
    ) -> dict[str, Any]:
        """The fields a provider would add to ``given`` after a create (or, in a preview,
        mark unknown): every field only the provider sets (``everything``: every field, as a
        read returns), every field the type declares always present, and computed strings
        inside objects the program gave."""
        out: dict[str, Any] = {}
        for f in sdk.fields(cls):
            if f.name in ("id", "urn"):
                continue
            computed = f.name not in inputs
            if f.name in given:
                value = given[f.name]
                if not preview and isinstance(value, dict) and sdk.is_output_type(f.hint):
                    merged = self._settled(f.hint, value, (f.name,))
                    if merged != value:
                        out[f.name] = merged
                continue
            if not (computed or not f.optional or everything):
                continue
            if preview:
                out[f.name] = UNKNOWN
            elif computed or everything:
                out[f.name] = self.value(f.hint, (f.name,))
            else:
                out[f.name] = self.default(f.hint, (f.name,))
        return out

    def result(self, cls: type) -> dict[str, Any]:
        """Every field of an invoke or method result."""
        out: dict[str, Any] = {}
        for f in sdk.fields(cls):
            echoed = _conform(f.hint, self.args.get(f.name))
            out[f.name] = echoed if echoed is not None else self.value(f.hint, (f.name,))
        return out

    # --- values -----------------------------------------------------------------------------

    def value(self, hint: Any, path: tuple[str, ...], depth: int = 0) -> Any:
        """A full value of type ``hint`` for the field at ``path``."""
        hint = sdk.strip_optional(hint)
        field = path[-1] if path else self.kind
        if depth > _MAX_DEPTH:
            return None
        if sdk.is_output_type(hint):
            return {
                f.name: self.value(f.hint, (*path, f.name), depth + 1)
                for f in sdk.fields(hint)
                if depth + 1 <= _MAX_DEPTH or not sdk.is_output_type(f.hint)
            }
        if sdk.is_resource(hint):
            return self.resource_ref(hint, "-".join(path), 0) if self.resource_ref else None
        if sdk.is_enum(hint):
            first = next(iter(hint), None)
            return first.value if first is not None else ""
        item = sdk.sequence_item(hint)
        if item is not None:
            single = sdk.is_output_type(item) or sdk.is_resource(item)
            n = self.counts.get(path[0], 1 if single else 2) if len(path) == 1 else (1 if single else 2)
            if sdk.is_resource(item):
                ref = self.resource_ref
                return [ref(item, "-".join(path), i) for i in range(n)] if ref else []
            return [self.value(item, (*path, str(i)), depth + 1) for i in range(n)]
        if sdk.mapping_value(hint) is not None:
            return {}
        if hint is bool:
            return False
        if hint is int:
            return self._int(path)
        if hint is float:
            return 1.0
        if hint is str:
            return self.string(path)
        if hint is Any or hint is object or hint is dict:
            return self._any(field, path)
        return None  # assets, archives and other types a provider never computes

    def default(self, hint: Any, path: tuple[str, ...]) -> Any:
        """What a provider reports for a setting the program left out: the stack's coordinates
        where the field is one (region, zone, project, account), else the type's empty value,
        never an invented setting a rule could mistake for the program's."""
        hint = sdk.strip_optional(hint)
        if sdk.is_output_type(hint):
            return self._settled(hint, {}, path)
        if hint is str:
            ws = words(path[-1])
            if ws and ws[-1] in ("region", "zone", "location", "project", "account", "partition"):
                return self.string(path)
            if ws[-2:] in (["availability", "zone"], ["owner", "id"], ["account", "id"]):
                return self.string(path)
            return ""
        if hint is bool:
            return False
        if hint in (int, float):
            return 0
        if sdk.sequence_item(hint) is not None:
            return []
        if sdk.mapping_value(hint) is not None:
            return {}
        return None

    def _settled(self, cls: type, given: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        """An object as the provider reports it back: what the program gave, the fields the type
        declares always present (as defaults), and the certificates and endpoints the provider
        computes inside it (a GKE cluster's masterAuth gains its CA certificate)."""
        out = dict(given)
        if len(path) > _MAX_DEPTH:
            return out
        for f in sdk.fields(cls):
            if f.name in given:
                value = given[f.name]
                if isinstance(value, dict) and sdk.is_output_type(f.hint):
                    out[f.name] = self._settled(f.hint, value, (*path, f.name))
            elif not f.optional:
                out[f.name] = self.default(f.hint, (*path, f.name))
            elif f.hint is str and _computed_string(f.name):
                out[f.name] = self.string((*path, f.name))
        return out

    def _int(self, path: tuple[str, ...]) -> int:
        ws = words(path[-1]) if path else []
        if "port" in ws:
            return 443
        if ws and ws[-1] in ("number", "id"):
            return int(self._hex(path, 10), 16) % 10**12
        return 1

    def _any(self, field: str, path: tuple[str, ...]) -> Any:
        if "kubeconfig" in field.lower():
            return self._kubeconfig()
        return {}

    # --- strings by what the field's name says it is -----------------------------------------

    def string(self, path: tuple[str, ...]) -> str:
        field = path[-1] if path else self.kind
        if field.isdigit() and len(path) > 1:  # an element of a list: named after the list
            field = path[-2]
        ws = words(field)
        last = ws[-1] if ws else ""
        where = set(ws)
        context = {w for p in path for w in words(p)}
        region = str(self.args.get("region") or self.ctx.region)
        if last in ("arn", "arns"):
            return self._arn(ws[:-1], path)
        if last in ("id", "ids") or field == "id":
            return self._id(ws[:-1], path)
        if last in ("region",):
            return region
        if last in ("zone", "zones") and "hosted" not in where:
            return f"{region}a" if self.package == "aws" else f"{region}-b"
        if last in ("location",):
            return region
        if last in ("project",):
            return self.ctx.gcp_project
        if last in ("account", "owner"):
            return self.ctx.account
        if last == "partition":
            return "aws"
        if "email" in where:
            project = self.ctx.gcp_project
            return f"{self._slug()}@{project}.iam.gserviceaccount.com"
        if where & {"certificate", "cert", "pem"} or (last == "data" and "certificate" in context):
            return self._certificate(path)
        if "ca" in where and last not in ("name",):
            return self._certificate(path)
        if last in ("cidr", "cidrs") or (last == "block" and "cidr" in where):
            return "2001:db8:1234:1a00::/56" if "ipv6" in where else "10.0.0.0/16"
        if where & {"ip", "ips", "ipv4", "ipv6"} or last in ("address", "addresses"):
            return self._address(path, where)
        if last in ("url", "uri", "urls", "uris", "link", "links"):
            return f"https://{self._host(path)}/"
        if where & {"dns", "hostname", "host", "fqdn", "domain", "endpoint"}:
            return self._host(path)
        if where & {"time", "timestamp", "date", "created", "updated", "expiration", "expiry"}:
            return CREATED
        if where & {"password", "secret", "token", "credential", "credentials"} or last == "key":
            return self._hex(path, 32)
        if where & {"fingerprint", "hash", "etag", "sha", "checksum"}:
            return self._hex(path, 40)
        if last == "digest":
            return "sha256:" + self._hex(path, 64)
        if where & {"json", "policy", "document"}:
            return '{"Version":"2012-10-17","Statement":[]}' if self.package == "aws" else "{}"
        if last in ("status", "state"):
            return "ACTIVE"
        if last == "version":
            return "1"
        if "kubeconfig" in where:
            import json

            return json.dumps(self._kubeconfig())
        if last == "name" and len(path) == 1:
            return self._slug()
        return f"{self._slug()}-{self._hex(path, 8)}"

    def _hex(self, path: tuple[str, ...], n: int) -> str:
        return self.ctx.uid(f"synth/{self.token}/{self.name}/{'.'.join(path)}", n)

    def _slug(self) -> str:
        return re.sub(r"[^a-z0-9-]+", "-", self.name.lower()).strip("-") or "resource"

    def _arn(self, noun: list[str], path: tuple[str, ...]) -> str:
        service = self.service.lower() if self.package == "aws" else "iam"
        kind = "-".join(noun) or "-".join(words(self.kind))
        if kind.startswith("get-"):
            kind = kind[4:]
        region = "" if service in ("iam", "s3", "route53", "cloudfront") else self.ctx.region
        return f"arn:aws:{service}:{region}:{self.ctx.account}:{kind}/{self._slug()}-{self._hex(path, 8)}"

    def _id(self, noun: list[str], path: tuple[str, ...]) -> str:
        if self.package != "aws":
            return f"{self._slug()}-{self._hex(path, 8)}"
        subject = "".join(noun) or "".join(words(self.kind)).removeprefix("get")
        if subject in ("account", "owner"):
            return self.ctx.account
        if subject in ("hostedzone", "zone") and self.service == "route53":
            return "Z" + self._hex(path, 20).upper()
        if subject in ("key", "kmskey"):
            h = self._hex(path, 32)
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        last = noun[-1] if noun else ""
        prefix = next(
            (_AWS_ID_PREFIX[k] for k in (subject, subject.removesuffix("s"), last) if k in _AWS_ID_PREFIX),
            None,
        )
        return f"{prefix}-{self._hex(path, 17)}" if prefix else f"{self._slug()}-{self._hex(path, 8)}"

    def _address(self, path: tuple[str, ...], where: set[str]) -> str:
        n = int(self._hex(path, 4), 16)
        if "ipv6" in where:
            return f"2001:db8:1234:1a00::{n % 65535 + 1:x}"
        if where & {"public", "external", "nat", "elastic", "egress"}:
            return f"203.0.113.{n % 254 + 1}"  # documentation range (TEST-NET-3)
        return f"10.0.{(n >> 8) % 256}.{n % 254 + 1}"

    def _host(self, path: tuple[str, ...]) -> str:
        slug, h = self._slug(), self._hex(path, 10)
        if self.package == "aws":
            return f"{slug}-{h}.{self.ctx.region}.{self.service.lower()}.amazonaws.com"
        if self.package == "gcp":
            return f"{slug}-{h}.{self.ctx.region}.gcp.example"
        if self.package == "kubernetes":
            return f"{slug}-{h}.svc.cluster.local"
        return f"{slug}-{h}.example"

    def _certificate(self, path: tuple[str, ...]) -> str:
        """Base64 of a PEM block, the form clusters publish their CA in."""
        body = base64.b64encode(bytes.fromhex(self._hex(path, 64)) * 6).decode()
        pem = f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"
        return base64.b64encode(pem.encode()).decode()

    def _kubeconfig(self) -> dict[str, Any]:
        server = f"https://{self._host(('kubeconfig',))}"
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": self._slug(), "cluster": {"server": server}}],
            "contexts": [{"name": self._slug(), "context": {"cluster": self._slug(), "user": "offline"}}],
            "current-context": self._slug(),
            "users": [{"name": "offline", "user": {"token": self._hex(("kubeconfig", "token"), 32)}}],
        }
