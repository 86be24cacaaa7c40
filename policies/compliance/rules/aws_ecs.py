"""ECS task definitions (their `containerDefinitions` JSON) and services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pulumi_policy import Severity

from ._docs import DocumentError, container_definitions, looks_secret
from ._rule import Controls, Rule, Subject, get_path, truthy

TASK = ("aws:ecs/taskDefinition:TaskDefinition",)
SERVICE = ("aws:ecs/service:Service",)


def _per_container(check: Callable[[dict[str, Any]], Iterator[str]]) -> Callable[[Subject], Iterator[str]]:
    """Run a per-container check over the parsed definitions; bad JSON is itself a violation."""

    def run(s: Subject) -> Iterator[str]:
        try:
            defs = container_definitions(s.props.get("containerDefinitions"))
        except DocumentError as exc:
            yield str(exc)
            return
        for container in defs:
            name = container.get("name", "?")
            for problem in check(container):
                yield f"container {name!r}: {problem}"

    return run


def _privileged(c: dict[str, Any]) -> Iterator[str]:
    if c.get("privileged") is True:
        yield "privileged is true"


def _readonly(c: dict[str, Any]) -> Iterator[str]:
    if c.get("readonlyRootFilesystem") is not True:
        yield "readonlyRootFilesystem must be true (mount a tmpfs/volume for scratch space)"


def _plain_secrets(c: dict[str, Any]) -> Iterator[str]:
    for env in c.get("environment") or []:
        if isinstance(env, dict) and looks_secret(str(env.get("name", ""))) and env.get("value"):
            yield f"environment variable {env.get('name')!r} holds a literal value; use secrets[].valueFrom"


def _logging(c: dict[str, Any]) -> Iterator[str]:
    if not (c.get("logConfiguration") or {}).get("logDriver"):
        yield "no logConfiguration.logDriver: the container's output is lost"


def _public_ip(s: Subject) -> Iterator[str]:
    if truthy(get_path(s.props, "networkConfiguration", "assignPublicIp")):
        yield "networkConfiguration.assignPublicIp is true; tasks belong in private subnets behind the ALB"


_HARDEN = Controls(cis=("Docker-5.4",), nist=("AC-6", "CM-7"), soc2=("CC6.1",), pci=("2.2.1",))

RULES = [
    Rule(
        "aws-ecs-not-privileged",
        "ECS containers do not run privileged.",
        Severity.HIGH,
        _HARDEN,
        "Remove privileged=true from the container definition.",
        TASK,
        _per_container(_privileged),
    ),
    Rule(
        "aws-ecs-readonly-root-filesystem",
        "ECS containers have a read-only root filesystem.",
        Severity.MEDIUM,
        Controls(cis=("Docker-5.12",), nist=("CM-7", "SI-7"), soc2=("CC6.8",)),
        "Set readonlyRootFilesystem=true and mount a volume for the paths the app writes.",
        TASK,
        _per_container(_readonly),
    ),
    Rule(
        "aws-ecs-no-plaintext-secrets",
        "ECS containers take credentials from secrets, not plain env.",
        Severity.HIGH,
        Controls(nist=("IA-5(7)", "SC-28"), soc2=("CC6.1",), pci=("8.6.2",)),
        "Move the value into Secrets Manager and reference it in secrets[] with valueFrom.",
        TASK,
        _per_container(_plain_secrets),
    ),
    Rule(
        "aws-ecs-logging",
        "ECS containers ship logs (logConfiguration).",
        Severity.MEDIUM,
        Controls(nist=("AU-2", "AU-12"), soc2=("CC7.2",), pci=("10.2.1",)),
        "Add logConfiguration with logDriver 'awslogs' pointing at an encrypted log group.",
        TASK,
        _per_container(_logging),
    ),
    Rule(
        "aws-ecs-no-public-ip",
        "ECS services do not assign public IPs to tasks.",
        Severity.HIGH,
        Controls(nist=("SC-7",), soc2=("CC6.6",), pci=("1.4.4",)),
        "Set network_configuration.assign_public_ip=False and use private subnets with NAT egress.",
        SERVICE,
        _public_ip,
    ),
]
