"""The other sites of the fleet, over HTTPS at their regional names: copies, reads, forwarding.

A site that does not answer (no connection within ``CONNECT_SECONDS``, a copy or read not
answered in time, its load balancer's 502/503/504: nothing behind it, or a connection the
kernel gave up on) is *unreachable*: calls to it fail at once for ``DOWN_SECONDS``, then one
call tries it again while the others still fail at once (a circuit breaker), so a lost site
costs one timeout every few seconds, not one per request. A forwarded client request that is
slow to be answered (its load balancer's 504 included), or whose connection the site closed or
reset, leaves it reachable; one its load balancer answered 502 or 504 for a backend is never
taken for a request that reached nothing (it may have run there).
Each site has its own connection pool: connections hanging on a lost site never hold up calls
to the others, and a kept connection to a site that fell silent breaks within
``PEER_SILENCE_SECONDS`` (TCP keepalive), also with a request in flight.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import httpx

from agent_app.contract import FLEET_KEY_HEADER, FLEET_PATH_PREFIX, FORWARDED_HEADER
from agent_app.fleet import Fleet
from agent_app.fleet.records import Kind, Record

log = logging.getLogger("agent_app.fleet")

# A cross-site round trip is tens of milliseconds; a connection that takes a second is a site
# that is gone (a cut uplink drops packets: no refusal ever comes).
CONNECT_SECONDS = 1.0
# A copy or a read: one small request and one Redis script on the other side.
CALL_SECONDS = 2.0
# A forwarded client request runs a whole turn at the home.
FORWARD_SECONDS = 30.0
DOWN_SECONDS = 2.0
# A peer that falls silent with a request in flight on a kept connection (a site lost on the
# internet: no refusal, no reset) sends nothing more, so only the forward's 30 s bound would end
# the wait. TCP keepalive probes, answered by the peer's kernel or load balancer even while its
# app runs a long turn, end it instead: after 2 s of silence a probe each second, and the
# connection breaks once 6 s pass with none answered (the probes at 2, 3, 4 and 5 s lost in a
# row: a path that loses 10 % of packets each way does that about once in 800 idle spells).
# With TCP_USER_TIMEOUT set the kernel counts time, not probes; TCP_KEEPCNT says the same for
# kernels without it. Data sent and never acknowledged breaks it after 6 s as well.
PEER_SILENCE_SECONDS = 6
_KEEPALIVE_IDLE, _KEEPALIVE_INTERVAL = 2, 1
_KEEPALIVE_PROBES = (PEER_SILENCE_SECONDS - _KEEPALIVE_IDLE) // _KEEPALIVE_INTERVAL
# Idle cross-site connections are kept only briefly. A request sent on a kept connection to a
# site that has just been lost fails after PEER_SILENCE_SECONDS (and a turn cannot be sent
# again: it may have reached the app), where a new connection fails to connect within
# CONNECT_SECONDS and the record is served elsewhere.
KEEPALIVE_EXPIRY_SECONDS = 5.0


def silence_bounded_socket_options() -> list[tuple[int, int, int]]:
    """Socket options that break a connection after ``PEER_SILENCE_SECONDS`` without a word from
    the peer: keepalive probes while waiting, and a bound on unacknowledged data while sending
    (TCP_USER_TIMEOUT, which also sets when unanswered probes break it). Those the platform
    lacks are left out (Linux has them all)."""
    wanted = [
        ("SO_KEEPALIVE", socket.SOL_SOCKET, 1),
        ("TCP_KEEPIDLE", socket.IPPROTO_TCP, _KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", socket.IPPROTO_TCP, _KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", socket.IPPROTO_TCP, _KEEPALIVE_PROBES),
        ("TCP_USER_TIMEOUT", socket.IPPROTO_TCP, PEER_SILENCE_SECONDS * 1000),
    ]
    return [(level, getattr(socket, name), value) for name, level, value in wanted if hasattr(socket, name)]


_GONE = frozenset({502, 503, 504})
# Hop-by-hop and framing headers: never passed on.
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        b"host",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-connection",
    }
)

# held: the site holds the record now; later: it holds a later write of the same epoch (the
# record comes back); refused: it holds a newer epoch or a conflicting write (the record comes
# back); unreachable: no answer.
# behind (a check only): the site lacks this write and wants the whole record.
Outcome = Literal["held", "later", "refused", "behind", "unreachable"]


class Peers:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        # The system's trust store: the same public roots a browser trusts the sites with.
        verify = ssl.create_default_context()
        self.clients = {
            site: httpx.AsyncClient(
                # Its own transport, for the socket options; sites reach each other directly,
                # never through a proxy named in the environment.
                transport=httpx.AsyncHTTPTransport(
                    verify=verify,
                    limits=httpx.Limits(
                        max_connections=64,
                        max_keepalive_connections=16,
                        keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
                    ),
                    socket_options=silence_bounded_socket_options(),
                ),
                timeout=httpx.Timeout(CALL_SECONDS, connect=CONNECT_SECONDS),
            )
            for site in fleet.peers
        }
        self._down_until: dict[str, float] = {}

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()

    def reachable(self, site: str) -> bool:
        """False while ``site`` is marked down (or one call is trying it again)."""
        return time.monotonic() >= self._down_until.get(site, 0.0)

    def mark_down(self, site: str) -> None:
        self._down_until[site] = time.monotonic() + DOWN_SECONDS

    def _client(self, site: str) -> httpx.AsyncClient:
        """The site's pool. The first call to a site marked down earlier is its retry: the site
        stays down for the others until that call's outcome (which always comes: a timeout)."""
        if site in self._down_until:
            self.mark_down(site)
        return self.clients[site]

    def _answered(self, site: str) -> None:
        self._down_until.pop(site, None)

    def _failed(self, site: str) -> None:
        self.mark_down(site)

    def _url(self, site: str, kind: Kind, record_id: str) -> str:
        return f"{self.fleet.url(site)}{FLEET_PATH_PREFIX}/{kind}s/{record_id}"

    def _headers(self) -> dict[str, str]:
        return {FLEET_KEY_HEADER: self.fleet.key, FORWARDED_HEADER: self.fleet.site}

    async def put(
        self,
        site: str,
        kind: Kind,
        record_id: str,
        record: Mapping[str, str],
        *,
        takeover_from: tuple[int, int] | None,
        check: bool = False,
    ) -> tuple[Outcome, Record | None]:
        """Send a copy (or a takeover, or with ``check`` only a write's name) to ``site``."""
        if not self.reachable(site):
            return "unreachable", None
        body = {
            "record": dict(record),
            "takeover_from": list(takeover_from) if takeover_from else None,
            "check": check,
        }
        r = await self._call(site, "PUT", self._url(site, kind, record_id), json=body)
        if r is None:
            return "unreachable", None
        if check and r.status_code == 404:
            return "behind", None
        try:
            if r.status_code == 200:
                later = json.loads(r.content).get("record")
                return ("later", dict(later)) if later else ("held", None)
            if r.status_code == 409:
                return "refused", dict(json.loads(r.content)["record"])
        except (ValueError, KeyError, TypeError):
            pass  # an answer that is not the fleet's: as good as none
        return "unreachable", None

    async def get(self, site: str, kind: Kind, record_id: str) -> tuple[Outcome, Record | None]:
        """``site``'s copy: held (with the record, or None when it has none) or unreachable."""
        if not self.reachable(site):
            return "unreachable", None
        r = await self._call(site, "GET", self._url(site, kind, record_id))
        if r is None:
            return "unreachable", None
        try:
            if r.status_code == 200:
                return "held", dict(json.loads(r.content)["record"])
        except (ValueError, KeyError, TypeError):
            return "unreachable", None
        if r.status_code == 404:
            return "held", None
        return "unreachable", None

    async def append(self, site: str, session_id: str, messages: list[dict[str, object]]) -> int:
        """Ask ``site`` (the session's home) to append ``messages``; its status, 0 unreachable."""
        if not self.reachable(site):
            return 0
        url = f"{self.fleet.url(site)}{FLEET_PATH_PREFIX}/sessions/{session_id}/appends"
        r = await self._call(site, "POST", url, json={"messages": messages})
        return 0 if r is None else r.status_code

    async def _call(self, site: str, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        """One call of the fleet's API at ``site``; None when it is unreachable."""
        try:
            r = await self._client(site).request(method, url, headers=self._headers(), **kwargs)
        except httpx.HTTPError:
            self._failed(site)
            return None
        if r.status_code in _GONE:
            self._failed(site)
            return None
        self._answered(site)
        return r

    async def forward(
        self,
        site: str,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        chain: Sequence[str] = (),
    ) -> httpx.Response | None:
        """Pass a client's request to ``site`` as it came, signed as the fleet's; None when
        ``site`` is unreachable (the request never reached it: no connection, or its load
        balancer's 503). :class:`PeerTimeout` when it was sent and no answer came in time,
        :class:`PeerLost` when the connection broke first or its load balancer answered 502 or
        504 for a backend: it may have run there, either way. A peer that fell silent is marked
        unreachable; one that answered slowly, or closed or reset the connection, is there."""
        if not self.reachable(site):
            return None
        passed = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k.lower() not in _HOP]
        passed += [
            (FORWARDED_HEADER, ",".join([*chain, self.fleet.site])),
            (FLEET_KEY_HEADER, self.fleet.key),
        ]
        try:
            r = await self._client(site).request(
                method,
                f"{self.fleet.url(site)}{target}",
                headers=passed,
                content=body,
                timeout=httpx.Timeout(FORWARD_SECONDS, connect=CONNECT_SECONDS),
            )
        except (httpx.ConnectError, httpx.ConnectTimeout):
            self._failed(site)
            return None
        except httpx.TransportError as exc:
            if fell_silent(exc):
                log.warning("site %s fell silent with a request in flight: unreachable", site)
                self._failed(site)
                raise PeerLost(type(exc).__name__, silent=True) from None
            if isinstance(exc, httpx.TimeoutException):
                # Its kernel kept answering keepalive probes: it took the request and is slow.
                self._answered(site)
                raise PeerTimeout(type(exc).__name__) from None
            # Closed or reset by its end, or broken at ours: nothing learnt about the site.
            raise PeerLost(type(exc).__name__, silent=False) from None
        except httpx.HTTPError as exc:  # an answer that could not be read
            raise PeerTimeout(type(exc).__name__) from None
        if r.status_code in _GONE and r.headers.get("content-type", "").split(";")[0] != "application/json":
            # The site's load balancer answering for itself.
            if r.status_code == 503:  # nothing behind it: the request reached no app
                self._failed(site)
                return None
            # 502: a backend took the request and broke (the site's apps are failing); 504: one
            # took it and is slow (a long turn), the site is there. Either may have acted on it.
            if r.status_code == 502:
                self._failed(site)
            raise PeerLost(f"its load balancer answered {r.status_code}", silent=False)
        self._answered(site)
        return r


class PeerTimeout(Exception):
    """A request reached another site and no answer came back."""


class PeerLost(PeerTimeout):
    """The connection to another site broke before its answer: ``silent`` when the peer stopped
    answering altogether (the kernel gave up on it), not when it closed or reset it."""

    def __init__(self, message: str, *, silent: bool) -> None:
        super().__init__(message)
        self.silent = silent


# How the kernel reports a peer it gave up on: ETIMEDOUT (keepalive probes or sent data
# unacknowledged for PEER_SILENCE_SECONDS), or the ICMP error a router sent meanwhile.
_GAVE_UP = frozenset({errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN})


def fell_silent(exc: BaseException) -> bool:
    """Whether the kernel ended the connection because the peer answered nothing."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno in _GAVE_UP:
            return True
        cause = cause.__cause__ or cause.__context__
    return False
