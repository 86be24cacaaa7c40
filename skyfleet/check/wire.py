"""Planned resources in the engine's wire form for the analyzer.

The engine marshals properties with KeepUnknowns, KeepSecrets and SkipInternalKeys: unknowns
travel as the string sentinel, secrets as the secret signature object, keys starting with
``__`` are dropped, and output values collapse to their plain value (or an unknown). It sends
the resource's inputs to Analyze and its outputs to AnalyzeStack, with the provider resource
(a default provider is built from the stack's ``<package>:*`` config, as the engine does), and
the root Stack resource is part of the stack.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from google.protobuf import struct_pb2
from pulumi.runtime.proto import analyzer_pb2

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
OUTPUT_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
RESOURCE_REF_SIG = "5cf8f73096256a8f31e491e813e4eb8e"


@dataclass
class WireResource:
    """What the engine knows about one resource when it calls the analyzer."""

    type: str
    name: str
    urn: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    parent: str = ""
    provider_urn: str = ""
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    protect: bool = False


def marshal_value(value: Any) -> Any:
    """One property value as the engine marshals it for an analyzer."""
    if isinstance(value, Mapping):
        sig = value.get(SIG_KEY)
        if sig == OUTPUT_SIG:
            if "value" not in value:
                return UNKNOWN
            inner = marshal_value(value["value"])
            return {SIG_KEY: SECRET_SIG, "value": inner} if value.get("secret") else inner
        if sig == RESOURCE_REF_SIG:
            return value.get("id", value.get("urn", ""))
        if sig is not None:
            return {k: marshal_value(v) for k, v in value.items()}
        return {k: marshal_value(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list | tuple):
        return [marshal_value(v) for v in value]
    return value


def to_struct(props: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(marshal_value(props))
    return struct


def _options(r: WireResource) -> analyzer_pb2.AnalyzerResourceOptions:
    return analyzer_pb2.AnalyzerResourceOptions(
        protect=r.protect,
        customTimeouts=analyzer_pb2.AnalyzerResourceOptions.CustomTimeouts(),
        parent=r.parent,
    )


def _provider(provider: WireResource | None) -> analyzer_pb2.AnalyzerProviderResource | None:
    if provider is None:
        return None
    return analyzer_pb2.AnalyzerProviderResource(
        type=provider.type, name=provider.name, urn=provider.urn, properties=to_struct(provider.inputs)
    )


def analyze_request(r: WireResource, provider: WireResource | None) -> analyzer_pb2.AnalyzeRequest:
    request = analyzer_pb2.AnalyzeRequest(
        type=r.type, urn=r.urn, name=r.name, properties=to_struct(r.inputs), options=_options(r)
    )
    if (p := _provider(provider)) is not None:
        request.provider.CopyFrom(p)
    return request


def analyzer_resource(r: WireResource, provider: WireResource | None) -> analyzer_pb2.AnalyzerResource:
    resource = analyzer_pb2.AnalyzerResource(
        type=r.type,
        urn=r.urn,
        name=r.name,
        properties=to_struct(r.outputs),
        options=_options(r),
        parent=r.parent,
        dependencies=r.dependencies,
    )
    for key, urns in r.property_dependencies.items():
        if urns:
            resource.propertyDependencies[key].urns.extend(urns)
    if (p := _provider(provider)) is not None:
        resource.provider.CopyFrom(p)
    return resource


def urn_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def stack_urn(stack: str, project: str) -> str:
    return f"urn:pulumi:{stack}::{project}::pulumi:pulumi:Stack::{project}-{stack}"


def default_provider(package: str, stack: str, project: str, config: Mapping[str, Any]) -> WireResource:
    """The default provider the engine creates for `package`, configured from `<package>:*` keys
    (provider inputs are strings; objects arrive JSON-encoded)."""
    try:
        version = metadata.version(f"pulumi_{package}")
        suffix = "default_" + version.replace(".", "_")
    except metadata.PackageNotFoundError:
        version, suffix = "", "default"
    inputs: dict[str, Any] = {}
    for key, value in config.items():
        ns, _, name = key.partition(":")
        if ns == package and name:
            inputs[name] = value if isinstance(value, str) else json.dumps(value)
    if version:
        inputs["version"] = version
    urn = f"urn:pulumi:{stack}::{project}::pulumi:providers:{package}::{suffix}"
    return WireResource(
        type=f"pulumi:providers:{package}", name=suffix, urn=urn, inputs=inputs, outputs=inputs
    )
