"""The drill's load: open-loop, fixed-rate, realistic traffic against a front door, in its own process.

Requests are scheduled by the wall clock (request i leaves at ``start + i / rate``) whatever
happened to the earlier ones, so a stalled site shows up as failures and latency instead of as
silence (no coordinated omission). The mix is what users do: create sessions, hold multi-turn
conversations, start async tasks and poll them. Every request is recorded with its scheduled
time, status, latency and the site that served it (``contract.SITE_HEADER``); every acknowledged
turn and accepted task is kept so the drill can check afterwards that nothing was lost.

The generator runs in a child process (``python -m skyfleet.drills.load``), so nothing the drill
process does (probes, faults, imports, a TLS context being built) can hold it back: the drill
process's GIL is not the load's. ``LoadProcess`` is the drill's handle on it: the configuration
(API key included) goes down the child's stdin, one JSON line per completed request comes back
on its stdout and is folded into a live ``LoadRecording``. The child stops when told to, when
its stdin closes (the drill process ended, even by SIGKILL), or at its own deadline.

Load only ever goes to a loopback address: the lab's front door, or a tunnel to a real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any

import httpx

from agent_app.client import CONNECT_TIMEOUT as FLEET_CONNECT_TIMEOUT
from agent_app.client import FleetClient
from agent_app.contract import INSTANCE_HEADER, LIVENESS_PATH, SITE_HEADER, VIA_HEADER
from skyfleet.drills.experiment import LoadSpec
from skyfleet.drills.frontdoor import FrontDoor, ensure_loopback
from skyfleet.drills.records import TASK_FIELDS, LoadRecording, RequestRecord, turn_marker

# After the schedule's end, in-flight requests get their timeout and this much more; past that
# the child exits whatever it is doing.
EXIT_MARGIN_SECONDS = 10.0

# The load is the drill's clock. Where it may (root), it runs ahead of whatever shares the machine
# (the lab's servers, a CI run's other tiers at a lower priority), so a busy machine delays the
# system under test, not the schedule; the report's send lag says how well that held.
LOAD_NICENESS = -5


Client = httpx.AsyncClient | FleetClient


class LoadProcessError(RuntimeError):
    """The load process could not start or broke; the message carries its last words."""


def deadline_seconds(spec: LoadSpec) -> float:
    """The longest the load process lives after it starts sending, whatever happens."""
    return spec.max_seconds + spec.request_timeout_seconds + EXIT_MARGIN_SECONDS


# --- the drill's side ---------------------------------------------------------------------------


class LoadProcess:
    """Starts the load process, folds its stream into ``recording``, stops it (bounded)."""

    def __init__(self, door: FrontDoor, spec: LoadSpec, *, seed: int = 7) -> None:
        door.check()
        self.door = door
        self.base_url = door.url.rstrip("/")
        self.spec = spec
        self.seed = seed
        self.recording = LoadRecording()
        self.pid: int | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._reader: threading.Thread | None = None
        self._started = threading.Event()
        self._problems: list[str] = []
        self._last_words = ""

    def start(self, timeout: float = 30.0) -> None:
        """Start the child and wait (bounded) until it sends its first scheduled request."""
        # The child's stderr, kept for the whole run (closed in stop): its last words on failure.
        self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "skyfleet.drills.load"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self.pid = self._proc.pid
        assert self._proc.stdin is not None
        config = {
            "door": self.door.as_dict(),
            "spec": self.spec.model_dump(mode="json"),
            "seed": self.seed,
        }
        self._proc.stdin.write(json.dumps(config) + "\n")
        self._proc.stdin.flush()
        self._reader = threading.Thread(target=self._read, name="skyfleet-load-reader", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._started.wait(0.1):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                why = "exited" if self._proc.poll() is not None else f"did not start within {timeout:g} s"
                self.stop(1.0)
                raise LoadProcessError(f"the load process {why}: {self.problems() or 'no output'}")

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        rec = self.recording
        for line in self._proc.stdout:
            try:
                item = json.loads(line)
            except ValueError:
                self._problems.append(f"unreadable line from the load process: {line[:200]!r}")
                continue
            if "s" in item:
                rec.note_sent(float(item["s"]))
            elif "r" in item:
                rec.add(RequestRecord(**item["r"]), item.get("task"))
            elif "started" in item:
                rec.started_at = float(item["started"])
                self._started.set()
            elif "done" in item:
                rec.stopped_at = float(item["done"])
            elif "error" in item:
                self._problems.append(str(item["error"]))

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def problems(self) -> str:
        """What went wrong in the child, if anything: its errors and the tail of its stderr."""
        return "; ".join([*self._problems, *([self._stderr_tail()] if self._stderr_tail() else [])])

    def _stderr_tail(self) -> str:
        if self._stderr is None or self._stderr.closed:
            return self._last_words
        self._stderr.seek(0)
        return self._stderr.read()[-1000:].strip()

    def stop(self, timeout: float | None = None) -> LoadRecording:
        """Stop scheduling, let in-flight requests finish (bounded by their timeout), collect."""
        proc = self._proc
        if proc is None:
            return self.recording
        with contextlib.suppress(OSError, ValueError):  # already closed, or the child is gone
            assert proc.stdin is not None
            proc.stdin.write("stop\n")
            proc.stdin.close()
        wait = timeout if timeout is not None else self.spec.request_timeout_seconds + EXIT_MARGIN_SECONDS
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            self._problems.append(f"the load process did not stop within {wait:g} s and was killed")
        if self._reader is not None:
            self._reader.join(5)
        if proc.returncode not in (0, None) and not self._problems:
            self._problems.append(f"the load process exited with code {proc.returncode}")
        if not self.recording.stopped_at:
            self.recording.stopped_at = time.time()
        if self._stderr is not None and not self._stderr.closed:
            self._last_words = self._stderr_tail()
            self._stderr.close()
        return self.recording


# --- the load process ---------------------------------------------------------------------------


def _ids(body: Any, *names: str) -> str | None:
    if isinstance(body, dict):
        for name in names:
            value = body.get(name)
            if isinstance(value, str) and value:
                return value
    return None


def _error_text(payload: Any, text: str) -> str:
    if isinstance(payload, dict):
        err = payload.get("error", payload)
        if isinstance(err, dict):
            code, message = err.get("code"), err.get("message")
            if code or message:
                return f"{code}: {message}"[:200]
    return text[:200]


class _Out:
    """JSON lines to the drill process from a writer thread, so the event loop never blocks on
    a full pipe. ``broken`` is set when the pipe breaks: the drill process is gone."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.broken = threading.Event()
        self._thread = threading.Thread(target=self._write, name="load-out", daemon=True)
        self._thread.start()

    def send(self, item: dict[str, Any]) -> None:
        self._queue.put(json.dumps(item, separators=(",", ":")))

    def _write(self) -> None:
        while (line := self._queue.get()) is not None:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                self.broken.set()
                return

    def close(self, timeout: float = 5.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


class Generator:
    """The open-loop generator, run by the load process on one event loop."""

    def __init__(self, door: FrontDoor, spec: LoadSpec, out: _Out, *, seed: int = 7) -> None:
        self.door = door
        self.spec = spec
        self.out = out
        self.state = LoadRecording()  # sessions and tasks, for picking; records are streamed
        self.stop = asyncio.Event()
        self._random = random.Random(seed)
        self._turn_counter = 0
        self._busy: set[str] = set()
        self._turns: dict[str, int] = {}  # turns sent per session
        # Each session belongs to the client (API key) that created it (``state.client_of``);
        # new sessions are handed to the clients in turn.
        self._sessions_opened = 0
        self._kinds = ["session", "message", "task", "poll"]
        self._user_clients: dict[str, Client] = {}
        self._sites: tuple[str, ...] = ()
        mix = spec.mix
        self._weights = [mix.sessions, mix.messages, mix.tasks, mix.polls]

    def _http(self, base_url: str | None = None, *, keepalive: int = 64) -> httpx.AsyncClient:
        spec = self.spec
        connect = spec.connect_timeout_seconds or spec.request_timeout_seconds
        return self.door.async_client(
            base_url,
            dial=spec.dial,
            timeout=httpx.Timeout(spec.request_timeout_seconds, connect=connect),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=keepalive),
        )

    def _client(self, *, keepalive: int = 64) -> Client:
        """One client of the load: of the global name alone, or (``client: fleet``) the app's
        fleet client, with the sites found at the start and the same HTTP stack per site."""
        if self.spec.client == "edge":
            return self._http(keepalive=keepalive)
        return FleetClient(
            self.door.url,
            self.door.api_key,  # each request sends its user's own key
            sites=self._sites,
            http=lambda base: self._http(base, keepalive=keepalive),
            timeout=self.spec.attempt_timeout_seconds,
            connect_timeout=self.spec.connect_timeout_seconds or FLEET_CONNECT_TIMEOUT,
        )

    def _user_client(self, shared: Client, number: int) -> Client:
        """The HTTP client of client (API key) ``number``: the shared one, or (per-user) its own,
        made on first use: with no kept-alive connection (each request resolves and connects),
        or keeping its connections (``connections: kept-alive``)."""
        if self.spec.clients == "shared":
            return shared
        key = self.door.auth(number)["Authorization"]
        if key not in self._user_clients:
            kept = self.spec.connections == "kept-alive"
            self._user_clients[key] = self._client(keepalive=64 if kept else 0)
        return self._user_clients[key]

    async def _find_sites(self) -> None:
        """The fleet's regional names, asked once before the clock starts (as an application
        using the fleet client does at its start). Against a deployed stack each must be a
        loopback tunnel too: load goes nowhere else."""
        async with self._client() as client:
            assert isinstance(client, FleetClient)
            sites = await client.discover()
        if not sites:
            raise LoadProcessError(f"client: fleet, but {self.door.url}/v1/fleet lists no sites")
        if self.door.dns is None:
            for url in sites:
                ensure_loopback(url)
        self._sites = sites

    async def run(self) -> None:
        interval = 1.0 / self.spec.rate
        in_flight: set[asyncio.Task[None]] = set()
        if self.spec.client == "fleet":
            await self._find_sites()
        async with self._client() as client:
            # One untimed request first: it loads the HTTP stack's lazy imports and opens a
            # connection, so the first scheduled requests measure the system, not the client.
            with contextlib.suppress(httpx.HTTPError):
                await client.request("GET", LIVENESS_PATH)
            if self.spec.clients == "per-user":  # every user's client made before the clock starts
                for number in range(len(self.door.api_keys)):
                    self._user_client(client, number)
            mono0, wall0 = time.monotonic(), time.time()
            self.out.send({"started": wall0})
            for i in range(self.spec.max_requests):
                due = mono0 + i * interval
                if due - mono0 > self.spec.max_seconds or self.stop.is_set() or self.out.broken.is_set():
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), delay)
                if self.stop.is_set():
                    break
                task = asyncio.create_task(self._one(client, wall0 + (due - mono0)))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.wait(set(in_flight))
            for own in self._user_clients.values():
                await own.aclose()
        self.out.send({"done": time.time()})

    def _pick(self) -> tuple[str, str | None]:
        """The next request kind and, for turns and tasks, an idle session to send it to.

        A session is one user's conversation: its next turn waits for the previous answer, so
        a session with a request in flight is not picked; with none idle, a user arrives (a new
        session). This is how people use the app, and it keeps session writes uncontended. A
        conversation ends after ``turns_per_session`` turns (it is picked no more).
        """
        kind = self._random.choices(self._kinds, weights=self._weights)[0]
        state = self.state
        if kind == "poll" and not any(t.final is None for t in state.tasks.values()):
            kind = "message"
        if kind in ("message", "task"):
            idle = [s for s in state.sessions if s not in self._busy]
            if not idle:
                return "session", None
            session_id = self._random.choice(idle)
            self._busy.add(session_id)
            if kind == "message":
                self._turns[session_id] = turns = self._turns.get(session_id, 0) + 1
                if turns >= self.spec.turns_per_session:
                    state.sessions.remove(session_id)  # its last turn: the user moves on
            return kind, session_id
        return kind, None

    def _forget(self, kind: str, session_id: str | None, task_id: str | None) -> None:
        """A 404 means the site serving now has no such session or task (it lived in a lost
        site's store): its user starts over, as people do, instead of retrying it forever. The
        loss itself is counted by the read-back; here it stops being picked."""
        if kind in ("message", "task") and session_id in self.state.sessions:
            self.state.sessions.remove(session_id)
        if kind == "poll" and task_id is not None:
            self.state.tasks.pop(task_id, None)

    async def _one(self, client: Client, scheduled: float) -> None:
        kind, session_id = self._pick()
        try:
            await self._send(client, scheduled, kind, session_id)
        finally:
            self._busy.discard(session_id or "")

    async def _send(self, client: Client, scheduled: float, kind: str, session_id: str | None) -> None:
        task_id = marker = None
        client_number = self.state.client_of(session_id)
        if kind == "session":
            self._sessions_opened += 1
            client_number = self._sessions_opened
            method, path, body = "POST", "/v1/sessions", {}
        elif kind == "message":
            self._turn_counter += 1
            marker = turn_marker(self._turn_counter)
            method, path = "POST", f"/v1/sessions/{session_id}/messages"
            body = {"content": f"drill {marker}: what is {self._turn_counter} + 2?"}
        elif kind == "task":
            method, path, body = "POST", f"/v1/sessions/{session_id}/tasks", {"input": "summarise"}
        else:
            pending = [t for t in self.state.tasks.values() if t.final is None]
            task_id = self._random.choice(pending).task_id
            client_number = self.state.client_of(self.state.tasks[task_id].session_id)
            method, path, body = "GET", f"/v1/tasks/{task_id}", None
        sent = time.time()
        started = time.perf_counter()
        self.out.send({"s": sent})  # what the steady-state probe counts as in flight
        status: int | None = None
        site = instance = error = via = endpoint = None
        payload: Any = None
        try:
            # One deadline for the whole exchange (httpx's timeout applies per operation).
            headers = self.door.auth(client_number)
            if method == "POST" and self.spec.client == "fleet":
                # What the fleet client's create_session, send_message and create_task send.
                headers["Idempotency-Key"] = marker or os.urandom(16).hex()
            async with asyncio.timeout(self.spec.request_timeout_seconds):
                response = await self._user_client(client, client_number).request(
                    method, path, json=body, headers=headers
                )
            status = response.status_code
            reached = response.request.url
            base = f"{reached.scheme}://{reached.netloc.decode()}"
            if isinstance(client, FleetClient) and base != client.url:
                endpoint = reached.netloc.decode()  # host[:port]: tunnels differ by port alone
            site = response.headers.get(SITE_HEADER)
            via = response.headers.get(VIA_HEADER)
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
        elif ok and kind == "task":
            task_id = _ids(payload, "task_id", "id")
        task = None
        if ok and kind == "poll" and isinstance(payload, dict):
            task = {k: payload.get(k) for k in TASK_FIELDS}
        record = RequestRecord(
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
            marker=marker,
            via=via,
            endpoint=endpoint,
            client=client_number,
        )
        self.state.add(record, task, keep=False)
        if status == 404:
            self._forget(kind, session_id, task_id)
        line: dict[str, Any] = {"r": dataclasses.asdict(record)}
        if task is not None:
            line["task"] = task
        self.out.send(line)


def _watch_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """``stop`` on a "stop" line or when stdin closes (the drill process is gone)."""
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    with contextlib.suppress(RuntimeError):  # the loop already ended
        loop.call_soon_threadsafe(stop.set)


async def _run(config: dict[str, Any], spec: LoadSpec, out: _Out) -> None:
    door = FrontDoor.from_dict(config["door"])
    door.check()
    gen = Generator(door, spec, out, seed=int(config.get("seed", 7)))
    loop = asyncio.get_running_loop()
    threading.Thread(target=_watch_stdin, args=(loop, gen.stop), name="load-stdin", daemon=True).start()
    await gen.run()


def _take_priority() -> None:
    """``LOAD_NICENESS`` if this process may lower its niceness; otherwise the one it was given."""
    with contextlib.suppress(OSError):
        if os.getpriority(os.PRIO_PROCESS, 0) > LOAD_NICENESS:
            os.setpriority(os.PRIO_PROCESS, 0, LOAD_NICENESS)


def main() -> None:
    """The load process: configuration on the first stdin line, then "stop" or EOF ends it."""
    _take_priority()
    out = _Out(sys.stdout)
    # Whatever a library prints must not corrupt the JSON stream.
    sys.stdout = sys.stderr
    first = sys.stdin.readline()
    if not first:
        return  # the drill process went away before sending the configuration
    try:
        config = json.loads(first)
        spec = LoadSpec.model_validate(config["spec"])
        # The bound on this process's life, whatever else fails: no orphan load.
        killer = threading.Timer(deadline_seconds(spec) + 30.0, os._exit, args=(3,))
        killer.daemon = True
        killer.start()
        asyncio.run(_run(config, spec, out))
    except Exception as exc:
        out.send({"error": f"{type(exc).__name__}: {exc}"})
        out.close()
        raise SystemExit(1) from None
    out.close()


if __name__ == "__main__":
    main()
