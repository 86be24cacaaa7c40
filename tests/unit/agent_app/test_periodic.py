"""The app's background loops (a lease's heartbeat, the primary's watch, adoption) stop when
cancelled, even when an await in their step swallowed the cancellation, as Python 3.11's
``asyncio.wait_for`` does when its inner call finishes in the same loop turn (redis-py bounds
each command's write with it). A heartbeat that ran on kept its ended run's message from
coming back: the task stayed "running" for good."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from agent_app.periodic import every


async def _step_bounded_by_wait_for(release: asyncio.Event, calls: list[int]) -> None:
    calls.append(1)
    await asyncio.wait_for(release.wait(), 5)


async def _inside_wait_for(calls: list[int]) -> None:
    """Until the step was called: it then awaits inside wait_for in the same loop turn."""
    async with asyncio.timeout(5):
        while not calls:
            await asyncio.sleep(0)


async def test_the_hazard_python_3_11_wait_for_drops_a_cancel_that_meets_its_result() -> None:
    """What the loops guard against, shown on this interpreter (3.12 fixed it)."""
    release, calls = asyncio.Event(), []
    task = asyncio.create_task(_step_bounded_by_wait_for(release, calls))
    await _inside_wait_for(calls)
    release.set()
    task.cancel()
    async with asyncio.timeout(2):
        done = await asyncio.gather(task, return_exceptions=True)
    swallowed = not isinstance(done[0], asyncio.CancelledError)
    assert swallowed == (sys.version_info < (3, 12))


async def test_a_loop_stops_when_its_step_swallowed_the_cancellation() -> None:
    release = asyncio.Event()
    calls: list[int] = []
    loop = asyncio.create_task(
        every(lambda: 0.01, lambda: _step_bounded_by_wait_for(release, calls), at_once=True)
    )
    await _inside_wait_for(calls)
    release.set()
    loop.cancel()  # in the loop turn the step's wait_for finishes in
    async with asyncio.timeout(2):  # a loop that ran on would never end
        with pytest.raises(asyncio.CancelledError):
            await loop
    assert calls == [1]  # and no step ran after the cancellation


async def test_a_loop_steps_every_interval_until_cancelled() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    calls: list[float] = []

    async def step() -> None:
        calls.append(loop.time())

    task = asyncio.create_task(every(lambda: 0.05, step))
    async with asyncio.timeout(5):
        while len(calls) < 3:
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # An interval before each step, the first included (the loop's clock may fire a
    # callback up to its resolution early).
    gaps = [b - a for a, b in zip([started, *calls], calls, strict=False)]
    resolution = time.get_clock_info("monotonic").resolution
    assert all(gap >= 0.05 - resolution for gap in gaps), gaps
