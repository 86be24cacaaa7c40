"""awsx.ec2.Vpc (a multi-language component) and resources placed in its subnets by index."""

import pulumi
import pulumi_aws as aws
import pulumi_awsx as awsx

vpc = awsx.ec2.Vpc("main", cidr_block="10.0.0.0/16", number_of_availability_zones=3)
db_subnets = aws.rds.SubnetGroup(
    "db",
    subnet_ids=[vpc.private_subnet_ids.apply(lambda ids, i=i: ids[i]) for i in range(3)],
    tags={"owner": "data", "environment": "dev", "cost-center": "cc-9", "app": "db"},
)
pulumi.export("vpcId", vpc.vpc_id)
pulumi.export("cidr", vpc.vpc.cidr_block)
pulumi.export("publicSubnets", vpc.public_subnet_ids)
