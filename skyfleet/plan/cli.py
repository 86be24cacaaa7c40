"""``skyfleet plan``: the offline plan of one stack or of every shipped stack."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from skyfleet.lab.route53 import EdgePlanError, plan_resources
from skyfleet.lab.route53_changes import replay
from skyfleet.outputs import unwritable_folder
from skyfleet.plan.runner import Plan, PlanError, Project, plan_stack
from skyfleet.plan.summary import print_summary

console = Console()
err = Console(stderr=True)


def plan_all(
    program_dir: Path,
    stacks: list[str],
    *,
    preview: bool = False,
    on_stack: Any = None,
    references: Path | None = None,
) -> list[tuple[Plan, float]]:
    """Plan stacks in order; outputs of earlier plans answer later StackReferences."""
    known: dict[str, dict[str, Any]] = {}
    results = []
    for stack in stacks:
        if on_stack:
            on_stack(stack)
        started = time.perf_counter()
        plan = plan_stack(program_dir, stack, preview=preview, known_outputs=known, plans_dir=references)
        results.append((plan, time.perf_counter() - started))
        if not preview:
            known[stack] = plan.outputs
    return results


def site_stacks_first(project: Project) -> list[str]:
    """Every stack of the project, sites before the edge that references them."""
    return sorted(project.stacks(), key=lambda s: (s.startswith("edge"), s))


def _deployed_resources(path: Path) -> list[dict[str, Any]]:
    """The resources of a plan JSON (``--deployed``), or exit 2 naming what is wrong with it."""
    try:
        return plan_resources(path)
    except EdgePlanError as exc:
        err.print(f"[red]error:[/] --deployed {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def write_plan(plan: Plan, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{plan.stack}.json"
    path.write_text(json.dumps(plan.to_json(), indent=2, sort_keys=False, default=str) + "\n")
    return path


def plan(
    stack: Annotated[str | None, typer.Option("--stack", "-s", help="stack to plan")] = None,
    all_stacks: Annotated[bool, typer.Option("--all", help="plan every stack in the project")] = False,
    out: Annotated[Path | None, typer.Option(help="write DIR/<stack>.json")] = None,
    preview: Annotated[bool, typer.Option(help="leave computed outputs unknown, as a preview does")] = False,
    program: Annotated[Path, typer.Option(help="the Pulumi project folder")] = Path("."),
    references: Annotated[
        Path | None, typer.Option(help="answer StackReferences from DIR/<stack>.json (plans or outputs)")
    ] = None,
    deployed: Annotated[
        Path | None,
        typer.Option(
            help="the deployed stack's plan JSON (an earlier --out): replay the update from it "
            "to this plan on Route 53's rules, and fail at a step Route 53 would refuse"
        ),
    ] = None,
) -> None:
    """Run the Pulumi program offline under the SDK's mocks: no CLI, no credentials."""
    if bool(stack) == all_stacks:
        err.print("[red]error:[/] give exactly one of --stack NAME or --all")
        raise typer.Exit(2)
    if deployed is not None and all_stacks:
        err.print("[red]error:[/] --deployed is the plan of one stack: give it with --stack NAME")
        raise typer.Exit(2)
    before = _deployed_resources(deployed) if deployed is not None else None
    if out is not None and (problem := unwritable_folder("--out", out)):
        err.print(f"[red]error:[/] {escape(str(problem))}", highlight=False)
        raise typer.Exit(2)
    try:
        project = Project.load(program)
        stacks = site_stacks_first(project) if all_stacks else [str(stack)]
        if all_stacks and not stacks:
            raise PlanError(f"{project.stack_config_dir}: no Pulumi.<stack>.yaml files")
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress:
            task = progress.add_task("planning", total=len(stacks))

            def on_stack(name: str) -> None:
                progress.update(task, description=f"planning {name}", advance=0)

            results = plan_all(program, stacks, preview=preview, on_stack=on_stack, references=references)
    except PlanError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for result, seconds in results:
        print_summary(result, console, seconds)
        if out:
            console.print(f"  wrote {write_plan(result, out)}")
        if before is not None:
            try:
                steps = replay(before, result.resources)
            except EdgePlanError as exc:
                err.print(f"[red]error:[/] the update from {escape(str(deployed))}: {escape(str(exc))}",
                          highlight=False, soft_wrap=True)  # fmt: skip
                raise typer.Exit(1) from None
            console.print(f"  update from {deployed}: Route 53 accepts each of its {len(steps)} step(s)")
    total = sum(s for _, s in results)
    console.print(f"[bold]{len(results)} stack(s) planned in {total:.2f} s[/]")
