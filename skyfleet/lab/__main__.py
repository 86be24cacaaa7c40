"""``python -m skyfleet.lab`` runs the lab CLI without the top-level ``skyfleet`` command."""

from skyfleet.lab.cli import app

app(prog_name="skyfleet lab")
