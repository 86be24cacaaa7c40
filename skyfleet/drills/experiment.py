"""Loading and validating drill files.

A drill file is a Chaos Toolkit experiment (YAML or JSON). chaoslib validates the parts it
knows, but its messages do not say where the problem is; Skyfleet validates the parts it relies
on first, with pydantic, so that every error names the file and the field (for example
``drills/site-loss.yaml: method[0].provider.func: ...``), and then hands the document to
chaoslib's own validation so the file also runs under ``chaos run``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Names of the report.json metrics a drill may set a target on; every target is an upper bound.
TARGET_METRICS: frozenset[str] = frozenset(
    {
        "failed_requests",
        "error_window_seconds",
        "detection_seconds",
        "recovery_seconds",
        "sessions_lost",
        "turns_lost",
        "tasks_lost",
        "tasks_duplicated",
        "tasks_failed",
        "replication_lag_p99_ms",
        "latency_during_p99_ms",
        "latency_after_p99_ms",
    }
)
SKYFLEET_EXTENSION = "skyfleet"
# Modules whose functions a drill may call; anything else is a typo or someone else's code.
ACTIVITY_MODULES = frozenset(
    {
        "skyfleet.drills.activity",
        "skyfleet.drills.hypothesis",
        "skyfleet.lab.faults",
    }
)


class DrillFileError(ValueError):
    """A drill file is unreadable or invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Open(BaseModel):
    # Chaos Toolkit keys Skyfleet does not use (controls, secrets, pauses...) pass through.
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class PythonProvider(_Open):
    type: Literal["python"]
    module: str = Field(min_length=1)
    func: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class OtherProvider(_Open):
    """http/process providers: chaoslib validates them; Skyfleet only needs the type."""

    type: Literal["http", "process"]


Provider = Annotated[PythonProvider | OtherProvider, Field(discriminator="type")]


class Activity(_Open):
    type: Literal["action", "probe"]
    name: str = Field(min_length=1)
    provider: Provider
    background: bool = False


class HypothesisProbe(Activity):
    tolerance: bool | int | float | str | list[Any] | dict[str, Any]


class SteadyStateHypothesis(_Open):
    title: str = Field(min_length=1)
    probes: list[HypothesisProbe] = Field(min_length=1)


class LoadMix(_Strict):
    """Relative weights of the request kinds in the traffic mix."""

    sessions: float = Field(default=1.0, ge=0)
    messages: float = Field(default=6.0, ge=0)
    tasks: float = Field(default=2.0, ge=0)
    polls: float = Field(default=2.0, ge=0, description="GET of a pending task's status")

    @model_validator(mode="after")
    def _some_traffic(self) -> LoadMix:
        if self.sessions + self.messages + self.tasks + self.polls <= 0:
            raise ValueError("at least one of sessions, messages, tasks, polls must have a positive weight")
        return self


class LoadSpec(_Strict):
    rate: float = Field(default=30.0, gt=0, le=500, description="requests per second, open loop")
    warmup_seconds: float = Field(default=3.0, ge=0, le=120)
    settle_seconds: float = Field(default=3.0, ge=0, le=120, description="load kept after rollbacks")
    max_seconds: float = Field(default=120.0, gt=0, le=1800, description="hard bound on the load")
    # Longer than the lab front door's server timeout (10 s), so a request the front door
    # retries on another site is judged by its final answer, not cut short by the client.
    request_timeout_seconds: float = Field(default=15.0, gt=0, le=60)
    drain_seconds: float = Field(default=20.0, ge=0, le=300, description="wait for tasks at the end")
    # "shared": one HTTP client (one resolver cache, kept-alive connections) for all the load;
    # "per-user": each client (API key) its own resolver cache and a connection per request, so
    # each user's next request follows the edge's answer of the moment, as many users behind
    # many resolvers do.
    clients: Literal["shared", "per-user"] = "shared"
    # Per-user clients' connections: "per-request" (the default: a CLI call, a browser tab opened
    # again) or "kept-alive" (an SDK's client object): a kept connection stays with the address it
    # reached, whatever the edge answers since, until it breaks or times out. The shared client
    # always keeps its connections.
    connections: Literal["per-request", "kept-alive"] | None = None
    # "edge": clients of the global name alone (browsers, curl), moved by the edge only;
    # "fleet": ``agent_app.client.FleetClient``, which knows every site (``GET /v1/fleet``) and
    # sends a request that cannot reach one site to the next.
    client: Literal["edge", "fleet"] = "edge"
    # How clients connect to a name with several addresses (the lab's multivalue edge): "race"
    # (RFC 8305: httpx's async client, browsers) or "sequential", one address after another,
    # each with the whole connect timeout (``socket.create_connection``: httpx's sync client and
    # the SDKs built on it, requests).
    dial: Literal["race", "sequential"] = "race"
    # The bound on connecting: the whole race, or each address in turn (sequential). Unset: the
    # request timeout (the fleet client's own default: 1 s). The OpenAI Python SDK's is 5 s.
    connect_timeout_seconds: float | None = Field(default=None, gt=0, le=60)
    # The fleet client's bound on one attempt at one site: a request in flight at a site that is
    # lost is sent to the next site after it (a request is always safe to repeat there: every
    # create and turn carries an Idempotency-Key). Below request_timeout_seconds, so a retry fits.
    attempt_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    mix: LoadMix = Field(default_factory=LoadMix)
    # A user's conversation ends after this many turns, and the user starts another: below the
    # app's history limit (AGENT_SESSION_MAX_TURNS, 50 unless set), whose answer (413) would count
    # as a failed request. When requests are slow, few sessions are idle and turns crowd onto them.
    turns_per_session: int = Field(default=40, ge=1, le=1000)

    @model_validator(mode="after")
    def _connections_fit(self) -> LoadSpec:
        if self.clients == "shared" and self.connections == "per-request":
            raise ValueError(
                "connections: per-request needs per-user clients (clients: per-user); the shared "
                "client keeps its connections alive"
            )
        return self

    @model_validator(mode="after")
    def _a_connect_fits(self) -> LoadSpec:
        connect = self.connect_timeout_seconds
        if connect is not None and connect > self.request_timeout_seconds:
            raise ValueError(
                f"connect_timeout_seconds ({connect:g}) must not exceed "
                f"request_timeout_seconds ({self.request_timeout_seconds:g}), which bounds the whole request"
            )
        return self

    @model_validator(mode="after")
    def _a_retry_fits(self) -> LoadSpec:
        if self.client == "fleet" and self.attempt_timeout_seconds >= self.request_timeout_seconds:
            raise ValueError(
                f"attempt_timeout_seconds ({self.attempt_timeout_seconds:g}) must be below "
                f"request_timeout_seconds ({self.request_timeout_seconds:g}), so a retry at another site fits"
            )
        return self

    @property
    def max_requests(self) -> int:
        return int(self.rate * self.max_seconds) + 1


class AbortSpec(_Strict):
    """When to stop the method early; rollbacks run either way."""

    max_error_rate: float = Field(default=1.0, gt=0, le=1, description="over window_seconds")
    window_seconds: float = Field(default=5.0, gt=0, le=120)
    max_seconds: float = Field(default=300.0, gt=0, le=3600, description="whole drill")
    on_action_failure: bool = Field(default=True, description="a failed fault action aborts")


class Requirements(_Strict):
    root: bool = False
    min_sites: int = Field(default=1, ge=1)
    # The edge's health-check interval the drill's targets assume (the lab's comes from its plan).
    health_interval_seconds: float | None = Field(default=None, gt=0)
    # How the edge spreads the global name over the sites (the lab's comes from its edge plan).
    edge_routing: Literal["failover", "weighted", "multivalue"] | None = None
    target: Literal["lab", "stack", "any"] = "any"


class SkyfleetExtension(_Strict):
    """Skyfleet's own section of a drill, under ``extensions`` with ``name: skyfleet``."""

    name: Literal["skyfleet"]
    load: LoadSpec = Field(default_factory=LoadSpec)
    # Upper bounds: a number, never below 0 (a bool is not taken for 1, a negative bound can never be met).
    targets: dict[str, Annotated[float, Field(ge=0, strict=True)]] = Field(default_factory=dict)
    abort: AbortSpec = Field(default_factory=AbortSpec)
    requires: Requirements = Field(default_factory=Requirements)
    fault_site: str | None = Field(default=None, description="the site the fault hits, for detection")
    fault_free: bool = Field(
        default=False,
        description="a drill of normal operation (no fault): it proves something only when the load "
        "was served by several sites",
    )
    edge_stack: str | None = Field(
        default=None, description="stack drills: the edge stack whose Route 53 checks detect the fault"
    )
    success_rate_tolerance: float = Field(default=0.99, gt=0, le=1)
    recovery_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="bound on the wait for the steady state after the method and after the rollbacks",
    )

    @field_validator("targets")
    @classmethod
    def _known_metrics(cls, targets: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(targets) - TARGET_METRICS)
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(TARGET_METRICS)}")
        return targets


class DrillDocument(_Open):
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    steady_state_hypothesis: SteadyStateHypothesis = Field(alias="steady-state-hypothesis")
    method: list[Activity] = Field(min_length=1)
    rollbacks: list[Activity] = Field(default_factory=list)
    extensions: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _skyfleet_modules(self) -> DrillDocument:
        for where, activities in (("method", self.method), ("rollbacks", self.rollbacks)):
            for i, activity in enumerate(activities):
                provider = activity.provider
                if (
                    isinstance(provider, PythonProvider)
                    and provider.module.startswith("skyfleet")
                    and provider.module not in ACTIVITY_MODULES
                ):
                    raise ValueError(
                        f"{where}[{i}].provider.module: {provider.module!r} is not a Skyfleet "
                        f"activity module; use one of {sorted(ACTIVITY_MODULES)}"
                    )
        return self


class Drill(BaseModel):
    """A validated drill: the raw experiment chaoslib runs plus Skyfleet's typed view of it."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    path: Path
    experiment: dict[str, Any]
    document: DrillDocument
    skyfleet: SkyfleetExtension

    @property
    def name(self) -> str:
        return self.path.stem


def _location(loc: tuple[int | str, ...]) -> str:
    """``('method', 0, 'provider', 'func')`` -> ``method[0].provider.func``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("python", "http", "process", "function-after[_skyfleet_modules(), DrillDocument]"):
            continue  # discriminator / validator tags, not fields
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _format(path: Path, error: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in error.errors():
        where = _location(tuple(e["loc"]))
        where = f"{prefix}{where}" if where != "(top level)" or not prefix else prefix.rstrip(".")
        lines.append(f"{path}: {where}: {e['msg']}")
    return "\n".join(lines)


def parse_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON drill file into a mapping, or raise DrillFileError naming the file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise DrillFileError(f"{path}: cannot read drill file: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise DrillFileError(f"{path}: not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DrillFileError(f"{path}: (top level): a drill must be a mapping, got {type(data).__name__}")
    return data


def skyfleet_extension(path: Path, experiment: dict[str, Any]) -> SkyfleetExtension:
    extensions = experiment.get("extensions") or []
    for i, ext in enumerate(extensions):
        if isinstance(ext, dict) and ext.get("name") == SKYFLEET_EXTENSION:
            try:
                return SkyfleetExtension.model_validate(ext)
            except ValidationError as exc:
                raise DrillFileError(_format(path, exc, prefix=f"extensions[{i}].")) from None
    raise DrillFileError(f"{path}: extensions: no entry with name: {SKYFLEET_EXTENSION}")


def _python_activities(experiment: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(location, provider) of every python provider in the hypothesis, method and rollbacks."""
    found = []
    hypothesis = experiment.get("steady-state-hypothesis") or {}
    sections = [
        ("steady-state-hypothesis.probes", hypothesis.get("probes") or []),
        ("method", experiment.get("method") or []),
        ("rollbacks", experiment.get("rollbacks") or []),
    ]
    for where, activities in sections:
        for i, activity in enumerate(activities):
            provider = activity.get("provider") if isinstance(activity, dict) else None
            if isinstance(provider, dict) and provider.get("type") == "python":
                found.append((f"{where}[{i}].provider", provider))
    return found


def _check_signatures(path: Path, experiment: dict[str, Any]) -> None:
    """Each python provider names an importable function whose signature takes its arguments."""
    for where, provider in _python_activities(experiment):
        module_name, func_name = provider["module"], provider["func"]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise DrillFileError(f"{path}: {where}.module: cannot import {module_name!r}: {exc}") from None
        func = getattr(module, func_name, None)
        if not callable(func):
            raise DrillFileError(f"{path}: {where}.func: {module_name} has no function {func_name!r}")
        args = dict(provider.get("arguments") or {})
        params = inspect.signature(func).parameters
        for injected in ("configuration", "secrets"):
            if injected in params:
                args.setdefault(injected, None)
        try:
            inspect.signature(func).bind(**args)
        except TypeError as exc:
            raise DrillFileError(
                f"{path}: {where}.arguments: {exc} (signature: {module_name}.{func_name}"
                f"{inspect.signature(func)})"
            ) from None


_KINDS: dict[type, str] = {
    bool: "a bool",
    int: "a number",
    float: "a number",
    str: "a string",
    dict: "a mapping",
}


def _returns(func: Any) -> str | None:
    """What a probe function returns, by its annotation: one of ``_KINDS``'s names, or None."""
    try:
        hint = typing.get_type_hints(inspect.unwrap(func)).get("return")
    except Exception:  # an annotation that does not resolve: nothing to check against
        return None
    return _KINDS.get(typing.get_origin(hint) or hint)  # type: ignore[arg-type]


def _matches(tolerance: Any) -> set[str] | None:
    """The kinds of value ``tolerance`` can match as chaoslib compares them; None: any."""
    if isinstance(tolerance, bool):
        return {"a bool"}
    if isinstance(tolerance, int | float):
        return {"a number", "a mapping"}  # a mapping: its "status" is compared
    if isinstance(tolerance, str):
        return {"a string"}
    if isinstance(tolerance, dict):
        return {"range": {"a number", "a mapping"}, "regex": {"a string", "a mapping"}}.get(
            str(tolerance.get("type"))
        )
    return None  # a list: membership (or a range) over values of any kind


def _check_tolerances(path: Path, experiment: dict[str, Any]) -> None:
    """A hypothesis probe's tolerance can match what its function returns: chaoslib compares a
    bool, number or string with ``==``, so `true` for a probe that returns a rate is never met,
    and the drill would only find out by aborting at its first check."""
    probes = (experiment.get("steady-state-hypothesis") or {}).get("probes") or []
    for i, probe in enumerate(probes):
        provider = probe.get("provider") if isinstance(probe, dict) else None
        if not isinstance(provider, dict) or provider.get("type") != "python":
            continue
        func = getattr(importlib.import_module(provider["module"]), provider["func"])
        returns, kinds = _returns(func), _matches(probe.get("tolerance"))
        if returns is not None and kinds is not None and returns not in kinds:
            tolerance = probe["tolerance"]
            shown = f"type {tolerance['type']}" if isinstance(tolerance, dict) else repr(tolerance)
            raise DrillFileError(
                f"{path}: steady-state-hypothesis.probes[{i}].tolerance: {shown} can never be met: "
                f"{provider['module']}.{provider['func']} returns {returns}"
            )


def _chaoslib_validate(path: Path, experiment: dict[str, Any]) -> None:
    from chaoslib.exceptions import ChaosException
    from chaoslib.experiment import ensure_experiment_is_valid

    try:
        ensure_experiment_is_valid(experiment)
    except ChaosException as exc:
        raise DrillFileError(f"{path}: {exc}") from None


def validate_experiment(experiment: dict[str, Any], path: Path, *, chaoslib_checks: bool = True) -> Drill:
    """Validate an already-parsed experiment; ``path`` names it in errors."""
    try:
        document = DrillDocument.model_validate(experiment)
    except ValidationError as exc:
        raise DrillFileError(_format(path, exc)) from None
    ext = skyfleet_extension(path, experiment)
    _check_signatures(path, experiment)
    _check_tolerances(path, experiment)
    if chaoslib_checks:
        _chaoslib_validate(path, experiment)
    return Drill(path=path, experiment=experiment, document=document, skyfleet=ext)


def load_drill(path: str | Path, *, chaoslib_checks: bool = True) -> Drill:
    """Load and validate a drill; raise DrillFileError naming the file and the field."""
    path = Path(path)
    return validate_experiment(parse_file(path), path, chaoslib_checks=chaoslib_checks)
