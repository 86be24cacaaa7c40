"""Soak: the api and a worker at half their measured capacity for a few minutes, bounded.

What it measures: errors (by status) and the resident memory (RSS) of the api, the worker and
redis-server over a sustained open-loop load, window by window, so a leak shows as growth that
does not level off and a slow failure as errors or a p99 that climbs.

How: real redis-server, nats-server, ``python -m agent_app.api`` and ``python -m
agent_app.worker`` on 127.0.0.1, offline model. First the api's capacity is measured in this
run: ``CAPACITY_RUNS`` short overload runs (turns offered far above what it completes; the
median completion rate). Then the soak offers half that, open loop (the schedule does not wait
for replies, latency from each request's scheduled time), in windows of ``WINDOW_SECONDS``;
RSS is sampled between windows. One turn in ``TASK_EVERY`` asks for work "in the background",
which the agent turns into a queued task that the worker runs, so the queue and the worker are
under load too. Sessions take ``TURNS_PER_SESSION`` turns each, then fresh ones are used.
Every loop is bounded in count and time; all traffic goes to 127.0.0.1.

Run:   .venv/bin/python benchmarks/bench_soak.py [--minutes 3] [--out docs/bench/soak.md]
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_agent_app import (  # noqa: E402  (after the path set-up above)
    BENCH_KEY,
    create_sessions,
    machine,
    open_loop,
    run,
    summarise,
)

CAPACITY_RUNS = 3
CAPACITY_RATE = 8000  # offered in a capacity run: well above what this machine completes
CAPACITY_SECONDS = 3.0
WINDOW_SECONDS = 15.0
TURNS_PER_SESSION = 10
TASK_EVERY = 50
MiB = 1024 * 1024


def rss(pid: int) -> int:
    """Resident set size in bytes (``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Window:
    index: int
    offered: int
    ok: int
    statuses: collections.Counter[str]
    achieved: float
    p50_ms: float
    p99_ms: float
    lag_p99_ms: float
    rss: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return sum(self.statuses.values())


def soak_request(n: int, session_id: str) -> bytes:
    """Turn ``n``: one in ``TASK_EVERY`` asks for work in the background (a queued task)."""
    text = f"look into item {n} in the background" if n % TASK_EVERY == 0 else "hello there"
    body = json.dumps({"content": text}).encode()
    return (
        f"POST /v1/sessions/{session_id}/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {BENCH_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def soak_window(port: int, sessions: list[str], rate: int, seconds: float, index: int) -> Window:
    """One open-loop window over ``sessions``, round-robin (so one session's turns are
    seconds apart, as a user's are), with its figures."""
    result = run(open_loop(port, sessions, rate, seconds, soak_request))
    step = summarise("app", rate, result)
    return Window(
        index=index,
        offered=step.sent,
        ok=step.ok,
        statuses=result.error_kinds,
        achieved=step.achieved,
        p50_ms=step.p50_ms,
        p99_ms=step.p99_ms,
        lag_p99_ms=step.lag_p99_ms,
    )


def metric(url: str, name: str, **labels: str) -> float:
    import httpx

    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{want}}}" if want else name
    for line in httpx.get(url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def mib(n: float) -> str:
    return f"{n / MiB:.1f}"


def report(
    info: dict[str, str],
    capacities: list[float],
    rate: int,
    windows: list[Window],
    rss_idle: dict[str, int],
    start: dict[str, int],
    tasks: dict[str, float],
    stored_sessions: int,
    args: argparse.Namespace,
) -> str:
    names = list(rss_idle)
    end = windows[-1].rss
    offered = sum(w.offered for w in windows)
    ok = sum(w.ok for w in windows)
    statuses: collections.Counter[str] = collections.Counter()
    for w in windows:
        statuses.update(w.statuses)
    errors = sum(statuses.values())
    soak_seconds = len(windows) * WINDOW_SECONDS
    half = len(windows) // 2
    lines = [
        "# Soak: api and worker at half their measured capacity",
        "",
        "Measured by `benchmarks/bench_soak.py` (open loop at a fixed rate, offline model, real",
        "redis-server, nats-server, api and worker processes on 127.0.0.1; one turn in "
        f"{TASK_EVERY} asks for background work, which the worker runs from the queue; "
        f"{TURNS_PER_SESSION} turns per session). The api's capacity is measured first in the same "
        "run; the soak then offers half of it for "
        f"{soak_seconds / 60:g} minutes in {WINDOW_SECONDS:g} s windows, with RSS sampled between windows.",
        "",
        f"- Date: {info['date']}",
        f"- Machine: `{info['uname']}`",
        f"- CPU: {info['cpu']}; Python {info['python']}",
        f"- Load average when the run started: {info['load']}; when it ended: {info['load_end']}",
        "  (this is a shared 2-core machine: other sessions' work ran beside the soak, and the load",
        "  generator, api, worker, Redis and NATS share the same 2 cores)",
        "",
        "## Result",
        "",
        "| | |",
        "|---|---|",
        f"| capacity (median of {CAPACITY_RUNS} overload runs at {CAPACITY_RATE}/s) | "
        f"{statistics.median(capacities):.0f} turns/s (runs: {', '.join(f'{c:.0f}' for c in capacities)}) |",
        f"| soak rate (half of it) | {rate} turns/s offered for {soak_seconds:g} s: {offered} turns |",
        f"| answered 200 | {ok} ({ok / offered:.4%}) |",
        f"| errors | {errors}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))})" if errors else "")
        + " |",
        f"| tasks queued by turns / run by the worker | {tasks['enqueued']:.0f} / {tasks['succeeded']:.0f}"
        f" (after waiting up to 30 s for the queue to drain) |",
        f"| p99 per window (median; max) | {statistics.median(w.p99_ms for w in windows):.1f} ms; "
        f"{max(w.p99_ms for w in windows):.1f} ms |",
        "",
        "Resident memory (MiB): idle is after start-up, before any load; start is after the capacity runs"
        " (the processes warmed up), end after the last window. Growth in the second half is the figure a"
        " leak would show in: warm-up (caches, allocator arenas) settles in the first.",
        "",
        "| process | idle | soak start | soak end | growth over the soak | growth in its second half | max |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        mid = windows[half - 1].rss[name] if half else start[name]
        peak = max(w.rss[name] for w in windows)
        lines.append(
            f"| {name} | {mib(rss_idle[name])} | {mib(start[name])} | {mib(end[name])} | "
            f"{(end[name] - start[name]) / MiB:+.1f} ({(end[name] - start[name]) / start[name]:+.1%}) | "
            f"{(end[name] - mid) / MiB:+.1f} | {mib(peak)} |"
        )
    lines += [
        "",
        f"Redis's memory is the data set: the soak leaves {stored_sessions} sessions of up to "
        f"{TURNS_PER_SESSION} turns each (their TTL is a day), so it grows with the turns taken. The api's "
        "and the worker's are the figures a leak would show in.",
        "",
        "## Windows",
        "",
        "| window | offered | ok | errors | achieved/s | p50 ms | p99 ms | send lag p99 ms | "
        + " | ".join(f"{n} RSS MiB" for n in names)
        + " |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(names),
    ]
    for w in windows:
        lines.append(
            f"| {w.index} | {w.offered} | {w.ok} | {w.errors} | {w.achieved:.0f} | {w.p50_ms:.1f} | "
            f"{w.p99_ms:.1f} | {w.lag_p99_ms:.1f} | " + " | ".join(mib(w.rss[n]) for n in names) + " |"
        )
    lines += ["", f"Command: `.venv/bin/python benchmarks/bench_soak.py --minutes {args.minutes:g}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="soak length (at most 30)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "soak.md")
    args = parser.parse_args()
    if not 0 < args.minutes <= 30:
        parser.error("--minutes must be more than 0 and at most 30")

    from rich.console import Console
    from rich.progress import Progress

    from skyfleet.testing.servers import AppProcess, NatsServer, RedisServer, app_env

    console = Console()
    info = machine()
    redis_server, nats_server = RedisServer(), NatsServer()
    api = worker = None
    try:
        redis_server.start()
        nats_server.start()
        env = app_env(
            redis_server.url,
            nats_server.queue().url,
            AGENT_API_KEYS=BENCH_KEY,
            AGENT_RATE_LIMIT_PER_MINUTE="1000000",
            AGENT_SESSION_MAX_TURNS=str(TURNS_PER_SESSION),
            AGENT_LOG_LEVEL="WARNING",  # a soak of millions of access lines would measure the disk
        )
        api = AppProcess("api", env).start()
        worker = AppProcess("worker", {**env, "AGENT_WORKER_CONCURRENCY": "8"}).start()
        assert redis_server.proc is not None
        pids = {"api": api.proc.pid, "worker": worker.proc.pid, "redis": redis_server.proc.pid}
        rss_idle = {name: rss(pid) for name, pid in pids.items()}
        gc.collect()
        gc.freeze()  # the generator's start-up heap: never garbage, never scanned again
        count = max(1, int(args.minutes * 60 / WINDOW_SECONDS))
        windows: list[Window] = []
        with Progress(console=console) as progress:
            task = progress.add_task("capacity", total=CAPACITY_RUNS + count)
            capacities = []
            for _ in range(CAPACITY_RUNS):
                sessions = create_sessions(api.port, int(CAPACITY_RATE * CAPACITY_SECONDS) // 2 + 1)
                result = run(open_loop(api.port, sessions, CAPACITY_RATE, CAPACITY_SECONDS))
                capacities.append(summarise("app", CAPACITY_RATE, result).achieved)
                progress.update(task, advance=1)
            rate = max(1, int(statistics.median(capacities) // 2))
            per_window = int(rate * WINDOW_SECONDS)
            per_session = per_window // TURNS_PER_SESSION + 1
            sessions = create_sessions(api.port, count * per_session)
            progress.update(task, description=f"soak at {rate}/s")
            start_rss = {name: rss(pid) for name, pid in pids.items()}
            for i in range(count):
                mine = sessions[i * per_session : (i + 1) * per_session]
                window = soak_window(api.port, mine, rate, WINDOW_SECONDS, i + 1)
                window.rss = {name: rss(pid) for name, pid in pids.items()}
                windows.append(window)
                progress.update(task, advance=1)
        enqueued = metric(api.url, "agent_tasks_enqueued_total")
        deadline = time.monotonic() + 30
        succeeded = metric(worker.url, "agent_tasks_total", outcome="succeeded")
        while succeeded < enqueued and time.monotonic() < deadline:
            time.sleep(0.5)
            succeeded = metric(worker.url, "agent_tasks_total", outcome="succeeded")
        tasks = {"enqueued": enqueued, "succeeded": succeeded}
    finally:
        for proc in (worker, api):
            if proc is not None:
                proc.stop()
        nats_server.stop()
        redis_server.stop()
    info["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    text = report(info, capacities, rate, windows, rss_idle, start_rss, tasks, len(sessions), args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    console.print(text)
    console.print(f"[green]wrote {args.out}")


if __name__ == "__main__":
    main()
