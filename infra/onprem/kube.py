"""Kubernetes building blocks every onprem component shares: names and ports of the pods,
their labels, and the restricted security settings (Pod Security Standard ``restricted``)
every pod and container gets. Written once so no component can forget a setting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

# Pod roles: the value of app.kubernetes.io/name, which every selector and policy keys on.
API = "api"
WORKER = "worker"
REDIS = "redis"
NATS = "nats"
STREAMS_JOB = "nats-streams"

# Ports of the data stores (the app's own port comes from agent_app.contract).
REDIS_PORT = 6379
REDIS_SENTINEL_PORT = 26379
# The name the Sentinels know the primary by (AGENT_REDIS_SENTINEL_MASTER).
REDIS_MASTER_NAME = "skyfleet"
NATS_CLIENT_PORT = 4222
NATS_CLUSTER_PORT = 6222
NATS_MONITOR_PORT = 8222
NATS_METRICS_PORT = 7777

# Non-root users of the third-party images (their own numeric users; no root needed).
REDIS_UID = 999
NATS_UID = 1000

NAME_LABEL = "app.kubernetes.io/name"
PART_OF_LABEL = "app.kubernetes.io/part-of"


def selector(role: str) -> dict[str, str]:
    """The labels that select one role's pods (stable: never include version labels)."""
    return {NAME_LABEL: role, PART_OF_LABEL: "skyfleet"}


def labels(base: Mapping[str, str], role: str | None = None) -> dict[str, str]:
    """spec.labels() plus, for a role's objects, its selector labels."""
    out = dict(base)
    if role:
        out.update(selector(role))
    return out


@dataclass(frozen=True)
class Placement:
    """Where a component's objects go: the namespace's name (for DNS names) and its output
    (referencing it orders every object after the Namespace), plus the common labels."""

    namespace: str
    namespace_ref: pulumi.Input[str]
    labels: Mapping[str, str]


def meta(
    name: str,
    place: Placement,
    role: str | None = None,
    annotations: Mapping[str, str] | None = None,
    extra_labels: Mapping[str, str] | None = None,
) -> k8s.meta.v1.ObjectMetaArgs:
    """Explicit names (other objects and DNS refer to them) in the app's namespace."""
    return k8s.meta.v1.ObjectMetaArgs(
        name=name,
        namespace=place.namespace_ref,
        labels={**labels(place.labels, role), **(extra_labels or {})},
        annotations=dict(annotations) if annotations else None,
    )


def pod_security(uid: int) -> k8s.core.v1.PodSecurityContextArgs:
    """Pod-level restricted settings: a fixed non-root user, volumes owned by its group."""
    return k8s.core.v1.PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=uid,
        fs_group=uid,
        fs_group_change_policy="OnRootMismatch",
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def container_security(uid: int) -> k8s.core.v1.SecurityContextArgs:
    """Container-level restricted settings: read-only root, no capabilities, no escalation."""
    return k8s.core.v1.SecurityContextArgs(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=uid,
        read_only_root_filesystem=True,
        allow_privilege_escalation=False,
        privileged=False,
        capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def resources(cpu_millis: int, memory_mib: int) -> k8s.core.v1.ResourceRequirementsArgs:
    """Requests equal limits (Guaranteed QoS): a noisy neighbour cannot starve the pod."""
    amounts = {"cpu": f"{cpu_millis}m", "memory": f"{memory_mib}Mi"}
    return k8s.core.v1.ResourceRequirementsArgs(requests=amounts, limits=dict(amounts))


def spread(
    role: str, topology_key: str, *, strict_hosts: bool, revision_label: str | None = None
) -> list[k8s.core.v1.TopologySpreadConstraintArgs]:
    """Spread a role's pods over zones (best effort) and hosts (strict in prod).

    Only nodes the pods may run on count (``nodeTaintsPolicy: Honor``): a tainted control-plane
    node, always empty, would otherwise hold every other node to one pod. ``revision_label``
    (a Deployment's ``pod-template-hash``) counts one rollout's pods apart from the last's, so a
    surge pod is not held back by the pods it replaces."""
    match = k8s.meta.v1.LabelSelectorArgs(match_labels=selector(role))
    keys = [revision_label] if revision_label else None
    return [
        k8s.core.v1.TopologySpreadConstraintArgs(
            max_skew=1,
            topology_key=topology_key,
            when_unsatisfiable="ScheduleAnyway",
            label_selector=match,
            node_taints_policy="Honor",
            match_label_keys=keys,
        ),
        k8s.core.v1.TopologySpreadConstraintArgs(
            max_skew=1,
            topology_key="kubernetes.io/hostname",
            when_unsatisfiable="DoNotSchedule" if strict_hosts else "ScheduleAnyway",
            label_selector=match,
            node_taints_policy="Honor",
            match_label_keys=keys,
        ),
    ]


def pdb(
    name: str,
    place: Placement,
    role: str,
    opts: pulumi.ResourceOptions,
) -> k8s.policy.v1.PodDisruptionBudget:
    """One pod at a time may be evicted: drains proceed, and with >= 2 replicas the role
    never goes to zero (nor does a 3-node JetStream cluster lose quorum)."""
    return k8s.policy.v1.PodDisruptionBudget(
        name,
        metadata=meta(name, place, role),
        spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
            max_unavailable=1,
            selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector(role)),
        ),
        opts=opts,
    )


def scratch_volume(name: str = "scratch", *, memory: bool = False) -> k8s.core.v1.VolumeArgs:
    """The only writable place in a pod whose root filesystem is read-only."""
    return k8s.core.v1.VolumeArgs(
        name=name,
        empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(
            medium="Memory" if memory else None, size_limit="64Mi" if memory else "1Gi"
        ),
    )


@dataclass(frozen=True)
class SecretRef:
    """A key of a Kubernetes Secret: what a secretKeyRef or a volume item points at."""

    name: str
    key: str

    def env(self, var: str) -> k8s.core.v1.EnvVarArgs:
        return k8s.core.v1.EnvVarArgs(
            name=var,
            value_from=k8s.core.v1.EnvVarSourceArgs(
                secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=self.name, key=self.key)
            ),
        )


def ca_volume(name: str, secret_name: str) -> k8s.core.v1.VolumeArgs:
    """Only the CA certificate of a cert-manager Secret: clients never see the private key."""
    return k8s.core.v1.VolumeArgs(
        name=name,
        secret=k8s.core.v1.SecretVolumeSourceArgs(
            secret_name=secret_name,
            items=[k8s.core.v1.KeyToPathArgs(key="ca.crt", path="ca.crt")],
            default_mode=0o444,
        ),
    )


def certificate(
    name: str,
    place: Placement,
    *,
    issuer: str,
    dns_names: Sequence[str],
    opts: pulumi.ResourceOptions,
) -> k8s.apiextensions.CustomResource:
    """A cert-manager Certificate whose Secret (tls.crt, tls.key, ca.crt) a data store serves
    TLS from. Server and client usages: cluster peers authenticate each other with it."""
    return k8s.apiextensions.CustomResource(
        name,
        api_version="cert-manager.io/v1",
        kind="Certificate",
        metadata=meta(name, place),
        spec={
            "secretName": name,
            "issuerRef": {"kind": "ClusterIssuer", "name": issuer, "group": "cert-manager.io"},
            "dnsNames": list(dns_names),
            "duration": "2160h",
            "renewBefore": "360h",
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["server auth", "client auth", "digital signature", "key encipherment"],
        },
        opts=opts,
    )


# How often a data store's pod looks for a renewed certificate, and how far apart the pods of a
# set take it (pod N after N steps): a certificate the peers do not accept, or a Sentinel's
# restart, then touches one pod at a time.
CERT_POLL_SECONDS = 10
CERT_RENEWAL_STEP_SECONDS = 300
# The script that runs a data store's server (``serve_command``; each component's ConfigMap
# carries it as ``serve.sh``). A server keeps the certificate it loaded, while cert-manager
# renews the Secret's files in place (every 75 days, above): without it every TLS link fails
# once the first certificate expires.
SERVE_SCRIPT = r"""# serve.sh CERT POLL_SECONDS STEP_SECONDS RENEW SERVER [ARG...]
# Runs SERVER and hands it a renewed certificate. Once CERT changes and this pod's turn has come
# (the ordinal in POD_NAME times STEP_SECONDS), RENEW runs (sh -c, the server's pid as $1): it
# makes the server load the new files (NATS: SIGHUP; Redis: CONFIG SET of its TLS files), or ends
# it (Sentinel cannot reload TLS) and the kubelet starts the container again on them. A RENEW
# that fails is tried again at the next look. SIGTERM and SIGINT are passed on to the server; the
# exit status is the server's.
cert=$1 poll=$2 step=$3 renew=$4
shift 4
digest() { sha256sum <"$cert" 2>/dev/null; }
served=$(digest)
server=
stopping=
trap 'stopping=1; [ -z "$server" ] || kill -TERM "$server" 2>/dev/null' TERM INT
"$@" &
server=$!
[ -z "$stopping" ] || kill -TERM "$server" 2>/dev/null
(
  nap=
  trap '[ -z "$nap" ] || { kill "$nap" && wait "$nap"; } 2>/dev/null; exit 0' TERM
  trap - INT
  ordinal=${POD_NAME##*-}
  case $ordinal in '' | *[!0-9]*) ordinal=0 ;; esac
  since=
  while :; do
    sleep "$poll" &
    nap=$!
    wait "$nap"
    now=$(digest)
    if [ -z "$now" ] || [ "$now" = "$served" ]; then
      since=
      continue
    fi
    [ -n "$since" ] || since=$(date +%s)
    [ $(($(date +%s) - since)) -ge $((ordinal * step)) ] || continue
    echo "serve.sh: $cert renewed: $renew" >&2
    if sh -c "$renew" serve.sh "$server"; then
      served=$now
      since=
    fi
  done
) &
watcher=$!
while :; do
  wait "$server"
  status=$?
  kill -0 "$server" 2>/dev/null || break
done
kill "$watcher" 2>/dev/null && wait "$watcher"
exit "$status"
"""
# RENEW commands for serve.sh ($1: the server's pid).
RELOAD_BY_SIGHUP = 'kill -HUP "$1"'
RESTART = 'kill -TERM "$1"'


def serve_command(script: str, cert: str, renew: str, server: Sequence[str]) -> list[str]:
    """The container command that runs ``server`` through ``SERVE_SCRIPT`` (at ``script``),
    running ``renew`` once ``cert`` is renewed."""
    return ["sh", script, cert, str(CERT_POLL_SECONDS), str(CERT_RENEWAL_STEP_SECONDS), renew, *server]


def service_dns(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc"


def peer_dns(pod: str, headless: str, namespace: str) -> str:
    """A StatefulSet pod's stable name through its headless Service."""
    return f"{pod}.{headless}.{namespace}.svc.cluster.local"
