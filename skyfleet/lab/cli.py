"""``skyfleet lab up | status | down``: the embedded default deployment from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from skyfleet.lab.config import LabConfig
from skyfleet.lab.errors import LabError
from skyfleet.lab.image import app as image_app

app = typer.Typer(
    name="lab",
    help="The embedded lab: the real agent app as several sites on one machine behind a front door.",
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
    err.print(f"[bold red]error:[/] {exc}", highlight=False)
    return typer.Exit(code=2)


@app.command()
def up(
    sites: Annotated[str | None, typer.Option(help="comma-separated site names, e.g. aws,gcp,onprem")] = None,
    replicas: Annotated[int | None, typer.Option(help="api replicas per site (at least 2)")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="the lab's state folder")] = None,
    base_port: Annotated[int | None, typer.Option(help="first port; the lab uses a block from here")] = None,
    health_interval: Annotated[
        str | None, typer.Option(help="front door check interval, e.g. 1s, 250ms")
    ] = None,
    routing: Annotated[str | None, typer.Option(help="weighted (active-active) or failover")] = None,
    netns: Annotated[
        bool | None, typer.Option("--netns/--no-netns", help="each site in a network namespace (root)")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="a YAML lab config file")] = None,
) -> None:
    """Start a lab and wait until every site is healthy behind the front door."""
    from skyfleet.lab.lifecycle import up as lab_up

    flags: dict[str, Any] = {
        "sites": [s.strip() for s in sites.split(",") if s.strip()] if sites is not None else None,
        "replicas": replicas,
        "state_dir": str(state_dir) if state_dir is not None else None,
        "base_port": base_port,
        "health_interval": health_interval,
        "routing": routing,
        "netns": netns,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        lab_config = (
            LabConfig.from_yaml(config, **given) if config else LabConfig.load(given, source="command line")
        )
        state = lab_up(lab_config, console=err)
    except LabError as exc:
        raise _fail(exc) from None
    door = state.front_door
    out.print(f"[bold green]lab is up[/] ({', '.join(state.sites)}; {lab_config.routing.value} routing)")
    if door.https_url:
        out.print(f"  front door: [bold]{door.https_url}[/]  (CA: {door.ca_file})")
    out.print(f"  front door (plain HTTP, loopback only): {door.http_url}")
    out.print(f"  API key:    cat {state.api_key_file}   (or `skyfleet lab status --json`)")
    url = door.https_url or door.http_url
    cacert = f"--cacert {door.ca_file} " if door.https_url else ""
    auth = f'-H "Authorization: Bearer $(cat {state.api_key_file})"'
    out.print(f"  try:        curl {cacert}{auth} -X POST {url}/v1/sessions")
    out.print(f"  stop with:  skyfleet lab down --state-dir {state.state_dir}")


@app.command()
def status(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Sites, processes, health, Redis roles and lag, the NATS cluster, endpoints."""
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
    out.print(f"lab {report['lab_id']} ({report['phase']}, {report['mode']}, {report['routing']}): {verdict}")
    ends = report["endpoints"]
    out.print(f"  front door: {ends['front_door']}   API key: {ends['api_key_file']}")
    procs = Table("process", "site", "pid", "state", "ready", "address", title="processes")
    for p in report["processes"]:
        color = {"running": "green", "paused": "yellow", "stopped": "yellow"}.get(p["state"], "red")
        ready = {True: "yes", False: "[red]no[/]"}.get(p.get("ready"), "")  # type: ignore[arg-type]
        procs.add_row(
            p["name"], p["site"], str(p["pid"] or ""), f"[{color}]{p['state']}[/]", ready, p["address"]
        )
    out.print(procs)
    servers = Table("server", "site", "status", "check", "weight", "backup", "requests", title="front door")
    for s in report["front_door"]["servers"]:
        color = "green" if s["status"] == "UP" else "red"
        servers.add_row(
            s["server"],
            s["site"],
            f"[{color}]{s['status']}[/]",
            s["check_status"],
            str(s["weight"]),
            "yes" if s["backup"] else "",
            str(s["requests"]),
        )
    out.print(servers)
    redis_info = report["redis"]
    primary = redis_info.get("primary") or {}
    lag = redis_info.get("lag_ms") or {}
    out.print(
        f"Redis primary: {primary.get('name', '[red]none[/]')}  "
        f"replication lag p50 {lag.get('p50_ms')} ms, p99 {lag.get('p99_ms')} ms"
    )
    for node in redis_info["nodes"]:
        extra = f" following {node['following']} link {node.get('link')}" if node.get("following") else ""
        behind = f", {node['bytes_behind']} bytes behind" if "bytes_behind" in node else ""
        out.print(f"  {node['name']}: {node['role']}{extra}{behind}")
    nats = report["nats"]
    out.print(
        f"NATS JetStream cluster: {nats.get('nodes_up')}/{nats.get('cluster_size')} nodes up, "
        f"meta leader {nats.get('meta_leader')}"
    )


@app.command()
def down(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Stop everything the lab started (even after skyfleet itself crashed), and free its ports."""
    from skyfleet.lab.lifecycle import down as lab_down

    try:
        result = lab_down(state_dir)
    except LabError as exc:
        raise _fail(exc) from None
    out.print(
        f"lab down: stopped {len(result['stopped'])} processes"
        + (f", killed {len(result['orphans_killed'])} stragglers" if result["orphans_killed"] else "")
        + (f", removed {', '.join(result['network_removed'])}" if result["network_removed"] else "")
    )
    if not result["ports_free"]:
        err.print(f"[red]ports still busy:[/] {result['ports_busy']}")
        raise typer.Exit(code=1)
