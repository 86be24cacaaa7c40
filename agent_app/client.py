"""A client of the agent API that knows every site of its fleet.

A client of the global name alone fails while the edge still sends it to a lost site: Route 53
moves clients only once its health checks fail and the record's TTL runs out (docs/fleet.md,
"The edge"). Every site of a fleet serves every session (a request reaches the session's home
from any site), so this client sends a request that cannot reach one site to the next, at once:

- it learns the fleet's sites from ``GET /v1/fleet`` (:meth:`FleetClient.discover`) or is given
  them, and keeps them;
- a request goes to the global name first, then to each site's regional name in the fleet's
  order; an endpoint that could not be reached is tried last for ``cooldown`` seconds, so one
  lost site costs a client one ``connect_timeout`` per cooldown, not one per request;
- it tries the next endpoint when the request cannot have reached the app: no connection was
  made (refused, unreachable, timed out, TLS refused);
- a request that may have reached the app is sent again only when that is safe: a GET, or a
  create or turn with an ``Idempotency-Key`` (the API's calls below always send one; the app
  answers a key it has seen with what that request made, at any site). That is the case when
  the connection broke or timed out after it was sent, or a load balancer answered for itself
  (no site header): 502 or 504, its backend broke or timed out on it, and 503 too, which most
  balancers send when they have no healthy backend, but Envoy-based ones (GCP's Application
  Load Balancer, Istio) also when a backend reset the connection after taking the request.
  Anything else is the caller's to judge.

The app's own answers (its 503 ``fleet_unavailable`` included) are returned as they are: the
app has already asked the other sites.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from agent_app.contract import SAFE_METHODS, SITE_HEADER

# A load balancer's own answers (no X-Skyfleet-Site): 502 and 504, a backend broke or timed out
# on the request; 503, usually no backend took it, but not always (see above). Any of them may
# have acted on it.
_BALANCER_FAILED = frozenset({502, 503, 504})
# Seconds to reach one endpoint: a lost site costs a client this much per cooldown.
CONNECT_TIMEOUT = 1.0

HttpFactory = Callable[[str], httpx.AsyncClient]


class NoSiteReachable(httpx.TransportError):
    """No endpoint of the fleet could be reached; ``tried`` names each with what happened."""

    def __init__(self, tried: Sequence[tuple[str, str]]) -> None:
        self.tried = list(tried)
        super().__init__("no site of the fleet could be reached: " + "; ".join(f"{u}: {e}" for u, e in tried))


class FleetClient:
    """``request`` like ``httpx.AsyncClient.request``, sent to the first endpoint that takes it.

    ``http`` makes the HTTP client of one base URL (default: ``httpx.AsyncClient``). Timeouts
    bound one attempt at one endpoint: ``connect_timeout`` to reach it, ``timeout`` for each
    step after. A request in flight at a site that is lost (no answer, no reset) is sent to the
    next endpoint only once ``timeout`` passes, so keep it well below what the caller waits in
    all, and above the slowest answer expected (a turn's model call).
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        sites: Sequence[str] = (),
        http: HttpFactory | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        timeout: float = 30.0,
        cooldown: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_url(url)
        self.url = url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {api_key}"}
        self._make: HttpFactory = http or (lambda base: httpx.AsyncClient(base_url=base))
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._cooldown = cooldown
        self._clock = clock
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._down_until: dict[str, float] = {}
        self.sites: tuple[str, ...] = ()
        self.use_sites(sites)

    def use_sites(self, sites: Sequence[str]) -> None:
        """The regional base URLs to fail over to (the global name stays first)."""
        for base in sites:
            _check_url(base)
        self.sites = tuple(dict.fromkeys(s.rstrip("/") for s in sites if s.rstrip("/") != self.url))

    @property
    def endpoints(self) -> list[str]:
        """The order the next request tries: reachable ones first (global name, then the sites),
        then those in their cooldown, the one that failed longest ago first."""
        now = self._clock()
        ordered = [self.url, *self.sites]
        up = [u for u in ordered if self._down_until.get(u, 0.0) <= now]
        down = sorted((u for u in ordered if u not in up), key=lambda u: self._down_until[u])
        return up + down

    def _client(self, base: str) -> httpx.AsyncClient:
        if base not in self._clients:
            self._clients[base] = self._make(base)
        return self._clients[base]

    def _failed(self, base: str) -> None:
        self._down_until[base] = self._clock() + self._cooldown

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        headers = {**self._auth, **(headers or {})}
        repeatable = method.upper() in SAFE_METHODS or any(k.lower() == "idempotency-key" for k in headers)
        tried: list[tuple[str, str]] = []
        balancer_answer: httpx.Response | None = None
        for base in self.endpoints:
            try:
                response = await self._client(base).request(
                    method, path, json=json, headers=headers, timeout=self._timeout
                )
            except httpx.TransportError as exc:
                unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if not (unsent or repeatable):  # sent, and maybe acted on: the caller decides
                    raise
                self._failed(base)
                tried.append((base, f"{type(exc).__name__}: {exc}"))
                continue
            from_balancer = SITE_HEADER not in response.headers
            status = response.status_code
            if from_balancer and status in _BALANCER_FAILED:
                self._failed(base)  # tried last for a while, whatever this request does next
                if not repeatable:  # maybe acted on: the caller decides
                    return response
                tried.append((base, f"{status} from its load balancer"))
                balancer_answer = response
                continue
            return response
        if balancer_answer is not None:
            return balancer_answer
        raise NoSiteReachable(tried)

    async def discover(self) -> tuple[str, ...]:
        """Ask the fleet for its sites (any endpoint that answers) and use them from now on."""
        response = await self.request("GET", "/v1/fleet")
        response.raise_for_status()
        self.use_sites([site["url"] for site in response.json()["sites"]])
        return self.sites

    # The API's calls, for applications (the drills' load uses ``request``). Each create and
    # turn carries an ``Idempotency-Key`` (a new one unless given), so a retry is always safe.

    async def create_session(
        self, metadata: Mapping[str, str] | None = None, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        response = await self.request(
            "POST", "/v1/sessions", json={"metadata": dict(metadata or {})}, headers=_key(idempotency_key)
        )
        return _body(response)

    async def send_message(
        self, session_id: str, content: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        path = f"/v1/sessions/{session_id}/messages"
        return _body(
            await self.request("POST", path, json={"content": content}, headers=_key(idempotency_key))
        )

    async def create_task(
        self, session_id: str, task_input: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        path = f"/v1/sessions/{session_id}/tasks"
        return _body(
            await self.request("POST", path, json={"input": task_input}, headers=_key(idempotency_key))
        )

    async def get_task(self, task_id: str) -> dict[str, Any]:
        return _body(await self.request("GET", f"/v1/tasks/{task_id}"))

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    async def __aenter__(self) -> FleetClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"a fleet endpoint is an http(s) base URL, got {url!r}")


def _key(given: str | None) -> dict[str, str]:
    """The request's ``Idempotency-Key``: the caller's, or a new one for this call."""
    return {"Idempotency-Key": given or uuid.uuid4().hex}


def _body(response: httpx.Response) -> dict[str, Any]:
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body
