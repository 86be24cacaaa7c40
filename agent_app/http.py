"""The ASGI layer every response passes through, shared by the api and the worker's probe server.

A plain ASGI middleware rather than Starlette's BaseHTTPMiddleware: it adds no task or
queue per request, which matters for the latency budget. It assigns or accepts the
request id, stamps the site, instance and request-id headers the drills attribute traffic
by, enforces the body-size limit (413), counts in-flight requests for the SIGTERM drain,
records latency per route template, and writes one JSON access log line.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from agent_app.contract import FLEET_KEY_HEADER, INSTANCE_HEADER, REQUEST_ID_HEADER, SITE_HEADER
from agent_app.logs import access_line, request_id_var, session_id_var, task_id_var
from agent_app.metrics import ERRORS, IN_FLIGHT, request_seconds

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode()
_SITE_KEY = SITE_HEADER.lower().encode()
_FLEET_KEY = FLEET_KEY_HEADER.lower().encode()


class BodyTooLarge(Exception):
    pass


async def read_request(receive: Receive, max_body: int | None = None) -> list[Message]:
    """Every message of the request body, up to its last (or a disconnect, which ends the
    list); :class:`BodyTooLarge` once the body passes ``max_body``."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages
        size += len(message.get("body", b""))
        if max_body is not None and size > max_body:
            raise BodyTooLarge
        if not message.get("more_body", False):
            return messages


def replaying(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` for the wrapped app: the messages already read, then the live ones."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


def error_body(
    status: int, code: str, message: str, request_id: str | None
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps({"code": code, "message": message, "request_id": request_id}).encode()
    return body, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


class Edge:
    """Wraps an ASGI app with ids, headers, limits, metrics and the in-flight count."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        site: str,
        instance: str,
        max_body: int,
        peer_key: str | None = None,
        peer_max_body: int | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body
        # A fleet site's copy of a whole session can be larger than any client request: a
        # request that presents the fleet key gets the peers' limit.
        self.peer_key = peer_key.encode() if peer_key else None
        self.peer_max_body = peer_max_body or max_body
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self._static = [
            (SITE_HEADER.lower().encode(), site.encode()),
            (INSTANCE_HEADER.lower().encode(), instance.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = ""
        length = None
        limit = self.max_body
        for name, value in scope["headers"]:
            if name == _REQUEST_ID_KEY:
                candidate = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(candidate):
                    request_id = candidate
            elif name == b"content-length":
                length = value
            elif (
                name == _FLEET_KEY and self.peer_key is not None and hmac.compare_digest(value, self.peer_key)
            ):
                limit = self.peer_max_body
        request_id = request_id or os.urandom(16).hex()  # 32 hex characters, as sessions.new_id
        request_id_var.set(request_id)
        session_id_var.set(None)
        task_id_var.set(None)
        extra = [*self._static, (_REQUEST_ID_KEY, request_id.encode())]
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", [])
                # A response another site of the fleet served keeps that site's stamps.
                if not any(name == _SITE_KEY for name, _ in headers):
                    message["headers"] = [*headers, *extra]
            await send(message)

        self.in_flight += 1
        self.idle.clear()
        IN_FLIGHT.inc()
        try:
            app_receive = receive
            if length is not None:
                if not length.isdigit() or int(length) > limit:
                    raise BodyTooLarge
            else:
                # chunked, whatever the method (a fleet site reads a body it passes on): no length
                # to check up front
                app_receive = replaying(await read_request(receive, limit), receive)
            await self.app(scope, app_receive, send_wrapper)
        except BodyTooLarge:
            body, headers = error_body(
                413, "too_large", f"request body is over the limit of {limit} bytes", request_id
            )
            ERRORS.labels("too_large").inc()
            await send_wrapper({"type": "http.response.start", "status": 413, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            self.in_flight -= 1
            IN_FLIGHT.dec()
            if self.in_flight == 0:
                self.idle.set()
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            request_seconds(scope["method"], template, status).observe(elapsed)
            access_line(
                {
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                }
            )
