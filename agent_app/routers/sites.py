"""``/v1/fleet``: the fleet's sites, for clients that fail over between them (``agent_app.client``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from agent_app.deps import caller, get_runtime
from agent_app.routers import V1_ERRORS
from agent_app.schemas import Fleet, FleetSite

router = APIRouter(tags=["fleet"])


@router.get("/v1/fleet", response_model=Fleet, responses=V1_ERRORS)
async def get_fleet(request: Request, _: Annotated[str, Depends(caller)]) -> Fleet:
    settings = get_runtime(request).settings
    return Fleet(site=settings.site, sites=[FleetSite(name=n, url=u) for n, u in settings.fleet])
