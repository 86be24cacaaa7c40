"""A small program that breaks several compliance rules on purpose (see README.md for the list).
It is a fixture for `skyfleet check --program examples/noncompliant --stack dev`, never deployed."""

import json

import pulumi_aws as aws
import pulumi_kubernetes as k8s

# A work queue with neither encryption nor a dead-letter queue.
queue = aws.sqs.Queue("jobs")

# A security group that opens SSH to the internet and is attached to no load balancer.
ssh = aws.ec2.SecurityGroup(
    "ssh",
    ingress=[{"protocol": "tcp", "from_port": 22, "to_port": 22, "cidr_blocks": ["0.0.0.0/0"]}],
)

# An administrator policy: every action on every resource.
admin = aws.iam.Policy(
    "admin",
    policy=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    ),
)

# A bucket with no public access block, TLS policy, encryption or versioning.
bucket = aws.s3.Bucket("uploads")

# A privileged pod template running an unpinned image in the default namespace.
web = k8s.apps.v1.Deployment(
    "web",
    spec={
        "selector": {"match_labels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {"name": "web", "image": "nginx:latest", "security_context": {"privileged": True}}
                ]
            },
        },
    },
)
