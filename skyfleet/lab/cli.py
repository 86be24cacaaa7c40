"""``skyfleet lab up | status | down``: the twin of the deployed stacks on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from skyfleet.lab.config import LabConfig
from skyfleet.lab.errors import LabError
from skyfleet.lab.image import app as image_app

app = typer.Typer(
    name="lab",
    help="The lab: the twin of the deployed stacks (their plans run on this machine, as root).",
    no_args_is_help=True,
)
app.add_typer(image_app, name="image")
out = Console()
err = Console(stderr=True)

StateDir = Annotated[
    Path, typer.Option("--state-dir", help="the lab's state folder (two labs need two folders)")
]
DEFAULT_STATE_DIR = Path(".skyfleet-lab")


def _fail(exc: LabError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


@app.command()
def up(
    stacks: Annotated[
        str | None, typer.Option(help="comma-separated site stacks (default: aws-prod,gcp-prod,onprem-prod)")
    ] = None,
    edge: Annotated[
        str | None, typer.Option(help="the edge stack in front of them (default: edge-prod)")
    ] = None,
    no_edge: Annotated[bool, typer.Option("--no-edge", help="sites only, no global name")] = False,
    program: Annotated[Path | None, typer.Option(help="the Pulumi project folder")] = None,
    max_replicas: Annotated[
        int | None,
        typer.Option(help="cap each workload's replicas (a small machine; printed in every report)"),
    ] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="the lab's state folder")] = None,
    subnet: Annotated[str | None, typer.Option(help="the lab's private IPv4 /24")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="a YAML lab config file")] = None,
) -> None:
    """Plan the stacks offline and run what they deploy: every site, then the edge."""
    from skyfleet.lab.lifecycle import up as lab_up

    flags: dict[str, Any] = {
        "stacks": [s.strip() for s in stacks.split(",") if s.strip()] if stacks is not None else None,
        "edge": edge,
        "program": str(program) if program is not None else None,
        "max_replicas": max_replicas,
        "state_dir": str(state_dir) if state_dir is not None else None,
        "subnet": subnet,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    if no_edge:
        given["edge"] = None
    try:
        lab_config = (
            LabConfig.from_yaml(config, **given) if config else LabConfig.load(given, source="command line")
        )
        state = lab_up(lab_config, console=err)
    except LabError as exc:
        raise _fail(exc) from None
    out.print(f"[bold green]lab is up[/]: the twin of {', '.join(s.stack for s in state.sites.values())}")
    for site in state.sites.values():
        at = ", ".join(site.addresses)
        out.print(f"  {site.site:<12} load balancer {at}  ({', '.join(site.lb_names)})")
    if state.edge:
        out.print(
            f"  edge: {state.edge.fqdn} ({state.edge.routing}, TTL {state.edge.ttl} s), "
            f"DNS {state.edge.dns_address}:{state.edge.dns_port}"
        )
    for key, (planned, running) in state.capped.items():
        out.print(f"  [yellow]capped[/] {key}: {running} replicas of the plan's {planned}")
    out.print(f"  CA (the lab's public roots): {state.public_ca_file}   API key: cat {state.api_key_file}")
    out.print("  what differs from the plans: skyfleet lab status")
    out.print(f"  stop with: skyfleet lab down --state-dir {state.state_dir}")


@app.command()
def status(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Sites, pods, load balancers, managed endpoints, and every difference from the plans."""
    from skyfleet.lab.state import read_api_key
    from skyfleet.lab.status import lab_status

    try:
        report = lab_status(str(state_dir))
        if as_json:
            report["endpoints"]["api_key"] = read_api_key(str(state_dir))
    except LabError as exc:
        raise _fail(exc) from None
    if as_json:
        out.print_json(json.dumps(report))
        return
    if report["phase"] == "down":
        out.print(f"lab {report['lab_id']} in {report['state_dir']} is down; start it with `skyfleet lab up`")
        raise typer.Exit(code=1)
    _print_status(report)
    if not report["healthy"]:
        raise typer.Exit(code=1)


def _print_status(report: dict[str, Any]) -> None:
    verdict = "[bold green]healthy[/]" if report["healthy"] else "[bold red]NOT healthy[/]"
    out.print(
        f"lab {report['lab_id']} ({report['phase']}), the twin of {', '.join(report['stacks'])}: {verdict}"
    )
    ends = report["endpoints"]
    if ends["global_name"]:
        out.print(f"  global name: {ends['global_name']} (DNS {ends['dns']})")
    out.print(f"  CA: {ends['ca_file']}   API key: {ends['api_key_file']}")
    procs = Table("process", "pid", "state", "ready", "address", title="processes")
    for p in report["processes"]:
        color = {"running": "green", "paused": "yellow", "stopped": "yellow"}.get(p["state"], "red")
        ready = {True: "yes", False: "[red]no[/]"}.get(p.get("ready"), "")  # type: ignore[arg-type]
        procs.add_row(p["name"], str(p["pid"] or ""), f"[{color}]{p['state']}[/]", ready, p["address"])
    out.print(procs)
    for site in report["sites"]:
        lb = site["load_balancer"]
        states = ", ".join(f"{k}: {v}" for k, v in lb["backends"].items())
        out.print(f"{site['name']} ({site['stack']}): load balancer {lb['address']} ({states})", markup=False)
        for name, addresses in site["managed_endpoints"].items():
            out.print(f"  {name} -> {', '.join(addresses)}")
    table = Table("site", "what", "the plan says", "the lab serves", title="endpoint rewrites")
    for r in report["rewrites"]:
        table.add_row(r["site"], r["what"], r["plan"], r["lab"])
    out.print(table)
    for key, cap in report["capped"].items():
        out.print(f"[yellow]capped[/] {key}: {cap['running']} of {cap['planned']} replicas")
    for line in report["deviations"] + report["not_run"]:
        out.print(f"[yellow]differs[/] {line}")


@app.command()
def down(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Stop everything the lab started (even after skyfleet itself crashed), and remove its network."""
    from skyfleet.lab.lifecycle import down as lab_down

    try:
        result = lab_down(state_dir)
    except LabError as exc:
        raise _fail(exc) from None
    out.print(
        f"lab down: stopped {len(result['stopped'])} processes"
        + (f", killed {len(result['orphans_killed'])} stragglers" if result["orphans_killed"] else "")
        + (
            f", removed {len(result['network_removed'])} namespaces and links"
            if result["network_removed"]
            else ""
        )
    )
