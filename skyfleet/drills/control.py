"""Skyfleet's Chaos Toolkit control: what makes a drill a failover drill under any runner.

Declared in every drill file (``controls: [{name: skyfleet, provider: {type: python, module:
skyfleet.drills.control}}]``), it works the same under ``skyfleet drill run`` (which has
already started the drill) and under ``chaos run`` (where it starts it from the experiment's
configuration): load and samplers before the hypothesis, abort conditions during the method,
a bounded wait for the steady state before the check after the method and after the rollbacks,
safety-net rollbacks, read-back, measurement and report after everything else.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from chaoslib.exceptions import InterruptExecution

from skyfleet.drills.experiment import DrillFileError, validate_experiment
from skyfleet.drills.rollback import LedgerFileError
from skyfleet.drills.run import DrillRefused, DrillRun, DrillSkipped, check_requirements, current, set_current
from skyfleet.drills.target import TargetError, target_from_configuration

_owned: DrillRun | None = None  # a run this control started (under `chaos run`), not the CLI


def before_experiment_control(
    context: dict[str, Any], configuration: dict[str, Any] | None = None, **kwargs: Any
) -> None:
    global _owned
    if current() is not None:
        return
    cfg = configuration or {}
    try:
        drill = validate_experiment(context, Path(str(context.get("title", "drill"))), chaoslib_checks=False)
        target = target_from_configuration(cfg)
        check_requirements(drill, target)
        report_dir = Path(
            str(cfg.get("skyfleet_report_dir") or os.environ.get("SKYFLEET_REPORT_DIR", "drill-report"))
        )
        run = DrillRun(drill, target, report_dir, say=print)
        set_current(run)
        _owned = run
        run.start()
    except (DrillFileError, DrillSkipped, DrillRefused, TargetError, LedgerFileError) as exc:
        raise InterruptExecution(str(exc)) from None


def before_method_control(context: dict[str, Any], **kwargs: Any) -> None:
    run = current()
    if run is not None:
        run.in_method = True


def after_method_control(
    context: dict[str, Any],
    experiment: dict[str, Any] | None = None,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """The method is done: wait (bounded) until the steady state holds under the fault, so the
    check chaoslib runs next does not depend on how fast this machine fails over. The abort
    conditions stay armed meanwhile."""
    run = current()
    if run is None:
        return
    try:
        # chaoslib calls this from a ``finally``: an exception on its way (Ctrl-C, SIGTERM, an
        # abort, a failed action) means the method was cut short and the rollbacks come next.
        if sys.exc_info()[0] is None:
            run.wait_after_method(experiment or context, configuration, secrets)
    finally:
        run.in_method = False


def after_activity_control(
    context: dict[str, Any], state: dict[str, Any] | None = None, **kwargs: Any
) -> None:
    """A fault action that failed aborts the method (abort.on_action_failure)."""
    run = current()
    if run is None or not run.in_method or not state or context.get("type") != "action":
        return
    if state.get("status") == "failed" and run.spec.abort.on_action_failure:
        reason = f"action {context.get('name')!r} failed: {(state.get('exception') or ['?'])[-1].strip()}"
        run.abort_reason = run.abort_reason or reason
        run.in_method = False
        raise InterruptExecution(reason)


def after_experiment_control(
    context: dict[str, Any],
    state: dict[str, Any] | None = None,
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    global _owned
    run = current()
    if run is None:
        return
    report = run.finish(state, experiment=context, configuration=configuration, secrets=secrets)
    if run is _owned:
        set_current(None)
        _owned = None
        verdict = "PASSED" if report.passed else "FAILED"
        print(f"skyfleet drill {report.drill}: {verdict}; report in {run.report_dir}")
