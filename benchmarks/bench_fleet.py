"""What a turn pays for synchronous replication across sites, on the twin of the shipped stacks.

The fleet (stacks/environments/fleet-prod.yaml, replication: sync) acknowledges a turn once a
majority of its three sites hold it: the home's own store and one other site, reached over HTTPS
at its regional name. The cost is one cross-site round trip per write (and per confirmed read).
Here the other two sites sit behind the lab's delay line (each direction of their uplinks
delayed by D ms, so a round trip to either costs 2·D more) while a client talks to the home site
(aws-prod) directly: only the replication crosses the delay. Each D is compared with D = 0 (the
lab's LAN) measured in the same run.

    sudo .venv/bin/python benchmarks/bench_fleet.py [--turns 150] [--delays 0,10,25,50]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from _common import machine, stamp
from rich.console import Console
from rich.progress import Progress

from skyfleet.drills.frontdoor import FrontDoor
from skyfleet.drills.target import LabTarget
from skyfleet.lab import faults
from skyfleet.lab.config import LabConfig
from skyfleet.lab.lifecycle import down, up
from skyfleet.lab.state import LabState

ROOT = Path(__file__).resolve().parents[1]
HOME, PEERS = "aws-prod", ("gcp-prod", "onprem-prod")


def door(state: LabState, name: str) -> FrontDoor:
    """The lab's front door, for the site's own name instead of the global one."""
    front = LabTarget(state_dir=state.state_dir).front_door()
    assert front is not None
    return dataclasses.replace(front, url=f"https://{name}")


def own_name(state: LabState, site: str) -> str:
    return next(n for n in state.sites[site].lb_names if state.edge is None or n != state.edge.fqdn)


def sample(http: httpx.Client, front: FrontDoor, turns: int) -> tuple[list[float], list[float]]:
    """Latency (ms) of ``turns`` turns and as many session reads, one at a time (closed loop),
    ten per session, each session a client (API key) of its own: a site limits each key's rate."""
    turn_ms: list[float] = []
    read_ms: list[float] = []
    session, auth = "", front.auth(0)
    for i in range(turns):
        if i % 10 == 0:
            auth = front.auth(i // 10)
            session = http.post("/v1/sessions", json={}, headers=auth).raise_for_status().json()["id"]
        started = time.perf_counter()
        turn = {"content": f"what is {i} + 2?"}
        http.post(f"/v1/sessions/{session}/messages", json=turn, headers=auth).raise_for_status()
        turn_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        http.get(f"/v1/sessions/{session}", headers=auth).raise_for_status()
        read_ms.append((time.perf_counter() - started) * 1000)
    return turn_ms, read_ms


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=100)
    ap.add_argument("--delays", default="0,10,25,50", help="one-way delay (ms) on the other sites' uplinks")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "fleet.md")
    args = ap.parse_args()
    delays = [int(d) for d in args.delays.split(",")]
    console = Console()
    rows: dict[int, tuple[list[float], list[float]]] = {}
    with tempfile.TemporaryDirectory() as state_dir:
        state = up(LabConfig.model_validate({"program": ROOT, "state_dir": state_dir}))
        try:
            d = door(state, own_name(state, HOME))
            with d.client(timeout=15) as http, Progress(console=console) as progress:
                sample(http, d, 20)  # warm: connections, the app's first requests
                job = progress.add_task("delays", total=len(delays))
                for delay in delays:
                    for peer in PEERS:
                        if delay:
                            faults.add_latency(state_dir, peer, delay_ms=delay)
                        else:
                            faults.clear_latency(state_dir, peer)
                    rows[delay] = sample(http, d, args.turns)
                    progress.advance(job)
                for peer in PEERS:
                    faults.clear_latency(state_dir, peer)
        finally:
            down(state_dir)
    base_turn, base_read = (statistics.median(v) for v in rows[0])
    lines = [
        "## Cross-site replication (`benchmarks/bench_fleet.py`)",
        "",
        f"Measured {stamp()} on {machine()}.",
        "",
        f"The twin of the shipped prod stacks (fleet-prod, `replication: sync`); {args.turns} turns and "
        f"{args.turns} session reads per row, one at a time, by a client of {HOME} (the sessions' home); "
        "the other two sites' uplinks delayed by the lab's delay line. A turn is run once one other site "
        "confirms the session's last write (one cross-site round trip) and acknowledged once one other "
        "site holds it (a second); a read is answered once one other site confirms (one). Baseline: "
        "the same twin with no delay (D = 0), in the same run.",
        "",
        "| one-way delay D (RTT to the other sites +2·D) | turn p50 / p99 ms | turn p50 − baseline | "
        "read p50 / p99 ms | read p50 − baseline | turn p50 ratio to baseline |",
        "|---|---|---|---|---|---|",
    ]
    for delay, (turn, read) in rows.items():
        t50, r50 = statistics.median(turn), statistics.median(read)
        lines.append(
            f"| {delay} ms (+{2 * delay} ms RTT) | {t50:.1f} / {p(turn, 99):.1f} | "
            f"{t50 - base_turn:+.1f} ms | {r50:.1f} / {p(read, 99):.1f} | {r50 - base_read:+.1f} ms | "
            f"{t50 / base_turn:.2f}× |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()
