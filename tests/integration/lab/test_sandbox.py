"""The sandbox a lab container runs in (skyfleet/lab/sandbox.py), started the way the lab starts
it: ``unshare`` a mount namespace, then the plan's mounts, chroot, the plan's user."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="the sandbox needs root and unshare"
)


def run(tmp_path: Path, spec: dict[str, object]) -> subprocess.CompletedProcess[str]:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"name": "t/c", "root": str(tmp_path / "rootfs"), **spec}))
    return subprocess.run(
        [
            "unshare",
            "-m",
            "-u",
            "--propagation",
            "private",
            sys.executable,
            "-m",
            "skyfleet.lab.sandbox",
            str(spec_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_volume_over_the_projects_directory_leaves_the_images_own_files_visible(tmp_path: Path) -> None:
    # A checkout under /tmp, and a plan that mounts an emptyDir at /tmp: the image's own files
    # (here: the venv and the code) live under the volume's path on this machine only.
    project = tmp_path / "project"
    (project / "code").mkdir(parents=True)
    (project / "code" / "app.txt").write_text("the image's code\n")
    trust = tmp_path / "ca.pem"
    trust.write_text("the lab's CA\n")
    (project / "code" / "ca.pem").write_text("the image's CA\n")
    read = ["cat", str(project / "code" / "app.txt"), str(project / "code" / "ca.pem")]
    spec = {
        "mounts": [
            {"kind": "tmpfs", "target": str(tmp_path)},
            # A mount after the volume, inside the image's own files (a trust store in the venv).
            {
                "kind": "bind",
                "source": str(trust),
                "target": str(project / "code" / "ca.pem"),
                "read_only": True,
            },
        ],
        "env": {"PATH": "/usr/bin:/bin"},
        "argv": read,
    }

    hidden = run(tmp_path, spec)
    assert hidden.returncode != 0 and "No such file" in hidden.stderr

    shown = run(tmp_path, {**spec, "own_dirs": [str(project)]})
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "the image's code\nthe lab's CA\n"

    # Shown read-only: a container cannot change this machine's copy of the image.
    write = run(
        tmp_path, {**spec, "own_dirs": [str(project)], "argv": ["touch", str(project / "code" / "new")]}
    )
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    assert not (project / "code" / "new").exists()
