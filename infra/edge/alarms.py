"""Alarms on the edge: one CloudWatch alarm per site health check, notifying an SNS topic
encrypted with a key of its own. Route 53 publishes health-check metrics only in us-east-1, so
the component runs on a us-east-1 provider whatever the rest of the edge uses.

The key is customer-managed because CloudWatch alarms cannot publish to a topic encrypted with
the AWS-managed ``alias/aws/sns`` key (its policy cannot be changed to let them use it): the
notifications would be dropped without an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.aws.secrets import account_administers, alarms_may_publish
from infra.component import Capability

ALARM_PREFIX = "skyfleet-edge-"


@dataclass(frozen=True)
class AlarmsArgs:
    health_checks: Mapping[str, pulumi.Output[str]]  # site name -> health check id
    tags: Mapping[str, str]
    region: str


class Alarms(Capability):
    """KMS key + SNS topic (encrypted with it) + a HealthCheckStatus alarm per site."""

    TARGET = "edge"

    def __init__(self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        caller = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        partition = aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=self))
        account_root = pulumi.Output.concat("arn:", partition.partition, ":iam::", caller.account_id, ":root")
        alarm_arns = pulumi.Output.concat(
            "arn:", partition.partition, ":cloudwatch:", args.region, ":", caller.account_id,
            ":alarm:", ALARM_PREFIX, "*",
        )  # fmt: skip
        # The topic's key: administered by the account through IAM, usable by this account's
        # edge alarms to publish, and by nothing else.
        self.key = aws.kms.Key(
            "edge-alarms",
            description="Skyfleet edge: site-down notifications",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=pulumi.Output.json_dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        account_administers(account_root),
                        alarms_may_publish(caller.account_id, alarm_arns),
                    ],
                }
            ),
            tags=dict(args.tags),
            opts=self.child(),
        )
        # Where site-down notifications go; subscribers are added by the operators.
        self.topic = aws.sns.Topic(
            "edge-alarms",
            kms_master_key_id=self.key.arn,
            tags=dict(args.tags),
            opts=self.child(),
        )
        self.alarms: dict[str, aws.cloudwatch.MetricAlarm] = {}
        for site, check_id in args.health_checks.items():
            # Fires when the site's health check fails (status 0) for a minute.
            self.alarms[site] = aws.cloudwatch.MetricAlarm(
                f"site-down-{site}",
                name=f"{ALARM_PREFIX}site-down-{site}",
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
        self.register_outputs({"topic": self.topic.arn, "key": self.key.arn})
