"""JSON logs that carry the request, session and task ids of whatever is running.

The ids live in context variables, so a log line written deep inside the session store or a
queue adapter still names the request or task it belongs to without threading ids through
every call. One JSON object per line is what CloudWatch, Cloud Logging and Loki all parse.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
session_id_var: ContextVar[str | None] = ContextVar("session_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("task_id", default=None)

_STATIC: dict[str, str] = {}
# Record attributes that are not extras (uvicorn's color_message duplicates msg with ANSI codes).
_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_STATIC,
        }
        for key, var in (
            ("request_id", request_id_var),
            ("session_id", session_id_var),
            ("task_id", task_id_var),
        ):
            value = var.get()
            if value:
                entry[key] = value
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str, *, site: str, instance: str, process: str) -> None:
    """Route every logger (ours, uvicorn's, the clients') through one JSON handler."""
    _STATIC.update({"site": site, "instance": instance, "process": process})
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Our middleware writes one access line per request with the ids; uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
    for noisy in ("botocore", "aiobotocore", "nats", "google", "grpc", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
