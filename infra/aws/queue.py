"""Queue: the SQS queue the api feeds and the worker drains, and its dead-letter queue. A task
that fails ``maxDeliveryAttempts`` times moves to the DLQ instead of looping forever (the worker
sends it there with its reason); both queues are encrypted and refuse plain-HTTP access.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from agent_app.queues.base import broker_deliveries
from infra.aws.site import AwsSite, deny_insecure_transport, policy_json
from infra.component import Capability
from infra.spec import QueueSpec

# Long polling: one receive waits up to 20 s for a message instead of spinning.
RECEIVE_WAIT_SECONDS = 20


@dataclass(frozen=True)
class QueueArgs:
    site: AwsSite
    queue: QueueSpec


class Queue(Capability):
    TARGET = "aws"

    def __init__(self, name: str, args: QueueArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        site, spec = args.site, args.queue

        queue_name = f"{site.prefix}-tasks"
        # The dead-letter queue: kept as long as SQS allows so failures can be inspected; only
        # this site's task queue may dead-letter into it (its ARN is known from its name).
        self.dlq = aws.sqs.Queue(
            f"{name}-dlq",
            name=f"{queue_name}-dlq",
            message_retention_seconds=spec.dlq_retention_seconds,
            sqs_managed_sse_enabled=True,
            redrive_allow_policy=json.dumps(
                {"redrivePermission": "byQueue", "sourceQueueArns": [site.arn("sqs", queue_name)]}
            ),
            tags=site.tagged("tasks-dlq"),
            opts=self.child(),
        )
        # The task queue: visibility and retention from the spec, server-side encrypted. SQS
        # delivers once more than the app runs a task, for the worker to find one whose last run
        # was lost with its worker (agent_app.queues.base); a receive after that moves it to the DLQ.
        self.queue = aws.sqs.Queue(
            f"{name}-tasks",
            name=queue_name,
            visibility_timeout_seconds=spec.visibility_timeout_seconds,
            message_retention_seconds=spec.retention_seconds,
            receive_wait_time_seconds=RECEIVE_WAIT_SECONDS,
            sqs_managed_sse_enabled=True,
            redrive_policy=self.dlq.arn.apply(
                lambda arn: json.dumps(
                    {
                        "deadLetterTargetArn": arn,
                        "maxReceiveCount": broker_deliveries(spec.max_delivery_attempts),
                    }
                )
            ),
            tags=site.tagged("tasks"),
            opts=self.child(),
        )
        for label, q in (("tasks", self.queue), ("dlq", self.dlq)):
            # TLS only: any request over plain HTTP is refused.
            aws.sqs.QueuePolicy(
                f"{name}-{label}-tls",
                queue_url=q.url,
                policy=policy_json([deny_insecure_transport("sqs", [q.arn])]),
                opts=self.child(),
            )

        self.register_outputs(
            {"queueUrl": self.queue.url, "queueArn": self.queue.arn, "dlqArn": self.dlq.arn}
        )
