"""Prometheus metrics shared by the api and the worker.

Label values are bounded (route templates, outcome words), never ids, so the series count
stays fixed however much traffic a site takes.
"""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

# Request latency per route template; the buckets resolve the 20 ms p99 target.
REQUEST_SECONDS = Histogram(
    "agent_http_request_duration_seconds",
    "HTTP request latency by route template and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TURNS = Counter("agent_turns_total", "Agent turns by outcome", ["outcome"])
TURNS_OK = TURNS.labels("ok")  # the hot path's child, looked up once
TASKS = Counter(
    "agent_tasks_total",
    "Queue task deliveries by outcome (succeeded, retried, dead_lettered, duplicate, busy, released, "
    "moved, interrupted: a run an outage cut short, held and made again, "
    "lease_lost: not acknowledged as another claim took the task over, "
    "waited: held while the task record was not visible, the cache down or the fleet short)",
    ["outcome"],
)
TASKS_ENQUEUED = Counter("agent_tasks_enqueued_total", "Tasks accepted and published to the queue")
QUEUE_LAG = Histogram(
    "agent_queue_lag_seconds",
    "Time from enqueue to a worker starting the task",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
ERRORS = Counter("agent_errors_total", "Error responses and internal errors by code", ["code"])
FLEET_WRITES = Counter(
    "agent_fleet_writes_total",
    "Writes copied to the fleet's other sites, by record kind and outcome "
    "(held by a majority, async, fenced by a newer epoch, superseded by a later write, no majority, "
    "takeover)",
    ["kind", "outcome"],
)
FLEET_FORWARDS = Counter(
    "agent_fleet_forwards_total",
    "Client requests passed to the site that holds their record, by site",
    ["site"],
)
IN_FLIGHT = Gauge("agent_in_flight", "Requests or tasks being processed now")
DRAINING = Gauge("agent_draining", "1 while the process drains after SIGTERM")


@functools.lru_cache(maxsize=1024)
def request_seconds(method: str, route: str, status: int) -> Histogram:
    """The latency histogram child for one label set.

    Cached because ``labels()`` converts and checks every value and takes the metric's lock on
    each call, once per request. The key space is bounded like the series themselves: HTTP
    methods (the parser knows a fixed set), route templates and status codes.
    """
    return REQUEST_SECONDS.labels(method, route, str(status))
