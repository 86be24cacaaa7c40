"""A stand-in for the Cloud Run Admin API v2 over its REST binding, for one service.

It speaks what the google-cloud-run client sends with its REST transport: ``GET`` a service,
``PATCH`` it (with an ``updateMask`` only the masked fields change; without one the service
becomes the body sent, as the API does), answered with a long-running operation that is done
when first polled (``GET`` the operation). Every update is kept (its mask and body) for the
tests to read.
"""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SERVICE_TYPE = "type.googleapis.com/google.cloud.run.v2.Service"


class CloudRunStandIn:
    def __init__(self, name: str, service: dict[str, Any]) -> None:
        self.name = name  # projects/P/locations/R/services/S
        self.service = {"name": name, **service}
        self.updates: list[tuple[list[str], dict[str, Any]]] = []
        self._operations: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path.removeprefix("/v2/")
                with stand_in._lock:
                    if path == stand_in.name:
                        self._answer(200, copy.deepcopy(stand_in.service))
                    elif path in stand_in._operations:
                        done = stand_in._operations[path]
                        self._answer(
                            200, {"name": path, "done": True, "response": {"@type": SERVICE_TYPE, **done}}
                        )
                    else:
                        self._answer(
                            404,
                            {"error": {"code": 404, "message": f"{path} not found", "status": "NOT_FOUND"}},
                        )

            def do_PATCH(self) -> None:
                url = urlsplit(self.path)
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                mask = [p for v in parse_qs(url.query).get("updateMask", []) for p in v.split(",") if p]
                if url.path.removeprefix("/v2/") != stand_in.name:
                    self._answer(
                        404, {"error": {"code": 404, "message": "no such service", "status": "NOT_FOUND"}}
                    )
                    return
                with stand_in._lock:
                    stand_in.updates.append((mask, body))
                    if not mask:  # no mask: the service becomes what was sent, all of it
                        stand_in.service = {**body, "name": stand_in.name}
                    for field in mask:  # the masked fields only
                        if field in body:
                            stand_in.service[field] = body[field]
                        else:
                            stand_in.service.pop(field, None)
                    operation = (
                        f"{stand_in.name.rsplit('/services/', 1)[0]}/operations/op-{len(stand_in.updates)}"
                    )
                    stand_in._operations[operation] = copy.deepcopy(stand_in.service)
                self._answer(200, {"name": operation, "done": False})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> CloudRunStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
