"""The FastAPI application: the routers, the error handlers, and the runtime's lifespan.

Imports flow one way: ``api`` (the process) builds this app and wraps it in the fast path;
the routers and the fast path share ``deps`` and ``handlers``; none of these imports ``api``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from agent_app import handlers
from agent_app.auth import ApiKeys
from agent_app.deps import State
from agent_app.fleet.adoption import adopt_forever
from agent_app.routers import fleet, operations, sessions, sites, tasks
from agent_app.runtime import Runtime


def create_app(runtime: Runtime | None = None, keys: ApiKeys | None = None) -> FastAPI:
    """The app; without a runtime it only describes itself (``agent_app.openapi``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        adopting = None
        if runtime is not None:
            runtime.start(consume=False)
            if runtime.replicator is not None:
                adopting = asyncio.create_task(adopt_forever(runtime))
        yield
        if adopting is not None:
            adopting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await adopting
        if runtime is not None:
            await runtime.close()

    app = FastAPI(
        title="Skyfleet agent app",
        version="1.0.0",
        description="Multi-turn agent sessions with tools; long work runs as async tasks through a queue.",
        lifespan=lifespan,
    )
    app.state.agent = State(runtime, keys)
    handlers.install(app)
    for router in (sessions.router, tasks.router, sites.router, operations.router, fleet.router):
        app.include_router(router)
    return app
