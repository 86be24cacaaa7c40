"""The app image is the Dockerfile's, and it runs as the plan says.

Builds ``agent_app/Dockerfile`` with podman on the local base, then runs the api and the worker
from it as a platform would (uid 10001, read-only root, a tmpfs at /tmp, the plan's env, the
API keys file mounted read-only, the Redis password as a secret variable) against a real
redis-server and nats-server (JetStream), and checks what actually runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agent_app.contract import (
    API_COMMAND,
    API_KEYS_FILE_NAME,
    API_KEYS_MOUNT_DIR,
    DEFAULT_PORT,
    READINESS_PATH,
    RUN_AS_GID,
    RUN_AS_UID,
    SCRATCH_DIR,
    WORKER_COMMAND,
    Env,
)
from skyfleet.lab import container, image
from skyfleet.lab.config import lab_id_for
from skyfleet.lab.container import ContainerSpec, FileMount, Podman
from skyfleet.testing.servers import NatsServer, free_port, wait_until
from tests.integration.image.conftest import SKIP_REASON, RedisWithPassword
from tests.support.brokers import NatsBroker

pytestmark = [
    pytest.mark.skipif(bool(SKIP_REASON), reason=SKIP_REASON or "podman can run containers"),
    # The first test pays for the session's image builds (base cold: about a minute).
    pytest.mark.timeout(900),
]

API_KEY = f"image-test-key-{uuid.uuid4().hex}"
KEYS_IN_CONTAINER = f"{API_KEYS_MOUNT_DIR}/{API_KEYS_FILE_NAME}"
# A value with spaces, '=', '$' and '*': it must arrive exactly as given.
# Everything but the scratch dir is read-only, the app's code and venv included.
READ_ONLY_PATHS = ("/", "/app", "/app/agent_app", "/opt/venv", "/etc", "/var/tmp", "/run", "/root", "/usr")
ODD_VALUE = "odd value = $HOME * 'quoted' \\ end"


@dataclass
class Lab:
    """What the containers of one test module share: where their files go and their label."""

    podman: Podman
    image: str
    marker: str
    root: Path
    redis: RedisWithPassword
    queue_url: str

    def name(self, process: str) -> str:
        return container.container_name(lab_id_for(self.root), process)

    def env(self, **extra: str) -> dict[str, str]:
        """The env a plan gives a site's processes (agent_app/contract.py), plus ``extra``."""
        env = {
            Env.SITE.value: "image-test",
            Env.REDIS_URL.value: self.redis.url,
            Env.QUEUE_URL.value: self.queue_url,
            Env.API_KEYS_FILE.value: KEYS_IN_CONTAINER,
            Env.LOG_LEVEL.value: "INFO",
            Env.RATE_LIMIT_PER_MINUTE.value: "100000",
            Env.TASK_LEASE_SECONDS.value: "5",
            Env.SHUTDOWN_GRACE_SECONDS.value: "3",
            Env.MODEL_NAME.value: ODD_VALUE,
        }
        env.update(extra)
        return env

    def spec(self, process: str, command: tuple[str, ...], port: int, **env: str) -> ContainerSpec:
        return ContainerSpec(
            name=self.name(process),
            lab=self.marker,
            process=process,
            image=self.image,
            command=command,
            env={**self.env(**env), Env.PORT.value: str(port), Env.INSTANCE.value: process},
            secret_env=(Env.REDIS_PASSWORD.value,),
            files=(FileMount(source=self.root / "secrets" / "api-keys", target=KEYS_IN_CONTAINER),),
            stop_grace_seconds=5,
            memory_mb=512,
        )

    def start(self, spec: ContainerSpec) -> container.Started:
        return container.start(
            self.podman,
            spec,
            log_file=self.log(spec),
            stage_dir=self.root / "containers",
            secret_values={Env.REDIS_PASSWORD.value: self.redis.password},
        )

    def log(self, spec: ContainerSpec) -> Path:
        return self.root / "logs" / f"{spec.process}.log"


@pytest.fixture(scope="module")
def lab(
    podman: Podman,
    app_image: image.Built,
    redis_server: RedisWithPassword,
    nats_server: NatsServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("lab")
    secrets = root / "secrets"
    secrets.mkdir(mode=0o700)
    keys = secrets / "api-keys"
    keys.write_text(API_KEY + "\n")
    keys.chmod(0o600)  # root's, as the lab keeps its secrets: the container gets a copy
    broker = NatsBroker(nats_server)
    lab = Lab(podman, app_image.tag, str(root), root, redis_server, broker.env[Env.QUEUE_URL.value])
    yield lab
    container.remove_leftovers(podman, lab.marker)
    assert container.leftovers(podman, lab.marker) == []


def ready(
    lab: Lab, spec: ContainerSpec, port: int, path: str = READINESS_PATH, netns: str | None = None
) -> None:
    """Wait for ``path`` to answer 200 (from inside ``netns`` if given); fail at once, with the
    log, if the container exits."""
    probe = f"import urllib.request as u; print(u.urlopen('http://127.0.0.1:{port}{path}', timeout=2).status)"

    def check() -> str | None:
        state = container.inspect(lab.podman, spec.name)
        if state is None or not state.running:
            return "exited"
        if netns is not None:
            argv = ["ip", "netns", "exec", netns, "python3", "-c", probe]
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return "ready" if out.stdout.strip() == "200" else None
        try:
            return (
                "ready" if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200 else None
            )
        except httpx.HTTPError:
            return None

    outcome = wait_until(check, timeout=60, what=f"{spec.name} {path} 200")
    log = lab.log(spec).read_text(errors="replace")
    assert outcome == "ready", f"{spec.name} exited while starting; its log:\n{log}"


@dataclass
class Running:
    spec: ContainerSpec
    started: container.Started
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def launch(lab: Lab, process: str, command: tuple[str, ...] = API_COMMAND) -> Running:
    """Start a container of ``command`` on a free port and wait until it is ready."""
    port = free_port()
    spec = lab.spec(process, command, port)
    started = lab.start(spec)
    ready(lab, spec, port)
    return Running(spec, started, port)


@pytest.fixture(scope="module")
def api(lab: Lab) -> Iterator[Running]:
    run = launch(lab, "api")
    yield run
    container.stop(lab.podman, run.spec.name)


@pytest.fixture(scope="module")
def worker(lab: Lab) -> Iterator[Running]:
    run = launch(lab, "worker", WORKER_COMMAND)
    yield run
    container.stop(lab.podman, run.spec.name)


def pids_in(pid: int) -> list[int]:
    """Host pids of every process in the pid namespace of ``pid`` (a container's)."""
    ns = Path(f"/proc/{pid}/ns/pid").readlink()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "ns/pid").readlink() == ns:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def status_fields(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def mount_options(pid: int) -> dict[str, set[str]]:
    """Mount point -> its per-mount options, as the process sees them."""
    found = {}
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        found[fields[4]] = set(fields[5].split(","))
    return found


def exec_in(lab: Lab, name: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run Python in the running container, as its user (podman exec)."""
    return lab.podman.run("exec", name, "python", "-c", code, check=False)


def test_dockerfile_builds_on_the_local_base(podman: Podman, app_image: image.Built) -> None:
    config = podman.run("image", "inspect", "--format", "{{json .Config}}", app_image.tag).stdout
    assert f'"User":"{RUN_AS_UID}:{RUN_AS_GID}"' in config
    assert '"Cmd":["python","-m","agent_app.api"]' in config
    assert f'"{DEFAULT_PORT}/tcp"' in config
    health = podman.run("image", "inspect", "--format", "{{json .HealthCheck}}", app_image.tag).stdout
    assert "/healthz" in health  # kept: built in docker format, as `docker build` does
    version = podman.run("run", "--rm", "--pull=never", app_image.tag, "python", "-c",
                         "import sys, redis; print(sys.version.split()[0], redis.__version__)")  # fmt: skip
    # Bookworm's python (what the base is made of), with the pinned closure importable.
    assert version.stdout.split()[0] == "3.11.2"


def test_base_is_cached_by_its_content(podman: Podman, base_image: image.Built) -> None:
    again = image.build_base(podman)
    assert again.cached and again.tag == base_image.tag
    other = image.BaseRecipe(mirror="http://mirror.invalid/debian")
    assert other.tag() != base_image.tag  # a different input is a different base


def test_api_and_worker_serve_a_turn_and_a_task(lab: Lab, api: Running, worker: Running) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=api.url, headers=headers, timeout=10) as client:
        session = client.post("/v1/sessions")
        assert session.status_code == 201, session.text
        session_id = session.json()["id"]
        turn = client.post(f"/v1/sessions/{session_id}/messages", json={"content": "hello there"})
        assert turn.status_code == 200, turn.text
        assert turn.json()["reply"]["content"]
        accepted = client.post(f"/v1/sessions/{session_id}/tasks", json={"input": "what is 6*7"})
        assert accepted.status_code == 202, accepted.text
        task_id = accepted.json()["task_id"]
        task = wait_until(
            lambda: (body := client.get(f"/v1/tasks/{task_id}").json())["status"] == "succeeded" and body,
            timeout=40,
            interval=0.1,
            what=f"task {task_id} to succeed",
        )
        assert task["result"] == "6*7 = 42"
    # Done by the worker container: it logged the task (the api never runs one). Its log line
    # reaches the file after the result reaches Redis: wait for it, with a bound.
    worker_log = lab.log(worker.spec)
    wait_until(
        lambda: task_id in worker_log.read_text(errors="replace"), timeout=10, what="the worker's log line"
    )


@pytest.mark.parametrize("which", ["api", "worker"])
def test_processes_run_as_planned(lab: Lab, api: Running, worker: Running, which: str) -> None:
    proc = {"api": api, "worker": worker}[which]
    assert proc.started.pid is not None
    pids = pids_in(proc.started.pid)
    assert pids, "no process found in the container's pid namespace"
    for pid in pids:
        fields = status_fields(pid)
        assert fields["Uid"].split() == [str(RUN_AS_UID)] * 4, (pid, fields["Uid"])
        assert fields["Gid"].split() == [str(RUN_AS_GID)] * 4, (pid, fields["Gid"])
        assert fields["CapEff"] == "0000000000000000"
        assert fields["NoNewPrivs"] == "1"
    # The env arrives verbatim, the secret through podman's environment.
    env = environ(proc.started.pid)
    for key, value in proc.spec.env.items():
        assert env.get(key) == value, key
    assert env[Env.REDIS_PASSWORD.value] == lab.redis.password
    argv = container.create_args(proc.spec, [], lab.root)
    assert not any(lab.redis.password in a for a in argv)  # never on a command line
    # Root and the mounted secret are read-only; only the scratch dir takes writes.
    opts = mount_options(proc.started.pid)
    # Debian's /var/run is a link to /run: the mount point shows the resolved path.
    assert "ro" in opts["/"] and "ro" in opts[KEYS_IN_CONTAINER.replace("/var/run/", "/run/", 1)]
    assert "rw" in opts[SCRATCH_DIR]
    probe = f"""
import os
open('/tmp/ok', 'w').write('x')
bad = []
for d in {READ_ONLY_PATHS!r}:
    try:
        open(os.path.join(d, 'probe'), 'w').close()
        bad.append(d)
    except OSError:
        pass
print(os.getuid(), os.getgid(), open({KEYS_IN_CONTAINER!r}).read().strip() != '', bad)
"""
    out = exec_in(lab, proc.spec.name, probe)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split(None, 3) == [str(RUN_AS_UID), str(RUN_AS_GID), "True", "[]"], out.stdout


def test_env_the_app_rejects_exits_2_with_its_message(lab: Lab) -> None:
    spec = lab.spec("api-badenv", API_COMMAND, free_port(), **{Env.LOG_LEVEL.value: "verbose"})
    lab.start(spec)
    assert container.wait_exit(lab.podman, spec.name, timeout=60) == 2
    log = lab.log(spec).read_text(errors="replace")
    assert "agent_app: invalid configuration" in log
    assert "AGENT_LOG_LEVEL" in log and "'verbose'" in log
    container.remove(lab.podman, spec.name)
    assert container.inspect(lab.podman, spec.name) is None


def _gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{p}").exists() for p in pids)


def start_ready(lab: Lab, process: str) -> tuple[Running, list[int]]:
    """A ready api container and the host pids of its processes."""
    run = launch(lab, process)
    assert run.started.pid is not None
    return run, pids_in(run.started.pid)


def test_stop_drains_and_leaves_nothing(lab: Lab) -> None:
    run, pids = start_ready(lab, "api-stop")
    assert container.stop(lab.podman, run.spec.name) == 0  # SIGTERM: drained and exited cleanly
    assert "drained" in lab.log(run.spec).read_text(errors="replace")
    assert container.inspect(lab.podman, run.spec.name) is None
    assert not (lab.root / "containers" / run.spec.name).exists()  # its staged secrets went too
    wait_until(lambda: _gone(pids), timeout=10, what="the container's processes to be gone")


def test_stop_after_a_pause_fault_still_drains(lab: Lab) -> None:
    """A pause fault SIGSTOPs the tracked pid; stopping then must not end in SIGKILL."""
    run, _ = start_ready(lab, "api-paused")
    assert run.started.pid is not None
    os.killpg(run.started.pid, signal.SIGSTOP)
    assert container.stop(lab.podman, run.spec.name) == 0
    assert "drained" in lab.log(run.spec).read_text(errors="replace")


def test_kill_kills_the_container_itself(lab: Lab) -> None:
    run, pids = start_ready(lab, "api-kill")
    assert container.kill(lab.podman, run.spec.name) == 137  # SIGKILL: no drain
    assert "drained" not in lab.log(run.spec).read_text(errors="replace")
    assert container.inspect(lab.podman, run.spec.name) is None
    wait_until(lambda: _gone(pids), timeout=10, what="the container's processes to be gone")


def test_sigkill_of_the_tracked_pid_is_a_site_loss(lab: Lab) -> None:
    """The lab's own kill path (procs: SIGKILL to the recorded pid) kills the container."""
    run, pids = start_ready(lab, "api-sigkill")
    assert run.started.pid is not None
    os.killpg(run.started.pid, signal.SIGKILL)
    assert container.wait_exit(lab.podman, run.spec.name, timeout=30) == 137
    wait_until(lambda: _gone(pids), timeout=10, what="the container's processes to be gone")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{run.url}{READINESS_PATH}", timeout=2)
    # The exited container waits for removal (its exit code, as a stopped task keeps it);
    # the lab's teardown finds it by label.
    assert run.spec.name in {s.name for s in container.leftovers(lab.podman, lab.marker)}
    container.remove(lab.podman, run.spec.name)


def test_leftovers_are_found_and_removed_after_a_crash(lab: Lab, tmp_path: Path) -> None:
    """A lab that crashed knows nothing but its marker: that is enough to clean up."""
    other = Lab(lab.podman, lab.image, str(tmp_path), tmp_path, lab.redis, lab.queue_url)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "api-keys").write_text(API_KEY)
    port = free_port()
    spec = other.spec("api", API_COMMAND, port)
    started = other.start(spec)
    assert started.pid is not None
    found = container.leftovers(Podman(), other.marker)  # a fresh client: nothing remembered
    assert [s.name for s in found] == [spec.name] and found[0].running
    assert lab.name("api") not in [s.name for s in found]  # another lab's containers are not its
    assert container.remove_leftovers(Podman(), other.marker) == [spec.name]
    assert container.leftovers(Podman(), other.marker) == []
    assert not (tmp_path / "containers" / spec.name).exists()
    wait_until(lambda: not Path(f"/proc/{started.pid}").exists(), timeout=10, what="the app to be gone")


def test_runs_in_a_sites_network_namespace(lab: Lab) -> None:
    """In a lab run as root each site is a network namespace: the container joins it."""
    ns = f"sfimg-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        port = free_port()
        base = lab.spec("api-netns", API_COMMAND, port)
        spec = base.model_copy(update={"netns": ns})
        lab.start(spec)
        ready(lab, spec, port, "/healthz", netns=ns)
        with pytest.raises(httpx.TransportError):  # not in the host's namespace
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        assert container.stop(lab.podman, spec.name) is not None
    finally:
        container.remove(lab.podman, lab.name("api-netns"))
        subprocess.run(["ip", "netns", "del", ns], check=False)
