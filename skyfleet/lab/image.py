"""Build the agent app image from ``agent_app/Dockerfile`` with podman, on a base built here.

No registry is reachable from this kind of host, so the Dockerfile's ``PYTHON_IMAGE`` (in real
CI ``python:3.11-slim-bookworm`` pinned by digest) is made from Debian's packages: a
``debootstrap`` minbase of bookworm with python3, python3-venv and ca-certificates, a
``python`` symlink, and the host's CA bundle (pip inside a build goes through this host's
intercepting HTTPS proxy), imported with ``podman import``. Its tag carries a key of
everything it is made from, so a second build finds it and returns at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

import agent_app
from skyfleet.lab.container import ContainerError, Podman, cache_dir, problems

BASE_REPO = "localhost/skyfleet/python-base"
APP_IMAGE = "localhost/skyfleet/agent-app:lab"
APP_CONTEXT = Path(agent_app.__file__).resolve().parent
SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Bump when the steps of build_base change, so an old base is not taken for a new one.
RECIPE = 1
# What a slim image leaves out too: package caches and lists, docs, man pages, translations.
TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/info")
TRIM_ALL = ("usr/share/locale",)
LABEL_BASE_KEY = "io.skyfleet.base.key"
LABEL_BASE = "io.skyfleet.base"
DEBOOTSTRAP_TIMEOUT = 900.0
BUILD_TIMEOUT = 900.0
DEBOOTSTRAP_HINT = "apt-get install -y debootstrap (or run scripts/install.sh as root)"

Progress_ = Callable[[str], None]


class ImageError(ContainerError):
    """An image could not be built; the message names the step and points at the full log."""


def apt_mirror(suite: str = SUITE) -> str:
    """The Debian mirror apt uses here for ``suite`` (deb822 or one-line sources), else Debian's CDN."""
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        with contextlib.suppress(OSError):
            texts.append((path.suffix, path.read_text()))
    for suffix, text in texts:
        if suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    key, _, value = line.partition(":")
                    if not line.startswith("#") and value.strip():
                        fields[key.strip().lower()] = value.strip()
                if "deb" in fields.get("types", "").split() and suite in fields.get("suites", "").split():
                    return fields["uris"].split()[0].rstrip("/")
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    return words[1].rstrip("/")
    return DEFAULT_MIRROR


@dataclass(frozen=True)
class BaseRecipe:
    """Everything the base image is made from; its key names the image."""

    mirror: str = field(default_factory=apt_mirror)
    ca_bundle: Path = DEFAULT_CA_BUNDLE

    def key(self) -> str:
        try:
            ca = hashlib.sha256(self.ca_bundle.read_bytes()).hexdigest()
        except OSError as exc:
            raise ImageError(f"ca_bundle: cannot read {self.ca_bundle}: {exc.strerror}") from None
        inputs = {
            "recipe": RECIPE,
            "suite": SUITE,
            "variant": VARIANT,
            "packages": PACKAGES,
            "mirror": self.mirror,
            "ca_bundle_sha256": ca,
        }
        return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()

    def tag(self) -> str:
        return f"{BASE_REPO}:{SUITE}-{self.key()[:16]}"


@dataclass(frozen=True)
class Built:
    tag: str
    cached: bool
    seconds: float
    log: Path | None = None


def log_dir() -> Path:
    path = cache_dir() / "image" / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def image_exists(podman: Podman, tag: str) -> bool:
    return podman.run("image", "exists", tag, check=False).returncode == 0


def image_size(podman: Podman, tag: str) -> int:
    """Size in bytes of the image's layers, as `podman images` reports it."""
    return int(podman.run("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def _tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join("    " + line for line in text[-lines:])


def _stream(
    argv: list[str],
    *,
    log: IO[str],
    on_line: Progress_,
    timeout: float,
    env: dict[str, str] | None = None,
    stdin: IO[bytes] | None = None,
) -> int:
    """Run ``argv``, copying its output to ``log`` and each line to ``on_line``; kill it at ``timeout``."""
    proc = subprocess.Popen(
        argv,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        env=env,
    )
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        proc.kill()

    watchdog = threading.Timer(timeout, expire)
    watchdog.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            on_line(line.rstrip())
        rc = proc.wait()
    finally:
        watchdog.cancel()
    log.flush()
    if timed_out.is_set():
        raise ImageError(
            f"{Path(argv[0]).name} {argv[1] if len(argv) > 1 else ''}: killed after {timeout:.0f} s"
        )
    return rc


def _mounts_under(root: Path) -> list[str]:
    inside = str(root.resolve()).rstrip("/") + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return sorted((m for m in mounts if m.startswith(inside)), key=len, reverse=True)


def _remove_rootfs(root: Path) -> None:
    """Delete a (half) debootstrapped tree, unmounting first what a failed run left mounted."""
    for mount in _mounts_under(root):
        subprocess.run(["umount", "--lazy", mount], check=False, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def _customise(rootfs: Path, ca_bundle: Path) -> None:
    """Make the debootstrapped tree the base the Dockerfile expects (``python``, pip that trusts
    this host's proxy), and as small as a slim image."""
    certs = rootfs / "etc/ssl/certs"
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca_bundle, certs / "ca-certificates.crt")
    # pip ignores the system store (it carries certifi's); tell it which bundle to trust.
    (rootfs / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    python = rootfs / "usr/bin/python"
    python.unlink(missing_ok=True)
    python.symlink_to("python3")
    for sub in TRIM:
        target = rootfs / sub
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    if child.name != "partial":
                        shutil.rmtree(child)
                else:
                    child.unlink()
    for sub in TRIM_ALL:
        shutil.rmtree(rootfs / sub, ignore_errors=True)
        (rootfs / sub).mkdir(parents=True, exist_ok=True)


def build_base(
    podman: Podman,
    recipe: BaseRecipe | None = None,
    *,
    rebuild: bool = False,
    progress: Progress_ = lambda _: None,
) -> Built:
    """The base image for ``recipe``: found by its key, else debootstrapped and imported."""
    recipe = recipe or BaseRecipe()
    tag = recipe.tag()
    started = time.monotonic()
    if not rebuild and image_exists(podman, tag):
        return Built(tag=tag, cached=True, seconds=time.monotonic() - started)
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None:
        raise ImageError(f"debootstrap is not installed (it builds the base image): {DEBOOTSTRAP_HINT}")
    log_path = log_dir() / f"base-{recipe.key()[:16]}.log"
    work = Path(tempfile.mkdtemp(prefix="skyfleet-base-", dir="/var/tmp"))
    rootfs = work / "rootfs"
    try:
        with log_path.open("w") as log:
            progress(f"debootstrap {SUITE} ({VARIANT}, {', '.join(PACKAGES)}) from {recipe.mirror}")
            argv = [
                debootstrap,
                f"--variant={VARIANT}",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(rootfs),
                recipe.mirror,
            ]
            rc = _stream(
                argv,
                log=log,
                on_line=lambda line: progress(f"debootstrap: {line[3:]}") if line.startswith("I: ") else None,
                timeout=DEBOOTSTRAP_TIMEOUT,
            )
            if rc != 0:
                raise ImageError(
                    f"base image: debootstrap failed (exit {rc}) fetching from {recipe.mirror}; "
                    f"the log ({log_path}) ends with:\n{_tail(log_path)}"
                )
            progress("base image: python symlink, CA bundle, trimming")
            _customise(rootfs, recipe.ca_bundle)
            progress(f"podman import {tag}")
            changes = [
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8",
                'CMD ["python3"]',
                f"LABEL {LABEL_BASE_KEY}={recipe.key()}",
            ]
            tar = subprocess.Popen(
                [
                    "tar",
                    "--numeric-owner",
                    "--xattrs",
                    "--exclude=./dev/*",
                    "-C",
                    str(rootfs),
                    "-cf",
                    "-",
                    ".",
                ],
                stdout=subprocess.PIPE,
                stderr=log,
            )
            try:
                rc = _stream(
                    podman.argv("import", *(a for c in changes for a in ("--change", c)), "-", tag),
                    log=log,
                    on_line=lambda _: None,
                    timeout=DEBOOTSTRAP_TIMEOUT,
                    env=podman.env(),
                    stdin=tar.stdout,
                )
            finally:
                assert tar.stdout is not None
                tar.stdout.close()
                tar_rc = tar.wait()
            if rc != 0 or tar_rc != 0:
                with contextlib.suppress(ContainerError):
                    podman.run("rmi", "--force", tag, check=False)
                raise ImageError(
                    f"base image: podman import failed (exit {rc}, tar {tar_rc}); "
                    f"the log ({log_path}) ends with:\n{_tail(log_path)}"
                )
    finally:
        _remove_rootfs(work)
    return Built(tag=tag, cached=False, seconds=time.monotonic() - started, log=log_path)


_STEP = re.compile(r"^(\[\d+/\d+\] )?STEP (\d+)/(\d+): (.*)$")


def build_app(
    podman: Podman,
    *,
    base: str,
    tag: str = APP_IMAGE,
    context: Path = APP_CONTEXT,
    progress: Progress_ = lambda _: None,
) -> Built:
    """``podman build`` of ``context``/Dockerfile with ``PYTHON_IMAGE=base``; fails as the build does."""
    dockerfile = context / "Dockerfile"
    if not dockerfile.is_file():
        raise ImageError(f"context: no Dockerfile in {context}; pass the agent_app folder of a checkout")
    started = time.monotonic()
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", tag)
    log_path = log_dir() / f"build-{safe}.log"

    def on_line(line: str) -> None:
        step = _STEP.match(line)
        if step:
            progress(f"{step.group(1) or ''}step {step.group(2)}/{step.group(3)}: {step.group(4)[:70]}")

    build_args = [
        "build",
        "--format", "docker",  # keeps HEALTHCHECK, as `docker build` does
        "--pull=never",
        "--build-arg", f"PYTHON_IMAGE={base}",
        "--label", f"{LABEL_BASE}={base}",
        "--file", str(dockerfile),
        "--tag", tag,
        str(context),
    ]  # fmt: skip
    with log_path.open("w") as log:
        rc = _stream(
            podman.argv(*build_args),
            log=log,
            on_line=on_line,
            timeout=BUILD_TIMEOUT,
            env=podman.env(),
        )
    if rc != 0:
        raise ImageError(
            f"{dockerfile}: podman build failed (exit {rc}); "
            f"the log ({log_path}) ends with:\n{_tail(log_path)}"
        )
    return Built(tag=tag, cached=False, seconds=time.monotonic() - started, log=log_path)


# --- `skyfleet lab image ...` ----------------------------------------------------------------

app = typer.Typer(
    name="image", help="The agent app image the lab runs: build it with podman.", no_args_is_help=True
)
err = Console(stderr=True)


@contextlib.contextmanager
def _spinner(console: Console, first: str) -> Iterator[Progress_]:
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = progress.add_task(first, total=None)
    with progress:
        yield lambda text: progress.update(task, description=text)


@app.command()
def build(
    tag: Annotated[str, typer.Option(help="the app image's tag")] = APP_IMAGE,
    context: Annotated[Path, typer.Option(help="build context holding the Dockerfile")] = APP_CONTEXT,
    mirror: Annotated[str | None, typer.Option(help="Debian mirror for the base (default: apt's)")] = None,
    ca_bundle: Annotated[
        Path, typer.Option(help="CA bundle the base trusts (pip goes through this host's proxy)")
    ] = DEFAULT_CA_BUNDLE,
    rebuild_base: Annotated[
        bool, typer.Option(help="rebuild the base even if one with its key exists")
    ] = False,
) -> None:
    """Build the base (cached by content) and the app image from the Dockerfile."""
    missing = problems()
    if shutil.which("debootstrap") is None and shutil.which("debootstrap", path="/usr/sbin:/sbin") is None:
        missing.append(f"debootstrap is not installed: {DEBOOTSTRAP_HINT}")
    if missing:
        err.print("[bold red]error:[/] cannot build the image:\n  " + "\n  ".join(missing), highlight=False)
        raise typer.Exit(code=2)
    try:
        podman = Podman()
        recipe = BaseRecipe(ca_bundle=ca_bundle, **({"mirror": mirror} if mirror else {}))
        with _spinner(err, "base image") as step:
            base = build_base(podman, recipe, rebuild=rebuild_base, progress=step)
        how = "found (cached)" if base.cached else f"built in {base.seconds:.0f} s"
        err.print(f"base image {base.tag}: {how}", highlight=False)
        with _spinner(err, "podman build") as step:
            image = build_app(podman, base=base.tag, tag=tag, context=context, progress=step)
        size = image_size(podman, image.tag) / 1e6
        err.print(f"app image  {image.tag}: built in {image.seconds:.0f} s, {size:.0f} MB", highlight=False)
    except ContainerError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    print(image.tag)
