"""One app, several sites: the fleet a site belongs to, and how a session or task outlives its site.

Every session and task has a **home**: the site that created it, or the one that took it over.
Only the home writes it. Every other site passes requests for it to the home
(:mod:`agent_app.fleet.routing`), so clients need not know where their session lives.

After each write the home sends the whole record to the other sites
(:mod:`agent_app.fleet.replicator`). In ``sync`` mode a write is acknowledged only once a
majority of the fleet's sites hold it (the home's own store counts); in ``async`` mode at once,
the copies following behind.

When the home cannot be reached, its **successor** (the next site in the fleet's order, which
is the edge's failover order) takes the record over: it raises the record's **epoch** and makes
itself home, on a majority of the sites, each through a compare-and-set on its own Redis
(:mod:`agent_app.fleet.records`). Those epochs are the fencing: a store refuses a write from an
older epoch, so a home that was cut off and comes back cannot acknowledge anything for a record
it no longer owns, and learns the new home from the refusal. No site votes and nothing is
elected: each decision is one store's atomic operation, and a majority of stores must agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

Kind = Literal["session", "task"]


class Replication(Protocol):
    """What the session and task stores ask of the fleet (``replicator.Replicator``)."""

    @property
    def sync(self) -> bool: ...

    async def publish(self, kind: Kind, record_id: str, record: Mapping[str, str]) -> None: ...

    async def confirm(self, kind: Kind, record_id: str, record: dict[str, str]) -> dict[str, str]: ...


@dataclass(frozen=True)
class Fleet:
    """This site's view of its fleet: every site's name and regional base URL, in order."""

    site: str
    sites: tuple[tuple[str, str], ...]
    mode: str  # "sync" | "async"
    key: str

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.sites]

    @property
    def peers(self) -> list[str]:
        return [name for name in self.names if name != self.site]

    def peers_in_order(self) -> list[str]:
        """The other sites, this site's successor first, then on round the fleet's order."""
        names = self.names
        at = names.index(self.site)
        return [*names[at + 1 :], *names[:at]]

    @property
    def peer_acks_needed(self) -> int:
        """Peers that must hold a write besides this site: a majority of the fleet, less one."""
        return len(self.sites) // 2

    def url(self, site: str) -> str:
        return dict(self.sites)[site]

    def knows(self, site: str) -> bool:
        return site in self.names

    def successor(self, site: str) -> str:
        """Who takes over records homed at ``site`` when it is unreachable."""
        names = self.names
        if site not in names:  # a site removed from the fleet: its records go to the first
            return names[0]
        return names[(names.index(site) + 1) % len(names)]
