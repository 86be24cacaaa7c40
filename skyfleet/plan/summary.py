"""The human summary of a plan: what was planned, by type and by capability."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from infra.capabilities import EVIDENCE, matching
from skyfleet.plan.runner import Plan


def capability_lines(plan: Plan) -> list[tuple[str, bool, str]]:
    """(capability, met, evidence) for a Skyfleet site stack; empty for anything else."""
    target = str(plan.config.get("skyfleet:target", ""))
    if target not in ("aws", "gcp", "onprem"):
        return []
    lines = []
    for capability, per_target in EVIDENCE.items():
        found, missing = Counter[str](), []
        for evidence in per_target.get(target, ()):
            matched = matching(evidence, target, plan.resources)
            if not matched:
                missing.append(f"{evidence.type.split(':')[-1]} {evidence.name!r} in {evidence.component}")
            found.update({r.urn: r.type.split(":")[-1] for r in matched}.values())
        shown = ", ".join(f"{n}× {t}" for t, n in found.items())
        lines.append((capability, not missing, f"missing {', '.join(missing)}" if missing else shown))
    return lines


def print_summary(plan: Plan, console: Console, seconds: float | None = None) -> None:
    custom = [r for r in plan.resources if r.custom]
    components = [r for r in plan.resources if not r.custom]
    timing = f" in {seconds:.2f} s" if seconds is not None else ""
    mode = "preview" if plan.preview else "plan"
    console.print(
        f"[bold]{plan.stack}[/]: {mode} of {len(custom)} resources in {len(components)} components{timing}"
    )
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("count", justify="right")
    table.add_column("type")
    for typ, n in sorted(Counter(r.type for r in custom).items()):
        table.add_row(str(n), typ)
    console.print(table)
    for capability, met, evidence in capability_lines(plan):
        mark = "[green]✓[/]" if met else "[red]✗[/]"
        console.print(f"  {mark} {capability:<14} {evidence}")
    for u in plan.unexpanded:
        console.print(f"  [yellow]not expanded[/] {u.type} {u.name!r}: {u.reason}", highlight=False)
    reads = sum(r.read for r in plan.resources)
    if reads:
        console.print(f"  [dim]{reads} read resource(s) (Resource.get): looked up, not managed[/]")
