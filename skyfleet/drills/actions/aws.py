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


def scale_service(site: SiteOutputs, service: str, count: int) -> int:
    """Set the service's desired count; return the previous one (for the rollback)."""
    previous = desired_count(site, service)
    _ecs(site).update_service(
        cluster=_need(site.cluster_name, "clusterName", site),
        service=service_name(site, service),
        desiredCount=count,
    )
    return previous


def _ec2(site: SiteOutputs) -> Any:
    return _client("ec2", site.region)


def cut_security_group(site: SiteOutputs) -> list[dict[str, Any]]:
    """Revoke every ingress rule of the task security group; return them for the rollback."""
    group_id = _need(site.task_security_group_id, "taskSecurityGroupId", site)
    ec2 = _ec2(site)
    groups = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    rules = groups[0].get("IpPermissions", []) if groups else []
    if rules:
        ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=rules)
    return rules


def restore_security_group(site: SiteOutputs, rules: list[dict[str, Any]]) -> int:
    group_id = _need(site.task_security_group_id, "taskSecurityGroupId", site)
    if rules:
        _ec2(site).authorize_security_group_ingress(GroupId=group_id, IpPermissions=rules)
    return len(rules)


def ingress_rules(site: SiteOutputs) -> list[dict[str, Any]]:
    group_id = _need(site.task_security_group_id, "taskSecurityGroupId", site)
    groups = _ec2(site).describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    return groups[0].get("IpPermissions", []) if groups else []


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
    yields the time a checker first saw the failure.
    """
    status = _route53().get_health_check_status(HealthCheckId=health_check_id(edge, site))
    events = []
    for o in status.get("HealthCheckObservations", []):
        report = o.get("StatusReport", {})
        checked = report.get("CheckedTime")
        events.append(
            {
                "time": checked.timestamp() if hasattr(checked, "timestamp") else time.time(),
                "site": site,
                "server": o.get("Region") or o.get("IPAddress"),
                "state": "UP" if str(report.get("Status", "")).startswith("Success") else "DOWN",
                "reason": report.get("Status", ""),
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
        return f"aws: ECS update_service {where} desiredCount=0"

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return "aws: ECS update_service desiredCount back to the count read at the fault"

    def apply(self, stack: StackTarget, service: str = "api") -> Applied:
        site = stack.site()
        previous = scale_service(site, service, 0)
        return Applied(
            site.site,
            f"ECS {service} scaled 0 (was {previous})",
            {"previous_desired_count": previous},
            lambda: scale_service(site, service, previous),
        )

    def restore(self, stack: StackTarget, service: str = "api", count: int | None = None) -> Undo | None:
        return None if count is None else (lambda: scale_service(stack.site(), service, count))


class SecurityGroupCut(StackFault):
    """Revoke every ingress rule of the site's task security group."""

    platform = "aws"
    fault, rollback, key = "aws_security_group_cut", "aws_security_group_restore", "sg-ingress"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        group = (
            target.site().task_security_group_id
            if isinstance(target, StackTarget)
            else "<taskSecurityGroupId>"
        )
        return (
            f"aws: EC2 revoke_security_group_ingress on {group} (every ingress rule, saved for the rollback)"
        )

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return "aws: EC2 authorize_security_group_ingress with the saved rules"

    def apply(self, stack: StackTarget) -> Applied:
        site = stack.site()
        rules = cut_security_group(site)
        return Applied(
            site.site,
            f"security group {site.task_security_group_id} ingress cut ({len(rules)} rules)",
            {"revoked_rules": len(rules)},
            lambda: restore_security_group(site, rules),
        )

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
            lambda: set_health_check_inverted(edge, site, previous),
        )

    def restore(self, stack: StackTarget, site: str, edge_stack: str | None = None) -> Undo | None:
        return lambda: set_health_check_inverted(stack.edge(edge_stack), site, False)


aws_service_scale_to_zero, aws_service_restore = ServiceScaleToZero.functions()
aws_security_group_cut, aws_security_group_restore = SecurityGroupCut.functions()
aws_health_check_invert, aws_health_check_restore = HealthCheckInvert.functions()
