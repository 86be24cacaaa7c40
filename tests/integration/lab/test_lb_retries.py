"""The on-prem site's load balancer twin retries as ingress-nginx does, run by real HAProxy from
``skyfleet.lab.lb.render``: a read a pod dropped without an answer is tried on the next pod; a
POST a pod had is not (it may have run there), so the client gets the balancer's error and no
second pod ever sees it."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from skyfleet.lab import lb
from tests.support.lab_sites import ADDRESS, Pod, haproxy, site_twin


@pytest.fixture
def ingress(tmp_path: Path) -> Iterator[tuple[str, str, Pod, Pod, ssl.SSLContext]]:
    """The shipped onprem site's ingress twin, as ``lab up`` builds it from the plan, in front of
    a pod that drops requests and one that answers: its URL, its host, the pods, a client context."""
    dropper, answerer = Pod(drops=True), Pod(drops=False)
    dropper.start()
    answerer.start()
    site = site_twin("onprem-prod", tmp_path)
    assert site.lb is not None and site.lb.hosts and site.lb.retries
    spec = dataclasses.replace(
        site.lb,
        # With the body limit's check in the config HAProxy 2.6 was seen not to replay a POST
        # either way: the retry rule must hold without it.
        max_body_bytes=None,
        backends=[
            lb.Backend(f"{site.site}/api-0", ADDRESS, dropper.port),
            lb.Backend(f"{site.site}/api-1", ADDRESS, answerer.port),
        ],
    )
    try:
        with haproxy(spec, tmp_path) as (url, context):
            yield url, site.lb.hosts[0], dropper, answerer, context
    finally:
        dropper.sock.close()
        answerer.sock.close()


def test_a_read_a_pod_dropped_is_retried_and_a_post_it_had_is_not(
    ingress: tuple[str, str, Pod, Pod, ssl.SSLContext],
) -> None:
    url, host, dropper, answerer, context = ingress

    def send(method: str, path: str) -> int:
        # A connection per request: HAProxy closes a kept one without an answer (for the client
        # to retry, as browsers do) where a first request gets its 502.
        with httpx.Client(base_url=url, verify=context, timeout=10, headers={"host": host}) as client:
            body = {"content": "hi"} if method == "POST" else None
            return client.request(method, path, json=body).status_code

    # Round robin: of a few requests, some reach the dropping pod first.
    reads = [send("GET", f"/v1/sessions/s{i}") for i in range(4)]
    posts = [send("POST", f"/v1/sessions/s{i}/messages") for i in range(4)]
    assert reads == [200] * 4
    assert any(line.startswith("GET ") for line, _ in dropper.seen)  # retried from there
    dropped = [line for line, _ in dropper.seen if line.startswith("POST ")]
    answered = [line for line, _ in answerer.seen if line.startswith("POST ")]
    assert dropped, "no POST reached the dropping pod: the test proved nothing"
    assert not set(dropped) & set(answered)  # no POST reached both pods
    assert posts.count(200) == len(answered)
    assert posts.count(502) == len(dropped)
