"""Run a Pulumi Python program offline, under the SDK's mocks, with a stack's config.

This is what the engine would do up to the provider calls: the language host's environment
(PULUMI_CONFIG, PULUMI_CONFIG_SECRET_KEYS, the main folder as working directory), the
program run inside the root Stack resource, every registration recorded. It works for any
Pulumi Python project with a ``Pulumi.yaml``, not only Skyfleet's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import importlib.util
import json
import os
import runpy
import sys
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime
import yaml
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.mocks import set_mocks
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

from infra.config import SpecError, engine_strings, read_stack_file
from skyfleet.plan.mocks import MockContext, RecordingMonitor, Registration, SkyfleetMocks, Unexpanded


class PlanError(Exception):
    """The program could not be planned: a usage, config or program error (exit code 2).
    ``file`` and ``line`` locate it in the program (or its config) where that is known."""

    def __init__(self, message: str, file: Path | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line


class ConfigError(PlanError):
    """The stack's config is invalid; nothing was registered."""

    def __init__(
        self, message: str, registered: int = 0, file: Path | None = None, line: int | None = None
    ) -> None:
        super().__init__(message, file, line)
        self.registered = registered


@dataclass
class PlannedResource:
    type: str
    name: str
    urn: str
    parent: str | None
    provider: str | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    dependencies: list[str]
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    custom: bool = True
    id: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # Read with ``Resource.get``: state the program looked up, not a resource it manages.
    read: bool = False
    # A multi-language component (its implementation is a provider plugin).
    remote: bool = False

    @property
    def protect(self) -> bool:
        return bool(self.options.get("protect"))


@dataclass
class Plan:
    stack: str
    project: str
    program_dir: Path
    config_file: Path
    config: dict[str, Any]
    preview: bool
    resources: list[PlannedResource]
    outputs: dict[str, Any]
    # Components whose children could not be planned offline, and why.
    unexpanded: list[Unexpanded] = field(default_factory=list)
    # Invokes and methods answered with nothing (no model and no declared result type).
    unanswered: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "project": self.project,
            "preview": self.preview,
            "configFile": str(self.config_file),
            "resources": [asdict(r) for r in self.resources],
            "outputs": self.outputs,
            "unexpanded": [asdict(u) for u in self.unexpanded],
            "unanswered": self.unanswered,
        }

    def of_type(self, typ: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == typ]


@dataclass(frozen=True)
class Project:
    """A Pulumi project folder, as the CLI reads its ``Pulumi.yaml``."""

    dir: Path
    name: str
    main: Path
    stack_config_dir: Path
    # Project-level config (Pulumi.yaml ``config:``): values and declared defaults.
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, program_dir: Path) -> Project:
        path = program_dir / "Pulumi.yaml"
        if not path.exists():
            raise PlanError(f"{program_dir}: no Pulumi.yaml; expected a Pulumi project folder")
        doc = yaml.safe_load(path.read_text()) or {}
        runtime = doc.get("runtime")
        runtime_name = runtime.get("name") if isinstance(runtime, dict) else runtime
        if runtime_name != "python":
            raise PlanError(f"{path}: runtime is {runtime_name!r}; only python programs can be planned")
        if "name" not in doc:
            raise PlanError(f"{path}: missing 'name'")
        main = program_dir / str(doc.get("main", "."))
        name = str(doc["name"])
        return cls(
            dir=program_dir,
            name=name,
            main=main,
            stack_config_dir=program_dir / str(doc.get("stackConfigDir", ".")),
            config=_project_config(doc.get("config"), name, path),
        )

    def stack_file(self, stack: str) -> Path:
        return self.stack_config_dir / f"Pulumi.{stack}.yaml"

    def stacks(self) -> list[str]:
        return sorted(
            p.name.removeprefix("Pulumi.").removesuffix(".yaml")
            for p in self.stack_config_dir.glob("Pulumi.*.yaml")
        )


def plan_stack(
    program_dir: Path,
    stack: str,
    *,
    preview: bool = False,
    plans_dir: Path | None = None,
    known_outputs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Plan:
    """Plan one stack. StackReferences are answered from ``known_outputs`` (stack name ->
    outputs), then from ``plans_dir/<stack>.json``, else by planning the referenced stack
    of the same project first."""
    project = Project.load(program_dir.resolve())
    if plans_dir is not None and not plans_dir.is_dir():
        raise PlanError(f"--references {plans_dir}: not a folder (give the folder of <stack>.json files)")
    references: dict[str, Mapping[str, Any]] = dict(known_outputs or {})

    def lookup(ref: str) -> Mapping[str, Any] | None:
        short = ref.split("/")[-1]
        for key in (ref, short):
            if key in references:
                return references[key]
        # DIR/<org>/<project>/<stack>.json, DIR/<project>/<stack>.json, then DIR/<stack>.json.
        parts = ref.split("/")
        candidates = [Path(*parts[i:]).with_suffix(".json") for i in range(len(parts))] if plans_dir else []
        path = next((plans_dir / c for c in candidates if plans_dir and (plans_dir / c).exists()), None)
        if path:
            references[ref] = _reference_outputs(path)
            return references[ref]
        return None

    plan, missing = _run(project, stack, preview, lookup)
    if missing:
        for ref in dict.fromkeys(missing):
            short = ref.split("/")[-1]
            if short == stack or not project.stack_file(short).exists():
                raise PlanError(
                    f"{project.stack_file(stack)}: StackReference {ref!r} has no offline plan and "
                    f"{project.stack_file(short)} does not exist; give its outputs with "
                    f"--references DIR (<project>/{short}.json or {short}.json: a plan from "
                    "`skyfleet plan --out` or an object of the stack's outputs)",
                    project.stack_file(stack),
                )
            referenced, _ = _run(project, short, False, lookup)
            references[short] = referenced.outputs if referenced else {}
        plan, missing = _run(project, stack, preview, lookup)
    if plan is None:
        raise PlanError(f"{project.stack_file(stack)}: StackReferences {missing} could not be answered")
    return plan


def _reference_outputs(path: Path) -> Mapping[str, Any]:
    """A referenced stack's outputs from ``path``: a plan written by `skyfleet plan --out`, or
    the stack's outputs object itself (`pulumi stack output --json`)."""
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise PlanError(f"{path}: cannot be read ({exc.strerror or exc})", path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PlanError(f"{path}: not JSON ({exc})", path) from None
    is_plan = isinstance(doc, dict) and "resources" in doc and "outputs" in doc
    outputs = doc["outputs"] if is_plan else doc
    if not isinstance(outputs, dict):
        what = "its outputs are" if is_plan else "it is"
        raise PlanError(
            f"{path}: {what} a JSON {type(outputs).__name__}, not an object of the stack's outputs "
            "(give a plan from `skyfleet plan --out` or `pulumi stack output --json`)",
            path,
        )
    return outputs


def _run(project: Project, stack: str, preview: bool, lookup: Any) -> tuple[Plan | None, list[str]]:
    """One run of the program. Returns (None, missing) when the run failed because a
    StackReference had no outputs yet, so the caller can plan those stacks and run again."""
    config_file = project.stack_file(stack)
    if not config_file.exists():
        known = ", ".join(project.stacks()) or "none"
        raise PlanError(f"{config_file}: no such stack file (stacks: {known})")
    try:
        stack_config, secret_keys, _ = read_stack_file(config_file)
    except SpecError as exc:
        raise ConfigError(str(exc), file=config_file) from None
    # As the CLI: project-level values and defaults, then the stack's; bare keys are the project's.
    config = {**project.config, **{_namespaced(k, project.name): v for k, v in stack_config.items()}}
    secret_keys = {_namespaced(k, project.name) for k in secret_keys}
    mocks = SkyfleetMocks(_context(config, stack, project.name), preview=preview, stack_outputs=lookup)
    monitor = RecordingMonitor(mocks)
    main = project.main / "__main__.py" if project.main.is_dir() else project.main
    root: dict[str, Any] = {}

    def program() -> None:
        runpy.run_path(str(main), run_name="__main__")
        root["stack"] = pulumi_settings.get_root_resource()

    with _engine_environment(project, config, secret_keys), _own_event_loop(), _no_manifest_downloads(mocks):
        pulumi_settings.reset_options(
            project=project.name, stack=stack, preview=preview, root_directory=str(project.dir)
        )
        set_mocks(mocks, project=project.name, stack=stack, preview=preview, monitor=monitor)
        pulumi_settings.set_root_resource(None)  # type: ignore[arg-type]
        try:
            _sync_await(run_in_stack(program))
            outputs = _resolve_outputs(root.get("stack"))
        except SpecError as exc:
            raise ConfigError(str(exc), registered=len(monitor.registrations), file=config_file) from None
        except pulumi.RunError as exc:
            file, line, text = _where(exc, project, main, monitor)
            raise ConfigError(
                f"{config_file}: {exc}{text}", registered=len(monitor.registrations), file=file, line=line
            ) from None
        except PlanError:
            raise  # a --references file the program asked for (it names itself)
        except Exception as exc:
            if mocks.missing_references:
                return None, list(mocks.missing_references)
            file, line, text = _where(exc, project, main, monitor)
            raise PlanError(
                f"{file}:{line}: the program failed: {type(exc).__name__}: {exc}{text}", file, line
            ) from exc
    resources = [
        PlannedResource(
            type=r.type,
            name=r.name,
            urn=r.urn,
            parent=r.parent,
            provider=r.provider,
            inputs=r.inputs,
            outputs=r.outputs,
            dependencies=r.dependencies,
            property_dependencies=r.property_dependencies,
            custom=r.custom,
            id=r.id,
            options=r.options,
            read=r.read,
            remote=r.remote,
        )
        for r in _in_stable_order(monitor.registrations)
    ]
    plan = Plan(
        stack=stack,
        project=project.name,
        program_dir=project.dir,
        config_file=config_file,
        config=config,
        preview=preview,
        resources=resources,
        outputs=outputs,
        unexpanded=_unexpanded(monitor, mocks),
        unanswered=sorted(set(mocks.unanswered)),
    )
    return plan, list(mocks.missing_references)


def _in_stable_order(registrations: Mapping[str, Registration]) -> list[Registration]:
    """Registrations in an order that is the same on every run: the SDK registers from a
    thread pool, so arrival order varies. Every resource still comes after its parent, its
    provider and its dependencies (as the engine needs them); ties go by URN."""
    after: dict[str, set[str]] = {}
    for urn, r in registrations.items():
        needs = {r.parent or "", (r.provider or "").rsplit("::", 1)[0], *r.dependencies}
        needs.update(u for urns in r.property_dependencies.values() for u in urns)
        after[urn] = {n for n in needs if n in registrations and n != urn}
    waiting = {urn: len(needs) for urn, needs in after.items()}
    dependents: dict[str, list[str]] = {}
    for urn, needs in after.items():
        for n in needs:
            dependents.setdefault(n, []).append(urn)
    ready = [urn for urn, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[Registration] = []
    while ready:
        urn = heapq.heappop(ready)
        order.append(registrations[urn])
        for d in dependents.get(urn, []):
            waiting[d] -= 1
            if waiting[d] == 0:
                heapq.heappush(ready, d)
    placed = {r.urn for r in order}
    return order + [r for urn, r in registrations.items() if urn not in placed]  # cycles: as they came


def _unexpanded(monitor: RecordingMonitor, mocks: SkyfleetMocks) -> list[Unexpanded]:
    """Multi-language components, then Python components whose rendering needs a tool the
    offline plan does not run (a helm chart), in registration order."""
    out = []
    for r in monitor.registrations.values():
        if r.urn in monitor.unexpanded:
            out.append(monitor.unexpanded[r.urn])
        elif r.type == "kubernetes:helm.sh/v3:Chart":
            reason = mocks.unrendered.get(r.name, _RENDERED_BY["helm"])
            out.append(Unexpanded(r.type, r.name, r.urn, reason))
        elif r.type == "kubernetes:yaml:ConfigFile" and r.name in mocks.unfetched:
            out.append(Unexpanded(r.type, r.name, r.urn, mocks.unfetched[r.name]))
        elif r.type == "kubernetes:kustomize:Directory":
            out.append(Unexpanded(r.type, r.name, r.urn, _RENDERED_BY["kustomize"]))
    return out


_RENDERED_BY = {
    tool: f"rendered by {tool}, which the offline plan does not run: its resources were not "
    "planned and not checked"
    for tool in ("helm", "kustomize")
}


def _namespaced(key: str, project: str) -> str:
    return key if ":" in key else f"{project}:{key}"


def _project_config(raw: Any, project: str, path: Path) -> dict[str, Any]:
    """``config:`` of Pulumi.yaml: a plain value, or ``{value: ...}``, or a declaration whose
    ``default`` applies when the stack sets nothing."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PlanError(f"{path}: config is {type(raw).__name__}; expected a mapping of config keys")
    out: dict[str, Any] = {}
    for key, spec in raw.items():
        if isinstance(spec, dict) and ("value" in spec or "default" in spec or "type" in spec):
            if "value" in spec:
                out[_namespaced(str(key), project)] = spec["value"]
            elif "default" in spec:
                out[_namespaced(str(key), project)] = spec["default"]
        else:
            out[_namespaced(str(key), project)] = spec
    return out


def _where(
    exc: BaseException, project: Project, main: Path, monitor: RecordingMonitor
) -> tuple[Path, int, str]:
    """Where in the program a failure happened: (file, line, a line of text to show).

    The innermost frame of the program's own code in the traceback (or in the exceptions it
    chains); failing that (an error raised while the SDK resolved a resource's outputs), the
    line that registered the resource the message names, else the last resource registered.
    """
    root = str(project.dir)

    def own(filename: str) -> bool:
        return filename.startswith(root) and "site-packages" not in filename

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = [f for f in traceback.extract_tb(current.__traceback__) if own(f.filename)]
        if frames:
            f = frames[-1]
            code = (f.line or "").strip()
            return Path(f.filename), f.lineno or 1, f"\n  at {_rel(f.filename, project)}:{f.lineno}: {code}"
        current = current.__cause__ or current.__context__
    registered = [r for r in monitor.registrations.values() if r.source and own(r.source[0])]
    message = str(exc)
    named = [r for r in registered if f"'{r.name}'" in message or f'"{r.name}"' in message]
    for r, why in ((named[-1:], "registered"), (registered[-1:], "the last resource registered")):
        if r and r[0].source:
            file, line = r[0].source
            text = f"\n  at {_rel(file, project)}:{line}: {why} {r[0].type} {r[0].name!r}"
            return Path(file), line, text
    return main, 1, ""


def _rel(filename: str, project: Project) -> str:
    try:
        return str(Path(filename).relative_to(project.dir))
    except ValueError:
        return filename


def _context(config: Mapping[str, Any], stack: str, project: str) -> MockContext:
    ctx = MockContext(stack=stack, project=project)
    for key in ("skyfleet:region", "aws:region", "gcp:region"):
        if isinstance(config.get(key), str):
            ctx.region = config[key]
            break
    if isinstance(config.get("skyfleet:accountId"), str | int):
        ctx.account = str(config["skyfleet:accountId"])
    for key in ("skyfleet:project", "gcp:project"):
        if isinstance(config.get(key), str):
            ctx.gcp_project = config[key]
            break
    return ctx


@contextlib.contextmanager
def _no_manifest_downloads(mocks: SkyfleetMocks) -> Iterator[None]:
    """A plan never fetches: a v1 ``yaml.ConfigFile`` whose file is a URL reads no objects,
    and the plan reports it as not expanded (the SDK downloads such files itself, before any
    provider call, so this is the one place to stop it)."""
    if importlib.util.find_spec("pulumi_kubernetes") is None:
        yield
        return
    from pulumi_kubernetes.yaml import yaml as k8s_yaml

    original = k8s_yaml._read_url

    def offline(url: str) -> str:
        owner = sys._getframe(1).f_locals.get("self")
        name = getattr(owner, "_name", None)
        if isinstance(name, str):
            mocks.unfetched[name] = (
                f"manifest {url!r} is downloaded at deployment, which the offline plan does not do: "
                "its resources were not planned and not checked"
            )
        return ""

    k8s_yaml._read_url = offline
    try:
        yield
    finally:
        k8s_yaml._read_url = original


@contextlib.contextmanager
def _engine_environment(project: Project, config: Mapping[str, Any], secret_keys: set[str]) -> Iterator[None]:
    """What the language host gives a program: config in the environment, the main folder
    as working directory, the project's modules fresh for each stack."""
    saved_env = {k: os.environ.get(k) for k in ("PULUMI_CONFIG", "PULUMI_CONFIG_SECRET_KEYS")}
    saved_cwd = os.getcwd()
    saved_path = list(sys.path)
    before = set(sys.modules)
    os.environ["PULUMI_CONFIG"] = json.dumps(engine_strings(config))
    os.environ["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(sorted(secret_keys))
    pulumi.runtime.set_all_config(engine_strings(config), sorted(secret_keys))
    main_dir = project.main if project.main.is_dir() else project.main.parent
    sys.path.insert(0, str(main_dir))
    os.chdir(main_dir)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        # Modules of a foreign program may register resources at import: re-run them next time.
        root = str(project.dir)
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None) or ""
            own_code = file.startswith(root) and "site-packages" not in file
            if own_code and not name.startswith(("infra", "agent_app", "skyfleet")):
                del sys.modules[name]


class _Inline(concurrent.futures.ThreadPoolExecutor):
    """Runs each monitor call at once on the event loop's thread. The SDK hands its RPCs to a
    thread pool because a real engine blocks; the mock monitor never does, and calls from pool
    threads race the program's own thread on the SDKs' lazily loaded modules (a class missing
    from a half-loaded module) and make the registration order vary from run to run."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting task, as a pool would
            future.set_exception(exc)
        return future


@contextlib.contextmanager
def _own_event_loop() -> Iterator[None]:
    """The SDK schedules on the current event loop; a host (a test runner, an async app) may
    have none or a closed one. Each plan gets its own, closed afterwards."""
    loop = asyncio.new_event_loop()
    loop.set_default_executor(_Inline())

    def quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A failed run leaves the SDK's registration futures holding the error the run itself
        # reports (or a run abandoned to plan a referenced stack first): not news, not printed.
        if context.get("message") == "Future exception was never retrieved":
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(quiet)
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
        # A failed program leaves registrations pending: cancel them rather than let the
        # loop's teardown report each one as destroyed while pending.
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        asyncio.set_event_loop(None)
        loop.close()


def _resolve_outputs(root: Any) -> dict[str, Any]:
    if root is None:
        return {}
    outputs: dict[str, Any] = {}
    for key, value in getattr(root, "outputs", {}).items():
        outputs[key] = _sync_await(_plain(value))
    return outputs


async def _plain(value: Any) -> Any:
    """An exported value as JSON: unknowns as the engine's sentinel, secrets unwrapped."""
    from pulumi.runtime import rpc

    out = pulumi.Output.from_input(value)
    known = await out.is_known()
    if not known:
        return rpc.UNKNOWN
    resolved = await out.future(with_unknowns=True)
    return json.loads(json.dumps(resolved, default=lambda o: rpc.UNKNOWN if o is not None else None))
