"""Offline plan time for every shipped stack, cold (a fresh process, imports included).

Baseline in the same run: a process that only imports the provider SDK modules the plan uses
(the SDKs load their submodules lazily, and building their classes is a cost any Pulumi Python
program pays before it registers a resource). The ratio says what planning adds on that floor.

    .venv/bin/python benchmarks/bench_plan.py [--runs 5] [--out docs/bench/plan.md]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from pathlib import Path

from _common import PY, describe, machine, stamp, time_command

ROOT = Path(__file__).resolve().parents[1]


def used_sdk_modules() -> list[str]:
    """The provider SDK modules a full plan really loads (not the SDKs' lazy placeholders)."""
    probe = (
        "import sys; from pathlib import Path; from skyfleet.plan.cli import plan_all, site_stacks_first; "
        "from skyfleet.plan import Project; plan_all(Path('.'), site_stacks_first(Project.load(Path('.')))); "
        "print(' '.join(sorted({m for m, mod in sys.modules.items() "
        "if m.startswith(('pulumi_aws', 'pulumi_gcp', 'pulumi_kubernetes', 'pulumi_random')) "
        "and type(mod).__name__ != '_LazyModule' and '._' not in m})))"
    )
    out = subprocess.run([PY, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.split()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "bench" / "plan.md")
    args = ap.parse_args()
    modules = used_sdk_modules()
    imports = time_command([PY, "-c", "import " + ", ".join(modules)], args.runs)
    with tempfile.TemporaryDirectory() as out:
        plan_all = time_command(
            [PY, "-m", "skyfleet.cli", "plan", "--all", "--out", out], args.runs, cwd=ROOT
        )
        stacks = sorted(p.stem for p in Path(out).glob("*.json"))
    per_stack = {
        s: time_command([PY, "-m", "skyfleet.cli", "plan", "--stack", s], max(1, args.runs // 2), cwd=ROOT)
        for s in stacks
    }
    ratio = statistics.median(plan_all) / statistics.median(imports)
    lines = [
        "## Offline plan (`skyfleet plan`)",
        "",
        f"Measured {stamp()} on {machine()}.",
        "",
        "| what | time |",
        "|---|---|",
        f"| `skyfleet plan --all` ({len(stacks)} stacks, cold process) | {describe(plan_all)} |",
        f"| baseline: importing the {len(modules)} SDK modules the plan uses | {describe(imports)} |",
        f"| ratio plan-all / import floor | {ratio:.2f}× |",
        *(f"| `skyfleet plan --stack {s}` (cold) | {describe(t)} |" for s, t in per_stack.items()),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
