"""A container's probes, run the way a kubelet runs them: HTTP and TCP against the pod's
address, exec inside the container (its namespaces, root, user and environment)."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from skyfleet.lab.model import Probe
from skyfleet.lab.procs import ProcessRecord


def http_ok(host: str, port: int, path: str, timeout: float) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return 200 <= conn.getresponse().status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def tcp_ok(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def exec_ok(rec: ProcessRecord, command: tuple[str, ...], timeout: float) -> bool:
    """Run ``command`` in the container of ``rec``, as its user, with its environment."""
    if rec.pid is None or not command:
        return False
    spec_file = Path(rec.argv[-1])
    try:
        spec = json.loads(spec_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    argv = ["nsenter", "-t", str(rec.pid), "-m", "-u", "-n", "-r", "-w"]
    if spec.get("user") is not None:
        argv += ["-S", str(spec["user"]), "-G", str(spec.get("group", spec["user"]))]
    try:
        result = subprocess.run(
            [*argv, "--", "env", "-i", *(f"{k}={v}" for k, v in spec["env"].items()), *command],
            capture_output=True,
            timeout=timeout + 2,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def run_probe(probe: Probe, host: str, run_command: Callable[[tuple[str, ...], float], bool]) -> bool:
    """``probe`` against ``host`` (HTTP, TCP); an exec probe through ``run_command(argv, timeout)``,
    which runs it inside the container."""
    timeout = max(1.0, probe.timeout)
    if probe.kind == "http":
        return http_ok(host, probe.port or 80, probe.path or "/", timeout)
    if probe.kind == "tcp":
        return tcp_ok(host, probe.port or 0, timeout)
    return run_command(probe.command, timeout)


def passes(rec: ProcessRecord, probe: Probe) -> bool:
    return run_probe(probe, rec.host, lambda command, timeout: exec_ok(rec, command, timeout))
