# pyright: reportArgumentType=false, reportCallIssue=false
# (Pulumi args written as dict literals, as programs usually are; pyright cannot infer their TypedDicts.)
"""A serverless order API: API Gateway (HTTP API) -> Lambda -> DynamoDB, with an SQS work queue
(dead-lettered through a separate RedrivePolicy), SNS notifications and a Secrets Manager
secret. `hardened` picks the careful settings; the others are planted violations (planted.yaml)."""

import json

import pulumi
import pulumi_aws as aws

config = pulumi.Config()
hardened = config.require_bool("hardened")
ACCOUNT = "210987654321"


def pick(good, bad):
    return good if hardened else bad


tags = {"owner": "orders", "environment": "prod", "cost-center": "cc-7", "app": "orders"}
opts = pulumi.ResourceOptions(
    provider=aws.Provider(
        "aws", region="eu-central-1", default_tags={"tags": tags}, allowed_account_ids=[ACCOUNT]
    )
)

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
                "Principal": {"Service": "logs.eu-central-1.amazonaws.com"},
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
                        "kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:eu-central-1:{ACCOUNT}"
                        ":log-group:*"
                    }
                },
            },
        ],
    }
)

key = aws.kms.Key("orders", enable_key_rotation=True, description="orders data", policy=KEY_POLICY, opts=opts)

table = aws.dynamodb.Table(
    "orders",
    billing_mode="PAY_PER_REQUEST",
    hash_key="pk",
    range_key="sk",
    attributes=[{"name": "pk", "type": "S"}, {"name": "sk", "type": "S"}],
    point_in_time_recovery={"enabled": pick(True, False)},  # planted: no point-in-time recovery
    server_side_encryption={"enabled": True, "kms_key_arn": key.arn},
    deletion_protection_enabled=True,
    opts=opts,
)

# The dead-letter queue is wired by a RedrivePolicy resource, and its name says nothing about it.
parking = aws.sqs.Queue(
    "parking-lot", kms_master_key_id=key.arn, message_retention_seconds=1209600, opts=opts
)
work = aws.sqs.Queue(
    "fulfilment",
    visibility_timeout_seconds=120,
    kms_master_key_id=key.arn if hardened else None,
    sqs_managed_sse_enabled=pick(None, False),  # planted: encryption switched off
    opts=opts,
)
aws.sqs.RedrivePolicy(
    "fulfilment-redrive",
    queue_url=work.url,
    redrive_policy=parking.arn.apply(
        lambda arn: json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": 5})
    ),
    opts=opts,
)
aws.sqs.RedriveAllowPolicy(
    "parking-lot-allow",
    queue_url=parking.url,
    redrive_allow_policy=work.arn.apply(
        lambda arn: json.dumps({"redrivePermission": "byQueue", "sourceQueueArns": [arn]})
    ),
    opts=opts,
)

topic = aws.sns.Topic(
    "order-events", kms_master_key_id=pick(key.arn, None), opts=opts
)  # planted: unencrypted
aws.sns.TopicPolicy(
    "order-events-policy",
    arn=topic.arn,
    policy=topic.arn.apply(
        lambda arn: json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        # planted: anyone may subscribe to order events
                        "Principal": pick({"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "*"),
                        "Action": ["sns:Subscribe", "sns:Receive"],
                        "Resource": arn,
                    }
                ],
            }
        )
    ),
    opts=opts,
)

payment_key = aws.secretsmanager.Secret("payment-provider", kms_key_id=key.arn, opts=opts)
aws.secretsmanager.SecretRotation(
    "payment-provider-rotation",
    secret_id=payment_key.id,
    rotation_lambda_arn=f"arn:aws:lambda:eu-central-1:{ACCOUNT}:function:rotate-payment-key",
    rotation_rules={"automatically_after_days": 30},
    opts=opts,
)

role = aws.iam.Role(
    "api-fn",
    assume_role_policy=json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    # planted: any principal may assume the function's role
                    "Principal": pick({"Service": "lambda.amazonaws.com"}, {"AWS": "*"}),
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    ),
    opts=opts,
)
aws.iam.RolePolicyAttachment(
    "api-fn-logs",
    role=role.name,
    policy_arn="arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    opts=opts,
)
aws.iam.RolePolicy(
    "api-fn-data",
    role=role.id,
    policy=pulumi.Output.all(table.arn, work.arn, payment_key.arn).apply(
        lambda a: json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    # planted: item reads and writes on every table of the account
                    {
                        "Effect": "Allow",
                        "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"],
                        "Resource": pick([a[0], f"{a[0]}/index/*"], "*"),
                    },
                    {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": a[1]},
                    {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": a[2]},
                ],
            }
        )
    ),
    opts=opts,
)

env = {
    "TABLE_NAME": table.name,
    "QUEUE_URL": work.url,
    "PAYMENT_SECRET_ARN": payment_key.arn,
    "TOKEN_TTL_SECONDS": "900",
    "AUTH_MODE": "jwt",
}
if not hardened:
    env["STRIPE_API_KEY"] = "sk_live_4eC39HqLyjWDarjtT1zdp7dcXYZ0a"  # planted: a live key in the environment
fn = aws.lambda_.Function(
    "api",
    runtime="python3.12",
    handler="app.handler",
    role=role.arn,
    code=pulumi.AssetArchive({"app.py": pulumi.StringAsset("def handler(event, context):\n    return {}\n")}),
    environment={"variables": env},
    kms_key_arn=key.arn,
    tracing_config={"mode": "Active"},
    opts=opts,
)
aws.lambda_.FunctionUrl(
    "api-url", function_name=fn.name, authorization_type=pick("AWS_IAM", "NONE"), opts=opts
)  # planted: open URL

api = aws.apigatewayv2.Api("http", protocol_type="HTTP", opts=opts)
integration = aws.apigatewayv2.Integration(
    "api",
    api_id=api.id,
    integration_type="AWS_PROXY",
    integration_uri=fn.invoke_arn,
    payload_format_version="2.0",
    opts=opts,
)
authorizer = aws.apigatewayv2.Authorizer(
    "jwt",
    api_id=api.id,
    authorizer_type="JWT",
    identity_sources=["$request.header.Authorization"],
    jwt_configuration={"audiences": ["orders"], "issuer": "https://auth.example.com/"},
    opts=opts,
)
aws.apigatewayv2.Route(
    "create-order",
    api_id=api.id,
    route_key="POST /orders",
    target=integration.id.apply(lambda i: f"integrations/{i}"),
    authorization_type=pick("JWT", "NONE"),  # planted: no authorizer on a write route
    authorizer_id=authorizer.id if hardened else None,
    opts=opts,
)
api_logs = aws.cloudwatch.LogGroup("http-api", retention_in_days=90, kms_key_id=key.arn, opts=opts)
aws.apigatewayv2.Stage(
    "default",
    api_id=api.id,
    name="$default",
    auto_deploy=True,
    access_log_settings={"destination_arn": api_logs.arn, "format": "$context.requestId"},
    opts=opts,
)
aws.lambda_.Permission(
    "apigw-invoke",
    action="lambda:InvokeFunction",
    function=fn.name,
    principal=pick("apigateway.amazonaws.com", "*"),  # planted: anyone may invoke
    source_arn=api.execution_arn.apply(lambda arn: f"{arn}/*/*") if hardened else None,
    opts=opts,
)
aws.cloudwatch.LogGroup("api-fn", name="/aws/lambda/api", retention_in_days=90, kms_key_id=key.arn, opts=opts)

pulumi.export("endpoint", api.api_endpoint)
