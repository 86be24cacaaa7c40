"""Route 53's rules over the changes ``pulumi up`` makes from one edge plan to the next.

A deployed edge changes by deploying a new plan. Pulumi walks the new plan's resources in the
order the program registers them (a record after what it depends on) and creates the new ones,
updates the changed ones, and replaces one whose identifying inputs changed by creating the new
one before deleting the old (unless it asks for ``deleteBeforeReplace``). What the new plan no
longer has, and the old halves of replacements, it deletes at the end, dependents first.

Route 53 applies each of those calls on its own, and refuses one that would leave the zone in a
state it does not allow (:class:`~skyfleet.lab.route53.Zone` states them): a second PRIMARY
record for a name, one name's records under two routing policies, a set identifier twice, an
alias to a name with no record, a record naming a health check that does not exist. An update of
a record keeps its name, type and set identifier, and Route 53 makes it in one atomic change.

:func:`replay` takes those steps one at a time, in that order, and raises
:class:`~skyfleet.lab.route53.EdgePlanError` at the first one Route 53 would refuse, naming it.
Pulumi may run steps that do not depend on each other at once, in any order among them; the
replay does not try those orders.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from skyfleet.lab.route53 import (
    HEALTH_CHECK_TYPE,
    RECORD_TYPE,
    EdgePlanError,
    RecordSpec,
    Zone,
    health_check_spec,
    record_spec,
    resource_field,
    resource_view,
)

# Inputs whose change replaces the resource (the AWS provider's schema: ForceNew). A record's set
# identifier and type are counted as older provider releases do; newer ones may change either in
# one atomic change, so a replay that fails only on such a step may pass for real. The edge's own
# records never change either.
REPLACE_KEYS = {
    RECORD_TYPE: ("zoneId", "name", "type", "setIdentifier"),
    HEALTH_CHECK_TYPE: ("type", "requestInterval", "measureLatency", "referenceName", "routingControlArn"),
}


@dataclass(frozen=True)
class _Planned:
    key: str  # the URN without its stack: the same resource in both plans
    type: str
    name: str
    inputs: Mapping[str, Any]
    id: str | None
    delete_before_replace: bool


def _route53(resources: Iterable[Any]) -> list[_Planned]:
    """A plan's Route 53 records and health checks (``PlannedResource`` objects or a plan JSON's
    dicts), in the order the program registered them. A health check's id is its key here, and
    records name it so: a check kept from one plan to the next keeps its id in Route 53, whatever
    id each offline plan gave it."""
    found = []
    for resource in resources:
        typ, name, inputs, rid = resource_view(resource)
        if typ not in REPLACE_KEYS:
            continue
        options = resource_field(resource, "options") or {}
        found.append(
            _Planned(
                key=str(resource_field(resource, "urn")).split("::", 1)[-1],
                type=typ,
                name=name,
                inputs=inputs,
                id=rid,
                delete_before_replace=bool(options.get("deleteBeforeReplace")),
            )
        )
    keys = {r.id: r.key for r in found if r.type == HEALTH_CHECK_TYPE}
    return [
        replace(r, id=r.key)
        if r.type == HEALTH_CHECK_TYPE
        else replace(r, inputs={**r.inputs, "healthCheckId": keys.get(check, check)})
        if (check := r.inputs.get("healthCheckId"))
        else r
        for r in found
    ]


class _Zone:
    """The zone's records and health checks as the update leaves them, step by step."""

    def __init__(self, resources: Iterable[_Planned]) -> None:
        self.records: dict[str, RecordSpec] = {}
        self.checks: dict[str, str] = {}
        self.steps: list[str] = []
        for r in resources:
            self.put(r.key, r)

    def put(self, key: str, r: _Planned) -> None:
        if r.type == RECORD_TYPE:
            self.records[key] = record_spec(r.name, r.inputs)
        else:
            self.checks[key] = health_check_spec(r.name, r.id, r.inputs).id

    def drop(self, key: str) -> None:
        self.records.pop(key, None)
        self.checks.pop(key, None)

    def check(self, where: str, *, writes_record: bool) -> None:
        """Fail, naming ``where``, if Route 53 would not hold the zone as it is now. Route 53 lets
        a health check a record still names be deleted (the record's health is then undefined),
        so only a record being written must name an existing one."""
        known = set(self.checks.values()) if writes_record else None
        try:
            Zone(list(self.records.values()), known_checks=known)
        except EdgePlanError as exc:
            raise EdgePlanError(f"{where}: {exc}") from None

    def step(self, what: str, *, writes_record: bool) -> None:
        """Record ``what`` as done, or fail if Route 53 would refuse it."""
        self.steps.append(what)
        self.check(f"step {len(self.steps)}, {what}: Route 53 refuses it", writes_record=writes_record)


def replay(old: Iterable[Any], new: Iterable[Any]) -> list[str]:
    """The steps ``pulumi up`` takes from the deployed plan ``old`` to ``new`` (each a plan's
    resources), each checked against Route 53's rules; an :class:`EdgePlanError` naming the
    first step Route 53 would refuse."""
    before = {r.key: r for r in _route53(old)}
    after = _route53(new)
    zone = _Zone(before.values())
    zone.check("the deployed plan", writes_record=True)
    deletes: list[tuple[str, _Planned]] = []  # (key in the zone, resource), done last
    for r in after:
        was = before.get(r.key)
        is_record = r.type == RECORD_TYPE
        if was is None:
            zone.put(r.key, r)
            zone.step(f"create {r.name}", writes_record=is_record)
            continue
        if dict(was.inputs) == dict(r.inputs):
            continue
        changed = [k for k in REPLACE_KEYS[r.type] if was.inputs.get(k) != r.inputs.get(k)]
        if not changed:
            zone.put(r.key, r)
            zone.step(f"update {r.name}", writes_record=is_record)
        elif r.delete_before_replace:
            zone.drop(r.key)
            zone.step(f"delete {r.name} (to replace it: {', '.join(changed)} changed)", writes_record=False)
            zone.put(r.key, r)
            zone.step(f"create {r.name} (its replacement)", writes_record=is_record)
        else:
            replaced = f"{r.key}#replaced"
            if is_record:
                zone.records[replaced] = zone.records[r.key]
            else:
                zone.checks[replaced] = zone.checks[r.key]
            zone.put(r.key, r)
            zone.step(
                f"create {r.name} (to replace it: {', '.join(changed)} changed)", writes_record=is_record
            )
            deletes.append((replaced, was))
    kept = {r.key for r in after}
    deletes += [(key, was) for key, was in before.items() if key not in kept]
    # Last, dependents first: the reverse of the order the old plan registered them.
    order = list(before)
    for key, was in sorted(deletes, key=lambda d: order.index(d[1].key), reverse=True):
        zone.drop(key)
        zone.step(
            f"delete {was.name}" + (" (replaced)" if key.endswith("#replaced") else ""), writes_record=False
        )
    return zone.steps
