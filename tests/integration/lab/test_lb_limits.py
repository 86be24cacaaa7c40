"""The sites' load balancer twins act on the plan's limits, run by real HAProxy from
``skyfleet.lab.lb.render`` with the spec each target builds from its shipped plan (its pods
replaced by one on loopback): ingress-nginx's ``proxy-body-size`` of the onprem Ingress answers
a larger declared body 413 before any pod sees it and lets one of exactly that size through; the
ALB's idle timeout (here edited to 1 s) answers 504 for a target silent that long. And HAProxy
accepts each shipped site's config as ``lab up`` writes it."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from skyfleet.lab import lb
from skyfleet.lab.pki import CertificateAuthority
from skyfleet.lab.targets import aws, onprem
from skyfleet.plan import Plan
from tests.support.lab_sites import ADDRESS, Pod, haproxy, lb_config, resource, site_twin


def only(spec: lb.LoadBalancerSpec, pod: Pod) -> lb.LoadBalancerSpec:
    return dataclasses.replace(spec, backends=[lb.Backend(f"{spec.site}/api-0", ADDRESS, pod.port)])


def declared_only(url: str, context: ssl.SSLContext, host: str, length: int) -> bytes:
    """The status line answered to a POST that declares ``length`` bytes and sends none of them
    (ingress-nginx judges the declared length before reading the body; so does the twin)."""
    _, _, hostport = url.partition("://")
    address, _, port = hostport.partition(":")
    with (
        socket.create_connection((address, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(
            f"POST /v1/sessions HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
            f"content-length: {length}\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n" not in answer:
            chunk = tls.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_a_body_over_the_ingress_proxy_body_size_gets_413_before_any_pod(tmp_path: Path) -> None:
    site = site_twin("onprem-prod", tmp_path)
    assert site.lb is not None and site.lb.hosts
    ingress = resource(site.plan, onprem.INGRESS, "api").inputs["metadata"]["annotations"]
    assert ingress["nginx.ingress.kubernetes.io/proxy-body-size"] == "1m"  # the shipped Ingress's
    limit = 1024 * 1024
    pod = Pod()
    pod.start()
    host = site.lb.hosts[0]
    try:
        with haproxy(only(site.lb, pod), tmp_path) as (url, context):
            assert declared_only(url, context, host, limit + 1) == b"HTTP/1.1 413 Payload Too Large"
            assert pod.seen == []
            with httpx.Client(base_url=url, verify=context, timeout=10, headers={"host": host}) as client:
                response = client.post("/v1/sessions", content=b"x" * limit)
            assert response.status_code == 200
            assert pod.seen == [("POST /v1/sessions HTTP/1.1", limit)]
            # ingress-nginx's HSTS, from its ConfigMap's defaults (not in the plan: a deviation).
            assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    finally:
        pod.sock.close()


def test_a_target_silent_for_the_albs_idle_timeout_gets_504(tmp_path: Path) -> None:
    def edit(plan: Plan) -> None:
        resource(plan, aws.ALB, "lb-alb").inputs["idleTimeout"] = 1.0

    site = site_twin("aws-prod", tmp_path, edit)
    assert site.lb is not None
    slow, quick = Pod(delay=3.0), Pod(delay=0.2)
    slow.start()
    quick.start()
    try:
        for pod, status in ((slow, 504), (quick, 200)):
            with (
                haproxy(only(site.lb, pod), tmp_path) as (url, context),
                httpx.Client(base_url=url, verify=context, timeout=10) as client,
            ):
                started = time.monotonic()
                response = client.get("/v1/sessions/s1")
                elapsed = time.monotonic() - started
            assert response.status_code == status
            assert pod.seen == [("GET /v1/sessions/s1 HTTP/1.1", 0)]
            if status == 504:
                assert 0.9 < elapsed < 2.5, elapsed  # the plan's 1 s, not the old 60 s
            else:
                assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    finally:
        slow.sock.close()
        quick.sock.close()


@pytest.mark.parametrize("stack", ["aws-prod", "gcp-prod", "onprem-prod"])
def test_haproxy_accepts_each_sites_config(tmp_path: Path, stack: str) -> None:
    site = site_twin(stack, tmp_path)
    assert site.lb is not None
    (tmp_path / "lb.pem").write_bytes(CertificateAuthority("haproxy -c test").issue(site.lb.names).bundle)
    path = tmp_path / "haproxy.cfg"
    path.write_text(lb_config(site, tmp_path))
    checked = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "missing timeouts" not in checked.stdout + checked.stderr
