"""The AWS coordinates every component of a site shares: where it lives (partition, region,
account), how its resources are named and tagged, and the ARNs that must be known before the
resources exist (a KMS key policy names the log groups it may encrypt before they are created).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi

from infra.spec import AwsStack, Environment

# The retention values CloudWatch Logs accepts (days); anything else is refused by the API.
LOG_RETENTION_DAYS: tuple[int, ...] = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
)  # fmt: skip

# Fargate task sizes: CPU units -> the memory (MiB) range and step it may be paired with.
FARGATE_SIZES: dict[int, tuple[int, int, int]] = {
    256: (512, 2048, 512),
    512: (1024, 4096, 1024),
    1024: (2048, 8192, 1024),
    2048: (4096, 16384, 1024),
    4096: (8192, 30720, 1024),
}


class AwsSpecError(ValueError):
    """A value in the stack config that AWS would reject; the message names the key."""


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def check_spec(spec: AwsStack) -> None:
    """Refuse, before any resource is registered, values AWS would reject half-way through."""
    problems: list[str] = []
    if spec.log_retention_days not in LOG_RETENTION_DAYS:
        problems.append(
            f"skyfleet:logRetentionDays: given {spec.log_retention_days}; expected one of "
            f"{list(LOG_RETENTION_DAYS)} (the values CloudWatch Logs accepts)"
        )
    sizes = FARGATE_SIZES.get(spec.app.cpu)
    if sizes is None:
        problems.append(
            f"skyfleet:app.cpu: given {spec.app.cpu}; expected one of {sorted(FARGATE_SIZES)} (Fargate)"
        )
    else:
        low, high, step = sizes
        if not (low <= spec.app.memory <= high and spec.app.memory % step == 0):
            problems.append(
                f"skyfleet:app.memory: given {spec.app.memory}; expected {low}..{high} in steps of "
                f"{step} for app.cpu {spec.app.cpu} (Fargate)"
            )
    if spec.app.worker_replicas.min < 1:
        problems.append(
            "skyfleet:app.workerReplicas.min: given 0; expected >= 1 on aws (the worker scales on "
            "queue backlog per running task, which cannot scale out from zero tasks)"
        )
    net = spec.network
    if len(net.public_subnet_cidrs) < 2 or len(net.public_subnet_cidrs) != len(net.private_subnet_cidrs):
        problems.append(
            "skyfleet:network: expected the same number (>= 2) of publicSubnetCidrs and "
            f"privateSubnetCidrs, one pair per availability zone; given {len(net.public_subnet_cidrs)} "
            f"and {len(net.private_subnet_cidrs)}"
        )
    if problems:
        raise AwsSpecError("\n".join(problems))


@dataclass(frozen=True)
class AwsSite:
    """One AWS site: its coordinates, naming and tags."""

    name: str
    environment: Environment
    region: str
    account: str
    tags: Mapping[str, str]

    @classmethod
    def from_spec(cls, spec: AwsStack) -> AwsSite:
        return cls(
            name=spec.site_name,
            environment=spec.environment,
            region=spec.region,
            account=spec.account_id,
            tags=spec.labels(),
        )

    @property
    def prod(self) -> bool:
        return self.environment is Environment.PROD

    @property
    def partition(self) -> str:
        return partition_of(self.region)

    @property
    def prefix(self) -> str:
        """Physical-name prefix: unique per site inside one account."""
        return f"skyfleet-{self.name}"

    def tagged(self, name: str | None = None) -> dict[str, str]:
        """The site's tags, plus a Name tag where the console shows one."""
        out = dict(self.tags)
        if name:
            out["Name"] = f"{self.prefix}-{name}"
        return out

    def arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        region = self.region if regional else ""
        return f"arn:{self.partition}:{service}:{region}:{self.account}:{resource}"

    @property
    def account_root(self) -> str:
        return f"arn:{self.partition}:iam::{self.account}:root"

    def log_group_name(self, role: str) -> str:
        return f"/skyfleet/{self.name}/{role}"

    def log_group_arn(self, role: str) -> str:
        return self.arn("logs", f"log-group:{self.log_group_name(role)}")

    def secret_name(self, logical: str) -> str:
        return f"skyfleet/{self.name}/{logical}"

    def alarm_name(self, what: str) -> str:
        return f"{self.prefix}-{what}"


def policy_json(statements: Sequence[Mapping[str, Any]]) -> pulumi.Output[str]:
    """An IAM policy document; statements may hold Outputs (ARNs of resources being created)."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})


def deny_insecure_transport(service_prefix: str, resources: Sequence[object]) -> dict[str, Any]:
    """The statement that refuses every request not made over TLS.

    A Deny for every principal and every action of the service is the form AWS documents for
    this guard; it grants nothing.
    """
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": f"{service_prefix}:*",
        "Resource": list(resources),
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def service_assume_policy(service: str, account: str) -> str:
    """Trust policy for an AWS service, limited to calls on behalf of this account."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": service},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"aws:SourceAccount": account}},
                }
            ],
        }
    )
