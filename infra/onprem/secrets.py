"""The site's secret store on the cluster: Kubernetes Secrets filled from the stack's Pulumi
secrets (API keys, model key) and generated passwords (Redis, each NATS user). Values stay
Pulumi secrets end to end, so they are encrypted in the state and never printed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    workload.MODEL_API_KEY: "api-key",
}
# A generated password's key in its Secret.
PASSWORD_KEY = "password"


@dataclass(frozen=True)
class SecretsArgs:
    place: kube.Placement
    # logical name (workload.API_KEYS, ...) -> value from the stack's secret config
    values: Mapping[str, str]
    # logical names of passwords generated here (the Redis AUTH, each NATS user's)
    generated: Sequence[str] = (workload.REDIS_AUTH,)


class Secrets(Capability):
    """One Secret per logical secret; ``refs`` maps each logical name to its Secret key."""

    TARGET = "onprem"

    def __init__(self, name: str, args: SecretsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(name, opts)

        values: dict[str, pulumi.Input[str]] = {k: pulumi.Output.secret(v) for k, v in args.values.items()}
        for logical in args.generated:
            # A password generated here: never chosen by a person, kept only in state (secret).
            values[logical] = random.RandomPassword(
                logical, length=40, special=False, opts=self.child()
            ).result

        self.refs: dict[str, kube.SecretRef] = {}
        self.objects: list[k8s.core.v1.Secret] = []
        for logical, value in values.items():
            ref = kube.SecretRef(name=logical, key=_KEYS.get(logical, PASSWORD_KEY))
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
