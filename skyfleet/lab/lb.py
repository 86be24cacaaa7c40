"""A site's load balancer as the plan configures it, run by HAProxy in the site's LB pod.

Each platform's load balancer is rendered with its own behaviour, from the plan's values:

- **ALB** (``aws:lb/*``): the listener's certificate (the ACM certificate's names), the target
  group's health check (path, interval, timeout, healthy and unhealthy thresholds, matcher) and
  no retry: an ALB does not resend a request to another target.
- **Google's global external ALB → Cloud Run** (serverless NEG): the Certificate Manager
  certificate's names; no health check is configured (Cloud Run routes only to instances that
  started and stops at once on one that died), so the lab checks liveness every second.
- **Ingress (ingress-nginx)**: the certificate its issuer signs for the TLS hosts, routing only
  the hosts its rules name (any other host gets 404), endpoints from the pods' readiness probe
  (period and failure threshold), and nginx's default retry (``proxy_next_upstream error
  timeout``, 3 tries): of any request that never reached a pod, and of a sent one only when it
  is idempotent (nginx never passes a POST, LOCK or PATCH on once a pod had it).

Each platform's timeouts and limits come from the plan too, or from the platform's documented
default where the plan leaves them unset (the target says which, and reports what the lab had to
choose as a deviation): the time to connect to a backend (``timeout connect``), to wait for a
backend's next bytes (``timeout server``: a silent backend gets 504), for a client's next bytes
in the middle of a request (``timeout client``) and for a kept-alive client's next request
(``timeout http-keep-alive``); the ``Strict-Transport-Security`` value added to the backends'
answers (none where the platform adds none); and the largest request body (a larger declared one
gets 413 before any backend sees it).

HTTP on port 80 only redirects to HTTPS on every platform. The admin socket gives the lab the
servers' states; the log (ISO timestamps) gives every health transition.
"""

from __future__ import annotations

import csv
import io
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

BACKEND = "app"


@dataclass(frozen=True)
class Check:
    path: str
    interval_s: float
    timeout_s: float
    fall: int
    rise: int
    expect_status: str = "200"


@dataclass(frozen=True)
class Backend:
    name: str  # the pod's key
    address: str
    port: int


@dataclass
class LoadBalancerSpec:
    site: str
    kind: Literal["alb", "google", "ingress"]
    names: list[str]  # the names its certificate covers
    certificate: str  # the plan resource those names come from, for error messages
    issuer: str  # the CA that signs it: "public" or a cert-manager issuer name
    hosts: list[str] | None  # host rules (Ingress); None routes any host
    check: Check
    retries: int
    # A failed connection takes the server out at once (nginx's max_fails, Cloud Run's own
    # knowledge of a dead instance); an ALB only trusts its health checks.
    passive: bool = False
    backends: list[Backend] = field(default_factory=list)
    # Timeouts in seconds and limits, each a value of the plan or the platform's documented
    # default (every target sets each; None renders nothing, HAProxy's own behaviour).
    connect_timeout_s: float | None = None  # connecting to a backend
    server_timeout_s: float | None = None  # a backend silent this long: 504
    client_timeout_s: float | None = None  # a client silent this long mid-request: closed
    keep_alive_s: float | None = None  # a kept-alive client connection idle this long: closed
    hsts: str | None = None  # the Strict-Transport-Security value added; None adds none
    max_body_bytes: int | None = None  # a larger declared request body gets 413; None: no limit


def _seconds(value: float) -> str:
    return f"{round(value * 1000)}ms"


def _timeouts(spec: LoadBalancerSpec) -> list[str]:
    timeouts = {
        "connect": spec.connect_timeout_s,
        "client": spec.client_timeout_s,
        "server": spec.server_timeout_s,
        "http-keep-alive": spec.keep_alive_s,
    }
    return [f"  timeout {name} {_seconds(value)}" for name, value in timeouts.items() if value is not None]


def header_value(value: str) -> str:
    """``value`` as one HAProxy argument that adds it verbatim (single-quoted: no variable
    expansion; ``%`` doubled, as a log-format string takes it literally)."""
    if "'" in value or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{value!r}: not a header value the load balancer can add")
    return "'" + value.replace("%", "%%") + "'"


def render(
    spec: LoadBalancerSpec, *, address: str, pem: Path, admin_socket: Path, more: Sequence[str] = ()
) -> str:
    """HAProxy's config for ``spec``, listening at ``address`` and every address in ``more``."""
    c = spec.check
    lines = [
        "global",
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
        "  option log-health-checks",
        *_timeouts(spec),
        f"  retries {spec.retries}",
        *(
            ["  retry-on conn-failure empty-response response-timeout", "  option redispatch"]
            if spec.retries
            else []
        ),
        "",
        "frontend http",
        *(f"  bind {a}:80" for a in (address, *more)),
        "  http-request redirect scheme https code 301",
        "",
        "frontend https",
        *(f"  bind {a}:443 ssl crt {pem}" for a in (address, *more)),
        *(
            [f"  http-response set-header Strict-Transport-Security {header_value(spec.hsts)}"]
            if spec.hsts is not None
            else []
        ),
        # A request a backend already had may have run there: only a failed connection retries it.
        *(
            ["  http-request disable-l7-retry if !{ method GET HEAD OPTIONS PUT DELETE TRACE }"]
            if spec.retries
            else []
        ),
    ]
    if spec.hosts is not None:
        hosts = " ".join(spec.hosts)
        lines += [
            f"  acl routed hdr(host),field(1,:),lower -m str {hosts}",
            "  http-request return status 404 content-type text/plain string not-found unless routed",
        ]
    if spec.max_body_bytes is not None:
        # The body's declared length (Content-Length; of a chunked body, what has arrived).
        lines.append(f"  http-request deny deny_status 413 if {{ req.body_size gt {spec.max_body_bytes} }}")
    lines += [
        f"  default_backend {BACKEND}",
        "",
        f"backend {BACKEND}",
        "  balance roundrobin",
        f"  option httpchk GET {c.path}",
        f"  http-check expect status {c.expect_status}",
        f"  default-server check inter {_seconds(c.interval_s)} fall {c.fall} rise {c.rise}"
        + (" observe layer4 error-limit 1 on-error mark-down" if spec.passive else ""),
        f"  timeout check {_seconds(c.timeout_s)}",
    ]
    lines += [f"  server {b.name.replace('/', '.')} {b.address}:{b.port}" for b in spec.backends]
    return "\n".join(lines) + "\n"


def server_names(backends: Sequence[Backend]) -> dict[str, str]:
    """HAProxy server name -> pod key."""
    return {b.name.replace("/", "."): b.name for b in backends}


def _admin(admin_socket: Path, command: str, timeout: float = 2.0) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(admin_socket))
        sock.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def server_states(admin_socket: Path) -> list[dict[str, str]]:
    """Each backend server's state at the load balancer (HAProxy's ``show stat``)."""
    text = _admin(admin_socket, "show stat").lstrip("# ")
    rows = csv.DictReader(io.StringIO(text))
    return [
        {"server": r["svname"], "status": r["status"], "check": r.get("check_status", "")}
        for r in rows
        if r.get("pxname") == BACKEND and r["svname"] not in ("BACKEND", "FRONTEND")
    ]
