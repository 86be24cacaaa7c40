"""Running a drill: load, chaoslib's run loop, abort conditions, safety-net rollbacks, report.

The run loop itself is chaoslib's (``run_experiment``): steady-state hypothesis before, during
(continuously, every second) and after the method, then the rollbacks, with its journal.
Skyfleet adds what a failover drill needs around it, through the ``skyfleet.drills.control``
control so that ``chaos run`` gets it too:

- the open-loop load, started before the hypothesis and stopped after the rollbacks;
- abort conditions (error rate over a window, a wall-clock limit, a failed fault action),
  which stop the method through chaoslib's own graceful-exit signal so rollbacks still run;
- the rollback strategy forced to ``always`` and a safety net (rollback.Ledger) for faults
  left open by an interrupted rollback section;
- the read-back of every session and task, the measurements and the report.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from skyfleet.drills import context
from skyfleet.drills.context import FaultInfo, RunContext
from skyfleet.drills.experiment import Drill
from skyfleet.drills.load import LoadProcess
from skyfleet.drills.measure import DataCheck, check_targets, measure
from skyfleet.drills.readback import read_back
from skyfleet.drills.records import LoadRecording
from skyfleet.drills.report import DrillReport, HypothesisSummary, write_report
from skyfleet.drills.rollback import LEDGER_FILE, Ledger
from skyfleet.drills.steady import SteadyWait, wait_for_steady_state
from skyfleet.drills.target import LabTarget, StackTarget, Target

logger = logging.getLogger("skyfleet.drills")
CONTROL_MODULE = "skyfleet.drills.control"
_current: DrillRun | None = None
_current_lock = threading.Lock()


class DrillSkipped(Exception):
    """The drill cannot run here (for example it needs root); the message says why."""


class DrillRefused(Exception):
    """The drill must not run as asked (a prod stack without --yes, a wrong target...)."""


def current() -> DrillRun | None:
    return _current


def set_current(run: DrillRun | None) -> None:
    """Make ``run`` the running drill, and its context the one actions and probes see."""
    global _current
    with _current_lock:
        _current = run
        context.activate(run.context if run is not None else None)


class DrillRun:
    """One drill from load start to report: load, samplers, abort conditions, waits, verdict.

    What actions and probes may see of it is its ``context`` (skyfleet.drills.context).
    """

    def __init__(
        self,
        drill: Drill,
        target: Target,
        report_dir: Path,
        *,
        say: Callable[[str], None] = logger.info,
    ) -> None:
        self.drill = drill
        self.spec = drill.skyfleet
        self.report_dir = report_dir
        self.say = say
        # Its ledger on disk too, for a drill killed outright (``skyfleet drill rollback``).
        ledger = Ledger(report_dir / LEDGER_FILE, target=ledger_target(target, report_dir))
        ledger.hold()
        self.context = RunContext(target, fault_site=self.spec.fault_site, say=say, ledger=ledger)
        self.started_at = time.time()
        self.load: LoadProcess | None = None
        self.abort_reason: str | None = None
        self.in_method = False
        self.lag_samples: list[float] = []
        self.polled_health_events: list[dict[str, Any]] = []
        self.safety_rollbacks: list[dict[str, Any]] = []
        # The bounded waits for the steady state: under the fault before chaoslib's check
        # after the method, and after the rollbacks (skyfleet.drills.steady).
        self.after_method: SteadyWait | None = None
        self.after_rollback: SteadyWait | None = None
        self.report: DrillReport | None = None
        self.started = False
        self.finished = False
        self._stop = threading.Event()
        self._lag_ready = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def target(self) -> Target:
        return self.context.target

    @property
    def fault(self) -> FaultInfo:
        return self.context.fault

    @property
    def ledger(self) -> Ledger:
        return self.context.ledger

    @property
    def notes(self) -> list[str]:
        return self.context.notes

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the samplers and the load, then let the load warm up before the hypothesis."""
        if self.started:
            return
        self.started = True
        door = self.target.front_door()
        for name, fn in (
            ("lag", self._lag_loop),
            ("watchdog", self._watchdog),
            ("health", self._health_loop),
        ):
            thread = threading.Thread(target=fn, name=f"skyfleet-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        # The sampler process's start-up (an interpreter and its imports) is done before the
        # load starts rather than during its first seconds: they share the machine's cores.
        self._lag_ready.wait(10)
        if door is not None:
            self.load = LoadProcess(door, self.spec.load)
            self.load.start()
            self.context.load = self.load.recording
            how = f" (resolved by the lab's DNS {door.dns[0]}:{door.dns[1]})" if door.dns else ""
            rate = f"{self.spec.load.rate:g} req/s open loop"
            self.say(f"load: {rate} against {door.url}{how} (process {self.load.pid})")
            self._stop.wait(self.spec.load.warmup_seconds)
        else:
            self.notes.append("no loopback front door for this target: no load, no request figures")

    def _lag_loop(self) -> None:
        """Collect lag samples from the sampler child process (see skyfleet.drills.lag)."""
        if not isinstance(self.target, LabTarget):
            self._lag_ready.set()
            return
        proc = subprocess.Popen(
            [sys.executable, "-m", "skyfleet.drills.lag", self.target.state_dir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        stdin = proc.stdin

        def close_when_done() -> None:
            self._stop.wait()
            stdin.close()  # the sampler stops when its stdin closes

        stop_child = threading.Thread(target=close_when_done, daemon=True)
        stop_child.start()
        errors: list[str] = []
        for line in proc.stdout:
            self._lag_ready.set()
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if "samples" in item:
                self.lag_samples.extend(float(v) for v in item["samples"])
            elif not errors:
                errors.append(str(item.get("error")))
        self._lag_ready.set()
        try:
            code = proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code != 0:
            errors.append(
                f"sampler exited with code {code}: {(proc.stderr.read() if proc.stderr else '')[-300:]}"
            )
        if errors:
            self.notes.append(f"replication lag sampler: {'; '.join(errors)}")

    def _health_loop(self) -> None:
        """Stack drills: poll the edge's Route 53 checkers for the faulted site (detection)."""
        site, edge_stack = self.spec.fault_site, self.spec.edge_stack
        if not isinstance(self.target, StackTarget) or not site or not edge_stack:
            return
        from skyfleet.drills.actions import aws

        try:
            edge = self.target.edge(edge_stack)
        except Exception as exc:
            self.notes.append(f"no Route 53 detection: {exc}")
            return
        warned = False
        while not self._stop.wait(2.0):
            try:
                self.polled_health_events.extend(aws.health_check_events(edge, site))
            except Exception as exc:  # a polling failure costs the detection figure, not the drill
                if not warned:
                    self.notes.append(f"Route 53 health check polling: {type(exc).__name__}: {exc}")
                    warned = True

    def _watchdog(self) -> None:
        """Abort conditions: checked every 250 ms while the method runs."""
        abort = self.spec.abort
        while not self._stop.wait(0.25):
            if not self.in_method or self.abort_reason:
                continue
            reason = None
            if time.time() - self.started_at > abort.max_seconds:
                reason = f"the drill ran longer than abort.max_seconds={abort.max_seconds:g}"
            elif self.load is not None and abort.max_error_rate < 1.0:
                window = self.context.load_window(abort.window_seconds)
                if len(window) >= 5:
                    rate = sum(not r.ok for r in window) / len(window)
                    if rate >= abort.max_error_rate:
                        reason = (
                            f"error rate {rate:.0%} over the last {abort.window_seconds:g} s reached "
                            f"abort.max_error_rate={abort.max_error_rate:g}"
                        )
            if reason:
                self.trip(reason)

    def trip(self, reason: str) -> None:
        """Abort the method now; chaoslib turns SIGUSR1 into a graceful exit with rollbacks."""
        if self.abort_reason:
            return
        self.abort_reason = reason
        self.say(f"ABORT: {reason}")
        if self.in_method:
            from chaoslib.exit import exit_gracefully

            exit_gracefully()

    def wait_after_method(
        self, experiment: dict[str, Any], configuration: dict[str, Any] | None, secrets: dict[str, Any] | None
    ) -> None:
        """Before chaoslib's check after the method: wait (bounded) for the steady state to hold
        under the fault, so that check does not catch a failover still in progress."""
        if self.abort_reason or self.fault.at is None:
            return
        self.after_method = self._wait_steady(experiment, configuration, secrets, "the method")

    def finish(
        self,
        journal: dict[str, Any] | None,
        *,
        experiment: dict[str, Any] | None = None,
        configuration: dict[str, Any] | None = None,
        secrets: dict[str, Any] | None = None,
    ) -> DrillReport:
        """Undo what is still open, wait for the steady state, settle, stop the load, read back,
        measure, report. ``experiment`` etc. come from chaoslib (the control) for the wait."""
        if self.finished and self.report is not None:
            return self.report
        self.finished = True
        self.in_method = False
        leftover = self.ledger.restore_all("drill ended with the fault still applied")
        # Nothing more is undone here: a fault whose undo failed is `skyfleet drill rollback`'s.
        self.ledger.release()
        undone = [f.action for f in self.ledger.pending()] + self.ledger.cut_short()
        if undone:
            self.notes.append(
                f"left applied or unknown (cut short while being applied): {', '.join(undone)}; run "
                f"`skyfleet drill rollback {self.report_dir}`"
            )
        if leftover:
            self.safety_rollbacks.extend(leftover)
            self.context.fault_restored(time.time())
        completed = (journal or {}).get("status") == "completed" and self.abort_reason is None
        if experiment is not None and completed and self.fault.at is not None:
            self.after_rollback = self._wait_steady(experiment, configuration, secrets, "the rollback")
        if self.load is not None and self.fault.at is not None:
            self._settle(self.spec.load.settle_seconds)
        self._stop.set()
        recording = self.load.stop() if self.load is not None else None
        if self.load is not None and self.load.problems():
            self.notes.append(f"load process: {self.load.problems()}")
        for thread in self._threads:
            thread.join(6)
        data = self._read_back(recording)
        self.report = self._build_report(journal, recording, data)
        write_report(self.report, recording, self.report_dir)
        return self.report

    def _wait_steady(
        self,
        experiment: dict[str, Any],
        configuration: dict[str, Any] | None,
        secrets: dict[str, Any] | None,
        after: str,
    ) -> SteadyWait | None:
        timeout = self.spec.recovery_timeout_seconds
        self.say(f"waiting for the steady state after {after} (at most {timeout:g} s)")
        wait = wait_for_steady_state(experiment, configuration, secrets, after=after, timeout=timeout)
        if wait is not None:
            self.say(wait.describe())
        return wait

    def _settle(self, seconds: float) -> None:
        self.say(f"settling {seconds:g} s under load after the rollback")
        time.sleep(seconds)

    def _read_back(self, recording: LoadRecording | None) -> DataCheck | None:
        door = self.target.front_door()
        if recording is None or door is None:
            return None
        self.say(f"reading back {len(recording.sessions)} sessions and {len(recording.tasks)} tasks")
        try:
            return asyncio.run(
                read_back(
                    door,
                    recording,
                    fault_at=self.fault.at,
                    drain_seconds=self.spec.load.drain_seconds,
                    request_timeout=self.spec.load.request_timeout_seconds,
                )
            )
        except Exception as exc:
            self.notes.append(f"read-back failed: {type(exc).__name__}: {exc}")
            return None

    def _health_events(self) -> list[dict[str, Any]]:
        if self.fault.at is None:
            return []
        try:
            events = self.target.health_events(since=self.fault.at - 1.0)
        except Exception as exc:
            self.notes.append(f"front door health events unavailable: {type(exc).__name__}: {exc}")
            events = []
        return events + list(self.polled_health_events)

    def _build_report(
        self, journal: dict[str, Any] | None, recording: LoadRecording | None, data: DataCheck | None
    ) -> DrillReport:
        journal = journal or {}
        measurements = measure(
            recording or LoadRecording(),
            fault_at=self.fault.at,
            restored_at=self.fault.restored_at,
            health_events=self._health_events(),
            fault_site=self.fault.site,
            lag_samples_ms=self.lag_samples,
            data=data,
            tolerance=self.spec.success_rate_tolerance,
        )
        if self.after_rollback is not None and self.after_rollback.met:
            measurements.recovered_after_rollback_seconds = self.after_rollback.seconds
        targets = check_targets(measurements, self.spec.targets)
        states = journal.get("steady_states") or {}
        during = [s for s in states.get("during") or [] if s]
        hypothesis = HypothesisSummary(
            before=_met(states.get("before")),
            after=_met(states.get("after")),
            during_checks=len(during),
            during_met=sum(1 for s in during if s.get("steady_state_met")),
            after_method_wait=self.after_method,
            after_rollback_wait=self.after_rollback,
        )
        status = str(journal.get("status") or "interrupted")
        deviated = bool(journal.get("deviated"))
        rollbacks = [
            {"name": r.get("activity", {}).get("name"), "status": r.get("status")}
            for r in journal.get("rollbacks") or []
        ] + self.safety_rollbacks
        notes = list(self.notes)
        served = {site for counts in measurements.served_by_site.values() for site, n in counts.items() if n}
        served |= {
            site for counts in measurements.forwarded_by_site.values() for site, n in counts.items() if n
        }
        if self.spec.fault_free:
            if self.fault.at is not None:
                notes.append("a fault was applied in a drill of normal operation")
            elif len(served) < 2:
                notes.append(f"the load reached only {sorted(served)}: the drill proves nothing")
        elif self.fault.at is None:
            notes.append("no fault was applied: the drill proves nothing")
        for wait in (self.after_method, self.after_rollback):
            if wait is not None and not wait.met:
                notes.append(wait.describe())
        lag = measurements.send_lag_ms.p50
        starved = lag is not None and lag > MAX_SEND_LAG_MS
        if starved:
            notes.append(
                f"invalid run: the load generator sent its requests {lag:.0f} ms late (p50; limit "
                f"{MAX_SEND_LAG_MS:.0f} ms): this machine, not the system, set these figures; run "
                "the drill again on a machine with CPU to spare"
            )
        failed_rollbacks = [r for r in rollbacks if r.get("status") != "succeeded"]
        passed = (
            status == "completed"
            and not deviated
            and self.abort_reason is None
            and hypothesis.before is True
            and hypothesis.after is not False
            and all(w is None or w.met for w in (self.after_method, self.after_rollback))
            and (
                self.fault.at is None and len(served) >= 2
                if self.spec.fault_free
                else self.fault.at is not None
            )
            and not failed_rollbacks
            and not starved
            and all(t.met for t in targets)
        )
        return DrillReport(
            drill=self.drill.name,
            title=self.drill.document.title,
            file=str(self.drill.path),
            target=self.target.label,
            started_at=self.started_at,
            ended_at=time.time(),
            passed=passed,
            status=status,
            deviated=deviated,
            aborted=self.abort_reason,
            fault=self.fault,
            hypothesis=hypothesis,
            targets=targets,
            measurements=measurements,
            data=data,
            rollbacks=rollbacks,
            notes=notes,
            system=_describe(self.target),
        )


def _describe(target: Target) -> dict[str, Any]:
    try:
        return target.describe()
    except Exception as exc:  # a report is still written when the target cannot say
        return {"unavailable": f"{type(exc).__name__}: {exc}"}


def _met(state: dict[str, Any] | None) -> bool | None:
    return None if not state else bool(state.get("steady_state_met"))


# --- preconditions ------------------------------------------------------------------------


def check_requirements(drill: Drill, target: Target) -> None:
    """Raise DrillSkipped/DrillRefused when the drill cannot or must not run on this target."""
    req = drill.skyfleet.requires
    if req.target == "lab" and not isinstance(target, LabTarget):
        raise DrillRefused(f"{drill.path}: this drill only runs against the lab (--target lab)")
    if req.target == "stack" and not isinstance(target, StackTarget):
        raise DrillRefused(f"{drill.path}: this drill only runs against a deployed stack (--stack NAME)")
    if (req.root or req.target == "lab") and isinstance(target, LabTarget) and os.geteuid() != 0:
        raise DrillSkipped(
            f"{drill.name} needs root: the lab runs every site and pod in namespaces of its own "
            "(start it with `sudo skyfleet lab up`)"
        )
    if isinstance(target, LabTarget):
        info = target.describe()
        if len(info["sites"]) < req.min_sites:
            raise DrillRefused(
                f"{drill.name} needs at least {req.min_sites} sites; the lab has {info['sites']}"
            )
        if info["edge"] is None:
            raise DrillRefused(f"{drill.name} needs the lab's edge (started without one: drop --no-edge)")
        if req.edge_routing is not None and info["routing"] != req.edge_routing:
            raise DrillRefused(
                f"{drill.name} needs an edge with {req.edge_routing} routing; the lab's edge plan routes by "
                f"{info['routing']} (start the lab with an edge stack that routes by {req.edge_routing}, "
                "e.g. `skyfleet lab up --edge edge-active`)"
            )
        want = req.health_interval_seconds
        intervals = {c["interval_seconds"] for c in info["health_checks"].values()}
        if want is not None and intervals != {want}:
            raise DrillRefused(
                f"{drill.name} is specified for edge health checks every {want:g} s; the lab's edge plan "
                f"checks every {sorted(intervals)} s"
            )
        site = drill.skyfleet.fault_site
        if site is not None and site not in info["sites"]:
            raise DrillRefused(
                f"{drill.name} faults site {site!r}, which the lab does not have: {info['sites']}"
            )
        unknown = unknown_lab_sites(drill, info["sites"])
        if unknown:
            raise DrillRefused(f"{drill.path}: " + "; ".join(unknown))


def unknown_lab_sites(drill: Drill, sites: list[str]) -> list[str]:
    """Each lab activity whose ``site`` the lab does not have, where it is in the drill file: a
    run finds it before any fault, not as a failed action under load."""
    from skyfleet.drills.actions.lab import PRIMARY_SITE
    from skyfleet.drills.activity import ACTIONS

    experiment = drill.experiment
    placed: list[tuple[str, dict[str, Any]]] = [
        (f"steady-state-hypothesis.probes[{i}]", a)
        for i, a in enumerate((experiment.get("steady-state-hypothesis") or {}).get("probes", []))
    ]
    placed += [(f"method[{i}]", a) for i, a in enumerate(experiment.get("method", []))]
    placed += [(f"rollbacks[{i}]", a) for i, a in enumerate(experiment.get("rollbacks", []))]
    problems = []
    for where, activity in placed:
        provider = activity.get("provider") or {}
        info = ACTIONS.get(provider.get("func", ""))
        if provider.get("module") != "skyfleet.drills.activity" or info is None or info.platform != "lab":
            continue
        site = (provider.get("arguments") or {}).get("site")
        if site is not None and site != PRIMARY_SITE and site not in sites:
            problems.append(
                f"{where} {activity.get('name')!r}: site {site!r} is not a site of the lab "
                f"({', '.join(sites)}, or {PRIMARY_SITE!r} for the one the edge serves)"
            )
    return problems


def ensure_prod_confirmed(target: Target, yes: bool) -> None:
    if isinstance(target, StackTarget) and target.environment == "prod" and not yes:
        raise DrillRefused(
            f"stack {target.stack!r} is a prod stack (environment: prod in its outputs); "
            "pass --yes to run a drill against it"
        )


# --- the run ------------------------------------------------------------------------------


def configuration_vars(target: Target, report_dir: Path) -> dict[str, Any]:
    """Values that override the drill's ``configuration`` so probes and actions find the target."""
    out: dict[str, Any] = {"skyfleet_report_dir": str(report_dir)}
    if isinstance(target, LabTarget):
        out |= {"skyfleet_target": "lab", "skyfleet_lab_dir": target.state_dir}
    else:
        out |= {"skyfleet_target": f"stack:{target.stack}"}
        if target.source.outputs_file:
            out["skyfleet_outputs_file"] = str(target.source.outputs_file)
        if target.source.plan_dir:
            out["skyfleet_plan_dir"] = str(target.source.plan_dir)
    return out


def ledger_target(target: Target, report_dir: Path) -> dict[str, Any]:
    """The target as the ledger file keeps it: its paths absolute, so a rollback run from
    another folder finds the same outputs, plans or lab."""
    paths = ("skyfleet_report_dir", "skyfleet_lab_dir", "skyfleet_outputs_file", "skyfleet_plan_dir")
    return {
        k: str(Path(v).resolve()) if k in paths else v
        for k, v in configuration_vars(target, report_dir).items()
    }


def with_control(experiment: dict[str, Any]) -> dict[str, Any]:
    """The experiment with Skyfleet's control declared (drill files declare it; be sure)."""
    experiment = copy.deepcopy(experiment)
    controls = experiment.setdefault("controls", [])
    if not any(c.get("provider", {}).get("module") == CONTROL_MODULE for c in controls):
        controls.append({"name": "skyfleet", "provider": {"type": "python", "module": CONTROL_MODULE}})
    return experiment


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Outside chaoslib's own handlers, SIGTERM unwinds like Ctrl-C so the safety net runs."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# A load generator this far behind its schedule (median) measures its own machine, not the
# system: requests queue in the client and time out there.
MAX_SEND_LAG_MS = 250.0

# An earlier fault's aftermath (a failback needs the edge's failure threshold × its interval of
# passing checks) ends well within this.
SETTLE_TIMEOUT_SECONDS = 300.0


def run_drill(
    drill: Drill,
    target: Target,
    report_dir: Path,
    *,
    yes: bool = False,
    say: Callable[[str], None] = logger.info,
) -> DrillReport:
    """Run one drill end to end and return its report (also written to ``report_dir``)."""
    from chaoslib.experiment import run_experiment
    from chaoslib.types import Schedule, Strategy

    check_requirements(drill, target)
    ensure_prod_confirmed(target, yes)
    early = Ledger(report_dir / LEDGER_FILE)
    early.hold()  # a folder an earlier drill left faults open in is refused before any wait
    early.release()
    if isinstance(target, LabTarget):
        target.wait_settled(SETTLE_TIMEOUT_SECONDS, say)
    run = DrillRun(drill, target, report_dir, say=say)
    set_current(run)
    journal: dict[str, Any] | None = None
    try:
        with _sigterm_as_interrupt():
            try:
                run.start()
                journal = run_experiment(
                    with_control(drill.experiment),
                    settings={"runtime": {"rollbacks": {"strategy": "always"}}},
                    # chaoslib unpacks (config_vars, secret_vars) though it annotates a dict.
                    experiment_vars=(configuration_vars(target, report_dir), {}),  # pyright: ignore[reportArgumentType]
                    strategy=Strategy.CONTINUOUS,
                    schedule=Schedule(continuous_hypothesis_frequency=1.0, fail_fast=False),
                )
            finally:
                # Whatever happened (exception, Ctrl-C, SIGTERM): undo, stop the load, report.
                report = run.finish(journal)
    finally:
        set_current(None)
    return report
