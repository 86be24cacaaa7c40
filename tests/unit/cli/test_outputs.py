"""A report path the command cannot write fails it at once, naming the option, before any work
is done and before any other report is written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from skyfleet.cli import app
from tests.support.plans import ROOT

runner = CliRunner()


def test_check_refuses_a_folder_or_a_missing_folder_for_a_report_before_it_starts(tmp_path: Path) -> None:
    json_out = tmp_path / "report.json"
    args = ["check", "--stack", "aws-prod", "--program", str(ROOT), "--json", str(json_out)]
    result = runner.invoke(app, [*args, "--sarif", str(tmp_path), "--junit", str(tmp_path / "no" / "r.xml")])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"--sarif {tmp_path}: is a folder" in text
    assert f"--junit {tmp_path / 'no' / 'r.xml'}: its folder {tmp_path / 'no'} does not exist" in text
    assert not json_out.exists()  # nothing half-written


def test_plan_refuses_a_file_for_its_out_folder(tmp_path: Path) -> None:
    a_file = tmp_path / "plans"
    a_file.write_text("not a folder\n")
    result = runner.invoke(app, ["plan", "--stack", "aws-prod", "--program", str(ROOT), "--out", str(a_file)])
    assert result.exit_code == 2, result.output
    assert f"--out {a_file}: is a file; give a folder" in " ".join(result.output.split())
    assert a_file.read_text() == "not a folder\n"


def test_an_error_with_brackets_is_printed_whole(temp_project: Callable[[str, str], Path]) -> None:
    """Errors quote patterns and lists ([a-z], ['x']): the terminal must not take them for markup."""
    stack = (
        (ROOT / "stacks" / "Pulumi.aws-dev.yaml")
        .read_text()
        .replace("skyfleet:region: eu-west-1", "skyfleet:region: '[a-z] region'")
    )
    project = temp_project("odd", stack)
    result = runner.invoke(app, ["plan", "--stack", "odd", "--program", str(project)])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "given '[a-z] region'" in text
    # A config error names its file once, and nothing of the program that found it.
    assert text.count("Pulumi.odd.yaml") == 1 and "__main__" not in text, text
