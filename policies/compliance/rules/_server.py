"""Serving the pack without paying for every policy on every resource.

The policy SDK's analyzer deserializes a resource's properties once per *policy*, then lets the
policy decide it does not apply; AnalyzeStack does the same for every resource of the stack.
With the pack's ~180 rules that is most of the gate's time. Two things change that, both inside
the SDK's own servicer, so the engine and `skyfleet check` talk to the same server:

- Analyze offers a resource only to the policies whose rule applies to its type (the rule's
  `applies_to` is exactly the test the rule would make first, so no answer changes);
- Analyze and AnalyzeStack deserialize each resource's properties once per call and share the
  (read-only) result between the policies.

Both reach into the SDK's servicer (its policy list and module-level deserializers). If a future
SDK renames them, `install` leaves the SDK as it is: slower, never different.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import json_format

from ._rule import Rule

_local = threading.local()


def _cached(key_of: Callable[[Any], int], compute: Callable[..., Any], slot: str) -> Callable[..., Any]:
    """Memoise `compute` by object identity while a thread is inside AnalyzeStack."""

    def call(value: Any, *args: Any, **kwargs: Any) -> Any:
        cache = getattr(_local, slot, None)
        if cache is None or args or kwargs:
            return compute(value, *args, **kwargs)
        hit = cache.get(key_of(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        result = compute(value)
        cache[key_of(value)] = (value, result)  # keeps `value` alive, so its id is not reused
        return result

    return call


class _JsonFormat:
    """Stands in for google.protobuf.json_format inside the SDK module: MessageToDict memoised."""

    MessageToDict = staticmethod(_cached(id, json_format.MessageToDict, "dicts"))

    def __getattr__(self, name: str) -> Any:
        return getattr(json_format, name)


# The SDK servicer's private list of policies, under its mangled name.
POLICIES = "_PolicyAnalyzerServicer__policies"


def install(rules: Sequence[Rule]) -> bool:
    """Swap the SDK's analyzer servicer for one that indexes policies by resource type.
    Returns False (and changes nothing) when the SDK does not look as expected."""
    import pulumi_policy.policy as sdk

    base = getattr(sdk, "_PolicyAnalyzerServicer", None)
    deserialize = getattr(sdk, "deserialize_properties", None)
    if base is None or deserialize is None or getattr(sdk, "json_format", None) is not json_format:
        return False
    # The servicer keeps its policies in a private attribute, set in __init__ and read by
    # Analyze: the index below stands in for it, so a release that renames it keeps the SDK's own.
    if not all(POLICIES in getattr(base, m).__code__.co_names for m in ("__init__", "Analyze")):
        return False
    applies = {r.id: r.applies_to for r in rules if r.kind == "resource"}

    class TypeIndexedServicer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._by_type: dict[str, list[Any]] = {}
            super().__init__(*args, **kwargs)

        @property
        def _PolicyAnalyzerServicer__policies(self) -> list[Any]:
            offered = getattr(_local, "offered", None)
            return self._all_policies if offered is None else offered

        @_PolicyAnalyzerServicer__policies.setter
        def _PolicyAnalyzerServicer__policies(self, value: list[Any]) -> None:
            self._all_policies = value
            self._by_type = {}

        def _for_type(self, resource_type: str) -> list[Any]:
            found = self._by_type.get(resource_type)
            if found is None:
                found = [p for p in self._all_policies if applies.get(p.name, lambda _t: True)(resource_type)]
                self._by_type[resource_type] = found
            return found

        def Analyze(self, request: Any, context: Any) -> Any:
            _local.offered = self._for_type(request.type)
            _local.dicts, _local.props = {}, {}
            try:
                return super().Analyze(request, context)
            finally:
                _local.offered = _local.dicts = _local.props = None

        def AnalyzeStack(self, request: Any, context: Any) -> Any:
            _local.dicts, _local.props = {}, {}
            try:
                return super().AnalyzeStack(request, context)
            finally:
                _local.dicts = _local.props = None

    # setattr: these names are the SDK module's internals, not its exported API.
    setattr(sdk, "_PolicyAnalyzerServicer", TypeIndexedServicer)  # noqa: B010
    setattr(sdk, "json_format", _JsonFormat())  # noqa: B010
    setattr(sdk, "deserialize_properties", _cached(id, deserialize, "props"))  # noqa: B010
    return True
