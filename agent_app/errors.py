"""Errors that map to an HTTP status and a stable machine-readable code.

Domain code raises these; the api turns them into the JSON error body. The worker uses the
same classes to decide whether a failure is worth a retry.
"""

from __future__ import annotations


class AgentError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class NotFound(AgentError):
    status = 404
    code = "not_found"


class Unauthorized(AgentError):
    status = 401
    code = "unauthorized"


class TooLarge(AgentError):
    status = 413
    code = "too_large"


class RateLimited(AgentError):
    status = 429
    code = "rate_limited"


class IdempotencyKeyReused(AgentError):
    status = 422
    code = "idempotency_key_reused"


class Conflict(AgentError):
    status = 409
    code = "conflict"


class DependencyDown(AgentError):
    """A dependency (cache, queue, model) did not answer in time; callers may retry."""

    status = 503
    code = "dependency_unavailable"


class CacheDown(DependencyDown):
    """The site's cache did not answer (or kept a write on too few replicas) in time."""


class Draining(AgentError):
    status = 503
    code = "draining"


class Moved(DependencyDown):
    """The record's home is another site of the fleet now; the request belongs there."""

    code = "moved"

    def __init__(self, home: str) -> None:
        super().__init__(f"this record is now served by site {home!r}; retry", retry_after=0)
        self.home = home


class FleetUnavailable(DependencyDown):
    """Too few of the fleet's sites answered to keep a write (or a read) safe."""

    code = "fleet_unavailable"


class Superseded(FleetUnavailable):
    """A write the other sites refused as older: they hold a later write of the same home's,
    which may carry it (a task's report written here after it, and copied out first)."""


class GatewayTimeout(AgentError):
    """The site holding the record did not answer in time; it may have run the request."""

    status = 504
    code = "gateway_timeout"
