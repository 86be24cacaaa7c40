"""The queue interface every broker adapter implements.

The worker only ever sees :class:`Delivery` objects, whose methods map onto each broker's
own primitives: ack (delete / ack), release (visibility 0 / nak / ack deadline 0), extend
(change visibility / in-progress / modify ack deadline) and dead-letter (the message sent to
the dead-letter queue, topic or subject with its reason, then deleted / acked / terminated).

Every broker is set to deliver a message once more than the app runs it
(:data:`RESERVED_DELIVERIES`): a worker killed during the last run leaves nobody to record the
failure, and that extra delivery is what finds the task unfinished, marks it failed and
dead-letters it. The brokers' own dead-lettering (SQS redrive, Pub/Sub's dead-letter policy)
is only the backstop after it; a NATS consumer past ``max_deliver`` delivers the message no
more and has none.

A delivery handed back on shutdown uses no attempt: the worker requeues it (``send_copy``,
then ``ack``), a fresh copy carrying the attempts its task's deliveries used before it
(:data:`ATTEMPTS_BEFORE_HEADER`, which every adapter adds to the broker's own count) and its
free hand-backs so far (:data:`HANDBACKS_HEADER`). Released, it would use up one of the
broker's deliveries, and a worker stopped during a task's last run (a deploy, a scale-in) would
leave it to the reserved delivery, which marks it failed unrun. Hand-backs are free only
:data:`FREE_HANDBACKS` times per task: a copy restarts the broker's own delivery limit, so a
task that keeps bringing its worker down must still use up its attempts.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping

# The worker polls in short waits so that a SIGTERM stops it taking work within a second.
RECEIVE_WAIT_SECONDS = 1.0
CHECK_TIMEOUT_SECONDS = 2.0
# The deliveries a broker makes beyond the app's runs of a task (see the module's docstring).
RESERVED_DELIVERIES = 1
# Every message carries its task id as this attribute (SQS message attribute, Pub/Sub attribute,
# NATS header), and a dead letter keeps it.
TASK_ID_ATTRIBUTE = "task_id"
# What a dead letter carries besides its body and the message's own attributes: why it was
# dead-lettered, and at which delivery.
REASON_HEADER = "Skyfleet-Reason"
ATTEMPTS_HEADER = "Skyfleet-Attempts"
REASON_BYTES = 1000
# A requeued copy's attempts used before it, and the task's free hand-backs so far.
ATTEMPTS_BEFORE_HEADER = "Skyfleet-Attempts-Before"
HANDBACKS_HEADER = "Skyfleet-Handbacks"
FREE_HANDBACKS = 3


def broker_deliveries(runs: int) -> int:
    """The deliveries to configure on the broker for ``runs`` runs of a task (infra, NATS)."""
    return runs + RESERVED_DELIVERIES


def runs_of(deliveries: int) -> int:
    """The app's runs of a task on a broker configured for ``deliveries`` (SQS
    ``maxReceiveCount``, Pub/Sub ``max_delivery_attempts``). A broker left at one delivery has
    none to spare: that one is the run, and a worker killed during it leaves its task running."""
    return max(1, deliveries - RESERVED_DELIVERIES)


def dead_letter_headers(reason: str, attempt: int) -> dict[str, str]:
    """The reason (cut to fit every broker's attribute limit, whole characters) and delivery."""
    cut = reason.encode()[:REASON_BYTES].decode(errors="ignore")
    return {REASON_HEADER: cut, ATTEMPTS_HEADER: str(attempt)}


def _count(attributes: Mapping[str, str] | None, name: str) -> int:
    value = (attributes or {}).get(name, "0")
    return int(value) if value.isdigit() else 0


def copy_state(attributes: Mapping[str, str] | None) -> tuple[int, int]:
    """The attempts a message's earlier copies used, and its free hand-backs (0, 0 for a message
    as the api publishes it)."""
    return _count(attributes, ATTEMPTS_BEFORE_HEADER), _count(attributes, HANDBACKS_HEADER)


def requeued_attributes(attributes: Mapping[str, str], attempt: int, handbacks: int) -> dict[str, str]:
    """A requeued copy's attributes: the message's own, the attempts used before the delivery
    handed back (which does not count), and one more free hand-back."""
    return {**attributes, ATTEMPTS_BEFORE_HEADER: str(attempt - 1), HANDBACKS_HEADER: str(handbacks + 1)}


class QueueUnavailable(Exception):
    """The broker did not answer; the api answers 503, the worker retries later."""


class QueueTimeout(QueueUnavailable):
    """No answer within the app's own bound (:func:`bounded`), as opposed to a refusal."""


class Delivery(ABC):
    body: bytes
    attempt: int  # 1 on first delivery (earlier copies' attempts included)
    handbacks: int = 0  # the free hand-backs its task had before this copy
    handed_back = False  # set by the worker once it starts handing this delivery back
    # The app's runs of a task: the last failed one dead-letters it (None: retried for good).
    # The broker delivers once more (RESERVED_DELIVERIES) for a worker lost during the last.
    max_attempts: int | None

    @property
    def free_handback(self) -> bool:
        """Whether handing this delivery back may use no attempt (a copy): FREE_HANDBACKS per task."""
        return self.handbacks < FREE_HANDBACKS

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
        """Send the message to the dead-letter queue now, with ``reason``, and remove it here."""

    @abstractmethod
    async def send_copy(self) -> None:
        """Send a copy of the message, with :func:`requeued_attributes`, to the queue: a hand-back
        that uses no attempt once this delivery is acknowledged (after it, so a worker lost in
        between leaves two copies, which the task's claim tells apart, never none). Raises
        QueueTimeout when its outcome is not known (it may have been sent)."""


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
