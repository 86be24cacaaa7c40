"""IAM as the deployed stack grants it: who may call which RPC on which topic or subscription.

Offline, a caller cannot prove who it is (the client's credentials are not usable, and the
client library's emulator mode sends none), so the server tells callers apart by the port they
reach: the lab gives each process the port of the service account the plan runs it as, the way
Cloud Run gives it that account's token. A call on a caller's port is checked against the
grants the plan makes (``*IAMMember``, ``*IAMBinding``, ``*IAMPolicy`` on topics, subscriptions
or the project); a call the plan does not grant gets PERMISSION_DENIED, as from the real service.
The main port stands for the project owner (the lab's own tooling) and is not checked.

Permissions per RPC and per role are Pub/Sub's, from
https://cloud.google.com/pubsub/docs/access-control (the roles' permission lists, cut to the
permissions of the RPCs served here).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

_VIEW = frozenset(
    {
        "pubsub.topics.get",
        "pubsub.topics.list",
        "pubsub.subscriptions.get",
        "pubsub.subscriptions.list",
    }
)
_PUBLISH = frozenset({"pubsub.topics.publish"})
_SUBSCRIBE = frozenset({"pubsub.subscriptions.consume", "pubsub.topics.attachSubscription"})
_EDIT = frozenset({"pubsub.topics.create", "pubsub.subscriptions.create"})

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/pubsub.viewer": _VIEW,
    "roles/pubsub.publisher": _PUBLISH,
    "roles/pubsub.subscriber": _SUBSCRIBE,
    "roles/pubsub.editor": _VIEW | _PUBLISH | _SUBSCRIBE | _EDIT,
    "roles/pubsub.admin": _VIEW | _PUBLISH | _SUBSCRIBE | _EDIT,
    "roles/editor": _VIEW | _PUBLISH | _SUBSCRIBE | _EDIT,
    "roles/owner": _VIEW | _PUBLISH | _SUBSCRIBE | _EDIT,
}

DENIED = "User not authorized to perform this action."


@dataclass(frozen=True)
class Grant:
    resource: str  # projects/P, projects/P/topics/T or projects/P/subscriptions/S
    role: str
    member: str  # serviceAccount:..., user:..., group:...


class Policy:
    """The grants of one deployment, and the Pub/Sub service agent that moves dead letters."""

    def __init__(self, grants: Iterable[Grant], service_agent: str | None = None) -> None:
        self.grants = list(grants)
        self.service_agent = service_agent
        self._index: dict[tuple[str, str], set[str]] = {}
        for g in self.grants:
            if g.role not in ROLE_PERMISSIONS:
                raise ValueError(f"unknown role {g.role!r} (known: {', '.join(sorted(ROLE_PERMISSIONS))})")
            self._index.setdefault((g.member, g.resource), set()).update(ROLE_PERMISSIONS[g.role])

    def allows(self, member: str, permission: str, resource: str) -> bool:
        """A grant on the resource itself or on its project carries the permission."""
        project = "/".join(resource.split("/")[:2])
        return any(
            permission in self._index.get((who, where), ())
            for who in (member, "allUsers", "allAuthenticatedUsers")
            for where in (resource, project)
        )

    def missing(self, member: str, needs: Iterable[tuple[str, str]]) -> str | None:
        """The first (permission on resource) ``member`` lacks, as text; None if it has all."""
        for permission, resource in needs:
            if not self.allows(member, permission, resource):
                return f"{member} lacks {permission} on {resource}"
        return None
