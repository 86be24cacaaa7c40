"""The measurement definitions and the report files, on recorded requests built by hand."""

from __future__ import annotations

import json
from pathlib import Path

from skyfleet.drills.context import FaultInfo
from skyfleet.drills.measure import DataCheck, check_targets, detection, measure, percentile, recovery
from skyfleet.drills.records import LoadRecording, RequestRecord
from skyfleet.drills.report import DrillReport, write_report

FAULT = 1_000.0


def _rec(t: float, ok: bool = True, latency_ms: float = 10.0, site: str = "gcp") -> RequestRecord:
    return RequestRecord(
        kind="message",
        scheduled=t,
        sent=t,
        latency_ms=latency_ms,
        status=200 if ok else None,
        site=site if ok else None,
        error=None if ok else "TimeoutError",
    )


def _recording() -> LoadRecording:
    """30 req/s for 10 s; the fault at +4 s; failures from +4.0 to +5.0 s; rolled back at +8 s."""
    records = []
    for i in range(300):
        t = FAULT - 4 + i / 30
        failed = FAULT <= t < FAULT + 1.0
        records.append(_rec(t, ok=not failed, latency_ms=5000 if failed else 10 + (i % 7)))
    return LoadRecording(started_at=FAULT - 4, records=records)


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3, 1, 2], 50) == 2
    assert percentile(list(range(1, 101)), 99) == 99


def test_recovery_is_the_last_failure_of_the_last_bad_window() -> None:
    rec = _recording()
    # The last failure was sent just before +1.0 s and answered (timed out) 5 s later.
    last = max(r.completed for r in rec.records if not r.ok)
    assert recovery(rec.records, FAULT, tolerance=0.99, bucket_seconds=0.5) == round(last - FAULT, 3)
    assert recovery([_rec(FAULT + i / 30) for i in range(60)], FAULT, 0.99, 0.5) == 0.0
    assert recovery(rec.records, None, 0.99, 0.5) is None


def test_a_failure_within_tolerance_does_not_count_for_recovery() -> None:
    rows = [_rec(FAULT + i / 100) for i in range(200)]
    rows[50] = _rec(FAULT + 0.5, ok=False)
    # 1 failure among 200 requests in the window: 99.5 % >= 90 % tolerance.
    assert recovery(rows, FAULT, tolerance=0.9, bucket_seconds=2.0) == 0.0
    assert recovery(rows, FAULT, tolerance=0.999, bucket_seconds=2.0) == 0.51


def test_detection_takes_the_faulted_site_first_down_after_the_fault() -> None:
    events = [
        {"time": FAULT - 5, "site": "aws", "state": "DOWN"},  # before the fault: not this one
        {"time": FAULT + 0.9, "site": "gcp", "state": "DOWN"},  # another site
        {"time": FAULT + 0.4, "site": "aws", "state": "UP"},
        {"time": FAULT + 0.7, "site": "aws", "state": "DOWN"},
        {"time": FAULT + 0.6, "site": "aws", "state": "FAIL"},  # a failed check before the DOWN
    ]
    assert detection(FAULT, events, "aws") == 0.6
    assert detection(FAULT, events, None) == 0.6
    assert detection(FAULT, events, "onprem") is None


def test_measure_phases_counts_and_targets() -> None:
    rec = _recording()
    data = DataCheck(
        sessions_checked=10, sessions_lost=1, turns_lost=2, tasks_lost=0, tasks_duplicated=0, tasks_failed=3
    )
    m = measure(rec, fault_at=FAULT, restored_at=FAULT + 4, lag_samples_ms=[1, 2, 3, 50], data=data)
    assert m.total_requests == 300 and m.failed_requests == 30 and m.failed_before_fault == 0
    assert m.latency_ms.before.count == 120 and m.latency_ms.during.count == 90
    assert m.latency_ms.after.count == 60 and m.latency_ms.after.p99 is not None
    assert m.served_by_site["during"] == {"gcp": 90}
    assert m.error_window_seconds > 5.0  # first failure sent at the fault, last answered ~6 s later
    assert m.replication_lag_ms.p50 == 2 and m.replication_lag_ms.p99 == 50
    assert m.sessions_lost == 1 and m.turns_lost == 2
    assert m.tasks_lost == 0 and m.tasks_failed == 3  # failed tasks are not folded into tasks_lost
    assert measure(rec, fault_at=FAULT, restored_at=None).tasks_failed is None  # no read-back
    results = {
        t.metric: t
        for t in check_targets(
            m, {"failed_requests": 0, "sessions_lost": 1, "detection_seconds": 3, "tasks_failed": 2}
        )
    }
    assert results["tasks_failed"].value == 3 and results["tasks_failed"].met is False
    assert results["failed_requests"].met is False
    assert results["sessions_lost"].met is True
    assert results["detection_seconds"].met is False  # not measured: no health events


def test_report_files(tmp_path: Path) -> None:
    rec = _recording()
    m = measure(rec, fault_at=FAULT, restored_at=FAULT + 4)
    report = DrillReport(
        drill="site-loss",
        title="Site loss under load",
        file="drills/site-loss.yaml",
        target="lab",
        started_at=FAULT - 4,
        ended_at=FAULT + 7,
        passed=False,
        status="completed",
        fault=FaultInfo(name="site_down", site="aws", at=FAULT, restored_at=FAULT + 4),
        targets=check_targets(m, {"failed_requests": 0}),
        measurements=m,
    )
    write_report(report, rec, tmp_path)
    body = json.loads((tmp_path / "report.json").read_text())
    for key in (
        "passed",
        "detection_seconds",
        "recovery_seconds",
        "failed_requests",
        "total_requests",
        "error_window_seconds",
        "latency_ms",
        "sessions_lost",
        "tasks_lost",
        "tasks_duplicated",
        "tasks_failed",
        "replication_lag_ms",
    ):
        assert key in body, key
    assert body["latency_ms"]["before"]["p99"] is not None
    md = (tmp_path / "report.md").read_text()
    assert "| failed_requests | ≤ 0 | 30 | **no** |" in md
    assert "Route 53" in md and "ElastiCache Global Datastore" in md
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((tmp_path / "requests.jsonl").read_text().splitlines()) == 300
