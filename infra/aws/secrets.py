"""Secrets: the site's customer-managed KMS key and its Secrets Manager entries (client API
keys, the Redis AUTH token, the model key when set). The Redis token is generated here, so no
person ever sees it; the cache and the tasks both take it from this component.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.aws.site import AwsSite
from infra.component import Capability
from infra.workload import REDIS_AUTH

# Every KMS action the account's administrators may need on this key. Listed rather than
# "kms:*" so the key policy holds no wildcard action.
KEY_ADMIN_ACTIONS: tuple[str, ...] = (
    "kms:CancelKeyDeletion", "kms:CreateAlias", "kms:CreateGrant", "kms:Decrypt", "kms:DeleteAlias",
    "kms:DescribeKey", "kms:DisableKey", "kms:DisableKeyRotation", "kms:EnableKey",
    "kms:EnableKeyRotation", "kms:Encrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListAliases", "kms:ListGrants",
    "kms:ListKeyRotations", "kms:ListResourceTags", "kms:PutKeyPolicy", "kms:ReEncryptFrom",
    "kms:ReEncryptTo", "kms:RetireGrant", "kms:RevokeGrant", "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion", "kms:TagResource", "kms:UntagResource", "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
)  # fmt: skip
LOGS_KEY_ACTIONS: tuple[str, ...] = (
    "kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext", "kms:DescribeKey",
)  # fmt: skip
ALARM_KEY_ACTIONS: tuple[str, ...] = ("kms:Decrypt", "kms:GenerateDataKey")


def account_administers(account_root: object) -> dict[str, Any]:
    """The key policy statement that leaves the key's administration to the account's IAM."""
    return {
        "Sid": "AccountAdministersThroughIam",
        "Effect": "Allow",
        "Principal": {"AWS": account_root},
        "Action": list(KEY_ADMIN_ACTIONS),
        # In a key policy "*" means this key; it is the only form AWS accepts.
        "Resource": "*",
    }


def alarms_may_publish(account: object, alarm_arns: object) -> dict[str, Any]:
    """The key policy statement that lets this account's CloudWatch alarms publish to a topic
    encrypted with the key (an AWS-managed key would not let them)."""
    return {
        "Sid": "CloudWatchAlarmsPublishToTheEncryptedTopic",
        "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Action": list(ALARM_KEY_ACTIONS),
        "Resource": "*",
        "Condition": {
            "StringEquals": {"aws:SourceAccount": account},
            "ArnLike": {"aws:SourceArn": alarm_arns},
        },
    }


# ElastiCache AUTH tokens: 16-128 printable characters without @, " or /. Alphanumeric only
# keeps the token safe in every client and URL.
AUTH_TOKEN_LENGTH = 64


@dataclass(frozen=True)
class SecretsArgs:
    site: AwsSite
    # Logical name -> value (Pulumi secrets from the stack config; see infra.workload).
    values: Mapping[str, str]
    # Log groups (by role) whose CloudWatch Logs encryption this key serves, and no others.
    log_roles: Sequence[str]


class Secrets(Capability):
    TARGET = "aws"

    def __init__(self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)
        site = args.site

        # The site's KMS key: secrets, log groups, cache at rest and the alarm topic. The key
        # policy names no "*" principal: the account (through IAM), CloudWatch Logs for this
        # site's log groups only, and CloudWatch alarms of this account.
        key_policy = {
            "Version": "2012-10-17",
            "Statement": [
                account_administers(site.account_root),
                {
                    "Sid": "CloudWatchLogsForThisSitesLogGroups",
                    "Effect": "Allow",
                    "Principal": {"Service": f"logs.{site.region}.amazonaws.com"},
                    "Action": list(LOGS_KEY_ACTIONS),
                    "Resource": "*",
                    "Condition": {
                        "ArnEquals": {
                            "kms:EncryptionContext:aws:logs:arn": [
                                site.log_group_arn(r) for r in args.log_roles
                            ]
                        }
                    },
                },
                alarms_may_publish(site.account, site.arn("cloudwatch", f"alarm:{site.prefix}-*")),
            ],
        }
        self.key = aws.kms.Key(
            f"{name}-key",
            description=f"Skyfleet {site.name}: secrets, logs, cache and alarms",
            enable_key_rotation=True,
            deletion_window_in_days=30 if site.prod else 7,
            policy=pulumi.Output.json_dumps(key_policy),
            tags=site.tagged("key"),
            opts=self.child(),
        )
        # A readable name for the key in the console and CLI.
        aws.kms.Alias(
            f"{name}-key", name=f"alias/{site.prefix}", target_key_id=self.key.key_id, opts=self.child()
        )

        # The Redis AUTH token: generated, never typed; the cache and the tasks read it from here.
        token = random.RandomPassword(
            f"{name}-redis-auth", length=AUTH_TOKEN_LENGTH, special=False, opts=self.child()
        )
        self.redis_auth_token: pulumi.Output[str] = pulumi.Output.secret(token.result)

        values: dict[str, Any] = {k: pulumi.Output.secret(v) for k, v in args.values.items()}
        values[REDIS_AUTH] = self.redis_auth_token
        self.secrets: dict[str, aws.secretsmanager.Secret] = {}
        self.versions: dict[str, aws.secretsmanager.SecretVersion] = {}
        for logical, value in sorted(values.items()):
            # One Secrets Manager secret per logical secret, encrypted with the site's key. Its
            # name gets a suffix of its own: a deleted secret holds its name through its
            # recovery window, so a stack taken down and deployed again within it would fail.
            secret = aws.secretsmanager.Secret(
                f"{name}-{logical}",
                name_prefix=f"{site.secret_name(logical)}-",
                description=f"Skyfleet {site.name}: {logical}",
                kms_key_id=self.key.arn,
                recovery_window_in_days=30 if site.prod else 7,
                tags=site.tagged(logical),
                opts=self.child(),
            )
            # Its current value (a Pulumi secret: encrypted in state, never printed).
            self.versions[logical] = aws.secretsmanager.SecretVersion(
                f"{name}-{logical}", secret_id=secret.id, secret_string=value, opts=self.child()
            )
            self.secrets[logical] = secret

        self.register_outputs(
            {
                "keyArn": self.key.arn,
                "secretArns": {k: s.arn for k, s in self.secrets.items()},
            }
        )

    @property
    def secret_arns(self) -> dict[str, pulumi.Output[str]]:
        return {k: s.arn for k, s in self.secrets.items()}
