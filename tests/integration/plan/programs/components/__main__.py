"""A remote component whose typed outputs the program uses, and a Python component that
expands as it always does."""

import pulumi
import pulumi_aws as aws
from acme_network import Network

tags = {"owner": "platform", "environment": "dev", "cost-center": "cc-1", "app": "shop"}


class Uploads(pulumi.ComponentResource):
    """A bucket locked down the way the pack expects (a Python component: it expands)."""

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("shop:storage:Uploads", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.bucket = aws.s3.Bucket(name, tags=tags, opts=child)
        aws.s3.BucketPublicAccessBlock(
            name,
            bucket=self.bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        self.register_outputs({"bucket": self.bucket.id})


network = Network("core", cidr_block="10.20.0.0/16", zones=3)
app_sg = aws.ec2.SecurityGroup(
    "app",
    description="app tier",
    vpc_id=network.vpc.id,
    ingress=[{"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": [network.vpc.cidr_block]}],
    tags=tags,
)
lb = aws.lb.LoadBalancer(
    "app",
    internal=True,
    load_balancer_type="application",
    subnets=network.subnet_ids,
    security_groups=[app_sg.id],
    tags=tags,
)
uploads = Uploads("uploads")

pulumi.export("vpcId", network.vpc.id)
pulumi.export("firstSubnet", network.subnets[0].id)
pulumi.export("natIp", network.nat_gateway_ip)
pulumi.export("bucket", uploads.bucket.bucket)
