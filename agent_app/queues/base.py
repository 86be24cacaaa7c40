"""The queue interface every broker adapter implements.

The worker only ever sees :class:`Delivery` objects, whose methods map onto each broker's
own primitives: ack (delete / ack), release (visibility 0 / nak / ack deadline 0), extend
(change visibility / in-progress / modify ack deadline) and dead-letter (native redrive
where the broker has one, a DLQ subject where it does not).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod

# The worker polls in short waits so that a SIGTERM stops it taking work within a second.
RECEIVE_WAIT_SECONDS = 1.0
CHECK_TIMEOUT_SECONDS = 2.0


class QueueUnavailable(Exception):
    """The broker did not answer; the api answers 503, the worker retries later."""


class QueueTimeout(QueueUnavailable):
    """No answer within the app's own bound (:func:`bounded`), as opposed to a refusal."""


class Delivery(ABC):
    body: bytes
    attempt: int  # 1 on first delivery
    max_attempts: int | None  # after this many, the broker dead-letters (None: never)

    @abstractmethod
    async def ack(self) -> None: ...

    @abstractmethod
    async def release(self, delay_seconds: float = 0) -> None:
        """Hand the message back for redelivery after ``delay_seconds``."""

    @abstractmethod
    async def extend(self, lease_seconds: int) -> None:
        """Keep the message hidden from other workers for another ``lease_seconds``."""

    @abstractmethod
    async def dead_letter(self, reason: str) -> None:
        """Send the message to the DLQ now (or let native redrive do it on release)."""


class TaskQueue(ABC):
    kind: str
    max_attempts: int | None = None

    @abstractmethod
    async def start(self, *, consume: bool) -> None:
        """Connect; ``consume`` also prepares receiving (a worker, not the api)."""

    @abstractmethod
    async def publish(self, body: bytes, *, task_id: str) -> None: ...

    @abstractmethod
    async def receive(
        self, max_messages: int, wait_seconds: float = RECEIVE_WAIT_SECONDS
    ) -> list[Delivery]: ...

    async def stop_receiving(self) -> None:
        """Receive no more (shutdown), and have the broker hand this worker nothing more: called
        before held deliveries are handed back. Unary receives end with their call."""
        return None

    @abstractmethod
    async def check(self) -> None:
        """Raise unless the broker answers now (readiness)."""

    @abstractmethod
    async def close(self) -> None: ...


async def bounded(coro: object, seconds: float, what: str) -> object:
    """Await ``coro`` for at most ``seconds``; QueueTimeout otherwise (never a hang)."""
    try:
        # asyncio.timeout, not wait_for: see agent_app.periodic for what 3.11's wait_for drops.
        async with asyncio.timeout(seconds):
            return await coro  # type: ignore[misc]
    except TimeoutError:
        raise QueueTimeout(f"{what} did not answer within {seconds} s") from None
