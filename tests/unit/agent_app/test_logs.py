"""The JSON log pipeline in-process: the handler's once-per-loop-iteration writes and the
access line's direct path, against the real ``logging`` module and a real stream."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from agent_app.logs import JsonFormatter, access_line, access_log, request_id_var, setup_logging

FIELDS = {"method": "POST", "path": "/v1/x", "route": "/v1/{id}", "status": 200, "duration_ms": 1.5}


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """setup_logging on a real text stream standing in for stdout; logging restored after."""
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    switches = {
        name: getattr(logging, name)
        for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")
    }
    setup_logging("INFO", site="site-a", instance="i-1", process="api")
    yield out
    root.handlers[:], root.level = saved
    for name, value in switches.items():
        setattr(logging, name, value)
    access_log.filters.clear()


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_lines_are_written_once_per_loop_iteration_in_order(stream: io.StringIO) -> None:
    log = logging.getLogger("agent_app.test")
    log.info("first")
    log.info("second")
    assert stream.getvalue() == ""  # pending until the loop runs its next callbacks
    await asyncio.sleep(0)
    assert [e["msg"] for e in lines(stream)] == ["first", "second"]
    log.info("third")
    log.warning("urgent")  # written at once, after what was pending
    assert [e["msg"] for e in lines(stream)] == ["first", "second", "third", "urgent"]
    log.info("last")
    logging.getLogger().handlers[0].flush()  # what logging.shutdown does at exit
    assert lines(stream)[-1]["msg"] == "last"


def test_lines_outside_an_event_loop_are_written_at_once(stream: io.StringIO) -> None:
    logging.getLogger("agent_app.test").info("no loop here")
    assert lines(stream)[0]["msg"] == "no loop here"


async def test_access_line_is_the_record_logging_would_write(stream: io.StringIO) -> None:
    request_id_var.set("req-1")
    access_line(dict(FIELDS))
    access_log.info("request", extra=dict(FIELDS))
    await asyncio.sleep(0)
    direct, logged = lines(stream)
    for entry in (direct, logged):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry.pop("ts"))
    assert direct == logged
    assert list(direct) == list(logged)  # same keys in the same order
    assert direct == {
        "level": "info",
        "logger": "agent_app.access",
        "msg": "request",
        "site": "site-a",
        "instance": "i-1",
        "process": "api",
        "request_id": "req-1",
        **FIELDS,
    }


async def test_access_line_respects_level_and_filters(stream: io.StringIO) -> None:
    access_log.addFilter(lambda record: record.getMessage() != "request")
    access_line(dict(FIELDS))  # a filter is configured: the record goes through logging, dropped
    access_log.filters.clear()
    logging.getLogger().setLevel(logging.WARNING)
    access_line(dict(FIELDS))  # below the level: nothing
    await asyncio.sleep(0)
    assert stream.getvalue() == ""


def test_formatter_renders_exceptions_and_extras() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    record.code = "internal"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "error" and entry["code"] == "internal"
    assert "ValueError: boom" in entry["exc"]
