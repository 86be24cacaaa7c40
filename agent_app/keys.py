"""Redis keys of the records the fleet replicates (``contract.REPLICATED_KEY_PREFIX``)."""

from __future__ import annotations

from agent_app.contract import REPLICATED_KEY_PREFIX


def session_key(session_id: str) -> str:
    # The hash tag keeps every key of one session in one cluster slot.
    return f"{REPLICATED_KEY_PREFIX}session:{{{session_id}}}"


def task_key(task_id: str) -> str:
    return f"{REPLICATED_KEY_PREFIX}task:{{{task_id}}}"


def tasks_from_key(home: str) -> str:
    """The ids of unfinished tasks ``home`` runs that this site holds a copy of: what it adopts
    when it is ``home``'s successor and ``home`` is lost (``agent_app.fleet.adoption``)."""
    return f"{REPLICATED_KEY_PREFIX}fleet:tasks-from:{home}"
