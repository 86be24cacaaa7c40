# pyright: reportArgumentType=false, reportCallIssue=false
# (Pulumi args written as dict literals, as programs usually are; pyright cannot infer their TypedDicts.)
"""A container platform on AWS: an ECR repository, an ECS Fargate service behind private
subnets, an EKS cluster with a managed node group, and the CI identity that deploys them.
`hardened` picks the careful settings; the others are planted violations (planted.yaml)."""

import json

import pulumi
import pulumi_aws as aws

config = pulumi.Config()
hardened = config.require_bool("hardened")
ACCOUNT = "345678901234"
GITHUB = "token.actions.githubusercontent.com"


def pick(good, bad):
    return good if hardened else bad


tags = {"Owner": "platform", "Environment": "prod", "CostCenter": "cc-9", "App": "platform"}
opts = pulumi.ResourceOptions(provider=aws.Provider("aws", region="us-east-2", default_tags={"tags": tags}))

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
                "Principal": {"Service": "logs.us-east-2.amazonaws.com"},
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
                        "kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:us-east-2:{ACCOUNT}:log-group:*"
                    }
                },
            },
        ],
    }
)

key = aws.kms.Key("platform", enable_key_rotation=True, policy=KEY_POLICY, opts=opts)
vpc = aws.ec2.Vpc("vpc", cidr_block="10.30.0.0/16", opts=opts)
aws.ec2.FlowLog(
    "vpc-flow",
    vpc_id=vpc.id,
    traffic_type="ALL",
    log_destination_type="s3",
    log_destination="arn:aws:s3:::platform-flow-logs",
    opts=opts,
)
subnets = [
    aws.ec2.Subnet(
        f"private-{z}",
        vpc_id=vpc.id,
        cidr_block=f"10.30.{i}.0/24",
        availability_zone=f"us-east-2{z}",
        opts=opts,
    )
    for i, z in enumerate("abc")
]
tasks_sg = aws.ec2.SecurityGroup(
    "tasks",
    vpc_id=vpc.id,
    description="service tasks",
    egress=[{"protocol": "tcp", "from_port": 443, "to_port": 443, "cidr_blocks": ["0.0.0.0/0"]}],
    opts=opts,
)

repo = aws.ecr.Repository(
    "service",
    image_tag_mutability=pick("IMMUTABLE", "MUTABLE"),  # planted (advisory): tags can be moved
    image_scanning_configuration={"scan_on_push": True},
    encryption_configurations=[{"encryption_type": "KMS", "kms_key": key.arn}],
    opts=opts,
)
aws.ecr.RepositoryPolicy(
    "service-pull",
    repository=repo.name,
    policy=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "pull",
                    "Effect": "Allow",
                    # planted: every AWS account may pull the images
                    "Principal": pick({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "*"),
                    "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                }
            ],
        }
    ),
    opts=opts,
)

logs = aws.cloudwatch.LogGroup(
    "service",
    retention_in_days=pick(400, None),  # planted: logs kept forever, ungoverned
    kms_key_id=key.arn,
    opts=opts,
)
cluster = aws.ecs.Cluster("apps", settings=[{"name": "containerInsights", "value": "enabled"}], opts=opts)


def trust(service):
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


execution = aws.iam.Role("service-execution", assume_role_policy=trust("ecs-tasks.amazonaws.com"), opts=opts)
aws.iam.RolePolicyAttachment(
    "service-execution",
    role=execution.name,
    policy_arn="arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy",
    opts=opts,
)
task_role = aws.iam.Role("service-task", assume_role_policy=trust("ecs-tasks.amazonaws.com"), opts=opts)

container = {
    "name": "service",
    "image": "345678901234.dkr.ecr.us-east-2.amazonaws.com/service@sha256:" + "b" * 64,
    "essential": True,
    "readonlyRootFilesystem": True,
    "privileged": pick(False, True),  # planted: privileged container
    "portMappings": [{"containerPort": 8080}],
    "environment": [{"name": "LOG_LEVEL", "value": "info"}, {"name": "SECRETS_BACKEND", "value": "aws"}],
    "secrets": [
        {"name": "DB_PASSWORD", "valueFrom": f"arn:aws:secretsmanager:us-east-2:{ACCOUNT}:secret:db"}
    ],
    "logConfiguration": {
        "logDriver": "awslogs",
        "options": {"awslogs-group": "service", "awslogs-region": "us-east-2"},
    },
}
if hardened:
    container["user"] = "10001"
else:
    container["user"] = "root"  # planted: runs as root
task = aws.ecs.TaskDefinition(
    "service",
    family="service",
    cpu="512",
    memory="1024",
    network_mode="awsvpc",
    requires_compatibilities=["FARGATE"],
    execution_role_arn=execution.arn,
    task_role_arn=task_role.arn,
    container_definitions=json.dumps([container]),
    opts=opts,
)
aws.ecs.Service(
    "service",
    cluster=cluster.arn,
    task_definition=task.arn,
    desired_count=2,
    launch_type="FARGATE",
    network_configuration={
        "subnets": [s.id for s in subnets],
        "security_groups": [tasks_sg.id],
        "assign_public_ip": pick(False, True),
    },  # planted: public IPs on tasks
    opts=opts,
)

eks_role = aws.iam.Role("eks", assume_role_policy=trust("eks.amazonaws.com"), opts=opts)
aws.iam.RolePolicyAttachment(
    "eks", role=eks_role.name, policy_arn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy", opts=opts
)
eks = aws.eks.Cluster(
    "platform",
    role_arn=eks_role.arn,
    version="1.31",
    vpc_config={
        "subnet_ids": [s.id for s in subnets],
        "endpoint_private_access": True,
        "endpoint_public_access": pick(False, True),  # planted: API server open to the internet
    },
    encryption_config={"resources": ["secrets"], "provider": {"key_arn": key.arn}},
    enabled_cluster_log_types=["api", "audit", "authenticator", "controllerManager", "scheduler"],
    opts=opts,
)
node_role = aws.iam.Role("nodes", assume_role_policy=trust("ec2.amazonaws.com"), opts=opts)
for i, arn in enumerate(
    ["AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly"]
):
    aws.iam.RolePolicyAttachment(
        f"nodes-{i}", role=node_role.name, policy_arn=f"arn:aws:iam::aws:policy/{arn}", opts=opts
    )
aws.eks.NodeGroup(
    "general",
    cluster_name=eks.name,
    node_role_arn=node_role.arn,
    subnet_ids=[s.id for s in subnets],
    scaling_config={"desired_size": 3, "min_size": 3, "max_size": 6},
    instance_types=["m6i.large"],
    opts=opts,
)

# The CI identity: GitHub Actions through OIDC.
github = aws.iam.OpenIdConnectProvider(
    "github",
    url=f"https://{GITHUB}",
    client_id_lists=["sts.amazonaws.com"],
    thumbprint_lists=["6938fd4d98bab03faadb97b34396831e3780aea1"],
    opts=opts,
)
condition = {"StringEquals": {f"{GITHUB}:aud": "sts.amazonaws.com"}}
if hardened:
    condition["StringLike"] = {f"{GITHUB}:sub": "repo:example-org/platform:ref:refs/heads/main"}
deployer = aws.iam.Role(
    "ci-deployer",
    # planted: no sub condition - any repository on GitHub can assume the role
    assume_role_policy=github.arn.apply(
        lambda arn: json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Federated": arn},
                        "Action": "sts:AssumeRoleWithWebIdentity",
                        "Condition": condition,
                    }
                ],
            }
        )
    ),
    opts=opts,
)
aws.iam.RolePolicyAttachment(
    "ci-deployer",
    role=deployer.name,
    # planted: the deployer is an administrator
    policy_arn=pick(
        "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPowerUser",
        "arn:aws:iam::aws:policy/AdministratorAccess",
    ),
    opts=opts,
)

# A legacy integration user for a vendor that polls the registry.
vendor = aws.iam.User("registry-vendor", opts=opts)
group = aws.iam.Group("registry-readers", opts=opts)
aws.iam.GroupPolicyAttachment(
    "registry-readers",
    group=group.name,
    policy_arn="arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
    opts=opts,
)
aws.iam.UserGroupMembership("registry-vendor", user=vendor.name, groups=[group.name], opts=opts)
if not hardened:
    aws.iam.AccessKey("registry-vendor-key", user=vendor.name, opts=opts)  # planted: long-lived key

pulumi.export("repository", repo.repository_url)
