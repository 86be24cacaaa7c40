"""Cloud Monitoring alert policies: the api's 5xx rate (at the load balancer and at Cloud Run),
a non-empty dead-letter subscription, and cache memory pressure; notified by e-mail when the
stack names an address.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

from infra.gcp.site import GcpCapability, Site

mon = gcp.monitoring

# The share of 5xx responses over five minutes that pages someone.
ERROR_RATE_THRESHOLD = 0.05
# Memorystore memory usage ratio that warns before evictions start.
CACHE_MEMORY_THRESHOLD = 0.8


@dataclass(frozen=True)
class AlarmsArgs:
    site: Site
    https_forwarding_rule: pulumi.Input[str]
    api_service: pulumi.Input[str]
    dead_letter_subscription: pulumi.Input[str]
    cache_instance: pulumi.Input[str]  # projects/<p>/locations/<r>/instances/<name>
    alert_email: str | None = None


class Alarms(GcpCapability):
    def __init__(self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        site = args.site
        channels: list[pulumi.Input[str]] = []
        if args.alert_email:
            # Where alerts go.
            self.channel = mon.NotificationChannel(
                "email",
                project=site.project,
                display_name=f"Skyfleet {site.name} on-call",
                type="email",
                labels={"email_address": args.alert_email},
                user_labels=dict(site.labels),
                opts=self.child(),
            )
            channels.append(self.channel.id)

        def policy(
            resource_name: str,
            title: str,
            conditions: list[mon.AlertPolicyConditionArgs],
            severity: str,
            doc: str,
        ) -> mon.AlertPolicy:
            return mon.AlertPolicy(
                resource_name,
                project=site.project,
                display_name=f"Skyfleet {site.name}: {title}",
                combiner="OR",
                conditions=conditions,
                severity=severity,
                notification_channels=channels,
                alert_strategy=mon.AlertPolicyAlertStrategyArgs(auto_close="1800s"),
                documentation=mon.AlertPolicyDocumentationArgs(content=doc, mime_type="text/markdown"),
                user_labels=dict(site.labels),
                opts=self.child(),
            )

        lb = (
            'resource.type="https_lb_rule" AND metric.type="loadbalancing.googleapis.com/https/request_count"'
        )
        run = 'resource.type="cloud_run_revision" AND metric.type="run.googleapis.com/request_count"'
        # 5xx share of all requests, at the load balancer (includes Cloud Armor and backend errors)
        # and at Cloud Run (the app itself).
        self.error_rate = policy(
            "api-5xx-rate",
            "api 5xx rate above 5%",
            [
                mon.AlertPolicyConditionArgs(
                    display_name="load balancer 5xx ratio",
                    condition_threshold=mon.AlertPolicyConditionConditionThresholdArgs(
                        filter=pulumi.Output.concat(
                            lb,
                            ' AND resource.label.forwarding_rule_name="',
                            args.https_forwarding_rule,
                            '" AND metric.label.response_code_class=500',
                        ),
                        denominator_filter=pulumi.Output.concat(
                            lb, ' AND resource.label.forwarding_rule_name="', args.https_forwarding_rule, '"'
                        ),
                        aggregations=[_rate_sum()],
                        denominator_aggregations=[_denominator_rate_sum()],
                        comparison="COMPARISON_GT",
                        threshold_value=ERROR_RATE_THRESHOLD,
                        duration="300s",
                    ),
                ),
                mon.AlertPolicyConditionArgs(
                    display_name="Cloud Run 5xx ratio",
                    condition_threshold=mon.AlertPolicyConditionConditionThresholdArgs(
                        filter=pulumi.Output.concat(
                            run,
                            ' AND resource.label.service_name="',
                            args.api_service,
                            '" AND metric.label.response_code_class="5xx"',
                        ),
                        denominator_filter=pulumi.Output.concat(
                            run, ' AND resource.label.service_name="', args.api_service, '"'
                        ),
                        aggregations=[_rate_sum()],
                        denominator_aggregations=[_denominator_rate_sum()],
                        comparison="COMPARISON_GT",
                        threshold_value=ERROR_RATE_THRESHOLD,
                        duration="300s",
                    ),
                ),
            ],
            "CRITICAL",
            "More than 5% of api requests failed with 5xx for 5 minutes. Check the api's logs and "
            "`/readyz` (Redis, Pub/Sub), then the other sites: the edge fails over on `/readyz`.",
        )

        # Any dead letter: a task failed every delivery attempt and needs a look.
        self.dead_letters = policy(
            "dead-letter-backlog",
            "tasks in the dead-letter subscription",
            [
                mon.AlertPolicyConditionArgs(
                    display_name="dead letters waiting",
                    condition_threshold=mon.AlertPolicyConditionConditionThresholdArgs(
                        filter=pulumi.Output.concat(
                            'resource.type="pubsub_subscription" AND '
                            'metric.type="pubsub.googleapis.com/subscription/num_undelivered_messages" AND '
                            'resource.label.subscription_id="',
                            args.dead_letter_subscription,
                            '"',
                        ),
                        aggregations=[
                            mon.AlertPolicyConditionConditionThresholdAggregationArgs(
                                alignment_period="60s", per_series_aligner="ALIGN_MAX"
                            )
                        ],
                        comparison="COMPARISON_GT",
                        threshold_value=0,
                        duration="60s",
                    ),
                )
            ],
            "ERROR",
            "Tasks exhausted their delivery attempts. Inspect them on the dead-letter subscription, "
            "fix the cause, and republish them to the task topic.",
        )

        # Memory pressure on the session store, before evictions drop sessions.
        self.cache_memory = policy(
            "cache-memory",
            "Redis memory above 80%",
            [
                mon.AlertPolicyConditionArgs(
                    display_name="memory usage ratio",
                    condition_threshold=mon.AlertPolicyConditionConditionThresholdArgs(
                        filter=pulumi.Output.concat(
                            'resource.type="redis_instance" AND '
                            'metric.type="redis.googleapis.com/stats/memory/usage_ratio" AND '
                            'resource.label.instance_id="',
                            args.cache_instance,
                            '"',
                        ),
                        aggregations=[
                            mon.AlertPolicyConditionConditionThresholdAggregationArgs(
                                alignment_period="300s", per_series_aligner="ALIGN_MEAN"
                            )
                        ],
                        comparison="COMPARISON_GT",
                        threshold_value=CACHE_MEMORY_THRESHOLD,
                        duration="600s",
                    ),
                )
            ],
            "WARNING",
            "The session store is filling up; sessions will be evicted. Raise cache.sizeGb.",
        )
        self.register_outputs({"errorRate": self.error_rate.name, "deadLetters": self.dead_letters.name})


def _rate_sum() -> mon.AlertPolicyConditionConditionThresholdAggregationArgs:
    """Requests per second over one minute, summed across the series (codes, revisions)."""
    return mon.AlertPolicyConditionConditionThresholdAggregationArgs(
        alignment_period="60s", per_series_aligner="ALIGN_RATE", cross_series_reducer="REDUCE_SUM"
    )


def _denominator_rate_sum() -> mon.AlertPolicyConditionConditionThresholdDenominatorAggregationArgs:
    """The same aggregation for the ratio's denominator (all requests)."""
    return mon.AlertPolicyConditionConditionThresholdDenominatorAggregationArgs(
        alignment_period="60s", per_series_aligner="ALIGN_RATE", cross_series_reducer="REDUCE_SUM"
    )
