"""AWS faults: an ECS service scaled to 0, its task security group's ingress cut, a Route 53
health check inverted. boto3 honours ``AWS_ENDPOINT_URL`` (the tests point it at moto_server).
"""

from __future__ import annotations

import time
from typing import Any

import boto3

from infra.outputs import EdgeOutputs, SiteOutputs


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
    return boto3.client("ecs", region_name=site.region)


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
    return boto3.client("ec2", region_name=site.region)


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
    return boto3.client("route53")


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
