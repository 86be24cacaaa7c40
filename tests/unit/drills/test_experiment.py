"""Drill files: every shipped drill is valid; a bad one is refused with the file and field named."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from skyfleet.drills.experiment import DrillFileError, LoadSpec, load_drill

DRILLS = Path(__file__).resolve().parents[3] / "drills"
SHIPPED = sorted(DRILLS.glob("*.yaml"))


def test_every_drill_is_shipped() -> None:
    names = {p.stem for p in SHIPPED}
    assert {
        "site-loss",
        "site-loss-fleet-client",
        "replica-loss",
        "cache-primary-loss",
        "broker-outage",
        "partition",
    } <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_drills_are_valid(path: Path) -> None:
    drill = load_drill(path)
    assert drill.skyfleet.targets, f"{path.name} sets no targets"
    # A drill that breaks something undoes it; one of normal operation (no fault) has nothing to undo.
    assert drill.document.rollbacks or drill.skyfleet.fault_free, f"{path.name} has no rollbacks"


def _site_loss() -> dict[str, Any]:
    return yaml.safe_load((DRILLS / "site-loss.yaml").read_text())


def _write(tmp_path: Path, data: Any, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def _mutate(fn: Any) -> dict[str, Any]:
    data = copy.deepcopy(_site_loss())
    fn(data)
    return data


CASES = [
    ("no title", lambda d: d.pop("title"), "title: Field required"),
    (
        "no func",
        lambda d: d["method"][0]["provider"].pop("func"),
        "method[0].provider.func: Field required",
    ),
    (
        "bad activity type",
        lambda d: d["method"][0].update(type="fault"),
        "method[0].type: Input should be 'action' or 'probe'",
    ),
    (
        "no tolerance",
        lambda d: d["steady-state-hypothesis"]["probes"][1].pop("tolerance"),
        "steady-state-hypothesis.probes[1].tolerance: Field required",
    ),
    (
        "unknown target metric",
        lambda d: d["extensions"][0]["targets"].update(recovery_secs=3),
        "extensions[0].targets: Value error, unknown metric(s) ['recovery_secs']",
    ),
    (
        "a target given as a bool (it would be taken for 1)",
        lambda d: d["extensions"][0]["targets"].update(failed_requests=True),
        "extensions[0].targets.failed_requests: Input should be a valid number",
    ),
    (
        "a negative target (never met)",
        lambda d: d["extensions"][0]["targets"].update(recovery_seconds=-3),
        "extensions[0].targets.recovery_seconds: Input should be greater than or equal to 0",
    ),
    (
        "negative rate",
        lambda d: d["extensions"][0]["load"].update(rate=-1),
        "extensions[0].load.rate: Input should be greater than 0",
    ),
    (
        "typo in load",
        lambda d: d["extensions"][0]["load"].update(rat=5),
        "extensions[0].load.rat: Extra inputs are not permitted",
    ),
    (
        "fleet client with no room for a retry",
        lambda d: d["extensions"][0]["load"].update(client="fleet", attempt_timeout_seconds=15),
        "extensions[0].load: Value error, attempt_timeout_seconds (15) must be below request_timeout_seconds",
    ),
    (
        "a connection per request for the shared client",
        lambda d: d["extensions"][0]["load"].update(connections="per-request"),
        "extensions[0].load: Value error, connections: per-request needs per-user clients",
    ),
    (
        "a connect timeout longer than the request's",
        lambda d: d["extensions"][0]["load"].update(connect_timeout_seconds=20),
        "extensions[0].load: Value error, connect_timeout_seconds (20) must not exceed "
        "request_timeout_seconds (15)",
    ),
    (
        "unknown way of dialling",
        lambda d: d["extensions"][0]["load"].update(dial="parallel"),
        "extensions[0].load.dial: Input should be 'race' or 'sequential'",
    ),
    (
        "unknown client",
        lambda d: d["extensions"][0]["load"].update(client="sdk"),
        "extensions[0].load.client: Input should be 'edge' or 'fleet'",
    ),
    (
        "not a skyfleet module",
        lambda d: d["method"][0]["provider"].update(module="skyfleet.drills.activities"),
        "method[0].provider.module: 'skyfleet.drills.activities' is not a Skyfleet activity module",
    ),
    (
        "no skyfleet extension",
        lambda d: d.pop("extensions"),
        "extensions: no entry with name: skyfleet",
    ),
    (
        "unknown function",
        lambda d: d["method"][0]["provider"].update(func="site_gone"),
        "method[0].provider.func: skyfleet.drills.activity has no function 'site_gone'",
    ),
    (
        "unexpected argument",
        lambda d: d["method"][0]["provider"]["arguments"].update(zone="a"),
        "method[0].provider.arguments: got an unexpected keyword argument 'zone'",
    ),
    (
        "missing argument",
        lambda d: d["rollbacks"][0]["provider"].pop("arguments"),
        "rollbacks[0].provider.arguments: missing a required argument: 'site'",
    ),
    (
        "a bool tolerance for a rate",
        lambda d: d["steady-state-hypothesis"]["probes"][1].update(tolerance=True),
        "steady-state-hypothesis.probes[1].tolerance: True can never be met: "
        "skyfleet.drills.hypothesis.success_rate returns a number",
    ),
    (
        "a range for a yes or no",
        lambda d: d["steady-state-hypothesis"]["probes"][0].update(
            tolerance={"type": "range", "range": [0, 1]}
        ),
        "steady-state-hypothesis.probes[0].tolerance: type range can never be met: "
        "skyfleet.drills.hypothesis.front_door_ready returns a bool",
    ),
    (
        "chaoslib: bad tolerance type",
        lambda d: d["steady-state-hypothesis"]["probes"][1].update(tolerance={"type": "rang"}),
        "hypothesis probe tolerance type 'rang' is unsupported",
    ),
]


@pytest.mark.parametrize(("mutation", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_drill_names_file_and_field(tmp_path: Path, mutation: Any, expected: str) -> None:
    path = _write(tmp_path, _mutate(mutation))
    with pytest.raises(DrillFileError) as err:
        load_drill(path)
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)


def test_unparseable_yaml_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "title: [unclosed\n")
    with pytest.raises(DrillFileError, match=rf"^{path}: not valid YAML/JSON"):
        load_drill(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DrillFileError, match="cannot read drill file"):
        load_drill(tmp_path / "nope.yaml")


def test_cli_reports_bad_file_with_exit_code_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from skyfleet.drills.cli import app

    path = _write(tmp_path, _mutate(lambda d: d["extensions"][0]["load"].update(rate=0)))
    result = CliRunner().invoke(app, ["run", str(path), "--target", "lab", "--dry-run"])
    assert result.exit_code == 2
    assert "extensions[0].load.rate" in result.output


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_a_drill_of_normal_operation_breaks_nothing(path: Path) -> None:
    from skyfleet.drills.actions.registry import ACTIONS

    drill = load_drill(path)
    faults = [
        a["provider"]["func"]
        for a in drill.experiment["method"]
        if a.get("provider", {}).get("func") in ACTIONS and ACTIONS[a["provider"]["func"]].kind == "fault"
    ]
    assert bool(faults) != drill.skyfleet.fault_free, (
        f"{path.name}: faults {faults}, fault_free {drill.skyfleet.fault_free}"
    )


@pytest.mark.parametrize(
    ("clients", "connections", "dial"),
    [
        ("shared", None, None),
        ("shared", "kept-alive", "sequential"),
        ("per-user", None, "race"),
        ("per-user", "per-request", "sequential"),
        ("per-user", "kept-alive", None),
    ],
)
def test_the_load_spec_survives_its_way_to_the_load_process(
    clients: str, connections: str | None, dial: str | None
) -> None:
    """The load process validates the spec the drill process dumped: every valid spec passes again."""
    given: dict[str, Any] = {"clients": clients}
    if connections is not None:
        given["connections"] = connections
    if dial is not None:
        given |= {"dial": dial, "connect_timeout_seconds": 5}
    spec = LoadSpec.model_validate(given)
    assert LoadSpec.model_validate(json.loads(json.dumps(spec.model_dump(mode="json")))) == spec


def test_a_lab_drill_naming_a_site_the_lab_lacks_is_refused_before_anything_runs(tmp_path: Path) -> None:
    """The dry run, as the run's own checks, looks each lab action's site up in the lab's state."""
    from typer.testing import CliRunner

    from skyfleet.drills.cli import app
    from skyfleet.lab.state import save_state
    from tests.support.lab_state import lab_state

    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    save_state(lab_state(lab_dir))
    drill = yaml.safe_load((DRILLS / "replica-loss.yaml").read_text())
    argv = ["run", "--target", "lab", "--lab-dir", str(lab_dir), "--dry-run"]
    assert (
        CliRunner().invoke(app, [*argv[:1], str(_write(tmp_path, drill, "ok.yaml")), *argv[1:]]).exit_code
        == 0
    )
    drill["method"][0]["provider"]["arguments"]["site"] = "aws-prd"
    result = CliRunner().invoke(app, [*argv[:1], str(_write(tmp_path, drill)), *argv[1:]])
    assert result.exit_code == 3, result.output
    output = " ".join(result.output.split())
    assert "method[0] 'kill-api-0-of-the-serving-site': site 'aws-prd' is not a site of the lab" in output
    assert "aws-prod, gcp-prod, onprem-prod" in output
