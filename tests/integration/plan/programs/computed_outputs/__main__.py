"""Apply chains over outputs only the provider computes: what real programs do with a cluster's
CA, a database's connection name, a chart's status and an instance's address."""

import base64
import json

import pulumi
import pulumi_aws as aws
import pulumi_gcp as gcp
import pulumi_kubernetes as k8s

tags = {"owner": "data-team", "environment": "dev", "cost-center": "cc-7", "app": "data"}

# EKS: the kubeconfig needs the cluster's CA, decoded.
role = aws.iam.Role(
    "eks",
    assume_role_policy=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"Service": "eks.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ],
        }
    ),
    tags=tags,
)
eks = aws.eks.Cluster(
    "eks",
    role_arn=role.arn,
    vpc_config={"subnet_ids": ["subnet-0a1b2c3d4e5f60718", "subnet-0a1b2c3d4e5f60719"]},
    tags=tags,
)
ca_pem = eks.certificate_authority.apply(lambda ca: base64.b64decode(ca.data or "").decode())
kubeconfig = pulumi.Output.json_dumps(
    {
        "apiVersion": "v1",
        "clusters": [
            {
                "name": "eks",
                "cluster": {
                    "server": eks.endpoint,
                    "certificate-authority-data": eks.certificate_authority.apply(lambda ca: ca.data),
                },
            }
        ],
    }
)

# GKE: master_auth is read by key, as older examples do.
gke = gcp.container.Cluster("gke", initial_node_count=1, location="europe-west1-b", deletion_protection=False)
gke_ca = gke.master_auth.apply(lambda auth: auth["cluster_ca_certificate"][:16])

# Cloud SQL: the connection name goes into a string.
db = gcp.sql.DatabaseInstance(
    "db",
    database_version="POSTGRES_15",
    region="europe-west1",
    settings={"tier": "db-f1-micro"},
    deletion_protection=False,
)
socket = pulumi.Output.concat("/cloudsql/", db.connection_name)

# A Helm release: its status says where it went.
release = k8s.helm.v3.Release(
    "cache",
    chart="redis",
    version="19.0.0",
    namespace="cache",
    repository_opts={"repo": "https://charts.bitnami.com/bitnami"},
)
where = pulumi.Output.concat(release.status.namespace, "/", release.status.name)

# An instance's public address narrows a rule.
bastion = aws.ec2.Instance("bastion", ami="ami-0123456789abcdef0", instance_type="t3.micro", tags=tags)
admin = aws.ec2.SecurityGroup(
    "admin",
    description="SSH back to the bastion only",
    ingress=[
        {
            "protocol": "tcp",
            "from_port": 22,
            "to_port": 22,
            "cidr_blocks": [bastion.public_ip.apply(lambda ip: f"{ip}/32")],
        }
    ],
    tags=tags,
)

pulumi.export("caPemStart", ca_pem.apply(lambda pem: pem.splitlines()[0]))
pulumi.export("kubeconfig", kubeconfig)
pulumi.export("gkeCa", gke_ca)
pulumi.export("socket", socket)
pulumi.export("release", where)
pulumi.export("bastionIp", bastion.public_ip)
