"""Turn a planned pod into lab processes: one sandboxed process per container, given exactly
what its platform would give it.

For each replica of a ``PodSpec`` the lab writes, under the pod's folder in the state dir,
every volume the plan defines (Secret and ConfigMap files with their modes and the pod's
group, Secret Manager items, empty dirs, per-replica data), and one sandbox spec per container
(``skyfleet.lab.sandbox``): its mounts at the plan's paths, the plan's user, a read-only root
where the plan says so, and its environment: the image's own (from its Dockerfile), then the
plan's values verbatim, secrets resolved to the lab's values, and the platform's (the pod's
name for the downward API, the credentials and endpoints a platform injects). Only endpoint
addresses listed in the lab's rewrite table differ.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from skyfleet.lab.errors import LabError
from skyfleet.lab.model import Container, PlanValues, PodSpec, Volume, plain
from skyfleet.lab.pki import CertificateAuthority
from skyfleet.lab.values import LabValues

SANDBOX = "skyfleet.lab.sandbox"


def project_root() -> Path:
    import skyfleet

    return Path(skyfleet.__file__).resolve().parent.parent


@dataclass(frozen=True)
class Image:
    """What an image brings that a plan does not say: its environment, its workdir, its
    entrypoint, and which of its programs the lab can run from this machine."""

    env: Mapping[str, str]
    workdir: str = "/"
    entrypoint: tuple[str, ...] = ()
    # Directories of the image's interpreter its user must be able to enter (this view only).
    open_dirs: tuple[str, ...] = ()
    # This machine's directories that stand in for the image's own files (its venv, its code,
    # its interpreter): a plan's volume mounted over one of them (an emptyDir at /tmp while the
    # project lives under /tmp) would hide them, so the sandbox shows them again on top.
    own_dirs: tuple[str, ...] = ()
    runnable: bool = True
    why_not: str = ""


def app_image(dockerfile: Path | None = None) -> Image:
    """The app image's ENV, WORKDIR and CMD, read from its Dockerfile's last stage, with the
    image's paths (/opt/venv, /app) at this machine's equivalents (the lab's venv, the project)."""
    dockerfile = dockerfile or project_root() / "agent_app" / "Dockerfile"
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    stage = text.rsplit("\nFROM ", 1)[-1]
    venv = Path(sys.prefix)
    root = project_root()
    paths = {"/opt/venv": str(venv), "/app": str(root)}

    def local(value: str) -> str:
        for image_path, here in paths.items():
            value = value.replace(image_path, here)
        return value

    env: dict[str, str] = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    workdir = "/"
    for line in stage.splitlines():
        line = line.strip()
        if line.startswith("ENV "):
            for name, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', line[4:]):
                value = value.strip('"').replace("$PATH", env.get("PATH", ""))
                env[name] = local(value)
        elif line.startswith("WORKDIR "):
            workdir = local(line.split(None, 1)[1])
    # The interpreter of the lab's venv may live under a home dir its user cannot enter.
    real = Path(os.path.realpath(venv / "bin" / "python"))
    opened = tuple(str(p) for p in real.parents if str(p) != "/" and not p.stat().st_mode & 0o001)
    own = (str(venv), str(root), str(real.parent.parent))
    return Image(env=env, workdir=workdir, open_dirs=opened, own_dirs=own)


def server_image(kind: str) -> Image:
    """A third-party server image, run from this machine's own build of that server."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return Image(
        env={"PATH": path, "HOME": "/tmp"},
        workdir="/data" if kind == "redis" else "/",
        own_dirs=(sys.prefix,),
    )


NOT_RUNNABLE = {
    # Images whose programs this machine does not have; the lab says what it does instead.
    "nats-box": "no `nats` CLI here: the lab applies the Job's stream files through the JetStream API",
    "prometheus-nats-exporter": "no exporter binary here: metrics sidecars are not run",
}


def image_for(image: str, app: Image) -> Image:
    """How the lab runs ``image`` (the app's image, or a server image it knows)."""
    repo = image.split("@", 1)[0].rsplit(":", 1)[0].rsplit("/", 1)[-1]
    if repo in NOT_RUNNABLE:
        return Image(env={}, runnable=False, why_not=NOT_RUNNABLE[repo])
    if repo in ("redis", "valkey"):
        return server_image("redis")
    if repo == "nats":
        return server_image("nats")
    return app


@dataclass
class Pod:
    """One replica of a planned pod, placed in the lab."""

    site: str
    spec: PodSpec
    index: int
    name: str  # the replica's name (StatefulSet: <name>-<i>; otherwise <name>-<i> too)
    netns: str
    address: str
    folder: Path
    hostname: str
    dns_files: Mapping[str, Path] = field(default_factory=dict)  # /etc/resolv.conf, /etc/hosts
    ca_bundle: Path | None = None
    platform_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.site}/{self.name}"


@dataclass
class Issuers:
    """The CAs behind the issuer names a plan uses (cert-manager ClusterIssuers), and where the
    certificates they issued are kept (one per Certificate, shared by the pods that mount it)."""

    cas: dict[str, CertificateAuthority]
    cache: Path

    def ca(self, name: str) -> CertificateAuthority:
        if name not in self.cas:
            raise LabError(
                f"cert-manager ClusterIssuer {name!r}: the lab has no such issuer "
                f"(it knows {sorted(self.cas)})"
            )
        return self.cas[name]


@dataclass(frozen=True)
class ContainerRun:
    """A container ready to start: its sandbox spec file, and what to call it."""

    pod: Pod
    container: Container
    spec_file: Path
    argv: list[str]
    log_file: Path


def _write(path: Path, data: bytes | str, *, mode: int, gid: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    if gid is not None:
        os.chown(path, 0, gid)


def volume_path(pod: Pod, volume: Volume, data_dir: Path) -> Path:
    """Where ``materialize_volume`` keeps a volume of ``pod`` on this machine."""
    if volume.kind == "data":
        return data_dir / pod.site / f"{volume.name}-{pod.name}"
    return pod.folder / "volumes" / volume.name


def materialize_volume(
    pod: Pod, volume: Volume, values: LabValues, plan_values: PlanValues, issuers: Issuers, data_dir: Path
) -> Path:
    """Write one volume of a pod as the platform would present it; return its host folder."""
    gid = pod.spec.fs_group
    target = volume_path(pod, volume, data_dir)
    if volume.kind == "data":
        # Per replica and kept across restarts of the pod (a PersistentVolumeClaim).
        target.mkdir(parents=True, exist_ok=True)
        if gid is not None:
            os.chown(target, 0, gid)
            os.chmod(target, 0o2770)
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    if volume.kind == "empty":
        if pod.spec.platform == "ecs":
            # Fargate creates a task's bind mount owned by root, mode 0755.
            os.chmod(target, 0o755)
        else:
            os.chmod(target, 0o777)  # a Kubernetes emptyDir is world-writable
        return target
    files: dict[str, bytes | str] = {}
    if volume.kind == "configmap":
        data = plan_values.config_map(volume.ref or "")
        if data is None:
            raise LabError(f"{pod.key}: volume {volume.name} names ConfigMap {volume.ref!r}, not in the plan")
        files = dict(data)
    elif volume.store == "kubernetes":
        files = _k8s_secret_files(pod, volume, values, plan_values, issuers)
    elif volume.store == "secretmanager":
        from skyfleet.lab.model import SecretSource

        for item in volume.items:
            value = plan_values.secret_value(SecretSource("secretmanager", volume.ref or "", item.key))
            if value is None:
                raise LabError(
                    f"{pod.key}: volume {volume.name}: secret {volume.ref!r} has no version in the plan"
                )
            files[item.path] = values.secret(plain(value))
    items = {i.key: i for i in volume.items}
    for key, content in files.items():
        if volume.store == "secretmanager":
            path, mode = key, next((i.mode for i in volume.items if i.path == key and i.mode), None)
        elif items:
            if key not in items:
                continue
            path, mode = items[key].path, items[key].mode
        else:
            path, mode = key, None
        _write(target / path, content, mode=mode or volume.default_mode or 0o644, gid=gid)
    missing = [k for k in items if volume.store != "secretmanager" and k not in files]
    if missing:
        raise LabError(f"{pod.key}: volume {volume.name}: {volume.ref!r} has no key(s) {missing}")
    return target


def _k8s_secret_files(
    pod: Pod, volume: Volume, values: LabValues, plan_values: PlanValues, issuers: Issuers
) -> dict[str, bytes | str]:
    name = volume.ref or ""
    data = plan_values.k8s_secret(name)
    if data is not None:
        return {k: values.secret(plain(v)) for k, v in data.items()}
    cert = plan_values.certificate(name)
    if cert is None:
        raise LabError(
            f"{pod.key}: volume {volume.name} names Secret {name!r}; the plan has no Secret and no "
            "cert-manager Certificate that fills it"
        )
    issued = _issued(issuers.cache, name, cert, issuers)
    return {"tls.crt": issued[0], "tls.key": issued[1], "ca.crt": issued[2]}


def _issued(
    cache: Path, name: str, cert: Mapping[str, object], issuers: Issuers
) -> tuple[bytes, bytes, bytes]:
    """cert-manager's work: one certificate per Certificate, shared by every pod that mounts it."""
    folder = cache / name
    if (folder / "tls.crt").exists():
        return tuple((folder / f).read_bytes() for f in ("tls.crt", "tls.key", "ca.crt"))  # type: ignore[return-value]
    issuer = str((cert.get("issuerRef") or {}).get("name", ""))  # type: ignore[union-attr]
    names = [str(n) for n in cert.get("dnsNames") or []]  # type: ignore[union-attr]
    usages = [str(u) for u in cert.get("usages") or []]  # type: ignore[union-attr]
    issued = issuers.ca(issuer).issue(names, client="client auth" in usages)
    folder.mkdir(parents=True, exist_ok=True)
    for f, data in (("tls.crt", issued.cert_pem), ("tls.key", issued.key_pem), ("ca.crt", issued.ca_pem)):
        (folder / f).write_bytes(data)
        os.chmod(folder / f, 0o600)
    return issued.cert_pem, issued.key_pem, issued.ca_pem


def container_env(
    pod: Pod, container: Container, image: Image, values: LabValues, plan_values: PlanValues
) -> dict[str, str]:
    env: dict[str, str] = dict(image.env)
    for var in container.env:
        if var.value is not None:
            env[var.name] = values.rewrite_env(pod.site, var.value)
        elif var.secret is not None:
            value = plan_values.secret_value(var.secret)
            if value is None:
                raise LabError(
                    f"{pod.key}: container {container.name}: {var.name} comes from {var.secret.store} "
                    f"{var.secret.ref!r}{f' key {var.secret.key!r}' if var.secret.key else ''}, which the "
                    "plan does not hold"
                )
            env[var.name] = values.secret(plain(value))
        elif var.field_path == "metadata.name":
            env[var.name] = pod.name
        elif var.field_path == "status.podIP":
            env[var.name] = pod.address
        elif var.field_path == "metadata.namespace":
            env[var.name] = pod.spec.namespace or "default"
    env.update(pod.platform_env)
    return env


def prepare(
    pod: Pod,
    *,
    values: LabValues,
    plan_values: PlanValues,
    issuers: Issuers,
    app: Image,
    data_dir: Path,
    marker: tuple[str, str],
) -> tuple[list[ContainerRun], list[str]]:
    """Volumes and sandbox specs for every container of ``pod``; returns the runs (init
    containers first) and what the lab could not run, each with the reason."""
    pod.folder.mkdir(parents=True, exist_ok=True)
    os.chmod(pod.folder, 0o700)
    volume_dirs = {
        v.name: materialize_volume(pod, v, values, plan_values, issuers, data_dir) for v in pod.spec.volumes
    }
    runs, skipped = [], []
    for container in pod.spec.containers:
        image = image_for(container.image, app)
        if not image.runnable:
            skipped.append(f"{pod.key}/{container.name} ({container.image}): {image.why_not}")
            continue
        argv = list(container.command) or list(image.entrypoint)
        if not argv:
            skipped.append(f"{pod.key}/{container.name}: no command and no known entrypoint")
            continue
        mounts = []
        for m in container.mounts:
            if m.volume not in volume_dirs:
                raise LabError(
                    f"{pod.key}: container {container.name} mounts volume {m.volume!r}, not defined"
                )
            mounts.append(
                {
                    "kind": "bind",
                    "source": str(volume_dirs[m.volume]),
                    "target": m.path,
                    "read_only": m.read_only,
                }
            )
        for path, source in pod.dns_files.items():
            mounts.append({"kind": "bind", "source": str(source), "target": path, "read_only": True})
        if pod.ca_bundle:
            mounts += [
                {"kind": "bind", "source": str(pod.ca_bundle), "target": store, "read_only": True}
                for store in trust_stores()
            ]
        env = container_env(pod, container, image, values, plan_values)
        env[marker[0]] = marker[1]
        groups = [pod.spec.fs_group] if pod.spec.fs_group is not None else []
        spec = {
            "name": f"{pod.key}/{container.name}",
            "root": str(pod.folder / "rootfs" / container.name),
            "mounts": mounts,
            "chmod": [{"path": d, "mode": 0o755} for d in image.open_dirs],
            "own_dirs": list(image.own_dirs),
            "read_only_root": container.read_only_root and not pod.spec.writable_root,
            "hostname": pod.hostname,
            "user": container.user,
            "group": container.group if container.group is not None else container.user,
            "groups": groups,
            "cwd": image.workdir,
            "env": env,
            "argv": argv,
        }
        spec_file = pod.folder / f"{container.name}.json"
        spec_file.write_text(json.dumps(spec, indent=1), encoding="utf-8")
        os.chmod(spec_file, 0o600)  # it holds the container's secrets
        runs.append(
            ContainerRun(
                pod=pod,
                container=container,
                spec_file=spec_file,
                argv=[
                    "unshare",
                    "-m",
                    "-u",
                    "--propagation",
                    "private",
                    sys.executable,
                    "-m",
                    SANDBOX,
                    str(spec_file),
                ],
                # <state>/logs, which `lab down` keeps for the post-mortem (pods/ it deletes).
                log_file=pod.folder.parents[2] / "logs" / f"{pod.site}.{pod.name}.{container.name}.log",
            )
        )
    return runs, skipped


def trust_stores() -> list[str]:
    """The CA bundles an image's clients read: the system's, and certifi's (botocore, httpx)."""
    import certifi

    return ["/etc/ssl/certs/ca-certificates.crt", certifi.where()]


def resolv_conf(nameserver: str, search: Sequence[str] = ()) -> str:
    lines = [f"nameserver {nameserver}", "options timeout:1 attempts:3 ndots:1"]
    if search:
        lines.insert(1, "search " + " ".join(search))
    return "\n".join(lines) + "\n"
