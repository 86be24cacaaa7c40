"""Tiny loopback HTTP GETs for health and monitoring endpoints.

Plain ``http.client`` rather than httpx: a probe runs many times a second during start-up
and drills, and building an httpx client (it loads a TLS context) costs ~150 ms each time.
"""

from __future__ import annotations

import http.client
import json
from typing import Any


def get(host: str, port: int, path: str, timeout: float = 0.5) -> tuple[int, bytes] | None:
    """(status, body) of ``GET http://host:port/path``, or None if it did not answer."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def get_json(host: str, port: int, path: str, timeout: float = 0.5) -> dict[str, Any] | None:
    """The JSON body of a 200 answer, or None."""
    answer = get(host, port, path, timeout)
    if answer is None or answer[0] != 200:
        return None
    try:
        body = json.loads(answer[1])
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
