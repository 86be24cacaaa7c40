"""Google Cloud Pub/Sub as a lab component: a real gRPC server speaking Google's protocol.

There is no Pub/Sub emulator on the lab's machines (Google's is Java, shipped with gcloud),
so the lab runs this server in its place, configured from the GCP stack's plan
(``config_from_plan``): the task topic, the worker's pull subscription with its ack deadline,
retention, retry policy and dead-letter policy, the dead-letter topic and its hold
subscription, and, optionally, the plan's IAM grants. The app's real client library reaches
it through ``PUBSUB_EMULATOR_HOST``. Accepted messages are on disk before a publish is
answered, so a killed server loses none of them.

    python -m skyfleet.lab.pubsub --config FILE

What is and is not reproduced: ``docs/lab-pubsub.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc

from skyfleet.lab.pubsub.config import PubSubConfig, config_from_plan, load_config, parse_config
from skyfleet.lab.pubsub.engine import Engine, ServiceError
from skyfleet.lab.pubsub.journal import Journal
from skyfleet.lab.pubsub.server import Server

__all__ = [
    "Engine",
    "PubSubConfig",
    "Server",
    "ServiceError",
    "build",
    "config_from_plan",
    "load_config",
    "parse_config",
]


def build(
    config: PubSubConfig,
    *,
    data_dir: Path | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> Server:
    """A server for ``config`` with its state recovered from the data folder (not started);
    ``interceptors`` run before every call (fault injection, tracing)."""
    data_dir = data_dir or config.data_dir
    topics, subscriptions = config.resources()
    engine = Engine(
        time_scale=config.time_scale,
        max_backlog_bytes=config.max_backlog_bytes,
        journal=Journal(data_dir) if data_dir is not None else None,
        policy=config.policy(),
        compact_above_bytes=config.compact_journal_above_bytes,
    )
    engine.declare(topics, subscriptions)
    engine.recover()
    callers = {c.member: c.port for c in config.iam.callers} if config.iam else None
    return Server(
        engine,
        host=config.listen.host,
        port=config.listen.port,
        callers=callers,
        interceptors=interceptors,
    )
