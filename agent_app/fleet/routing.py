"""Requests for a session or task reach its home, whichever site the edge picked.

An ASGI layer in front of the app. For ``/v1/sessions/{id}...`` and ``/v1/tasks/{id}`` it reads
the record's home from this site's copy (asking the other sites when it has none):

- home here: the app serves it; if the app finds the record moved meanwhile (a newer epoch
  fenced its write, answered as 503 ``moved`` with the new home), the request goes there;
- home elsewhere and reachable: the request is passed there as it came (the client's key
  is valid at every site of the fleet) and its answer returned, the serving site's stamps kept.
  If the connection breaks before the answer, a read is asked again (once; after the home fell
  silent, of its successor: see below). A request with an ``Idempotency-Key`` is sent on to the
  successor after a silence, as the caller's own retry would be (the key makes a second run
  answer the first). Anything else answers 504, as it may have run there, for the caller to
  send again (with its ``Idempotency-Key``);
- home unreachable: its successor takes the record over (``Replicator.take_over``) and serves
  it; any other site passes the request to the successor. A passed request is never passed on.

Requests without a valid client key are left to the app, which refuses them: nobody can make a
site call another for free.
"""

from __future__ import annotations

import hmac
import logging
import re

from starlette.responses import Response

from agent_app.contract import (
    FLEET_KEY_HEADER,
    FORWARDED_HEADER,
    HOME_HEADER,
    REQUEST_ID_HEADER,
    SAFE_METHODS,
    VIA_HEADER,
)
from agent_app.deps import State, created_id
from agent_app.errors import AgentError, FleetUnavailable, GatewayTimeout, Moved
from agent_app.fleet.peers import PeerLost, PeerTimeout
from agent_app.fleet.records import REQUEUE, TAKING, Kind, Record, before_takeover
from agent_app.fleet.replicator import Replicator
from agent_app.handlers import agent_error_response
from agent_app.http import ASGIApp, Message, Receive, Scope, Send, read_request, replaying
from agent_app.keys import owned_by
from agent_app.logs import request_id_var
from agent_app.metrics import FLEET_FORWARDS
from agent_app.runtime import Runtime
from agent_app.schemas import ID_PATTERN, IDEMPOTENCY_KEY_PATTERN

_ID = ID_PATTERN.removeprefix("^").removesuffix("$")
_PATHS: tuple[tuple[re.Pattern[str], Kind], ...] = (
    (re.compile(f"/v1/sessions/({_ID})(?:/messages|/tasks)?"), "session"),
    (re.compile(f"/v1/tasks/({_ID})"), "task"),
)
_FORWARDED = FORWARDED_HEADER.lower().encode()
_FLEET_KEY = FLEET_KEY_HEADER.lower().encode()
# A request passes through at most this many sites before the one that serves it: its entry
# site and, when that site's copy was stale, the site it named.
MAX_HOPS = 2
_HOME = HOME_HEADER.lower().encode()
_FLEET_PREFIX = b"x-skyfleet-"
_NOT_PASSED_BACK = frozenset(
    {"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive", "date", "server"}
)
_REQUEST_ID = REQUEST_ID_HEADER.lower().encode()
_IDEMPOTENCY_KEY = b"idempotency-key"
_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_VIA = VIA_HEADER.lower().encode()
log = logging.getLogger("agent_app.fleet")
# Local tries and passes for one request: a record moves at most once or twice while it runs.
HOPS = 3


def _idempotency_key(scope: Scope) -> str | None:
    """The request's ``Idempotency-Key``, when it has a well-formed one (a malformed one: the app
    answers 422, wherever it is sent)."""
    for name, value in scope["headers"]:
        if name == _IDEMPOTENCY_KEY:
            key = value.decode("latin-1")
            return key if _KEY.fullmatch(key) else None
    return None


def _keyed_create(scope: Scope) -> str | None:
    """The ``Idempotency-Key`` of ``POST /v1/sessions``, when it has a well-formed one."""
    if scope["method"] != "POST" or scope["path"] != "/v1/sessions":
        return None
    return _idempotency_key(scope)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


async def locate(
    runtime: Runtime, kind: Kind, record_id: str, *, hops: int = 0, record: Record | None = None
) -> str | None:
    """The site a request for this record goes to, or None to serve it here (taking the record
    over first when its home is unreachable and this site is the home's successor). ``hops``:
    how many sites have passed the request on already; ``record``: this site's copy, if read."""
    replicator = runtime.replicator
    assert replicator is not None
    fleet = replicator.fleet
    record = record or await replicator.local.read(kind, record_id) or await replicator.find(kind, record_id)
    if record is None:
        return None  # nobody has it: the app answers 404
    if record.get(TAKING):  # this site's own takeover, unsettled: finish it (or learn better)
        record = before_takeover(record)
    home = record.get("home", fleet.site)
    if home == fleet.site:
        if kind == "task" and record.get(REQUEUE):
            await _requeue(runtime, record_id, record)
        return None
    if hops < MAX_HOPS and fleet.knows(home) and replicator.peers.reachable(home):
        return home
    successor = fleet.successor(home)
    if successor == fleet.site:
        try:
            taken = await replicator.take_over(kind, record_id, record)
        except Moved as exc:
            if hops >= MAX_HOPS or exc.home == fleet.site:
                raise
            return exc.home
        if kind == "task" and taken.get("home") == fleet.site:
            await _requeue(runtime, record_id, taken)
        return None
    if hops >= MAX_HOPS or not replicator.peers.reachable(successor):
        raise FleetUnavailable(
            f"{kind} {record_id!r}: its site {home!r} and that site's successor {successor!r} are "
            "unreachable from here; retry",
            retry_after=1,
        )
    return successor


async def _requeue(runtime: Runtime, task_id: str, record: Record) -> None:
    """Queue a task this site took over here (its flag stays until that worked, so a failed try
    is made again at the next request for it)."""
    await runtime.requeue(record)
    assert runtime.replicator is not None
    await runtime.replicator.local.clear_flag("task", task_id, REQUEUE)


class FleetRouting:
    def __init__(self, app: ASGIApp, *, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime = self.state.runtime
        replicator = runtime.replicator
        if scope["type"] != "http" or replicator is None:
            await self.app(scope, receive, send)
            return
        target: tuple[Kind, str | None] | None = next(
            ((kind, m.group(1)) for rx, kind in _PATHS if (m := rx.fullmatch(scope["path"]))), None
        )
        keyed = None if target is not None else _keyed_create(scope)
        if keyed is not None:
            target = ("session", None)  # named by its key, once the caller is known
        if target is None:
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        try:
            key_id = self.state.keys.verify(token)
        except AgentError:
            await self.app(scope, receive, send)  # the app answers 401
            return
        kind, record_id = target
        if record_id is None:
            # A create sent again (its first try may have reached a site now lost) goes where
            # the session it made lives: served there, it answers that session.
            record_id = created_id(token or "", keyed)
            assert record_id is not None
        chain = _passed_by(scope, replicator)
        messages = await read_request(receive)
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        try:
            for attempt in range(HOPS):
                record = await replicator.local.read(kind, record_id)
                if record is None:
                    # Asking every other site costs them work: count it against the caller.
                    runtime.ensure_accepting()
                    assert self.state.limiter is not None
                    await self.state.limiter.hit(key_id)
                    record = await replicator.find(kind, record_id)
                if record is None or not owned_by(record, key_id):
                    # Nobody has it, or it is another key's: the app here answers 404, the same
                    # for both. Never passed on or taken over: where it lives is not the caller's.
                    await self.app(scope, replaying(messages, receive), send)
                    return
                site = await locate(runtime, kind, record_id, hops=len(chain), record=record)
                if site is None:
                    if await self._served_here(scope, replaying(messages, receive), send):
                        return
                    continue  # moved while it ran: ask again where it lives now
                # A read whose connection broke is asked again: once when the home is still
                # there (by this site, the client's first), at its successor after a silence.
                again = attempt == 0 and not chain
                if await self._forward(replicator, site, scope, chain, body, send, ask_again=again):
                    return
            raise FleetUnavailable(f"{kind} {record_id!r}: its home kept moving; retry", retry_after=1)
        except AgentError as exc:
            await _send_response(agent_error_response(exc), send)
        except Exception:
            log.exception("routing a request to its record's site failed")
            await _send_response(
                agent_error_response(
                    FleetUnavailable("the fleet could not route this request; retry", retry_after=1)
                ),
                send,
            )

    async def _served_here(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Run the app; False (nothing sent) when it answered that the record moved."""
        moved = False

        async def watch(message: Message) -> None:
            nonlocal moved
            if message["type"] == "http.response.start" and message["status"] == 503:
                moved = any(name == _HOME for name, _ in message.get("headers", []))
            if not moved:
                await send(message)

        await self.app(scope, receive, watch)
        return not moved

    async def _forward(
        self,
        replicator: Replicator,
        site: str,
        scope: Scope,
        chain: list[str],
        body: bytes,
        send: Send,
        *,
        ask_again: bool,
    ) -> bool:
        query = scope["query_string"].decode("latin-1")
        target = scope["path"] + (f"?{query}" if query else "")
        # The client's headers, less any the fleet sets (a client cannot pose as a site).
        headers = [
            (k, v) for k, v in scope["headers"] if k != _REQUEST_ID and not k.startswith(_FLEET_PREFIX)
        ]
        headers.append((_REQUEST_ID, (request_id_var.get() or "").encode()))
        try:
            response = await replicator.peers.forward(site, scope["method"], target, headers, body, chain)
        except PeerLost as exc:
            if scope["method"] in SAFE_METHODS and (exc.silent or ask_again):
                return False  # a read changed nothing there: ask again where the record lives
            if exc.silent and _idempotency_key(scope) is not None:
                # The home is gone: its successor takes the record over, with every write a
                # majority acknowledged, and answers a turn that ran there from the record.
                return False
            # It may have run there: never sent again elsewhere; the client retries (idempotently).
            raise GatewayTimeout(
                f"the connection to site {site!r} broke before its answer ({exc}); retry", retry_after=1
            ) from None
        except PeerTimeout as exc:
            raise GatewayTimeout(
                f"site {site!r} did not answer in time: {exc}; retry", retry_after=1
            ) from None
        if response is None:
            return False
        FLEET_FORWARDS.labels(site).inc()
        passed = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in response.headers.multi_items()
            if k.lower() not in _NOT_PASSED_BACK
        ]
        passed.append((b"content-length", str(len(response.content)).encode()))
        passed.append((_VIA, replicator.fleet.site.encode()))
        await send({"type": "http.response.start", "status": response.status_code, "headers": passed})
        await send({"type": "http.response.body", "body": response.content})
        return True


def _passed_by(scope: Scope, replicator: Replicator) -> list[str]:
    """The sites that passed this request on, when another site of the fleet sent it (its key
    proves it); [] for a client's request, whatever headers it sends."""
    key = chain = None
    for name, value in scope["headers"]:
        if name == _FLEET_KEY:
            key = value
        elif name == _FORWARDED:
            chain = value.decode("latin-1")
    if key is None or chain is None or not hmac.compare_digest(key, replicator.fleet.key.encode()):
        return []
    return [s.strip() for s in chain.split(",") if s.strip()]


async def _send_response(response: Response, send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers}
    )
    await send({"type": "http.response.body", "body": bytes(response.body)})
