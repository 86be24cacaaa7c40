"""The on-prem site's load balancer twin retries as ingress-nginx does, run by real HAProxy from
``skyfleet.lab.lb.render``: a read a pod dropped without an answer is tried on the next pod; a
POST a pod had is not (it may have run there), so the client gets the balancer's error and no
second pod ever sees it."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from skyfleet.lab import lb
from skyfleet.lab.pki import CertificateAuthority
from skyfleet.testing.servers import Proc, free_port, serve

ADDRESS = "127.0.0.1"


class Pod(threading.Thread):
    """A backend on loopback that answers its readiness probe; for anything else it answers
    200 (``drops`` False) or reads the request and closes without a word. It records each
    request line it was sent."""

    def __init__(self, *, drops: bool) -> None:
        super().__init__(daemon=True)
        self.drops = drops
        self.sock = socket.create_server((ADDRESS, 0))
        self.port = self.sock.getsockname()[1]
        self.seen: list[str] = []

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                line = data.split(b"\r\n", 1)[0].decode()
                if line.startswith("GET /readyz"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                    continue
                self.seen.append(line)
                if not self.drops:
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")


@pytest.fixture
def ingress(tmp_path: Path) -> Iterator[tuple[str, Pod, Pod, Path]]:
    """The ingress twin of the shipped onprem site's shape (2 retries, passive checks) in front of
    a pod that drops requests and one that answers; HAProxy on loopback ports of its own."""
    dropper, answerer = Pod(drops=True), Pod(drops=False)
    dropper.start()
    answerer.start()
    ca = CertificateAuthority("lb retry test")
    pem = tmp_path / "lb.pem"
    pem.write_bytes(ca.issue(["agents.test"]).bundle)
    roots = tmp_path / "roots.pem"
    roots.write_bytes(ca.pem)
    spec = lb.LoadBalancerSpec(
        site="onprem-test",
        kind="ingress",
        names=["agents.test"],
        certificate="test",
        issuer="test",
        hosts=None,
        check=lb.Check(path="/readyz", interval_s=5, timeout_s=1, fall=3, rise=1),
        retries=2,
        passive=True,
        backends=[
            lb.Backend("onprem-test/api-0", ADDRESS, dropper.port),
            lb.Backend("onprem-test/api-1", ADDRESS, answerer.port),
        ],
    )
    port, plain = free_port(), free_port()
    # The rendered config listens on 443 and 80; the test moves them to free loopback ports.
    config = lb.render(spec, address=ADDRESS, pem=pem, admin_socket=tmp_path / "admin.sock")
    config = config.replace(f"{ADDRESS}:443", f"{ADDRESS}:{port}").replace(
        f"{ADDRESS}:80\n", f"{ADDRESS}:{plain}\n"
    )
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(config)
    proc, _ = serve(
        lambda p: Proc("lb-test", ["haproxy", "-db", "-f", str(cfg)]), port, fixed=True, what="haproxy"
    )
    try:
        yield f"https://{ADDRESS}:{port}", dropper, answerer, roots
    finally:
        proc.stop()
        dropper.sock.close()
        answerer.sock.close()


def test_a_read_a_pod_dropped_is_retried_and_a_post_it_had_is_not(
    ingress: tuple[str, Pod, Pod, Path],
) -> None:
    url, dropper, answerer, roots = ingress
    context = ssl.create_default_context(cafile=str(roots))
    context.check_hostname = False

    def send(method: str, path: str) -> int:
        # A connection per request: HAProxy closes a kept one without an answer (for the client
        # to retry, as browsers do) where a first request gets its 502.
        with httpx.Client(base_url=url, verify=context, timeout=10) as client:
            body = {"content": "hi"} if method == "POST" else None
            return client.request(method, path, json=body).status_code

    # Round robin: of a few requests, some reach the dropping pod first.
    reads = [send("GET", f"/v1/sessions/s{i}") for i in range(4)]
    posts = [send("POST", f"/v1/sessions/s{i}/messages") for i in range(4)]
    assert reads == [200] * 4
    assert any(line.startswith("GET ") for line in dropper.seen)  # retried from there
    dropped = [line for line in dropper.seen if line.startswith("POST ")]
    answered = [line for line in answerer.seen if line.startswith("POST ")]
    assert dropped, "no POST reached the dropping pod: the test proved nothing"
    assert not set(dropped) & set(answered)  # no POST reached both pods
    assert posts.count(200) == len(answered)
    assert posts.count(502) == len(dropped)
