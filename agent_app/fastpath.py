"""``POST /v1/sessions/{id}/messages`` without FastAPI's per-request machinery.

Why: a turn is the request the service exists for and the one its benchmark target is set
on (issue #3: at least 0.7 of a framework-free baseline's throughput). FastAPI's route
stack (middleware layers, router, request object, dependency resolution, body and response
validation) costs more per turn than everything the app itself does around the Redis work.

What stays the same: the FastAPI route remains the contract (OpenAPI, models, status codes)
and handles every request this path does not take. The fast path only takes a request it can
tell is well formed *before* anything with a side effect runs: the exact path with a valid
session id, a ``Bearer`` credential, no malformed ``Idempotency-Key``, an
``application/json`` body that parses and validates as
:class:`~agent_app.schemas.MessageCreate`. Anything else (no or another auth scheme, other
media types, malformed or invalid bodies, a client that goes away) is handed to FastAPI
unchanged, body replayed, so every error keeps FastAPI's exact handling. What runs after
that is shared with the route: :func:`agent_app.deps.authorize` (draining, key, rate limit)
and :func:`agent_app.deps.take_turn`, errors through the same responses
(``agent_app.handlers``), the reply serialised from :class:`~agent_app.schemas.TurnReply`
exactly as the route's ``response_model`` does (validated once, dumped once), and
``scope["route"]`` set to the route so metrics and the access log name its template.

It is not used when tracing is on: then every request goes through FastAPI so its spans
(native or from the instrumentor) cover turns too.
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import TypeAdapter

from agent_app.deps import State, authorize, take_turn
from agent_app.errors import AgentError
from agent_app.handlers import agent_error_response, unexpected_error_response
from agent_app.http import ASGIApp, Receive, Scope, Send, read_request, replaying
from agent_app.routers.sessions import TURN_ROUTE
from agent_app.routers.sessions import router as sessions_router
from agent_app.schemas import ID_PATTERN, IDEMPOTENCY_KEY_PATTERN, MessageCreate, TurnReply

# The route's path with its session-id rule (``ID_PATTERN`` without its anchors); fullmatch.
_TURN_PATH = re.compile("/v1/sessions/(" + ID_PATTERN.removeprefix("^").removesuffix("$") + ")/messages")
_REPLY = TypeAdapter(TurnReply)
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


def _credentials(scope: Scope) -> tuple[str, str | None] | None:
    """The bearer token and the ``Idempotency-Key`` (or ``None``) when the request carries a
    token, declares a JSON body and has no malformed key, read as FastAPI reads them (the
    first header of each name; ``HTTPBearer``'s parsing; a JSON media type; the key's
    pattern); ``None`` when FastAPI might see anything else."""
    token = content_type = key = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            token = value if token is None else token
        elif name == b"content-type":
            content_type = value if content_type is None else content_type
        elif name == b"idempotency-key":
            key = value if key is None else key
    if token is None or content_type is None:
        return None
    if content_type.split(b";", 1)[0].strip().lower() != b"application/json":
        return None
    idempotency_key = key.decode("latin-1") if key is not None else None
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.match(idempotency_key):
        return None
    scheme, _, credentials = token.decode("latin-1").partition(" ")
    credentials = credentials.strip()
    return (credentials, idempotency_key) if scheme.lower() == "bearer" and credentials else None


def _parse(body: bytes) -> MessageCreate | None:
    """The body as the route's model, parsed and validated in one pass, or ``None``.

    FastAPI reads it with ``json.loads`` and then validates the model; a body that passes
    here passes there with the same value (pydantic's parser is the stricter of the two: it
    refuses a byte-order mark, for one), and any body refused here goes to FastAPI, which
    answers it with its own error."""
    try:
        return MessageCreate.model_validate_json(body)
    except ValueError:  # pydantic's ValidationError is one
        return None


class TurnFastPath:
    """ASGI wrapper around the FastAPI app: takes well-formed turns, passes everything else."""

    def __init__(self, app: FastAPI) -> None:
        self.app: ASGIApp = app
        self.state: State = app.state.agent
        # The route object the router puts in ``scope["route"]`` for this path.
        self.route = next(
            r for r in sessions_router.routes if isinstance(r, APIRoute) and r.path == TURN_ROUTE
        )
        assert self.route.methods and "POST" in self.route.methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = None
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path = _TURN_PATH.fullmatch(scope["path"])
        credentials = _credentials(scope) if path else None
        if path is None or credentials is None:
            await self.app(scope, receive, send)
            return
        # The whole body (Edge has bounded its size), kept for a replay to FastAPI.
        read = await read_request(receive)
        body = b"".join(m.get("body", b"") for m in read) if read[-1]["type"] == "http.request" else b""
        request = _parse(body) if body else None
        if request is None:
            await self.app(scope, replaying(read, receive), send)
            return
        await self._turn(scope, receive, send, path.group(1), credentials, request.content)

    async def _turn(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        session_id: str,
        credentials: tuple[str, str | None],
        text: str,
    ) -> None:
        scope["route"] = self.route  # as the router sets it: metrics and logs use its template
        token, idempotency_key = credentials
        try:
            key_id = await authorize(self.state, token)
            reply = await take_turn(
                self.state, session_id, text, key_id=key_id, idempotency_key=idempotency_key
            )
        except AgentError as exc:
            await agent_error_response(exc)(scope, receive, send)
            return
        except Exception:
            # As Starlette's ServerErrorMiddleware: answer 500, then let the server see it.
            await unexpected_error_response()(scope, receive, send)
            raise
        # The route's response_model step: the reply is a TurnReply already, so it is dumped
        # once, with the same serializer options FastAPI uses (by alias, nothing excluded).
        body = _REPLY.dump_json(reply, by_alias=True)
        headers = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
