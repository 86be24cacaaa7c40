"""Sentinel failover with replicated writes: the lab's site-loss drill in miniature.

A real primary, a real replica and a real Sentinel. The api finds the primary through
Sentinel and acknowledges a turn only once the replica holds it (``WAIT``). When the primary
is killed, Sentinel promotes the replica; the api answers 503 quickly meanwhile, then reads
the acknowledged history from the new primary (nothing lost) and, once a replica is back,
takes new turns, all without a restart.
"""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from skyfleet.testing.servers import (
    REDIS_SERVER,
    AppProcess,
    Proc,
    RedisServer,
    free_port,
    port_open,
    wait_until,
)

BOUND = 10.0


class Sentinel:
    def __init__(self, primary_port: int) -> None:
        self.port = free_port()
        self.conf = Path(tempfile.mkdtemp(prefix="sentinel-")) / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.conf.parent}\n"
            f"sentinel monitor skyfleet 127.0.0.1 {primary_port} 1\n"
            "sentinel down-after-milliseconds skyfleet 500\n"
            "sentinel failover-timeout skyfleet 3000\n"
        )
        self.proc = Proc("sentinel", [REDIS_SERVER, str(self.conf), "--sentinel"])

    def start(self) -> Sentinel:
        self.proc.start()
        wait_until(lambda: port_open(self.port), what="sentinel")
        return self

    def primary_port(self) -> int:
        host_port = redis.Redis(port=self.port).execute_command(
            "SENTINEL", "get-master-addr-by-name", "skyfleet"
        )
        assert host_port, "sentinel does not know the primary"
        return int(host_port[1])


@pytest.fixture
def replicated() -> Iterator[tuple[RedisServer, RedisServer, Sentinel]]:
    primary = RedisServer().start()
    replica = RedisServer(replica_of=primary.port).start()
    wait_until(
        lambda: redis.Redis(port=replica.port).info("replication")["master_link_status"] == "up",
        what="replica sync",
    )
    sentinel = Sentinel(primary.port).start()
    yield primary, replica, sentinel
    sentinel.proc.stop()
    replica.stop()
    primary.stop()


def test_sentinel_failover_keeps_acknowledged_turns(
    replicated: tuple[RedisServer, RedisServer, Sentinel], nats_env: dict[str, str]
) -> None:
    primary, replica, sentinel = replicated
    env = {
        **nats_env,
        "AGENT_REDIS_URL": f"redis://127.0.0.1:{primary.port}/0",
        "AGENT_REDIS_SENTINELS": f"127.0.0.1:{sentinel.port}",
        "AGENT_REDIS_SENTINEL_MASTER": "skyfleet",
        "AGENT_REDIS_WAIT_REPLICAS": "1",
        "AGENT_REDIS_FAILOVER_WAIT_SECONDS": "0.3",
    }
    api = AppProcess("api", env).start()
    revived: RedisServer | None = None
    try:
        with api.client(timeout=BOUND) as client:
            session_id = client.post("/v1/sessions").json()["id"]
            turn = client.post(f"/v1/sessions/{session_id}/messages", json={"content": "my name is Lin"})
            assert turn.status_code == 200
            # acknowledged means replicated: the replica already holds the turn
            key = f"skyfleet:session:{{{session_id}}}"
            assert redis.Redis(port=replica.port).hget(key, "turns") == b"1"

            assert primary.proc is not None
            primary.proc.signal(signal.SIGKILL)
            during = client.get(f"/v1/sessions/{session_id}")
            assert during.status_code in (200, 503)  # 503 until Sentinel promotes, never a hang
            wait_until(lambda: sentinel.primary_port() == replica.port, timeout=30, what="promotion")

            history = wait_until(
                lambda: (r := client.get(f"/v1/sessions/{session_id}")).status_code == 200 and r.json(),
                what="reads from the promoted replica",
            )
            assert history["turns"] == 1  # the acknowledged turn survived the failover
            # No replica now: writes are refused rather than acknowledged unreplicated (RPO 0).
            refused = client.post(f"/v1/sessions/{session_id}/messages", json={"content": "still me?"})
            assert refused.status_code == 503

            # The old primary comes back empty; Sentinel makes it the new primary's replica.
            revived = RedisServer(port=primary.port).start()
            answer = wait_until(
                lambda: (
                    (
                        r := client.post(
                            f"/v1/sessions/{session_id}/messages", json={"content": "what is my name"}
                        )
                    ).status_code
                    == 200
                    and r.json()
                ),
                timeout=40,
                interval=0.5,
                what="writes once a replica is back",
            )
            assert answer["reply"]["content"] == "Your name is Lin."
        assert httpx.get(api.url + "/readyz").status_code == 200
        assert api.proc.alive()
    finally:
        api.stop()
        if revived:
            revived.stop()


def test_discovery_follows_the_majoritys_newest_primary(nats_env: dict[str, str]) -> None:
    """A Sentinel left behind (the cut-off side of a healed partition) names a stale primary;
    the api must follow the majority's newer configuration, and serve nothing from the stale
    one when only that Sentinel answers."""
    stale = RedisServer().start()  # the old primary, still a primary in its own eyes
    lone = Sentinel(stale.port).start()
    primary = RedisServer().start()
    replica = RedisServer(replica_of=primary.port).start()
    wait_until(
        lambda: redis.Redis(port=replica.port).info("replication")["master_link_status"] == "up",
        what="replica sync",
    )
    majority = [Sentinel(primary.port).start(), Sentinel(primary.port).start()]
    api: AppProcess | None = None
    try:
        # The majority fails over: the replica is promoted under a newer config epoch. A new
        # Sentinel answers "no suitable replica" until its first INFO has shown it the replica.
        def forced_failover() -> bool:
            try:
                redis.Redis(port=majority[0].port).execute_command("SENTINEL", "FAILOVER", "skyfleet")
            except redis.ResponseError as exc:
                if "NOGOODSLAVE" in str(exc) or "suitable" in str(exc):
                    return False
                raise
            return True

        wait_until(forced_failover, timeout=30, interval=0.5, what="a forced failover to be accepted")
        wait_until(
            lambda: all(s.primary_port() == replica.port for s in majority), timeout=30, what="promotion"
        )
        env = {
            **nats_env,
            "AGENT_REDIS_URL": f"redis://127.0.0.1:{stale.port}/0",
            # The lone Sentinel first, as a site lists its own Sentinel first.
            "AGENT_REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in [lone, *majority]),
            "AGENT_REDIS_SENTINEL_MASTER": "skyfleet",
            "AGENT_REDIS_FAILOVER_WAIT_SECONDS": "0.3",
        }
        api = AppProcess("api", env).start()
        with api.client(timeout=BOUND) as client:
            created = client.post("/v1/sessions")
            assert created.status_code == 201, created.text
            key = f"skyfleet:session:{{{created.json()['id']}}}"
            assert redis.Redis(port=replica.port).exists(key) == 1  # on the majority's primary
            assert stale.client().exists(key) == 0

        # An api that reaches only the lone Sentinel (the minority side) finds no primary:
        # it answers 503 rather than serving the stale one.
        for sentinel in majority:
            sentinel.proc.stop()
        minority = AppProcess("api", env).start(ready=False)
        with minority.client(timeout=BOUND) as client:
            refused = client.post("/v1/sessions")
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "dependency_unavailable"
            assert httpx.get(minority.url + "/readyz").status_code == 503
        minority.stop()
        assert stale.client().dbsize() == 0  # nothing was ever written to the stale primary
    finally:
        if api:
            api.stop()
        for proc in (lone, *majority):
            proc.proc.stop()
        for server in (stale, primary, replica):
            server.stop()
