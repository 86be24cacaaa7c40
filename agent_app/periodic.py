"""Background loops that run until cancelled: a lease's heartbeat, the primary's watch, the
adoption of a lost site's tasks.

Python 3.11's ``asyncio.wait_for`` drops a cancellation that arrives in the loop turn its
inner call finishes in: it returns that call's result instead (python/cpython#86296, fixed in
3.12). redis-py bounds each command's write with it, so a loop that only stops on
``CancelledError`` can run on after its owner cancelled it; a lease's heartbeat then extends
the message of a run that has ended, and the broker never delivers it again. The request
stays recorded on the task (``Task.cancelling``), which these loops look at after each await.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


def cancel_requested() -> bool:
    """Whether the running task was asked to stop, even if an await swallowed the request."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def stop_if_cancelled() -> None:
    """Raise ``CancelledError`` if the running task was asked to stop (see the module)."""
    if cancel_requested():
        raise asyncio.CancelledError("stopped on a cancellation an await had swallowed")


async def every(
    interval: Callable[[], float], step: Callable[[], Awaitable[object]], *, at_once: bool = False
) -> None:
    """Await ``step()`` every ``interval()`` seconds (first at once with ``at_once``) until
    cancelled; ``step`` handles its own errors."""
    if not at_once:
        await asyncio.sleep(interval())
    while True:
        stop_if_cancelled()
        await step()
        stop_if_cancelled()
        await asyncio.sleep(interval())
