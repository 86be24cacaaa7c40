"""JSON logs that carry the request, session and task ids of whatever is running.

The ids live in context variables, so a log line written deep inside the session store or a
queue adapter still names the request or task it belongs to without threading ids through
every call. One JSON object per line is what CloudWatch, Cloud Logging and Loki all parse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any, TextIO

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
session_id_var: ContextVar[str | None] = ContextVar("session_id", default=None)
task_id_var: ContextVar[str | None] = ContextVar("task_id", default=None)

_STATIC: dict[str, str] = {}
# Record attributes that are not extras (uvicorn's color_message duplicates msg with ANSI codes).
_RESERVED = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "color_message"}
_IDS = (("request_id", request_id_var), ("session_id", session_id_var), ("task_id", task_id_var))
# One encoder for every line: json.dumps builds a new one per call when given ``default``.
_ENCODER = json.JSONEncoder(default=str)


class JsonFormatter(logging.Formatter):
    """One JSON object per record. It runs once per request (the access line), so it keeps
    per-call work small: the timestamp's seconds part is formatted once per second."""

    _second = -1
    _stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        extras = [(k, v) for k, v in record.__dict__.items() if k not in _RESERVED and k[0] != "_"]
        if record.exc_info:
            extras.append(("exc", self.formatException(record.exc_info)))
        return self.render(record.created, record.levelname, record.name, record.getMessage(), extras)

    def render(
        self, created: float, level: str, logger: str, msg: str, fields: Iterable[tuple[str, Any]]
    ) -> str:
        """The line for a record with these attributes (also used by :func:`access_line`)."""
        second = int(created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        entry: dict[str, Any] = {
            # the milliseconds as LogRecord computes ``msecs``
            "ts": f"{self._stamp}.{int((created - second) * 1000):03d}Z",
            "level": level.lower(),
            "logger": logger,
            "msg": msg,
            **_STATIC,
        }
        for key, var in _IDS:
            value = var.get()
            if value:
                entry[key] = value
        entry.update(fields)
        return _ENCODER.encode(entry)


class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The process's one handler: JSON lines on stdout, written once per event-loop iteration.

    Why: the api writes a line per request, and each line was its own ``write`` system call
    (stdout is unbuffered in the image). Lines logged on the thread running the event loop
    are now collected and written together by a callback the loop runs next, so a loop
    iteration that completes several requests writes their lines at once. WARNING and above,
    lines from other threads and lines logged outside a running loop are written at once
    (after anything pending, so the order holds); :meth:`flush` (also called at exit by
    ``logging.shutdown``) writes what is pending. A line waits at most for the rest of the
    loop iteration that logged it; a SIGKILL can lose only those.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop a drain is scheduled on

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self.write_line(line, at_once=record.levelno >= logging.WARNING)

    def write_line(self, line: str, *, at_once: bool = False) -> None:
        """Queue or write one formatted line; the caller holds the handler's lock."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._pending.append(line)
        if loop is None or at_once:
            self._write_pending()
            return
        if self._loop is not loop:
            if self._loop is not None and len(self._pending) > 1:
                self._write_pending(keep=line)  # a drain scheduled on another loop may never run
            self._loop = loop
            loop.call_soon(self._drain)

    def _drain(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._loop = None
            self._write_pending()

    def _write_pending(self, keep: str | None = None) -> None:
        lines = self._pending[:-1] if keep is not None else self._pending
        self._pending = [keep] if keep is not None else []
        if not lines:
            return
        try:
            self.stream.write("".join(lines))
            self.stream.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "lost log lines", "levelno": logging.ERROR}))

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
            super().flush()


_handler: JsonHandler | None = None
access_log = logging.getLogger("agent_app.access")


def _plain(handler: JsonHandler) -> bool:
    """Whether the access logger's records reach ``handler`` alone and unfiltered, as
    :func:`setup_logging` configures it (nobody added a handler or a filter since)."""
    logger: logging.Logger | None = access_log
    while logger is not None:
        if logger.filters or (logger.handlers and logger is not logging.root):
            return False
        if not logger.propagate and logger is not logging.root:
            return False
        logger = logger.parent
    return logging.root.handlers == [handler] and not handler.filters and handler.level <= logging.INFO


def access_line(fields: dict[str, Any]) -> None:
    """Log the request's access line: what ``access_log.info("request", extra=fields)`` logs.

    Why not that call: it runs once per request and the record it builds (``LogRecord``,
    the logger and handler chain, the generic extras scan) cost more than the line itself.
    When the access logger is enabled and its records would reach only the JSON handler,
    unfiltered (the configuration :func:`setup_logging` makes), the line is rendered by the
    same formatter from the same attributes and handed to that handler directly; otherwise
    (other handlers or filters, e.g. in tests) the record goes through logging as usual.
    """
    if not access_log.isEnabledFor(logging.INFO):
        return
    handler = _handler
    if handler is None or not _plain(handler) or not isinstance(handler.formatter, JsonFormatter):
        access_log.info("request", extra=fields)
        return
    line = handler.formatter.render(time.time(), "INFO", access_log.name, "request", fields.items())
    with handler.lock:  # type: ignore[union-attr]
        handler.write_line(line + "\n")


def setup_logging(level: str, *, site: str, instance: str, process: str) -> None:
    """Route every logger (ours, uvicorn's, the clients') through one JSON handler."""
    _STATIC.update({"site": site, "instance": instance, "process": process})
    # The JSON lines carry none of the caller's file/line, thread or process names, so the
    # records need not collect them (the logging HOWTO's "Optimization" switches): it saves
    # a stack walk and several lookups on every line, that is on every request.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _handler
    handler = _handler = JsonHandler(sys.stdout)
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


def last_words(msg: str, fields: dict[str, Any]) -> None:
    """Write an error line, and whatever lines are pending, right before ``os._exit``.

    Called from a thread that must not block: when the handler's lock cannot be had soon (the
    thread holding it may be the stuck one), the line is written straight to stdout's file
    descriptor, without the pending lines.
    """
    handler = _handler
    formatter = handler.formatter if handler is not None else None
    if not isinstance(formatter, JsonFormatter):
        formatter = JsonFormatter()
    line = formatter.render(time.time(), "ERROR", "agent_app.process", msg, fields.items()) + "\n"
    if handler is not None and handler.lock is not None and handler.lock.acquire(timeout=0.2):
        try:
            handler.write_line(line, at_once=True)
            return
        finally:
            handler.lock.release()
    with contextlib.suppress(OSError, ValueError):
        os.write(sys.stdout.fileno(), line.encode())
