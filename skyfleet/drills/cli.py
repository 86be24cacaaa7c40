"""``skyfleet drill``: run a failover drill against the lab or a deployed stack.

Exit codes: 0 passed (or skipped, with the reason printed), 1 ran but failed its targets or its
hypothesis, 2 the drill file or the command line is invalid, 3 refused (prod without --yes,
wrong target) or the target is unreachable.

``skyfleet drill rollback REPORT_DIR`` undoes what a drill killed outright left applied: 0 when
nothing is left open, 1 when a fault could not be undone, 3 when the ledger cannot be read or
its drill still runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from skyfleet.drills.experiment import Drill, DrillFileError, load_drill
from skyfleet.drills.recovery import forget as forget_fault
from skyfleet.drills.recovery import ledger_path, undo_open_faults
from skyfleet.drills.report import DrillReport
from skyfleet.drills.rollback import LedgerFileError
from skyfleet.drills.run import (
    DrillRefused,
    DrillSkipped,
    ensure_prod_confirmed,
    run_drill,
    unknown_lab_sites,
)
from skyfleet.drills.target import LabTarget, OutputsSource, StackTarget, Target, TargetError

app = typer.Typer(
    help="Failover drills: break things on purpose, under load, and measure.", no_args_is_help=True
)
console = Console(stderr=True)


@app.callback()
def drill() -> None:
    """Failover drills (Chaos Toolkit experiments) against the lab or a deployed stack."""


def plan_lines(drill: Drill, target: Target | None) -> list[str]:
    """One line per method activity and rollback: what it would do and what undoes it."""
    from skyfleet.drills.activity import ACTIONS

    lines: list[str] = []

    def describe(activity: dict) -> tuple[str, str | None]:
        provider = activity.get("provider", {})
        func, args = provider.get("func", ""), provider.get("arguments") or {}
        info = ACTIONS.get(func) if provider.get("module") == "skyfleet.drills.activity" else None
        if info is None:
            call = f"{provider.get('module', provider.get('type'))}.{func}({args})"
            return f"call {call}", None
        try:
            text = info.describe(target, args)
        except Exception as exc:  # outputs missing a field: still show the plan, and why
            text = f"{info.platform}: {func}({args}) [cannot resolve from outputs: {exc}]"
        return text, info.undo

    for i, activity in enumerate(drill.experiment.get("method", [])):
        text, undo = describe(activity)
        pause = (activity.get("pauses") or {}).get("after")
        lines.append(
            f"method[{i}] {activity.get('type')} {activity.get('name')!r}: {text}"
            + (f"; then wait {pause} s" if pause else "")
        )
        if undo:
            args = activity.get("provider", {}).get("arguments") or {}
            try:
                undo_text = ACTIONS[undo].describe(target, args)
            except Exception as exc:
                undo_text = f"{undo} [cannot resolve from outputs: {exc}]"
            lines.append(f"    rollback → {undo}: {undo_text}")
    for i, activity in enumerate(drill.experiment.get("rollbacks", [])):
        text, _ = describe(activity)
        lines.append(f"rollbacks[{i}] {activity.get('name')!r}: {text}")
    return lines


def print_report(report: DrillReport, report_dir: Path) -> None:
    m = report.measurements
    table = Table(title=f"{report.title} — {report.target}", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("result", "PASSED" if report.passed else "FAILED"),
        ("detection_seconds", str(m.detection_seconds)),
        ("recovery_seconds", str(m.recovery_seconds)),
        ("recovered_after_rollback_seconds", str(m.recovered_after_rollback_seconds)),
        ("failed / total requests", f"{m.failed_requests} / {m.total_requests}"),
        ("error_window_seconds", str(m.error_window_seconds)),
        ("sessions_lost / turns_lost", f"{m.sessions_lost} / {m.turns_lost}"),
        ("tasks_lost / duplicated / failed", f"{m.tasks_lost} / {m.tasks_duplicated} / {m.tasks_failed}"),
        (
            "latency p99 before/during/after (ms)",
            f"{m.latency_ms.before.p99} / {m.latency_ms.during.p99} / {m.latency_ms.after.p99}",
        ),
        ("replication lag p50/p99 (ms)", f"{m.replication_lag_ms.p50} / {m.replication_lag_ms.p99}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    for t in report.targets:
        table.add_row(f"target {t.metric} ≤ {t.limit:g}", f"{t.value} {'ok' if t.met else 'MISSED'}")
    console.print(table)
    if report.aborted:
        console.print(f"[red]aborted:[/red] {escape(str(report.aborted))}")
    for note in report.notes:
        console.print(f"note: {note}")
    console.print(f"report: {report_dir}/report.md, report.json, timeline.png")


@app.command("run")
def run_command(
    file: Annotated[Path, typer.Argument(help="drill file (YAML/JSON Chaos Toolkit experiment)")],
    target: Annotated[str | None, typer.Option("--target", help="'lab' for the local lab")] = None,
    stack: Annotated[str | None, typer.Option("--stack", help="a deployed stack, by its Pulumi name")] = None,
    lab_dir: Annotated[Path, typer.Option("--lab-dir", help="the lab's state folder")] = Path(
        ".skyfleet-lab"
    ),
    outputs: Annotated[Path | None, typer.Option("--outputs", help="the stack's outputs as JSON")] = None,
    plan_dir: Annotated[
        Path | None, typer.Option("--plan-dir", help="offline plan folder DIR/<stack>.json")
    ] = None,
    load_url: Annotated[
        str | None, typer.Option("--load-url", help="loopback tunnel to a stack's front door")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print every action and rollback, do nothing")
    ] = False,
    report: Annotated[Path | None, typer.Option("--report", help="report folder")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="confirm a drill against a prod stack")] = False,
) -> None:
    """Run a drill: steady state, fault under load, rollbacks, measurements, report."""
    if (target is None) == (stack is None):
        console.print("[red]error:[/red] give exactly one of --target lab or --stack NAME")
        raise typer.Exit(2)
    if target is not None and target != "lab":
        console.print(
            f"[red]error:[/red] --target: only 'lab' is supported (got {target!r}); use --stack NAME"
        )
        raise typer.Exit(2)
    try:
        drill = load_drill(file)
    except DrillFileError as exc:
        console.print(f"[red]invalid drill file[/red]\n{escape(str(exc))}")
        raise typer.Exit(2) from None
    chosen: Target = (
        LabTarget(state_dir=str(lab_dir))
        if target == "lab"
        else StackTarget(
            stack=str(stack), source=OutputsSource(outputs_file=outputs, plan_dir=plan_dir), load_url=load_url
        )
    )
    if dry_run:
        _dry_run(drill, chosen, yes)
        return
    report_dir = report or Path("drill-reports") / f"{drill.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        result = run_drill(
            drill, chosen, report_dir, yes=yes, say=lambda s: console.print(f"[dim]·[/dim] {s}")
        )
    except DrillSkipped as exc:
        console.print(f"[yellow]SKIPPED[/yellow] {escape(str(exc))}")
        return
    except (DrillRefused, TargetError, LedgerFileError) as exc:
        console.print(f"[red]refused:[/red] {escape(str(exc))}")
        raise typer.Exit(3) from None
    print_report(result, report_dir)
    raise typer.Exit(0 if result.passed else 1)


def _dry_run(drill: Drill, target: Target, yes: bool) -> None:
    """Print the plan; reads stack outputs from files only, never the cloud, needs no credentials."""
    console.print(f"[bold]dry run[/bold] of {drill.path} ({drill.document.title}) against {target.label}")
    prod_note = ""
    if isinstance(target, LabTarget):
        try:
            sites = target.describe()["sites"]
        except Exception:  # the lab is not up: a real run starts nothing either
            prod_note = "NOTE: the lab is not up, so its site names were not checked"
        else:
            unknown = unknown_lab_sites(drill, sites)
            if unknown:
                console.print(f"[red]refused:[/red] {escape('; '.join(unknown))}")
                raise typer.Exit(3)
    if isinstance(target, StackTarget):
        try:
            ensure_prod_confirmed(target, yes)
        except DrillRefused as exc:
            prod_note = f"NOTE: a real run would be refused: {exc}"
        except TargetError as exc:
            prod_note = f"NOTE: {exc}"
    for line in plan_lines(drill, target):
        typer.echo(line)
    spec = drill.skyfleet
    typer.echo(
        f"load: {spec.load.rate:g} req/s, warm-up {spec.load.warmup_seconds:g} s, settle "
        f"{spec.load.settle_seconds:g} s, bounded at {spec.load.max_seconds:g} s"
    )
    typer.echo(
        f"steady state: after the method and after the rollbacks, wait until it holds (at most "
        f"{spec.recovery_timeout_seconds:g} s each)"
    )
    typer.echo("targets: " + ", ".join(f"{k} ≤ {v:g}" for k, v in sorted(spec.targets.items())))
    if prod_note:
        typer.echo(prod_note)
    typer.echo("dry run: nothing was done")


@app.command("rollback")
def rollback_command(
    report: Annotated[Path, typer.Argument(help="a drill's report folder (or its faults.jsonl)")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="say what would be undone, undo nothing")
    ] = False,
    forget: Annotated[
        int | None,
        typer.Option("--forget", help="close open fault N without undoing it (put right by hand)"),
    ] = None,
) -> None:
    """Undo the faults a drill left applied when it was killed outright (SIGKILL, a machine that crashed)."""
    try:
        if forget is not None:
            fault = forget_fault(report, forget)
            console.print(f"forgotten: fault {forget} ({fault.action}, {fault.key}), not undone")
            return
        with console.status(f"undoing the open faults of {ledger_path(report)}"):
            results = undo_open_faults(
                report, dry_run=dry_run, say=lambda s: console.print(f"[dim]·[/dim] {s}")
            )
    except LedgerFileError as exc:
        console.print(f"[red]refused:[/red] {escape(str(exc))}")
        raise typer.Exit(3) from None
    if not results:
        console.print(f"nothing to undo: {ledger_path(report)} has no open fault")
        return
    table = Table(title=f"open faults of {ledger_path(report)}, newest first")
    for column in ("#", "fault", "key", "applied", "outcome", "how"):
        table.add_column(column)
    colour = {"undone": "green", "would undo": "cyan", "failed": "red", "cannot": "red"}
    for r in results:
        table.add_row(
            str(r.fault.entry),
            r.fault.action,
            r.fault.key,
            escape(r.fault.description or "(killed while applying)"),
            f"[{colour[r.status]}]{r.status}[/{colour[r.status]}]",
            escape(r.detail),
        )
    console.print(table)
    if any(r.status in ("failed", "cannot") for r in results):
        raise typer.Exit(1)
