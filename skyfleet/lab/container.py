"""Run a process of the agent app in its image, the way a platform runs it (rootful podman + runc).

A container gets what its plan gives an ECS task, a Cloud Run instance or a Kubernetes pod
(``skyfleet.lab.runtime`` translates the plan's container into a ``ContainerSpec``): the
plan's user and groups, a read-only root where the plan says so, the pod's volumes bound at
the plan's paths (a scratch dir, a Secret's files), the plan's environment verbatim, secret
variables, no capabilities and no privilege escalation. It joins a network namespace instead
of getting its own: a pod's (``ip netns`` of a lab run as root; the containers of one pod or
awsvpc task share it) or the host's; published ports would need every server to listen beyond
loopback, and cannot reach into a namespace.

Process model: the container runs detached and its init process *is* the app (pid 1 inside,
an ordinary pid on the host). That host pid, checked with its start time, is what the lab
tracks: SIGTERM starts the app's drain, SIGKILL kills the whole container (its pid namespace
dies with its init), SIGSTOP pauses it. No podman client stays attached: killing a client
would not kill its container. An exited container is kept, with its exit code, as a stopped
task or a pod's last state is, until ``remove``; every container carries its lab's label, so
``leftovers`` finds them after a crash of the lab itself.

Podman's global config is never touched: every command runs with ``CONTAINERS_CONF`` pointing
at a file of our own, with runc and the cgroupfs manager (see /work/shared/NOTES.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skyfleet.lab.errors import LabError
from skyfleet.lab.procs import start_ticks

# Labels on every container: its lab (the marker, the lab's state folder) and the lab process
# it runs.
LABEL_LAB = "io.skyfleet.lab"
LABEL_PROCESS = "io.skyfleet.process"
CONTAINERS_CONF = """\
# Written by skyfleet; read only by the podman commands skyfleet runs (CONTAINERS_CONF).
[containers]
# Podman's default nofile/nproc ulimits cannot be set on this kind of host
# ("setrlimit RLIMIT_NOFILE: Operation not permitted"); containers keep podman's own.
default_ulimits = []
"""
RUNC_PATHS = ("/usr/sbin/runc", "/usr/bin/runc", "/sbin/runc")
INSTALL_HINT = "apt-get install -y podman runc (or run scripts/install.sh as root)"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
POLL = 0.02


class ContainerError(LabError):
    """A container could not be built, started, stopped or found; the message says which and why."""


def cache_dir() -> Path:
    """Skyfleet's cache folder (podman config, image build logs)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "skyfleet"


def find_runc() -> str | None:
    found = shutil.which("runc")
    return found or next((p for p in RUNC_PATHS if os.access(p, os.X_OK)), None)


def problems() -> list[str]:
    """What keeps podman from running containers here, each with the fix; empty if nothing."""
    found = []
    if os.geteuid() != 0:
        found.append("containers run with rootful podman: run as root (or through sudo)")
    if shutil.which("podman") is None:
        found.append(f"podman is not installed: {INSTALL_HINT}")
    if find_runc() is None:
        found.append(f"runc is not installed (crun fails on this host's hybrid cgroups): {INSTALL_HINT}")
    return found


class Podman:
    """The podman CLI with this host's workarounds: runc, cgroupfs, and our own containers.conf."""

    def __init__(self, conf_dir: Path | None = None) -> None:
        found = problems()
        if found:
            raise ContainerError("cannot run containers: " + "; ".join(found))
        self.binary = shutil.which("podman") or "podman"
        self.runtime = find_runc() or "runc"
        self.conf = (conf_dir or cache_dir() / "podman") / "containers.conf"
        # conmon runs `podman container cleanup` with this environment when a container
        # exits, so the file must stay where it is: written once, rewritten only if changed.
        if not self.conf.is_file() or self.conf.read_text() != CONTAINERS_CONF:
            self.conf.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.conf.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(CONTAINERS_CONF)
            tmp.replace(self.conf)

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--runtime", self.runtime, "--cgroup-manager", "cgroupfs", *args]

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERS_")}
        env["CONTAINERS_CONF"] = str(self.conf)
        env.update(extra or {})
        return env

    def run(
        self,
        *args: str,
        timeout: float = 60.0,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one podman command; raise ContainerError with its message if it fails."""
        try:
            proc = subprocess.run(
                self.argv(*args),
                env=self.env(env),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise ContainerError(f"podman {args[0]}: no answer after {timeout:.0f} s") from None
        if check and proc.returncode != 0:
            message = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            raise ContainerError(f"podman {' '.join(args[:1])}: {message[0].removeprefix('Error: ')}")
        return proc


def _path_arg(value: str, what: str) -> str:
    if not value.startswith("/") or "," in value:
        raise ValueError(f"expected an absolute {what} without ',', got {value!r}")
    return value


class Bind(BaseModel):
    """A host file or folder the container sees at ``target``: a pod's volume (a scratch dir, a
    Secret's files), the site's hosts file, a trust store."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Path
    target: str
    read_only: bool = True

    @field_validator("source")
    @classmethod
    def _source(cls, value: Path) -> Path:
        _path_arg(str(value), "path on this machine")
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        _path_arg(value, "path in the container")
        if value.rstrip("/") == "":
            raise ValueError("expected a path below /, got '/'")
        return value


class ContainerSpec(BaseModel):
    """One process as a container: what a platform is told to run, plus the lab's name for it.

    Built from a plan's container by ``skyfleet.lab.runtime``; nothing here has a default that
    a plan would otherwise set, except the hardening every platform applies (no capabilities,
    no privilege escalation).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="container name, unique on the host (see container_name)")
    lab: str = Field(description="the lab's marker (its state folder); labels the container")
    process: str = Field(description="the lab process it runs, e.g. aws-prod/api-0/api")
    image: str
    command: tuple[str, ...]
    # Plain settings, passed verbatim; secrets never go here (they would land on a command line).
    env: dict[str, str] = Field(default_factory=dict)
    # Names of variables whose values ``start`` takes from ``secret_values``: they reach the
    # container through podman's own environment, never a command line or a file.
    secret_env: tuple[str, ...] = ()
    mounts: tuple[Bind, ...] = ()
    # None: the image's USER (Cloud Run runs it; a plan that names no user gets it everywhere).
    uid: int | None = Field(default=None, ge=0)
    gid: int | None = Field(default=None, ge=0)
    groups: tuple[int, ...] = ()  # supplementary groups (a pod's fsGroup)
    read_only_root: bool = True
    # Runs to completion before the pod's other containers start (an init container, an ECS
    # container others wait for with condition SUCCESS): the only kind that may run as root.
    init: bool = False
    hostname: str | None = None
    # None: the caller's (host) network namespace; else the name of a namespace in /run/netns.
    netns: str | None = None
    stop_grace_seconds: int = Field(default=10, ge=0, le=3600)
    memory_mb: int | None = Field(default=None, ge=6)
    cpus: float | None = Field(default=None, gt=0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"expected letters, digits, '_', '.' or '-' (at most 128), got {value!r}")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if not _ENV_NAME.fullmatch(k)]
        if bad:
            raise ValueError(f"invalid variable names: {bad}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ContainerSpec:
        bad = [k for k in self.secret_env if not _ENV_NAME.fullmatch(k)]
        if bad:
            raise ValueError(f"secret_env: invalid variable names: {bad}")
        both = sorted(set(self.secret_env) & set(self.env))
        if both:
            raise ValueError(f"secret_env: {both} also given as plain env; a variable is one or the other")
        if not self.command:
            raise ValueError("command: expected the process's argv, got nothing")
        if self.uid is None and self.gid is not None:
            raise ValueError("gid: given without a uid; name the user too (or neither: the image's USER)")
        if self.uid == 0 and not self.init:
            raise ValueError(
                "uid: 0 (root) runs only a one-shot init container (init=True), never a long-running process"
            )
        targets = [m.target.rstrip("/") for m in self.mounts]
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise ValueError(f"mounts: {twice} mounted more than once")
        return self


def container_name(lab_id: str, process: str) -> str:
    """The host-wide name of a lab process's container: two labs never share one."""
    return f"skyfleet-{lab_id}-{process}"


def network_arg(netns: str | None) -> str:
    return "host" if netns is None else f"ns:/run/netns/{netns}"


def create_args(spec: ContainerSpec) -> list[str]:
    """``podman create`` arguments for ``spec``."""
    args = [
        "create",
        "--name", spec.name,
        "--label", f"{LABEL_LAB}={spec.lab}",
        "--label", f"{LABEL_PROCESS}={spec.process}",
        "--pull=never",  # no registry: the image is built here (skyfleet lab image build)
        # The container writes to the file the caller gave (the lab's log), no copy, no prefix.
        "--log-driver", "passthrough",
        # The lab probes /readyz itself, as Kubernetes ignores the image's HEALTHCHECK (and
        # podman would want systemd timers to run it).
        "--no-healthcheck",
        "--uts", "private",
        "--hostname", spec.hostname or spec.name,
        "--network", network_arg(spec.netns),
        "--cap-drop", "all",
        "--security-opt", "no-new-privileges",
        "--stop-timeout", str(spec.stop_grace_seconds),
    ]  # fmt: skip
    if spec.uid is not None:
        # A uid alone takes its group from the image's /etc/passwd, as Docker and ECS do.
        args += ["--user", str(spec.uid) if spec.gid is None else f"{spec.uid}:{spec.gid}"]
    for group in spec.groups:
        args += ["--group-add", str(group)]
    if spec.read_only_root:
        # Without =false podman would also put writable tmpfs at /tmp, /run and /var/tmp: only
        # what the plan mounts may take writes.
        args += ["--read-only", "--read-only-tmpfs=false"]
    if spec.memory_mb is not None:
        args += ["--memory", f"{spec.memory_mb}m"]
    if spec.cpus is not None:
        args += ["--cpus", f"{spec.cpus:g}"]
    for key, value in sorted(spec.env.items()):
        args += ["--env", f"{key}={value}"]
    for key in spec.secret_env:
        args += ["--env", key]  # no value: podman copies it from its own environment
    for m in spec.mounts:
        args += [
            "--mount",
            f"type=bind,source={m.source},destination={m.target},ro={str(m.read_only).lower()}",
        ]
    return [*args, spec.image, *spec.command]


@dataclass(frozen=True)
class State:
    """What podman knows about one container."""

    name: str
    id: str
    status: str  # created, running, paused, exited, ...
    pid: int  # host pid of its init process; 0 unless running
    exit_code: int
    labels: dict[str, str]
    stop_timeout: int  # seconds between SIGTERM and SIGKILL on `podman stop`

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused")


def _state(raw: dict[str, Any]) -> State:
    st = raw.get("State") or {}
    return State(
        name=str(raw.get("Name", "")).lstrip("/"),
        id=str(raw.get("Id", "")),
        status=str(st.get("Status", "")).lower(),
        pid=int(st.get("Pid") or 0),
        exit_code=int(st.get("ExitCode") or 0),
        labels=dict((raw.get("Config") or {}).get("Labels") or {}),
        stop_timeout=int((raw.get("Config") or {}).get("StopTimeout") or 10),
    )


def inspect(podman: Podman, name: str) -> State | None:
    """The container's state, or None if there is no container of that name."""
    proc = podman.run("container", "inspect", "--format", "json", name, check=False)
    if proc.returncode != 0:
        if "no such" in proc.stderr.lower():
            return None
        raise ContainerError(f"podman inspect {name}: {proc.stderr.strip()}")
    found = json.loads(proc.stdout or "[]")
    return _state(found[0]) if found else None


@dataclass(frozen=True)
class Started:
    """A started container. ``pid`` and ``start_ticks`` are its init's on the host (the app
    process), or None if it exited before it could be looked at (its exit code tells why)."""

    name: str
    id: str
    pid: int | None
    start_ticks: int | None


def start(
    podman: Podman,
    spec: ContainerSpec,
    *,
    log_file: Path,
    secret_values: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> Started:
    """Create and start ``spec``'s container; its output is appended to ``log_file``.

    An exited container of the same name (an earlier run) is removed first; a running one is
    an error. Every source of ``spec.mounts`` must exist (a volume the caller has written).
    """
    secrets = dict(secret_values or {})
    missing = [k for k in spec.secret_env if k not in secrets]
    if missing:
        raise ContainerError(f"{spec.name}: no value given for secret variables {missing}")
    absent = [f"{m.source} (for {m.target})" for m in spec.mounts if not m.source.exists()]
    if absent:
        raise ContainerError(f"{spec.name}: nothing to mount at {', '.join(absent)}")
    old = inspect(podman, spec.name)
    if old is not None:
        if old.running:
            raise ContainerError(
                f"{spec.name}: a container of that name is already running (host pid {old.pid}); "
                "stop it first"
            )
        remove(podman, spec.name)
    try:
        podman.run(*create_args(spec), env=secrets, timeout=timeout)
    except ContainerError as exc:
        raise ContainerError(f"{spec.name}: cannot create the container: {exc}") from None
    log_file.parent.mkdir(parents=True, exist_ok=True)
    # conmon inherits this command's stdout and stderr and hands them to the container
    # (log driver passthrough); `podman start` itself writes one line, the container's name.
    with log_file.open("ab") as log:
        try:
            rc = subprocess.run(
                podman.argv("start", spec.name),
                env=podman.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                timeout=timeout,
            ).returncode
        except subprocess.TimeoutExpired:
            rc = -1
    state = inspect(podman, spec.name)
    if rc != 0 or state is None:
        tail = log_tail(log_file)
        remove(podman, spec.name)
        raise ContainerError(f"{spec.name}: podman start failed (exit {rc}); the log ends with:\n{tail}")
    ticks = start_ticks(state.pid) if state.pid else None
    return Started(
        name=spec.name, id=state.id, pid=state.pid if ticks is not None else None, start_ticks=ticks
    )


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log, indented, for an error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "    (no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def wait_exit(podman: Podman, name: str, timeout: float) -> int:
    """Wait until the container has exited; return its exit code."""
    deadline = time.monotonic() + timeout
    while True:
        state = inspect(podman, name)
        if state is None:
            raise ContainerError(f"{name}: no such container")
        if state.status in ("exited", "stopped", "created") and not state.pid:
            return state.exit_code
        if time.monotonic() > deadline:
            raise ContainerError(f"{name}: still {state.status} after {timeout:.0f} s (host pid {state.pid})")
        time.sleep(POLL * 5)


def stop(podman: Podman, name: str, *, grace: float | None = None, keep: bool = False) -> int | None:
    """SIGTERM (the app drains), SIGKILL after ``grace`` seconds (default: the spec's); remove it
    unless ``keep``. Return the exit code, or None if there was no such container."""
    state = inspect(podman, name)
    if state is None:
        return None
    if state.running:
        if state.pid:  # a process paused by SIGSTOP (a fault) cannot act on SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.pid, signal.SIGCONT)
        seconds = state.stop_timeout if grace is None else max(0, round(grace))
        podman.run("stop", "--time", str(seconds), name, timeout=seconds + 30)
    code = wait_exit(podman, name, timeout=30)
    if not keep:
        remove(podman, name)
    return code


def kill(podman: Podman, name: str, *, keep: bool = False) -> int | None:
    """SIGKILL the container's init, as a lost host does: the container dies with it, nothing
    drains. Remove it unless ``keep``. Return the exit code, or None if there was none."""
    state = inspect(podman, name)
    if state is None:
        return None
    if state.running and state.pid:
        with contextlib.suppress(ProcessLookupError):
            if state.status == "paused":
                os.kill(state.pid, signal.SIGCONT)
            os.kill(state.pid, signal.SIGKILL)
    code = wait_exit(podman, name, timeout=30)
    if not keep:
        remove(podman, name)
    return code


def remove(podman: Podman, name: str) -> bool:
    """Remove the container (SIGKILL first if it still runs)."""
    state = inspect(podman, name)
    if state is None:
        return False
    podman.run("rm", "--force", "--time", "0", name, check=False)
    if inspect(podman, name) is not None:
        raise ContainerError(f"{name}: podman could not remove the container")
    return True


def leftovers(podman: Podman, lab: str) -> list[State]:
    """Every container of the lab ``lab`` (its marker), running or not."""
    proc = podman.run("ps", "--all", "--filter", f"label={LABEL_LAB}={lab}", "--format", "{{.Names}}")
    names = [n for n in proc.stdout.split() if n]
    found = [inspect(podman, n) for n in names]
    # A filter value may hold wildcards (a '*' in a state folder's path): check exactly.
    return [s for s in found if s is not None and s.labels.get(LABEL_LAB) == lab]


def remove_leftovers(podman: Podman, lab: str) -> list[str]:
    """Kill and remove every container of ``lab``; return their names."""
    gone = []
    for state in leftovers(podman, lab):
        if remove(podman, state.name):
            gone.append(state.name)
    return gone
