"""The ``skyfleet`` command: plan, check, lab and drill."""

from __future__ import annotations

import typer

from skyfleet.check.cli import check
from skyfleet.drills.cli import app as drill_app
from skyfleet.lab.cli import app as lab_app
from skyfleet.plan.cli import plan

app = typer.Typer(
    name="skyfleet",
    help="Run one AI-agent app on AWS, GCP and on-prem Kubernetes: plan, check, lab, drill.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(plan)
app.command()(check)
app.add_typer(lab_app, name="lab")
app.add_typer(drill_app, name="drill")


@app.callback()
def _root() -> None:
    """Skyfleet: one typed spec, three kinds of site, a global edge, compliance and drills."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
