"""A non-root container on a read-only root filesystem can write the volumes it mounts writable.

An ECS task volume with no host path, EFS or Docker volume configuration is task storage bind
mounted into the containers; on Fargate it starts empty and owned by root ("Bind mounts",
https://docs.aws.amazon.com/AmazonECS/latest/developerguide/bind-mounts.html), so a container
running as another user cannot write it, and with a read-only root it has nowhere else to write.
Something must prepare it first: a non-essential container of the same task, running as root,
mounting the volume, that the app container waits for (``dependsOn`` SUCCESS or COMPLETE).
"""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._plan import Container, plan_containers, text
from ._rule import Controls, Rule, StackView, as_list, truthy

ROOT_USERS = ("", "0", "root", "0:0", "root:root")


def _user(c: Container) -> str:
    return text(c.raw.get("user"))


def _prepared_by(app: Container, others: list[Container], volume: str) -> bool:
    waits = {
        text(d.get("containerName"))
        for d in as_list(app.raw.get("dependsOn"))
        if text(d.get("condition")).upper() in ("SUCCESS", "COMPLETE")
    }
    for init in others:
        if init.name not in waits or init.raw.get("essential") is not False:
            continue
        if _user(init) in ROOT_USERS and any(m.volume == volume and not m.read_only for m in init.mounts):
            return True
    return False


def _scratch(view: StackView) -> Iterator[tuple[str, str | None]]:
    by_task: dict[str, list[Container]] = {}
    for c in plan_containers(view, ("ecs",)):
        by_task.setdefault(c.resource.urn, []).append(c)
    for urn, group in by_task.items():
        for c in group:
            if _user(c) in ROOT_USERS or not truthy(c.raw.get("readonlyRootFilesystem")):
                continue
            for m in c.mounts:
                if m.read_only or not m.sources or m.sources[0].kind != "bind":
                    continue
                if not _prepared_by(c, [o for o in group if o is not c], m.volume):
                    yield (
                        f"{c.label} runs as {_user(c)} on a read-only root and mounts task volume "
                        f"{m.volume!r} at {m.path} writable, but that volume starts empty and owned by root "
                        "and nothing makes it writable first",
                        urn,
                    )


RULES = [
    Rule(
        "aws-ecs-writable-volume-prepared",
        "Non-root ECS containers with a read-only root can write the task volumes they mount writable.",
        Severity.HIGH,
        Controls(nist=("CM-6", "SI-7"), soc2=("CC8.1",)),
        "Add a non-essential init container running as root that mounts the volume and hands it to the app "
        "user (chown/chmod), and make the app container dependsOn it with condition SUCCESS.",
        stack_check=_scratch,
    ),
]
