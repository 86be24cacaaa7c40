"""Copies of every write at the other sites, reads checked against them, and takeovers.

All three wait for *enough* sites, never for all: a majority of the fleet (this site's store
counts as one), so one lost site slows nothing down. Requests to the others still run to
their end in the background, so every reachable site ends up with the copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from agent_app.cache import Cache
from agent_app.config import Settings
from agent_app.errors import FleetUnavailable, Moved, Superseded
from agent_app.fleet import Fleet
from agent_app.fleet.peers import Outcome, Peers
from agent_app.fleet.records import REQUEUE, STAMP, TAKING, Kind, LocalRecords, Record, order
from agent_app.metrics import FLEET_WRITES

log = logging.getLogger("agent_app.fleet")
TAKEOVER_ATTEMPTS = 3


class Replicator:
    def __init__(self, fleet: Fleet, peers: Peers, local: LocalRecords) -> None:
        self.fleet = fleet
        self.peers = peers
        self.local = local
        self._background: set[asyncio.Task[object]] = set()

    @property
    def sync(self) -> bool:
        return self.fleet.mode == "sync"

    async def close(self) -> None:
        for t in list(self._background):
            t.cancel()
        await self.peers.close()

    def _spawn(self, coro: Awaitable[object]) -> asyncio.Task[object]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _enough(
        self,
        call: Callable[[str], Awaitable[tuple[Outcome, Record | None]]],
        accept: Callable[[Outcome], bool],
    ) -> tuple[int, list[tuple[Outcome, Record | None]]]:
        """Call as few peers as make a majority, this site's successor first (the site that
        would take over from it); another whenever one answers no or cannot be reached (not when
        one is merely slow: asking more sites of a busy fleet makes it busier). Returns once
        ``peer_acks_needed`` answers are accepted or every peer has answered: (accepted
        answers, every answer so far)."""
        need = self.fleet.peer_acks_needed
        waiting = self.fleet.peers_in_order()
        pending = {self._spawn(call(site)) for site in waiting[:need]}
        waiting = waiting[need:]
        accepted, answers = 0, []
        while pending and accepted < need:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                answer: tuple[Outcome, Record | None] = ("unreachable", None)
                if t.exception() is None:
                    answer = t.result()  # type: ignore[assignment]
                answers.append(answer)
                if accept(answer[0]):
                    accepted += 1
                elif waiting:
                    pending.add(self._spawn(call(waiting.pop(0))))
        return accepted, answers

    # --- the home's writes and reads ----------------------------------------------------------

    async def publish(self, kind: Kind, record_id: str, record: Mapping[str, str]) -> None:
        """After the home stored a write: copy it out. ``sync``: returns once a majority holds
        it; raises :class:`Moved` when a newer epoch refused it (this site adopts that record),
        :class:`FleetUnavailable` when too few sites hold it."""
        if not self.sync:
            self._spawn(self._enough(self._putter(kind, record_id, record), _holds))
            FLEET_WRITES.labels(kind, "async").inc()
            return
        await self._held_by_majority(kind, record_id, dict(record), check=False)

    async def confirm(self, kind: Kind, record_id: str, record: Record) -> Record:
        """Before the home answers from its copy (``sync``): what a majority holds. Its name is
        sent (the whole record to a site that lacks it), and this copy comes back, or a later
        write of this site that its own store lost. A home whose record moved meanwhile gets
        :class:`Moved` (it adopts the newer record), and a copy no majority holds is never served
        (:class:`FleetUnavailable`)."""
        if not self.sync:
            return record
        return await self._held_by_majority(kind, record_id, record, check=True)

    def _putter(
        self, kind: Kind, record_id: str, record: Mapping[str, str], *, check: bool = False
    ) -> Callable[[str], Awaitable[tuple[Outcome, Record | None]]]:
        async def put(site: str) -> tuple[Outcome, Record | None]:
            if check:
                stamp = {k: record[k] for k in STAMP if k in record}
                outcome, copy = await self.peers.put(
                    site, kind, record_id, stamp, takeover_from=None, check=True
                )
                if outcome != "behind":
                    return outcome, copy
            return await self.peers.put(site, kind, record_id, record, takeover_from=None)

        return put

    async def _held_by_majority(self, kind: Kind, record_id: str, record: Record, *, check: bool) -> Record:
        # A read (check) is served from a later write the others hold; a new write is not held
        # where a later one is (it was written on a copy that lost that write).
        accept = _holds if check else _held
        accepted, answers = await self._enough(self._putter(kind, record_id, record, check=check), accept)
        refused = [r for outcome, r in answers if outcome == "refused" and r is not None]
        later = [r for outcome, r in answers if outcome == "later" and r is not None]
        if later:
            # The others hold a later write of this home: one this store lost (taken back), or
            # one made here after this one and copied out first, which carries it.
            best = max(later, key=order)
            await self.local.apply(kind, record_id, best)
            if check and accepted >= self.fleet.peer_acks_needed:
                FLEET_WRITES.labels(kind, "held").inc()
                return best
            if not check:
                FLEET_WRITES.labels(kind, "superseded").inc()
                raise Superseded(
                    f"{kind} {record_id!r}: the fleet's sites hold a later write of it; retry", retry_after=1
                )
        elif accepted >= self.fleet.peer_acks_needed:
            FLEET_WRITES.labels(kind, "held").inc()
            return record
        newer = [r for r in refused if order(r)[0] > order(record)[0]]
        if newer:
            FLEET_WRITES.labels(kind, "fenced").inc()
            best = max(newer, key=order)
            await self.local.apply(kind, record_id, best)
            raise Moved(best.get("home", ""))
        FLEET_WRITES.labels(kind, "no_majority").inc()
        raise FleetUnavailable(
            f"{kind} {record_id!r}: too few of the fleet's sites hold this write; retry",
            retry_after=1,
        )

    # --- other sites' records ----------------------------------------------------------------

    async def find(self, kind: Kind, record_id: str) -> Record | None:
        """A record this site has no copy of: the newest copy the others hold, kept here. None
        only when enough sites answered that they lack it that no majority can hold it (an
        acknowledged record is on a majority); :class:`FleetUnavailable` when too few answered."""
        answers = await asyncio.gather(*(self.peers.get(s, kind, record_id) for s in self.fleet.peers))
        copies = [r for outcome, r in answers if outcome == "held" and r is not None]
        if not copies:
            lacking = 1 + sum(1 for outcome, _ in answers if outcome == "held")  # this site too
            majority = len(self.fleet.sites) // 2 + 1
            if lacking > len(self.fleet.sites) - majority:
                return None
            raise FleetUnavailable(
                f"{kind} {record_id!r}: not here, and too few of the fleet's sites answered to tell "
                "whether it exists; retry",
                retry_after=1,
            )
        best = max(copies, key=order)
        await self.local.apply(kind, record_id, best)
        return best

    async def take_over(self, kind: Kind, record_id: str, record: Record) -> Record:
        """Make this site the home of ``record`` (its home is unreachable): the next epoch, held
        by a majority, this site's store first (from then on it refuses the old home's copies).
        Raises :class:`Moved` when another site turns out to be the home now, and
        :class:`FleetUnavailable` when too few sites answer."""
        old_home = record.get("home", "")
        for _ in range(TAKEOVER_ATTEMPTS):
            base = order(record)
            proposal = {**record, "epoch": str(base[0] + 1), "home": self.fleet.site}
            if kind == "task" and record.get("status") not in ("succeeded", "failed"):
                proposal[REQUEUE] = "1"  # its message waits in the lost site's queue
                # The lost site's claim goes with it: the new home's worker may claim at once.
                for lease in ("lease_owner", "lease_until"):
                    proposal.pop(lease, None)
            # Tentative here until a majority holds it: this store refuses the old home's copies
            # from now on, yet takes any copy newer than what the takeover was based on.
            tentative = {**proposal, TAKING: old_home}
            held, current = await self.local.apply(kind, record_id, tentative, takeover_from=base)
            if not held and current is not None:  # this store moved on since: start from it
                record = current
                if order(record)[0] > base[0]:
                    if record.get("home") == self.fleet.site:
                        return record
                    raise Moved(record.get("home", ""))
                continue

            async def put(
                site: str, proposal: Record = proposal, base: tuple[int, int] = base
            ) -> tuple[Outcome, Record | None]:
                return await self.peers.put(site, kind, record_id, proposal, takeover_from=base)

            accepted, answers = await self._enough(put, _holds)
            if accepted >= self.fleet.peer_acks_needed:
                await self.local.settle_takeover(kind, record_id, proposal["epoch"], self.fleet.site)
                FLEET_WRITES.labels(kind, "takeover").inc()
                log.warning(
                    "took over a record from an unreachable site",
                    extra={"kind": kind, "id": record_id, "from": old_home, "epoch": proposal["epoch"]},
                )
                return proposal
            newer = [
                r for outcome, r in answers if outcome == "refused" and r is not None and order(r) > base
            ]
            if not newer:
                break
            # Another site held a write this site lacked: adopt it, and take over from there.
            record = max(newer, key=order)
            await self.local.apply(kind, record_id, record)
            if record.get("home") == self.fleet.site:
                return record
            if record.get("home") != old_home:
                raise Moved(record.get("home", ""))
        raise FleetUnavailable(
            f"{kind} {record_id!r}: its site {old_home!r} is unreachable and too few others answered "
            "to take it over safely; retry",
            retry_after=1,
        )


def _holds(outcome: Outcome) -> bool:
    return outcome in ("held", "later")


def _held(outcome: Outcome) -> bool:
    return outcome == "held"


def fleet_replicator(settings: Settings, cache: Cache, ttl: Mapping[str, int]) -> Replicator | None:
    """The site's replicator when it belongs to a fleet (``AGENT_FLEET_SITES``), else None."""
    if not settings.fleet:
        return None
    assert settings.fleet_key is not None  # the settings refuse a fleet without its key
    fleet = Fleet(
        site=settings.site,
        sites=settings.fleet,
        mode=settings.fleet_replication,
        key=settings.fleet_key.get_secret_value(),
    )
    return Replicator(fleet, Peers(fleet), LocalRecords(cache, ttl))
