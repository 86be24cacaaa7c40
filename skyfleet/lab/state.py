"""The lab state file: every site, pod, process and namespace of a lab, written as each starts.

It lives in the state folder (``lab.json``) so that ``down``, ``status`` and the fault
primitives work from any process, even after the ``skyfleet`` process that ran ``up`` died.
Writes are atomic (temp file + rename) and serialised by a lock file, because faults and
status may run concurrently with each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from skyfleet.lab.config import LabConfig
from skyfleet.lab.errors import LabError
from skyfleet.lab.fabric import Fabric
from skyfleet.lab.locks import exclusive
from skyfleet.lab.procs import ProcessRecord, Role
from skyfleet.lab.values import Rewrite

STATE_FILE = "lab.json"
LOCK_FILE = "lab.lock"
Phase = Literal["starting", "up", "failed", "stopping", "down"]


class SiteState(BaseModel):
    """One site of the twin: its stack, its load balancer, its name service."""

    stack: str
    target: str
    site: str
    lb_address: str
    # Every address the load balancer answers at: lb_address first, then one per further public
    # address its plan gives the site (an aws site's NLB has one per zone).
    lb_addresses: list[str] = Field(default_factory=list)
    lb_names: list[str]
    lb_certificate: str = ""  # the plan resource its certificate's names come from
    hosts_file: str
    # Managed endpoint names that follow a failover: name -> the cache service they belong to.
    endpoints: dict[str, str] = Field(default_factory=dict)
    backends: dict[str, str] = Field(default_factory=dict)  # HAProxy server -> pod key
    admin_socket: str = ""
    lb_log: str = ""

    @property
    def addresses(self) -> list[str]:
        """Every address the load balancer answers at (a state file from before lb_addresses
        lists none: lb_address alone)."""
        return self.lb_addresses or [self.lb_address]


class Edge(BaseModel):
    """The edge stack's twin: the global name, its routing, and the DNS server that answers it."""

    stack: str
    fqdn: str
    routing: str
    ttl: int
    dns_address: str
    dns_port: int = 53
    # The health checks' settings, as the plan gives them (site -> interval, threshold, path).
    health_checks: dict[str, dict[str, Any]] = Field(default_factory=dict)
    config_file: str = ""
    events_file: str = ""


class LabState(BaseModel):
    lab_id: str
    state_dir: str
    phase: Phase = "starting"
    created_at: float = Field(default_factory=time.time)
    config: dict[str, Any]
    fabric: Fabric
    sites: dict[str, SiteState] = Field(default_factory=dict)
    edge: Edge | None = None
    processes: list[ProcessRecord] = Field(default_factory=list)
    # What differs from the plans, said out loud: endpoint rewrites, what the lab cannot run or
    # runs differently, replica caps.
    rewrites: list[Rewrite] = Field(default_factory=list)
    deviations: list[str] = Field(default_factory=list)
    capped: dict[str, tuple[int, int]] = Field(default_factory=dict)
    not_run: list[str] = Field(default_factory=list)
    public_ca_file: str = ""
    api_key_file: str = ""
    # Latency faults without netem: the delay line on each delayed site's uplink (a fault, not
    # a part of the site; ``down`` stops it and removes its devices).
    delay_lines: dict[str, ProcessRecord] = Field(default_factory=dict)

    @property
    def lab_config(self) -> LabConfig:
        return LabConfig.model_validate(self.config)

    @property
    def site_names(self) -> list[str]:
        return list(self.sites)

    def address(self, pod_key: str) -> str:
        return self.fabric.pods[pod_key].address

    def get(self, name: str) -> ProcessRecord:
        for rec in self.processes:
            if rec.name == name:
                return rec
        raise LabError(f"no process named {name!r} in the lab at {self.state_dir}")

    def find(
        self, *, site: str | None = None, role: Role | None = None, pod: str | None = None
    ) -> list[ProcessRecord]:
        return [
            r
            for r in self.processes
            if (site is None or r.site == site)
            and (role is None or r.role == role)
            and (pod is None or r.pod == pod)
        ]

    def upsert(self, rec: ProcessRecord) -> None:
        self.processes = [r for r in self.processes if r.name != rec.name] + [rec]


def state_file(state_dir: str | Path) -> Path:
    return Path(state_dir).expanduser().resolve() / STATE_FILE


def load_state(state_dir: str | Path) -> LabState:
    """Load a lab's state; LabError says clearly when there is no lab or the file is damaged."""
    path = state_file(state_dir)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabError(
            f"no lab in {path.parent} (no {STATE_FILE}); start one with `skyfleet lab up`"
        ) from None
    try:
        return LabState.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise LabError(f"{path}: damaged lab state file: {exc}") from None


def save_state(state: LabState) -> None:
    path = state_file(state.state_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(state.model_dump_json(indent=2))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def state_lock(state_dir: str | Path) -> contextlib.AbstractContextManager[None]:
    return exclusive(Path(state_dir).expanduser().resolve() / LOCK_FILE)


@contextlib.contextmanager
def updating(state_dir: str | Path) -> Iterator[LabState]:
    """Load, let the caller change, and save the state, holding the lock throughout."""
    with state_lock(state_dir):
        state = load_state(state_dir)
        try:
            yield state
        finally:
            save_state(state)  # pids started before a failure must be recorded too


def read_api_keys(state_dir: str | Path) -> list[str]:
    """The lab's clients' API keys (for ``Authorization: Bearer``), one per client."""
    state = load_state(state_dir)
    return Path(state.api_key_file).read_text(encoding="utf-8").split()


def read_api_key(state_dir: str | Path) -> str:
    """The first client's API key."""
    return read_api_keys(state_dir)[0]
