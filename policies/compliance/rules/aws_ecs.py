"""ECS task definitions (their `containerDefinitions` JSON, network, PID and IPC modes, volumes),
services and clusters."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from ._docs import DocumentError, container_definitions, load_json
from ._rule import Controls, Rule, Subject, as_list, get_path, norm, truthy
from ._secrets import secret_in_variable

TASK = ("aws:ecs/taskDefinition:TaskDefinition",)
BATCH = ("aws:batch/jobDefinition:JobDefinition",)
SERVICE = ("aws:ecs/service:Service",)
CLUSTER = ("aws:ecs/cluster:Cluster",)
# Capabilities that give a container control over the host kernel or its network.
DANGEROUS_CAPABILITIES = frozenset(
    {"ALL", "SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_MODULE", "DAC_READ_SEARCH", "SYS_RAWIO", "BPF"}
)


def _per_container(check: Callable[[dict[str, Any]], Iterator[str]]) -> Callable[[Subject], Iterator[str]]:
    """Run a per-container check over the parsed definitions; bad JSON is itself a violation."""

    def run(s: Subject) -> Iterator[str]:
        try:
            if s.type in BATCH:
                props = s.props.get("containerProperties")
                defs = [load_json(props, "containerProperties")] if props else []
                defs = [d for d in defs if isinstance(d, dict)]
            else:
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
    if truthy(c.get("privileged")):
        yield "privileged is true"
    added = {
        str(a).upper().removeprefix("CAP_")
        for a in as_list(get_path(c, "linuxParameters", "capabilities", "add"))
    }
    if added & DANGEROUS_CAPABILITIES:
        yield f"linuxParameters adds {', '.join(sorted(added & DANGEROUS_CAPABILITIES))}"


def _readonly(c: dict[str, Any]) -> Iterator[str]:
    if c.get("readonlyRootFilesystem") is not True:
        yield "readonlyRootFilesystem must be true (mount a tmpfs/volume for scratch space)"


def _plain_secrets(c: dict[str, Any]) -> Iterator[str]:
    for env in c.get("environment") or []:
        if not isinstance(env, dict):
            continue
        what = secret_in_variable(str(env.get("name", "")), env.get("value"))
        if what is not None:
            yield f"environment variable {env.get('name')!r} holds {what}; use secrets[].valueFrom"


def _logging(c: dict[str, Any]) -> Iterator[str]:
    if not (c.get("logConfiguration") or {}).get("logDriver"):
        yield "no logConfiguration.logDriver: the container's output is lost"


def _is_root(c: dict[str, Any]) -> bool:
    user = str(c.get("user") or "").strip()
    return bool(user) and user.split(":", 1)[0].lower() in ("0", "root")


def _confined_init_step(c: dict[str, Any], defs: list[dict[str, Any]]) -> bool:
    """A one-shot setup step (preparing a task volume for a non-root app, say): not essential,
    awaited to completion by another container, every capability dropped and none added, not
    privileged, on a read-only root. Root there can only touch what root already owns."""
    name = c.get("name")
    awaited = any(
        d.get("containerName") == name and str(d.get("condition", "")).upper() in ("SUCCESS", "COMPLETE")
        for other in defs
        if other is not c
        for d in as_list(other.get("dependsOn"))
        if isinstance(d, dict)
    )
    caps = get_path(c, "linuxParameters", "capabilities") or {}
    dropped = {str(x).upper() for x in as_list(get_path(caps, "drop"))}
    return (
        awaited
        and c.get("essential") is False
        and "ALL" in dropped
        and not as_list(get_path(caps, "add"))
        and c.get("privileged") is not True
        and c.get("readonlyRootFilesystem") is True
    )


def _root_user(s: Subject) -> Iterator[str]:
    try:
        defs = container_definitions(s.props.get("containerDefinitions"))
    except DocumentError as exc:
        yield str(exc)
        return
    for c in defs:
        if _is_root(c) and not _confined_init_step(c, defs):
            yield f"container {c.get('name', '?')!r}: user is {c.get('user')!r}: the container runs as root"


def _host_namespaces(s: Subject) -> Iterator[str]:
    for key in ("networkMode", "pidMode", "ipcMode"):
        if norm(s.props.get(key)) == "host":
            yield f"{key} is 'host': the task shares the instance's {key[:-4]} namespace"


def _efs_transit(s: Subject) -> Iterator[str]:
    for volume in as_list(s.props.get("volumes")):
        efs = get_path(volume, "efsVolumeConfiguration")
        if efs is not None and norm(get_path(efs, "transitEncryption")) != "enabled":
            yield f"EFS volume {get_path(volume, 'name')!r} mounts without transitEncryption ENABLED"


def _separate_roles(s: Subject) -> Iterator[str]:
    task, execution = s.props.get("taskRoleArn"), s.props.get("executionRoleArn")
    if task and execution and str(task) == str(execution):
        yield (
            "taskRoleArn and executionRoleArn are the same role: the app gets the agent's pull/secret rights"
        )


def _public_ip(s: Subject) -> Iterator[str]:
    if truthy(get_path(s.props, "networkConfiguration", "assignPublicIp")):
        yield "networkConfiguration.assignPublicIp is true; tasks belong in private subnets behind the ALB"


def _insights(s: Subject) -> Iterator[str]:
    settings = {
        norm(get_path(x, "name")): norm(get_path(x, "value")) for x in as_list(s.props.get("settings"))
    }
    if settings.get("containerinsights") not in ("enabled", "enhanced"):
        yield "containerInsights is not enabled on the cluster"


_HARDEN = Controls(cis=("Docker-5.4",), nist=("AC-6", "CM-7"), soc2=("CC6.1",), pci=("2.2.1",))

RULES = [
    Rule(
        "aws-ecs-not-privileged",
        "ECS and Batch containers do not run privileged or add kernel capabilities.",
        Severity.HIGH,
        _HARDEN,
        "Remove privileged=true and linuxParameters.capabilities.add from the container definition.",
        TASK + BATCH,
        _per_container(_privileged),
        checkov=("CKV_AWS_334", "CKV_AWS_210"),
    ),
    Rule(
        "aws-ecs-readonly-root-filesystem",
        "ECS containers have a read-only root filesystem.",
        Severity.MEDIUM,
        Controls(cis=("Docker-5.12",), nist=("CM-7", "SI-7"), soc2=("CC6.8",)),
        "Set readonlyRootFilesystem=true and mount a volume for the paths the app writes.",
        TASK,
        _per_container(_readonly),
        checkov=("CKV_AWS_336",),
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
        "aws-ecs-non-root-user",
        "ECS containers do not run as root.",
        Severity.HIGH,
        Controls(cis=("Docker-4.1",), nist=("AC-6", "CM-7"), soc2=("CC6.1",), pci=("2.2.1",)),
        "Set user to a non-zero UID (e.g. '10001') or build the image with a non-root USER. A one-shot "
        "setup step may run as root if it is not essential, awaited by another container, drops every "
        "capability and has a read-only root.",
        TASK,
        _root_user,
    ),
    Rule(
        "aws-ecs-no-host-namespaces",
        "ECS tasks do not share the host's network, PID or IPC namespace.",
        Severity.HIGH,
        Controls(
            cis=("Docker-5.9", "Docker-5.15", "Docker-5.16"),
            nist=("SC-7", "AC-6"),
            soc2=("CC6.1",),
            pci=("2.2.1",),
        ),
        "Use network_mode='awsvpc' and leave pid_mode and ipc_mode unset.",
        TASK,
        _host_namespaces,
        checkov=("CKV_AWS_335",),
    ),
    Rule(
        "aws-ecs-efs-transit-encryption",
        "EFS volumes of ECS tasks are mounted with TLS.",
        Severity.MEDIUM,
        Controls(nist=("SC-8", "SC-8(1)"), soc2=("CC6.7",), pci=("4.2.1",)),
        "Set efs_volume_configuration.transit_encryption='ENABLED'.",
        TASK,
        _efs_transit,
        checkov=("CKV_AWS_97",),
    ),
    Rule(
        "aws-ecs-separate-task-role",
        "ECS tasks do not run with their execution role.",
        Severity.LOW,
        Controls(nist=("AC-6",), soc2=("CC6.3",)),
        "Give the task its own role with only what the app calls; keep image pull and secret reads on the "
        "execution role.",
        TASK,
        _separate_roles,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_249",),
    ),
    Rule(
        "aws-ecs-no-public-ip",
        "ECS services do not assign public IPs to tasks.",
        Severity.HIGH,
        Controls(nist=("SC-7",), soc2=("CC6.6",), pci=("1.4.4",)),
        "Set network_configuration.assign_public_ip=False and use private subnets with NAT egress.",
        SERVICE,
        _public_ip,
        checkov=("CKV_AWS_333",),
    ),
    Rule(
        "aws-ecs-container-insights",
        "ECS clusters have Container Insights enabled.",
        Severity.LOW,
        Controls(nist=("SI-4", "AU-12"), soc2=("CC7.2",)),
        "Set settings=[{name: 'containerInsights', value: 'enabled'}] on the cluster.",
        CLUSTER,
        _insights,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_65",),
    ),
]
