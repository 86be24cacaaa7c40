"""The shipped prod sites behind edge-active (weighted routing): every drill of an active-active
edge, on its own twin (up for this module only, before the package's failover twin)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skyfleet.drills.experiment import load_drill
from skyfleet.drills.run import run_drill
from skyfleet.drills.target import LabTarget
from skyfleet.lab.state import LabState
from tests.lab.test_drills import LAB_DRILLS, _explain
from tests.support.twin import edge_twin, needs_root

pytestmark = needs_root

WEIGHTED_DRILLS = [p for p in LAB_DRILLS if load_drill(p).skyfleet.requires.edge_routing == "weighted"]


@pytest.fixture(scope="module")
def active_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    yield from edge_twin(tmp_path_factory, "edge-active")


def test_there_is_a_drill_of_the_active_active_edge() -> None:
    assert [p.stem for p in WEIGHTED_DRILLS] == ["weighted-routing"]


@pytest.mark.flaky(reruns=1)
@pytest.mark.parametrize("path", WEIGHTED_DRILLS, ids=[p.stem for p in WEIGHTED_DRILLS])
def test_active_active_drill_on_the_twin(path: Path, active_twin: LabState, tmp_path: Path) -> None:
    report = run_drill(load_drill(path), LabTarget(state_dir=active_twin.state_dir), tmp_path / "report")
    assert report.system["stacks"] == ["aws-prod", "gcp-prod", "onprem-prod"]
    assert report.system["routing"] == "weighted"
    # Requests entered through several sites and were passed to their records' homes.
    entered = {s for phase in report.measurements.forwarded_by_site.values() for s in phase}
    assert len(entered) >= 2, _explain(report)
    assert report.passed, _explain(report)
