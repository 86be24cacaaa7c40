"""Redis keys of the records the fleet replicates (``contract.REPLICATED_KEY_PREFIX``)."""

from __future__ import annotations

from agent_app.contract import REPLICATED_KEY_PREFIX


def session_key(session_id: str) -> str:
    # The hash tag keeps every key of one session in one cluster slot.
    return f"{REPLICATED_KEY_PREFIX}session:{{{session_id}}}"


def task_key(task_id: str) -> str:
    return f"{REPLICATED_KEY_PREFIX}task:{{{task_id}}}"
