"""What the drill's load saw: one record per request, and the turns and tasks it must find again.

The load process builds these as its requests complete and streams them to the drill process,
which folds each one into its own ``LoadRecording`` with the same ``LoadRecording.add`` (so both
sides agree on which sessions exist, which turns were acknowledged and which tasks accepted).
Times are epoch seconds, comparable with the fault times the drill records.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Task statuses after which the app will not touch the task again.
FINAL_TASK_STATUSES = frozenset({"succeeded", "failed"})
# A final status that is not a delivery: the app gave the task up (counted as tasks_failed).
FAILED_TASK_STATUS = "failed"
# Each acknowledged turn's message carries a marker unique to the run: ``sf-turn-<n>``.
_TURN_MARKER = re.compile(r"sf-turn-[0-9]+")


def turn_marker(number: int) -> str:
    """The marker of the load's ``number``-th turn."""
    return f"sf-turn-{number}"


def turn_markers(text: str) -> set[str]:
    """The whole markers in a message's text: ``sf-turn-12`` is one, and does not contain
    ``sf-turn-1`` (a marker is never looked up as a substring)."""
    return set(_TURN_MARKER.findall(text))


# The fields of a task record that tell whether it changed after it was final.
TASK_FIELDS = ("status", "result", "updated_at", "attempts")


@dataclass
class RequestRecord:
    """One request as the client saw it."""

    kind: str  # session | message | task | poll
    scheduled: float
    sent: float
    latency_ms: float
    status: int | None
    site: str | None
    instance: str | None = None
    error: str | None = None
    session_id: str | None = None
    task_id: str | None = None
    marker: str | None = None  # a turn's unique marker, looked up again on read-back
    via: str | None = None  # the site the request reached, when another (the record's home) served it
    # The fleet client's regional host it was answered at, when not the global name.
    endpoint: str | None = None
    # Which client (API key) sent it: a session and its tasks are that key's alone.
    client: int = 0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def completed(self) -> float:
        return self.sent + self.latency_ms / 1000.0


@dataclass
class AckedTurn:
    session_id: str
    marker: str
    acked_at: float


@dataclass
class AcceptedTask:
    task_id: str
    session_id: str
    accepted_at: float
    last_status: str | None = None
    final: dict[str, Any] | None = None
    # When the read that first saw the record final was answered.
    final_seen_at: float = 0.0
    # Set when a task seen final is later seen non-final or with another final record: the
    # app completed it twice (e.g. a lost final write made the queue run it again).
    completed_twice: bool = False
    # What changed, for the report: "field: first final value -> later value".
    changes: list[str] = field(default_factory=list)
    attempts: int = 0
    last_sent: float = 0.0

    def observe(self, payload: Any, *, sent: float, completed: float) -> None:
        """Fold one read of the task record (GET /v1/tasks/{id}), sent and answered at these
        epoch times, into what we know."""
        if not isinstance(payload, dict):
            return
        status = payload.get("status")
        if sent >= self.last_sent:
            self.last_status = status if isinstance(status, str) else None
            self.last_sent = sent
        attempts = payload.get("attempts")
        if isinstance(attempts, int):
            self.attempts = max(self.attempts, attempts)
        if self.final is not None:
            # A read sent before the final one was answered overlapped it and may have read the
            # record before its last write: only a read sent after that is evidence of a change.
            if sent < self.final_seen_at:
                return
            keys = ("status", "result", "updated_at")
            changed = [k for k in keys if payload.get(k) != self.final.get(k)]
            if changed:
                self.completed_twice = True
                self.changes = [f"{k}: {self.final.get(k)!r} -> {payload.get(k)!r}" for k in changed]
        elif status in FINAL_TASK_STATUSES:
            self.final = payload
            self.final_seen_at = completed


@dataclass
class LoadRecording:
    """Everything the load saw. Appended to by one thread, read by others (list copies)."""

    started_at: float = 0.0
    stopped_at: float = 0.0
    records: list[RequestRecord] = field(default_factory=list)
    # Requests sent and not answered yet, by their send time (the load streams each send), and
    # the newest send time read: the stream's own clock, which lags with its reader.
    in_flight: Counter[float] = field(default_factory=Counter)
    latest_sent: float = 0.0
    sessions: list[str] = field(default_factory=list)
    # The client (API key) that created each session: only its key reads it, and its tasks.
    session_clients: dict[str, int] = field(default_factory=dict)
    turns: list[AckedTurn] = field(default_factory=list)
    tasks: dict[str, AcceptedTask] = field(default_factory=dict)

    def add(self, r: RequestRecord, task: dict[str, Any] | None = None, *, keep: bool = True) -> None:
        """Fold one completed request in: a new session, an acknowledged turn, an accepted task,
        or (a poll) the task record it read, ``task``. ``keep=False`` folds without keeping the
        record itself (the load process needs the sessions and tasks, not the history)."""
        if r.ok:
            if r.kind == "session" and r.session_id:
                self.sessions.append(r.session_id)
                self.session_clients[r.session_id] = r.client
            elif r.kind == "message" and r.session_id and r.marker:
                self.turns.append(AckedTurn(r.session_id, r.marker, r.completed))
            elif r.kind == "task" and r.session_id and r.task_id:
                self.tasks[r.task_id] = AcceptedTask(r.task_id, r.session_id, r.completed)
            elif r.kind == "poll" and r.task_id in self.tasks:
                self.tasks[r.task_id].observe(task, sent=r.sent, completed=r.completed)
        if keep:
            self.records.append(r)
        if self.in_flight.get(r.sent):
            self.in_flight[r.sent] -= 1
            if not self.in_flight[r.sent]:
                del self.in_flight[r.sent]

    def client_of(self, session_id: str | None) -> int:
        """The client that created the session (0 when the load never saw it created)."""
        return self.session_clients.get(session_id or "", 0)

    def note_sent(self, sent: float) -> None:
        """A request left at ``sent`` (its answer comes as a record with the same ``sent``)."""
        self.in_flight[sent] += 1
        self.latest_sent = max(self.latest_sent, sent)

    def overdue(self, grace: float) -> int:
        """Requests still unanswered that were sent more than ``grace`` seconds before the
        newest send the stream has shown."""
        cutoff = self.latest_sent - grace
        return sum(n for sent, n in list(self.in_flight.items()) if sent < cutoff)

    def window(self, seconds: float, now: float | None = None) -> list[RequestRecord]:
        """Requests whose answer (or failure) arrived in the last ``seconds``."""
        now = time.time() if now is None else now
        return [r for r in list(self.records) if now - seconds <= r.completed <= now]
