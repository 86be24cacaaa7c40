"""What needs neither root nor podman: container specs refuse what cannot run as planned, and
`skyfleet lab image build` says what to install when a tool is missing."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent_app.contract import API_COMMAND
from skyfleet.lab.container import ContainerSpec, FileMount, create_args


def spec(**kw: object) -> ContainerSpec:
    base: dict[str, object] = {
        "name": "skyfleet-abc123-aws-api-0",
        "lab": "/srv/lab",
        "process": "aws-api-0",
        "image": "localhost/skyfleet/agent-app:lab",
        "command": API_COMMAND,
    }
    return ContainerSpec.model_validate({**base, **kw})


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"env": {"BAD-NAME": "x"}}, "env", "invalid variable names"),
        (
            {"env": {"AGENT_API_KEYS": "k"}, "secret_env": ["AGENT_API_KEYS"]},
            "secret_env",
            "one or the other",
        ),
        ({"files": [{"source": "/k", "target": "relative/path"}]}, "target", "absolute path"),
        ({"files": [{"source": "/k", "target": "/tmp"}]}, "target", "outside /tmp"),
        ({"name": "has space"}, "name", "letters, digits"),
        ({"uid": 0}, "uid", "greater than or equal to 1"),  # root is never the app's user
        ({"command": []}, "command", "argv"),
    ],
)
def test_spec_refuses_what_cannot_run_as_planned(change: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**change)
    text = str(info.value)
    assert field in text and words in text, text


def test_run_options_are_the_plans() -> None:
    s = spec(
        env={"AGENT_LOG_LEVEL": "INFO", "ODD": "a = $b *"},
        secret_env=["AGENT_REDIS_PASSWORD"],
        files=[
            FileMount(source=Path("/srv/lab/secrets/api-keys"), target="/var/run/secrets/skyfleet/api-keys")
        ],
        netns="skyfleet-aws",
    )
    args = create_args(s, [(Path("/stage/0-api-keys"), "/var/run/secrets/skyfleet/api-keys")], Path("/stage"))
    pairs = set(itertools.pairwise(args))
    assert ("--user", "10001:10001") in pairs
    assert "--read-only" in args and "--read-only-tmpfs=false" in args
    assert any(a == "--tmpfs" and b.startswith("/tmp:rw,") for a, b in pairs)
    assert ("--cap-drop", "all") in pairs and ("--security-opt", "no-new-privileges") in pairs
    assert ("--network", "ns:/run/netns/skyfleet-aws") in pairs
    assert ("--env", "ODD=a = $b *") in pairs  # verbatim, one argv item, no shell
    assert ("--env", "AGENT_REDIS_PASSWORD") in pairs  # the value comes from podman's environment
    assert (
        "--mount",
        "type=bind,source=/stage/0-api-keys,destination=/var/run/secrets/skyfleet/api-keys,ro=true",
    ) in pairs
    assert ("--label", "io.skyfleet.lab=/srv/lab") in pairs
    assert args[-3:] == ["python", "-m", "agent_app.api"] and args[-4] == s.image
    assert ("--network", "host") in set(itertools.pairwise(create_args(spec(), [], Path("/s"))))


def test_build_names_what_to_install_when_podman_is_missing(tmp_path: Path) -> None:
    # A PATH without podman (nor /usr/bin): the command must say what to install, not crash.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "XDG_CACHE_HOME": str(tmp_path)}
    skyfleet = Path(sys.executable).parent / "skyfleet"
    out = subprocess.run(
        [str(skyfleet), "lab", "image", "build"], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2, out.stderr
    message = " ".join(out.stderr.split())
    assert "podman is not installed: apt-get install -y podman runc" in message
    if os.geteuid() != 0:
        assert "run as root" in message
