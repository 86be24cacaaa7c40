"""What a drill measured: detection, recovery (RTO), data loss (RPO), errors, latency, lag.

Definitions (docs/drills.md repeats them for users):

- ``detection_seconds``: fault -> the first failed health check (or DOWN) of the faulted site's
  servers at the front door (HAProxy's health events in the lab; Route 53 checkers for stacks).
- ``recovery_seconds`` (RTO): fault -> the end of the last failed request inside the last
  ``bucket_seconds`` window, after the fault, whose success rate was below the hypothesis
  tolerance. 0 when the success rate never left the tolerance.
- ``error_window_seconds``: the first failed request sent after the fault -> the last failure.
- latency phases: ``before`` the fault, ``during`` (the fault is in effect) and ``after`` (it
  was rolled back); successful requests only, by send time.
- ``sessions_lost`` (RPO): sessions missing at least one acknowledged turn when every session's
  history is read back after the drill; ``turns_lost`` counts the turns themselves.
- ``tasks_lost``: accepted tasks with no final status after the drain, or whose record cannot
  be read back (404, no answer) even if the load saw it final; ``tasks_duplicated``:
  tasks that reached a final status more than once (a task seen final and later seen running
  again, or with another result/``updated_at``: the app ran it twice). ``tasks_retried``
  (the app's ``attempts`` > 1, e.g. a worker died mid-task) is reported but is not a duplicate.
- ``tasks_failed``: tasks read back with the final status ``failed`` (not lost, not delivered:
  the app gave the work up); counted apart from ``tasks_lost``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, Field

from skyfleet.drills.records import LoadRecording, RequestRecord


class Percentiles(BaseModel):
    count: int = 0
    p50: float | None = None
    p99: float | None = None


class LatencyPhases(BaseModel):
    before: Percentiles = Field(default_factory=Percentiles)
    during: Percentiles = Field(default_factory=Percentiles)
    after: Percentiles = Field(default_factory=Percentiles)


class LagPercentiles(BaseModel):
    p50: float | None = None
    p99: float | None = None
    samples: int = 0


class DataCheck(BaseModel):
    """Read-back of every session and task after the drill."""

    sessions_checked: int = 0
    sessions_lost: int = 0
    turns_checked: int = 0
    turns_lost: int = 0
    turns_lost_before_fault: int = 0
    tasks_checked: int = 0
    tasks_lost: int = 0
    tasks_duplicated: int = 0
    tasks_failed: int = Field(default=0, description="read back with the final status 'failed'")
    tasks_retried: int = Field(
        default=0, description="started more than once (e.g. a worker died); not a duplicate"
    )
    task_statuses: dict[str, int] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class Measurements(BaseModel):
    detection_seconds: float | None = None
    recovery_seconds: float | None = None
    failed_requests: int = 0
    failed_before_fault: int = 0
    total_requests: int = 0
    error_window_seconds: float = 0.0
    latency_ms: LatencyPhases = Field(default_factory=LatencyPhases)
    sessions_lost: int | None = None
    turns_lost: int | None = None
    tasks_lost: int | None = None
    tasks_duplicated: int | None = None
    tasks_failed: int | None = None
    replication_lag_ms: LagPercentiles = Field(default_factory=LagPercentiles)
    served_by_site: dict[str, dict[str, int]] = Field(default_factory=dict)
    # Successful requests another site passed to the record's home, by the site they reached.
    forwarded_by_site: dict[str, dict[str, int]] = Field(default_factory=dict)
    # Successful requests a fleet client sent to a site's regional name (the global name could
    # not take them), by that host.
    by_regional_name: dict[str, dict[str, int]] = Field(default_factory=dict)
    # How late the generator sent requests against its schedule: a large value means the
    # load machine, not the system under test, was the bottleneck.
    send_lag_ms: Percentiles = Field(default_factory=Percentiles)
    errors_by_kind: dict[str, int] = Field(default_factory=dict)
    # The end of the rollbacks -> the first steady-state check that held (the drill waits for
    # it, bounded by recovery_timeout_seconds); None when it never held or was not checked.
    recovered_after_rollback_seconds: float | None = None

    def metric(self, name: str) -> float | None:
        """A target metric by its report name (see experiment.TARGET_METRICS)."""
        derived = {
            "replication_lag_p99_ms": self.replication_lag_ms.p99,
            "latency_during_p99_ms": self.latency_ms.during.p99,
            "latency_after_p99_ms": self.latency_ms.after.p99,
        }
        if name in derived:
            return derived[name]
        value = getattr(self, name)
        return None if value is None else float(value)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return round(ordered[rank - 1], 3)


def _percentiles(records: Iterable[RequestRecord]) -> Percentiles:
    lat = [r.latency_ms for r in records if r.ok]
    return Percentiles(count=len(lat), p50=percentile(lat, 50), p99=percentile(lat, 99))


# A failed check (FAIL: HAProxy logs each one) or the server taken out (DOWN) after enough of them.
FAILED_CHECK_STATES = frozenset({"FAIL", "DOWN"})


def _lag(values: list[float]) -> Percentiles:
    return Percentiles(count=len(values), p50=percentile(values, 50), p99=percentile(values, 99))


def detection(fault_at: float | None, events: Sequence[dict], site: str | None) -> float | None:
    """Seconds from the fault to the first failed check or DOWN (of ``site`` when given)."""
    if fault_at is None:
        return None
    downs = [
        float(e["time"])
        for e in events
        if e.get("state") in FAILED_CHECK_STATES
        and float(e.get("time", 0)) >= fault_at
        and (site is None or e.get("site") == site)
    ]
    return round(min(downs) - fault_at, 3) if downs else None


def recovery(
    records: Sequence[RequestRecord], fault_at: float | None, tolerance: float, bucket_seconds: float
) -> float | None:
    """RTO as defined in the module docstring; None when no fault was applied."""
    if fault_at is None:
        return None
    after = [r for r in records if r.completed >= fault_at]
    buckets: dict[int, list[RequestRecord]] = {}
    for r in after:
        buckets.setdefault(int((r.completed - fault_at) // bucket_seconds), []).append(r)
    last_bad: list[RequestRecord] | None = None
    for index in sorted(buckets):
        rows = buckets[index]
        if sum(r.ok for r in rows) / len(rows) < tolerance:
            last_bad = rows
    if last_bad is None:
        return 0.0
    return round(max(r.completed for r in last_bad if not r.ok) - fault_at, 3)


def error_window(records: Sequence[RequestRecord], fault_at: float | None) -> float:
    failed = [r for r in records if not r.ok and (fault_at is None or r.completed >= fault_at)]
    if not failed:
        return 0.0
    return round(max(r.completed for r in failed) - min(r.sent for r in failed), 3)


def _phase(r: RequestRecord, fault_at: float | None, restored_at: float | None) -> str:
    if fault_at is None or r.sent < fault_at:
        return "before"
    if restored_at is None or r.sent < restored_at:
        return "during"
    return "after"


def measure(
    recording: LoadRecording,
    *,
    fault_at: float | None,
    restored_at: float | None,
    health_events: Sequence[dict] = (),
    fault_site: str | None = None,
    lag_samples_ms: Sequence[float] = (),
    data: DataCheck | None = None,
    tolerance: float = 0.99,
    bucket_seconds: float = 0.5,
) -> Measurements:
    records = list(recording.records)
    phases: dict[str, list[RequestRecord]] = {"before": [], "during": [], "after": []}
    served: dict[str, Counter[str]] = {p: Counter() for p in phases}
    forwarded: dict[str, Counter[str]] = {p: Counter() for p in phases}
    regional: dict[str, Counter[str]] = {p: Counter() for p in phases}
    for r in records:
        phase = _phase(r, fault_at, restored_at)
        phases[phase].append(r)
        if r.ok:
            served[phase][r.site or "unknown"] += 1
            if r.via:
                forwarded[phase][r.via] += 1
            if r.endpoint:
                regional[phase][r.endpoint] += 1
    failed = [r for r in records if not r.ok]
    lag = list(lag_samples_ms)
    m = Measurements(
        detection_seconds=detection(fault_at, health_events, fault_site),
        recovery_seconds=recovery(records, fault_at, tolerance, bucket_seconds),
        failed_requests=len(failed),
        failed_before_fault=sum(1 for r in failed if fault_at is None or r.completed < fault_at),
        total_requests=len(records),
        error_window_seconds=error_window(records, fault_at),
        latency_ms=LatencyPhases(**{p: _percentiles(rows) for p, rows in phases.items()}),
        replication_lag_ms=LagPercentiles(p50=percentile(lag, 50), p99=percentile(lag, 99), samples=len(lag)),
        served_by_site={p: dict(c) for p, c in served.items()},
        forwarded_by_site={p: dict(c) for p, c in forwarded.items() if c},
        by_regional_name={p: dict(c) for p, c in regional.items() if c},
        send_lag_ms=_lag([(r.sent - r.scheduled) * 1000.0 for r in records]),
        errors_by_kind=dict(Counter(f"{r.kind}:{r.status or 'no-response'}" for r in failed)),
    )
    if data is not None:
        m.sessions_lost = data.sessions_lost
        m.turns_lost = data.turns_lost
        m.tasks_lost = data.tasks_lost
        m.tasks_duplicated = data.tasks_duplicated
        m.tasks_failed = data.tasks_failed
    return m


class TargetResult(BaseModel):
    metric: str
    limit: float
    value: float | None
    met: bool


def check_targets(m: Measurements, targets: dict[str, float]) -> list[TargetResult]:
    """Every target is an upper bound; an unmeasured metric does not meet its target."""
    out = []
    for name, limit in sorted(targets.items()):
        value = m.metric(name)
        out.append(
            TargetResult(metric=name, limit=limit, value=value, met=value is not None and value <= limit)
        )
    return out
