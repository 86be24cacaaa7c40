"""AWS resources of the compliant baseline beyond the Skyfleet site (data stores, compute,
identity, edge), configured the way a careful production engineer would, and the one-property
flips that break each rule on them."""

from __future__ import annotations

from typing import Any

from skyfleet.plan import PlannedResource
from tests.support.policies.kit import DELETE, TAGS, Flip, append, chain, doc, in_json, res, setp, statement

ACCOUNT = "123456789012"
GITHUB = "token.actions.githubusercontent.com"


def _trust(service: str) -> str:
    return doc({"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"})


def extra() -> list[PlannedResource]:
    private = {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/api"}}
    return [
        # -- network -------------------------------------------------------------------------
        res("aws:ec2/vpc:Vpc", "vpc", {"cidrBlock": "10.0.0.0/16", "tags": TAGS}, id_="vpc-1"),
        res(
            "aws:ec2/flowLog:FlowLog",
            "vpc-flow",
            {"vpcId": "vpc-1", "trafficType": "ALL", "logDestination": "arn:fixture:api-logs"},
        ),
        res(
            "aws:ec2/subnet:Subnet",
            "private-a",
            {"vpcId": "vpc-1", "cidrBlock": "10.0.1.0/24", "mapPublicIpOnLaunch": False, "tags": TAGS},
            id_="subnet-private-a",
        ),
        res(
            "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup",
            "default-sg",
            {"vpcId": "vpc-1", "ingress": [], "egress": []},
        ),
        res(
            "aws:ec2/networkAcl:NetworkAcl",
            "private-acl",
            {
                "vpcId": "vpc-1",
                "ingress": [
                    {
                        "protocol": "-1",
                        "ruleNo": 100,
                        "action": "allow",
                        "cidrBlock": "10.0.0.0/16",
                        "fromPort": 0,
                        "toPort": 0,
                    }
                ],
            },
        ),
        res(
            "aws:wafv2/webAclAssociation:WebAclAssociation",
            "alb-waf",
            {"resourceArn": "arn:fixture:alb", "webAclArn": "arn:fixture:web-acl"},
        ),
        # -- compute ---------------------------------------------------------------------------
        res(
            "aws:ec2/instance:Instance",
            "worker",
            {
                "ami": "ami-0123456789abcdef0",
                "instanceType": "t3.small",
                "subnetId": "subnet-private-a",
                "metadataOptions": {"httpTokens": "required", "httpEndpoint": "enabled"},
                "rootBlockDevice": {"encrypted": True, "volumeSize": 20},
                "iamInstanceProfile": "worker-profile",
                "userData": "#!/bin/bash\nset -eu\nexport QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/1/tasks\n",
            },
        ),
        res(
            "aws:ec2/launchTemplate:LaunchTemplate",
            "workers-lt",
            {
                "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 1},
                "blockDeviceMappings": [
                    {"deviceName": "/dev/xvda", "ebs": {"encrypted": True, "volumeSize": 20}}
                ],
                "networkInterfaces": [{"associatePublicIpAddress": False}],
            },
        ),
        res(
            "aws:ebs/volume:Volume",
            "scratch",
            {"availabilityZone": "eu-west-1a", "size": 50, "encrypted": True},
        ),
        res(
            "aws:lambda/function:Function",
            "thumbnails",
            {
                "runtime": "python3.12",
                "handler": "app.handler",
                "role": "arn:fixture:thumbnails-role",
                "environment": {
                    "variables": {
                        "LOG_LEVEL": "info",
                        "TOKEN_TTL_SECONDS": "3600",
                        "SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:1:secret:k",
                    }
                },
            },
        ),
        res(
            "aws:lambda/permission:Permission",
            "thumbnails-from-s3",
            {
                "action": "lambda:InvokeFunction",
                "function": "thumbnails-id",
                "principal": "s3.amazonaws.com",
                "sourceArn": "arn:aws:s3:::data-bucket",
                "sourceAccount": ACCOUNT,
            },
        ),
        res(
            "aws:lambda/functionUrl:FunctionUrl",
            "thumbnails-url",
            {"functionName": "thumbnails-id", "authorizationType": "AWS_IAM"},
        ),
        res(
            "aws:ecs/cluster:Cluster",
            "cluster",
            {"settings": [{"name": "containerInsights", "value": "enabled"}], "tags": TAGS},
        ),
        res(
            "aws:eks/cluster:Cluster",
            "eks",
            {
                "roleArn": "arn:fixture:eks-role",
                "vpcConfig": {
                    "subnetIds": ["subnet-private-a"],
                    "endpointPublicAccess": False,
                    "endpointPrivateAccess": True,
                },
                "encryptionConfig": {"resources": ["secrets"], "provider": {"keyArn": "arn:fixture:key"}},
                "enabledClusterLogTypes": ["api", "audit", "authenticator"],
            },
        ),
        res(
            "aws:eks/nodeGroup:NodeGroup",
            "eks-nodes",
            {
                "clusterName": "eks-id",
                "nodeRoleArn": "arn:fixture:node-role",
                "subnetIds": ["subnet-private-a"],
                "scalingConfig": {"minSize": 2, "maxSize": 4, "desiredSize": 2},
            },
        ),
        res(
            "aws:ecr/repository:Repository",
            "images",
            {"imageTagMutability": "IMMUTABLE", "imageScanningConfiguration": {"scanOnPush": True}},
        ),
        res(
            "aws:ecr/repositoryPolicy:RepositoryPolicy",
            "images-pull",
            {"repository": "images-id", "policy": doc({**private, "Action": ["ecr:BatchGetImage"]})},
        ),
        # -- data ------------------------------------------------------------------------------
        res(
            "aws:rds/instance:Instance",
            "db",
            {
                "engine": "postgres",
                "engineVersion": "16.3",
                "instanceClass": "db.t4g.medium",
                "storageEncrypted": True,
                "publiclyAccessible": False,
                "backupRetentionPeriod": 7,
                "iamDatabaseAuthenticationEnabled": True,
                "multiAz": True,
                "deletionProtection": True,
                "manageMasterUserPassword": True,
                "enabledCloudwatchLogsExports": ["postgresql"],
                "caCertIdentifier": "rds-ca-rsa2048-g1",
                "dbSubnetGroupName": "db-subnets",
                "tags": TAGS,
            },
        ),
        res(
            "aws:dynamodb/table:Table",
            "sessions",
            {"hashKey": "id", "pointInTimeRecovery": {"enabled": True}, "deletionProtectionEnabled": True},
        ),
        res("aws:s3/bucket:Bucket", "data", {"forceDestroy": False, "tags": TAGS}, id_="data-bucket"),
        res(
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
            "data-pab",
            {
                "bucket": "data-bucket",
                "blockPublicAcls": True,
                "blockPublicPolicy": True,
                "ignorePublicAcls": True,
                "restrictPublicBuckets": True,
            },
        ),
        res(
            "aws:s3/bucketPolicy:BucketPolicy",
            "data-policy",
            {
                "bucket": "data-bucket",
                "policy": doc(
                    {
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": "arn:aws:s3:::data-bucket/*",
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    },
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "cloudfront.amazonaws.com"},
                        "Action": "s3:GetObject",
                        "Resource": "arn:aws:s3:::data-bucket/*",
                        "Condition": {"StringEquals": {"AWS:SourceArn": "arn:fixture:cdn"}},
                    },
                ),
            },
        ),
        res(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            "data-sse",
            {
                "bucket": "data-bucket",
                "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}],
            },
        ),
        res(
            "aws:s3/bucketVersioning:BucketVersioning",
            "data-versioning",
            {"bucket": "data-bucket", "versioningConfiguration": {"status": "Enabled"}},
        ),
        res(
            "aws:s3/bucketLogging:BucketLogging",
            "data-logging",
            {"bucket": "data-bucket", "targetBucket": "logs-bucket", "targetPrefix": "s3/data/"},
        ),
        res(
            "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
            "data-ownership",
            {"bucket": "data-bucket", "rule": {"objectOwnership": "BucketOwnerEnforced"}},
        ),
        res(
            "aws:s3/bucketCorsConfiguration:BucketCorsConfiguration",
            "data-cors",
            {
                "bucket": "data-bucket",
                "corsRules": [
                    {"allowedOrigins": ["*"], "allowedMethods": ["GET", "HEAD"]},
                    {"allowedOrigins": ["https://agents.example.com"], "allowedMethods": ["PUT"]},
                ],
            },
        ),
        res("aws:s3/bucketAclV2:BucketAclV2", "data-acl", {"bucket": "data-bucket", "acl": "private"}),
        res("aws:s3/bucketObjectv2:BucketObjectv2", "index", {"bucket": "data-bucket", "key": "index.html"}),
        # -- identity and secrets ----------------------------------------------------------------
        res(
            "aws:iam/role:Role",
            "deploy",
            {
                "tags": TAGS,
                "assumeRolePolicy": doc(
                    {
                        "Effect": "Allow",
                        "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{GITHUB}"},
                        "Action": "sts:AssumeRoleWithWebIdentity",
                        "Condition": {
                            "StringEquals": {f"{GITHUB}:aud": "sts.amazonaws.com"},
                            "StringLike": {f"{GITHUB}:sub": "repo:example/agents:ref:refs/heads/main"},
                        },
                    }
                ),
            },
        ),
        res(
            "aws:iam/role:Role",
            "vendor-audit",
            {
                "tags": TAGS,
                "assumeRolePolicy": doc(
                    {
                        "Effect": "Allow",
                        "Principal": {"AWS": "arn:aws:iam::999988887777:root"},
                        "Action": "sts:AssumeRole",
                        "Condition": {"StringEquals": {"sts:ExternalId": "vendor-7f3a"}},
                    }
                ),
            },
        ),
        res(
            "aws:iam/accessKey:AccessKey",
            "break-glass-key",
            {"user": "break-glass", "status": "Inactive"},
        ),
        res(
            "aws:iam/policyAttachment:PolicyAttachment",
            "auditors-read",
            {"groups": ["auditors"], "policyArn": "arn:aws:iam::aws:policy/SecurityAudit"},
        ),
        res(
            "aws:iam/accountPasswordPolicy:AccountPasswordPolicy",
            "password-policy",
            {
                "minimumPasswordLength": 14,
                "passwordReusePrevention": 24,
                "requireLowercaseCharacters": True,
                "requireUppercaseCharacters": True,
                "requireNumbers": True,
                "requireSymbols": True,
                "maxPasswordAge": 90,
            },
        ),
        res(
            "aws:secretsmanager/secret:Secret",
            "db-credentials",
            {"kmsKeyId": "arn:fixture:key", "tags": TAGS},
        ),
        res(
            "aws:secretsmanager/secretRotation:SecretRotation",
            "db-credentials-rotation",
            {
                "secretId": "arn:fixture:db-credentials",
                "rotationLambdaArn": "arn:fixture:rotator",
                "rotationRules": {"automaticallyAfterDays": 30},
            },
        ),
        res(
            "aws:ssm/parameter:Parameter",
            "db-host",
            {"type": "String", "name": "/app/db-host", "value": "db.internal.example.com"},
        ),
        res("aws:sns/topic:Topic", "events", {"kmsMasterKeyId": "alias/aws/sns", "tags": TAGS}),
        res(
            "aws:sns/topicPolicy:TopicPolicy",
            "events-policy",
            {
                "arn": "arn:fixture:events",
                "policy": doc({**private, "Action": "sns:Publish", "Resource": "arn:fixture:events"}),
            },
        ),
        res(
            "aws:cloudtrail/trail:Trail",
            "trail",
            {
                "s3BucketName": "logs-bucket",
                "enableLogFileValidation": True,
                "isMultiRegionTrail": True,
                "kmsKeyId": "arn:fixture:key",
                "enableLogging": True,
            },
        ),
        # -- edge --------------------------------------------------------------------------------
        res("aws:route53/zone:Zone", "public-zone", {"name": "agents.example.com"}, id_="Z0PUBLIC"),
        res(
            "aws:route53/keySigningKey:KeySigningKey",
            "public-zone-ksk",
            {"hostedZoneId": "Z0PUBLIC", "keyManagementServiceArn": "arn:fixture:dnssec-key", "name": "ksk"},
        ),
        res(
            "aws:route53/hostedZoneDnsSec:HostedZoneDnsSec",
            "public-zone-dnssec",
            {"hostedZoneId": "Z0PUBLIC"},
        ),
        res(
            "aws:cloudfront/distribution:Distribution",
            "cdn",
            {
                "enabled": True,
                "origins": [
                    {
                        "originId": "data",
                        "domainName": "data-bucket.s3.eu-west-1.amazonaws.com",
                        "originAccessControlId": "oac-1",
                    }
                ],
                "defaultCacheBehavior": {
                    "targetOriginId": "data",
                    "viewerProtocolPolicy": "redirect-to-https",
                    "allowedMethods": ["GET", "HEAD"],
                    "cachedMethods": ["GET", "HEAD"],
                },
                "viewerCertificate": {
                    "acmCertificateArn": "arn:fixture:cert",
                    "sslSupportMethod": "sni-only",
                    "minimumProtocolVersion": "TLSv1.2_2021",
                },
                "webAclId": "arn:fixture:cdn-acl",
                "loggingConfig": {"bucket": "logs-bucket.s3.amazonaws.com"},
                "restrictions": {"geoRestriction": {"restrictionType": "none"}},
            },
        ),
        res(
            "aws:apigateway/method:Method",
            "items-get",
            {"restApi": "api-1", "resourceId": "r-1", "httpMethod": "GET", "authorization": "AWS_IAM"},
        ),
        res(
            "aws:apigatewayv2/route:Route",
            "items-route",
            {
                "apiId": "http-1",
                "routeKey": "GET /items",
                "authorizationType": "JWT",
                "authorizerId": "jwt-1",
            },
        ),
        res(
            "aws:apigatewayv2/stage:Stage",
            "http-default",
            {
                "apiId": "http-1",
                "name": "$default",
                "accessLogSettings": {
                    "destinationArn": "arn:fixture:api-logs",
                    "format": "$context.requestId",
                },
            },
        ),
    ]


def _task(change: Any) -> Flip:
    return in_json("containerDefinitions", lambda defs: change(defs[0]))


def _root_init(*, awaited: bool = True, drop: tuple[str, ...] = ("ALL",), essential: bool = False) -> Flip:
    """A root setup container beside the app (as the shipped stacks' scratch-permissions step),
    confined or not."""

    def change(defs: list[dict[str, Any]]) -> None:
        defs.append(
            {
                "name": "prepare",
                "image": defs[0]["image"],
                "essential": essential,
                "user": "0:0",
                "readonlyRootFilesystem": True,
                "linuxParameters": {"capabilities": {"drop": list(drop)}},
            }
        )
        if awaited:
            defs[0]["dependsOn"] = [{"containerName": "prepare", "condition": "SUCCESS"}]

    return in_json("containerDefinitions", change)


def _assume(**fields: Any) -> Flip:
    return in_json("assumeRolePolicy", lambda d: d["Statement"][0].update(fields))


def _add_statement(key: str, stmt: dict[str, Any]) -> Flip:
    return in_json(key, lambda d: d["Statement"].append(stmt))


PUBLIC_READ = {
    "Effect": "Allow",
    "Principal": "*",
    "Action": "s3:GetObject",
    "Resource": "arn:aws:s3:::data-bucket/*",
}

# (rule, resource, flip, label)
CASES: list[tuple[str, str, Flip, str]] = [
    (
        "aws-sg-no-public-admin-ports",
        "tasks-sg",
        append("ingress", {"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["0.0.0.0/0"]}),
        "ssh",
    ),
    (
        "aws-sg-no-public-admin-ports",
        "cache-sg",
        append("ingress", {"protocol": "-1", "fromPort": 0, "toPort": 0, "ipv6CidrBlocks": ["::/0"]}),
        "all v6",
    ),
    (
        "aws-default-sg-closed",
        "default-sg",
        setp("ingress", [{"protocol": "-1", "fromPort": 0, "toPort": 0, "self": True}]),
        "self rule",
    ),
    ("aws-nacl-no-public-admin-ports", "private-acl", setp("ingress.0.cidrBlock", "0.0.0.0/0"), "allow all"),
    ("aws-vpc-flow-logs", "vpc-flow", setp("vpcId", "vpc-other"), "other vpc"),
    ("aws-subnet-no-auto-public-ip", "private-a", setp("mapPublicIpOnLaunch", True), "auto ip"),
    ("aws-ec2-imdsv2", "worker", setp("metadataOptions.httpTokens", "optional"), "imdsv1"),
    ("aws-ec2-imdsv2", "workers-lt", setp("metadataOptions", DELETE), "template default"),
    ("aws-ebs-encrypted", "scratch", setp("encrypted", False), "volume"),
    ("aws-ebs-encrypted", "workers-lt", setp("blockDeviceMappings.0.ebs.encrypted", False), "template disk"),
    ("aws-ec2-no-public-ip", "worker", setp("associatePublicIpAddress", True), "public ip"),
    ("aws-ec2-no-public-ip", "private-a", setp("mapPublicIpOnLaunch", True), "via subnet"),
    (
        "aws-no-plaintext-secrets",
        "worker",
        setp("userData", "#!/bin/bash\nexport DB_PASSWORD=hunter2\n"),
        "user data",
    ),
    (
        "aws-no-plaintext-secrets",
        "thumbnails",
        setp("environment.variables.DATABASE_URL", "postgres://app:Zx81!kq@db.internal:5432/app"),
        "url password",
    ),
    ("aws-no-plaintext-secrets", "db-host", setp("value", "AKIAIOSFODNN7EXAMPLE"), "access key in String"),
    (
        "aws-lambda-permission-restricted",
        "thumbnails-from-s3",
        chain(setp("principal", "*"), setp("sourceArn", DELETE), setp("sourceAccount", DELETE)),
        "public",
    ),
    (
        "aws-lambda-permission-restricted",
        "thumbnails-from-s3",
        chain(setp("sourceArn", DELETE), setp("sourceAccount", DELETE)),
        "deputy",
    ),
    ("aws-lambda-url-auth", "thumbnails-url", setp("authorizationType", "none"), "url none"),
    (
        "aws-lambda-url-auth",
        "thumbnails-url",
        setp("cors", {"allowOrigins": ["*"], "allowMethods": ["*"]}),
        "cors",
    ),
    ("aws-route53-dnssec", "public-zone-dnssec", setp("hostedZoneId", "Z0OTHER"), "unsigned zone"),
    ("aws-lambda-supported-runtime", "thumbnails", setp("runtime", "python3.7"), "old runtime"),
    ("aws-ecs-non-root-user", "api-task", _task(lambda c: c.update(user="0:0")), "root"),
    ("aws-ecs-non-root-user", "api-task", _root_init(awaited=False), "root step nobody awaits"),
    ("aws-ecs-non-root-user", "api-task", _root_init(drop=("NET_RAW",)), "root step with capabilities"),
    ("aws-ecs-non-root-user", "api-task", _root_init(essential=True), "root step that keeps running"),
    ("aws-ecs-no-host-namespaces", "api-task", setp("networkMode", "host"), "host network"),
    (
        "aws-ecs-efs-transit-encryption",
        "api-task",
        setp("volumes.0.efsVolumeConfiguration.transitEncryption", "DISABLED"),
        "efs plain",
    ),
    ("aws-ecs-separate-task-role", "api-task", setp("taskRoleArn", "arn:fixture:exec-role"), "same role"),
    ("aws-ecs-container-insights", "cluster", setp("settings.0.value", "disabled"), "insights off"),
    (
        "aws-ecs-not-privileged",
        "api-task",
        _task(lambda c: c.update(linuxParameters={"capabilities": {"add": ["SYS_ADMIN"]}})),
        "sys_admin",
    ),
    ("aws-eks-endpoint-restricted", "eks", setp("vpcConfig.endpointPublicAccess", True), "public endpoint"),
    ("aws-eks-secrets-encryption", "eks", setp("encryptionConfig", DELETE), "no envelope"),
    ("aws-eks-control-plane-logging", "eks", setp("enabledClusterLogTypes", ["api"]), "no audit"),
    (
        "aws-eks-nodegroup-ssh-restricted",
        "eks-nodes",
        setp("remoteAccess", {"ec2SshKey": "ops"}),
        "ssh world",
    ),
    ("aws-ecr-immutable-tags", "images", setp("imageTagMutability", "MUTABLE"), "mutable"),
    ("aws-ecr-scan-on-push", "images", setp("imageScanningConfiguration.scanOnPush", False), "no scan"),
    ("aws-resource-policy-not-public", "images-pull", statement("policy", Principal="*"), "public pull"),
    (
        "aws-resource-policy-not-public",
        "events-policy",
        statement("policy", Principal={"AWS": "*"}),
        "public topic",
    ),
    ("aws-sns-encrypted", "events", setp("kmsMasterKeyId", DELETE), "plain topic"),
    ("aws-data-store-encrypted", "db", setp("storageEncrypted", False), "rds plain"),
    ("aws-data-store-not-public", "db", setp("publiclyAccessible", True), "public rds"),
    ("aws-data-store-backups", "db", setp("backupRetentionPeriod", 0), "no backups"),
    ("aws-data-store-backups", "sessions", setp("pointInTimeRecovery.enabled", False), "no pitr"),
    ("aws-rds-iam-auth", "db", setp("iamDatabaseAuthenticationEnabled", False), "passwords only"),
    ("aws-rds-multi-az", "db", setp("multiAz", False), "single az"),
    ("aws-db-auto-minor-upgrade", "db", setp("autoMinorVersionUpgrade", False), "no patches"),
    ("aws-db-logs-exported", "db", setp("enabledCloudwatchLogsExports", []), "no logs"),
    ("aws-rds-current-ca", "db", setp("caCertIdentifier", "RDS-CA-2019"), "expired ca"),
    ("aws-rds-tls-required", "db", setp("engineVersion", "14.9"), "pg14 without force_ssl"),
    (
        "database-password-strength",
        "db",
        chain(setp("manageMasterUserPassword", DELETE), setp("password", "Password123!")),
        "guessable",
    ),
    ("stateful-deletion-protection", "db", setp("deletionProtection", False), "rds"),
    ("stateful-deletion-protection", "sessions", setp("deletionProtectionEnabled", False), "dynamodb"),
    ("aws-s3-no-public-policy", "data-policy", _add_statement("policy", PUBLIC_READ), "public read"),
    ("aws-s3-no-public-acl", "data-acl", setp("acl", "PUBLIC-READ"), "public acl"),
    ("aws-s3-no-public-acl", "index", setp("acl", "public-read"), "public object"),
    ("aws-s3-acls-disabled", "data-ownership", setp("rule.objectOwnership", "ObjectWriter"), "acls on"),
    ("aws-s3-access-logging", "data-logging", setp("bucket", "other-bucket"), "no logging"),
    ("aws-s3-no-open-cors", "data-cors", setp("corsRules.1.allowedOrigins", ["*"]), "any origin writes"),
    ("aws-iam-trust-policy-restricted", "deploy", _assume(Condition={}), "any repo"),
    ("aws-iam-trust-policy-restricted", "api-role", _assume(Principal={"AWS": "*"}), "anyone"),
    ("aws-iam-cross-account-trust-conditions", "vendor-audit", _assume(Condition={}), "no external id"),
    ("aws-iam-no-long-lived-credentials", "break-glass-key", setp("status", "Active"), "active key"),
    ("aws-iam-no-user-attached-policies", "auditors-read", setp("users", ["alice"]), "user"),
    ("aws-iam-password-policy", "password-policy", setp("minimumPasswordLength", 8), "short"),
    (
        "aws-iam-no-unscoped-data-access",
        "api-secrets",
        statement("policy", Action="secretsmanager:Get*", Resource="*"),
        "every secret",
    ),
    (
        "aws-iam-no-admin-attachment",
        "deploy",
        setp("managedPolicyArns", ["arn:aws:iam::aws:policy/AdministratorAccess"]),
        "inline admin",
    ),
    ("aws-secrets-rotation", "db-credentials-rotation", setp("secretId", "arn:fixture:other"), "no rotation"),
    ("aws-cloudtrail-integrity", "trail", setp("enableLogFileValidation", False), "no validation"),
    (
        "aws-cloudfront-viewer-https",
        "cdn",
        setp("defaultCacheBehavior.viewerProtocolPolicy", "allow-all"),
        "http",
    ),
    ("aws-cloudfront-viewer-https", "cdn", setp("viewerCertificate.minimumProtocolVersion", "TLSv1"), "tls1"),
    ("aws-cloudfront-origin-protected", "cdn", setp("origins.0.originAccessControlId", DELETE), "no oac"),
    ("aws-cloudfront-waf", "cdn", setp("webAclId", DELETE), "no waf"),
    ("aws-cloudfront-logging", "cdn", setp("loggingConfig", DELETE), "no logs"),
    ("aws-apigw-auth", "items-get", setp("authorization", "NONE"), "open method"),
    ("aws-apigw-auth", "items-route", setp("authorizationType", DELETE), "open route"),
    ("aws-apigw-access-logging", "http-default", setp("accessLogSettings", DELETE), "no logs"),
    ("aws-alb-desync-mitigation", "alb", setp("desyncMitigationMode", "monitor"), "monitor"),
    ("aws-alb-waf", "alb-waf", setp("resourceArn", "arn:fixture:other"), "no waf"),
]
