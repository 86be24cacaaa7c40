"""The shipped prod sites behind edge-multivalue (Route 53 multivalue answers): every drill of
that edge, on its own twin (up for this module only)."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skyfleet.drills.experiment import load_drill
from skyfleet.drills.report import DrillReport
from skyfleet.drills.run import run_drill
from skyfleet.drills.target import LabTarget
from skyfleet.lab.edge import routed_sites, wait_routed
from skyfleet.lab.resolver import CachingResolver
from skyfleet.lab.state import LabState
from skyfleet.plan import plan_stack
from skyfleet.testing.edge import GLOBAL_NAME, ROOT
from tests.lab.test_drills import LAB_DRILLS, _explain
from tests.support.twin import edge_twin, needs_root

pytestmark = needs_root

MULTIVALUE_DRILLS = [p for p in LAB_DRILLS if load_drill(p).skyfleet.requires.edge_routing == "multivalue"]


@pytest.fixture(scope="module")
def multivalue_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    yield from edge_twin(tmp_path_factory, "edge-multivalue")


def test_there_is_a_drill_of_the_multivalue_edge() -> None:
    assert [p.stem for p in MULTIVALUE_DRILLS] == ["partition-multivalue", "site-loss-multivalue"]


@pytest.mark.parametrize("path", MULTIVALUE_DRILLS, ids=[p.stem for p in MULTIVALUE_DRILLS])
def test_multivalue_drill_on_the_twin(path: Path, multivalue_twin: LabState, tmp_path: Path) -> None:
    # Every healthy site is in the answers before the fault: the edge is active-active.
    assert routed_sites(multivalue_twin.state_dir) == ["aws-prod", "gcp-prod", "onprem-prod"]
    report = run_drill(load_drill(path), LabTarget(state_dir=multivalue_twin.state_dir), tmp_path / "report")
    assert report.system["stacks"] == ["aws-prod", "gcp-prod", "onprem-prod"]
    assert report.system["routing"] == "multivalue"
    m = report.measurements
    # Issue #12's own targets for a site loss: at most 1 % of requests failed, recovery within
    # 30 s. Held strictly.
    assert m.failed_requests <= 0.01 * m.total_requests, _explain(report)
    assert m.recovery_seconds is not None and m.recovery_seconds <= 30, _explain(report)
    if report.fault.name == "site_partition":
        _fenced_after_the_heal(report, tmp_path / "report" / "requests.jsonl")
    missed = {t.metric for t in report.targets if not t.met}
    if missed and missed <= {"failed_requests", "recovery_seconds"} and not report.passed:
        # A request in flight at the lost (or cut-off) site when it goes (sent there, or passed there as its
        # session's home before the others knew) fails with it when its connection breaks:
        # about 0.3-0.4 such requests per run (aws-prod draws ~60 % of new connections). The
        # drill's stretch targets (0 failed, 3 s) are met or missed by that chance alone: only
        # then is the miss excused, and everything else `passed` needs must have held.
        assert report.status == "completed" and report.aborted is None, _explain(report)
        assert report.hypothesis.before is True and report.hypothesis.after is not False, _explain(report)
        assert not report.deviated and not report.notes, _explain(report)
        assert all(r.get("status") == "succeeded" for r in report.rollbacks), _explain(report)
        assert report.fault.at is not None, _explain(report)
        failed = _failed(tmp_path / "report" / "requests.jsonl")
        assert 0 < len(failed) <= 2, _explain(report)
        assert all(abs(r["scheduled"] - report.fault.at) <= 1.0 for r in failed), failed
        pytest.xfail(f"{path.stem}: {len(failed)} request(s) in flight at the lost site failed")
    assert report.passed, _explain(report)


def _fenced_after_the_heal(report: DrillReport, recording: Path) -> None:
    """Sessions the cut site created, and whose requests another site served during the cut (a
    takeover), are never served by the cut site once it is healed; some of their requests reach
    it again and are passed on to their new home."""
    cut, at, healed = report.fault.site, report.fault.at, report.fault.restored_at
    assert cut is not None and at is not None and healed is not None, _explain(report)
    records = [json.loads(line) for line in recording.read_text().splitlines()]
    made_there = {
        r["session_id"]
        for r in records
        if r["kind"] == "session" and r["site"] == cut and r["sent"] + r["latency_ms"] / 1000.0 < at
    }
    taken = {
        r["session_id"]
        for r in records
        if r["session_id"] in made_there
        and r["kind"] != "session"
        and r["sent"] >= at
        and r["sent"] < healed
        and r["status"] is not None
        and r["status"] < 300
        and r["site"] not in (None, cut)
    }
    assert taken, f"no session of {cut} was served elsewhere during the cut: the drill proves nothing"
    after = [r for r in records if r["session_id"] in taken and r["sent"] >= healed]
    assert not [r for r in after if r["site"] == cut], "the healed site served a session taken from it"
    assert any(r["via"] == cut and r["status"] is not None and r["status"] < 300 for r in after), (
        f"no request for a taken session reached {cut} after the heal"
    )


def _failed(recording: Path) -> list[dict[str, Any]]:
    """The failed requests of a drill's recording (an error, or a 5xx answer)."""
    out = []
    for line in recording.read_text().splitlines():
        r = json.loads(line)
        if r.get("error") or not r.get("status") or r["status"] >= 500:
            out.append(r)
    return out


def test_each_planned_address_of_a_site_reaches_it(multivalue_twin: LabState) -> None:
    """The edge answers as many addresses per site as the plans give (aws-prod's NLB has one
    Elastic IP per zone), and each of them serves the global name with the site's certificate."""
    state = multivalue_twin
    for name in state.sites:  # back in the answers after any drill's fault
        wait_routed(state.state_dir, name, timeout=90)
    resolver = CachingResolver((state.fabric.wan_address, 53))
    answered = resolver.resolve(GLOBAL_NAME)
    planned = {n: len(plan_stack(ROOT, s.stack).outputs["endpointAddresses"]) for n, s in state.sites.items()}
    assert len(answered) == sum(planned.values()) and len(set(answered)) == len(answered)
    by_site = {a: name for name, s in state.sites.items() for a in s.lb_addresses}
    assert [by_site[a] for a in answered].count("aws-prod") == planned["aws-prod"] > 1
    context = ssl.create_default_context(cafile=str(Path(state.state_dir) / "secrets" / "public-ca.pem"))
    for address in answered:
        with (
            socket.create_connection((address, 443), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=GLOBAL_NAME) as tls,
        ):
            tls.sendall(f"GET /readyz HTTP/1.1\r\nHost: {GLOBAL_NAME}\r\nConnection: close\r\n\r\n".encode())
            assert tls.recv(64).startswith(b"HTTP/1.1 200"), address
