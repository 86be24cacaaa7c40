"""Alarms: the signals that the site is failing its users or losing work, published to one
encrypted SNS topic that on-call subscribes to: ALB 5xx rate, unhealthy api targets, messages
in the DLQ, and cache CPU and memory pressure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws.site import AwsSite
from infra.component import Capability

FIVE_XX_PERCENT = 5
CACHE_CPU_PERCENT = 80
CACHE_MEMORY_PERCENT = 80
PERIOD = 60


@dataclass(frozen=True)
class AlarmsArgs:
    site: AwsSite
    kms_key_arn: pulumi.Input[str]
    alb_arn_suffix: pulumi.Input[str]
    target_group_arn_suffix: pulumi.Input[str]
    dlq_name: pulumi.Input[str]
    cache_member_ids: Sequence[pulumi.Input[str]]


class Alarms(Capability):
    TARGET = "aws"

    def __init__(self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        site = args.site

        # The alert topic: encrypted with the site key, which lets CloudWatch alarms publish.
        self.topic = aws.sns.Topic(
            f"{name}-topic",
            name=f"{site.prefix}-alerts",
            kms_master_key_id=args.kms_key_arn,
            tags=site.tagged("alerts"),
            opts=self.child(),
        )
        actions: dict[str, Any] = {"alarm_actions": [self.topic.arn], "ok_actions": [self.topic.arn]}
        lb_dims = {"LoadBalancer": args.alb_arn_suffix}

        # 5xx rate: share of requests answered with a 5xx (by the ALB or the tasks) over 5%.
        aws.cloudwatch.MetricAlarm(
            f"{name}-5xx-rate",
            name=site.alarm_name("alb-5xx-rate"),
            alarm_description=f"More than {FIVE_XX_PERCENT}% of requests fail with 5xx",
            comparison_operator="GreaterThanThreshold",
            threshold=FIVE_XX_PERCENT,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            treat_missing_data="notBreaching",
            metric_queries=[
                self._metric("requests", "RequestCount", lb_dims),
                self._metric("target5xx", "HTTPCode_Target_5XX_Count", lb_dims),
                self._metric("elb5xx", "HTTPCode_ELB_5XX_Count", lb_dims),
                {
                    "id": "rate",
                    "label": "5xx percent",
                    "expression": "100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests",
                    "return_data": True,
                },
            ],
            tags=site.tagged("alb-5xx-rate"),
            opts=self.child(),
            **actions,
        )
        # Unhealthy hosts: any api target failing /readyz for three minutes.
        aws.cloudwatch.MetricAlarm(
            f"{name}-unhealthy-hosts",
            name=site.alarm_name("unhealthy-hosts"),
            alarm_description="An api task fails its readiness check",
            namespace="AWS/ApplicationELB",
            metric_name="UnHealthyHostCount",
            dimensions={"LoadBalancer": args.alb_arn_suffix, "TargetGroup": args.target_group_arn_suffix},
            statistic="Maximum",
            period=PERIOD,
            evaluation_periods=3,
            comparison_operator="GreaterThanThreshold",
            threshold=0,
            treat_missing_data="breaching",
            tags=site.tagged("unhealthy-hosts"),
            opts=self.child(),
            **actions,
        )
        # DLQ depth: any message in the DLQ is a task that failed every attempt.
        aws.cloudwatch.MetricAlarm(
            f"{name}-dlq-depth",
            name=site.alarm_name("dlq-depth"),
            alarm_description="Tasks landed in the dead-letter queue",
            namespace="AWS/SQS",
            metric_name="ApproximateNumberOfMessagesVisible",
            dimensions={"QueueName": args.dlq_name},
            statistic="Maximum",
            period=300,
            evaluation_periods=1,
            comparison_operator="GreaterThanThreshold",
            threshold=0,
            treat_missing_data="notBreaching",
            tags=site.tagged("dlq-depth"),
            opts=self.child(),
            **actions,
        )
        for i, member in enumerate(args.cache_member_ids):
            for label, metric, limit in (
                ("cpu", "EngineCPUUtilization", CACHE_CPU_PERCENT),
                ("memory", "DatabaseMemoryUsagePercentage", CACHE_MEMORY_PERCENT),
            ):
                # Cache node i under pressure: Redis's own thread busy, or memory nearly full.
                aws.cloudwatch.MetricAlarm(
                    f"{name}-cache-{label}-{i}",
                    name=site.alarm_name(f"cache-{label}-{i + 1}"),
                    alarm_description=f"Cache node {i + 1}: {metric} above {limit}%",
                    namespace="AWS/ElastiCache",
                    metric_name=metric,
                    dimensions={"CacheClusterId": member},
                    statistic="Average",
                    period=PERIOD,
                    evaluation_periods=5,
                    comparison_operator="GreaterThanThreshold",
                    threshold=limit,
                    treat_missing_data="missing",
                    tags=site.tagged(f"cache-{label}-{i + 1}"),
                    opts=self.child(),
                    **actions,
                )

        self.register_outputs({"topicArn": self.topic.arn})

    @staticmethod
    def _metric(
        query_id: str, metric: str, dims: dict[str, pulumi.Input[str]]
    ) -> aws.cloudwatch.MetricAlarmMetricQueryArgsDict:
        return {
            "id": query_id,
            "return_data": False,
            "metric": {
                "namespace": "AWS/ApplicationELB",
                "metric_name": metric,
                "dimensions": dims,
                "stat": "Sum",
                "period": PERIOD,
            },
        }
