"""The Pulumi program body: validate the stack's spec, then deploy its target.

Kept apart from ``__main__`` so the offline plan and the real engine run the same function.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime

from infra.config import load_spec, stack_file
from infra.spec import StackSpec

# Where Pulumi.yaml is, when the engine does not say (older CLIs).
PROJECT_DIR = Path(__file__).resolve().parent.parent


def spec_from_engine() -> StackSpec:
    """The stack's spec from the config the engine (or the offline plan) handed us."""
    from pulumi.runtime.config import get_config_env, get_config_secret_keys_env

    root = Path(pulumi.get_root_directory() or PROJECT_DIR)
    rel = stack_file(pulumi.get_stack(), ".")
    path = root / rel
    return load_spec(
        get_config_env(),
        set(get_config_secret_keys_env()),
        source=str(rel),
        yaml_text=path.read_text() if path.exists() else None,
    )


def run() -> None:
    spec = spec_from_engine()  # a SpecError, before anything is registered
    target = importlib.import_module(f"infra.{spec.target.value}")
    outputs: dict[str, Any] = target.deploy(spec)
    for key, value in outputs.items():
        pulumi.export(key, value)
