"""GCP faults on the wire: the Cloud Run client (its REST binding) against a stand-in of the
Admin API v2 that changes only the fields an update masks, as the API does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skyfleet.drills import activity, context
from skyfleet.drills.actions import gcp
from skyfleet.drills.context import RunContext
from skyfleet.drills.rollback import LEDGER_FILE, Ledger, read_ledger
from skyfleet.drills.target import OutputsSource, StackTarget
from tests.support.cloud_run import CloudRunStandIn
from tests.support.drills import SITES

SERVICE = "projects/skyfleet-prod/locations/europe-west1/services/skyfleet-api"
SCALING = {"minInstanceCount": 2, "maxInstanceCount": 20, "scalingMode": "AUTOMATIC"}


@pytest.fixture
def cloud_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[CloudRunStandIn]:
    stand_in = CloudRunStandIn(
        SERVICE, {"ingress": "INGRESS_TRAFFIC_ALL", "scaling": SCALING, "labels": {"team": "agents"}}
    ).start()
    monkeypatch.setenv(gcp.ENDPOINT_ENV, stand_in.endpoint)
    yield stand_in
    stand_in.stop()


@pytest.fixture
def configuration(tmp_path: Path) -> dict[str, Any]:
    outputs = tmp_path / "outputs.json"
    outputs.write_text(json.dumps(SITES["gcp-prod"]))
    return {"skyfleet_target": "stack:gcp-prod", "skyfleet_outputs_file": str(outputs)}


def service() -> Any:
    """The service as the client reads it back (enums by name, whatever the wire carried)."""
    return gcp._client().get_service(name=SERVICE)  # pyright: ignore[reportPrivateUsage]


def test_ingress_internal_and_restore_change_the_ingress_alone(
    cloud_run: CloudRunStandIn, configuration: dict[str, Any]
) -> None:
    applied = activity.gcp_ingress_internal(configuration=configuration)
    assert applied["previous_ingress"] == "INGRESS_TRAFFIC_ALL"
    assert service().ingress.name == "INGRESS_TRAFFIC_INTERNAL_ONLY"
    cloud_run.service["labels"] = {"team": "agents", "release": "meanwhile"}  # a `pulumi up` meanwhile
    assert activity.gcp_ingress_restore(configuration=configuration)["restored"] is True
    after = service()
    assert after.ingress.name == "INGRESS_TRAFFIC_ALL"
    assert dict(after.labels) == {"team": "agents", "release": "meanwhile"}  # not sent back over it
    assert [mask for mask, _ in cloud_run.updates] == [["ingress"], ["ingress"]]


def test_traffic_zero_left_by_a_killed_drill_is_put_back_from_its_ledger(
    cloud_run: CloudRunStandIn, configuration: dict[str, Any], tmp_path: Path
) -> None:
    """The fault's saved scaling goes through the ledger file (JSON) to a rollback run on its
    own, which puts back exactly the scaling the service had."""
    report = tmp_path / "report"
    ledger = Ledger(report / LEDGER_FILE, target=configuration)
    ledger.hold()
    outputs = Path(configuration["skyfleet_outputs_file"])
    context.activate(RunContext(StackTarget("gcp-prod", OutputsSource(outputs_file=outputs)), ledger=ledger))
    try:
        activity.gcp_traffic_zero()
    finally:
        context.activate(None)
        ledger.release()  # the drill is gone, as if killed: nothing undid the fault
    zero = service().scaling
    assert zero.scaling_mode.name == "MANUAL" and zero.manual_instance_count == 0
    assert [f.state for f in read_ledger(report / LEDGER_FILE)] == ["applied"]

    argv = [sys.executable, "-m", "skyfleet.cli", "drill", "rollback", str(report)]
    done = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ), timeout=120)
    assert done.returncode == 0, done.stderr
    back = service().scaling
    assert (back.scaling_mode.name, back.min_instance_count, back.max_instance_count) == ("AUTOMATIC", 2, 20)
    assert [mask for mask, _ in cloud_run.updates] == [["scaling"], ["scaling"]]
    assert [f.state for f in read_ledger(report / LEDGER_FILE)] == ["restored"]
