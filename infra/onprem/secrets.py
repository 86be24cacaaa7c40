"""The site's secret store on the cluster: Kubernetes Secrets filled from the stack's Pulumi
secrets (API keys, model key) and a generated Redis password. Values stay Pulumi secrets end
to end, so they are encrypted in the state and never printed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from agent_app import contract
from infra import workload
from infra.component import Capability
from infra.onprem import kube

# The key of each logical secret inside its Kubernetes Secret.
_KEYS = {
    workload.API_KEYS: contract.API_KEYS_FILE_NAME,
    workload.REDIS_AUTH: "password",
    workload.MODEL_API_KEY: "api-key",
}


@dataclass(frozen=True)
class SecretsArgs:
    place: kube.Placement
    # logical name (workload.API_KEYS, ...) -> value from the stack's secret config
    values: Mapping[str, str]


class Secrets(Capability):
    """One Secret per logical secret; ``refs`` maps each logical name to its Secret key."""

    TARGET = "onprem"

    def __init__(self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)

        # Redis AUTH password: generated, never chosen by a person, kept only in state (secret).
        self.redis_password = random.RandomPassword("redis-auth", length=40, special=False, opts=self.child())
        values: dict[str, pulumi.Input[str]] = {k: pulumi.Output.secret(v) for k, v in args.values.items()}
        values[workload.REDIS_AUTH] = self.redis_password.result

        self.refs: dict[str, kube.SecretRef] = {}
        self.objects: list[k8s.core.v1.Secret] = []
        for logical, value in values.items():
            ref = kube.SecretRef(name=logical, key=_KEYS[logical])
            # One Opaque Secret per logical secret, so each pod can mount only what it needs.
            secret = k8s.core.v1.Secret(
                logical,
                metadata=kube.meta(logical, args.place),
                type="Opaque",
                string_data={ref.key: pulumi.Output.secret(value)},
                opts=self.child(additional_secret_outputs=["data", "stringData"]),
            )
            self.refs[logical] = ref
            self.objects.append(secret)
        self.register_outputs({"secrets": sorted(self.refs)})
