"""Undo the faults a drill left applied when it was killed outright: ``skyfleet drill rollback``.

A drill's ledger file (``skyfleet.drills.rollback``) records each fault before it starts and
once it is applied, with what its undo needs. Run on its own, this takes the file's lock (so
never while its drill still runs), then undoes every fault still open, newest first, as the
drill's safety net would have: exactly what the fault changed when the file has it (a deployed
stack's saved count, rules, setting), else the rollback's own restore (what the stack declares,
where it can tell: a fault killed before it was on record as applied). Each undo is crossed off
in the file as it lands, so a second run does only what is left.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from skyfleet.drills.rollback import LEDGER_FILE, Ledger, LedgerFileError, RecordedFault
from skyfleet.drills.target import target_from_configuration

BY = "skyfleet drill rollback"


@dataclass
class Undone:
    """What became of one open fault."""

    fault: RecordedFault
    status: str  # "undone", "would undo", "failed", "cannot"
    detail: str


def ledger_path(where: Path) -> Path:
    """The ledger file of a report folder (or the file itself)."""
    return where / LEDGER_FILE if where.is_dir() else where


@contextlib.contextmanager
def _held(where: Path) -> Iterator[tuple[Ledger, list[RecordedFault]]]:
    """The ledger at ``where``, locked (refused while its drill runs), and what it records."""
    ledger = Ledger(ledger_path(where))
    recorded = ledger.hold(new_drill=False)
    try:
        yield ledger, recorded
    finally:
        ledger.release()


def forget(where: Path, entry: int) -> RecordedFault:
    """Close an open fault without undoing it: one its operator put right by hand (a ``pulumi
    refresh`` and ``pulumi up``), which ``skyfleet drill rollback`` could not undo."""
    with _held(where) as (ledger, recorded):
        fault = next((f for f in recorded if f.entry == entry and f.open), None)
        if fault is None:
            open_ones = sorted(f.entry for f in recorded if f.open)
            raise LedgerFileError(f"{ledger.path}: no open fault {entry} (open: {open_ones or 'none'})")
        ledger.record({"event": "forgotten", "entry": entry, "at": time.time()})
        return fault


def undo_open_faults(
    where: Path, *, dry_run: bool = False, say: Callable[[str], None] = lambda _: None
) -> list[Undone]:
    """Undo the open faults of the ledger at ``where``, newest first; one failure does not
    stop the others. Raises ``LedgerFileError`` when the file cannot be read or its drill runs."""
    from skyfleet.drills import activity  # noqa: F401 (declares every fault pair)
    from skyfleet.drills.actions.registry import ACTIONS, PAIRS

    out: list[Undone] = []
    with _held(where) as (ledger, recorded):
        for fault in reversed([f for f in recorded if f.open]):
            pair = PAIRS.get(fault.action)
            if pair is None:
                out.append(Undone(fault, "cannot", f"no fault is called {fault.action!r} in this version"))
                continue
            saved = fault.saved if fault.state == "applied" else None
            try:
                target = target_from_configuration(fault.target)
                undo = pair.undo_recorded(target, saved, fault.arguments)
                how = ACTIONS[pair.rollback].describe(target, fault.arguments)
            except Exception as exc:
                out.append(Undone(fault, "failed", f"{type(exc).__name__}: {exc}"))
                continue
            if saved is None:
                how += " (the drill was killed before the fault was on record as applied)"
            if undo is None:
                out.append(Undone(fault, "cannot", f"nothing on record to undo it with; {how}"))
                continue
            if dry_run:
                out.append(Undone(fault, "would undo", how))
                continue
            say(f"undoing {fault.action} ({fault.key})")
            try:
                undo()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                ledger.record({"event": "undo failed", "entry": fault.entry, "error": error})
                out.append(Undone(fault, "failed", error))
                continue
            ledger.record({"event": "restored", "entry": fault.entry, "by": BY, "at": time.time()})
            out.append(Undone(fault, "undone", how))
    return out
