"""Benchmark the offline gate against checkov, and against a baseline pack (a script, not a
timed test).

1. Time `skyfleet check --all` cold (a fresh process: imports, planning under mocks, one pack
   process, every Analyze/AnalyzeStack call) over every shipped stack that plans, and the time
   spent in the pack (the report's own figure: pack start, every RPC).
2. With --baseline-pack DIR (e.g. an older pack exported with `git archive`), time the same
   command with that pack, alternating runs with the current pack so a change in the machine's
   speed falls on both; report the ratio.
3. Render the onprem plan's Kubernetes objects to YAML and time
   `checkov -d DIR --framework kubernetes` on them, alternating with the gate over the onprem
   stack alone (the same objects). checkov pins versions that conflict with ours, so it lives in
   its own venv (default /tmp/checkov-venv; created here if missing).
4. Write the figures and their ratios to docs/bench/check.md with the date and the machine.

Run: .venv/bin/python benchmarks/bench_check.py [--checkov-venv DIR] [--runs N] [--baseline-pack DIR
     --baseline-label TEXT]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
SKYFLEET = str(REPO / ".venv" / "bin" / "skyfleet")
console = Console(stderr=True)


def _timed(cmd: list[str], **kwargs: object) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - started, proc


def plannable_stacks() -> tuple[list[str], list[str]]:
    """(stacks that plan, every shipped stack)."""
    from skyfleet.plan import PlanError, plan_stack
    from skyfleet.plan.cli import site_stacks_first
    from skyfleet.plan.runner import Project

    every = site_stacks_first(Project.load(REPO))
    ok = []
    for stack in every:
        try:
            plan_stack(REPO, stack)
            ok.append(stack)
        except PlanError as exc:
            console.print(f"[yellow]skip {stack}: {str(exc).splitlines()[0]}")
    return ok, every


class Gate:
    """`skyfleet check` over the stacks that plan, with one pack; records wall and pack time."""

    def __init__(self, label: str, pack: Path, stacks: list[str], every: list[str]) -> None:
        self.label, self.pack, self.stacks, self.every = label, pack, stacks, every
        self.wall: list[float] = []
        self.in_pack: list[float] = []
        self.exit = 0
        self.rules = 0

    def _one(self, args: list[str]) -> tuple[float, float]:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            seconds, proc = _timed(
                [SKYFLEET, "check", *args, "--policy-pack", str(self.pack), "--json", out.name], cwd=REPO
            )
            self.exit = max(self.exit, proc.returncode)
            report = json.loads(Path(out.name).read_text() or "{}") if proc.returncode in (0, 1) else {}
        self.rules = len(report.get("rules", [])) or self.rules
        return seconds, float(report.get("seconds", 0.0))

    def run(self) -> None:
        if len(self.stacks) == 1:
            wall, pack = self._one(["--stack", self.stacks[0]])
        elif self.stacks == self.every:
            wall, pack = self._one(["--all"])
        else:  # some shipped stacks do not plan: time the ones that do, one process each, summed
            pairs = [self._one(["--stack", s]) for s in self.stacks]
            wall, pack = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        self.wall.append(wall)
        self.in_pack.append(pack)
        console.print(f"{self.label}: {wall:.2f} s, {pack:.2f} s in the pack (exit {self.exit})")


def alternate(runs: int, *steps: Callable[[], None]) -> None:
    """Run the steps in turn, `runs` times, the first step first on odd rounds."""
    for i in range(runs):
        for step in steps if i % 2 == 0 else reversed(steps):
            step()


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


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkov-venv", type=Path, default=Path("/tmp/checkov-venv"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-pack", type=Path, help="a previous pack to compare with, same run")
    parser.add_argument("--baseline-label", help="how the report names the baseline pack (default: its path)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "check.md")
    args = parser.parse_args()

    from skyfleet.check.runner import DEFAULT_PACK

    stacks, every = plannable_stacks()
    current = Gate("gate, all stacks", DEFAULT_PACK, stacks, every)
    steps: list[Callable[[], None]] = [current.run]
    baseline = None
    if args.baseline_pack:
        baseline = Gate("baseline pack, all stacks", args.baseline_pack, stacks, every)
        steps.append(baseline.run)
    alternate(args.runs, *steps)

    # Like for like with checkov: the gate over the onprem stack alone (its Kubernetes objects).
    onprem = Gate("gate, onprem-prod", DEFAULT_PACK, ["onprem-prod"], ["onprem-prod"])
    checkov = ensure_checkov(args.checkov_venv)
    version = subprocess.run([str(checkov), "--version"], capture_output=True, text=True).stdout.strip()
    ck_times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        manifests = render_kubernetes("onprem-prod", Path(tmp))

        def run_checkov() -> None:
            seconds, proc = _timed(
                [str(checkov), "-d", tmp, "--framework", "kubernetes", "--quiet", "--compact"],
                env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
            )
            ck_times.append(seconds)
            console.print(f"checkov: {seconds:.2f} s (exit {proc.returncode})")

        alternate(args.runs, onprem.run, run_checkov)

    g, c, o = _median(current.wall), _median(ck_times), _median(onprem.wall)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    from policies.compliance.rules import ALL_RULES

    pack_now = _median(current.in_pack)
    rows = [
        f"| rules in the pack | {len(ALL_RULES)} ({sum(r.kind == 'resource' for r in ALL_RULES)} resource, "
        f"{sum(r.kind == 'stack' for r in ALL_RULES)} stack) |",
        f"| stacks gated | {len(stacks)} of {len(every)} shipped ({', '.join(stacks)}) |",
        f"| gate, cold, all those stacks (plan under mocks + pack + every RPC) | {g:.2f} s (runs: "
        f"{_runs(current.wall)}; exit {current.exit}) |",
        f"| of which in the pack (start, every Analyze/AnalyzeStack) | {pack_now:.2f} s "
        f"(runs: {_runs(current.in_pack)}) |",
    ]
    if baseline is not None:
        b, pack_then = _median(baseline.wall), _median(baseline.in_pack)
        label = args.baseline_label or args.baseline_pack
        rows += [
            f"| baseline pack {label} ({baseline.rules} rules), same command | {b:.2f} s "
            f"(runs: {_runs(baseline.wall)}; exit {baseline.exit}) |",
            f"| of which in the baseline pack | {pack_then:.2f} s (runs: {_runs(baseline.in_pack)}) |",
            f"| gate / baseline (all stacks, wall) | {g / b:.2f}x |",
            f"| gate / baseline (time in the pack) | {pack_now / pack_then:.2f}x |",
        ]
    rows += [
        f"| checkov {version}, `--framework kubernetes`, onprem plan's {manifests} manifests | {c:.2f} s "
        f"(runs: {_runs(ck_times)}) |",
        f"| gate, cold, onprem-prod alone (the same Kubernetes objects checkov scans) | {o:.2f} s (runs: "
        f"{_runs(onprem.wall)}; {_median(onprem.in_pack):.2f} s in the pack) |",
        f"| checkov / gate (onprem-prod alone, like for like) | {c / o:.2f}x |",
    ]
    report = (
        f"""# `skyfleet check` benchmark

Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}: {os.cpu_count()} cores ({cpu}),
Python {platform.python_version()}, shared with other jobs (load average at the end:
{" ".join(f"{x:.2f}" for x in os.getloadavg())}). Median of {args.runs} cold runs, the compared
commands alternating (`benchmarks/bench_check.py`).

| what | figure |
|---|---|
"""
        + "\n".join(rows)
        + """

The all-stacks gate plans the Pulumi programs (AWS, GCP and Kubernetes) and checks them all; most
of its wall time is the provider SDKs' import and the planning (see the plan benchmark), not the
policies. The pack offers each resource only to the rules for its type (`rules/_server.py`), so its
own time grows with the resources, not with rules times resources.
"""
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
