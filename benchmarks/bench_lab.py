"""The lab's own costs: how long `lab up` and `lab down` take, and how far the cross-site Redis
replicas trail the primary.

Baseline in the same run: the round trip of the same probe against the primary alone (a write
read back on the same node), so the replication-lag figure reads as a ratio to local latency.
Failover figures (detection, RTO, failed requests, RPO) come from the drills: docs/drills.md.

    .venv/bin/python benchmarks/bench_lab.py [--base-port 27400] [--out docs/bench/lab.md]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import redis
from _common import machine, stamp

from skyfleet.lab.config import LabConfig
from skyfleet.lab.lifecycle import down, up
from skyfleet.lab.replication import password_of, primary_address, sample_lag
from skyfleet.lab.state import load_state

ROOT = Path(__file__).resolve().parents[1]


def local_round_trip_ms(state_dir: str, samples: int = 200) -> list[float]:
    """Write a key on the primary and read it back there: the floor replication sits on."""
    state = load_state(state_dir)
    address = primary_address(state)
    assert address, "no Redis primary"
    r = redis.Redis(host=address[0], port=address[1], password=password_of(state))
    out = []
    for i in range(samples):
        started = time.perf_counter()
        r.set("skyfleet:bench:rtt", str(i))
        r.get("skyfleet:bench:rtt")
        out.append((time.perf_counter() - started) * 1000)
    r.delete("skyfleet:bench:rtt")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-port", type=int, default=27400)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "lab.md")
    args = ap.parse_args()
    ups, downs, lag50, lag99, rtt50 = [], [], [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as state_dir:
            started = time.perf_counter()
            up(
                LabConfig.model_validate(
                    {"state_dir": state_dir, "base_port": args.base_port, "health_interval": "1s"}
                )
            )
            ups.append(time.perf_counter() - started)
            try:
                lag = sample_lag(state_dir, window_seconds=5, interval_ms=50)
                lag50.append(lag["p50_ms"])
                lag99.append(lag["p99_ms"])
                rtt50.append(statistics.median(local_round_trip_ms(state_dir)))
            finally:
                started = time.perf_counter()
                down(state_dir)
                downs.append(time.perf_counter() - started)
    med = statistics.median
    lines = [
        "## Lab (`skyfleet lab`)",
        "",
        f"Measured {stamp()} on {machine()}; {args.runs} runs of a default lab (3 sites × 2 api",
        "replicas + worker, Redis + Sentinel + NATS per site, HAProxy front door, loopback mode).",
        "",
        "| what | median | range |",
        "|---|---|---|",
        f"| `lab up`, until every replica is UP behind the front door | {med(ups):.1f} s | "
        f"{min(ups):.1f}–{max(ups):.1f} s |",
        f"| `lab down`, every process gone and every port free | {med(downs):.1f} s | "
        f"{min(downs):.1f}–{max(downs):.1f} s |",
        f"| replication lag to the peer sites, p50 | {med(lag50):.2f} ms | "
        f"{min(lag50):.2f}–{max(lag50):.2f} ms |",
        f"| replication lag to the peer sites, p99 | {med(lag99):.2f} ms | "
        f"{min(lag99):.2f}–{max(lag99):.2f} ms |",
        f"| baseline: write + read on the primary itself, p50 | {med(rtt50):.2f} ms | "
        f"{min(rtt50):.2f}–{max(rtt50):.2f} ms |",
        f"| ratio lag p50 / local round trip p50 | {med(lag50) / med(rtt50):.1f}× | |",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
