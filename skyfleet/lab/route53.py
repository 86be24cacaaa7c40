"""Route 53's behaviour as a library, built from the edge plan's own resources.

Two parts, as in Route 53 itself:
- **Health checks** (``aws:route53/healthCheck:HealthCheck``): one independent checker per
  configured region, each probing every ``request_interval`` from its own random phase (checkers
  in different regions do not coordinate). A checker changes its verdict after
  ``failure_threshold`` consecutive results that disagree with it; the check is healthy while
  more than 18 % of its checkers say healthy, and a new check is healthy until there is data.
  HTTP(S): TCP connect within 4 s, then a 2xx/3xx status within 2 s after connecting; HTTPS
  sends SNI when enabled and never validates the certificate. TCP: connect within 10 s.
- **Records** (``aws:route53/record:Record``): failover (the PRIMARY while healthy, else the
  SECONDARY while healthy, else the PRIMARY), weighted (a random healthy record by weight;
  weight-0 records only when every non-zero one is unhealthy; all unhealthy counts as all
  healthy), multivalue answer (below), simple, and aliases to records of the same zone (with
  ``evaluateTargetHealth`` an alias is healthy only while its target name has a healthy record;
  it answers with the target's records and TTL under its own name).
- **Multivalue answer** records (Developer Guide, "Multivalue answer routing"): "Route 53
  responds to DNS queries with up to eight healthy records; if you have eight or fewer healthy
  records, Route 53 responds to all DNS queries with all the healthy records. If you have more
  than eight healthy records, Route 53 responds to different DNS resolvers with different
  combinations of healthy records. When all records are unhealthy, Route 53 responds to DNS
  queries with up to eight unhealthy records. If you don't associate a health check with a
  multivalue answer record, Route 53 always considers the record to be healthy. You can't
  create multivalue answer alias records." Nor CNAME or NS ones. An answer holds every value of
  every record it picks (a record with several values answers them all), each once, in random
  order (Route 53 shuffles them; a client usually tries the first address first).

Nothing here knows the topology: :func:`edge_from_plan` reads it from a plan's resources.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
import os
import random
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

HEALTH_CHECK_TYPE = "aws:route53/healthCheck:HealthCheck"
RECORD_TYPE = "aws:route53/record:Record"

# Route 53's documented figures (Developer Guide, "How Amazon Route 53 determines whether a
# health check is healthy").
HEALTHY_FRACTION = 0.18  # healthy while MORE than 18 % of checkers report healthy
HTTP_CONNECT_TIMEOUT = 4.0  # HTTP(S): TCP connection within four seconds
HTTP_RESPONSE_TIMEOUT = 2.0  # ... and a 2xx/3xx status within two seconds after connecting
TCP_CONNECT_TIMEOUT = 10.0  # TCP checks: connection within ten seconds
MIN_REGIONS = 3  # Route 53 refuses a health check with fewer checker regions
# The checker regions Route 53 uses when a health check names none.
DEFAULT_REGIONS = (
    "us-east-1",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-northeast-1",
    "sa-east-1",
)
USER_AGENT = "Amazon-Route53-Health-Check-Service (ref {ref}; report http://amzn.to/1vsZADi)"
# Health-check inputs this emulator does not model: refused rather than silently ignored.
_UNSUPPORTED_CHECK_INPUTS = (
    "searchString",
    "childHealthchecks",
    "childHealthThreshold",
    "cloudwatchAlarmName",
    "routingControlArn",
)
_UNSUPPORTED_RECORD_INPUTS = (
    "latencyRoutingPolicies",
    "geolocationRoutingPolicies",
    "geoproximityRoutingPolicy",
    "cidrRoutingPolicy",
)
SERVED_TYPES = ("CNAME", "A", "AAAA")
MAX_CHAIN = 8  # alias and CNAME hops followed before giving up (Route 53 refuses cycles)
MULTIVALUE_MAX = 8  # records in one multivalue answer (Route 53's "up to eight")
_NOT_MULTIVALUE_TYPES = ("CNAME", "NS")  # types Route 53 refuses a multivalue policy for


class EdgePlanError(ValueError):
    """The edge plan cannot be emulated; the message names the resource and the field."""


class CheckType(StrEnum):
    HTTP = "HTTP"
    HTTPS = "HTTPS"
    TCP = "TCP"


class HealthCheckSpec(BaseModel):
    """One Route 53 health check, as planned (wire-form inputs, typed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="the health check's id, as records reference it (healthCheckId)")
    name: str = Field(description="the plan's resource name")
    site: str = Field(description="the site it checks (its 'site' tag, else the resource name)")
    type: CheckType
    fqdn: str | None = None
    ip_address: str | None = None
    port: int = Field(ge=1, le=65535)
    resource_path: str = "/"
    enable_sni: bool = False
    request_interval: float = Field(gt=0, description="seconds between two probes of one checker")
    failure_threshold: int = Field(ge=1, le=10)
    regions: tuple[str, ...] = Field(min_length=1)
    inverted: bool = False
    disabled: bool = False
    connect_timeout: float = Field(default=HTTP_CONNECT_TIMEOUT, gt=0)
    response_timeout: float = Field(default=HTTP_RESPONSE_TIMEOUT, gt=0)

    @property
    def host_header(self) -> str:
        """The Host header Route 53 sends: the FQDN (or IP), with the port unless it is the
        scheme's default."""
        host = self.fqdn or self.ip_address or ""
        default = {CheckType.HTTP: 80, CheckType.HTTPS: 443}.get(self.type)
        return host if self.port == default else f"{host}:{self.port}"


class AliasTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    zone_id: str
    evaluate_target_health: bool = False


class RecordSpec(BaseModel):
    """One Route 53 record (a member of a routing group when it has a set identifier)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resource: str = Field(description="the plan's resource name, for messages")
    zone_id: str
    name: str
    type: str
    ttl: int | None = Field(default=None, ge=0)
    values: tuple[str, ...] = ()
    alias: AliasTarget | None = None
    set_identifier: str | None = None
    health_check_id: str | None = None
    failover: Literal["PRIMARY", "SECONDARY"] | None = None
    weight: int | None = Field(default=None, ge=0, le=255)
    multivalue: bool = Field(default=False, description="multivalueAnswerRoutingPolicy")


@dataclass(frozen=True)
class Edge:
    """The edge plan's Route 53 part: its records and health checks."""

    records: tuple[RecordSpec, ...]
    health_checks: tuple[HealthCheckSpec, ...]

    def zone(self) -> Zone:
        return Zone(self.records, known_checks={c.id for c in self.health_checks})


def normalise(name: str) -> str:
    """A DNS name as compared here: lower case, no trailing dot."""
    return name.strip().rstrip(".").lower()


# --- reading the plan ------------------------------------------------------------------------------


def resource_field(resource: Any, name: str) -> Any:
    """A field (``type``, ``urn``, ``options``...) of a PlannedResource or a plan JSON's resource dict."""
    return resource.get(name) if isinstance(resource, Mapping) else getattr(resource, name, None)


def resource_view(resource: Any) -> tuple[str, str, Mapping[str, Any], str | None]:
    """(type, name, inputs, id) of a PlannedResource or a plan JSON's resource dict."""
    outputs = resource_field(resource, "outputs") or {}
    rid = resource_field(resource, "id") or outputs.get("id")
    return (
        str(resource_field(resource, "type")),
        str(resource_field(resource, "name")),
        resource_field(resource, "inputs") or {},
        rid,
    )


def _int(where: str, key: str, value: Any) -> int:
    # Wire-form numbers are doubles: 30.0 is 30, 30.5 is an error.
    if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
        raise EdgePlanError(f"{where}: {key}: expected a whole number, got {value!r}")
    return int(value)


def _known(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or value.startswith("04da6b54-"):
        # 04da6b54-... is the Pulumi SDK's marker for a value unknown during a preview.
        raise EdgePlanError(
            f"{where}: {key} is not known in this plan ({value!r}); plan the stack without --preview"
        )
    return value


def health_check_spec(name: str, rid: str | None, inputs: Mapping[str, Any]) -> HealthCheckSpec:
    """A planned health check (its resource name, id and wire-form inputs), or an error naming it."""
    where = f"health check {name} ({HEALTH_CHECK_TYPE})"
    for key in _UNSUPPORTED_CHECK_INPUTS:
        if inputs.get(key) not in (None, "", []):
            raise EdgePlanError(f"{where}: {key}: not emulated by the lab's Route 53")
    raw_type = str(inputs.get("type", ""))
    try:
        check_type = CheckType(raw_type)
    except ValueError:
        supported = ", ".join(t.value for t in CheckType)
        raise EdgePlanError(f"{where}: type: {raw_type!r} is not emulated (supported: {supported})") from None
    fqdn = inputs.get("fqdn")
    ip = inputs.get("ipAddress")
    if not fqdn and not ip:
        raise EdgePlanError(f"{where}: needs fqdn or ipAddress")
    default_port = 80 if check_type is CheckType.HTTP else 443
    regions = tuple(inputs.get("regions") or DEFAULT_REGIONS)
    if len(regions) < MIN_REGIONS:
        raise EdgePlanError(f"{where}: regions: Route 53 needs at least {MIN_REGIONS}, got {list(regions)}")
    tags = inputs.get("tags") or {}
    return HealthCheckSpec(
        id=_known(where, "id", rid),
        name=name,
        site=str(tags.get("site") or name),
        type=check_type,
        fqdn=normalise(_known(where, "fqdn", fqdn)) if fqdn else None,
        ip_address=_known(where, "ipAddress", ip) if ip else None,
        port=_int(where, "port", inputs.get("port", default_port)),
        resource_path=str(inputs.get("resourcePath") or "/"),
        # Route 53's default: SNI on for HTTPS checks.
        enable_sni=bool(inputs.get("enableSni", check_type is CheckType.HTTPS)),
        request_interval=_int(where, "requestInterval", inputs.get("requestInterval", 30)),
        failure_threshold=_int(where, "failureThreshold", inputs.get("failureThreshold", 3)),
        regions=regions,
        inverted=bool(inputs.get("invertHealthcheck", False)),
        disabled=bool(inputs.get("disabled", False)),
        connect_timeout=TCP_CONNECT_TIMEOUT if check_type is CheckType.TCP else HTTP_CONNECT_TIMEOUT,
    )


def record_spec(name: str, inputs: Mapping[str, Any]) -> RecordSpec:
    """A planned record (its resource name and wire-form inputs), or an error naming it."""
    where = f"record {name} ({RECORD_TYPE})"
    for key in _UNSUPPORTED_RECORD_INPUTS:
        if inputs.get(key) not in (None, "", [], {}):
            raise EdgePlanError(f"{where}: {key}: not emulated by the lab's Route 53")
    aliases = inputs.get("aliases") or []
    failover = inputs.get("failoverRoutingPolicies") or []
    weighted = inputs.get("weightedRoutingPolicies") or []
    if len(aliases) > 1 or len(failover) > 1 or len(weighted) > 1:
        raise EdgePlanError(f"{where}: at most one alias and one routing policy per record")
    multivalue = inputs.get("multivalueAnswerRoutingPolicy")
    if multivalue is not None and not isinstance(multivalue, bool):
        raise EdgePlanError(
            f"{where}: multivalueAnswerRoutingPolicy: expected true or false, got {multivalue!r}"
        )
    policies = [
        key
        for key, value in (
            ("failoverRoutingPolicies", failover),
            ("weightedRoutingPolicies", weighted),
            ("multivalueAnswerRoutingPolicy", multivalue),
        )
        if value
    ]
    if len(policies) > 1:
        raise EdgePlanError(f"{where}: {' and '.join(policies)}: a record has one routing policy")
    alias = None
    if aliases:
        a = aliases[0]
        alias = AliasTarget(
            name=normalise(_known(where, "aliases[0].name", a.get("name"))),
            zone_id=str(a.get("zoneId", "")),
            evaluate_target_health=bool(a.get("evaluateTargetHealth", False)),
        )
    values = tuple(str(v) for v in inputs.get("records") or [])
    ttl = inputs.get("ttl")
    if alias is None and not values:
        raise EdgePlanError(f"{where}: records: a record that is not an alias needs values")
    if alias is None and ttl is None:
        raise EdgePlanError(f"{where}: ttl: a record that is not an alias needs a TTL")
    if alias is not None and (values or ttl is not None):
        raise EdgePlanError(f"{where}: an alias takes its target's values and TTL; drop records/ttl")
    rtype = str(inputs.get("type", "")).upper()
    if multivalue:
        if alias is not None:
            raise EdgePlanError(
                f"{where}: multivalueAnswerRoutingPolicy: Route 53 has no multivalue alias records"
            )
        if rtype in _NOT_MULTIVALUE_TYPES:
            raise EdgePlanError(
                f"{where}: multivalueAnswerRoutingPolicy: Route 53 refuses it for a {rtype} record"
            )
        if not inputs.get("setIdentifier"):
            raise EdgePlanError(f"{where}: setIdentifier: a multivalue record needs one")
    if rtype == "CNAME" and len(values) > 1:
        raise EdgePlanError(f"{where}: records: a CNAME has one value, got {list(values)}")
    health_check_id = inputs.get("healthCheckId")
    return RecordSpec(
        resource=name,
        zone_id=str(inputs.get("zoneId", "")),
        name=normalise(_known(where, "name", inputs.get("name"))),
        type=rtype,
        ttl=_int(where, "ttl", ttl) if ttl is not None else None,
        values=tuple(normalise(_known(where, "records", v)) if rtype == "CNAME" else v for v in values),
        alias=alias,
        set_identifier=inputs.get("setIdentifier") or None,
        health_check_id=_known(where, "healthCheckId", health_check_id) if health_check_id else None,
        failover=str(failover[0].get("type")).upper() if failover else None,  # type: ignore[arg-type]
        weight=_int(where, "weightedRoutingPolicies[0].weight", weighted[0].get("weight"))
        if weighted
        else None,
        multivalue=bool(multivalue),
    )


def edge_from_plan(resources: Iterable[Any]) -> Edge:
    """The Route 53 part of a plan: ``resources`` are ``PlannedResource`` objects or the plain
    dicts of a plan JSON's ``resources``. Every problem names the resource and the field."""
    checks: list[HealthCheckSpec] = []
    records: list[RecordSpec] = []
    for resource in resources:
        typ, name, inputs, rid = resource_view(resource)
        if typ == HEALTH_CHECK_TYPE:
            checks.append(health_check_spec(name, rid, inputs))
        elif typ == RECORD_TYPE:
            records.append(record_spec(name, inputs))
    if not records:
        raise EdgePlanError(f"the plan has no {RECORD_TYPE}: is it the edge stack's plan?")
    edge = Edge(records=tuple(records), health_checks=tuple(checks))
    edge.zone()  # validates the groups, aliases and health-check references
    return edge


def plan_resources(path: Path) -> list[dict[str, Any]]:
    """The resources of a plan JSON file (``skyfleet plan --out``), or an error naming the file
    and what is wrong with it."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgePlanError(f"{path}: cannot read the plan: {exc}") from None
    resources = doc.get("resources") if isinstance(doc, dict) else None
    if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
        raise EdgePlanError(f"{path}: resources: expected a plan JSON with a list of resources")
    return resources


def load_plan(path: Path) -> Edge:
    """The Route 53 part of a plan JSON file (``skyfleet plan --out``)."""
    resources = plan_resources(path)
    try:
        return edge_from_plan(resources)
    except EdgePlanError as exc:
        raise EdgePlanError(f"{path}: {exc}") from None


# --- answering queries --------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One resource record of an answer."""

    name: str
    type: str
    ttl: int
    value: str


Health = Callable[[str], bool]  # health check id -> healthy now


@dataclass
class _Group:
    """The records of one name (all of one type and one routing policy)."""

    name: str
    type: str
    policy: Literal["simple", "failover", "weighted", "multivalue"]
    records: list[RecordSpec] = field(default_factory=list)

    def member(self, kind: str) -> RecordSpec | None:
        return next((r for r in self.records if r.failover == kind), None)


class Zone:
    """The records of the edge, answered as Route 53 answers them."""

    def __init__(self, records: Sequence[RecordSpec], *, known_checks: set[str] | None = None) -> None:
        self._groups: dict[str, _Group] = {}
        for rec in records:
            where = f"record {rec.resource}"
            if rec.type not in SERVED_TYPES:
                raise EdgePlanError(
                    f"{where}: type: {rec.type!r} is not emulated (served: {', '.join(SERVED_TYPES)})"
                )
            policy: Literal["simple", "failover", "weighted", "multivalue"] = (
                "failover"
                if rec.failover
                else "weighted"
                if rec.weight is not None
                else "multivalue"
                if rec.multivalue
                else "simple"
            )
            if rec.multivalue and (rec.alias is not None or rec.type in _NOT_MULTIVALUE_TYPES):
                what = "alias" if rec.alias is not None else rec.type
                raise EdgePlanError(f"{where}: Route 53 has no multivalue {what} records")
            if rec.multivalue and policy != "multivalue":
                raise EdgePlanError(f"{where}: multivalue and {policy} routing: a record has one policy")
            group = self._groups.setdefault(rec.name, _Group(rec.name, rec.type, policy))
            if group.type != rec.type:
                raise EdgePlanError(
                    f"{where}: type: {rec.name} has {group.type} records already; "
                    f"a name with a CNAME can have no other type"
                )
            if group.policy != policy:
                raise EdgePlanError(f"{where}: {rec.name} mixes {group.policy} and {policy} routing")
            if policy == "simple" and group.records:
                raise EdgePlanError(f"{where}: {rec.name} has two records without a routing policy")
            if policy != "simple" and not rec.set_identifier:
                raise EdgePlanError(f"{where}: setIdentifier: a {policy} record needs one")
            if rec.set_identifier in {r.set_identifier for r in group.records}:
                raise EdgePlanError(f"{where}: setIdentifier {rec.set_identifier!r} is used twice")
            if rec.failover and group.member(rec.failover):
                raise EdgePlanError(f"{where}: {rec.name} has two {rec.failover} records")
            if known_checks is not None and rec.health_check_id and rec.health_check_id not in known_checks:
                raise EdgePlanError(
                    f"{where}: healthCheckId {rec.health_check_id!r} is not a health check of the plan"
                )
            group.records.append(rec)
        for group in self._groups.values():
            for rec in group.records:
                if rec.alias is not None:
                    self._check_alias(rec, [group.name])

    def _check_alias(self, rec: RecordSpec, path: list[str]) -> None:
        assert rec.alias is not None
        target = self._groups.get(rec.alias.name)
        where = f"record {rec.resource}: aliases[0].name"
        if target is None:
            raise EdgePlanError(f"{where}: {rec.alias.name} has no record in the zone")
        if target.type != rec.type:
            raise EdgePlanError(
                f"{where}: an alias must have its target's type ({target.type}), not {rec.type}"
            )
        if target.name in path:
            raise EdgePlanError(f"{where}: alias loop {' -> '.join([*path, target.name])}")
        for nxt in target.records:
            if nxt.alias is not None:
                self._check_alias(nxt, [*path, target.name])

    def __contains__(self, name: str) -> bool:
        return normalise(name) in self._groups

    @property
    def names(self) -> list[str]:
        return list(self._groups)

    def record_healthy(self, rec: RecordSpec, health: Health) -> bool:
        if rec.health_check_id and not health(rec.health_check_id):
            return False
        if rec.alias is not None and rec.alias.evaluate_target_health:
            return self.healthy(rec.alias.name, health)
        return True

    def healthy(self, name: str, health: Health) -> bool:
        """Whether ``name`` has a healthy record (what an alias evaluating it inherits)."""
        group = self._groups.get(normalise(name))
        return group is not None and any(self.record_healthy(r, health) for r in group.records)

    def candidates(self, name: str, health: Health, rng: random.Random | None = None) -> list[RecordSpec]:
        """The records Route 53 may answer with now (one for failover, the weighted pool, the
        multivalue records). Multivalue: the healthy records, else (all unhealthy) every record;
        with ``rng``, a random eight of them when there are more (one answer's records), without
        it all of them (every record some answer may hold now)."""
        group = self._groups[normalise(name)]
        if group.policy == "simple":
            return list(group.records)
        if group.policy == "multivalue":
            pool = [r for r in group.records if self.record_healthy(r, health)] or list(group.records)
            if rng is not None and len(pool) > MULTIVALUE_MAX:
                pool = rng.sample(pool, MULTIVALUE_MAX)
            return pool
        if group.policy == "failover":
            primary, secondary = group.member("PRIMARY"), group.member("SECONDARY")
            for rec in (primary, secondary):
                if rec is not None and self.record_healthy(rec, health):
                    return [rec]
            # Neither is healthy: Route 53 answers with the primary (when there is one).
            return [primary or secondary]  # type: ignore[list-item]
        healthy = [r for r in group.records if self.record_healthy(r, health)]
        for pool in (
            [r for r in healthy if r.weight],  # healthy, non-zero weight
            [r for r in healthy if not r.weight],  # then healthy weight-0 records
            [r for r in group.records if r.weight],  # none healthy: all count as healthy
            list(group.records),  # every weight is 0: equal chances
        ):
            if pool:
                return pool
        return []

    def choose(self, name: str, health: Health, rng: random.Random) -> RecordSpec:
        """The one record a simple, failover or weighted answer comes from."""
        pool = self.candidates(name, health)
        if len(pool) == 1:
            return pool[0]
        weights = [r.weight or 0 for r in pool]
        if not any(weights):
            return rng.choice(pool)
        return rng.choices(pool, weights=weights)[0]

    def answer(self, name: str, health: Health, rng: random.Random, *, _depth: int = 0) -> list[Answer]:
        """Route 53's answer for ``name`` (its own records; a CNAME's target is not followed).
        Raises KeyError for a name the zone does not have."""
        if _depth > MAX_CHAIN:
            raise EdgePlanError(f"{name}: alias chain longer than {MAX_CHAIN}")
        owner = normalise(name)
        if self._groups[owner].policy == "multivalue":
            # Every value of every record picked, each once, shuffled.
            picked: dict[str, int] = {}
            for r in self.candidates(owner, health, rng):
                for v in r.values:
                    picked.setdefault(v, r.ttl or 0)
            order = list(picked)
            rng.shuffle(order)
            return [Answer(owner, self._groups[owner].type, picked[v], v) for v in order]
        rec = self.choose(owner, health, rng)
        if rec.alias is not None:
            target = self.answer(rec.alias.name, health, rng, _depth=_depth + 1)
            return [Answer(owner, a.type, a.ttl, a.value) for a in target]
        return [Answer(owner, rec.type, rec.ttl or 0, v) for v in rec.values]

    def routing(self, health: Health) -> dict[str, list[str]]:
        """Per name, where answers go now (values of the eligible records; aliases followed):
        what the server logs when health changes."""
        out: dict[str, list[str]] = {}
        for name in self._groups:
            out[name] = sorted(
                {v for rec in self.candidates(name, health) for v in self._targets(rec, health)}
            )
        return out

    def _targets(self, rec: RecordSpec, health: Health, depth: int = 0) -> list[str]:
        if rec.alias is None or depth > MAX_CHAIN:
            return list(rec.values)
        return [
            v for r in self.candidates(rec.alias.name, health) for v in self._targets(r, health, depth + 1)
        ]


# --- health checks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str
    started: float  # wall-clock time the probe was sent
    duration: float  # seconds until its result
    address: str | None = None
    status: int | None = None


class _Timeout(Exception):
    pass


async def probe(spec: HealthCheckSpec, resolve: Callable[[str], list[str]]) -> ProbeResult:
    """One probe, as one Route 53 checker sends it."""
    started, t0 = time.time(), time.monotonic()

    def done(ok: bool, reason: str, address: str | None = None, status: int | None = None) -> ProbeResult:
        return ProbeResult(ok, reason, started, time.monotonic() - t0, address, status)

    address = spec.ip_address
    if address is None:
        assert spec.fqdn is not None
        # Route 53 resolves the FQDN for every check, so a changed address is followed.
        found = resolve(spec.fqdn)
        if not found:
            return done(False, f"Failure: DNS resolution of {spec.fqdn} failed")
        address = found[0]
    writer: asyncio.StreamWriter | None = None
    try:
        try:
            async with asyncio.timeout(spec.connect_timeout):
                reader, writer = await asyncio.open_connection(address, spec.port)
        except TimeoutError:
            return done(False, "Failure: Connection timed out", address)
        except OSError as exc:
            # asyncio's message is "Connect call failed"; the errno says why.
            return done(False, f"Failure: {os.strerror(exc.errno) if exc.errno else exc}", address)
        if spec.type is CheckType.TCP:
            return done(True, "Success: TCP connection established", address)
        try:
            async with asyncio.timeout(spec.response_timeout):
                if spec.type is CheckType.HTTPS:
                    await writer.start_tls(
                        _NO_VERIFY, server_hostname=spec.fqdn if spec.enable_sni and spec.fqdn else None
                    )
                request = (
                    f"GET {spec.resource_path} HTTP/1.1\r\nHost: {spec.host_header}\r\n"
                    f"User-Agent: {USER_AGENT.format(ref=spec.id)}\r\n"
                    "Accept: */*\r\nConnection: close\r\n\r\n"
                )
                writer.write(request.encode("ascii"))
                await writer.drain()
                line = await reader.readline()
        except TimeoutError:
            return done(False, f"Failure: no HTTP status within {spec.response_timeout:g} s", address)
        except (OSError, ssl.SSLError, EOFError) as exc:
            return done(False, f"Failure: {type(exc).__name__}: {exc}", address)
        parts = line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            return done(False, f"Failure: not an HTTP response: {line[:60]!r}", address)
        status = int(parts[1])
        ok = 200 <= status < 400
        prefix = "Success" if ok else "Failure"
        return done(ok, f"{prefix}: HTTP Status Code {status}", address, status)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await writer.wait_closed()


def _no_verify_context() -> ssl.SSLContext:
    # Route 53 does not validate the certificate: an invalid or expired one passes.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_NO_VERIFY = _no_verify_context()


@dataclass
class CheckerState:
    """One checker's verdict and the run of results that disagree with it."""

    healthy: bool = True
    streak: int = 0
    probes: int = 0


class HealthCheckState:
    """The status of one health check from its checkers' results."""

    def __init__(self, spec: HealthCheckSpec) -> None:
        self.spec = spec
        # A new health check is healthy until there is enough data (Route 53's rule).
        self.checkers = {region: CheckerState() for region in spec.regions}
        self.healthy = self._aggregate()

    def healthy_checkers(self) -> int:
        return sum(c.healthy for c in self.checkers.values())

    def _aggregate(self) -> bool:
        if self.spec.disabled:
            return True  # a disabled check is always healthy
        up = self.healthy_checkers() / len(self.checkers) > HEALTHY_FRACTION
        return up != self.spec.inverted

    def record(self, region: str, ok: bool) -> tuple[bool, bool]:
        """Apply one result of ``region``'s checker; return (checker changed, check changed)."""
        checker = self.checkers[region]
        checker.probes += 1
        if ok == checker.healthy:
            checker.streak = 0
            return False, False
        checker.streak += 1
        if checker.streak < self.spec.failure_threshold:
            return False, False
        checker.healthy, checker.streak = ok, 0
        before, self.healthy = self.healthy, self._aggregate()
        return True, before != self.healthy


def timestamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).isoformat(timespec="microseconds")


Event = dict[str, Any]


class HealthCheckers:
    """Every checker of every health check, running on the current asyncio loop.

    ``on_event`` gets a dict per probe (``event: probe``, if ``log_probes``), per checker
    verdict change (``event: checker``) and per health-check status change (``event: health``),
    each with ``t`` (epoch seconds) and ``time`` (ISO 8601, UTC).
    """

    def __init__(
        self,
        specs: Iterable[HealthCheckSpec],
        resolve: Callable[[str], list[str]],
        on_event: Callable[[Event], None],
        *,
        log_probes: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self._resolve = resolve
        self._on_event = on_event
        self.log_probes = log_probes
        self._rng = rng or random.Random()
        self._specs = {s.id: s for s in specs}
        self.states: dict[str, HealthCheckState] = {}
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}

    def healthy(self, check_id: str) -> bool:
        return self.states[check_id].healthy

    def start(self) -> None:
        for spec in self._specs.values():
            self._start(spec)

    def _start(self, spec: HealthCheckSpec) -> None:
        self.states[spec.id] = HealthCheckState(spec)
        if spec.disabled:
            self._tasks[spec.id] = []
            return
        # Checkers in different regions do not coordinate: each has its own phase.
        self._tasks[spec.id] = [
            asyncio.create_task(
                self._checker(spec, region, self._rng.uniform(0, spec.request_interval)),
                name=f"checker {spec.site}/{region}",
            )
            for region in spec.regions
        ]

    async def stop(self) -> None:
        for check_id in list(self._tasks):
            await self._stop(check_id)

    async def _stop(self, check_id: str) -> None:
        tasks = self._tasks.pop(check_id, [])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def update(self, specs: Iterable[HealthCheckSpec]) -> None:
        """Use ``specs`` from now on: unchanged checks keep their state, others start anew."""
        new = {s.id: s for s in specs}
        for check_id, spec in list(self._specs.items()):
            if new.get(check_id) != spec:
                await self._stop(check_id)
                self.states.pop(check_id, None)
        for check_id, spec in new.items():
            if self._specs.get(check_id) != spec:
                self._start(spec)
        self._specs = new

    def _emit(self, event: str, spec: HealthCheckSpec, at: float, **fields: Any) -> None:
        self._on_event(
            {"event": event, "time": timestamp(at), "t": at, "check": spec.id, "site": spec.site, **fields}
        )

    async def _checker(self, spec: HealthCheckSpec, region: str, phase: float) -> None:
        loop = asyncio.get_running_loop()
        interval = spec.request_interval
        due = loop.time() + phase
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            late = loop.time() - due  # how far a busy machine pushed this probe past its tick
            result = await probe(spec, self._resolve)
            at = time.time()
            state = self.states[spec.id]
            checker_changed, check_changed = state.record(region, result.ok)
            checker = state.checkers[region]
            if self.log_probes:
                self._emit(
                    "probe", spec, result.started, region=region, ok=result.ok,
                    reason=result.reason, status=result.status, address=result.address,
                    duration_ms=round(result.duration * 1000, 1), late_ms=round(late * 1000, 1),
                    checker_healthy=checker.healthy, streak=checker.streak,
                )  # fmt: skip
            if checker_changed:
                self._emit("checker", spec, at, region=region, healthy=checker.healthy, reason=result.reason)
            if check_changed:
                self._emit(
                    "health", spec, at, healthy=state.healthy,
                    healthy_checkers=state.healthy_checkers(), checkers=len(state.checkers),
                )  # fmt: skip
            due += interval
            now = loop.time()
            if due < now:
                # The probe outlasted the interval (only with intervals shorter than the
                # timeouts): skip the ticks it covered rather than probing in a burst.
                due += math.ceil((now - due) / interval) * interval
