"""``up`` and ``down``: bring the twin of a set of stacks up from their plans, and take it down
without leftovers.

``up`` plans the stacks (sites first, then the edge, whose StackReferences the sites' plans
answer), builds every file, records the lab in its state file before anything starts, then
starts it in the platforms' order (``skyfleet.lab.twin.start``) and the edge's name service.
Any failure tears down what was started and says which stack, resource and container failed,
with the process's own words (a container the app refuses to start prints why).

``down`` stops recorded processes (pid + start time checked), kills anything still carrying the
lab's marker, deletes the namespaces, and works on a half-started or damaged lab too. A folder
left by an ``up`` that failed never blocks the next ``up``.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from skyfleet.lab import edge, fabric, procs, twin
from skyfleet.lab.config import LabConfig, lab_id_for
from skyfleet.lab.errors import LabError
from skyfleet.lab.network import free_subnet, is_root, networks_lock
from skyfleet.lab.state import LabState, load_state, save_state, state_file, state_lock
from skyfleet.plan import PlanError
from skyfleet.plan.cli import plan_all
from skyfleet.plan.runner import Project

STEPS = 8


@contextlib.contextmanager
def _progress(console: Console | None) -> Iterator[Callable[[str], None]]:
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        transient=False,
        disable=console is None,
    )
    task = progress.add_task("preparing", total=STEPS)

    def step(description: str) -> None:
        progress.update(task, advance=1, description=description)

    with progress:
        yield step
        progress.update(task, completed=STEPS, description="lab is up")


def _refuse_running(root: Path) -> None:
    """Refuse a folder that holds a running lab, or that holds anything but a lab."""
    if root.exists() and not root.is_dir():
        raise LabError(f"state_dir: {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not state_file(root).exists():
        raise LabError(
            f"state_dir: {root} is not empty and holds no lab; choose a new or empty folder "
            "(the lab deletes and recreates its sub-folders there)"
        )
    if state_file(root).exists():
        try:
            old = load_state(root)
        except LabError:
            old = None
        if old and any(procs.is_running(r) for r in old.processes):
            raise LabError(
                f"a lab is already running in {root}; run `skyfleet lab down --state-dir {root}` first"
            )
    if procs.marked_pids(str(root)):
        raise LabError(
            f"processes of an earlier lab in {root} are still running; run `skyfleet lab down` first"
        )


def plans(config: LabConfig, say: Callable[[str], None] = lambda _: None) -> tuple[list[Any], Any]:
    """The offline plans of the lab's site stacks and its edge stack."""
    program = config.program.resolve()
    try:
        project = Project.load(program)
    except PlanError as exc:
        raise LabError(f"program: {exc}") from None
    known = set(project.stacks())
    wanted = [*config.stacks, *([config.edge] if config.edge else [])]
    missing = [s for s in wanted if s not in known]
    if missing:
        raise LabError(
            f"stacks: {missing} have no stack file in {project.stack_config_dir} (stacks: {sorted(known)})"
        )
    try:
        planned = [p for p, _ in plan_all(program, wanted, on_stack=lambda s: say(f"planning {s} offline"))]
    except PlanError as exc:
        raise LabError(f"the plan of a lab stack failed: {exc}") from None
    sites = [p for p in planned if p.outputs.get("target") != "edge"]
    edge_plan = next((p for p in planned if p.outputs.get("target") == "edge"), None)
    return sites, edge_plan


def up(
    config: LabConfig,
    *,
    console: Console | None = None,
    planned: tuple[list[Any], Any] | None = None,
) -> LabState:
    """Build the twin of ``config``'s stacks and start it; return its state once it serves.

    ``planned`` gives the site plans and the edge plan (or None) to build from instead of
    planning ``config``'s stacks: plans made elsewhere, or a plan with a defect planted on
    purpose to see what the twin makes of it.
    """
    root = config.state_path
    _refuse_running(root)
    if not is_root():
        raise LabError(
            "the lab needs root: each site and pod runs in namespaces of its own, as the platforms run "
            "them (run `sudo skyfleet lab up`)"
        )
    for binary in ("haproxy", "redis-server", "unshare", "nsenter"):
        if not (shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")):
            raise LabError(
                f"{binary} is not installed; `bash scripts/install.sh` installs what the lab needs"
            )
    # A fresh runtime folder: logs of an earlier lab go, so events never mix two labs.
    for sub in ("pods", "services", "logs", "secrets", "names", "lb", "certificates", "edge", "data"):
        shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    with _progress(console) as step, contextlib.ExitStack() as claim:
        sites, edge_plan = planned if planned is not None else plans(config, step)
        step("building the sites from their plans")
        # The lab's /24 stays claimed until its bridge carries it (``claim.close``).
        claim.enter_context(networks_lock())
        built = twin.build(
            sites,
            state_dir=root,
            lab_id=config.lab_id,
            subnet=config.subnet or free_subnet(config.network),
            max_replicas=config.max_replicas,
            config=config.model_dump(mode="json"),
        )
        state = built.state
        if edge_plan is not None:
            edge.build(state, edge_plan)
        save_state(state)
        try:
            twin.start(built, say=step, on_started=lambda: save_state(state), on_network=claim.close)
            if state.edge is not None:
                step(f"starting the edge: {state.edge.fqdn} ({state.edge.routing})")
                edge.start(state)
                edge.check_global_name(state)
        except BaseException:
            state.phase = "failed"
            save_state(state)
            teardown(state)
            raise
        state.phase = "up"
        save_state(state)
    return state


def teardown(state: LabState, grace: float = 5.0) -> dict[str, Any]:
    """Stop every process of ``state`` and every marked straggler; delete the namespaces."""
    result = twin.stop(state, grace=grace)
    procs.stop_records(list(state.delay_lines.values()), grace=grace)
    state.delay_lines = {}
    return result


def down(state_dir: str | Path, *, grace: float = 5.0) -> dict[str, Any]:
    """Stop the lab in ``state_dir``; works after any crash, and on a lab that is half up."""
    root = Path(state_dir).expanduser().resolve()
    try:
        load_state(root)
    except LabError:
        # No (readable) state: still kill whatever carries the marker, and drop namespaces
        # by the names this folder's lab would have used.
        orphans = procs.kill_marked(str(root))
        removed = fabric.destroy_by_id(lab_id_for(root)) if is_root() else []
        return {"stopped": [], "orphans_killed": orphans, "network_removed": removed}
    with state_lock(root):
        state = load_state(root)
        state.phase = "stopping"
        save_state(state)
        result = teardown(state, grace=grace)
        for rec in state.processes:
            rec.pid, rec.start_ticks = None, None
        state.phase = "down"
        save_state(state)
    # Runtime data goes; logs stay for the post-mortem.
    for sub in ("pods", "data", "certificates"):
        shutil.rmtree(root / sub, ignore_errors=True)
    return result
