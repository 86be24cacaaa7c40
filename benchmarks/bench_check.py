"""Benchmark the offline gate against checkov (a script, not a timed test).

1. Time `skyfleet check --all` cold (a fresh process: imports, planning under mocks, one pack
   process, every Analyze/AnalyzeStack call) over every shipped stack that plans.
2. Render the onprem plan's Kubernetes objects to YAML and time
   `checkov -d DIR --framework kubernetes` on them. checkov pins versions that conflict with
   ours, so it lives in its own venv (default /tmp/checkov-venv; created here if missing).
3. Write both figures and their ratio to docs/bench/check.md with the date and the machine.

Run: .venv/bin/python benchmarks/bench_check.py [--checkov-venv DIR] [--runs N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
console = Console(stderr=True)


def _timed(cmd: list[str], **kwargs: object) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - started, proc


def plannable_stacks() -> list[str]:
    from skyfleet.plan import PlanError, plan_stack
    from skyfleet.plan.cli import site_stacks_first
    from skyfleet.plan.runner import Project

    ok = []
    for stack in site_stacks_first(Project.load(REPO)):
        try:
            plan_stack(REPO, stack)
            ok.append(stack)
        except PlanError as exc:
            console.print(f"[yellow]skip {stack}: {str(exc).splitlines()[0]}")
    return ok


def gate_seconds(stacks: list[str], runs: int) -> tuple[list[float], int]:
    exe = str(REPO / ".venv" / "bin" / "skyfleet")
    cmd = [exe, "check", "--all"] if len(stacks) == len(plannable_all()) else None
    times, code = [], 0
    proc: subprocess.CompletedProcess[str] | None = None
    for i in range(runs):
        if cmd is not None:
            seconds, proc = _timed(cmd, cwd=REPO)
        else:  # some shipped stacks do not plan: time the ones that do, one process each, summed
            seconds, code = 0.0, 0
            for stack in stacks:
                s, proc = _timed([exe, "check", "--stack", stack], cwd=REPO)
                seconds += s
                code = max(code, proc.returncode)
        assert proc is not None
        code = max(code, proc.returncode)
        times.append(seconds)
        console.print(f"gate run {i + 1}/{runs}: {seconds:.2f} s (exit {proc.returncode})")
    return times, code


_ALL: list[str] | None = None


def plannable_all() -> list[str]:
    global _ALL
    if _ALL is None:
        from skyfleet.plan.cli import site_stacks_first
        from skyfleet.plan.runner import Project

        _ALL = site_stacks_first(Project.load(REPO))
    return _ALL


def render_kubernetes(stack: str, out: Path) -> int:
    """Write every Kubernetes object of the plan as a manifest (apiVersion/kind from the token)."""
    from skyfleet.plan import plan_stack

    count = 0
    for r in plan_stack(REPO, stack).resources:
        if not r.type.startswith("kubernetes:") or r.type.startswith("kubernetes:yaml") or not r.custom:
            continue
        group_version, kind = r.type.split(":", 1)[1].rsplit(":", 1)
        group, version = group_version.split("/")
        api_version = version if group == "core" else f"{group}/{version}"
        body = {k: v for k, v in r.inputs.items() if k not in ("apiVersion", "kind")}
        (out / f"{count:03d}-{kind.lower()}-{r.name}.yaml").write_text(
            yaml.safe_dump({"apiVersion": api_version, "kind": kind, **body}, sort_keys=False)
        )
        count += 1
    return count


def ensure_checkov(venv: Path) -> Path:
    exe = venv / "bin" / "checkov"
    if not exe.exists():
        console.print(f"installing checkov into {venv} (separate venv: it pins conflicting versions)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "checkov"], check=True)
    return exe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkov-venv", type=Path, default=Path("/tmp/checkov-venv"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "check.md")
    args = parser.parse_args()

    stacks = plannable_stacks()
    gate, gate_exit = gate_seconds(stacks, args.runs)
    # Like for like with checkov: the gate over the onprem stack alone (its Kubernetes objects).
    exe = str(REPO / ".venv" / "bin" / "skyfleet")
    onprem = [_timed([exe, "check", "--stack", "onprem-prod"], cwd=REPO)[0] for _ in range(args.runs)]
    checkov = ensure_checkov(args.checkov_venv)
    version = subprocess.run([str(checkov), "--version"], capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        manifests = render_kubernetes("onprem-prod", Path(tmp))
        ck_times = []
        for i in range(args.runs):
            seconds, proc = _timed(
                [str(checkov), "-d", tmp, "--framework", "kubernetes", "--quiet", "--compact"],
                env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
            )
            ck_times.append(seconds)
            console.print(f"checkov run {i + 1}/{args.runs}: {seconds:.2f} s (exit {proc.returncode})")
    g, c, o = statistics.median(gate), statistics.median(ck_times), statistics.median(onprem)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    from policies.compliance.rules import ALL_RULES

    report = f"""# `skyfleet check` benchmark

Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}: {os.cpu_count()} cores ({cpu}),
Python {platform.python_version()}, shared with other jobs. Median of {args.runs} cold runs
(`benchmarks/bench_check.py`).

| what | figure |
|---|---|
| rules in the pack | {len(ALL_RULES)} ({sum(r.kind == "resource" for r in ALL_RULES)} resource, \
{sum(r.kind == "stack" for r in ALL_RULES)} stack) |
| stacks gated | {len(stacks)} of {len(plannable_all())} shipped ({", ".join(stacks)}) |
| gate, cold, all those stacks (plan under mocks + pack + every RPC) | {g:.2f} s (runs: \
{", ".join(f"{t:.2f}" for t in gate)}; exit {gate_exit}) |
| checkov {version}, `--framework kubernetes`, onprem plan's {manifests} manifests | {c:.2f} s (runs: \
{", ".join(f"{t:.2f}" for t in ck_times)}) |
| checkov / gate (all stacks) | {c / g:.1f}x |
| gate, cold, onprem-prod alone (the same Kubernetes objects checkov scans) | {o:.2f} s (runs: \
{", ".join(f"{t:.2f}" for t in onprem)}) |
| checkov / gate (onprem-prod alone, like for like) | {c / o:.1f}x |

The all-stacks gate covers more work than checkov: it plans the Pulumi programs (AWS, GCP and
Kubernetes) and checks them all, while checkov scans only the onprem Kubernetes manifests. Most
of the gate's time is the provider SDKs' import cost (see the plan benchmark), not the policies.
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
