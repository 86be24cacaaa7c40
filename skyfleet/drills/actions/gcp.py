"""GCP faults on a Cloud Run service: ingress set to internal, or traffic to 0.

Cloud Run's traffic split must add up to 100 %, so "traffic to 0" is done the way Cloud Run
allows: service-level manual scaling to 0 instances, which leaves nothing to serve requests.
The service is named by the stack's ``apiServiceName`` output, in ``project`` / ``region``.
The client speaks the API's REST binding; ``SKYFLEET_CLOUD_RUN_ENDPOINT`` (an ``http://`` or
``https://`` address, no credentials sent) points it elsewhere: the tests' stand-in.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from infra.outputs import SiteOutputs
from skyfleet.drills.actions.registry import Applied, StackFault, Undo
from skyfleet.drills.target import StackTarget, Target

SDK_MODULES = ("google.cloud.run_v2",)


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


ENDPOINT_ENV = "SKYFLEET_CLOUD_RUN_ENDPOINT"


def _client() -> Any:
    from google.cloud import run_v2

    endpoint = os.environ.get(ENDPOINT_ENV)
    if not endpoint:
        return run_v2.ServicesClient(transport="rest")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.run_v2.services.services.transports.rest import ServicesRestTransport

    url = urlsplit(endpoint)
    transport = ServicesRestTransport(
        host=url.netloc, credentials=AnonymousCredentials(), url_scheme=url.scheme
    )
    return run_v2.ServicesClient(transport=transport)


def _update(service: Any, field: str) -> None:
    """Send ``field`` of ``service`` only: anything else changed meanwhile (a ``pulumi up``)
    is left as it is."""
    from google.protobuf import field_mask_pb2

    _client().update_service(service=service, update_mask=field_mask_pb2.FieldMask(paths=[field])).result(
        timeout=300
    )


def _changed(service: Any, field: str, undo: Any) -> None:
    """Send ``field``; if the wait for it is cut short (Ctrl-C, its 300 s bound), the change may
    still land with no rollback on record, so ``undo`` is sent before the error goes on."""
    try:
        _update(service, field)
    except BaseException:
        undo()
        raise


def set_ingress(site: SiteOutputs, ingress: str, *, undo_on_error: bool = True) -> str:
    """Set the service's ingress (an IngressTraffic name); return the previous one."""
    from google.cloud import run_v2

    service = _client().get_service(name=service_path(site))
    previous = run_v2.IngressTraffic(service.ingress).name
    service.ingress = run_v2.IngressTraffic[ingress]
    if undo_on_error:
        _changed(service, "ingress", lambda: set_ingress(site, previous, undo_on_error=False))
    else:
        _update(service, "ingress")
    return previous


def scale_to_zero(site: SiteOutputs) -> dict[str, Any]:
    """Manual scaling to 0 instances; return the previous scaling for the rollback."""
    from google.cloud import run_v2

    service = _client().get_service(name=service_path(site))
    previous = run_v2.ServiceScaling.to_dict(service.scaling)
    service.scaling = run_v2.ServiceScaling(
        scaling_mode=run_v2.ServiceScaling.ScalingMode.MANUAL, manual_instance_count=0
    )
    _changed(service, "scaling", lambda: restore_scaling(site, previous))
    return previous


def restore_scaling(site: SiteOutputs, previous: dict[str, Any]) -> None:
    from google.cloud import run_v2

    service = _client().get_service(name=service_path(site))
    service.scaling = run_v2.ServiceScaling(previous)
    _update(service, "scaling")


# --- the faults -------------------------------------------------------------------------------


def _describe(target: Target | None, change: str) -> str:
    path = service_path(target.site()) if isinstance(target, StackTarget) else "<Cloud Run service>"
    return f"gcp: Cloud Run update_service {path}: {change}"


class IngressInternal(StackFault):
    """Set the Cloud Run service's ingress to internal only: the internet cannot reach it."""

    platform = "gcp"
    fault, rollback, key = "gcp_ingress_internal", "gcp_ingress_restore", "run-ingress"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        return _describe(target, "ingress=INGRESS_TRAFFIC_INTERNAL_ONLY")

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return _describe(target, "ingress back to its previous value")

    def apply(self, stack: StackTarget) -> Applied:
        site = stack.site()
        previous = set_ingress(site, "INGRESS_TRAFFIC_INTERNAL_ONLY")
        return Applied(
            site.site,
            f"Cloud Run ingress internal (was {previous})",
            {"previous_ingress": previous},
            saved={"ingress": previous},
        )

    def resume(self, stack: StackTarget, saved: dict[str, Any]) -> Undo:
        site = stack.site()
        return lambda: set_ingress(site, str(saved["ingress"]), undo_on_error=False)

    def restore(self, stack: StackTarget, ingress: str | None = None) -> Undo | None:
        return None if ingress is None else (lambda: set_ingress(stack.site(), ingress, undo_on_error=False))


class TrafficZero(StackFault):
    """Manual scaling of the Cloud Run service to 0 instances (traffic to 0)."""

    platform = "gcp"
    fault, rollback, key = "gcp_traffic_zero", "gcp_traffic_restore", "run-scaling"

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        return _describe(target, "manual scaling to 0 instances (traffic to 0)")

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        return _describe(target, "scaling back to its previous settings")

    def apply(self, stack: StackTarget) -> Applied:
        site = stack.site()
        previous = scale_to_zero(site)
        return Applied(
            site.site,
            "Cloud Run scaled to 0",
            {"previous_scaling": previous},
            saved={"scaling": previous},
        )

    def resume(self, stack: StackTarget, saved: dict[str, Any]) -> Undo:
        site = stack.site()
        return lambda: restore_scaling(site, dict(saved["scaling"]))

    def restore(self, stack: StackTarget) -> Undo | None:
        return None  # the previous scaling is known only to the fault that read it


gcp_ingress_internal, gcp_ingress_restore = IngressInternal.functions()
gcp_traffic_zero, gcp_traffic_restore = TrafficZero.functions()
