"""A plan's container in the app's image: the model's ``Container`` as a podman ``ContainerSpec``.

The twin (``skyfleet.lab.twin``) places every replica of a plan's pods (``pods.Pod``: its site,
network namespace, address and hostname, the site's hosts file, the trust store, the
platform's variables) and writes its volumes as the platform would (Secret files with their
modes and the pod's group, an ECS bind mount owned by root, a world-writable emptyDir). This
module says how podman runs one container of such a pod, everything taken from the plan:

- the command, the user and group, the pod's fsGroup as a supplementary group;
- a read-only root where the plan says so (Cloud Run's root is writable);
- each of the plan's mounts, bound at the plan's path from the pod's volume (Secret and
  ConfigMap volumes read-only, as the kubelet mounts them);
- every plain variable verbatim, through the lab's rewrite table only (endpoints the lab
  cannot serve as planned, ``skyfleet.lab.values``); secrets resolved to the lab's values and
  delivered as the platform delivers them (a variable for an ECS secret or a ``secretKeyRef``,
  a file for a secret volume); the downward API; the platform's own variables (a region,
  credentials, an emulator's address);
- the site's hosts file as ``/etc/hosts`` (managed endpoints' names resolve to the lab's
  servers) and the lab's trust store over the image's own CA bundles;
- init containers (and ECS containers others wait for with condition SUCCESS) run to
  completion first, and must exit 0.

What differs from the plan is said by ``differences``: the image (the plan names a registry
digest; the lab runs the image built here from the same Dockerfile), the rewritten endpoints,
and the variables the platform adds.
"""

from __future__ import annotations

import json
import math
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from skyfleet.lab import container, pods, twin
from skyfleet.lab.container import Bind, ContainerSpec, Podman, Started
from skyfleet.lab.errors import LabError
from skyfleet.lab.model import Container, PlanValues, Probe, resource_label
from skyfleet.lab.probes import run_probe
from skyfleet.lab.values import LabValues

INIT_TIMEOUT = 60.0
# What the image's clients read as their CA bundle: OpenSSL's default file (redis-py, httpx,
# the ssl module) and certifi's (botocore, aiobotocore). Asked of the image, not assumed.
_TRUST_PROBE = (
    "import json, os, ssl\n"
    "paths = [os.path.realpath(ssl.get_default_verify_paths().openssl_cafile)]\n"
    "try:\n"
    "    import certifi\n"
    "    paths.append(os.path.realpath(certifi.where()))\n"
    "except ImportError:\n"
    "    pass\n"
    "print(json.dumps(sorted(set(paths))))\n"
)
_trust_cache: dict[str, tuple[str, ...]] = {}


def image_trust_stores(podman: Podman, image: str) -> tuple[str, ...]:
    """The CA bundle files the image's clients trust (asked of the image once, then cached)."""
    if image not in _trust_cache:
        out = podman.run(
            "run", "--rm", "--pull=never", "--network", "none", "--read-only", "--cap-drop", "all",
            "--no-healthcheck", image, "python", "-c", _TRUST_PROBE,
        )  # fmt: skip
        _trust_cache[image] = tuple(json.loads(out.stdout.strip().splitlines()[-1]))
    return _trust_cache[image]


@dataclass(frozen=True)
class Run:
    """One container of a placed pod, ready for ``container.start``."""

    pod: pods.Pod
    container: Container
    spec: ContainerSpec
    secrets: Mapping[str, str]  # the values of ``spec.secret_env``
    log_file: Path

    @property
    def origin(self) -> str:
        """Where it comes from in the plan: ``<site>: <type> '<name>', container '<c>'``."""
        return f"{self.pod.site}: {resource_label(self.pod.spec.resource)}, container {self.container.name!r}"

    @property
    def env(self) -> dict[str, str]:
        """Everything the container's process gets from the plan and its platform."""
        return {**self.spec.env, **self.secrets}


def is_app_image(image: str) -> bool:
    """Whether ``image`` is the app's (the lab has no other image; servers run as processes)."""
    marker = pods.Image(env={})
    return pods.image_for(image, marker) is marker


@dataclass(frozen=True)
class SiteContext:
    """What every container of one site is run with: the image, the lab's marker and id, the
    lab's values (secrets, rewrites), the site's plan values, and where volumes and logs are."""

    image: str
    lab: str
    lab_id: str
    values: LabValues
    plan_values: PlanValues
    data_dir: Path
    log_dir: Path
    trust_stores: tuple[str, ...]

    @classmethod
    def of(cls, built: twin.Built, site: str, *, podman: Podman, image: str) -> SiteContext:
        """The context of ``site`` in a built twin, running ``image``."""
        twin_site = next((s for s in built.sites if s.site == site), None)
        if twin_site is None:
            raise LabError(f"no site {site!r} in the lab (it has {[s.site for s in built.sites]})")
        state_dir = Path(built.state.state_dir)
        return cls(
            image=image,
            lab=built.state.state_dir,
            lab_id=built.state.lab_id,
            values=built.values,
            plan_values=twin_site.plan_values,
            data_dir=state_dir / "data",
            log_dir=state_dir / "logs",
            trust_stores=image_trust_stores(podman, image),
        )


def container_spec(pod: pods.Pod, c: Container, ctx: SiteContext) -> Run:
    """``c``, a container of the placed ``pod``, as podman runs it from ``ctx.image``."""
    if not is_app_image(c.image):
        raise LabError(
            f"{pod.key}: container {c.name} runs {c.image}, not the app's image: the lab runs it as a "
            "process (skyfleet.lab.pods), not in a container"
        )
    # The platform's view of the environment (plain values through the rewrite table, secrets
    # resolved, the downward API, the platform's own variables); the image's ENV stays the image's.
    env = pods.container_env(pod, c, pods.Image(env={}), ctx.values, ctx.plan_values)
    plain_names = {e.name for e in c.env if e.value is not None} - set(pod.platform_env)
    plain = {k: v for k, v in env.items() if k in plain_names}
    injected = {k: v for k, v in env.items() if k not in plain_names}
    mounts = []
    for m in c.mounts:
        try:
            volume = pod.spec.volume(m.volume)
        except StopIteration:
            raise LabError(f"{pod.key}: container {c.name} mounts volume {m.volume!r}, not defined") from None
        mounts.append(
            Bind(
                source=pods.volume_path(pod, volume, ctx.data_dir),
                target=m.path,
                # The kubelet mounts Secret and ConfigMap volumes read-only whatever the mount says.
                read_only=m.read_only or volume.kind in ("secret", "configmap"),
            )
        )
    mounts += [Bind(source=source, target=path) for path, source in pod.dns_files.items()]
    if pod.ca_bundle is not None:
        mounts += [Bind(source=pod.ca_bundle, target=store) for store in ctx.trust_stores]
    try:
        spec = ContainerSpec(
            name=container.container_name(ctx.lab_id, f"{pod.site}-{pod.name}-{c.name}"),
            lab=ctx.lab,
            process=f"{pod.key}/{c.name}",
            image=ctx.image,
            command=c.command,
            env=plain,
            secret_env=tuple(sorted(injected)),
            mounts=tuple(mounts),
            uid=c.user,
            gid=c.group if c.user is not None else None,
            groups=(pod.spec.fs_group,) if pod.spec.fs_group is not None else (),
            read_only_root=c.read_only_root and not pod.spec.writable_root,
            init=c.init,
            hostname=pod.hostname,
            netns=pod.netns,
            stop_grace_seconds=math.ceil(pod.spec.grace_seconds),
        )
    except ValueError as exc:
        raise LabError(f"{pod.key}: container {c.name}: cannot run as planned: {exc}") from None
    return Run(
        pod=pod,
        container=c,
        spec=spec,
        secrets=injected,
        log_file=ctx.log_dir / f"{pod.site}.{pod.name}.{c.name}.log",
    )


def pod_runs(pod: pods.Pod, ctx: SiteContext) -> list[Run]:
    """Every container of ``pod``, init containers first."""
    return [container_spec(pod, c, ctx) for c in (*pod.spec.init_containers, *pod.spec.main_containers)]


def start_pod(podman: Podman, runs: list[Run], *, init_timeout: float = INIT_TIMEOUT) -> list[Started]:
    """Run the pod's init containers to completion (each must exit 0), then start the others.

    An init container that fails stops the pod there, as the platform does: nothing else
    starts, and the error names the plan's resource, the container and its log's end.
    """
    started = []
    for run in runs:
        if not run.spec.init:
            continue
        container.start(podman, run.spec, log_file=run.log_file, secret_values=run.secrets)
        try:
            code = container.wait_exit(podman, run.spec.name, init_timeout)
        finally:
            container.remove(podman, run.spec.name)
        if code != 0:
            raise LabError(
                f"{run.origin}: the init container exited with code {code}; its log ends with:\n"
                f"{container.log_tail(run.log_file)}"
            )
    for run in [r for r in runs if not r.spec.init]:
        started.append(container.start(podman, run.spec, log_file=run.log_file, secret_values=run.secrets))
    return started


def stop_pod(podman: Podman, runs: list[Run]) -> dict[str, int | None]:
    """Stop every container of the pod (SIGTERM, SIGKILL after the plan's grace); exit codes."""
    return {run.spec.name: container.stop(podman, run.spec.name) for run in runs if not run.spec.init}


def probe_passes(podman: Podman, run: Run, probe: Probe) -> bool:
    """``probe`` as the platform runs it: HTTP and TCP against the pod's address, exec inside
    the container (as its user, with its environment: ``podman exec``)."""

    def in_container(command: tuple[str, ...], timeout: float) -> bool:
        try:
            return (
                subprocess.run(
                    podman.argv("exec", run.spec.name, *command),
                    env=podman.env(),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=timeout + 5,
                    check=False,
                ).returncode
                == 0
            )
        except subprocess.TimeoutExpired:
            return False

    return run_probe(probe, run.pod.address, in_container)


def ready(podman: Podman, run: Run) -> bool:
    """The container's readiness probe passes (else its startup, else its liveness probe; an
    ECS container has only its health check); without a probe, it runs."""
    probe = run.container.readiness or run.container.startup or run.container.liveness
    if probe is None:
        state = container.inspect(podman, run.spec.name)
        return state is not None and state.running
    return probe_passes(podman, run, probe)


def differences(run: Run, values: LabValues) -> list[str]:
    """What the container gets that its plan does not say, one line each: the image, every
    endpoint of the lab's rewrite table it meets (in a plan value or in a variable its platform
    adds, such as an emulator's address), and the variables its platform adds."""
    lines = [f"image: the plan's {run.container.image} runs as {run.spec.image} (built here)"]
    plain = [(v.name, v.value) for v in run.container.env if v.value is not None]
    for r in values.rewrites:
        if r.site != run.pod.site:
            continue
        lines += [f"{name}: {r.what} {r.plan} -> {r.lab}" for name, value in plain if r.plan in value]
        lines += [
            f"{name} (the platform's): {r.what} {r.plan} -> {r.lab}"
            for name, value in sorted(run.pod.platform_env.items())
            if value == r.lab
        ]
    if run.pod.platform_env:
        lines.append(f"platform variables: {', '.join(sorted(run.pod.platform_env))}")
    return lines


def describe_failure(podman: Podman, run: Run) -> str:
    """Why a container is not running: its exit code and the end of its log."""
    state = container.inspect(podman, run.spec.name)
    status = "gone" if state is None else f"{state.status}, exit code {state.exit_code}"
    return f"{run.origin} ({run.spec.name}): {status}; its log ends with:\n{container.log_tail(run.log_file)}"
