"""Steady-state probes: what "the service is fine" means, checked before, during and after.

They read the drill's live load (no extra traffic): the share of requests that succeeded and
their latency over a recent window, as the users behind the front door experienced them.
chaoslib compares each value with the probe's ``tolerance`` (e.g. ``type: range``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx

from agent_app.contract import READINESS_PATH
from skyfleet.drills import context
from skyfleet.drills.context import NoLoadError
from skyfleet.drills.frontdoor import FrontDoor
from skyfleet.drills.measure import percentile
from skyfleet.drills.records import RequestRecord


def _window(seconds: float) -> list[RequestRecord]:
    run = context.current()
    if run is None:
        raise NoLoadError("no drill is running: this probe needs `skyfleet drill run` or its control")
    return run.load_window(seconds)


def success_rate(window_seconds: float = 2.0, min_requests: int = 5) -> float:
    """Share of requests answered 2xx in the last window (1.0 when too few to judge).

    A request is recorded when its answer (or failure) comes, so requests that hang (a site that
    answers nothing) would leave no trace until their timeout. The load also streams each send:
    a request still unanswered well past the window's own answers' latency (its p99 × 1.5, at
    least the window) counts as a failure, never as a healthy service."""
    run = context.current()
    rows = _window(window_seconds)
    recording = run.load if run is not None else None
    answered = [r.latency_ms for r in rows if r.ok]
    grace = max(window_seconds, 1.5 * (percentile(answered, 99) or 0.0) / 1000.0)
    overdue = recording.overdue(grace) if recording is not None else 0
    judged = len(rows) + overdue
    if judged < min_requests:
        return 1.0
    return round(sum(r.ok for r in rows) / judged, 4)


def users_served_again(window_seconds: float = 2.0, tolerance: float = 0.99, timeout: float = 150.0) -> float:
    """Wait (at most ``timeout``) until the last window's success rate is back to ``tolerance``
    (the steady state's); seconds waited. A method step that must not start before users are
    served again (a failback after a failover) waits on this."""
    started = time.monotonic()
    while success_rate(window_seconds) < tolerance:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"users were not served again within {timeout:g} s")
        time.sleep(0.2)
    return round(time.monotonic() - started, 3)


def latency_p99_ms(window_seconds: float = 2.0) -> float:
    """p99 latency (ms) of successful requests in the last window (0 when there were none)."""
    rows = [r.latency_ms for r in _window(window_seconds) if r.ok]
    return percentile(rows, 99) or 0.0


# One client per front door for the process: building an httpx client builds a TLS context,
# which takes hundreds of ms on a busy machine; once is enough.
_CLIENTS: dict[FrontDoor, httpx.Client] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(door: FrontDoor) -> httpx.Client:
    with _CLIENTS_LOCK:
        # By the whole door: a lab brought up again answers the same name from another DNS
        # server, under another CA.
        if door not in _CLIENTS:
            _CLIENTS[door] = door.client()
        return _CLIENTS[door]


def front_door_ready(configuration: dict[str, Any] | None = None, timeout: float = 2.0) -> bool:
    """The front door answers the readiness path with 200 (it routes to some healthy replica),
    reached as a client would reach it (the global name through the edge, in the lab)."""
    target = context.target(configuration)
    door = target.front_door()
    if door is None:
        raise NoLoadError(f"{target.label} has no front door to probe")
    try:
        return _client(door).get(READINESS_PATH, timeout=timeout).status_code == 200
    except (httpx.HTTPError, OSError):
        return False
