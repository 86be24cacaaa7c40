"""Run every shipped lab drill on a fresh twin of the shipped prod stacks, N rounds, and write
the measured figures into docs/drills.md (between the ``measured`` markers), so the figures
there come from a script run. Needs root (the twin runs every site and pod in namespaces).

    .venv/bin/python benchmarks/run_drills.py [--rounds 2] [--max-replicas N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine, stamp
from rich.console import Console

from skyfleet.drills.experiment import load_drill
from skyfleet.drills.run import run_drill
from skyfleet.drills.target import LabTarget
from skyfleet.lab.config import LabConfig
from skyfleet.lab.lifecycle import down, up
from skyfleet.lab.state import LabState
from skyfleet.lab.status import lab_status

ROOT = Path(__file__).resolve().parents[1]
# By the edge stack the twin runs behind: drills of failover, then of an active-active edge.
DRILLS = {
    "edge-prod": [
        "site-loss",
        "site-loss-fleet-client",
        "failback",
        "replica-loss",
        "cache-primary-loss",
        "broker-outage",
        "partition",
        "site-latency",
    ],
    "edge-active": ["weighted-routing"],
    # A failover drill again behind multivalue answers: its clients are per-user, so each
    # answer's order spreads them over the sites and the lost site holds a share of them.
    "edge-multivalue": ["site-loss-multivalue", "partition-multivalue", "failback"],
}
DEFAULT_EDGE = "edge-prod"  # rows of drills behind another edge name it
WAIT_HEALTHY_SECONDS = 180
BEGIN, END = "<!-- measured:begin -->", "<!-- measured:end -->"


def wait_healthy(state_dir: str, seconds: float = WAIT_HEALTHY_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if lab_status(state_dir).get("healthy"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the lab at {state_dir} did not become healthy in {seconds} s")


def row(name: str, report: Any) -> str:
    r = report.to_json()
    lat = r.get("latency_ms") or {}

    def p(phase: str) -> str:
        ph = lat.get(phase) or {}
        p50, p99 = ph.get("p50"), ph.get("p99")
        return "—" if p50 is None or p99 is None else f"{p50:.0f} / {p99:.0f}"

    lag = r.get("replication_lag_ms") or {}
    missed = ", ".join(f"{t.metric}={t.value} (≤ {t.limit})" for t in report.targets if not t.met) or "—"
    det = r.get("detection_seconds")
    return (
        f"| {name} | {'yes' if r['passed'] else '**no**'} | {det if det is not None else '—'} | "
        f"{r.get('recovery_seconds')} | {r.get('failed_requests')} / {r.get('total_requests')} | "
        f"{p('before')} | {p('during')} | {p('after')} | {r.get('sessions_lost')} | "
        f"{r.get('tasks_lost')} | {r.get('tasks_duplicated')} | {r.get('tasks_failed')} | "
        f"{lag.get('p50', '—')} / {lag.get('p99', '—')} | {missed} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-replicas", type=int, default=None)
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "drills.md")
    args = ap.parse_args()
    console = Console()
    header = (
        "| drill | passed | detection s | recovery s | failed / total | latency p50/p99 ms before "
        "| during | after | sessions lost | tasks lost | tasks run twice | tasks failed | lag p50/p99 ms "
        "| missed |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    sections = []
    described: LabState | None = None
    for n in range(1, args.rounds + 1):
        rows = []
        for edge, names in DRILLS.items():
            with tempfile.TemporaryDirectory() as state_dir, tempfile.TemporaryDirectory() as reports:
                state = up(
                    LabConfig(
                        program=ROOT, state_dir=Path(state_dir), max_replicas=args.max_replicas, edge=edge
                    ),
                    console=console,
                )
                described = described or state
                try:
                    for name in names:
                        wait_healthy(state_dir)
                        drill = load_drill(ROOT / "drills" / f"{name}.yaml")
                        console.print(f"round {n}: {name} (behind {edge})")
                        report = run_drill(drill, LabTarget(state_dir), Path(reports) / name)
                        label = name if edge == DEFAULT_EDGE else f"{name} ({edge})"
                        rows.append(row(label, report))
                finally:
                    down(state_dir)
        sections.append(f"**Round {n}** ({stamp()})\n\n{header}\n" + "\n".join(rows) + "\n")
    assert described is not None
    state = described
    capped = ", ".join(f"{k} {v[1]} of {v[0]}" for k, v in state.capped.items()) or "none"
    body = (
        f"Measured by `benchmarks/run_drills.py --rounds {args.rounds}` on {machine()}. Each round: a\n"
        f"fresh twin of {', '.join(s.stack for s in state.sites.values())} behind "
        f"{state.edge.stack if state.edge else 'no edge'} (replicas capped: {capped}), then\n"
        "every shipped lab drill of a failover edge once, then a fresh twin behind edge-active for the\n"
        "weighted-routing drill, then one behind edge-multivalue for site-loss-multivalue,\n"
        "partition-multivalue and failback\n"
        "(labelled with its edge); each drill with its own load (30 req/s open loop from 32 clients:\n"
        "sessions, turns, tasks) through the global name; site-loss-fleet-client's clients are\n"
        "the app's fleet client (agent_app.client), which also knows each site's regional name.\n\n"
        + "\n".join(sections)
    )
    text = args.doc.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        args.doc.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")
    print(body)


if __name__ == "__main__":
    main()
