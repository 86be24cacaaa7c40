"""The twin's own costs: how long `lab up` (offline plans included) and `lab down` take, what it
runs, and how far each site's cache replicas trail their primary.

Baseline in the same run: the round trip of the same probe on a primary alone (a write read back
on the same node), so the replication-lag figure reads as a ratio to local latency. Failover
figures (detection, RTO, failed requests, RPO) come from the drills: docs/drills.md.

    .venv/bin/python benchmarks/bench_lab.py [--runs 3] [--out docs/bench/lab.md]   # as root
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import machine, stamp

from skyfleet.lab import faults
from skyfleet.lab.config import LabConfig
from skyfleet.lab.lifecycle import down, up
from skyfleet.lab.procs import marked_pids
from skyfleet.lab.replication import sample_lag
from skyfleet.lab.state import load_state

ROOT = Path(__file__).resolve().parents[1]


def local_round_trip_ms(state_dir: str, site: str, samples: int = 200) -> list[float]:
    """Write a key on a site's cache primary and read it back there: the floor replication sits on."""
    from skyfleet.lab.replication import _client

    state = load_state(state_dir)
    primary = faults.cache_primary(state_dir, site)["primary"]
    assert primary, f"{site}: no cache primary"
    r = _client(state.get(primary), state)
    out = []
    for i in range(samples):
        started = time.perf_counter()
        r.set("skyfleet:bench:rtt", str(i))
        r.get("skyfleet:bench:rtt")
        out.append((time.perf_counter() - started) * 1000)
    r.delete("skyfleet:bench:rtt")
    return out


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "lab.md")
    args = ap.parse_args()
    ups, downs, lag50, lag99, rtt50, procs, rss = [], [], [], [], [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as state_dir:
            started = time.perf_counter()
            state = up(LabConfig(program=ROOT, state_dir=Path(state_dir)))
            ups.append(time.perf_counter() - started)
            try:
                pids = marked_pids(state.state_dir)
                procs.append(len(pids))
                rss.append(rss_mib(pids))
                lag = sample_lag(state_dir, window_seconds=5, interval_ms=50)
                lag50.append(lag["p50_ms"])
                lag99.append(lag["p99_ms"])
                rtt50.append(statistics.median(local_round_trip_ms(state_dir, "aws-prod")))
            finally:
                started = time.perf_counter()
                down(state_dir)
                downs.append(time.perf_counter() - started)
    med = statistics.median
    lines = [
        "## Lab twin (`skyfleet lab`)",
        "",
        f"Measured {stamp()} on {machine()}; {args.runs} runs of the default twin (aws-prod,",
        "gcp-prod, onprem-prod behind edge-prod, replicas as planned).",
        "",
        "| what | median | range |",
        "|---|---|---|",
        f"| `lab up` (offline plans, build, start, every probe passing) | {med(ups):.1f} s | "
        f"{min(ups):.1f}–{max(ups):.1f} s |",
        f"| `lab down`, every process and namespace gone | {med(downs):.1f} s | "
        f"{min(downs):.1f}–{max(downs):.1f} s |",
        f"| processes | {med(procs):.0f} | {min(procs)}–{max(procs)} |",
        f"| RSS summed over them (shared pages counted in each) | {med(rss):.0f} MiB | "
        f"{min(rss):.0f}–{max(rss):.0f} MiB |",
        f"| cache replication lag inside a site, p50 | {med(lag50):.2f} ms | "
        f"{min(lag50):.2f}–{max(lag50):.2f} ms |",
        f"| cache replication lag inside a site, p99 | {med(lag99):.2f} ms | "
        f"{min(lag99):.2f}–{max(lag99):.2f} ms |",
        f"| baseline: write + read on aws-prod's primary itself, p50 | {med(rtt50):.2f} ms | "
        f"{min(rtt50):.2f}–{max(rtt50):.2f} ms |",
        f"| ratio lag p50 / local round trip p50 | {med(lag50) / med(rtt50):.1f}× | |",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
