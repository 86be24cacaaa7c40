"""Reads settings the way the CLI hands them over: project defaults, then the stack's keys."""

import pulumi
import pulumi_aws as aws

config = pulumi.Config()
owner = config.require("owner")
replicas = config.require_int("replicas")
tier = config.require("tier")

queues = [
    aws.sqs.Queue(
        f"work-{i}",
        sqs_managed_sse_enabled=True,
        tags={"owner": owner, "environment": "dev", "cost-center": tier, "app": "settings"},
    )
    for i in range(replicas)
]
pulumi.export("region", aws.get_region().region)
pulumi.export("queues", len(queues))
