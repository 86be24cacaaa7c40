"""How a drill reaches the service: as a client of its global name.

Against the lab, the URL is the edge's global name (``https://api.agents.example.com``): a
client resolves it through the lab's DNS server, which answers as the edge's Route 53 records
and health checks would, caches each answer for its TTL, and checks the site's certificate for
that name against the lab's public roots. So failed requests, detection and recovery are what a
client of the deployed edge would see. Against a deployed stack, it is a loopback tunnel the
operator opened (``--load-url``).

Load only ever goes to loopback or to the lab's own addresses: a name is resolved only through
the lab's DNS, and an answer outside the lab's network is refused before any connection.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

if TYPE_CHECKING:
    from skyfleet.lab.resolver import Dial


class LoadTargetError(ValueError):
    """The load's target is not one a drill may send traffic to."""


def ensure_loopback(url: str) -> None:
    """Refuse a URL whose host is not a loopback address."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise LoadTargetError(f"load URL {url!r}: only loopback front doors may be loaded (got host {host!r})")


_CONTEXTS: dict[tuple[str, int], ssl.SSLContext] = {}


@dataclass(frozen=True)
class FrontDoor:
    """Where clients send requests, and how they find and trust it."""

    url: str
    # The clients' API keys. A deployed site rate-limits each key, so a drill's load comes from
    # many clients, each session with its own key, as real traffic does; one key would measure
    # the rate limiter.
    api_keys: tuple[str, ...]
    # The lab's DNS server and the network its answers must stay in (None: a loopback URL).
    dns: tuple[str, int] | None = None
    network: str | None = None
    ca_file: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "api_keys": list(self.api_keys),
            "dns": list(self.dns) if self.dns else None,
            "network": self.network,
            "ca_file": self.ca_file,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrontDoor:
        dns = data.get("dns")
        return cls(
            url=str(data["url"]),
            api_keys=tuple(str(k) for k in data["api_keys"]),
            dns=(str(dns[0]), int(dns[1])) if dns else None,
            network=data.get("network"),
            ca_file=data.get("ca_file"),
        )

    @property
    def api_key(self) -> str:
        return self.api_keys[0]

    def auth(self, client: int) -> dict[str, str]:
        """The Authorization header of client number ``client`` (any integer)."""
        return {"Authorization": f"Bearer {self.api_keys[client % len(self.api_keys)]}"}

    def check(self) -> None:
        if not self.api_keys or not all(self.api_keys):
            raise LoadTargetError(f"{self.url}: no client API key (SKYFLEET_API_KEY: comma-separated keys)")
        if self.dns is None:
            ensure_loopback(self.url)
        elif self.network is None:
            raise LoadTargetError(f"{self.url}: a name resolved by a lab DNS needs the lab's network")

    def _verify(self) -> ssl.SSLContext | bool:
        # One context per CA file for the process: building one takes hundreds of ms, and a load
        # of many users (a client each) would otherwise build one per user.
        if not self.ca_file:
            return True
        # A lab brought up again in the same folder has a new CA in the same file.
        key = (self.ca_file, os.stat(self.ca_file).st_mtime_ns)
        if key not in _CONTEXTS:
            _CONTEXTS[key] = ssl.create_default_context(cafile=self.ca_file)
        return _CONTEXTS[key]

    def _resolver(self) -> Any:
        from skyfleet.lab.resolver import CachingResolver

        assert self.dns is not None and self.network is not None
        return CachingResolver(self.dns, allowed=ipaddress.IPv4Network(self.network))

    def client(self, **kwargs: Any) -> httpx.Client:
        self.check()
        if self.dns is None:
            return httpx.Client(base_url=self.url, verify=self._verify(), **kwargs)
        from skyfleet.lab.resolver import ResolvingTransport

        verify = self._verify()
        assert isinstance(verify, ssl.SSLContext)
        return httpx.Client(
            base_url=self.url, transport=ResolvingTransport(self._resolver(), verify=verify), **kwargs
        )

    def async_client(
        self, base_url: str | None = None, *, dial: Dial = "race", **kwargs: Any
    ) -> httpx.AsyncClient:
        """A client of the global name, or of ``base_url`` (a site's regional name), found and
        trusted the same way: through the lab's DNS, or only at a loopback address. ``dial``:
        how it connects to a name the lab's DNS answers with several addresses."""
        self.check()
        base_url = base_url or self.url
        limits = kwargs.pop("limits", None)
        if self.dns is None:
            ensure_loopback(base_url)
            return httpx.AsyncClient(
                base_url=base_url, verify=self._verify(), limits=limits or httpx.Limits(), **kwargs
            )
        from skyfleet.lab.resolver import AsyncResolvingTransport

        verify = self._verify()
        assert isinstance(verify, ssl.SSLContext)
        transport = AsyncResolvingTransport(
            self._resolver(), verify=verify, dial=dial, **({"limits": limits} if limits is not None else {})
        )
        return httpx.AsyncClient(base_url=base_url, transport=transport, **kwargs)
