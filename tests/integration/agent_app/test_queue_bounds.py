"""A queue that stops answering fails a publish within its bound (QueueTimeout), never a hang:
a turn holds its session's lock while it queues a task, and a task create is a client's wait."""

from __future__ import annotations

import asyncio

import pytest

from agent_app.contract import SqsQueue
from agent_app.queues.base import QueueTimeout
from agent_app.queues.sqs_queue import PUBLISH_TIMEOUT_SECONDS, SqsTaskQueue


def test_an_sqs_endpoint_that_takes_the_request_and_never_answers_fails_the_publish_in_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    received: list[bytes] = []

    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.append(await reader.readuntil(b"\r\n\r\n"))
            await asyncio.sleep(3600)  # took the request; answers nothing

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        endpoint = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        target = SqsQueue(
            queue_url=f"{endpoint}/123456789012/tasks", region="us-east-1", endpoint_url=endpoint
        )
        queue = SqsTaskQueue(target, lease_seconds=60)
        async with server:
            await queue.start(consume=False)
            try:
                with pytest.raises(
                    QueueTimeout, match=f"SQS send did not answer within {PUBLISH_TIMEOUT_SECONDS}"
                ):
                    await queue.publish(b"{}", task_id="t-1")
            finally:
                await queue.close()
        assert received and received[0].startswith(b"POST /")

    asyncio.run(scenario())
