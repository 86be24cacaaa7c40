"""The ledger of applied faults: what must be undone, so that rollbacks always happen.

Chaos Toolkit plays a drill's ``rollbacks`` section, but by default not after a failed or
interrupted run, and a signal can cut the section short. Every Skyfleet fault therefore writes
its undo here the moment it is applied; the declared rollback crosses it off, and whatever is
still open when the drill ends (abort, exception, Ctrl-C, SIGTERM) is undone by the safety net,
newest first. A site left down by a drill is the worst outcome a drill can have.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("skyfleet.drills")


@dataclass
class AppliedFault:
    key: str
    action: str
    description: str
    undo: Callable[[], Any]
    applied_at: float
    restored_at: float | None = None
    restored_by: str | None = None
    error: str | None = None


class Ledger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.faults: list[AppliedFault] = []

    def applied(
        self, key: str, action: str, description: str, undo: Callable[[], Any], at: float | None = None
    ) -> AppliedFault:
        fault = AppliedFault(key, action, description, undo, at if at is not None else time.time())
        with self._lock:
            self.faults.append(fault)
        return fault

    def restored(self, key: str, by: str, at: float | None = None) -> list[AppliedFault]:
        """Cross off every open fault under ``key``."""
        now = at if at is not None else time.time()
        with self._lock:
            hits = [f for f in self.faults if f.key == key and f.restored_at is None]
            for f in hits:
                f.restored_at, f.restored_by = now, by
        return hits

    def pending(self) -> list[AppliedFault]:
        with self._lock:
            return [f for f in self.faults if f.restored_at is None]

    def restore_all(self, reason: str) -> list[dict[str, Any]]:
        """Undo every open fault, newest first; one failure does not stop the others."""
        done = []
        for fault in reversed(self.pending()):
            logger.warning("safety-net rollback (%s): %s", reason, fault.description)
            try:
                fault.undo()
                fault.restored_at, fault.restored_by = time.time(), f"safety net ({reason})"
                done.append({"name": f"undo {fault.action}", "key": fault.key, "status": "succeeded"})
            except Exception as exc:  # keep undoing the rest; report this one
                fault.error = f"{type(exc).__name__}: {exc}"
                done.append({"name": f"undo {fault.action}", "key": fault.key, "status": f"failed: {exc}"})
        return done
