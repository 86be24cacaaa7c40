"""GCP faults on a Cloud Run service: ingress set to internal, or traffic to 0.

Cloud Run's traffic split must add up to 100 %, so "traffic to 0" is done the way Cloud Run
allows: service-level manual scaling to 0 instances, which leaves nothing to serve requests.
The service is named by the stack's ``apiServiceName`` output, in ``project`` / ``region``.
"""

from __future__ import annotations

from typing import Any

from infra.outputs import SiteOutputs


class GcpFaultError(RuntimeError):
    """A GCP fault cannot be applied to this stack; the message names the missing output."""


def service_path(site: SiteOutputs) -> str:
    missing = [
        name
        for name, value in (
            ("project", site.project),
            ("region", site.region),
            ("apiServiceName", site.api_service_name),
        )
        if not value
    ]
    if missing:
        raise GcpFaultError(f"gcp stack outputs lack {missing}; Cloud Run faults need them")
    return f"projects/{site.project}/locations/{site.region}/services/{site.api_service_name}"


def _client() -> Any:
    from google.cloud import run_v2

    return run_v2.ServicesClient()


def _update(service: Any) -> None:
    _client().update_service(service=service).result(timeout=300)


def set_ingress(site: SiteOutputs, ingress: str) -> str:
    """Set the service's ingress (an IngressTraffic name); return the previous one."""
    from google.cloud import run_v2

    service = _client().get_service(name=service_path(site))
    previous = run_v2.IngressTraffic(service.ingress).name
    service.ingress = run_v2.IngressTraffic[ingress]
    _update(service)
    return previous


def scale_to_zero(site: SiteOutputs) -> dict[str, Any]:
    """Manual scaling to 0 instances; return the previous scaling for the rollback."""
    from google.cloud import run_v2

    service = _client().get_service(name=service_path(site))
    previous = run_v2.ServiceScaling.to_dict(service.scaling)
    service.scaling = run_v2.ServiceScaling(
        scaling_mode=run_v2.ServiceScaling.ScalingMode.MANUAL, manual_instance_count=0
    )
    _update(service)
    return previous


def restore_scaling(site: SiteOutputs, previous: dict[str, Any]) -> None:
    from google.cloud import run_v2

    service = _client().get_service(name=service_path(site))
    service.scaling = run_v2.ServiceScaling(previous)
    _update(service)
