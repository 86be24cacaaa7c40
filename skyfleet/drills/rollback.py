"""The ledger of applied faults: what must be undone, so that rollbacks always happen.

Chaos Toolkit plays a drill's ``rollbacks`` section, but by default not after a failed or
interrupted run, and a signal can cut the section short. Every Skyfleet fault therefore writes
its undo here the moment it is applied; the declared rollback crosses it off, and whatever is
still open when the drill ends (abort, exception, Ctrl-C, SIGTERM) is undone by the safety net,
newest first. A site left down by a drill is the worst outcome a drill can have.

A drill's ledger is also a file (``faults.jsonl`` in its report folder), written and synced
before each fault starts and once it is applied (with what its undo needs), and at each undo: a
drill process killed outright (SIGKILL, a machine that crashed) leaves its open faults on record, and
``skyfleet drill rollback REPORT_DIR`` undoes them (``skyfleet.drills.recovery``). While the
drill runs it holds a lock on the file, so nothing undoes its faults behind its back.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

logger = logging.getLogger("skyfleet.drills")

LEDGER_FILE = "faults.jsonl"


class LedgerFileError(RuntimeError):
    """A ledger file that cannot be read, or is held by the drill that writes it."""


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
    entry: int = 0  # its number in the ledger file


class Ledger:
    """The faults of one drill (or of actions run on their own: ``path`` None, memory only).
    ``target``: the chaoslib configuration that names the drill's target, kept in the file so
    its faults can be undone without the drill."""

    def __init__(self, path: Path | None = None, *, target: dict[str, Any] | None = None) -> None:
        self._lock = threading.Lock()
        self.faults: list[AppliedFault] = []
        self.path = path
        self.target = dict(target or {})
        self._entries = 0
        # Faults started and not yet on record as applied or not (entry: action).
        self._applying: dict[int, str] = {}
        self._held: IO[str] | None = None

    # --- the file ------------------------------------------------------------------------

    def hold(self, *, new_drill: bool = True) -> list[RecordedFault]:
        """Take the file's lock (released by :meth:`release`, or by the process ending, however
        it ends) and return what the file holds. For a new drill, a file with open faults (an
        earlier drill's, killed) is refused."""
        if self.path is None or self._held is not None:
            return []
        if not new_drill and not self.path.is_file():
            raise LedgerFileError(
                f"{self.path}: no such ledger (a drill's report folder holds {LEDGER_FILE}; "
                "drills from before ledgers were kept have none)"
            )
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._held = _locked(self.path)
        if created:
            _sync_folder(self.path.parent)  # the new file's name survives a crash too
        _drop_unfinished_line(self.path)
        try:
            earlier = read_ledger(self.path)
        except LedgerFileError:
            self.release()
            raise
        left = [f for f in earlier if f.open]
        if new_drill and left:
            # A report folder used again: its earlier drill was killed with faults applied.
            self.release()
            raise LedgerFileError(
                f"{self.path}: an earlier drill left {len(left)} fault(s) open here "
                f"({', '.join(f.action for f in left)}): run `skyfleet drill rollback "
                f"{self.path.parent}` first, or give this drill another report folder"
            )
        # Entries are numbered after the file's earlier ones (a report folder used again).
        self._entries = max((f.entry for f in earlier), default=0)
        return earlier

    def release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    def record(self, event: dict[str, Any]) -> None:
        """One event, on disk (synced) before this returns. Made into JSON even without a file:
        a fault whose ``saved`` is not plain JSON fails wherever it runs, not only in a drill."""
        line = json.dumps(event, separators=(",", ":"), allow_nan=False) + "\n"
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())

    def applying(self, key: str, action: str, arguments: dict[str, Any]) -> int:
        """On record before a fault starts: a drill killed while it runs leaves it open."""
        with self._lock:
            self._entries += 1
            entry = self._entries
            self._applying[entry] = action
        self.record(
            {
                "event": "applying",
                "entry": entry,
                "key": key,
                "action": action,
                "arguments": arguments,
                "target": self.target,
                "at": time.time(),
            }
        )
        return entry

    def not_applied(self, entry: int, error: BaseException) -> None:
        """The fault failed, and left nothing applied (each fault undoes its own partial work)."""
        self._applying.pop(entry, None)
        self.record({"event": "not applied", "entry": entry, "error": f"{type(error).__name__}: {error}"})

    # --- faults --------------------------------------------------------------------------

    def applied(
        self,
        key: str,
        action: str,
        description: str,
        undo: Callable[[], Any],
        at: float | None = None,
        *,
        entry: int = 0,
        saved: dict[str, Any] | None = None,
    ) -> AppliedFault:
        """A fault is applied; ``saved``: what its undo needs, kept in the file (None: the undo
        is this process's only: a rollback without the drill runs the action's own restore)."""
        fault = AppliedFault(
            key, action, description, undo, at if at is not None else time.time(), entry=entry
        )
        with self._lock:
            self.faults.append(fault)
            self._applying.pop(entry, None)
        if entry:
            self.record(
                {
                    "event": "applied",
                    "entry": entry,
                    "description": description,
                    "saved": saved,
                    "at": fault.applied_at,
                }
            )
        return fault

    def restored(self, key: str, by: str, at: float | None = None) -> list[AppliedFault]:
        """Cross off every open fault under ``key``."""
        with self._lock:
            hits = [f for f in self.faults if f.key == key and f.restored_at is None]
        for f in hits:
            self.crossed_off(f, by, at)
        return hits

    def crossed_off(self, fault: AppliedFault, by: str, at: float | None = None) -> None:
        """One fault undone (in memory, and in the file)."""
        fault.restored_at, fault.restored_by = at if at is not None else time.time(), by
        if fault.entry:
            self.record({"event": "restored", "entry": fault.entry, "by": by, "at": fault.restored_at})

    def cut_short(self) -> list[str]:
        """Faults started here and never on record as applied or not (their apply was
        interrupted): open in the file, unknown to the safety net."""
        with self._lock:
            return list(self._applying.values())

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
                self.crossed_off(fault, f"safety net ({reason})")
                done.append({"name": f"undo {fault.action}", "key": fault.key, "status": "succeeded"})
            except Exception as exc:  # keep undoing the rest; report this one
                fault.error = f"{type(exc).__name__}: {exc}"
                self.record({"event": "undo failed", "entry": fault.entry, "error": fault.error})
                done.append({"name": f"undo {fault.action}", "key": fault.key, "status": f"failed: {exc}"})
        return done


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_unfinished_line(path: Path) -> None:
    """Cut a last line whose write never completed (no newline): what is appended next must
    start a line of its own. Only the lock's holder does this."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as out:
            out.truncate(data.rfind(b"\n") + 1)


def _locked(path: Path) -> IO[str]:
    """The file, open and locked by this process; refused while another holds it."""
    handle = path.open("a", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise LedgerFileError(
            f"{path}: the drill that keeps this ledger is still running; stop it (Ctrl-C or SIGTERM "
            "undo its faults) or wait for it to end"
        ) from None
    return handle


# --- reading a ledger file ---------------------------------------------------------------------


@dataclass
class RecordedFault:
    """A fault as its ledger file has it."""

    entry: int
    key: str
    action: str
    arguments: dict[str, Any]
    target: dict[str, Any]
    started_at: float
    description: str | None = None  # None: the drill ended before the fault was applied
    saved: dict[str, Any] | None = None
    state: str = "applying"  # applying, applied, restored, not applied, forgotten
    errors: list[str] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.state in ("applying", "applied")


_EVENTS = {"applying", "applied", "restored", "not applied", "undo failed", "forgotten"}


def read_ledger(path: Path) -> list[RecordedFault]:
    """Every fault the file records, in the order they were started. A last line cut short (the
    process killed while writing it) is left out: its write had not completed."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise LedgerFileError(f"{path}: cannot read: {exc.strerror}") from None
    faults: dict[int, RecordedFault] = {}
    last = len(lines) - 1  # the text after the last newline: empty unless a write was cut short
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if number - 1 == last:
            logger.warning("%s:%d: an unfinished last line (a write cut short) is left out", path, number)
            continue
        try:
            event = json.loads(line)
            kind, entry = event["event"], int(event["entry"])
            if kind not in _EVENTS:
                raise ValueError(f"unknown event {kind!r}")
            if kind == "applying":
                faults[entry] = RecordedFault(
                    entry=entry,
                    key=str(event["key"]),
                    action=str(event["action"]),
                    arguments=dict(event["arguments"]),
                    target=dict(event["target"]),
                    started_at=float(event["at"]),
                )
                continue
            fault = faults[entry]
        except (ValueError, KeyError, TypeError) as exc:
            what = f"no fault {exc} was started before" if isinstance(exc, KeyError) else str(exc)
            raise LedgerFileError(f"{path}:{number}: not a ledger event: {what}") from None
        if kind == "applied":
            fault.state, fault.description, fault.saved = (
                "applied",
                str(event["description"]),
                event.get("saved"),
            )
        elif kind in ("restored", "not applied", "forgotten"):
            fault.state = kind
        else:
            fault.errors.append(str(event.get("error", "")))
    return list(faults.values())
