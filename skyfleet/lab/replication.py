"""Replication lag inside each site's cache: how far behind its primary its replicas are.

The twin's sites do not replicate to each other (no stack deploys that); each site's cache does
replicate to its own replicas (ElastiCache and Memorystore replicas, the on-prem Redis pods).
``sample_lag`` writes a key with a timestamp on each site's primary and polls that site's
replicas until it appears: the lag a failover inside the site could lose without ``WAIT``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import redis

from agent_app.contract import REPLICATED_KEY_PREFIX
from skyfleet.lab import caches
from skyfleet.lab.procs import is_running
from skyfleet.lab.state import load_state

PROBE_PREFIX = f"{REPLICATED_KEY_PREFIX}lab:lag-probe:"
_TIMEOUT = 0.5


def _client(rec: Any, state: Any) -> redis.Redis:
    password, ca = caches.credentials(rec, state)
    return redis.Redis(
        host=rec.host,
        port=rec.port,
        password=password,
        ssl=True,
        ssl_ca_certs=ca,
        ssl_check_hostname=False,
        socket_timeout=_TIMEOUT,
        socket_connect_timeout=_TIMEOUT,
    )


def sample_lag(state_dir: str, *, window_seconds: float = 1.0, interval_ms: int = 100) -> dict[str, Any]:
    """Lag samples (ms) over ``window_seconds``, every site's cache, and their p50/p99/max."""
    state = load_state(state_dir)
    samples: list[float] = []
    # One connection per node for the whole window: a TLS handshake per sample would be
    # measured as lag.
    clients: dict[str, redis.Redis] = {}

    def client(rec: Any) -> redis.Redis:
        if rec.name not in clients:
            clients[rec.name] = _client(rec, state)
        return clients[rec.name]

    deadline = time.monotonic() + window_seconds
    try:
        while time.monotonic() < deadline:
            for site in state.sites:
                nodes = [r for r in caches.nodes(state, site) if is_running(r)]
                roles = {r.name: caches.role(r, state) for r in nodes}
                primary = next((r for r in nodes if roles[r.name] == "master"), None)
                replicas = [r for r in nodes if roles[r.name] == "slave"]
                if primary is None or not replicas:
                    continue
                key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
                try:
                    for rec in replicas:
                        client(rec).ping()  # connected before the clock starts
                    client(primary).set(key, "1", px=60_000)
                    written = time.monotonic()
                    for rec in replicas:
                        c = client(rec)
                        while not c.exists(key):
                            if time.monotonic() - written > 5:
                                break
                            time.sleep(0.0005)
                        samples.append(round((time.monotonic() - written) * 1000, 3))
                except (redis.RedisError, OSError):
                    for rec in (primary, *replicas):  # a node that failed over: reconnect next time
                        stale = clients.pop(rec.name, None)
                        if stale is not None:
                            stale.close()
            time.sleep(interval_ms / 1000)
    finally:
        for c in clients.values():
            c.close()
    ordered = sorted(samples)

    def pct(p: float) -> float | None:
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] if ordered else None

    return {
        "samples_ms": samples,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "max_ms": ordered[-1] if ordered else None,
    }
