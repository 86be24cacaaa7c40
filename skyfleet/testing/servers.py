"""Launchers for the real servers the agent app runs against, and for the app itself.

Each launcher starts a real process on a free loopback port, waits until that process (not
another one) listens there, and stops it by its own pid. A free port can be taken between the
probe and the server's bind (by another test worker, or as a client's ephemeral port): the
launcher then starts the server again on another port, a bounded number of times. Ports are
picked below the kernel's ephemeral range, which outgoing connections draw from, so a port
that must stay fixed once picked (a fleet's sites name each other's) is rarely taken.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from agent_app.contract import nats_queue_url

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
NATS_SERVER = str(VENV_BIN / "nats-server")
MOTO_SERVER = str(VENV_BIN / "moto_server")
API_KEY = "test-key-0123456789abcdef"


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 20000


def ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


# Ports this process has handed out: one picked and not yet bound (a fleet's sites are told each
# other's before they start) must not be handed out again.
_HANDED_OUT: set[int] = set()


def _own_range(low: int, high: int) -> range:
    """This pytest-xdist worker's share of [low, high), so parallel workers never pick the same
    port; the whole of it outside xdist."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 0):
        return range(low, high)
    share = (high - low) // int(count)
    start = low + int(worker[2:]) % int(count) * share
    return range(start, start + share)


def free_port() -> int:
    """A loopback port nothing listens on, below the ephemeral range (a busy machine's outgoing
    connections take ports from that range, any of them, at any moment), never one this process
    handed out before, and in this test worker's own share of the range."""
    own = _own_range(LOWEST_PORT, ephemeral_start())
    if len(own) >= 500:
        for _ in range(100):
            port = own[secrets.randbelow(len(own))]
            if port in _HANDED_OUT:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket() as s:  # no room below it: any port the kernel gives
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    check: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the server may not be up yet
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last error: {last_error!r}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def listens(pid: int, port: int) -> bool:
    """Process ``pid`` itself holds a TCP socket listening on ``port`` (Linux ``/proc``)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in inodes:
                return True
        except OSError:
            continue
    return False


class Proc:
    """A child process whose output goes to a log file, stopped only by its own pid."""

    def __init__(
        self, name: str, argv: list[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.log_path = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Proc:
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
        )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.wait(5)
        if self._log:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait(5)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


BIND_ATTEMPTS = 5


def serve(
    launch: Callable[[int], Proc], port: int, *, fixed: bool, what: str, timeout: float = 20.0
) -> tuple[Proc, int]:
    """Start ``launch(port)`` and wait until that very process listens on the port. Unless the
    port is ``fixed``, a server that exits without binding it is started again on another one."""
    for attempt in range(1, BIND_ATTEMPTS + 1):
        proc = launch(port).start()
        deadline = time.monotonic() + timeout
        while not listens(proc.pid, port):
            if not proc.alive():
                break
            if time.monotonic() > deadline:
                proc.stop()
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what} to listen on {port}:\n"
                    f"{proc.output()[-2000:]}"
                )
            time.sleep(0.05)
        else:
            return proc, port
        proc.stop()
        if fixed or attempt == BIND_ATTEMPTS:
            raise AssertionError(f"{what} exited before listening on {port}:\n{proc.output()[-2000:]}")
        port = free_port()
    raise AssertionError(f"{what}: no port after {BIND_ATTEMPTS} attempts")


class RedisServer:
    def __init__(self, port: int | None = None, *, replica_of: int | None = None) -> None:
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.replica_of = replica_of
        self.dir = Path(tempfile.mkdtemp(prefix="redis-"))
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _launch(self, port: int) -> Proc:
        argv = [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--repl-diskless-sync-delay",  # replicas sync at once (the default waits 5 s)
            "0",
            "--dir",
            str(self.dir),
        ]
        if self.replica_of:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        return Proc("redis", argv)

    def start(self) -> RedisServer:
        self.proc, self.port = serve(self._launch, self.port, fixed=self.fixed_port, what="redis-server")
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()

    def client(self) -> Any:
        import redis

        return redis.Redis(port=self.port, decode_responses=True)


@dataclass(frozen=True)
class NatsQueue:
    """A JetStream queue of its own on a server: its stream, subjects and the app's queue URL."""

    stream: str
    subject: str
    dlq_subject: str
    url: str


class NatsServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="nats-"))
        self.proc: Proc | None = None

    @property
    def hosts(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        def launch(port: int) -> Proc:
            argv = [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(self.dir)]
            return Proc("nats", argv)

        self.proc, self.port = serve(launch, self.port, fixed=False, what="nats-server")
        return self

    def queue(self, max_deliver: int = 3) -> NatsQueue:
        """A fresh stream (with its dead-letter subject) for one app or test: its queue URL."""
        name = f"T{uuid.uuid4().hex[:8]}"
        subject, dlq = f"{name}.tasks", f"{name}.dlq"
        url = nats_queue_url(
            self.hosts, stream=name, subject=subject, dlq_subject=dlq, max_deliver=max_deliver
        )
        return NatsQueue(name, subject, dlq, url)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.proc: Proc | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        def launch(port: int) -> Proc:
            return Proc("moto", [MOTO_SERVER, "-H", "127.0.0.1", "-p", str(port)])

        self.proc, self.port = serve(launch, self.port, fixed=False, what="moto_server", timeout=30)
        wait_until(lambda: httpx.get(self.endpoint + "/moto-api/").status_code < 500, what="moto_server")
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()


def app_env(redis_url: str, queue_url: str, **extra: str) -> dict[str, str]:
    """The environment of an api or worker process under test; ``extra`` overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "OTEL_"))}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "AGENT_REDIS_URL": redis_url,
            "AGENT_QUEUE_URL": queue_url,
            "AGENT_API_KEYS": API_KEY,
            "AGENT_SITE": "test-site",
            "AGENT_LOG_LEVEL": "INFO",
            "AGENT_TASK_LEASE_SECONDS": "3",
            "AGENT_SHUTDOWN_GRACE_SECONDS": "10",
            "AGENT_RATE_LIMIT_PER_MINUTE": "100000",
        }
    )
    env.update(extra)
    return env


class AppProcess:
    """``python -m agent_app.api`` or ``agent_app.worker`` as a real child process."""

    def __init__(self, kind: str, env: Mapping[str, str]) -> None:
        self.kind = kind
        self.base_env = dict(env)
        self._at(free_port())

    def _at(self, port: int) -> None:
        self.port = port
        self.env = {**self.base_env, "AGENT_PORT": str(port), "AGENT_INSTANCE": f"{self.kind}-{port}"}
        self.proc = Proc(
            f"agent-{self.kind}", [sys.executable, "-m", f"agent_app.{self.kind}"], env=self.env, cwd=REPO
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, ready: bool = True) -> AppProcess:
        def launch(port: int) -> Proc:
            if port != self.port:
                self._at(port)
            return self.proc

        serve(launch, self.port, fixed=False, what=f"{self.kind} process", timeout=30)
        path = "/readyz" if ready else "/healthz"

        def up() -> bool:
            if not self.proc.alive():
                raise AssertionError(f"{self.kind} exited early:\n{self.proc.output()[-3000:]}")
            return httpx.get(self.url + path, timeout=2).status_code == 200

        wait_until(up, timeout=30, what=f"{self.kind} {path}")
        return self

    def client(self, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {API_KEY}", **kwargs.pop("headers", {})}
        return httpx.Client(base_url=self.url, headers=headers, timeout=kwargs.pop("timeout", 10), **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """A counter's value from /metrics (0 when the series does not exist yet)."""
        text = httpx.get(self.url + "/metrics", timeout=5).text
        want = ",".join(f'{k}="{v}"' for k, v in labels.items())
        series = f"{name}{{{want}}}" if want else name
        for line in text.splitlines():
            if line.startswith(series + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> None:
        self.proc.stop(timeout=20)

    def output(self) -> str:
        return self.proc.output()
