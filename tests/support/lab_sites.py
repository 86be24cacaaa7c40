"""A site's twin as ``lab up`` builds it, without a lab: a shipped stack's plan (planned once per
process), edited by the test on a copy, then the site's target declares and renders it with
every pod at a loopback address. Nothing is started and no file is written, except by
``haproxy``, which runs a rendered load balancer on loopback ports."""

from __future__ import annotations

import contextlib
import copy
import functools
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from skyfleet.lab import lb
from skyfleet.lab.model import PlanValues
from skyfleet.lab.pki import CertificateAuthority
from skyfleet.lab.targets.base import Context, SiteTwin
from skyfleet.lab.twin import TARGETS
from skyfleet.lab.values import LabValues
from skyfleet.plan import Plan, PlannedResource, plan_stack
from skyfleet.testing.edge import ROOT
from skyfleet.testing.servers import Proc, free_port, serve


@functools.cache
def shipped(stack: str) -> Plan:
    return plan_stack(ROOT, stack)


def resource(plan: Plan, typ: str, name: str) -> PlannedResource:
    """The plan's resource of type ``typ`` named ``name``."""
    return next(r for r in plan.of_type(typ) if r.name == name)


def site_twin(stack: str, state_dir: Path, edit: Callable[[Plan], object] | None = None) -> SiteTwin:
    """``stack``'s site as its target builds it from a copy of the shipped plan, ``edit`` applied."""
    plan = copy.deepcopy(shipped(stack))
    if edit is not None:
        edit(plan)
    public = CertificateAuthority("lab sites test roots")
    ctx = Context(
        values=LabValues.new(),
        public_ca=public,
        state_dir=state_dir,
        max_replicas=None,
        hosts_file=lambda site: state_dir / "names" / site / "hosts",
    )
    site = SiteTwin(
        stack=plan.stack,
        target=str(plan.outputs["target"]),
        site=str(plan.outputs.get("site") or plan.stack),
        plan=plan,
        plan_values=PlanValues(plan),
    )
    site.issuers["public"] = public
    target = TARGETS[site.target]
    target.declare(site, ctx)
    pods = [*site.service_pods, *(f"{p.name}-{i}" for p in site.app_pods for i in range(p.replicas))]
    target.render(site, ctx, {pod: f"127.0.{i // 250}.{i % 250 + 2}" for i, pod in enumerate(pods)})
    return site


def lb_config(site: SiteTwin, state_dir: Path) -> str:
    """The HAProxy config ``lab up`` writes for the site's load balancer."""
    assert site.lb is not None
    return lb.render(
        site.lb, address="127.0.0.1", pem=state_dir / "lb.pem", admin_socket=state_dir / "admin.sock"
    )


ADDRESS = "127.0.0.1"


@contextmanager
def haproxy(spec: lb.LoadBalancerSpec, tmp_path: Path) -> Iterator[tuple[str, ssl.SSLContext]]:
    """HAProxy running ``spec`` on loopback ports of its own: its HTTPS URL and a client context."""
    ca = CertificateAuthority("lb twin test")
    pem = tmp_path / "lb.pem"
    pem.write_bytes(ca.issue(spec.names).bundle)
    port, plain = free_port(), free_port()
    # The rendered config listens on 443 and 80; the test moves them to free loopback ports.
    config = lb.render(spec, address=ADDRESS, pem=pem, admin_socket=tmp_path / "admin.sock")
    config = config.replace(f"{ADDRESS}:443", f"{ADDRESS}:{port}").replace(
        f"{ADDRESS}:80\n", f"{ADDRESS}:{plain}\n"
    )
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(config)
    proc, _ = serve(
        lambda p: Proc("lb-twin", ["haproxy", "-db", "-f", str(cfg)]), port, fixed=True, what="haproxy"
    )
    context = ssl.create_default_context(cadata=ca.pem.decode())
    context.check_hostname = False
    try:
        yield f"https://{ADDRESS}:{port}", context
    finally:
        proc.stop()


class Pod(threading.Thread):
    """A backend on loopback: reads each request whole (its Content-Length), and unless it is the
    readiness probe records its request line and body size, waits ``delay`` seconds and answers
    200, or with ``drops`` closes without a word."""

    def __init__(self, delay: float = 0.0, *, drops: bool = False) -> None:
        super().__init__(daemon=True)
        self.delay = delay
        self.drops = drops
        self.sock = socket.create_server((ADDRESS, 0))
        self.port = self.sock.getsockname()[1]
        self.seen: list[tuple[str, int]] = []

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        # The balancer may give up on a slow pod, or refuse a body before it is all sent.
        with conn, contextlib.suppress(OSError):
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            length = next(
                (
                    int(v)
                    for k, _, v in (h.partition(":") for h in lines[1:])
                    if k.lower() == "content-length"
                ),
                0,
            )
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            if not lines[0].startswith("GET /readyz"):
                self.seen.append((lines[0], len(body)))
                if self.drops:
                    return
                time.sleep(self.delay)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
