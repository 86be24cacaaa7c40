"""Redis keys of the records the fleet replicates (``contract.REPLICATED_KEY_PREFIX``)."""

from __future__ import annotations

from collections.abc import Mapping

from agent_app.contract import REPLICATED_KEY_PREFIX

# The field of a session's or task's hash naming the API key (its id) the record belongs to.
CLIENT_FIELD = "client"


def owned_by(record: Mapping[str, str], client: str) -> bool:
    """Whether the key ``client`` may see this session or task. A record without an owner was
    written before records had one (an earlier version): any key's, as it was then, until it
    expires. The sessions' turn script (``sessions._LOCK_AND_LOAD``) applies the same rule."""
    return record.get(CLIENT_FIELD, client) == client


def session_key(session_id: str) -> str:
    # The hash tag keeps every key of one session in one cluster slot.
    return f"{REPLICATED_KEY_PREFIX}session:{{{session_id}}}"


def task_key(task_id: str) -> str:
    return f"{REPLICATED_KEY_PREFIX}task:{{{task_id}}}"


def tasks_from_key(home: str) -> str:
    """The ids of unfinished tasks ``home`` runs that this site holds a copy of: what it adopts
    when it is ``home``'s successor and ``home`` is lost (``agent_app.fleet.adoption``)."""
    return f"{REPLICATED_KEY_PREFIX}fleet:tasks-from:{home}"
