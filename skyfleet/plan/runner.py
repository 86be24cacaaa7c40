"""Run a Pulumi Python program offline, under the SDK's mocks, with a stack's config.

This is what the engine would do up to the provider calls: the language host's environment
(PULUMI_CONFIG, PULUMI_CONFIG_SECRET_KEYS, the main folder as working directory), the
program run inside the root Stack resource, every registration recorded. It works for any
Pulumi Python project with a ``Pulumi.yaml``, not only Skyfleet's.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from skyfleet.plan.mocks import MockContext, RecordingMonitor, SkyfleetMocks


class PlanError(Exception):
    """The program could not be planned: a usage, config or program error (exit code 2)."""


class ConfigError(PlanError):
    """The stack's config is invalid; nothing was registered."""

    def __init__(self, message: str, registered: int = 0) -> None:
        super().__init__(message)
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

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "project": self.project,
            "preview": self.preview,
            "configFile": str(self.config_file),
            "resources": [asdict(r) for r in self.resources],
            "outputs": self.outputs,
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
        return cls(
            dir=program_dir,
            name=str(doc["name"]),
            main=main,
            stack_config_dir=program_dir / str(doc.get("stackConfigDir", ".")),
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
    references: dict[str, Mapping[str, Any]] = dict(known_outputs or {})

    def lookup(ref: str) -> Mapping[str, Any] | None:
        short = ref.split("/")[-1]
        if short in references:
            return references[short]
        if plans_dir and (plans_dir / f"{short}.json").exists():
            references[short] = json.loads((plans_dir / f"{short}.json").read_text()).get("outputs", {})
            return references[short]
        return None

    plan, missing = _run(project, stack, preview, lookup)
    if missing:
        for ref in dict.fromkeys(missing):
            short = ref.split("/")[-1]
            if short == stack or not project.stack_file(short).exists():
                raise PlanError(
                    f"{project.stack_file(stack)}: StackReference {ref!r} has no offline plan and "
                    f"{project.stack_file(short)} does not exist"
                )
            referenced, _ = _run(project, short, False, lookup)
            references[short] = referenced.outputs if referenced else {}
        plan, missing = _run(project, stack, preview, lookup)
    if plan is None:
        raise PlanError(f"{project.stack_file(stack)}: StackReferences {missing} could not be answered")
    return plan


def _run(project: Project, stack: str, preview: bool, lookup: Any) -> tuple[Plan | None, list[str]]:
    """One run of the program. Returns (None, missing) when the run failed because a
    StackReference had no outputs yet, so the caller can plan those stacks and run again."""
    config_file = project.stack_file(stack)
    if not config_file.exists():
        known = ", ".join(project.stacks()) or "none"
        raise PlanError(f"{config_file}: no such stack file (stacks: {known})")
    try:
        config, secret_keys, _ = read_stack_file(config_file)
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    mocks = SkyfleetMocks(_context(config, stack, project.name), preview=preview, stack_outputs=lookup)
    monitor = RecordingMonitor(mocks)
    main = project.main / "__main__.py" if project.main.is_dir() else project.main
    root: dict[str, Any] = {}

    def program() -> None:
        runpy.run_path(str(main), run_name="__main__")
        root["stack"] = pulumi_settings.get_root_resource()

    with _engine_environment(project, config, secret_keys), _own_event_loop():
        pulumi_settings.reset_options(
            project=project.name, stack=stack, preview=preview, root_directory=str(project.dir)
        )
        set_mocks(mocks, project=project.name, stack=stack, preview=preview, monitor=monitor)
        pulumi_settings.set_root_resource(None)  # type: ignore[arg-type]
        try:
            _sync_await(run_in_stack(program))
        except (pulumi.RunError, SpecError) as exc:
            raise ConfigError(str(exc), registered=len(monitor.registrations)) from None
        except Exception as exc:
            if mocks.missing_references:
                return None, list(mocks.missing_references)
            raise PlanError(
                f"{main}: the program failed: {type(exc).__name__}: {exc}{_where(exc, project.dir)}"
            ) from exc
        outputs = _resolve_outputs(root.get("stack"))
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
        )
        for r in monitor.registrations.values()
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
    )
    return plan, list(mocks.missing_references)


def _where(exc: BaseException, root: Path) -> str:
    """The innermost frame of the program's own code, so a failure points at a line."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename.startswith(str(root)) and "site-packages" not in f.filename
    ]
    if not frames:
        return ""
    f = frames[-1]
    return f"\n  at {Path(f.filename).relative_to(root)}:{f.lineno}: {(f.line or '').strip()}"


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


@contextlib.contextmanager
def _own_event_loop() -> Iterator[None]:
    """The SDK schedules on the current event loop; a host (a test runner, an async app) may
    have none or a closed one. Each plan gets its own, closed afterwards."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield
    finally:
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
