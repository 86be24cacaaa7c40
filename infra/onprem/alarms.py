"""The site's alarms on the cluster: Prometheus Operator rules for the api's error rate, the
dead-letter stream's depth and pods that are not ready, plus the PodMonitors that make
Prometheus scrape the api and the NATS exporter the rules read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from agent_app import contract
from infra.component import Capability
from infra.onprem import kube


@dataclass(frozen=True)
class AlarmsArgs:
    place: kube.Placement
    dlq_stream: str
    error_rate_threshold: float = 0.05
    # Labels the cluster's Prometheus selects these objects by.
    monitoring_labels: Mapping[str, str] = field(default_factory=dict)


class Alarms(Capability):
    """PrometheusRule (error rate, DLQ depth, pods not ready) + PodMonitors."""

    TARGET = "onprem"

    def __init__(self, name: str, args: AlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        place, ns = args.place, args.place.namespace
        requests = f'agent_http_request_duration_seconds_count{{namespace="{ns}"}}'
        errors = f'agent_http_request_duration_seconds_count{{namespace="{ns}",status=~"5.."}}'
        dlq_depth = f'jetstream_stream_total_messages{{namespace="{ns}",stream_name="{args.dlq_stream}"}}'
        # A pod that ran to completion (the nats-streams Job's) is not ready, and never will be:
        # only pods that have not succeeded count.
        not_ready = (
            f'(sum by (namespace, pod) (kube_pod_status_ready{{namespace="{ns}",condition!="true"}}) > 0)'
            f' unless on (namespace, pod) (kube_pod_status_phase{{namespace="{ns}",phase="Succeeded"}} == 1)'
        )
        rules = [
            {
                "alert": "AgentApiErrorRate",
                "expr": f"sum(rate({errors}[5m])) / clamp_min(sum(rate({requests}[5m])), 1e-9)"
                f" > {args.error_rate_threshold}",
                "for": "5m",
                "labels": {"severity": "critical"},
                "annotations": {
                    "summary": f"More than {args.error_rate_threshold:.0%} of api answers are 5xx"
                },
            },
            {
                "alert": "AgentDeadLetters",
                "expr": f"max({dlq_depth}) > 0",
                "for": "1m",
                "labels": {"severity": "warning"},
                "annotations": {"summary": f"Tasks are waiting in the dead-letter stream {args.dlq_stream}"},
            },
            {
                "alert": "AgentPodsNotReady",
                "expr": not_ready,
                "for": "5m",
                "labels": {"severity": "warning"},
                "annotations": {"summary": "A Skyfleet pod has not been ready for 5 minutes"},
            },
        ]
        # The alert rules, loaded by the cluster's Prometheus Operator.
        self.rule = k8s.apiextensions.CustomResource(
            "alerts",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata=kube.meta("skyfleet-alerts", place, extra_labels=args.monitoring_labels),
            spec={"groups": [{"name": "skyfleet", "rules": rules}]},
            opts=self.child(),
        )
        # Scrape targets the rules need: the app's /metrics and the NATS JetStream exporter.
        for role, port in ((kube.API, "http"), (kube.WORKER, "http"), (kube.NATS, "metrics")):
            k8s.apiextensions.CustomResource(
                f"{role}-metrics",
                api_version="monitoring.coreos.com/v1",
                kind="PodMonitor",
                metadata=kube.meta(f"{role}-metrics", place, role, extra_labels=args.monitoring_labels),
                spec={
                    "selector": {"matchLabels": kube.selector(role)},
                    "podMetricsEndpoints": [{"port": port, "path": contract.METRICS_PATH, "interval": "30s"}],
                },
                opts=self.child(),
            )
        self.register_outputs({"rules": [r["alert"] for r in rules]})
