"""What a drill acts on: the local lab, or a deployed stack known by its outputs.

Both answer the same questions the drill asks (where is the front door, what did the health
checks see, how far behind is the replica), so the run loop, the probes and the report do not
care which one they drive. Stack outputs come from the Pulumi CLI when it exists, or from a
file: ``--outputs FILE`` (the stack's exports, or an object whose "outputs" key holds them) or
an offline plan folder ``DIR/<stack>.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from infra.outputs import EdgeOutputs, SiteOutputs
from skyfleet.drills.frontdoor import FrontDoor


class TargetError(RuntimeError):
    """The drill's target cannot be reached or described; the message says which and why."""


def _unsettled(report: dict[str, Any]) -> str:
    down = [p["name"] for p in report["processes"] if p["state"] != "running" or p.get("ready") is False]
    backends = [
        f"{s['name']}:{pod}"
        for s in report["sites"]
        for pod, status in s["load_balancer"]["backends"].items()
        if not str(status).startswith("UP")
    ]
    edge = [site for site, ok in ((report.get("edge") or {}).get("health") or {}).items() if not ok]
    caches = [s["name"] for s in report["sites"] if not s.get("cache_set_known", True)]
    parts = [
        f"processes not ready: {down[:5]}" if down else "",
        f"load balancer backends not up: {backends[:5]}" if backends else "",
        f"out of the edge's rotation: {edge}" if edge else "",
        f"cache replicas not yet known to their Sentinels: {caches}" if caches else "",
    ]
    return "; ".join(p for p in parts if p) or f"phase {report['phase']}"


@dataclass
class LabTarget:
    state_dir: str = ".skyfleet-lab"
    kind: str = "lab"

    @property
    def label(self) -> str:
        return f"lab ({self.state_dir})"

    def _state(self) -> Any:
        from skyfleet.lab.errors import LabError
        from skyfleet.lab.state import load_state

        try:
            return load_state(self.state_dir)
        except LabError as exc:
            raise TargetError(str(exc)) from None

    def wait_settled(self, timeout: float, say: Callable[[str], None]) -> float:
        """Wait until every process runs and is ready, every load balancer backend is up and
        every site is back in the edge's rotation (an earlier drill's failback included), so
        one drill's verdict never carries the last one's aftermath. Returns the seconds waited."""
        import time

        from skyfleet.lab.errors import LabError
        from skyfleet.lab.status import lab_status

        started = time.monotonic()
        told = False
        while True:
            try:
                report = lab_status(self.state_dir)
            except LabError as exc:
                raise TargetError(str(exc)) from None
            if report["healthy"]:
                return time.monotonic() - started
            if report["phase"] not in ("up", "starting"):  # waiting would not bring it up
                raise TargetError(
                    f"the lab in {self.state_dir} is {report['phase']}, not up "
                    f"(`skyfleet lab up --state-dir {self.state_dir}`, or --lab-dir for another lab)"
                )
            if not told:
                say(f"waiting for the lab to settle (at most {timeout:.0f} s): {_unsettled(report)}")
                told = True
            if time.monotonic() - started > timeout:
                raise TargetError(f"the lab did not settle within {timeout:.0f} s: {_unsettled(report)}")
            time.sleep(1.0)

    def front_door(self) -> FrontDoor | None:
        """The edge's global name, resolved through the lab's DNS (None: a lab without edge)."""
        from skyfleet.lab.state import read_api_keys

        state = self._state()
        if state.edge is None:
            return None
        return FrontDoor(
            url=f"https://{state.edge.fqdn}",
            api_keys=tuple(read_api_keys(self.state_dir)),
            dns=(state.edge.dns_address, state.edge.dns_port),
            network=state.fabric.subnet,
            ca_file=state.public_ca_file,
        )

    def describe(self) -> dict[str, Any]:
        state = self._state()
        checks = state.edge.health_checks if state.edge else {}
        return {
            "sites": list(state.sites),
            "stacks": [s.stack for s in state.sites.values()],
            "edge": state.edge.fqdn if state.edge else None,
            "routing": state.edge.routing if state.edge else None,
            "health_checks": checks,
            "phase": state.phase,
            "capped": {k: list(v) for k, v in state.capped.items()},
            "deviations": list(state.deviations),
        }

    def health_events(self, since: float) -> list[dict[str, Any]]:
        from skyfleet.lab.edge import health_events

        return health_events(self.state_dir, since=since)

    def sample_lag(self, window_seconds: float) -> list[float]:
        """Replication lag samples (ms) inside each site's cache, from the lab's sampler."""
        from skyfleet.lab.replication import sample_lag

        result = sample_lag(self.state_dir, window_seconds=window_seconds)
        return [float(s) for s in result.get("samples_ms") or []]


@dataclass
class OutputsSource:
    """Where stack outputs are read from (see the module docstring)."""

    outputs_file: Path | None = None
    plan_dir: Path | None = None
    _cache: dict[str, dict[str, Any]] = field(default_factory=dict)

    def raw(self, stack: str, *, primary: bool) -> dict[str, Any]:
        if stack in self._cache:
            return self._cache[stack]
        data: dict[str, Any]
        if primary and self.outputs_file is not None:
            data = _read_json(self.outputs_file)
        elif self.plan_dir is not None:
            path = self.plan_dir / f"{stack}.json"
            if not path.exists():
                raise TargetError(f"{path}: no offline plan for stack {stack!r}")
            data = _read_json(path)
        elif shutil.which("pulumi"):
            proc = subprocess.run(
                ["pulumi", "stack", "output", "--json", "--show-secrets", "-s", stack],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if proc.returncode != 0:
                raise TargetError(f"pulumi stack output -s {stack}: {proc.stderr.strip()[:300]}")
            data = json.loads(proc.stdout)
        else:
            raise TargetError(
                f"no outputs for stack {stack!r}: the Pulumi CLI is not installed; pass "
                "--outputs FILE (the stack's exported outputs) or --plan-dir DIR (DIR/<stack>.json)"
            )
        if isinstance(data.get("outputs"), dict):
            data = data["outputs"]
        self._cache[stack] = data
        return data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise TargetError(f"{path}: cannot read outputs: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise TargetError(f"{path}: outputs are not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TargetError(f"{path}: outputs must be a JSON object")
    return data


def parse_outputs(stack: str, data: dict[str, Any]) -> SiteOutputs | EdgeOutputs:
    model = EdgeOutputs if data.get("target") == "edge" else SiteOutputs
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise TargetError(f"stack {stack!r} outputs: {problems}") from None


@dataclass
class StackTarget:
    stack: str
    source: OutputsSource = field(default_factory=OutputsSource)
    load_url: str | None = None  # a loopback tunnel to the stack's front door, if any
    api_key: str | None = None  # one key, or several comma-separated (one per client)
    kind: str = "stack"

    @property
    def label(self) -> str:
        return f"stack {self.stack}"

    @property
    def outputs(self) -> SiteOutputs | EdgeOutputs:
        return self.outputs_of(self.stack)

    def outputs_of(self, stack: str) -> SiteOutputs | EdgeOutputs:
        return parse_outputs(stack, self.source.raw(stack, primary=stack == self.stack))

    def site(self) -> SiteOutputs:
        out = self.outputs
        if not isinstance(out, SiteOutputs):
            raise TargetError(f"stack {self.stack!r} is an edge stack; this action needs a site stack")
        return out

    def edge(self, edge_stack: str | None) -> EdgeOutputs:
        out = self.outputs_of(edge_stack or self.stack)
        if not isinstance(out, EdgeOutputs):
            raise TargetError(f"stack {edge_stack or self.stack!r} is not an edge stack (target: edge)")
        return out

    @property
    def environment(self) -> str:
        return self.outputs.environment

    def front_door(self) -> FrontDoor | None:
        if self.load_url is None:
            return None
        keys = self.api_key or os.environ.get("SKYFLEET_API_KEY", "")
        return FrontDoor(self.load_url, tuple(k.strip() for k in keys.split(",") if k.strip()))

    def describe(self) -> dict[str, Any]:
        out = self.outputs
        return {"stack": self.stack, "target": out.target, "environment": out.environment}

    def health_events(self, since: float) -> list[dict[str, Any]]:
        return []

    def sample_lag(self, window_seconds: float) -> list[float]:
        return []


Target = LabTarget | StackTarget


def target_from_configuration(configuration: dict[str, Any] | None) -> Target:
    """Build the target a chaoslib configuration names (used under ``chaos run``)."""
    cfg = configuration or {}
    kind = str(cfg.get("skyfleet_target") or "lab")
    if kind == "lab":
        return LabTarget(state_dir=str(cfg.get("skyfleet_lab_dir") or ".skyfleet-lab"))
    stack = kind.removeprefix("stack:")
    outputs = cfg.get("skyfleet_outputs_file")
    plan = cfg.get("skyfleet_plan_dir")
    return StackTarget(
        stack=stack,
        source=OutputsSource(
            outputs_file=Path(outputs) if outputs else None, plan_dir=Path(plan) if plan else None
        ),
    )
