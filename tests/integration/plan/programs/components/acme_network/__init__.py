"""A multi-language component's Python SDK, in the shape Pulumi's SDK generator emits (as
pulumi-awsx and pulumi-eks do): a remote ``ComponentResource`` whose getters declare typed
outputs, some of them references to child resources, and a resource module registered so
those references deserialize. Its implementation would be a provider plugin; there is none."""

import contextlib
import json

import pulumi

from .network import Network

__all__ = ["Network"]


class _Module(pulumi.runtime.ResourceModule):
    def __init__(self, mod_info: dict) -> None:
        super().__init__()
        self.mod_info = mod_info

    def version(self) -> None:
        return None

    def construct(self, name: str, typ: str, urn: str) -> pulumi.Resource:
        return Network(name, pulumi.ResourceOptions(urn=urn))


_MODULES = json.loads(
    '[{"pkg": "acme", "mod": "network", "fqn": "acme_network", '
    '"classes": {"acme:network:Network": "Network"}}]'
)
for _info in _MODULES:
    # A second run of the program in one process finds the module already registered.
    with contextlib.suppress(ValueError):
        pulumi.runtime.register_resource_module(_info["pkg"], _info["mod"], _Module(_info))
