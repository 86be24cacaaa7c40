"""How actions are declared: each fault once, with its rollback; probes with a description.

A ``FaultPair`` subclass is the one declaration of a fault and its undo: the two function names
drill files call, the ledger key both share, how a dry run describes each, ``apply`` (do the
fault, say how to undo exactly what it did) and ``restore`` (the undo when the ledger has no open
fault, e.g. a rollback run on its own). ``functions()`` makes from it the two Chaos Toolkit
functions, with the signatures of ``apply`` and ``restore`` (plus chaoslib's ``configuration``):

- the fault function applies the fault, then records its undo in the drill's ledger and its
  time in the run context before anything else can fail, so the safety net can always undo it;
- the rollback function undoes the open fault(s) under its key from the ledger (restoring exactly
  what the fault changed); one the drill already undid (a failback) is left alone; else it runs
  ``restore``; with neither it is a no-op, so rollbacks may run
  twice (declared, then safety net) without harm.

``ACTIONS`` lists every function with its platform, kind, undo and description, which
``skyfleet drill run --dry-run`` prints without touching anything.
"""

from __future__ import annotations

import inspect
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from skyfleet.drills import context
from skyfleet.drills.target import LabTarget, StackTarget, Target

Platform = Literal["lab", "aws", "gcp", "kubernetes"]
Kind = Literal["fault", "rollback", "probe"]
Configuration = dict[str, Any] | None
Describe = Callable[[Target | None, dict[str, Any]], str]
Undo = Callable[[], Any]
ActionFunction = Callable[..., Any]


@dataclass(frozen=True)
class ActionInfo:
    func: str
    platform: Platform
    kind: Kind
    undo: str | None
    describe: Describe


ACTIONS: dict[str, ActionInfo] = {}
# Each fault's pair, by the fault's function name (what a ledger file records).
PAIRS: dict[str, FaultPair] = {}


@dataclass(frozen=True)
class Applied:
    """What a fault did: the site it hit, a line for the ledger, its result, and how to undo
    it: ``saved``, what the pair's ``resume`` needs (plain JSON, kept in the drill's ledger
    file, so a rollback without the drill undoes exactly this), or an ``undo`` of this process
    only (the lab's: its processes are this machine's)."""

    site: str | None
    description: str
    result: Any
    undo: Undo | None = None
    saved: dict[str, Any] | None = None


def _register(info: ActionInfo) -> None:
    if info.func in ACTIONS:
        raise TypeError(f"action {info.func!r} is declared twice")
    ACTIONS[info.func] = info


def _as_dict(result: Any) -> dict[str, Any]:
    return dict(result) if isinstance(result, dict) else {"result": result}


def _configuration_parameter() -> inspect.Parameter:
    return inspect.Parameter(
        "configuration", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation="Configuration"
    )


def _public(
    method: Callable[..., Any], name: str, module: str, doc: str, call: Callable[[Configuration, dict], Any]
) -> ActionFunction:
    """A plain function named ``name`` whose signature is ``method``'s without its target."""
    params = list(inspect.signature(method).parameters.values())[1:]
    signature = inspect.Signature([*params, _configuration_parameter()])

    def function(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        return call(arguments.pop("configuration"), arguments)

    function.__name__ = function.__qualname__ = name
    function.__module__ = module
    function.__doc__ = doc
    setattr(function, "__signature__", signature)  # noqa: B010 (chaoslib binds arguments to it)
    return function


class FaultPair:
    """One fault and its rollback. Subclass ``LabFault`` or ``StackFault``; see the module doc."""

    platform: ClassVar[Platform]
    target_type: ClassVar[type]
    target_name: ClassVar[str]
    fault: ClassVar[str]  # the fault function's name
    rollback: ClassVar[str]  # the rollback function's name
    # The ledger key, a format string over arguments both functions take ("site:{site}").
    key: ClassVar[str]

    # Subclasses define these as methods; their parameters after the target become the fault's
    # and the rollback's. ``restore`` returns None when there is nothing to undo without the ledger.
    apply: Callable[..., Applied]
    restore: Callable[..., Undo | None]
    # A fault whose ``apply`` reports ``saved`` defines ``resume(target, saved, *arguments)``:
    # its undo from what was saved (in this process, or read back from the ledger file).
    resume: Callable[..., Undo]

    def undo_recorded(
        self, target: Target, saved: dict[str, Any] | None, arguments: dict[str, Any]
    ) -> Undo | None:
        """The undo of a fault its ledger file records (``skyfleet drill rollback``): exactly
        what it changed when the file has it, else the rollback's own ``restore`` (what the
        stack declares, where it can tell); None when neither can undo it."""
        if saved is not None:
            return self.resume(target, saved, **arguments)
        wanted = inspect.signature(self.restore).parameters
        return self.restore(target, **{k: v for k, v in arguments.items() if k in wanted})

    def describe(self, target: Target | None, args: dict[str, Any]) -> str:
        raise NotImplementedError

    def describe_undo(self, target: Target | None, args: dict[str, Any]) -> str:
        raise NotImplementedError

    def _target(self, configuration: Configuration) -> Any:
        target = context.target(configuration)
        if not isinstance(target, self.target_type):
            raise RuntimeError(
                f"this action acts on {self.target_name}, but the drill targets {target.label}"
            )
        return target

    def _key(self, arguments: dict[str, Any]) -> str:
        return self.key.format(**arguments)

    def _apply(self, configuration: Configuration, arguments: dict[str, Any]) -> dict[str, Any]:
        target = self._target(configuration)
        key = self._key(arguments)
        ledger = context.ledger()
        entry = ledger.applying(key, self.fault, arguments)
        started = time.time()
        try:
            applied = self.apply(target, **arguments)
        except Exception as exc:  # a fault that fails undoes what it had done
            ledger.not_applied(entry, exc)
            raise
        # Cut short (Ctrl-C, the drill's abort) while its call may have landed: it stays open
        # on record, for `skyfleet drill rollback` (the run's report says so).
        result = _as_dict(applied.result)
        at = float(result.get("time", started))
        undo = applied.undo
        if undo is None:
            assert applied.saved is not None, f"{self.fault}: apply gave neither undo nor saved"
            undo = self.resume(target, applied.saved, **arguments)
        # Recorded before anything else can fail: from here on, the safety net can undo it.
        ledger.applied(key, self.fault, applied.description, undo, at, entry=entry, saved=applied.saved)
        run = context.current()
        if run is not None:
            run.fault_applied(self.fault, applied.site, at, result)
        return {"fault": self.fault, "key": key, "time": at, **result}

    def _rollback(self, configuration: Configuration, arguments: dict[str, Any]) -> dict[str, Any]:
        target = self._target(configuration)
        key = self._key(arguments)
        ledger = context.ledger()
        open_faults = [f for f in ledger.pending() if f.key == key]
        results: list[Any] = []
        if open_faults:
            for fault in reversed(open_faults):
                results.append(fault.undo())
                ledger.crossed_off(fault, by=self.rollback)
        elif context.current() is not None and any(f.key == key for f in ledger.faults):
            # Undone already in this run (a method that restores its own fault, e.g. a failback):
            # the declared rollback has nothing left to do.
            return {
                "rollback": self.rollback,
                "key": key,
                "restored": False,
                "reason": "undone earlier in this run",
            }
        else:
            undo = self.restore(target, **arguments)
            if undo is None:
                return {"rollback": self.rollback, "key": key, "restored": False, "reason": "no open fault"}
            results.append(undo())
        now = time.time()
        run = context.current()
        if run is not None:
            run.fault_restored(now)
        return {"rollback": self.rollback, "key": key, "restored": True, "time": now, "results": results}

    @classmethod
    def functions(cls) -> tuple[ActionFunction, ActionFunction]:
        """Register the pair and make its fault and rollback functions (see the module doc)."""
        pair = cls()
        apply, restore = pair.apply, pair.restore
        fields = {f for _, f, _, _ in string.Formatter().parse(cls.key) if f}
        for method in (apply, restore):
            missing = fields - set(inspect.signature(method).parameters)
            if missing:
                raise TypeError(f"{cls.__name__}.key {cls.key!r} uses {sorted(missing)}, not in {method}")
        doc = (cls.__doc__ or "").strip()
        fault = _public(apply, cls.fault, cls.__module__, f"{doc}\n\nUndone by {cls.rollback}.", pair._apply)
        rollback = _public(restore, cls.rollback, cls.__module__, f"Undo {cls.fault}: {doc}", pair._rollback)
        _register(ActionInfo(cls.fault, cls.platform, "fault", cls.rollback, pair.describe))
        _register(ActionInfo(cls.rollback, cls.platform, "rollback", None, pair.describe_undo))
        PAIRS[cls.fault] = pair
        return fault, rollback


class LabFault(FaultPair):
    platform = "lab"
    target_type = LabTarget
    target_name = "the lab"


class StackFault(FaultPair):
    target_type = StackTarget
    target_name = "a deployed stack"


def probe(platform: Platform, describe: Describe) -> Callable[[ActionFunction], ActionFunction]:
    """Register a probe (it reads, never changes) with its dry-run description."""

    def wrap(fn: ActionFunction) -> ActionFunction:
        _register(ActionInfo(fn.__name__, platform, "probe", None, describe))
        return fn

    return wrap
