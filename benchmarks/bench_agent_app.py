"""Benchmark one agent turn: the real app against a framework-free baseline, open loop.

What it measures: ``POST /v1/sessions/{id}/messages`` with the offline model on the real
api process (uvicorn + FastAPI + the app's middleware, auth, rate limit, agent loop,
metrics and JSON logs) against a real redis-server, and, in the same run, a bare ASGI
baseline served by the same uvicorn that does the same Redis reads and writes per request
(key hash, the rate-limit script, HGETALL, the compare-and-set script) and nothing else.

How: an open-loop generator sends at a fixed rate whatever the server does, and measures
each latency from the request's *scheduled* time, so queueing shows up in p99 instead of
being hidden (no coordinated omission). Every step is bounded in requests and time, and all
traffic goes to 127.0.0.1. Four parts, in this order:

1. a ramp: both targets up the same rates, interleaved rate by rate, each until it
   saturates (it completes under 90% of the offered rate, p99 passes 1 s or 1% fail): the
   latency curve of each, and a first estimate of capacity;
2. saturation, in paired overload runs: a rate above either target's ramp capacity, offered
   to one target and then the other (the order alternating), ``CAPACITY_PAIRS`` times; a
   target's capacity is what it completes per second under overload, and the ratio is the
   median of the pairs' ratios;
3. half the app's saturation rate (half its median capacity from 2), again in paired runs:
   the p99 of each run, their median, and the p99 of all the runs' requests pooled;
4. service time, closed loop: wall and server CPU time per turn at 1 and 8 clients.

Why pairs: this machine is a shared 2-core VM whose speed moves a lot (on 2026-12-02 the
same ramp saturated the app at 1717 and at 3398 turns/s 22 minutes apart) and stalls for tens of ms at
times, whoever runs. A ratio between two single measurements minutes apart carries all of
that drift; a ratio within a pair, seconds apart, carries little of it, and the median over
pairs discards the pair that a stall hit. Each pair's figures are reported, so the spread is
visible rather than averaged away.

The generator shares the two cores with both servers and Redis, so it is built not to add
stalls of its own and to show when it was late:

- it runs on uvloop, with its start-up heap frozen and its garbage collector paused during
  a run (what a run allocates is freed by reference counting; cycles are collected between
  runs), so a collection in the generator cannot hold back sends and be charged to the target;
- it records, per run, how late it issued requests against their schedule ("send lag"):
  a large value means the generator (or the machine) stalled, not the target;
- a ramp step in which a target saturates is run once more before that target's ramp ends
  (both runs are reported): one burst of other load must not end its ramp early;
- sessions are fresh for every run (two turns each), created through the app's API;
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
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

T = TypeVar("T")
BENCH_KEY = "bench-key-0123456789abcdef"
RATES = (50, 100, 150, 200, 300, 400, 600, 800, 1000, 1300, 1600, 2000, 2500, 3200, 4000, 5000, 6400, 8000)
CONNECTIONS = 64
CAPACITY_PAIRS = 10  # paired overload runs: both targets back to back, the order alternating
CAPACITY_SECONDS = 2.0  # offered load per overload run
OVERLOAD = 1.3  # an overload run offers this times the higher of the two ramp capacities
HALF_RATE_RUNS = 5  # paired runs per target at half the app's capacity
HALF_RATE_SECONDS = 6.0
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
        await cas(keys=[key], args=[raw["version"], json.dumps(messages), turns, now, 86_400, "", ""])
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
    error_kinds: Counter[str] = field(default_factory=Counter)  # status or exception: count


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one measurement on a fresh uvloop event loop, the generator's collector paused."""
    import uvloop

    gc.collect()
    gc.disable()
    try:
        return uvloop.run(coro)
    finally:
        gc.enable()


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, bytes]:
    """Send one raw HTTP/1.1 request on a keep-alive connection; its status and body."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


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
            status, _ = await _request(*conn, turn_request(sessions[(i * concurrency + k) % len(sessions)]))
            if status != 200:
                raise RuntimeError(f"turn answered {status}")

    start = time.perf_counter()
    await asyncio.gather(*(client(k, c) for k, c in enumerate(conns)))
    elapsed = time.perf_counter() - start
    for _, writer in conns:
        writer.close()
    return elapsed / (count // concurrency * concurrency) * 1000


async def open_loop(
    port: int,
    sessions: list[str],
    rate: int,
    seconds: float,
    request: Callable[[int, str], bytes] | None = None,
) -> OpenLoopRun:
    """Send ``rate * seconds`` turns at a fixed rate; latencies from scheduled times.

    Request ``i`` goes to session ``i % len(sessions)``; ``request(i, session_id)`` builds it
    (a plain turn by default). Times come from ``time.perf_counter``: uvloop's ``loop.time()``
    has millisecond resolution and is cached for a whole loop iteration."""
    clock = time.perf_counter
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(CONNECTIONS):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    count = int(rate * seconds)
    latencies: list[float] = []
    send_lags: list[float] = []
    kinds: Counter[str] = Counter()
    last_done = 0.0

    async def one(i: int, scheduled: float) -> None:
        nonlocal last_done
        session_id = sessions[i % len(sessions)]
        raw = request(i, session_id) if request else turn_request(session_id)
        conn = await pool.get()
        try:
            status, _ = await _request(*conn, raw)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            kinds[type(exc).__name__] += 1
            conn = await asyncio.open_connection("127.0.0.1", port)
        else:
            if status == 200:
                latencies.append(clock() - scheduled)
            else:
                kinds[str(status)] += 1
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
    if pending:
        kinds["no answer within 10 s"] += len(pending)
    while not pool.empty():
        pool.get_nowait()[1].close()
    return OpenLoopRun(latencies, sum(kinds.values()), max(1e-9, last_done - start), send_lags, kinds)


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


async def _create_sessions(port: int, count: int) -> list[str]:
    raw = (
        f"POST /v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {BENCH_KEY}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    ids: list[str] = []

    async def client(share: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(share):
            status, body = await _request(reader, writer, raw)
            if status != 201 or not body:
                raise RuntimeError(f"POST /v1/sessions answered {status}: {body[:200]!r}")
            ids.append(json.loads(body)["id"])
        writer.close()

    clients = 16
    await asyncio.gather(*(client(count // clients + (k < count % clients)) for k in range(clients)))
    return ids


def create_sessions(api_port: int, count: int) -> list[str]:
    """Fresh sessions through the app's own API (16 connections, so a step's thousands of
    sessions take a second, not the step's length again)."""
    return run(_create_sessions(api_port, count))


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


Pair = dict[str, tuple[Step, OpenLoopRun]]  # one paired run, in run order: each target's step and result
TARGET_RATIO = 0.7
TARGET_P99_MS = 20.0
MIN_VALID_PAIRS = 5


def overloaded(pair: Pair) -> bool:
    """Both targets were truly overloaded (completed under 90 % of the offered rate, so what
    they completed is their capacity) and under 1 % of requests failed (a target failing fast
    would look "overloaded" too)."""
    return all(0 < s.achieved < 0.9 * s.rate and s.errors <= 0.01 * s.sent for s, _ in pair.values())


@dataclass
class Findings:
    """The headline figures, each from paired runs (see ``paired``)."""

    capacity: dict[str, float]  # median turns/s over the valid overload pairs
    ratios: list[float]  # app / baseline capacity, per valid pair
    left_out: list[int]  # numbers (from 1) of the overload pairs not counted, see ``overloaded``
    half_rate: int
    half_p99: dict[str, list[float]]  # p99 (ms) of each half-rate run
    half_pooled_p99: dict[str, float]  # p99 (ms) over all of a target's half-rate requests

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios) if self.ratios else float("nan")

    def app_p99(self) -> float:
        return statistics.median(self.half_p99["app"])

    def throughput_verdict(self) -> str:
        n = len(self.ratios)
        above = sum(r >= TARGET_RATIO for r in self.ratios)
        if n < MIN_VALID_PAIRS:
            return f"**not valid** ({n} valid pairs)"
        if self.ratio < TARGET_RATIO:
            return f"**not met** ({above} of {n} pairs ≥ {TARGET_RATIO})"
        if above >= TARGET_RATIO * n:
            return f"**met** ({above} of {n} pairs ≥ {TARGET_RATIO})"
        return f"**borderline**: the median is, but only {above} of {n} pairs are ≥ {TARGET_RATIO}"

    def p99_verdict(self) -> str:
        runs = self.half_p99["app"]
        over = sum(not (x <= TARGET_P99_MS) for x in runs)  # a run with no successes (nan) counts as over
        word = "**met**" if self.app_p99() <= TARGET_P99_MS else "**not met**"
        return f"{word} ({over} of {len(runs)} runs over {TARGET_P99_MS:g} ms)"


def capacity_of(pairs: list[Pair]) -> tuple[dict[str, float], list[float], list[int]]:
    """Median capacity per target and the per-pair ratios, over the truly overloaded pairs."""
    valid: list[Pair] = []
    left_out: list[int] = []
    for k, pair in enumerate(pairs, 1):
        if overloaded(pair):
            valid.append(pair)
        else:
            left_out.append(k)
    targets = list(pairs[0])
    capacity = {
        t: statistics.median(p[t][0].achieved for p in valid) if valid else float("nan") for t in targets
    }
    ratios = [p["app"][0].achieved / p["baseline"][0].achieved for p in valid]
    return capacity, ratios, left_out


def ramp_capacity(steps: list[Step], target: str | None = None) -> float:
    """The most turns/s a target (or either, when ``None``) completed in any ramp step."""
    return max((s.achieved for s in steps if target in (None, s.target)), default=0.0)


def findings(
    capacity: tuple[dict[str, float], list[float], list[int]], half_pairs: list[Pair], half_rate: int
) -> Findings:
    """The headline figures: ``capacity`` as :func:`capacity_of` gives it, and the half-rate runs."""
    targets = list(capacity[0])
    half_p99 = {t: [p[t][0].p99_ms for p in half_pairs] for t in targets}
    pooled = {t: _pct([x * 1000 for p in half_pairs for x in p[t][1].latencies], 0.99) for t in targets}
    return Findings(*capacity, half_rate, half_p99, pooled)


def report(
    steps: list[Step],
    capacity_pairs: list[Pair],
    half_pairs: list[Pair],
    found: Findings,
    service: dict[tuple[str, int], Service],
    info: dict[str, str],
    args: argparse.Namespace,
) -> str:
    ramp_app, ramp_base = ramp_capacity(steps, "app"), ramp_capacity(steps, "baseline")

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

    def pair_rows(pairs: list[Pair], ratio: bool) -> str:
        lines = []
        for k, pair in enumerate(pairs, 1):
            first = next(iter(pair))
            for target in ("app", "baseline"):
                step = pair[target][0]
                cells = f"| {k} | {'yes' if target == first else ''} | " + row(step)[2:]
                if ratio and target == "app":
                    base = pair["baseline"][0].achieved
                    value = f"{step.achieved / base:.3f}" if base else "n/a"
                    cells += f" {value}{'' if overloaded(pair) else ' (left out)'} |"
                elif ratio:
                    cells += " |"
                lines.append(cells)
        return "\n".join(lines)

    def spread(values: list[float], unit: str = "") -> str:
        if not values:
            return "n/a"
        digits = 1 if unit else 3
        return f"{min(values):.{digits}f}–{max(values):.{digits}f}{unit}"

    rows = "\n".join(row(s) + verdict(s) for s in steps)
    service_rows = "\n".join(service_row(service, c) for c in sorted({c for _, c in service}))
    ratio, app_p99 = found.ratio, found.app_p99()
    cap_rate = capacity_pairs[0]["app"][0].rate
    base_p99 = statistics.median(found.half_p99["baseline"])
    ramp_ratio = ramp_app / ramp_base if ramp_base else float("nan")
    base_capacity = found.capacity["baseline"]
    medians_ratio = found.capacity["app"] / base_capacity if base_capacity else float("nan")
    overload_check = (
        f"**Pairs {found.left_out} are left out** of the medians: a target in them completed 90 % "
        "or more of the offered rate (so it was not overloaded) or more than 1 % failed."
        if found.left_out
        else "In every pair both targets completed under 90 % of the offered rate with under 1 % "
        "failed: all were overloaded, and all pairs count."
    )
    result_rows = "\n".join(
        [
            f"| turns/s at saturation (median of {len(found.ratios)} valid paired overload runs at "
            f"{cap_rate}/s) | {found.capacity['app']:.0f} | {found.capacity['baseline']:.0f} "
            f"| **{ratio:.3f}** (median of the pairs' ratios; range {spread(found.ratios)}; "
            f"ratio of the two median capacities {medians_ratio:.3f}) "
            f"| ≥ {TARGET_RATIO} | {found.throughput_verdict()} |",
            f"| p99 at half the app's saturation rate ({found.half_rate}/s; median of "
            f"{len(found.half_p99['app'])} paired runs) | {app_p99:.1f} ms | {base_p99:.1f} ms "
            f"| | ≤ {TARGET_P99_MS:g} ms for the app | {found.p99_verdict()} |",
            f"| p99 over all those runs' requests pooled | {found.half_pooled_p99['app']:.1f} ms "
            f"| {found.half_pooled_p99['baseline']:.1f} ms | | | |",
        ]
    )
    return f"""# agent_app benchmark: one agent turn, app vs. framework-free baseline

Measured by `benchmarks/bench_agent_app.py` (open-loop, fixed-rate; latency from each
request's scheduled send time, so queueing is included). Offline model, real redis-server
7 on 127.0.0.1, real api process (`python -m agent_app.api`, uvicorn with uvloop and httptools,
JSON access logs at INFO to a file), {CONNECTIONS} keep-alive connections, `{MESSAGE!r}` as the
message, {TURNS_PER_SESSION} turns per session (fresh sessions for every run).
The baseline is a bare ASGI callable on the same uvicorn doing the same Redis reads and writes
per turn (key hash, rate-limit script, HGETALL, compare-and-set script) without the app's layers.
The headline figures come from *paired* runs: each run on one target is followed by the same
run on the other, the order alternating, so a change in the machine's speed falls on both.
See the script's docstring for the method.

- Date: {info["date"]}
- Machine: `{info["uname"]}`
- CPU: {info["cpu"]}; Python {info["python"]}
- Load average when the run started: {info["load"]}; when it ended: {info["load_end"]} (the
  load generator, both servers and Redis share the same {os.cpu_count()} cores)

## Result

| | app | baseline | app / baseline | target | |
|---|---|---|---|---|---|
{result_rows}

Spread of the half-rate runs' p99: app {spread(found.half_p99["app"], " ms")}, baseline
{spread(found.half_p99["baseline"], " ms")}. The ramp's single-shot capacities (most turns/s
completed in any one ramp step) were {ramp_app:.0f} (app) and {ramp_base:.0f} (baseline), ratio
{ramp_ratio:.3f}: one step each, not paired, so a change in the machine's speed between the two
falls on that ratio in full.

## Saturation: paired overload runs

Each run offers {cap_rate} turns/s ({OVERLOAD:g} × the higher ramp capacity, at most {RATES[-1]}) for
{CAPACITY_SECONDS:g} s, meant to be more than either target completes; "achieved/s" is then the
target's capacity: its completions over the time to the last one. Most of that time the
target is working off the backlog with all {CONNECTIONS} connections busy, so this is its
throughput with {CONNECTIONS} requests in flight. {overload_check}

| pair | first | target | offered/s | ok | err | achieved/s | p50 ms | p99 ms | max ms | lag p99/max | ratio |
|---|---|---|---|---|---|---|---|---|---|---|---|
{pair_rows(capacity_pairs, True)}

## At half the app's saturation rate: paired runs

{found.half_rate} turns/s (half the app's median capacity above) for {HALF_RATE_SECONDS:g} s per run.

| run | first | target | offered/s | ok | err | achieved/s | p50 ms | p99 ms | max ms | send lag p99/max |
|---|---|---|---|---|---|---|---|---|---|---|
{pair_rows(half_pairs, False)}

## Service time (closed loop, {SERVICE_TURNS} turns per run)

Mean wall time per turn (ms) with N clients each waiting for its reply, and the server
process's CPU time per turn (ms); medians of {SERVICE_REPEATS} runs per target, interleaved. The ratios are
baseline / app, i.e. app throughput as a fraction of the baseline's.

| clients | app ms | baseline ms | ratio | app CPU ms | baseline CPU ms | CPU ratio | runs (app / base) |
|---|---|---|---|---|---|---|---|
{service_rows}

## Ramp (open loop, {args.step_seconds:g} s per step)

Latency against offered rate; both targets interleaved rate by rate. A step counts as saturated
when the target completed < 90 % of the offered rate, p99 passed 1 s or ≥ 1 % failed; a
saturated step is run once more before the target's ramp stops (both runs are listed).

| target | offered/s | ok | errors | achieved/s | p50 ms | p99 ms | max ms | send lag p99/max | saturated |
|---|---|---|---|---|---|---|---|---|---|
{rows}
"""


def service_row(service: dict[tuple[str, int], Service], c: int) -> str:
    a, b = service[("app", c)], service[("baseline", c)]
    runs = ", ".join(f"{x:.2f}" for x in a.runs) + " / " + ", ".join(f"{x:.2f}" for x in b.runs)
    return (
        f"| {c} | {a.wall_ms:.2f} | {b.wall_ms:.2f} | {b.wall_ms / a.wall_ms:.2f} | "
        f"{a.cpu_ms:.3f} | {b.cpu_ms:.3f} | {b.cpu_ms / a.cpu_ms:.2f} | {runs} |"
    )


def paired(
    targets: dict[str, int], api_port: int, rate: int, seconds: float, runs: int, progress: Any, task: Any
) -> list[Pair]:
    """``runs`` pairs of open-loop runs at one rate: each target once per pair, back to back,
    the order alternating, so both see the machine as it was then. Each pair keeps run order."""
    pairs: list[Pair] = []
    for k in range(runs):
        pair: Pair = {}
        for target in list(targets) if k % 2 == 0 else list(targets)[::-1]:
            sessions = create_sessions(api_port, int(rate * seconds / TURNS_PER_SESSION) + 1)
            result = run(open_loop(targets[target], sessions, rate, seconds))
            pair[target] = (summarise(target, rate, result), result)
            progress.update(task, advance=1, description=f"{target} @ {rate}/s, pair {k + 1} of {runs}")
        pairs.append(pair)
    return pairs


def ramp(targets: dict[str, int], api_port: int, seconds: float, progress: Any, task: Any) -> list[Step]:
    """Both targets up the same rates, interleaved, each until it saturates.

    A saturated step is run once more before the target's ramp ends: on a shared machine a
    burst of other jobs can starve a target for a second at a rate it otherwise sustains,
    and one such burst should not end its ramp. Both attempts are reported."""
    for port in targets.values():  # warm-up, not recorded: connections, script loads, lazy imports
        run(open_loop(port, create_sessions(api_port, 40), 100, 2.0))
    steps: list[Step] = []
    live = list(targets)
    for k, rate in enumerate(RATES):
        for target in live if k % 2 == 0 else live[::-1]:
            for attempt in range(2):
                sessions = create_sessions(api_port, max(1, int(rate * seconds / TURNS_PER_SESSION) + 1))
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
    targets: dict[str, int], pids: dict[str, int], api_port: int
) -> dict[tuple[str, int], Service]:
    """Closed-loop time and server CPU per turn, each target and client count, interleaved."""
    walls: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    for clients in SERVICE_CLIENTS:
        for repeat in range(SERVICE_REPEATS):
            for target in targets if repeat % 2 == 0 else list(targets)[::-1]:
                sessions = create_sessions(api_port, SERVICE_TURNS // TURNS_PER_SESSION)
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

    from skyfleet.testing.servers import (
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
        nats_server.queue().url,
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
            task = progress.add_task("ramp", total=None)  # the ramp's length is known once it ends
            steps = ramp(targets, api.port, args.step_seconds, progress, task)
            progress.update(task, total=len(steps) + 2 * CAPACITY_PAIRS + 2 * HALF_RATE_RUNS + 1)
            overload = int(min(RATES[-1], OVERLOAD * ramp_capacity(steps)))
            capacity_pairs = paired(
                targets, api.port, overload, CAPACITY_SECONDS, CAPACITY_PAIRS, progress, task
            )
            capacity = capacity_of(capacity_pairs)
            app_capacity = capacity[0]["app"]
            if math.isnan(app_capacity):  # no valid pair: the report says so; half of the ramp's
                app_capacity = ramp_capacity(steps, "app")
            half_rate = max(1, int(app_capacity // 2))
            half_pairs = paired(
                targets, api.port, half_rate, HALF_RATE_SECONDS, HALF_RATE_RUNS, progress, task
            )
            found = findings(capacity, half_pairs, half_rate)
            progress.update(task, description="service time (closed loop)")
            service = service_times(targets, {"app": api.proc.pid, "baseline": baseline.pid}, api.port)
            progress.update(task, advance=1)
    finally:
        baseline.stop()
        api.stop()
        nats_server.stop()
        redis_server.stop()
    info["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = report(steps, capacity_pairs, half_pairs, found, service, info, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    console.print(text)
    console.print(f"[green]wrote {args.out}")


if __name__ == "__main__":
    main()
