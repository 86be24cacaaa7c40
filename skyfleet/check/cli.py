"""``skyfleet check``: plan stacks under mocks and gate them on the policy pack, offline.

Exit codes: 0 no mandatory violation; 1 mandatory violations; 2 usage, config or pack error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from skyfleet.check.analyzer import PackError, PolicyPackProcess
from skyfleet.check.catalogue import markdown_catalogue
from skyfleet.check.model import Report, ToolError
from skyfleet.check.policy_config import PolicyConfigError, pack_config_document, read_settings
from skyfleet.check.reports import print_terminal, write_json, write_junit, write_sarif
from skyfleet.check.runner import DEFAULT_PACK, run
from skyfleet.outputs import unwritable_files
from skyfleet.plan import Plan, PlanError, plan_stack
from skyfleet.plan.cli import plan_all, site_stacks_first
from skyfleet.plan.runner import Project

console = Console()
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _plans(
    program: Path,
    stack: str | None,
    all_stacks: bool,
    preview: bool,
    progress: Progress,
    references: Path | None = None,
) -> list[Plan]:
    project = Project.load(program)
    stacks = site_stacks_first(project) if all_stacks else [str(stack)]
    if not stacks:
        raise PlanError(f"{project.stack_config_dir}: no Pulumi.<stack>.yaml files")
    task = progress.add_task("planning", total=len(stacks))

    def on_stack(name: str) -> None:
        progress.update(task, description=f"planning {name} under mocks", advance=1)

    if all_stacks:
        plans = plan_all(program, stacks, preview=preview, on_stack=on_stack, references=references)
        return [p for p, _ in plans]
    on_stack(stacks[0])
    return [plan_stack(program, stacks[0], preview=preview, plans_dir=references)]


def check(
    stack: Annotated[str | None, typer.Option("--stack", "-s", help="stack to check")] = None,
    all_stacks: Annotated[bool, typer.Option("--all", help="check every stack of the project")] = False,
    program: Annotated[Path, typer.Option(help="the Pulumi Python project folder (any project)")] = Path("."),
    policy_pack: Annotated[Path, typer.Option("--policy-pack", help="policy pack folder")] = DEFAULT_PACK,
    preview: Annotated[bool, typer.Option(help="leave computed values unknown, as a preview does")] = False,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the JSON report")] = None,
    sarif_out: Annotated[Path | None, typer.Option("--sarif", help="write a SARIF 2.1.0 report")] = None,
    junit_out: Annotated[Path | None, typer.Option("--junit", help="write a JUnit XML report")] = None,
    emit_policy_config: Annotated[
        Path | None,
        typer.Option(help="write the stack's --policy-pack-config file for `pulumi preview` and stop"),
    ] = None,
    list_rules: Annotated[bool, typer.Option("--list-rules", help="print the pack's rule catalogue")] = False,
    references: Annotated[
        Path | None, typer.Option(help="answer StackReferences from DIR/<stack>.json (plans or outputs)")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="seconds the pack may take to start or to answer a call")
    ] = 60.0,
) -> None:
    """Gate stacks on the compliance policy pack offline: no Pulumi CLI, no credentials."""
    problems = unwritable_files(
        {
            "--json": json_out,
            "--sarif": sarif_out,
            "--junit": junit_out,
            "--emit-policy-config": emit_policy_config,
        }
    )
    if problems:
        raise _fail("; ".join(problems))
    if list_rules:
        try:
            with PolicyPackProcess(policy_pack, timeout=timeout) as pack:
                console.print(markdown_catalogue(pack.info()), markup=False, highlight=False, soft_wrap=True)
        except PackError as exc:
            raise _fail(str(exc)) from None
        return
    try:
        if bool(stack) == all_stacks:
            raise PlanError("give exactly one of --stack NAME or --all")
        if emit_policy_config and all_stacks:
            raise PlanError("--emit-policy-config takes one --stack")
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as progress:
            plans = _plans(program, stack, all_stacks, preview, progress, references)
            if emit_policy_config:
                with PolicyPackProcess(policy_pack, timeout=timeout) as pack:
                    info = pack.info()
                settings, environment = read_settings(plans[0].config, plans[0].config_file)
                document = pack_config_document(settings, environment, info, plans[0].config_file)
                emit_policy_config.write_text(json.dumps(document, indent=2) + "\n")
                err.print(f"wrote {emit_policy_config}")
                return
            total = sum(1 for p in plans for r in p.resources if not r.read)
            task = progress.add_task("analyzing", total=total)

            def on_stack(name: str) -> None:
                progress.update(task, description=f"analyzing {name}")

            report = run(
                plans,
                policy_pack,
                timeout=timeout,
                on_stack=on_stack,
                on_resource=lambda: progress.advance(task),
            )
    except Exception as exc:
        # No verdict: every requested report still says so, with the error and its place.
        known = isinstance(exc, PlanError | PackError | PolicyConfigError)
        message = str(exc) if known else f"internal error: {type(exc).__name__}: {exc}"
        file = getattr(exc, "file", None)
        line = getattr(exc, "line", None)
        report = Report(error=ToolError(message=message, file=str(file) if file else None, line=line))
        _write_reports(report, program, json_out, sarif_out, junit_out)
        raise _fail(message) from None
    print_terminal(report, console)
    _write_reports(report, program, json_out, sarif_out, junit_out)
    raise typer.Exit(report.exit_code())


def _write_reports(
    report: Report, program: Path, json_out: Path | None, sarif_out: Path | None, junit_out: Path | None
) -> None:
    if json_out:
        write_json(report, json_out)
    if sarif_out:
        write_sarif(report, sarif_out, program.resolve())
    if junit_out:
        write_junit(report, junit_out)
