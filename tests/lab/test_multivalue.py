"""The shipped prod sites behind edge-multivalue (Route 53 multivalue answers): every drill of
that edge, on its own twin (up for this module only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skyfleet.drills.experiment import load_drill
from skyfleet.drills.run import run_drill
from skyfleet.drills.target import LabTarget
from skyfleet.lab.edge import routed_sites
from skyfleet.lab.state import LabState
from tests.lab.test_drills import LAB_DRILLS, _explain
from tests.support.twin import IS_ROOT, needs_root, running, twin_config

pytestmark = needs_root

MULTIVALUE_DRILLS = [p for p in LAB_DRILLS if load_drill(p).skyfleet.requires.edge_routing == "multivalue"]


@pytest.fixture(scope="module")
def multivalue_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    if not IS_ROOT:
        pytest.skip("the lab runs every site and pod in namespaces: root")
    config = twin_config(tmp_path_factory.mktemp("multivalue-twin"), edge="edge-multivalue")
    with running(config) as state:
        yield state


def test_there_is_a_drill_of_the_multivalue_edge() -> None:
    assert [p.stem for p in MULTIVALUE_DRILLS] == ["site-loss-multivalue"]


@pytest.mark.flaky(reruns=1)
@pytest.mark.parametrize("path", MULTIVALUE_DRILLS, ids=[p.stem for p in MULTIVALUE_DRILLS])
def test_multivalue_drill_on_the_twin(path: Path, multivalue_twin: LabState, tmp_path: Path) -> None:
    # Every healthy site is in the answers before the fault: the edge is active-active.
    assert routed_sites(multivalue_twin.state_dir) == ["aws-prod", "gcp-prod", "onprem-prod"]
    report = run_drill(load_drill(path), LabTarget(state_dir=multivalue_twin.state_dir), tmp_path / "report")
    assert report.system["stacks"] == ["aws-prod", "gcp-prod", "onprem-prod"]
    assert report.system["routing"] == "multivalue"
    assert report.passed, _explain(report)
