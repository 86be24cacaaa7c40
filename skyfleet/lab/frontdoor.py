"""The global front door: HAProxy with active and passive health checks over every replica.

It is the lab's Route 53 / Global Accelerator / GCP global LB: it spreads traffic over the
sites (weighted active-active, or failover with the other sites as backups), checks every
replica's ``/readyz``, marks a server down on live errors too, and retries a request that
could not reach a server on another one, so a lost site costs no failed request.
HAProxy runs in the foreground as a lab child; its admin socket and its log (ISO
timestamps) let drills read server states and the exact time of every health transition.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_app.contract import READINESS_PATH
from infra.spec import Routing
from skyfleet.lab.config import LabConfig
from skyfleet.lab.errors import LabError
from skyfleet.lab.state import LabState, load_state

BACKEND = "agents"
FAIL_OPEN_BACKEND = "agents_fail_open"
FAIL_OPEN_SUFFIX = "-failopen"
# With ``option log-health-checks`` HAProxy logs every check result that changes a server's
# health counter and every transition, e.g.
# "2026-11-24T03:02:21.850815+00:00 Health check for server agents/aws-api-0 failed, reason:
#  Layer4 connection problem, info: "Connection refused", check duration: 0ms, status: 1/2 UP."
# "2026-11-24T03:02:21.850896+00:00 Server agents/aws-api-0 is DOWN. 0 active and ..."
_CHECK = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\S+) Health check for (?:backup )?server "
    r"(?P<backend>[\w.-]+)/(?P<server>[\w.-]+) "
    r"(?P<result>failed|succeeded), reason: (?P<reason>.*?), status: "
)
_TRANSITION = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\S+) (?:Backup )?Server (?P<backend>[\w.-]+)/(?P<server>[\w.-]+) "
    r"is (?P<state>UP|DOWN)\b(?:, reason: (?P<reason>.*?)(?:, check duration|\. \d+ active|$))?"
)


@dataclass(frozen=True)
class Server:
    name: str
    site: str
    host: str
    port: int


def render_haproxy_cfg(
    config: LabConfig,
    *,
    servers: list[Server],
    http_bind: str,
    https_bind: str | None,
    pem_file: Path | None,
    admin_socket: Path,
) -> str:
    """HAProxy config: one frontend (HTTP, and HTTPS when TLS is on), one backend of all replicas."""
    interval = config.health_interval_ms
    fast = max(100, interval // 4)
    timeout_server = config.request_timeout_ms
    lines = [
        "global",
        # ISO timestamps with microseconds: health transitions become measurable events.
        "  log stdout format iso local0 info",
        f"  stats socket {admin_socket} mode 600 level admin",
        "  maxconn 4096",
        "  hard-stop-after 5s",
        "",
        "defaults",
        "  mode http",
        "  log global",
        "  option httplog",
        "  option dontlognull",
        "  timeout connect 500ms",
        "  timeout client 60s",
        f"  timeout server {timeout_server}ms",
        f"  timeout check {min(1000, interval)}ms",
        "  timeout http-request 10s",
        # Retries: a request that could not reach a server (or got nothing back from a
        # dying one) is sent again, to another server.
        "  retries 3",
        "  option redispatch 1",
        "  retry-on conn-failure empty-response junk-response response-timeout 503",
        "  option http-buffer-request",
        "",
        "frontend front_door",
        f"  bind {http_bind}",
    ]
    if https_bind and pem_file:
        lines.append(f"  bind {https_bind} ssl crt {pem_file} alpn http/1.1")
    lines += [
        "  http-request set-header X-Forwarded-Proto https if { ssl_fc }",
        # Fail open, as Route 53 and cloud LBs do: if every replica fails /readyz at once (all
        # sites briefly see no Redis primary while Sentinel promotes one), send traffic to the
        # replicas that still accept connections; they ride out the failover themselves.
        f"  use_backend {FAIL_OPEN_BACKEND} if {{ nbsrv({BACKEND}) eq 0 }}",
        f"  default_backend {BACKEND}",
        "",
        f"backend {BACKEND}",
        "  balance roundrobin",
        f"  option httpchk GET {READINESS_PATH}",
        "  http-check expect status 200",
        "  option log-health-checks",
    ]
    failover = config.routing == Routing.FAILOVER
    if failover:
        lines.append("  option allbackups")  # when the primary site is gone, all others share
    # Active checks at the configured interval; passive: live errors count toward mark-down.
    lines.append(
        f"  default-server check inter {interval}ms fastinter {fast}ms downinter {interval}ms "
        f"fall {config.health_fall} rise {config.health_rise} "
        "observe layer7 error-limit 3 on-error mark-down"
    )
    lines += _server_lines(config, servers)
    if not failover:
        # Fail open inside this backend too: backup twins of every replica take the traffic
        # only while no checked server is UP, so a retry or redispatch that finds the checked
        # servers all down still has somewhere to go. A twin tracks its server's connect check
        # in the fail-open backend: an unready replica stays eligible, an unreachable one (a
        # killed process, a cut-off site) does not, so retries are not spent on 500 ms
        # connect timeouts to a partitioned site. It follows that server into MAINT as well.
        lines.append("  option allbackups")
        lines += [
            f"  server {s.name}{FAIL_OPEN_SUFFIX} {s.host}:{s.port} "
            f"weight {config.weight(s.site)} backup no-check track {FAIL_OPEN_BACKEND}/{s.name}"
            for s in servers
        ]
    lines += [
        "",
        f"backend {FAIL_OPEN_BACKEND}",
        "  balance roundrobin",
        *(["  option allbackups"] if failover else []),
        # Connect checks only: a dead process is still excluded, an unready one is not.
        f"  default-server check inter {interval}ms fall 1 rise 1",
        *_server_lines(config, servers),
    ]
    return "\n".join(lines) + "\n"


def _server_lines(config: LabConfig, servers: list[Server]) -> list[str]:
    lines = []
    for server in servers:
        if config.routing == Routing.FAILOVER:
            extra = "" if server.site == config.primary else " backup"
        else:
            extra = f" weight {config.weight(server.site)}"
        lines.append(f"  server {server.name} {server.host}:{server.port}{extra}")
    return lines


def admin_command(socket_path: str | Path, command: str, timeout: float = 2.0) -> str:
    """Run one command on HAProxy's admin socket and return its whole answer."""
    path = str(socket_path)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(path)
            conn.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
    except OSError as exc:
        raise LabError(f"front door admin socket {path}: {exc}") from None
    return b"".join(chunks).decode()


def set_maintenance(state: LabState, servers: list[str], on: bool) -> None:
    """Take ``servers`` out of rotation (MAINT) in both backends, or put them back.

    Used while a healed site reconciles: its apps would pass /readyz against a stale local
    Redis primary until Sentinel demotes it, and must not serve (stale reads) meanwhile.
    """
    target = "maint" if on else "ready"
    for backend in (state.front_door.backend, FAIL_OPEN_BACKEND):
        for server in servers:
            answer = admin_command(
                state.front_door.admin_socket, f"set server {backend}/{server} state {target}"
            )
            if answer.strip():
                raise LabError(f"front door: cannot set {backend}/{server} to {target}: {answer.strip()}")


def _site_of(state: LabState, server: str) -> str:
    for rec in state.processes:
        if rec.name == server:
            return rec.site
    return server.split("-", 1)[0]


def stat_rows(state: LabState) -> list[dict[str, str]]:
    """HAProxy's ``show stat`` table (every proxy and server), one dict per row."""
    text = admin_command(state.front_door.admin_socket, "show stat")
    return list(csv.DictReader(io.StringIO(text.lstrip("# "))))


def server_states(state_dir: str) -> list[dict[str, Any]]:
    """Live state of every front door server, read from HAProxy's admin socket."""
    state = load_state(state_dir)
    out = []
    for row in stat_rows(state):
        if row.get("pxname") != state.front_door.backend or row.get("svname") in ("BACKEND", "FRONTEND"):
            continue
        if row["svname"].endswith(FAIL_OPEN_SUFFIX):
            continue  # the unchecked fail-open twins are not servers a drill watches
        out.append(
            {
                "server": row["svname"],
                "site": _site_of(state, row["svname"]),
                "status": row["status"],
                "backup": row.get("bck") == "1",
                "weight": int(row.get("weight") or 0),
                "check_status": row.get("check_status", ""),
                "last_change_seconds": int(row.get("lastchg") or 0),
                "checks_failed": int(row.get("chkfail") or 0),
                "times_down": int(row.get("chkdown") or 0),
                "requests": int(row.get("stot") or 0),
                "retries": int(row.get("wretr") or 0),
                "redispatches": int(row.get("wredis") or 0),
                "http_5xx": int(row.get("hrsp_5xx") or 0),
            }
        )
    return out


def health_events(state_dir: str, since: float = 0.0) -> list[dict[str, Any]]:
    """Front door health events at or after ``since`` (epoch s), oldest first.

    ``state`` is ``FAIL`` (one failed check, active or passive), ``PASS`` (one passed check
    while a server is rising), or the transitions ``DOWN`` and ``UP``. Parsed from HAProxy's
    log, whose lines carry ISO timestamps with microseconds. A drill's detection time is the
    first FAIL (or DOWN) of an affected server after the fault.
    """
    state = load_state(state_dir)
    try:
        lines = Path(state.front_door.log_file).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    events = []
    last_reason: dict[str, str] = {}
    for line in lines:
        match = _CHECK.match(line) or _TRANSITION.match(line)
        if not match or match.group("backend") != state.front_door.backend:
            continue
        server = match.group("server")
        if server.endswith(FAIL_OPEN_SUFFIX):
            continue  # a twin's transitions mirror its tracked server's; drills watch the servers
        if "result" in match.groupdict():
            kind = "FAIL" if match.group("result") == "failed" else "PASS"
            reason = match.group("reason").strip()
            last_reason[server] = reason
        else:
            kind = match.group("state")
            reason = (match.group("reason") or last_reason.get(server, "")).strip()
        when = datetime.datetime.fromisoformat(match.group("time")).timestamp()
        if when < since:
            continue
        events.append(
            {"time": when, "server": server, "site": _site_of(state, server), "state": kind, "reason": reason}
        )
    return events
