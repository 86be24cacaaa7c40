"""The run context: what actions and probes may know of the drill that calls them.

The orchestrator (``skyfleet.drills.run``) makes one ``RunContext`` per drill and activates it
for the run; actions (``skyfleet.drills.actions``) and probes (``skyfleet.drills.hypothesis``)
read it through ``current()``. It holds the target, the fault ledger, the fault times, the
load's live recording and the drill's voice (``say``, ``notes``), and nothing that runs the
drill, so imports flow one way: the orchestrator and the actions both import this module, and
neither imports the other.

Outside a drill (an action called on its own, a test), there is no current context: the
target comes from the chaoslib configuration and faults go to a standalone ledger, so they
can still be rolled back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from skyfleet.drills.records import LoadRecording, RequestRecord
from skyfleet.drills.rollback import Ledger
from skyfleet.drills.target import Target, target_from_configuration

logger = logging.getLogger("skyfleet.drills")


class NoLoadError(RuntimeError):
    """A load-based probe ran without a drill's load (e.g. a stack with no loopback tunnel)."""


class FaultInfo(BaseModel):
    """The drill's fault: the first one applied, and when the last open fault was rolled back."""

    name: str | None = None
    site: str | None = None
    at: float | None = None
    restored_at: float | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class RunContext:
    def __init__(
        self,
        target: Target,
        *,
        fault_site: str | None = None,
        say: Callable[[str], None] = logger.info,
        ledger: Ledger | None = None,
    ) -> None:
        self.target = target
        self.default_fault_site = fault_site  # the drill's ``fault_site``, when the fault names none
        self.say = say
        self.ledger = ledger or Ledger()
        self.fault = FaultInfo()
        self.notes: list[str] = []
        # The load's live recording, filled by the load process's stream; None without load.
        self.load: LoadRecording | None = None

    def fault_applied(self, name: str, site: str | None, at: float, detail: dict[str, Any]) -> None:
        if self.fault.at is None:
            self.fault = FaultInfo(name=name, site=site or self.default_fault_site, at=at, detail=detail)
            self.say(f"fault applied: {name} ({site or '-'})")

    def fault_restored(self, at: float) -> None:
        if self.fault.at is not None and not self.ledger.pending():
            self.fault.restored_at = at
            self.say("fault rolled back")

    def load_window(self, seconds: float) -> list[RequestRecord]:
        """The load's requests answered in the last ``seconds``."""
        if self.load is None:
            raise NoLoadError(
                "no drill load is running: this probe needs `skyfleet drill run` or its control"
            )
        return self.load.window(seconds)


_current: RunContext | None = None
_lock = threading.Lock()
# Faults applied outside a drill run still get recorded, so their rollback can undo them.
_STANDALONE_LEDGER = Ledger()


def current() -> RunContext | None:
    return _current


def activate(context: RunContext | None) -> None:
    """Make ``context`` the running drill's (None: no drill is running)."""
    global _current
    with _lock:
        _current = context


def target(configuration: dict[str, Any] | None) -> Target:
    """The running drill's target, or the one the chaoslib configuration names."""
    context = _current
    return context.target if context is not None else target_from_configuration(configuration)


def ledger() -> Ledger:
    context = _current
    return context.ledger if context is not None else _STANDALONE_LEDGER
