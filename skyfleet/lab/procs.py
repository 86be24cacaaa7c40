"""Lab processes: start each in its own process group, and find, signal and reap them later.

A process is identified by its pid *and* its kernel start time, so a recycled pid is never
signalled. Every child also carries a marker in its environment naming the lab's state
folder, so ``skyfleet lab down`` finds it even when the state file missed it (the ``skyfleet``
process was killed between starting a child and recording it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from skyfleet.lab.errors import LabError

MARKER_ENV = "SKYFLEET_LAB_DIR"
# What a child inherits from the caller: enough to run, nothing that configures the app.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "VIRTUAL_ENV")


class Role(StrEnum):
    API = "api"
    WORKER = "worker"
    REDIS = "redis"
    SENTINEL = "sentinel"
    NATS = "nats"
    FRONTDOOR = "frontdoor"
    DELAY = "delay"  # a delay line on a site's link (a latency fault without netem)
    # The twin: a container of a planned pod, a managed service's process, a site's load
    # balancer, the edge's name service.
    CONTAINER = "container"
    SERVICE = "service"
    LB = "lb"
    EDGE = "edge"


class ProcessRecord(BaseModel):
    """One lab process: how to (re)start it, where it listens, and which pid it has now."""

    name: str
    role: Role
    site: str
    index: int | None = None
    argv: list[str]
    env: dict[str, str] = Field(default_factory=dict)
    # Variables whose values are read at spawn time from files in the secrets folder, so
    # the state file never holds a secret.
    secret_env: dict[str, str] = Field(default_factory=dict)
    cwd: str
    netns: str | None = None
    log_file: str
    host: str
    ports: dict[str, int] = Field(default_factory=dict)
    pid: int | None = None
    start_ticks: int | None = None
    started_at: float | None = None
    # False once a fault stopped it on purpose; status reports it as "stopped", not "dead".
    wanted: bool = True
    # The twin: the pod (site/pod) it belongs to, and its container or service name there.
    pod: str | None = None
    container: str | None = None
    # Where it comes from in the plans ("<stack>: <type> '<name>', container '<c>'"), for errors.
    origin: str | None = None
    # Runs to completion before its pod's other containers start (an init container).
    init: bool = False
    # The probe that says the container is ready (skyfleet.lab.model.Probe as a dict), and the
    # start wave it belongs to (stateful pods before the ones that use them).
    probe: dict[str, Any] | None = None
    wave: int = 0

    @property
    def port(self) -> int:
        return next(iter(self.ports.values()))


def start_ticks(pid: int) -> int | None:
    """Kernel start time of a live (non-zombie) process, or None if there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields follow the last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        reap(pid)
        return None
    return int(fields[19])


def reap(pid: int) -> None:
    """Collect the exit status if the process is our own child, so it does not linger."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_running(rec: ProcessRecord) -> bool:
    return rec.pid is not None and rec.start_ticks is not None and start_ticks(rec.pid) == rec.start_ticks


def is_stopped(rec: ProcessRecord) -> bool:
    """True if the process is alive but paused (SIGSTOP)."""
    if not is_running(rec):
        return False
    try:
        raw = Path(f"/proc/{rec.pid}/stat").read_text()
    except OSError:
        return False
    return raw[raw.rindex(")") + 2 :].split()[0] == "T"


def spawn(rec: ProcessRecord, *, secrets_dir: Path, marker: str) -> None:
    """Start ``rec`` in a new session (its own process group) and record its pid."""
    env = {k: os.environ[k] for k in _INHERITED_ENV if k in os.environ}
    env.update(rec.env)
    for var, file_name in rec.secret_env.items():
        env[var] = (secrets_dir / file_name).read_text(encoding="utf-8").strip()
    env[MARKER_ENV] = marker
    argv = ["ip", "netns", "exec", rec.netns, *rec.argv] if rec.netns else list(rec.argv)
    Path(rec.log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(rec.log_file, "ab") as log:
        try:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=rec.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise LabError(f"{rec.name}: cannot start {argv[0]!r}: {exc.strerror}") from None
    # Popen's handle is dropped on purpose: the child outlives this process; reap() collects it.
    rec.pid = child.pid
    rec.start_ticks = start_ticks(child.pid)
    rec.started_at = time.time()
    rec.wanted = True
    if rec.start_ticks is None:
        # It died before we could look at it; keep a value that can never match a live process.
        rec.start_ticks = -1


def signal_process(rec: ProcessRecord, sig: signal.Signals) -> bool:
    """Send ``sig`` to the process group of ``rec`` if it is still the same process."""
    if not is_running(rec):
        return False
    assert rec.pid is not None
    try:
        os.killpg(rec.pid, sig)
    except ProcessLookupError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, sig)
    return True


def wait_gone(records: Iterable[ProcessRecord], timeout: float) -> list[ProcessRecord]:
    """Wait until none of ``records`` runs; return those still running at the deadline."""
    pending = [r for r in records if is_running(r)]
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        time.sleep(0.02)
        pending = [r for r in pending if is_running(r)]
    return pending


def stop_records(records: list[ProcessRecord], *, grace: float) -> list[str]:
    """SIGTERM, then SIGKILL after ``grace`` seconds; return the names that were running."""
    running = [r for r in records if is_running(r)]
    for rec in running:
        if is_stopped(rec):
            signal_process(rec, signal.SIGCONT)  # a paused process cannot act on SIGTERM
        signal_process(rec, signal.SIGTERM)
    for rec in wait_gone(running, grace):
        signal_process(rec, signal.SIGKILL)
    left = wait_gone(running, 5.0)
    if left:
        raise LabError("could not stop: " + ", ".join(f"{r.name} (pid {r.pid})" for r in left))
    return [r.name for r in running]


def kill_records(records: list[ProcessRecord]) -> list[str]:
    """SIGKILL (a real crash: no drain, no goodbye); return the names that were running."""
    killed = [r.name for r in records if signal_process(r, signal.SIGKILL)]
    left = wait_gone([r for r in records if r.name in killed], 5.0)
    if left:
        raise LabError("still running after SIGKILL: " + ", ".join(r.name for r in left))
    return killed


# Servers the lab runs with a config file inside the state folder; matched by command line
# too, in case a server rewrites its process title (and with it the environment area).
_SERVERS = frozenset({"redis-server", "nats-server", "haproxy"})


def marked_pids(marker: str) -> list[int]:
    """Live processes of the lab in ``marker`` (its state folder), orphans included.

    A process is the lab's if its environment carries the marker, or if it is one of the
    lab's servers started with a config file inside the state folder.
    """
    needle = f"{MARKER_ENV}={marker}".encode()
    inside = marker.rstrip("/").encode() + b"/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = needle in environ.split(b"\0") or (
            Path(argv[0].decode(errors="replace")).name in _SERVERS
            and any(a.startswith(inside) for a in argv[1:])
        )
        if ours and start_ticks(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found


def kill_marked(marker: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL every process marked with ``marker``; return their pids."""
    pids = marked_pids(marker)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(start_ticks(p) is not None for p in pids):
        time.sleep(0.02)
    return pids
