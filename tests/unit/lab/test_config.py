"""Bad lab configs are refused before anything starts, with the file and field named."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from typer.testing import CliRunner

from skyfleet.lab.cli import app
from skyfleet.lab.config import DEFAULT_EDGE_STACK, DEFAULT_SITE_STACKS, LabConfig
from skyfleet.lab.errors import LabConfigError


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ("stacks: [aws-prod, aws-prod]\n", "stacks", "unique"),
        ("stacks: []\n", "stacks", "at least 1 item"),
        ("max_replicas: 0\n", "max_replicas", "greater than or equal to 1"),
        ("subnet: 8.8.8.0/24\n", "subnet", "private IPv4 /24"),
        ("subnet: 10.1.0.0/16\n", "subnet", "private IPv4 /24"),
        ("subnet: elsewhere\n", "subnet", "Expected 4 octets in 'elsewhere'"),
        ("replicas: 3\n", "replicas", "Extra inputs are not permitted"),
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
    path.write_text("- aws-prod\n- gcp-prod\n")
    with pytest.raises(LabConfigError, match="must be a mapping"):
        LabConfig.from_yaml(path)


def test_defaults_are_the_shipped_prod_stacks_and_flags_win(tmp_path: Path) -> None:
    assert LabConfig().stacks == DEFAULT_SITE_STACKS and LabConfig().edge == DEFAULT_EDGE_STACK
    path = tmp_path / "lab.yaml"
    path.write_text("stacks: [gcp-prod]\nedge: null\nmax_replicas: 1\n")
    config = LabConfig.from_yaml(path, max_replicas=2)
    assert config.stacks == ["gcp-prod"] and config.edge is None and config.max_replicas == 2
    # A lab's /24 follows from its state folder (two folders may map to one: `up` then takes the
    # next free /24, tests/lab/test_lifecycle.py).
    again = LabConfig(state_dir=config.state_dir)
    assert config.network == again.network
    assert ipaddress.IPv4Network(config.network).subnet_of(ipaddress.IPv4Network("10.231.0.0/16"))
    assert LabConfig.model_validate(config.model_dump(mode="json")) == config


def test_cli_reports_the_field_and_starts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text("max_replicas: 0\n")
    state_dir = tmp_path / "state"
    # A narrow terminal: the path is printed whole, never broken across lines.
    result = CliRunner().invoke(
        app, ["up", "--config", str(path), "--state-dir", str(state_dir)], env={"COLUMNS": "30"}
    )
    assert result.exit_code == 2
    assert "max_replicas" in result.output and str(path) in result.output
    assert not (state_dir / "lab.json").exists()

    result = CliRunner().invoke(app, ["up", "--stacks", "aws-prod,aws-prod", "--state-dir", str(state_dir)])
    assert result.exit_code == 2 and "'stacks'" in result.output
    assert not (state_dir / "lab.json").exists()
