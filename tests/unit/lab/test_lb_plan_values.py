"""Each site's load balancer twin takes its timeouts, its HSTS header and its body limit from the
plan (the platform's documented default where the plan sets none), never from a value the lab
wrote for every platform: a copy of each shipped plan is edited, the site rendered as ``lab up``
renders it, and the HAProxy config checked (tests/integration/lab/test_lb_limits.py runs it)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from skyfleet.lab.errors import LabError
from skyfleet.lab.targets import aws, gcp, onprem
from skyfleet.plan import Plan
from tests.support.lab_sites import lb_config, resource, site_twin

NGINX = "nginx.ingress.kubernetes.io/"
# The plan's own names (what the tests edit), spelled out rather than taken from the targets.
ALB_HSTS = "routingHttpResponseStrictTransportSecurityHeaderValue"
CLOUD_RUN = "gcp:cloudrunv2/service:Service"
BACKEND_SERVICE = "gcp:compute/backendService:BackendService"
URL_MAP = "gcp:compute/uRLMap:URLMap"
HTTPS_PROXY = "gcp:compute/targetHttpsProxy:TargetHttpsProxy"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"


@pytest.fixture(autouse=True)
def no_redis_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The targets name this machine's redis-server build in a deviation; the unit tier runs none."""
    for target in (aws, gcp, onprem):
        monkeypatch.setattr(target, "redis_version", lambda: "7.0-test")


def timeouts(config: str) -> dict[str, float]:
    """The defaults section's timeouts, in seconds."""
    found = re.findall(r"^  timeout (connect|client|server|http-keep-alive) (\d+)(ms|s)$", config, re.M)
    return {name: int(value) / (1000 if unit == "ms" else 1) for name, value, unit in found}


def hsts(config: str) -> str | None:
    """The Strict-Transport-Security value the load balancer adds (one HAProxy argument)."""
    match = re.search(r"^  http-response set-header Strict-Transport-Security (.*)$", config, re.M)
    return match.group(1).removeprefix("'").removesuffix("'") if match else None


def body_limit(config: str) -> int | None:
    match = re.search(r"^  http-request deny deny_status 413 if \{ req\.body_size gt (\d+) \}$", config, re.M)
    return int(match.group(1)) if match else None


def rendered(
    stack: str, tmp_path: Path, edit: Callable[[Plan], object] | None = None
) -> tuple[str, list[str]]:
    site = site_twin(stack, tmp_path, edit)
    return lb_config(site, tmp_path), site.deviations


# aws: the ALB's idle timeout, the HTTPS listener's HSTS value, AWS's 10 s connect timeout.


def alb(plan: Plan) -> dict[str, object]:
    return resource(plan, aws.ALB, "lb-alb").inputs


def https_listener(plan: Plan) -> dict[str, object]:
    return resource(plan, aws.LISTENER, "lb-https").inputs


def test_aws_shipped_plan(tmp_path: Path) -> None:
    config, _ = rendered("aws-prod", tmp_path)
    # The shipped ALB plans idleTimeout 60 and HSTS "max-age=31536000; includeSubDomains".
    assert timeouts(config) == {
        "connect": 10,
        "client": 60,
        "server": 60,
        "http-keep-alive": 60,
    }
    assert hsts(config) == "max-age=31536000; includeSubDomains"
    assert body_limit(config) is None


def test_aws_idle_timeout_is_the_albs(tmp_path: Path) -> None:
    config, _ = rendered("aws-prod", tmp_path, lambda plan: alb(plan).update(idleTimeout=17.0))
    assert timeouts(config) == {
        "connect": 10,
        "client": 17,
        "server": 17,
        "http-keep-alive": 17,
    }


def test_aws_idle_timeout_unset_is_awss_default(tmp_path: Path) -> None:
    config, _ = rendered("aws-prod", tmp_path, lambda plan: alb(plan).pop("idleTimeout"))
    assert timeouts(config)["server"] == timeouts(config)["client"] == 60


def test_aws_hsts_is_the_listeners(tmp_path: Path) -> None:
    def edit(plan: Plan) -> None:
        https_listener(plan)[ALB_HSTS] = "max-age=600; preload"

    config, _ = rendered("aws-prod", tmp_path, edit)
    assert hsts(config) == "max-age=600; preload"


def test_aws_no_hsts_in_the_plan_adds_none(tmp_path: Path) -> None:
    config, _ = rendered("aws-prod", tmp_path, lambda plan: https_listener(plan).pop(ALB_HSTS))
    assert "Strict-Transport-Security" not in config


# gcp: the Cloud Run service's request timeout, the HTTPS proxy's keep-alive, HSTS only where the
# backend service or URL map adds it, Cloud Run's 32 MiB for an HTTP/1 container.


def api_template(plan: Plan) -> dict[str, object]:
    return resource(plan, CLOUD_RUN, "api").inputs["template"]


def test_gcp_shipped_plan(tmp_path: Path) -> None:
    config, deviations = rendered("gcp-prod", tmp_path)
    # The shipped plan sets no template timeout (Cloud Run: 300 s), no proxy keep-alive (610 s).
    assert timeouts(config) == {
        "connect": 5,
        "client": 300,
        "server": 300,
        "http-keep-alive": 610,
    }
    assert hsts(config) is None and "Strict-Transport-Security" not in config  # Google adds none
    assert body_limit(config) == 32 * 1024 * 1024
    assert any("the lab's is 5 s" in d and "the request timeout, 300 s" in d for d in deviations)


def test_gcp_request_timeout_is_the_cloud_run_services(tmp_path: Path) -> None:
    config, deviations = rendered("gcp-prod", tmp_path, lambda plan: api_template(plan).update(timeout="45s"))
    assert timeouts(config)["server"] == timeouts(config)["client"] == 45
    assert any("the request timeout, 45 s" in d for d in deviations)


def test_gcp_keep_alive_is_the_https_proxys(tmp_path: Path) -> None:
    def edit(plan: Plan) -> None:
        resource(plan, HTTPS_PROXY, "https").inputs["httpKeepAliveTimeoutSec"] = 120

    config, _ = rendered("gcp-prod", tmp_path, edit)
    assert timeouts(config)["http-keep-alive"] == 120


def test_gcp_hsts_is_the_backend_services_custom_header(tmp_path: Path) -> None:
    def edit(plan: Plan) -> None:
        backend = resource(plan, BACKEND_SERVICE, "api-backend")
        backend.inputs["customResponseHeaders"] = ["X-Other: 1", "Strict-Transport-Security: max-age=86400"]

    config, _ = rendered("gcp-prod", tmp_path, edit)
    assert hsts(config) == "max-age=86400"


def test_gcp_hsts_from_the_url_maps_header_action(tmp_path: Path) -> None:
    def edit(plan: Plan) -> None:
        resource(plan, URL_MAP, "https").inputs["headerAction"] = {
            "responseHeadersToAdd": [{"headerName": "Strict-Transport-Security", "headerValue": "max-age=5"}]
        }

    config, _ = rendered("gcp-prod", tmp_path, edit)
    assert hsts(config) == "max-age=5"


def test_gcp_an_h2c_container_has_no_body_limit(tmp_path: Path) -> None:
    def edit(plan: Plan) -> None:
        api_template(plan)["containers"][0]["ports"]["name"] = "h2c"  # type: ignore[index]

    config, _ = rendered("gcp-prod", tmp_path, edit)
    assert body_limit(config) is None


def test_gcp_a_timeout_on_a_serverless_neg_backend_stops_lab_up(tmp_path: Path) -> None:
    def edit(plan: Plan) -> None:
        resource(plan, BACKEND_SERVICE, "api-backend").inputs["timeoutSec"] = 120

    with pytest.raises(LabError, match=r"gcp-prod: .*'api-backend' sets timeoutSec 120.*serverless NEGs"):
        site_twin("gcp-prod", tmp_path, edit)


# onprem: the Ingress's ingress-nginx annotations (their defaults where unset); the controller's
# ConfigMap, outside the plan, at ingress-nginx's defaults and said so.


def ingress_annotations(plan: Plan) -> dict[str, str]:
    return resource(plan, INGRESS, "api").inputs["metadata"]["annotations"]


def test_onprem_shipped_plan(tmp_path: Path) -> None:
    config, deviations = rendered("onprem-prod", tmp_path)
    # The shipped Ingress sets proxy-body-size 1m and no proxy timeout (5 / 60 / 60 s).
    assert timeouts(config) == {
        "connect": 5,
        "client": 60,
        "server": 60,
        "http-keep-alive": 75,
    }
    assert body_limit(config) == 1024 * 1024
    assert hsts(config) == "max-age=31536000; includeSubDomains"
    assert any("controller ConfigMap" in d and "max-age=31536000; includeSubDomains" in d for d in deviations)
    assert any("proxy-connect-timeout 5 s" in d for d in deviations)


def test_onprem_proxy_timeouts_and_body_size_are_the_ingresss(tmp_path: Path) -> None:
    def edit(plan: Plan) -> None:
        ingress_annotations(plan).update(
            {
                NGINX + "proxy-connect-timeout": "2",
                NGINX + "proxy-read-timeout": "120",
                NGINX + "proxy-send-timeout": "120",
                NGINX + "proxy-body-size": "8k",
            }
        )

    config, deviations = rendered("onprem-prod", tmp_path, edit)
    assert timeouts(config)["connect"] == 2
    assert timeouts(config)["server"] == 120
    assert body_limit(config) == 8 * 1024
    assert not any("proxy-send-timeout" in d for d in deviations)  # set, and run as the read one


def test_onprem_a_send_timeout_unlike_the_read_one_is_a_deviation(tmp_path: Path) -> None:
    config, deviations = rendered(
        "onprem-prod",
        tmp_path,
        lambda plan: ingress_annotations(plan).update({NGINX + "proxy-send-timeout": "30"}),
    )
    assert timeouts(config)["server"] == 60
    assert any("proxy-send-timeout 30 s is not run apart" in d for d in deviations)


@pytest.mark.parametrize(("size", "limit"), [("2m", 2 * 1024**2), ("1G", 1024**3), ("100", 100), ("0", None)])
def test_onprem_body_size_as_nginx_reads_it(tmp_path: Path, size: str, limit: int | None) -> None:
    config, _ = rendered(
        "onprem-prod",
        tmp_path,
        lambda plan: ingress_annotations(plan).update({NGINX + "proxy-body-size": size}),
    )
    assert body_limit(config) == limit


@pytest.mark.parametrize(
    ("key", "value"),
    [("proxy-read-timeout", "60s"), ("proxy-connect-timeout", "x"), ("proxy-body-size", "1 mb")],
)
def test_onprem_an_annotation_nginx_cannot_read_stops_lab_up(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(LabError, match=rf"onprem-prod: Ingress api: annotation {NGINX}{key} '{value}'"):
        site_twin(
            "onprem-prod", tmp_path, lambda plan: ingress_annotations(plan).update({NGINX + key: value})
        )
