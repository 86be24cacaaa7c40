"""What the provider SDKs say about a type token: its Python class, the declared type of every
output property, which properties are inputs, and the result type of each invoke and method.

Everything comes from the generated SDK the program itself imports (its resource-module
registry and the getters' annotations), so a field no hand-written model knows still has a
declared type to synthesize a value from.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import importlib
import inspect
import keyword
import typing
from collections import abc
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi import _types
from pulumi.runtime import rpc

_PLUMBING = {"resource_name", "opts", "__props__", "__self__", "args"}


@dataclass(frozen=True)
class Field:
    """One property of a resource or output type, as the SDK declares it."""

    name: str  # the Pulumi (wire) name
    hint: Any  # the declared type with Output[...] removed
    optional: bool  # the declared type admits None


def _import_package(pkg: str) -> None:
    """Load ``pulumi_<pkg>`` so it registers its resource modules (a program that uses a token
    normally has; this covers tokens reached only through another package's types)."""
    with contextlib.suppress(ImportError):
        importlib.import_module("pulumi_" + pkg.replace("-", "_"))


@functools.cache
def resource_class(token: str) -> type | None:
    """The SDK class registered for a resource or component type token, if any."""
    parts = token.split(":")
    if len(parts) != 3:
        return None
    pkg, mod, _ = parts
    if pkg == "pulumi" and mod == "providers":
        return provider_class(parts[2])
    modules = rpc._RESOURCE_MODULES.get(f"{pkg}:{mod}")
    if modules is None:
        _import_package(pkg)
        modules = rpc._RESOURCE_MODULES.get(f"{pkg}:{mod}", [])
    for module in modules:
        info = getattr(module, "mod_info", None)
        if isinstance(info, dict) and token in info.get("classes", {}):
            try:
                return getattr(importlib.import_module(info["fqn"]), info["classes"][token])
            except (ImportError, AttributeError):
                return None
    return None


@functools.cache
def provider_class(pkg: str) -> type | None:
    packages = rpc._RESOURCE_PACKAGES.get(pkg)
    if packages is None:
        _import_package(pkg)
        packages = rpc._RESOURCE_PACKAGES.get(pkg, [])
    for package in packages:
        info = getattr(package, "pkg_info", None)
        if isinstance(info, dict) and "fqn" in info:
            try:
                return getattr(importlib.import_module(info["fqn"]), info["class"])
            except (ImportError, AttributeError):
                return None
    return None


@functools.cache
def token_of(cls: type) -> str | None:
    """The type token an SDK resource class registers under (for resource references)."""
    root = cls.__module__.split(".", 1)[0]
    for modules in list(rpc._RESOURCE_MODULES.values()):
        for module in modules:
            info = getattr(module, "mod_info", None)
            if not isinstance(info, dict) or not str(info.get("fqn", "")).startswith(root):
                continue
            for token, name in info.get("classes", {}).items():
                if name == cls.__name__ and resource_class(token) is cls:
                    return token
    return None


def _unwrap_output(hint: Any) -> Any:
    if typing.get_origin(hint) is pulumi.Output:
        args = typing.get_args(hint)
        return args[0] if args else Any
    return hint


def is_optional(hint: Any) -> bool:
    return _types._is_optional_type(hint)


def strip_optional(hint: Any) -> Any:
    """``Optional[T]`` -> ``T``; other unions -> their first concrete member."""
    if _types._is_union_type(hint):
        members = [a for a in typing.get_args(hint) if a is not type(None) and not _is_plumbing(a)]
        return members[0] if members else Any
    return hint


def _is_plumbing(arg: Any) -> bool:
    try:
        return _types._is_plumbing_arg(arg)
    except Exception:
        return False


@functools.cache
def fields(cls: type) -> tuple[Field, ...]:
    """Every declared property of a resource or output type: wire name, type, optionality."""
    try:
        hints = _types._raw_return_hints(cls)
    except Exception:
        return ()
    out = []
    for name, raw in hints.items():
        inner = _unwrap_output(raw)
        out.append(Field(name=name, hint=strip_optional(inner), optional=is_optional(inner)))
    return tuple(out)


@functools.cache
def input_names(cls: type) -> frozenset[str]:
    """Wire names of the properties a program may set (the constructor's arguments), so the
    others are the ones only the provider computes."""
    init = getattr(cls, "_internal_init", None)
    if init is None:
        return frozenset()
    try:
        params = inspect.signature(init).parameters
    except (TypeError, ValueError):
        return frozenset()
    py_to_wire = _types.resource_py_to_pulumi_names(cls)
    return frozenset(py_to_wire.get(p, p) for p in params if p not in _PLUMBING)


def _module_for(pkg: str, mod: str) -> Any:
    base = "pulumi_" + pkg.replace("-", "_")
    if mod in ("index", ""):
        return importlib.import_module(base)
    first = mod.split("/", 1)[0]
    name = first + "_" if keyword.iskeyword(first) else first
    return importlib.import_module(f"{base}.{name}")


@functools.cache
def invoke_result(token: str) -> type | None:
    """The result type of a function token: ``aws:ec2/getVpc:getVpc`` -> ``GetVpcResult`` in
    ``pulumi_aws.ec2`` (the generator's naming, checked against the SDK in the tests)."""
    parts = token.split(":")
    if len(parts) != 3 or not parts[2]:
        return None
    pkg, mod, fn = parts
    try:
        module = _module_for(pkg, mod)
    except ImportError:
        return None
    cls = getattr(module, fn[0].upper() + fn[1:] + "Result", None)
    return cls if isinstance(cls, type) and _types.is_output_type(cls) else None


@functools.cache
def call_result(token: str) -> type | None:
    """The result type of a method token ``pkg:mod:Type/method`` (a class nested in the
    resource's class, e.g. ``Cluster.GetKubeconfigResult``)."""
    resource, _, method = token.rpartition("/")
    if not method:
        return None
    if resource.startswith("pulumi:providers:"):
        cls = provider_class(resource.removeprefix("pulumi:providers:"))
    else:
        cls = resource_class(resource)
    if cls is None:
        return None
    result = getattr(cls, method[0].upper() + method[1:] + "Result", None)
    return result if isinstance(result, type) and _types.is_output_type(result) else None


def is_output_type(hint: Any) -> bool:
    return isinstance(hint, type) and _types.is_output_type(hint)


def is_resource(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, pulumi.Resource)


def is_enum(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, enum.Enum)


def sequence_item(hint: Any) -> Any | None:
    """T for list/Sequence[T]; None when ``hint`` is not a sequence type."""
    origin = typing.get_origin(hint)
    if hint is list or origin in (list, abc.Sequence, typing.Sequence):
        args = typing.get_args(hint)
        return strip_optional(args[0]) if args else Any
    return None


def mapping_value(hint: Any) -> Any | None:
    """V for dict/Mapping[str, V]; None when ``hint`` is not a mapping type."""
    origin = typing.get_origin(hint)
    if hint is dict or origin in (dict, abc.Mapping, typing.Mapping):
        args = typing.get_args(hint)
        return strip_optional(args[1]) if len(args) == 2 else Any
    return None
