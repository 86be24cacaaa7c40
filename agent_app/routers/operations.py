"""Probes and metrics: ``/healthz``, ``/readyz``, ``/metrics`` (no API key)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent_app.contract import LIVENESS_PATH, METRICS_PATH, READINESS_PATH
from agent_app.deps import get_runtime
from agent_app.schemas import Health

log = logging.getLogger("agent_app")
router = APIRouter(tags=["operations"])


@router.get(LIVENESS_PATH, response_model=Health)
async def healthz(request: Request) -> Health:
    rt = get_runtime(request)
    return Health(status="ok", site=rt.settings.site, instance=rt.settings.instance)


@router.get(
    READINESS_PATH,
    response_model=Health,
    responses={503: {"model": Health, "description": "Not ready: a dependency is down or draining"}},
)
async def readyz(request: Request) -> JSONResponse:
    rt = get_runtime(request)
    checks = await rt.readiness()
    ready = not any(checks.values())
    failing = {k: v for k, v in checks.items() if v}
    if failing != _last_failing:
        # The detail (hosts, queue names) goes to the log: the probe answers anyone.
        (log.warning if failing else log.info)("readiness changed", extra={"failing": failing})
        _last_failing.clear()
        _last_failing.update(failing)
    health = Health(
        status="ready" if ready else "not_ready",
        site=rt.settings.site,
        instance=rt.settings.instance,
        checks={k: _summary(v) for k, v in checks.items()},
    )
    return JSONResponse(health.model_dump(), status_code=200 if ready else 503)


_last_failing: dict[str, str] = {}


def _summary(state: str) -> str:
    """What a check's state says to anyone: ok, or the kind of failure without its detail."""
    if not state:
        return "ok"
    kind = state.split(":", 1)[0].strip()
    return kind if kind.replace("_", "").isalnum() else "down"


@router.get(
    METRICS_PATH,
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}, "description": "Prometheus text"}},
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
