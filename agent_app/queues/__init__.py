"""Task queues: one interface, one adapter per broker, picked by the queue URL's scheme."""

from __future__ import annotations

from agent_app.config import Settings
from agent_app.contract import NatsQueue, PubSubQueue, SqsQueue
from agent_app.queues.base import Delivery, TaskQueue

__all__ = ["Delivery", "TaskQueue", "open_queue"]


def open_queue(settings: Settings) -> TaskQueue:
    target = settings.queue
    lease = settings.task_lease_seconds
    if isinstance(target, NatsQueue):
        from agent_app.queues.nats_queue import NatsTaskQueue

        password = settings.queue_password.get_secret_value() if settings.queue_password else None
        return NatsTaskQueue(target, lease_seconds=lease, ca_file=settings.queue_ca_file, password=password)
    if isinstance(target, SqsQueue):
        from agent_app.queues.sqs_queue import SqsTaskQueue

        return SqsTaskQueue(target, lease_seconds=lease)
    if isinstance(target, PubSubQueue):
        from agent_app.queues.pubsub_queue import PubSubTaskQueue

        return PubSubTaskQueue(target, lease_seconds=lease)
    raise AssertionError(f"unhandled queue target {target!r}")
