"""AWS faults: an ECS service scaled to 0, its task security group's ingress cut, a Route 53
health check inverted; and the Route 53 checker observations that date detection.

Each acts from the stack's outputs and returns what it changed, so its rollback puts exactly
that back. boto3 is imported when a client is first needed, so a dry run needs neither it nor
credentials; it honours ``AWS_ENDPOINT_URL`` (the tests point it at moto_server).
"""

from __future__ import annotations

import time
from typing import Any

from infra.outputs import EdgeOutputs, SiteOutputs
from skyfleet.drills.actions.registry import Applied, StackFault, Undo
from skyfleet.drills.target import StackTarget, Target

SDK_MODULES = ("boto3",)


def _client(service: str, region: str | None = None) -> Any:
    import boto3

    return boto3.client(service, region_name=region) if region else boto3.client(service)


class AwsFaultError(RuntimeError):
    """An AWS fault cannot be applied to this stack; the message names the missing output."""


def _need(value: str | None, output: str, stack: SiteOutputs | EdgeOutputs) -> str:
    if not value:
        raise AwsFaultError(f"{stack.target} stack outputs have no {output!r}; this fault needs it")
    return value


def service_name(site: SiteOutputs, service: str) -> str:
    names = {"api": site.api_service_name, "worker": site.worker_service_name}
    if service not in names:
        raise AwsFaultError(f"service must be 'api' or 'worker', got {service!r}")
    return _need(names[service], f"{service}ServiceName", site)


def _ecs(site: SiteOutputs) -> Any:
    return _client("ecs", site.region)


def desired_count(site: SiteOutputs, service: str) -> int:
    cluster = _need(site.cluster_name, "clusterName", site)
    found = _ecs(site).describe_services(cluster=cluster, services=[service_name(site, service)])
    services = found.get("services") or []
    if not services:
        raise AwsFaultError(f"ECS service {service_name(site, service)!r} not found in cluster {cluster!r}")
    return int(services[0]["desiredCount"])


def _set_count(site: SiteOutputs, service: str, count: int) -> None:
    _ecs(site).update_service(
        cluster=_need(site.cluster_name, "clusterName", site),
        service=service_name(site, service),
        desiredCount=count,
    )


# Application Auto Scaling's dimension for an ECS service's desired count.
ECS_DIMENSION = "ecs:service:DesiredCount"
SUSPENDED_KEYS = ("DynamicScalingInSuspended", "DynamicScalingOutSuspended", "ScheduledScalingSuspended")


def _scalable_target(site: SiteOutputs, service: str) -> tuple[str, dict[str, Any] | None]:
    """The service's Application Auto Scaling target (its resource id, and the target or None)."""
    rid = f"service/{_need(site.cluster_name, 'clusterName', site)}/{service_name(site, service)}"
    found = _client("application-autoscaling", site.region).describe_scalable_targets(
        ServiceNamespace="ecs", ResourceIds=[rid], ScalableDimension=ECS_DIMENSION
    )
    targets = found.get("ScalableTargets") or []
    return rid, (targets[0] if targets else None)


def set_scaling_suspended(
    site: SiteOutputs, service: str, suspended: dict[str, bool]
) -> dict[str, bool] | None:
    """Set the service's scaling suspension; return the previous one (None: it has no target).
    While a scaling policy may run, Application Auto Scaling puts the count back to the minimum,
    which would end a scale-to-zero fault partway."""
    rid, target = _scalable_target(site, service)
    if target is None:
        return None
    previous = {k: bool((target.get("SuspendedState") or {}).get(k, False)) for k in SUSPENDED_KEYS}
    _client("application-autoscaling", site.region).register_scalable_target(
        ServiceNamespace="ecs", ResourceId=rid, ScalableDimension=ECS_DIMENSION, SuspendedState=suspended
    )
    return previous


def scale_to_zero(site: SiteOutputs, service: str) -> tuple[int, dict[str, bool] | None, float]:
    """Suspend the service's scaling, then set its desired count to 0; return what was there,
    and when the count was set (the fault's moment: the calls before it do not count). A count
    that cannot be set gives the scaling back as it was: nothing is left half-applied."""
    previous = desired_count(site, service)  # a service that is not there fails before any change
    suspended = set_scaling_suspended(site, service, dict.fromkeys(SUSPENDED_KEYS, True))
    try:
        at = time.time()
        _set_count(site, service, 0)
        return previous, suspended, at
    except BaseException:
        if suspended is not None:
            set_scaling_suspended(site, service, suspended)
        raise


def restore_service(
    site: SiteOutputs, service: str, count: int | None, suspended: dict[str, bool] | None
) -> int:
    """The desired count back (``count``, else the scaling minimum the stack declared), then
    its scaling as it was (``suspended``, else running); returns the count set."""
    _, target = _scalable_target(site, service)
    if count is None:
        if target is None:
            raise AwsFaultError(
                f"ECS service {service_name(site, service)!r} has no scalable target to read its "
                "minimum from: give the rollback the count to restore"
            )
        count = int(target["MinCapacity"])
    _set_count(site, service, count)
    if target is not None:
        set_scaling_suspended(site, service, suspended or dict.fromkeys(SUSPENDED_KEYS, False))
    return count


def _ec2(site: SiteOutputs) -> Any:
    return _client("ec2", site.region)


# The port the cut rules are pointed at: nothing in a task listens there. Rules are changed in
# place, not revoked: a revoked rule comes back under a new id, and the stack's state names the
# old one (a refresh would drop it, and the next ``pulumi up`` fail to create it again).
CUT_PORT = 9


def ingress_rules(site: SiteOutputs) -> list[dict[str, Any]]:
    """The task security group's ingress rules (DescribeSecurityGroupRules' form, with ids)."""
    group_id = _need(site.task_security_group_id, "taskSecurityGroupId", site)
    found = _ec2(site).describe_security_group_rules(Filters=[{"Name": "group-id", "Values": [group_id]}])
    return [r for r in found.get("SecurityGroupRules", []) if not r.get("IsEgress")]


def _rule_request(rule: dict[str, Any], **change: Any) -> dict[str, Any]:
    """A ModifySecurityGroupRules entry setting ``rule`` (as described) with ``change``."""
    body = {
        k: rule[k]
        for k in ("IpProtocol", "FromPort", "ToPort", "CidrIpv4", "CidrIpv6", "PrefixListId", "Description")
        if rule.get(k) is not None
    }
    if (rule.get("ReferencedGroupInfo") or {}).get("GroupId"):
        body["ReferencedGroupId"] = rule["ReferencedGroupInfo"]["GroupId"]
    return {"SecurityGroupRuleId": rule["SecurityGroupRuleId"], "SecurityGroupRule": {**body, **change}}


def cut_security_group(site: SiteOutputs) -> list[dict[str, Any]]:
    """Point every ingress rule of the task security group at a port nothing listens on, each
    keeping its id; return the rules as they were, for the rollback."""
    group_id = _need(site.task_security_group_id, "taskSecurityGroupId", site)
    rules = ingress_rules(site)
    if rules:
        cut = [_rule_request(r, IpProtocol="tcp", FromPort=CUT_PORT, ToPort=CUT_PORT) for r in rules]
        _ec2(site).modify_security_group_rules(GroupId=group_id, SecurityGroupRules=cut)
    return rules


def restore_security_group(site: SiteOutputs, rules: list[dict[str, Any]]) -> int:
    """Set each rule back as it was, under the same id."""
    group_id = _need(site.task_security_group_id, "taskSecurityGroupId", site)
    if rules:
        _ec2(site).modify_security_group_rules(
            GroupId=group_id, SecurityGroupRules=[_rule_request(r) for r in rules]
        )
    return len(rules)


def _route53() -> Any:
    return _client("route53")


def health_check_id(edge: EdgeOutputs, site: str) -> str:
    if site not in edge.health_check_ids:
        raise AwsFaultError(
            f"edge outputs healthCheckIds has no site {site!r}: {sorted(edge.health_check_ids)}"
        )
    return edge.health_check_ids[site]


def health_check_inverted(edge: EdgeOutputs, site: str) -> bool:
    found = _route53().get_health_check(HealthCheckId=health_check_id(edge, site))
    return bool(found["HealthCheck"]["HealthCheckConfig"].get("Inverted", False))


def set_health_check_inverted(edge: EdgeOutputs, site: str, inverted: bool) -> bool:
    """Invert (or restore) a site's Route 53 health check; return the previous setting."""
    previous = health_check_inverted(edge, site)
    _route53().update_health_check(HealthCheckId=health_check_id(edge, site), Inverted=inverted)
    return previous


def health_check_events(edge: EdgeOutputs, site: str) -> list[dict[str, Any]]:
    """What Route 53's checkers last reported for a site, as health events (for detection).

    Each checker's own ``CheckedTime`` dates its event, so polling every few seconds still
    yields the time a checker first saw the failure. A checker reports what the endpoint
    answered; an inverted check counts that the other way ("Route 53 considers the health check
    to be unhealthy when the status is healthy and vice versa"), and so does each event here.
    """
    status = _route53().get_health_check_status(HealthCheckId=health_check_id(edge, site))
    inverted = health_check_inverted(edge, site)
    events = []
    for o in status.get("HealthCheckObservations", []):
        report = o.get("StatusReport", {})
        checked = report.get("CheckedTime")
        success = str(report.get("Status", "")).startswith("Success")
        events.append(
            {
                "time": checked.timestamp() if hasattr(checked, "timestamp") else time.time(),
                "site": site,
                "server": o.get("Region") or o.get("IPAddress"),
                "state": "UP" if success != inverted else "DOWN",
                "reason": report.get("Status", "") + (" (the check is inverted)" if inverted else ""),
            }
        )
    return events


# --- the faults -------------------------------------------------------------------------------


class ServiceScaleToZero(StackFault):
    """Scale the site's ECS service (api or worker) to 0 tasks."""

    platform = "aws"
    fault, rollback, key = "aws_service_scale_to_zero", "aws_service_restore", "ecs:{service}"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        where = "<cluster>/<service>"
        if isinstance(target, StackTarget):
            site = target.site()
            where = f"{site.cluster_name}/{service_name(site, args.get('service', 'api'))}"
        return (
            f"aws: Application Auto Scaling suspends {where}'s scaling, then ECS update_service "
            f"{where} desiredCount=0"
        )

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return (
            "aws: ECS update_service desiredCount back to the count read at the fault (run on its own: "
            "the given count, else the scaling minimum), then the scaling as it was"
        )

    def apply(self, stack: StackTarget, service: str = "api") -> Applied:
        site = stack.site()
        previous, suspended, at = scale_to_zero(site, service)
        return Applied(
            site.site,
            f"ECS {service} scaled 0 (was {previous})" + (", its scaling suspended" if suspended else ""),
            {"previous_desired_count": previous, "previous_suspended_state": suspended, "time": at},
            saved={"count": previous, "suspended": suspended},
        )

    def resume(self, stack: StackTarget, saved: dict[str, Any], service: str = "api") -> Undo:
        site = stack.site()
        return lambda: restore_service(site, service, int(saved["count"]), saved["suspended"])

    def restore(self, stack: StackTarget, service: str = "api", count: int | None = None) -> Undo | None:
        site = stack.site()
        if count is None and _scalable_target(site, service)[1] is None:
            return None  # no count given and no minimum to read: nothing known to restore
        return lambda: restore_service(site, service, count, None)


class SecurityGroupCut(StackFault):
    """Cut every ingress rule of the site's task security group (each pointed at a port nothing
    listens on, under its own id, so the stack's state still names it)."""

    platform = "aws"
    fault, rollback, key = "aws_security_group_cut", "aws_security_group_restore", "sg-ingress"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        group = (
            target.site().task_security_group_id
            if isinstance(target, StackTarget)
            else "<taskSecurityGroupId>"
        )
        return (
            f"aws: EC2 modify_security_group_rules on {group}: every ingress rule to tcp port {CUT_PORT} "
            "(saved for the rollback)"
        )

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return "aws: EC2 modify_security_group_rules: the saved rules back, under the same ids"

    def apply(self, stack: StackTarget) -> Applied:
        site = stack.site()
        rules = cut_security_group(site)
        return Applied(
            site.site,
            f"security group {site.task_security_group_id} ingress cut ({len(rules)} rules)",
            {"revoked_rules": len(rules)},
            saved={"rules": rules},
        )

    def resume(self, stack: StackTarget, saved: dict[str, Any]) -> Undo:
        site = stack.site()
        return lambda: restore_security_group(site, list(saved["rules"]))

    def restore(self, stack: StackTarget) -> Undo | None:
        return None  # the revoked rules are known only to the fault that saved them


class HealthCheckInvert(StackFault):
    """Invert a site's Route 53 health check: the edge sees the site unhealthy."""

    platform = "aws"
    fault, rollback, key = "aws_health_check_invert", "aws_health_check_restore", "hc:{site}"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        hc = "<healthCheckIds[site]>"
        if isinstance(target, StackTarget):
            hc = health_check_id(target.edge(args.get("edge_stack")), args["site"])
        return (
            f"aws: Route 53 update_health_check {hc} Inverted=true (site {args['site']!r} reported unhealthy)"
        )

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return "aws: Route 53 update_health_check Inverted back to its previous value"

    def apply(self, stack: StackTarget, site: str, edge_stack: str | None = None) -> Applied:
        edge = stack.edge(edge_stack)
        previous = set_health_check_inverted(edge, site, True)
        return Applied(
            site,
            f"Route 53 health check of {site} inverted",
            {"health_check_id": health_check_id(edge, site), "previous_inverted": previous},
            saved={"inverted": previous},
        )

    def resume(
        self, stack: StackTarget, saved: dict[str, Any], site: str, edge_stack: str | None = None
    ) -> Undo:
        edge = stack.edge(edge_stack)
        return lambda: set_health_check_inverted(edge, site, bool(saved["inverted"]))

    def restore(self, stack: StackTarget, site: str, edge_stack: str | None = None) -> Undo | None:
        return lambda: set_health_check_inverted(stack.edge(edge_stack), site, False)


aws_service_scale_to_zero, aws_service_restore = ServiceScaleToZero.functions()
aws_security_group_cut, aws_security_group_restore = SecurityGroupCut.functions()
aws_health_check_invert, aws_health_check_restore = HealthCheckInvert.functions()
