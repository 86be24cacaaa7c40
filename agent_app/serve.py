"""Process start-up for the api, and the uvicorn server that drains on SIGTERM.

On the first SIGTERM (or SIGINT) the server does not stop at once: the runtime starts
draining (``/readyz`` answers 503 so the load balancer takes the instance out, new ``/v1``
requests get 503 ``draining``), in-flight requests finish, and only then, or when
``AGENT_SHUTDOWN_GRACE_SECONDS`` runs out, uvicorn closes. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from types import FrameType

import uvicorn

from agent_app.auth import ApiKeys
from agent_app.config import ConfigError, Settings, fail, load_settings
from agent_app.http import Edge
from agent_app.logs import setup_logging
from agent_app.runtime import Runtime
from agent_app.schemas import MAX_BODY_BYTES
from agent_app.telemetry import setup_tracing

log = logging.getLogger("agent_app.serve")
# After in-flight work is done, how long uvicorn may take to close idle connections.
CLOSE_SECONDS = 1.0


def bootstrap(process: str) -> Settings:
    settings = load_settings()
    setup_logging(settings.log_level, site=settings.site, instance=settings.instance, process=process)
    return settings


def freeze_startup_heap() -> None:
    """Move everything start-up allocated out of the garbage collector's reach.

    Why: the modules, app, routes, schemas and clients (about 90k tracked objects) never
    become garbage, yet every full (generation 2) collection walked them all: a pause of
    30 ms and more at a random moment under load, stalling every request in flight, which
    is what set the api's p99 (measured with ``gc.callbacks`` during the benchmark). Frozen,
    collections only visit objects allocated since; nothing frozen is ever freed, which is
    the point. One ``collect`` first, so start-up garbage is not frozen with them.
    """
    gc.collect()
    gc.freeze()


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, runtime: Runtime, edge: Edge, grace: float) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.edge = edge
        self.grace = grace
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
        try:
            await asyncio.wait_for(self.edge.idle.wait(), self.grace)
            log.info("drained: no request in flight")
        except TimeoutError:
            log.warning(
                "grace period over; closing with requests in flight", extra={"in_flight": self.edge.in_flight}
            )
        self.should_exit = True


def run_api() -> None:
    settings = bootstrap("api")
    try:
        keys = ApiKeys.from_settings(settings)
    except ConfigError as exc:
        fail([str(exc)])
    from agent_app.api import create_app
    from agent_app.fastpath import TurnFastPath

    runtime = Runtime(settings)
    app = create_app(runtime, keys)
    tracing = setup_tracing("agent-api", app)
    # Turns skip FastAPI's per-request layers, unless tracing wants FastAPI's spans on them.
    served = app if tracing else TurnFastPath(app)
    edge = Edge(served, site=settings.site, instance=settings.instance, max_body=MAX_BODY_BYTES)
    config = uvicorn.Config(
        edge,
        host="0.0.0.0",  # inside the container; the platform's network decides who reaches it
        port=settings.port,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=int(CLOSE_SECONDS),
        timeout_keep_alive=5,
    )
    log.info(
        "starting api",
        extra={"port": settings.port, "queue": runtime.queue.kind, "model": runtime.model.name},
    )
    DrainingServer(config, runtime=runtime, edge=edge, grace=settings.shutdown_grace_seconds).run()
