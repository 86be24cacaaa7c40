"""What both processes (``agent_app.api`` and ``agent_app.worker``) share: start-up, and the
hard deadline of their shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable
from typing import NoReturn, TypeVar

from agent_app.config import Settings, load_settings
from agent_app.logs import last_words, setup_logging
from agent_app.telemetry import flush_tracing

log = logging.getLogger("agent_app.process")
T = TypeVar("T")


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


# Out of the grace period, the time kept for closing once in-flight work has had its share
# (releasing unfinished tasks, closing clients, uvicorn closing connections): at most this,
# and at most a quarter of the grace period.
CLOSE_RESERVE_SECONDS = 3.0
# Exit status when the watchdog had to end the process (the orderly path exits 0).
EXIT_FORCED = 1
# Behind the watchdog, faulthandler's C thread ends the process this long after the deadline if
# the watchdog thread cannot run (C code holding the interpreter's lock).
BACKSTOP_SECONDS = 0.5


class ShutdownClock:
    """The deadline the first SIGTERM sets: ``AGENT_SHUTDOWN_GRACE_SECONDS`` later the process
    is gone, whatever its dependencies are doing.

    The orderly shutdown plans against it (in-flight work until :meth:`left` of the close
    reserve, closing in the reserve), and every wait in it is bounded by it. Behind that, a
    watchdog thread ends the process at the deadline: it needs neither the event loop (which a
    blocking call could hold) nor the interpreter's exit (which waits for every executor
    thread, for instance a client call into a broker that does not answer).
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.reserve = min(CLOSE_RESERVE_SECONDS, grace / 4)
        self.deadline: float | None = None

    @property
    def started(self) -> bool:
        return self.deadline is not None

    def start(self) -> None:
        if self.deadline is not None:
            return
        self.deadline = time.monotonic() + self.grace
        threading.Thread(target=self._watch, name="shutdown-watchdog", daemon=True).start()
        # A thread of the interpreter's C code needs no interpreter lock: it writes every
        # thread's stack to stderr and exits (status 1). A signal's default action would not
        # do: the kernel ignores it for a container's PID 1, which the app is.
        faulthandler.dump_traceback_later(self.grace + BACKSTOP_SECONDS, exit=True)

    def left(self, keep: float = 0.0) -> float:
        """Seconds until ``keep`` seconds before the deadline (never negative)."""
        if self.deadline is None:
            return self.grace - keep
        return max(0.0, self.deadline - keep - time.monotonic())

    def _watch(self) -> None:
        assert self.deadline is not None
        while (remaining := self.deadline - time.monotonic()) > 0:
            time.sleep(remaining)
        last_words(
            "shutdown grace period over; exiting now with work unfinished",
            {"grace_s": self.grace, "exit_code": EXIT_FORCED},
        )
        os._exit(EXIT_FORCED)


def exit_now(code: int, clock: ShutdownClock) -> NoReturn:
    """End the process once its orderly shutdown is done: batched spans and pending log lines
    written, then ``os._exit``. The interpreter's own exit is skipped: its last phase runs no
    daemon thread, so the watchdog could not bound it, and on a busy machine exits came
    seconds past the deadline with the orderly path's status (0). It has nothing left to do:
    the clients are closed."""
    flush_tracing(clock.left() if clock.started else CLOSE_RESERVE_SECONDS)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


async def within(awaitable: Awaitable[T], seconds: float, what: str) -> T | None:
    """Await for at most ``seconds``; ``None`` (logged) when the time ran out first."""
    try:
        # asyncio.timeout, not wait_for: see agent_app.periodic for what 3.11's wait_for drops.
        async with asyncio.timeout(max(0.0, seconds)):
            return await awaitable
    except TimeoutError:
        log.warning(f"{what} did not finish in time; moving on", extra={"bound_s": round(seconds, 2)})
        return None
