"""Run one container of a pod the way its platform would, without an image: as root, inside a
private mount (and UTS) namespace made by ``unshare``, then as the plan's user.

The container's root filesystem is the host's, seen through an overlay (so mount points can be
made without touching the host), with the plan's mounts on top: secret and config files at
their paths, writable dirs, persistent data. With ``read_only_root`` the root is remounted
read-only, as ``readOnlyRootFilesystem`` does. Then chroot, drop to the plan's uid/gid, and
exec the plan's command with exactly the environment given. Nothing is left behind: the
namespace and its mounts disappear with the process.

Usage (the lab builds the spec): ``unshare -m -u --propagation private PYTHON -m
skyfleet.lab.sandbox SPEC.json``. The pid stays the same from ``unshare`` to the command.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    if (
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            flags,
            data.encode() if data else None,
        )
        != 0
    ):
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def inside(root: Path, path: str) -> Path:
    """``path`` as seen from ``root``: symlinks (absolute ones too) resolve inside ``root``."""
    current = root
    parts = [p for p in Path(path).parts if p != "/"]
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent if current != root else root
            continue
        candidate = current / part
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise OSError(f"too many symlinks under {root} for {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = root
            parts = [p for p in Path(target).parts if p != "/"] + parts
            continue
        current = candidate
    return current


def _mount_point(root: Path, path: str, *, is_file: bool) -> Path:
    """Make the mount point as a container runtime does, in the overlay's layer. This machine's
    own directories on the way (a package's 0750 /etc/redis, say) are not the image's: they are
    opened for everyone to pass, in this view only."""
    target = inside(root, path)
    if is_file:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.touch()
    else:
        target.mkdir(parents=True, exist_ok=True)
    for parent in target.parents:
        if parent == root or root not in parent.parents:
            break
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            os.chmod(parent, (mode & 0o7777) | 0o005)
    return target


def enter(spec: dict[str, Any]) -> None:
    root = Path(spec["root"])
    root.mkdir(parents=True, exist_ok=True)
    scratch = root.with_name(root.name + ".layer")
    scratch.mkdir(parents=True, exist_ok=True)
    # The overlay's writable layer lives in memory: it goes with the namespace.
    _mount("tmpfs", str(scratch), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700")
    (scratch / "upper").mkdir()
    (scratch / "work").mkdir()
    _mount(
        "overlay",
        str(root),
        "overlay",
        0,
        f"lowerdir=/,upperdir={scratch / 'upper'},workdir={scratch / 'work'}",
    )
    _mount("proc", str(root / "proc"), "proc", MS_NOSUID | MS_NODEV)
    _mount("/dev", str(root / "dev"), None, MS_BIND | MS_REC)
    _mount("/sys", str(root / "sys"), None, MS_BIND | MS_REC)
    for m in spec.get("mounts", []):
        if m["kind"] == "tmpfs":
            target = _mount_point(root, m["target"], is_file=False)
            _mount("tmpfs", str(target), "tmpfs", MS_NOSUID | MS_NODEV, f"mode={m.get('mode', '1777')}")
        else:
            source = m["source"]
            target = _mount_point(root, m["target"], is_file=Path(source).is_file())
            _mount(source, str(target), None, MS_BIND)
            if m.get("read_only"):
                _mount(source, str(target), None, MS_BIND | MS_REMOUNT | MS_RDONLY)
            if Path(source).is_file():
                continue
        # The image's own files stay visible under a volume mounted over them (see pods.Image),
        # before the mounts that follow (a trust store inside the venv) go on top.
        for own in spec.get("own_dirs", []):
            if Path(own).is_relative_to(m["target"]):
                shown = _mount_point(root, own, is_file=False)
                _mount(own, str(shown), None, MS_BIND | MS_REC)
                _mount(own, str(shown), None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    # The image's working directory exists in the image (in the overlay's layer here).
    inside(root, spec.get("cwd") or "/").mkdir(parents=True, exist_ok=True)
    # What the image's own files allow (its interpreter readable by its user), in this view only.
    for item in spec.get("chmod", []):
        os.chmod(inside(root, item["path"]), int(item["mode"]))
    if spec.get("read_only_root"):
        _mount(str(root), str(root), None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    if spec.get("hostname"):
        socket.sethostname(spec["hostname"])
    os.chroot(root)
    os.chdir(spec.get("cwd") or "/")
    uid, gid = spec.get("user"), spec.get("group")
    if gid is not None:
        os.setgroups([int(g) for g in spec.get("groups", [])])
        os.setgid(int(gid))
    if uid is not None:
        os.setuid(int(uid))
    env = {str(k): str(v) for k, v in spec["env"].items()}
    argv = [str(a) for a in spec["argv"]]
    os.execvpe(argv[0], argv, env)


def main() -> None:
    spec_file = Path(sys.argv[1])
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    try:
        enter(spec)
    except OSError as exc:
        # The platform would say the same: the container could not be created.
        print(f"skyfleet lab: cannot start container {spec.get('name', '?')}: {exc}", file=sys.stderr)
        raise SystemExit(127) from None


if __name__ == "__main__":
    main()
