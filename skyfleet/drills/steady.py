"""Waiting, with a bound, until a drill's steady-state hypothesis holds.

A check at a fixed moment (a pause after the fault, right after a rollback) makes the verdict
depend on the machine's speed: a failover or a restart that takes a second longer on a busy
machine fails the check although users were served. The drill instead re-checks the
hypothesis (its own probes and tolerances, through chaoslib's ``run_steady_state_hypothesis``)
about once a second until it holds or ``timeout`` passes, and reports how long that took.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel


class SteadyWait(BaseModel):
    """How a wait for the steady state ended."""

    after: str  # what the wait followed: "the method" (under the fault), "the rollback"
    met: bool
    seconds: float  # from the start of the wait to the end of the first check that held (or to giving up)
    checks: int
    timeout_seconds: float
    last_failure: str | None = None  # why the last check that failed did not hold

    @property
    def checks_text(self) -> str:
        return f"{self.checks} check{'' if self.checks == 1 else 's'}"

    def describe(self) -> str:
        if self.met:
            return f"the steady state held {self.seconds:g} s after {self.after} ({self.checks_text})"
        return (
            f"the steady state did not hold within {self.timeout_seconds:g} s after {self.after} "
            f"({self.checks_text}; last: {self.last_failure})"
        )


def _why(state: dict[str, Any] | None) -> str:
    """The probe that broke the hypothesis, and what it returned or raised."""
    if not state:
        return "no hypothesis state"
    for run in state.get("probes") or []:
        if run.get("tolerance_met") is False or run.get("status") != "succeeded":
            name = (run.get("activity") or {}).get("name", "?")
            if run.get("status") != "succeeded":
                error = (run.get("exception") or ["?"])[-1]
                return f"probe {name!r} failed: {str(error).strip()[-300:]}"
            return f"probe {name!r} returned {run.get('output')!r}"
    return "not met"


def wait_for_steady_state(
    experiment: dict[str, Any],
    configuration: dict[str, Any] | None,
    secrets: dict[str, Any] | None,
    *,
    after: str,
    timeout: float,
    interval: float = 1.0,
) -> SteadyWait | None:
    """Check the hypothesis until it holds or ``timeout`` passes; None if the drill has none."""
    if not (experiment.get("steady-state-hypothesis") or {}).get("probes"):
        return None
    from chaoslib.hypothesis import run_steady_state_hypothesis
    from chaoslib.run import EventHandlerRegistry

    start = time.monotonic()
    deadline = start + timeout
    checks = 0
    last: str | None = None
    while True:
        state = run_steady_state_hypothesis(
            experiment,
            configuration or {},
            secrets or {},
            dry=None,  # pyright: ignore[reportArgumentType]  (chaoslib passes None: no dry run)
            event_registry=EventHandlerRegistry(),
        )
        checks += 1
        if state is not None and state.get("steady_state_met"):
            seconds = round(time.monotonic() - start, 3)
            return SteadyWait(after=after, met=True, seconds=seconds, checks=checks, timeout_seconds=timeout)
        last = _why(state)
        now = time.monotonic()
        if now + interval > deadline:
            return SteadyWait(
                after=after,
                met=False,
                seconds=round(now - start, 3),
                checks=checks,
                timeout_seconds=timeout,
                last_failure=last,
            )
        time.sleep(interval)
