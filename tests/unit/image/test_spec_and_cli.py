"""What needs neither root nor podman: container specs refuse what cannot run as planned and
become the podman options they say, and `skyfleet lab image build` says what to install when a
tool is missing."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent_app.contract import API_COMMAND
from skyfleet.lab.container import Bind, ContainerSpec, create_args


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
        ({"mounts": [{"source": "/k", "target": "relative/path"}]}, "target", "absolute path"),
        ({"mounts": [{"source": "/k,x", "target": "/k"}]}, "source", "without ','"),
        ({"mounts": [{"source": "/k", "target": "/"}]}, "target", "below /"),
        (
            {"mounts": [{"source": "/a", "target": "/tmp"}, {"source": "/b", "target": "/tmp/"}]},
            "mounts",
            "mounted more than once",
        ),
        ({"name": "has space"}, "name", "letters, digits"),
        ({"uid": 0}, "uid", "init container"),  # root runs only a one-shot init container
        ({"uid": -1}, "uid", "greater than or equal to 0"),
        ({"gid": 10001}, "gid", "without a uid"),
        ({"command": []}, "command", "argv"),
    ],
)
def test_spec_refuses_what_cannot_run_as_planned(change: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**change)
    text = str(info.value)
    assert field in text and words in text, text


def test_run_options_are_the_specs() -> None:
    s = spec(
        env={"AGENT_LOG_LEVEL": "INFO", "ODD": "a = $b *"},
        secret_env=["AGENT_REDIS_PASSWORD"],
        mounts=[
            Bind(source=Path("/srv/lab/pods/api-0/volumes/api-keys"), target="/var/run/secrets/skyfleet"),
            Bind(source=Path("/srv/lab/pods/api-0/volumes/scratch"), target="/tmp", read_only=False),
        ],
        uid=10001,
        gid=10001,
        groups=[10001],
        hostname="api-0",
        netns="skyfleet-aws",
    )
    args = create_args(s)
    pairs = set(itertools.pairwise(args))
    assert ("--user", "10001:10001") in pairs and ("--group-add", "10001") in pairs
    assert "--read-only" in args and "--read-only-tmpfs=false" in args
    assert "--tmpfs" not in args  # only what the plan mounts is writable
    assert ("--cap-drop", "all") in pairs and ("--security-opt", "no-new-privileges") in pairs
    assert ("--network", "ns:/run/netns/skyfleet-aws") in pairs and ("--hostname", "api-0") in pairs
    assert ("--env", "ODD=a = $b *") in pairs  # verbatim, one argv item, no shell
    assert ("--env", "AGENT_REDIS_PASSWORD") in pairs  # the value comes from podman's environment
    assert (
        "--mount",
        "type=bind,source=/srv/lab/pods/api-0/volumes/api-keys,destination=/var/run/secrets/skyfleet,ro=true",
    ) in pairs
    scratch = "type=bind,source=/srv/lab/pods/api-0/volumes/scratch,destination=/tmp,ro=false"
    assert ("--mount", scratch) in pairs
    assert ("--label", "io.skyfleet.lab=/srv/lab") in pairs
    assert args[-3:] == ["python", "-m", "agent_app.api"] and args[-4] == s.image
    # Nothing said: the host's network, the image's USER, a read-only root all the same.
    bare = create_args(spec())
    assert ("--network", "host") in set(itertools.pairwise(bare))
    assert "--user" not in bare and "--read-only" in bare
    # A uid alone takes the image's group for it; a writable root (Cloud Run) drops --read-only.
    assert ("--user", "10001") in set(itertools.pairwise(create_args(spec(uid=10001))))
    assert "--read-only" not in create_args(spec(read_only_root=False))
    # Root for a one-shot init container (an ECS task's scratch-permissions), never otherwise.
    assert ("--user", "0:0") in set(itertools.pairwise(create_args(spec(uid=0, gid=0, init=True))))


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
