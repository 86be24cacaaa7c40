"""The drill's load: open-loop, fixed-rate, realistic traffic against a front door.

Requests are scheduled by the wall clock (request i leaves at ``start + i / rate``) whatever
happened to the earlier ones, so a stalled site shows up as failures and latency instead of as
silence (no coordinated omission). The mix is what users do: create sessions, hold multi-turn
conversations, start async tasks and poll them. Every request is recorded with its scheduled
time, status, latency and the site that served it (``contract.SITE_HEADER``); every acknowledged
turn and accepted task is kept so the drill can check afterwards that nothing was lost.

Load only ever goes to a loopback address: the lab's front door, or a tunnel to a real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from agent_app.contract import INSTANCE_HEADER, LIVENESS_PATH, SITE_HEADER
from skyfleet.drills.experiment import LoadSpec

# Task statuses after which the app will not touch the task again.
FINAL_TASK_STATUSES = frozenset({"succeeded", "failed"})


class LoadTargetError(ValueError):
    """The load was pointed somewhere it must not go."""


def ensure_loopback(url: str) -> None:
    """Refuse any front door that is not on 127.0.0.0/8 or ::1: drills never load the internet."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise LoadTargetError(f"load URL {url!r}: only loopback front doors may be loaded (got host {host!r})")


@dataclass
class RequestRecord:
    """One request as the client saw it. Times are epoch seconds (comparable with fault times)."""

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
    # Set when a task seen final is later seen non-final or with another final record: the
    # app completed it twice (e.g. a lost final write made the queue run it again).
    completed_twice: bool = False
    attempts: int = 0

    def observe(self, payload: Any) -> None:
        """Fold one read of the task record (GET /v1/tasks/{id}) into what we know."""
        if not isinstance(payload, dict):
            return
        status = payload.get("status")
        self.last_status = status if isinstance(status, str) else None
        attempts = payload.get("attempts")
        if isinstance(attempts, int):
            self.attempts = max(self.attempts, attempts)
        if self.final is not None:
            keys = ("status", "result", "updated_at")
            if any(payload.get(k) != self.final.get(k) for k in keys):
                self.completed_twice = True
        elif self.last_status in FINAL_TASK_STATUSES:
            self.final = payload


@dataclass
class LoadRecording:
    """Everything the load saw; shared between the load thread and the drill (append-only)."""

    started_at: float = 0.0
    stopped_at: float = 0.0
    records: list[RequestRecord] = field(default_factory=list)
    sessions: list[str] = field(default_factory=list)
    turns: list[AckedTurn] = field(default_factory=list)
    tasks: dict[str, AcceptedTask] = field(default_factory=dict)

    def window(self, seconds: float, now: float | None = None) -> list[RequestRecord]:
        """Requests whose answer (or failure) arrived in the last ``seconds``."""
        now = time.time() if now is None else now
        return [r for r in list(self.records) if now - seconds <= r.completed <= now]


def _ids(body: Any, *names: str) -> str | None:
    if isinstance(body, dict):
        for name in names:
            value = body.get(name)
            if isinstance(value, str) and value:
                return value
    return None


class LoadGenerator:
    """Runs the open-loop load on its own thread and event loop until stopped or bounded out."""

    def __init__(self, base_url: str, api_key: str, spec: LoadSpec, *, seed: int = 7) -> None:
        ensure_loopback(base_url)
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.spec = spec
        self.recording = LoadRecording()
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._turn_counter = 0
        self._busy: set[str] = set()
        self._kinds = ["session", "message", "task", "poll"]
        mix = spec.mix
        self._weights = [mix.sessions, mix.messages, mix.tasks, mix.polls]

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="skyfleet-load", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> LoadRecording:
        """Stop scheduling, wait for in-flight requests (bounded by their timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout or self.spec.request_timeout_seconds + 5)
        return self.recording

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _main(self) -> None:
        asyncio.run(self._run())

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=self.spec.request_timeout_seconds,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    async def _run(self) -> None:
        rec = self.recording
        interval = 1.0 / self.spec.rate
        in_flight: set[asyncio.Task[None]] = set()
        async with self._client() as client:
            # One untimed request first: it loads the HTTP stack's lazy imports and opens a
            # connection, so the first scheduled requests measure the system, not the client.
            with contextlib.suppress(httpx.HTTPError):
                await client.get(LIVENESS_PATH)
            mono0, wall0 = time.monotonic(), time.time()
            rec.started_at = wall0
            for i in range(self.spec.max_requests):
                due = mono0 + i * interval
                if due - mono0 > self.spec.max_seconds or self._stop.is_set():
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._stop.is_set():
                    break
                task = asyncio.create_task(self._one(client, wall0 + (due - mono0)))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.wait(set(in_flight))
        rec.stopped_at = time.time()

    # --- one request -----------------------------------------------------------------------
    def _pick(self) -> tuple[str, str | None]:
        """The next request kind and, for turns and tasks, an idle session to send it to.

        A session is one user's conversation: its next turn waits for the previous answer, so
        a session with a request in flight is not picked; with none idle, a user arrives (a new
        session). This is how people use the app, and it keeps session writes uncontended.
        """
        kind = self._random.choices(self._kinds, weights=self._weights)[0]
        rec = self.recording
        if kind == "poll" and not any(t.final is None for t in rec.tasks.values()):
            kind = "message"
        if kind in ("message", "task"):
            idle = [s for s in rec.sessions if s not in self._busy]
            if not idle:
                return "session", None
            session_id = self._random.choice(idle)
            self._busy.add(session_id)
            return kind, session_id
        return kind, None

    async def _one(self, client: httpx.AsyncClient, scheduled: float) -> None:
        kind, session_id = self._pick()
        try:
            await self._send(client, scheduled, kind, session_id)
        finally:
            self._busy.discard(session_id or "")

    async def _send(
        self, client: httpx.AsyncClient, scheduled: float, kind: str, session_id: str | None
    ) -> None:
        rec = self.recording
        task_id = marker = None
        if kind == "session":
            method, path, body = "POST", "/v1/sessions", {}
        elif kind == "message":
            self._turn_counter += 1
            marker = f"sf-turn-{self._turn_counter}"
            method, path = "POST", f"/v1/sessions/{session_id}/messages"
            body = {"content": f"drill {marker}: what is {self._turn_counter} + 2?"}
        elif kind == "task":
            method, path, body = "POST", f"/v1/sessions/{session_id}/tasks", {"input": "summarise"}
        else:
            pending = [t for t in rec.tasks.values() if t.final is None]
            task_id = self._random.choice(pending).task_id
            method, path, body = "GET", f"/v1/tasks/{task_id}", None
        sent = time.time()
        started = time.perf_counter()
        status: int | None = None
        site = instance = error = None
        payload: Any = None
        try:
            # One deadline for the whole exchange (httpx's timeout applies per operation).
            async with asyncio.timeout(self.spec.request_timeout_seconds):
                response = await client.request(method, path, json=body)
            status = response.status_code
            site = response.headers.get(SITE_HEADER)
            instance = response.headers.get(INSTANCE_HEADER)
            try:
                payload = response.json()
            except ValueError:
                payload = None
            if status >= 400:
                error = _error_text(payload, response.text)
        except (httpx.HTTPError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__
        latency_ms = (time.perf_counter() - started) * 1000.0
        ok = status is not None and 200 <= status < 300
        if ok and kind == "session":
            session_id = _ids(payload, "id", "session_id")
            if session_id:
                rec.sessions.append(session_id)
        elif ok and kind == "message" and session_id and marker:
            rec.turns.append(AckedTurn(session_id, marker, sent + latency_ms / 1000.0))
        elif ok and kind == "task" and session_id:
            task_id = _ids(payload, "task_id", "id")
            if task_id:
                rec.tasks[task_id] = AcceptedTask(task_id, session_id, sent + latency_ms / 1000.0)
        elif ok and kind == "poll" and task_id:
            rec.tasks[task_id].observe(payload)
        rec.records.append(
            RequestRecord(
                kind=kind,
                scheduled=scheduled,
                sent=sent,
                latency_ms=latency_ms,
                status=status,
                site=site,
                instance=instance,
                error=error,
                session_id=session_id,
                task_id=task_id,
            )
        )


def _error_text(payload: Any, text: str) -> str:
    if isinstance(payload, dict):
        err = payload.get("error", payload)
        if isinstance(err, dict):
            code, message = err.get("code"), err.get("message")
            if code or message:
                return f"{code}: {message}"[:200]
    return text[:200]
