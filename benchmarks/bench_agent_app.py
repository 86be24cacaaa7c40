"""Benchmark one agent turn: the real app against a framework-free baseline, open loop.

What it measures: ``POST /v1/sessions/{id}/messages`` with the offline model on the real
api process (uvicorn + FastAPI + the app's middleware, auth, rate limit, agent loop,
metrics and JSON logs) against a real redis-server, and, in the same run, a bare ASGI
baseline served by the same uvicorn that does the same Redis reads and writes per request
(key hash, the rate-limit script, HGETALL, the compare-and-set script) and nothing else.

How: an open-loop generator sends at a fixed rate whatever the server does, and measures
each latency from the request's *scheduled* time, so queueing shows up in p99 instead of
being hidden (no coordinated omission). Rates ramp up until a target saturates (it
completes under 90% of the offered rate, or p99 passes 1 s); then both targets run at half
of the app's saturation rate. Every step is bounded in requests and time, and all traffic
goes to 127.0.0.1.

The generator shares two cores with both servers and Redis (and, on a shared machine, with
other jobs), so it is built not to add stalls of its own and to show when it was late:

- the two targets are measured *interleaved*: each ramp rate runs on both before the next
  (the order alternating), the half-rate runs and the closed-loop runs likewise, so a
  change in background load falls on both rather than on whichever ran second;
- it runs on uvloop, with its start-up heap frozen and its garbage collector paused during
  a step (what a step allocates is freed by reference counting; cycles are collected
  between steps), so a collection in the generator cannot hold back sends and be charged
  to the target;
- it records, per step, how late it issued requests against their schedule ("send lag"):
  a large value means the generator (or the machine) stalled, not the target;
- a step in which a target saturates is run once more before that target's ramp ends (both
  runs are reported): one burst of other jobs starving a target for a second must not end
  its ramp at a rate it sustains otherwise;
- the half-rate run is three steps long, so its p99 rests on three times the samples (one
  stall of a few tens of ms then moves the p99 of one target less than before);
- the closed-loop runs also report the server process's CPU time per turn (from
  ``/proc``), which other load on the machine disturbs much less than wall time.

Run:   .venv/bin/python benchmarks/bench_agent_app.py [--step-seconds 4] [--out docs/bench/agent_app.md]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import hashlib
import hmac
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

T = TypeVar("T")
BENCH_KEY = "bench-key-0123456789abcdef"
RATES = (50, 100, 150, 200, 300, 400, 600, 800, 1000, 1300, 1600, 2000, 2500, 3200, 4000, 5000)
CONNECTIONS = 64
HALF_RATE_STEPS = 3  # the half-rate run lasts this many steps
SERVICE_TURNS = 1000
SERVICE_CLIENTS = (1, 8)
SERVICE_REPEATS = 3  # closed-loop runs per target and client count, interleaved; the median is kept
TURNS_PER_SESSION = 2  # turns on one session are seconds apart, as with a real user
MESSAGE = "hello there"


# --- the baseline server ---------------------------------------------------------------


def baseline_app(redis_url: str) -> Any:
    """A bare ASGI callable doing one turn's Redis work; see the module docstring."""
    import redis.asyncio as aioredis

    from agent_app.ratelimit import _HIT, WINDOW_MS
    from agent_app.sessions import _CAS, session_key

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    hit = client.register_script(_HIT)
    cas = client.register_script(_CAS)
    digest = hashlib.sha256(BENCH_KEY.encode()).digest()

    async def reply(send: Any, status: int, body: bytes) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        token = dict(scope["headers"]).get(b"authorization", b"")[7:]
        if not hmac.compare_digest(hashlib.sha256(token).digest(), digest):
            await reply(send, 401, b'{"code":"unauthorized"}')
            return
        session_id = scope["path"].split("/")[3]
        text = json.loads(b"".join(chunks))["content"]
        await hit(keys=["agent:ratelimit:baseline"], args=[WINDOW_MS])
        key = session_key(session_id)
        raw = await client.hgetall(key)  # type: ignore[misc]
        messages = json.loads(raw["messages"])
        now = time.time()
        turn_id = uuid.uuid4().hex
        answer = {"role": "assistant", "content": f"You said: {text}", "at": now, "turn_id": turn_id}
        messages += [{"role": "user", "content": text, "at": now, "turn_id": turn_id}, answer]
        turns = int(raw["turns"]) + 1
        await cas(keys=[key], args=[raw["version"], json.dumps(messages), turns, now, 86_400])
        await reply(
            send, 200, json.dumps({"session_id": session_id, "turn": turns, "reply": answer}).encode()
        )

    return app


def serve_baseline(port: int, redis_url: str) -> None:
    import uvicorn

    uvicorn.run(baseline_app(redis_url), host="127.0.0.1", port=port, access_log=False, log_level="warning")


# --- the open-loop load generator --------------------------------------------------------


@dataclass
class Step:
    target: str
    rate: int
    sent: int
    ok: int
    errors: int
    achieved: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    lag_p99_ms: float  # how late the generator issued requests against their schedule
    lag_max_ms: float
    attempt: int = 1  # 2: the re-run of a step that saturated (see ramp)

    @property
    def saturated(self) -> bool:
        return self.achieved < 0.9 * self.rate or self.p99_ms > 1000 or self.errors > 0.01 * self.sent


@dataclass
class OpenLoopRun:
    latencies: list[float]  # s, from each request's scheduled time, successful requests only
    errors: int
    elapsed: float
    send_lags: list[float]  # s, issue time minus scheduled time, every request


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one measurement on a fresh uvloop event loop, the generator's collector paused."""
    import uvloop

    gc.collect()
    gc.disable()
    try:
        return uvloop.run(coro)
    finally:
        gc.enable()


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


BODY = json.dumps({"content": MESSAGE}).encode()


def turn_request(session_id: str) -> bytes:
    return (
        f"POST /v1/sessions/{session_id}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {BENCH_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def closed_loop(port: int, sessions: list[str], count: int, concurrency: int) -> float:
    """Mean service time (ms) with ``concurrency`` clients each waiting for its reply: CPU cost
    per turn, much less sensitive to other load on the machine than the open-loop figures."""
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]

    async def client(k: int, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        for i in range(count // concurrency):
            status = await _request(*conn, turn_request(sessions[(i * concurrency + k) % len(sessions)]))
            if status != 200:
                raise RuntimeError(f"turn answered {status}")

    start = time.perf_counter()
    await asyncio.gather(*(client(k, c) for k, c in enumerate(conns)))
    elapsed = time.perf_counter() - start
    for _, writer in conns:
        writer.close()
    return elapsed / (count // concurrency * concurrency) * 1000


async def open_loop(port: int, sessions: list[str], rate: int, seconds: float) -> OpenLoopRun:
    """Send ``rate * seconds`` turns at a fixed rate; latencies from scheduled times.

    Times come from ``time.perf_counter``: uvloop's ``loop.time()`` has millisecond
    resolution and is cached for a whole loop iteration."""
    clock = time.perf_counter
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(CONNECTIONS):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    count = int(rate * seconds)
    latencies: list[float] = []
    send_lags: list[float] = []
    errors = 0
    last_done = 0.0

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors, last_done
        raw = turn_request(sessions[i % len(sessions)])
        conn = await pool.get()
        try:
            status = await _request(*conn, raw)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            conn = await asyncio.open_connection("127.0.0.1", port)
        else:
            if status == 200:
                latencies.append(clock() - scheduled)
            else:
                errors += 1
        pool.put_nowait(conn)
        last_done = clock()

    start = clock() + 0.05
    tasks = []
    for i in range(count):
        scheduled = start + i / rate
        delay = scheduled - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        send_lags.append(max(0.0, clock() - scheduled))
        tasks.append(asyncio.create_task(one(i, scheduled)))
    _, pending = await asyncio.wait(tasks, timeout=seconds + 10)  # bounded: stragglers count as errors
    for task in pending:
        task.cancel()
    errors += len(pending)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return OpenLoopRun(latencies, errors, max(1e-9, last_done - start), send_lags)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values) or [float("nan")]
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def summarise(target: str, rate: int, result: OpenLoopRun) -> Step:
    ms = [x * 1000 for x in result.latencies] or [float("nan")]
    lags = [x * 1000 for x in result.send_lags] or [0.0]
    return Step(
        target=target,
        rate=rate,
        sent=len(result.latencies) + result.errors,
        ok=len(result.latencies),
        errors=result.errors,
        achieved=len(result.latencies) / result.elapsed,
        p50_ms=statistics.median(ms),
        p99_ms=_pct(ms, 0.99),
        max_ms=max(ms),
        lag_p99_ms=_pct(lags, 0.99),
        lag_max_ms=max(lags),
    )


# --- orchestration -----------------------------------------------------------------------


def create_sessions(api_url: str, count: int) -> list[str]:
    import httpx

    with httpx.Client(
        base_url=api_url, headers={"Authorization": f"Bearer {BENCH_KEY}"}, timeout=30
    ) as client:
        return [client.post("/v1/sessions").json()["id"] for _ in range(count)]


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "uname": subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip(),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


@dataclass
class Service:
    """Closed-loop figures of one target at one client count (medians of the repeats)."""

    wall_ms: float  # mean time per turn
    cpu_ms: float  # the server process's CPU time per turn
    runs: list[float]  # wall ms/turn of each repeat


def report(
    steps: list[Step],
    half: list[Step],
    service: dict[tuple[str, int], Service],
    info: dict[str, str],
    args: argparse.Namespace,
) -> str:
    def best(target: str) -> float:
        """Capacity: the most turns/s the target completed in any step (overloaded steps included)."""
        return max((s.achieved for s in steps if s.target == target), default=0.0)

    app_max, base_max = best("app"), best("baseline")
    ratio = app_max / base_max if base_max else float("nan")

    def row(s: Step) -> str:
        cells = (s.target, s.rate, s.ok, s.errors, f"{s.achieved:.0f}", f"{s.p50_ms:.1f}", f"{s.p99_ms:.1f}")
        return (
            "| "
            + " | ".join(str(c) for c in cells)
            + f" | {s.max_ms:.1f} | {s.lag_p99_ms:.1f} / {s.lag_max_ms:.1f} |"
        )

    def verdict(s: Step) -> str:
        if not s.saturated:
            return " no |" if s.attempt == 1 else " no (re-run) |"
        return " yes, re-run |" if s.attempt == 1 else " yes |"

    rows = "\n".join(row(s) + verdict(s) for s in steps)
    half_rows = "\n".join(row(s) for s in half)
    app_half = next((s for s in half if s.target == "app"), None)
    base_half = next((s for s in half if s.target == "baseline"), None)

    def service_row(c: int) -> str:
        a, b = service[("app", c)], service[("baseline", c)]
        runs = ", ".join(f"{x:.2f}" for x in a.runs) + " / " + ", ".join(f"{x:.2f}" for x in b.runs)
        return (
            f"| {c} | {a.wall_ms:.2f} | {b.wall_ms:.2f} | {b.wall_ms / a.wall_ms:.2f} | "
            f"{a.cpu_ms:.3f} | {b.cpu_ms:.3f} | {b.cpu_ms / a.cpu_ms:.2f} | {runs} |"
        )

    service_rows = "\n".join(service_row(c) for c in sorted({c for _, c in service}))
    half_seconds = args.step_seconds * HALF_RATE_STEPS
    return f"""# agent_app benchmark: one agent turn, app vs. framework-free baseline

Measured by `benchmarks/bench_agent_app.py` (open-loop, fixed-rate; latency from each
request's scheduled send time, so queueing is included). Offline model, real redis-server
7 on 127.0.0.1, real api process (`python -m agent_app.api`, uvicorn with uvloop and httptools,
JSON access logs at INFO to a file), {CONNECTIONS} keep-alive connections, `{MESSAGE!r}` as the
message, {TURNS_PER_SESSION} turns per session (fresh sessions per step), {args.step_seconds:g} s per step.
The baseline is a bare ASGI callable on the same uvicorn doing the same Redis reads and writes
per turn (key hash, rate-limit script, HGETALL, compare-and-set script) without the app's layers.
The two targets are measured interleaved (each rate on both, order alternating); the generator
runs on uvloop with its collector paused during a step, and reports how late it issued
requests ("send lag"), so a stall of the generator or the machine is visible as such. See the
script's docstring for the method.

- Date: {info["date"]}
- Machine: `{info["uname"]}`
- CPU: {info["cpu"]}; Python {info["python"]}
- Load average when the run started: {info["load"]}; when it ended: {info["load_end"]} (the
  machine is shared with other engineers' test runs; the load generator, both servers and
  Redis share the same 2 cores)

## Result

| | turns/s at saturation | p99 at half the app's saturation rate |
|---|---|---|
| app | {app_max:.0f} | {app_half.p99_ms if app_half else float("nan"):.1f} ms |
| baseline | {base_max:.0f} | {f"{base_half.p99_ms:.1f} ms" if base_half else "n/a"} |
| **ratio app / baseline** | **{ratio:.2f}** (target ≥ 0.7) | target ≤ 20 ms for the app |

"Turns/s at saturation" is the most turns/s a target completed in any step; a step counts as
saturated when the target completed < 90 % of the offered rate, p99 passed 1 s or ≥ 1 % failed;
a saturated step is run once more before the target's ramp stops (both runs are listed).
The half-rate run uses half of the app's saturation throughput and lasts {half_seconds:g} s per target.

## Service time (closed loop, {SERVICE_TURNS} turns per run)

Mean wall time per turn (ms) with N clients each waiting for its reply, and the server
process's CPU time per turn (ms); medians of {SERVICE_REPEATS} runs per target, interleaved. The ratios are
baseline / app, i.e. app throughput as a fraction of the baseline's.

| clients | app ms | baseline ms | ratio | app CPU ms | baseline CPU ms | CPU ratio | runs (app / base) |
|---|---|---|---|---|---|---|---|
{service_rows}

## Ramp (open loop)

| target | offered/s | ok | errors | achieved/s | p50 ms | p99 ms | max ms | send lag p99/max | saturated |
|---|---|---|---|---|---|---|---|---|---|
{rows}

## At half the app's saturation rate

| target | offered/s | ok | errors | achieved/s | p50 ms | p99 ms | max ms | send lag p99/max |
|---|---|---|---|---|---|---|---|---|
{half_rows}
"""


def ramp(targets: dict[str, int], api_url: str, seconds: float, progress: Any, task: Any) -> list[Step]:
    """Both targets up the same rates, interleaved, each until it saturates.

    A saturated step is run once more before the target's ramp ends: on a shared machine a
    burst of other jobs can starve a target for a second at a rate it otherwise sustains,
    and one such burst should not end its ramp. Both attempts are reported."""
    for port in targets.values():  # warm-up, not recorded: connections, script loads, lazy imports
        run(open_loop(port, create_sessions(api_url, 40), 100, 2.0))
    steps: list[Step] = []
    live = list(targets)
    for k, rate in enumerate(RATES):
        for target in live if k % 2 == 0 else live[::-1]:
            for attempt in range(2):
                sessions = create_sessions(api_url, max(1, int(rate * seconds / TURNS_PER_SESSION) + 1))
                step = summarise(target, rate, run(open_loop(targets[target], sessions, rate, seconds)))
                step.attempt = attempt + 1
                steps.append(step)
                progress.update(task, advance=1, description=f"{target} @ {rate}/s: p99 {step.p99_ms:.1f} ms")
                if not step.saturated:
                    break
        live = [t for t in live if not any(s.saturated and s.attempt == 2 for s in steps if s.target == t)]
        if not live:
            break
    steps.sort(key=lambda s: (s.target != "app", s.rate, s.attempt))
    return steps


def service_times(
    targets: dict[str, int], pids: dict[str, int], api_url: str
) -> dict[tuple[str, int], Service]:
    """Closed-loop time and server CPU per turn, each target and client count, interleaved."""
    walls: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    for clients in SERVICE_CLIENTS:
        for repeat in range(SERVICE_REPEATS):
            for target in targets if repeat % 2 == 0 else list(targets)[::-1]:
                sessions = create_sessions(api_url, SERVICE_TURNS // TURNS_PER_SESSION)
                before = cpu_seconds(pids[target])
                wall = run(closed_loop(targets[target], sessions, SERVICE_TURNS, clients))
                cpu = (cpu_seconds(pids[target]) - before) / SERVICE_TURNS * 1000
                walls.setdefault((target, clients), []).append(wall)
                cpus.setdefault((target, clients), []).append(cpu)
    return {
        key: Service(statistics.median(walls[key]), statistics.median(cpus[key]), walls[key]) for key in walls
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--step-seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "agent_app.md")
    parser.add_argument("--serve-baseline", nargs=2, metavar=("PORT", "REDIS_URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(int(args.serve_baseline[0]), args.serve_baseline[1])
        return

    from rich.console import Console
    from rich.progress import Progress

    from tests.agent_app.brokers import NatsBroker
    from tests.agent_app.servers import (
        AppProcess,
        NatsServer,
        Proc,
        RedisServer,
        app_env,
        free_port,
        wait_until,
    )

    console = Console()
    info = machine()
    redis_server, nats_server = RedisServer().start(), NatsServer().start()
    env = app_env(
        redis_server.url,
        NatsBroker(nats_server).env["AGENT_QUEUE_URL"],
        AGENT_API_KEYS=BENCH_KEY,
        AGENT_RATE_LIMIT_PER_MINUTE="1000000",
        AGENT_SESSION_MAX_TURNS="1000",
    )
    api = AppProcess("api", env).start()
    base_port = free_port()
    baseline = Proc(
        "baseline",
        [sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(base_port), redis_server.url],
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).start()
    try:
        import httpx

        wait_until(lambda: httpx.get(f"http://127.0.0.1:{base_port}/").status_code, what="baseline")
        gc.collect()
        gc.freeze()  # the generator's start-up heap: never garbage, never scanned again
        targets = {"app": api.port, "baseline": base_port}
        with Progress(console=console) as progress:
            task = progress.add_task("ramp", total=2 * len(RATES) + 2)
            steps = ramp(targets, api.url, args.step_seconds, progress, task)
            app_capacity = max(s.achieved for s in steps if s.target == "app")
            half_rate = max(1, int(app_capacity // 2))
            half_seconds = args.step_seconds * HALF_RATE_STEPS
            half = []
            for target, port in targets.items():
                sessions = create_sessions(api.url, int(half_rate * half_seconds / TURNS_PER_SESSION) + 1)
                half.append(
                    summarise(target, half_rate, run(open_loop(port, sessions, half_rate, half_seconds)))
                )
                progress.update(task, advance=1, description=f"{target} @ {half_rate}/s (half)")
            progress.update(task, description="service time (closed loop)")
            service = service_times(targets, {"app": api.proc.pid, "baseline": baseline.pid}, api.url)
    finally:
        baseline.stop()
        api.stop()
        nats_server.stop()
        redis_server.stop()
    info["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = report(steps, half, service, info, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    console.print(text)
    console.print(f"[green]wrote {args.out}")


if __name__ == "__main__":
    main()
