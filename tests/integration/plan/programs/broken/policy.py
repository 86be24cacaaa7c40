"""The program's own helper: a bug on a line the error must name."""

import json

import pulumi


def queue_policy(queue) -> pulumi.Output[str]:
    def render(arn: str) -> str:
        account = arn.split(":")[9]  # the bug: an ARN has six fields
        return json.dumps({"Version": "2012-10-17", "Statement": [{"Principal": {"AWS": account}}]})

    return queue.arn.apply(render)
