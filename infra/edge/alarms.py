"""Alarms on the edge: one CloudWatch alarm per site health check, notifying an encrypted SNS
topic. Route 53 publishes health-check metrics only in us-east-1, so the component runs on a
us-east-1 provider whatever the rest of the edge uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.component import Capability


@dataclass(frozen=True)
class AlarmsArgs:
    health_checks: Mapping[str, pulumi.Output[str]]  # site name -> health check id
    tags: Mapping[str, str]


class Alarms(Capability):
    """SNS topic (KMS-encrypted) + a HealthCheckStatus alarm per site."""

    TARGET = "edge"

    def __init__(self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        # Where site-down notifications go; subscribers are added by the operators.
        self.topic = aws.sns.Topic(
            "edge-alarms",
            kms_master_key_id="alias/aws/sns",
            tags=dict(args.tags),
            opts=self.child(),
        )
        self.alarms: dict[str, aws.cloudwatch.MetricAlarm] = {}
        for site, check_id in args.health_checks.items():
            # Fires when the site's health check fails (status 0) for a minute.
            self.alarms[site] = aws.cloudwatch.MetricAlarm(
                f"site-down-{site}",
                alarm_description=f"Route 53 health check of site {site} is failing; traffic fails over",
                namespace="AWS/Route53",
                metric_name="HealthCheckStatus",
                dimensions={"HealthCheckId": check_id},
                statistic="Minimum",
                period=60,
                evaluation_periods=1,
                threshold=1,
                comparison_operator="LessThanThreshold",
                treat_missing_data="breaching",
                alarm_actions=[self.topic.arn],
                ok_actions=[self.topic.arn],
                tags={**args.tags, "site": site},
                opts=self.child(),
            )
        self.register_outputs({"topic": self.topic.arn})
