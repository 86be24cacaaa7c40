"""A web server that finds where it goes through data sources, as most real programs do."""

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp

tags = {"owner": "web-team", "environment": "dev", "cost-center": "cc-42", "app": "web"}

vpc = aws.ec2.get_vpc(default=True)
subnets = aws.ec2.get_subnets(filters=[{"name": "vpc-id", "values": [vpc.id]}])
ami = aws.ec2.get_ami(
    most_recent=True,
    owners=["amazon"],
    filters=[{"name": "name", "values": ["al2023-ami-*-x86_64"]}],
)
zone = aws.route53.get_zone(name="example.com")

web_sg = aws.ec2.SecurityGroup(
    "web",
    description="HTTPS from the VPC",
    vpc_id=vpc.id,
    ingress=[{"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": [vpc.cidr_block]}],
    egress=[{"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"]}],
    tags=tags,
)
server = aws.ec2.Instance(
    "web",
    ami=ami.id,
    instance_type="t3.micro",
    subnet_id=subnets.ids[0],
    vpc_security_group_ids=[web_sg.id],
    tags=tags,
)
record = aws.route53.Record(
    "www",
    zone_id=zone.zone_id,
    name=f"www.{zone.name}",
    type="A",
    ttl=300,
    records=[server.private_ip],
)

image = gcp.compute.get_image(family="debian-12", project="debian-cloud")
disk = gcp.compute.Disk("data", image=image.self_link, size=20, zone="us-central1-a")

pulumi.export("vpcId", vpc.id)
pulumi.export("amiId", ami.id)
pulumi.export("zoneId", zone.zone_id)
pulumi.export("recordName", record.name)
pulumi.export("imageLink", image.self_link)
