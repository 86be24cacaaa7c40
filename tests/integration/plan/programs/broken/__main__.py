"""Registers a queue, then fails in a helper module while shaping a policy from its ARN."""

import pulumi
import pulumi_aws as aws
from policy import queue_policy

queue = aws.sqs.Queue("jobs", sqs_managed_sse_enabled=True)
policy = queue_policy(queue)
pulumi.export("policy", policy)
