# pyright: reportArgumentType=false, reportCallIssue=false
# (Pulumi args written as dict literals, as programs usually are; pyright cannot infer their TypedDicts.)
"""A classic three-tier web app on AWS. The `hardened` config flag picks between the settings a
careful production engineer would choose and the ones planted as violations (planted.yaml)."""

import json

import pulumi
import pulumi_aws as aws
import pulumi_random as random

config = pulumi.Config()
hardened = config.require_bool("hardened")
ACCOUNT = "456789012345"
tags = {"owner": "web-team", "environment": "prod", "cost-center": "cc-42", "app": "shop"}


def pick(good, bad):
    return good if hardened else bad


aws_provider = aws.Provider("aws", region="eu-west-1", default_tags={"tags": tags})
opts = pulumi.ResourceOptions(provider=aws_provider)

# The account administers the key through IAM; CloudWatch Logs may use it for this account's log
# groups (without that grant creating an encrypted log group is refused).
KEY_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Effect": "Allow",
                "Principal": {"Service": "logs.eu-west-1.amazonaws.com"},
                "Action": [
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                "Resource": "*",
                "Condition": {
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:eu-west-1:{ACCOUNT}:log-group:*"
                    }
                },
            },
        ],
    }
)

key = aws.kms.Key(
    "data-key",
    description="shop data",
    enable_key_rotation=pick(True, False),
    deletion_window_in_days=30,
    policy=KEY_POLICY,
    opts=opts,
)

vpc = aws.ec2.Vpc("vpc", cidr_block="10.20.0.0/16", enable_dns_hostnames=True, opts=opts)
aws.ec2.FlowLog(
    "vpc-flow",
    vpc_id=vpc.id,
    traffic_type="ALL",
    log_destination_type="s3",
    log_destination="arn:aws:s3:::shop-flow-logs",
    opts=opts,
)
aws.ec2.DefaultSecurityGroup("default", vpc_id=vpc.id, opts=opts)
public = [
    aws.ec2.Subnet(
        f"public-{z}",
        vpc_id=vpc.id,
        cidr_block=f"10.20.{i}.0/24",
        availability_zone=f"eu-west-1{z}",
        opts=opts,
    )
    for i, z in enumerate("ab")
]
private = [
    aws.ec2.Subnet(
        f"private-{z}",
        vpc_id=vpc.id,
        cidr_block=f"10.20.{10 + i}.0/24",
        availability_zone=f"eu-west-1{z}",
        opts=opts,
    )
    for i, z in enumerate("ab")
]

alb_sg = aws.ec2.SecurityGroup("alb-sg", vpc_id=vpc.id, description="public HTTPS", opts=opts)
web_sg = aws.ec2.SecurityGroup("web-sg", vpc_id=vpc.id, description="web workers", opts=opts)
db_sg = aws.ec2.SecurityGroup("db-sg", vpc_id=vpc.id, description="postgres", opts=opts)
for port in (80, 443):
    aws.vpc.SecurityGroupIngressRule(
        f"alb-in-{port}",
        security_group_id=alb_sg.id,
        ip_protocol="tcp",
        from_port=port,
        to_port=port,
        cidr_ipv4="0.0.0.0/0",
        opts=opts,
    )
aws.vpc.SecurityGroupIngressRule(
    "web-from-alb",
    security_group_id=web_sg.id,
    ip_protocol="tcp",
    from_port=8080,
    to_port=8080,
    referenced_security_group_id=alb_sg.id,
    opts=opts,
)
# Planted: SSH from anywhere instead of from the VPN range.
aws.vpc.SecurityGroupIngressRule(
    "web-ssh",
    security_group_id=web_sg.id,
    ip_protocol="tcp",
    from_port=22,
    to_port=22,
    cidr_ipv4=pick("10.99.0.0/16", "0.0.0.0/0"),
    opts=opts,
)
aws.vpc.SecurityGroupIngressRule(
    "db-from-web",
    security_group_id=db_sg.id,
    ip_protocol="tcp",
    from_port=5432,
    to_port=5432,
    referenced_security_group_id=web_sg.id,
    opts=opts,
)

logs = aws.s3.Bucket("access-logs", opts=opts)
assets = aws.s3.Bucket("assets", opts=opts)
for name, bucket in (("access-logs", logs), ("assets", assets)):
    aws.s3.BucketPublicAccessBlock(
        f"{name}-pab",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=opts,
    )
    aws.s3.BucketServerSideEncryptionConfiguration(
        f"{name}-sse",
        bucket=bucket.id,
        rules=[
            {
                "apply_server_side_encryption_by_default": {
                    "sse_algorithm": "aws:kms",
                    "kms_master_key_id": key.arn,
                }
            }
        ],
        opts=opts,
    )
    aws.s3.BucketVersioning(
        f"{name}-versioning", bucket=bucket.id, versioning_configuration={"status": "Enabled"}, opts=opts
    )
    aws.s3.BucketPolicy(
        f"{name}-tls",
        bucket=bucket.id,
        policy=bucket.arn.apply(
            lambda arn: json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "TlsOnly",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "s3:*",
                            "Resource": [arn, f"{arn}/*"],
                            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                        }
                    ],
                }
            )
        ),
        opts=opts,
    )
aws.s3.BucketLogging(
    "assets-logging", bucket=assets.id, target_bucket=logs.id, target_prefix="assets/", opts=opts
)
# Planted: a public-read ACL on the assets bucket.
aws.s3.BucketAcl("assets-acl", bucket=assets.id, acl=pick("private", "public-read"), opts=opts)

alb = aws.lb.LoadBalancer(
    "alb",
    load_balancer_type="application",
    security_groups=[alb_sg.id],
    subnets=[s.id for s in public],
    drop_invalid_header_fields=True,
    enable_deletion_protection=True,
    access_logs={"bucket": logs.bucket, "enabled": True, "prefix": "alb"},
    opts=opts,
)
target = aws.lb.TargetGroup(
    "web", port=8080, protocol="HTTP", vpc_id=vpc.id, health_check={"path": "/healthz"}, opts=opts
)
aws.lb.Listener(
    "https",
    load_balancer_arn=alb.arn,
    port=443,
    protocol="HTTPS",
    ssl_policy="ELBSecurityPolicy-TLS13-1-2-2021-06",
    certificate_arn="arn:aws:acm:eu-west-1:123456789012:certificate/shop",
    default_actions=[{"type": "forward", "target_group_arn": target.arn}],
    opts=opts,
)
# Planted: port 80 forwards plain HTTP to the app instead of redirecting.
aws.lb.Listener(
    "http",
    load_balancer_arn=alb.arn,
    port=80,
    protocol="HTTP",
    default_actions=[
        pick(
            {"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443", "status_code": "HTTP_301"}},
            {"type": "forward", "target_group_arn": target.arn},
        )
    ],
    opts=opts,
)
aws.wafv2.WebAclAssociation(
    "alb-waf",
    resource_arn=alb.arn,
    web_acl_arn="arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/shop/1",
    opts=opts,
)

role = aws.iam.Role(
    "web-role",
    assume_role_policy=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
    ),
    opts=opts,
)
# Planted: the instance policy allows every S3 action on every resource.
aws.iam.RolePolicy(
    "web-assets",
    role=role.id,
    policy=assets.arn.apply(
        lambda arn: json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    pick(
                        {
                            "Effect": "Allow",
                            "Action": ["s3:GetObject", "s3:PutObject"],
                            "Resource": f"{arn}/*",
                        },
                        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                    )
                ],
            }
        )
    ),
    opts=opts,
)
profile = aws.iam.InstanceProfile("web-profile", role=role.name, opts=opts)

db_password = random.RandomPassword("db-password", length=32, special=False)
db = aws.rds.Instance(
    "db",
    engine="postgres",
    engine_version="16.4",
    instance_class="db.t4g.medium",
    allocated_storage=50,
    db_name="shop",
    username="shop",
    password=db_password.result,
    vpc_security_group_ids=[db_sg.id],
    db_subnet_group_name=aws.rds.SubnetGroup("db", subnet_ids=[s.id for s in private], opts=opts).name,
    storage_encrypted=pick(True, False),  # planted: unencrypted storage
    kms_key_id=key.arn if hardened else None,
    publicly_accessible=pick(False, True),  # planted: a public endpoint
    backup_retention_period=14,
    multi_az=True,
    deletion_protection=True,
    iam_database_authentication_enabled=True,
    enabled_cloudwatch_logs_exports=["postgresql", "upgrade"],
    ca_cert_identifier="rds-ca-rsa2048-g1",
    final_snapshot_identifier="shop-final",
    opts=opts,
)

user_data = pick(
    "#!/bin/bash\nset -eu\naws ssm get-parameter --with-decryption --name /shop/db-url > /etc/shop.env\n",
    # Planted: the database URL, password included, baked into user data.
    "#!/bin/bash\nset -eu\n"
    "echo 'DATABASE_URL=postgres://shop:Winter2024!@db.internal:5432/shop' > /etc/shop.env\n",
)
template = aws.ec2.LaunchTemplate(
    "web",
    image_id="ami-0a1b2c3d4e5f67890",
    instance_type="t3.medium",
    iam_instance_profile={"arn": profile.arn},
    vpc_security_group_ids=[web_sg.id],
    metadata_options={
        "http_tokens": pick("required", "optional"),
        "http_endpoint": "enabled",
    },  # planted: IMDSv1
    block_device_mappings=[
        {"device_name": "/dev/xvda", "ebs": {"volume_size": 30, "encrypted": pick(True, False)}}
    ],  # planted: plain disk
    user_data=pulumi.Output.from_input(user_data).apply(
        lambda t: __import__("base64").b64encode(t.encode()).decode()
    ),
    opts=opts,
)
aws.autoscaling.Group(
    "web",
    min_size=2,
    max_size=6,
    vpc_zone_identifiers=[s.id for s in private],
    launch_template={"id": template.id, "version": "$Latest"},
    target_group_arns=[target.arn],
    opts=opts,
)
aws.cloudwatch.LogGroup("web", retention_in_days=365, kms_key_id=key.arn, opts=opts)

pulumi.export("url", alb.dns_name)
