"""Existing infrastructure read with ``Resource.get`` (a shared security group, a legacy bucket)
and one rule the program adds to it: only the rule is this program's to check."""

import pulumi
import pulumi_aws as aws

shared = aws.ec2.SecurityGroup.get("shared", "sg-0123456789abcdef0")
legacy = aws.s3.Bucket.get("legacy", "acme-legacy-logs")

https = aws.vpc.SecurityGroupIngressRule(
    "https-from-office",
    security_group_id=shared.id,
    ip_protocol="tcp",
    from_port=443,
    to_port=443,
    cidr_ipv4="198.51.100.0/24",
    tags={"owner": "net-team", "environment": "dev", "cost-center": "cc-3", "app": "edge"},
)

pulumi.export("sharedVpc", shared.vpc_id)
pulumi.export("legacyArn", legacy.arn)
