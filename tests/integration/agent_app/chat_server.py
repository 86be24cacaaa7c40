"""A tiny real HTTP server speaking the OpenAI chat-completions format.

The boundary for the OpenAI-compatible backend: a real socket, real HTTP, the real JSON
shape. Tests script its behaviour: a queue of failures to answer first (status codes, or
"hang" for a delay longer than the client's timeout), an optional delay on every answer,
and a tool call to return when the user asks for arithmetic.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from skyfleet.testing.servers import free_port


class ChatServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.failures: deque[int | str] = deque()
        self.delay = 0.0
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                payload = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append(payload)
                server.auth_headers.append(self.headers.get("authorization"))
                failure = server.failures.popleft() if server.failures else None
                if failure == "hang":
                    time.sleep(2.0)
                    failure = 503
                if isinstance(failure, int):
                    self._send(failure, {"error": {"message": "scripted failure", "type": "server_error"}})
                    return
                if server.delay:
                    time.sleep(server.delay)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                self._send(200, server.answer(payload))

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ChatServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def answer(payload: dict[str, Any]) -> dict[str, Any]:
        messages = payload["messages"]
        last = messages[-1]
        tools = {t["function"]["name"] for t in payload.get("tools", [])}
        message: dict[str, Any]
        if last["role"] == "tool":
            message = {"role": "assistant", "content": f"The tool said {last['content']}."}
        elif last["content"].startswith("calc ") and "calculator" in tools:
            call = {
                "id": "call_1",
                "type": "function",
                "function": {
                    "name": "calculator",
                    "arguments": json.dumps({"expression": last["content"][5:]}),
                },
            }
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        else:
            message = {"role": "assistant", "content": f"remote echo: {last['content']}"}
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": payload.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
