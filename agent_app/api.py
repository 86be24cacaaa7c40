"""The api process: ``python -m agent_app.api``.

It builds the FastAPI app (``agent_app.app``), puts the turn fast path (``agent_app.fastpath``)
and the edge layer (``agent_app.http``) in front, and serves it with uvicorn, draining on
SIGTERM: the runtime starts draining (``/readyz`` answers 503 so the load balancer takes the
instance out, new ``/v1`` requests get 503 ``draining``), in-flight requests finish, and only
then, or when ``AGENT_SHUTDOWN_GRACE_SECONDS`` less the close reserve runs out, uvicorn
closes. The grace period bounds the whole shutdown (``process.ShutdownClock``). A second
signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

import uvicorn

from agent_app.app import create_app
from agent_app.auth import ApiKeys
from agent_app.config import ConfigError, fail
from agent_app.contract import KEEP_ALIVE_SECONDS
from agent_app.fastpath import TurnFastPath
from agent_app.fleet.routing import FleetRouting
from agent_app.http import Edge
from agent_app.process import bootstrap, exit_now, freeze_startup_heap
from agent_app.runtime import Runtime
from agent_app.schemas import MAX_BODY_BYTES, MAX_PEER_BODY_BYTES
from agent_app.telemetry import setup_tracing

log = logging.getLogger("agent_app.api")
# After in-flight work is done, how long uvicorn may take to close connections, at most.
CLOSE_SECONDS = 1.0


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, runtime: Runtime, edge: Edge) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.edge = edge
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[override]
        await super().startup(sockets)
        freeze_startup_heap()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.runtime.draining or self._loop is None or sig not in (signal.SIGTERM, signal.SIGINT):
            super().handle_exit(sig, frame)
            return
        self.runtime.begin_drain()
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        clock = self.runtime.shutdown
        try:
            async with asyncio.timeout(clock.left(clock.reserve)):
                await self.edge.idle.wait()
            log.info("drained: no request in flight")
        except TimeoutError:
            log.warning(
                "grace period over; closing with requests in flight", extra={"in_flight": self.edge.in_flight}
            )
        # What uvicorn then waits for connections to close (whole seconds) before it cancels
        # the requests still running: within what the reserve leaves, so closing fits too.
        self.config.timeout_graceful_shutdown = int(min(CLOSE_SECONDS, clock.left() / 2))
        self.should_exit = True


def main() -> None:
    settings = bootstrap("api")
    try:
        keys = ApiKeys.from_settings(settings)
    except ConfigError as exc:
        fail([str(exc)])
    runtime = Runtime(settings)
    app = create_app(runtime, keys)
    tracing = setup_tracing("agent-api", app)
    # Turns skip FastAPI's per-request layers, unless tracing wants FastAPI's spans on them.
    served = app if tracing else TurnFastPath(app)
    # In a fleet, requests for a session or task held by another site go there.
    served = FleetRouting(served, state=app.state.agent)
    edge = Edge(
        served,
        site=settings.site,
        instance=settings.instance,
        max_body=MAX_BODY_BYTES,
        peer_key=settings.fleet_key.get_secret_value() if settings.fleet_key else None,
        peer_max_body=MAX_PEER_BODY_BYTES,
    )
    config = uvicorn.Config(
        edge,
        host="0.0.0.0",  # inside the container; the platform's network decides who reaches it
        port=settings.port,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=int(CLOSE_SECONDS),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    log.info(
        "starting api",
        extra={"port": settings.port, "queue": runtime.queue.kind, "model": runtime.model.name},
    )
    DrainingServer(config, runtime=runtime, edge=edge).run()  # a failed start exits in uvicorn (3)
    exit_now(0, runtime.shutdown)


if __name__ == "__main__":
    main()
