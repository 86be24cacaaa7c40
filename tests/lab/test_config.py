"""Bad lab configs are refused before anything starts, with the file and field named."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from skyfleet.lab.cli import app
from skyfleet.lab.config import LabConfig
from skyfleet.lab.errors import LabConfigError


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ("replicas: 1\n", "replicas", "greater than or equal to 2"),
        ("sites: [aws, aws]\n", "sites", "unique"),
        ("sites: [AWS]\n", "sites", "not a valid site name"),
        ("health_interval: soon\n", "health_interval", "duration"),
        ("routing: round-robin\n", "routing", "'failover' or 'weighted'"),
        ("weights: {azure: 10}\n", "weights", "not one of the sites"),
        ("primary_site: azure\n", "primary_site", "not one of the sites"),
        ("base_port: 80\n", "base_port", "greater than or equal to 1024"),
        ("app_env: {AGENT_REDIS_URL: redis://elsewhere}\n", "app_env", "set by the lab"),
        ("replica: 3\n", "replica", "Extra inputs are not permitted"),
    ],
)
def test_bad_field_is_named(tmp_path: Path, body: str, field: str, says: str) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(body)
    with pytest.raises(LabConfigError) as caught:
        LabConfig.from_yaml(path)
    message = str(caught.value)
    assert str(path) in message
    assert f"field {field!r}" in message
    assert says in message


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("- aws\n- gcp\n")
    with pytest.raises(LabConfigError, match="must be a mapping"):
        LabConfig.from_yaml(path)


def test_a_good_file_with_flags_winning(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("sites: [east, west]\nhealth_interval: 250ms\nrouting: failover\nreplicas: 3\n")
    config = LabConfig.from_yaml(path, replicas=4)
    assert config.sites == ["east", "west"] and config.replicas == 4
    assert config.health_interval_ms == 250 and config.primary == "east" and config.has_witness
    # A stored config loads back to the same values (durations are kept as "<n>ms").
    assert LabConfig.model_validate(config.model_dump(mode="json", by_alias=True)) == config


def test_cli_reports_the_field_and_starts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("replicas: 1\n")
    state_dir = tmp_path / "state"
    result = CliRunner().invoke(app, ["up", "--config", str(path), "--state-dir", str(state_dir)])
    assert result.exit_code == 2
    assert "replicas" in result.output and str(path) in result.output
    assert not (state_dir / "lab.json").exists()

    result = CliRunner().invoke(app, ["up", "--sites", "aws,aws", "--state-dir", str(state_dir)])
    assert result.exit_code == 2 and "'sites'" in result.output
