"""The onprem target's generated data-store configs on real servers: the ConfigMaps' files are
what the pods run; here they run on a real redis-server and nats-server, with only the in-pod
paths and ports mapped to a temp folder and free loopback ports, and certificates from a
throwaway CA standing in for cert-manager's."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import nats
import nats.errors
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from agent_app.contract import Env, NatsQueue, parse_queue_url
from skyfleet.plan import Plan, plan_stack
from skyfleet.testing.servers import free_port
from tests.support.onprem import NAMESPACE, STACK, env_of, one, plan_dev_site
from tests.support.plans import ROOT

NATS_SERVER = Path(sys.executable).parent / "nats-server"
T = TypeVar("T")
PASSWORD = "s3cret-from-the-redis-auth-secret"
# The NATS users' passwords, as their Secrets hand them to the server's environment.
NATS_PASSWORD = {user: f"s3cret-nats-{user}" for user in ("api", "worker", "streams")}
NATS_PASSWORDS = {f"NATS_{user.upper()}_PASSWORD": pw for user, pw in NATS_PASSWORD.items()}
# Fail at once: a refused AUTH must not be retried with backoff.
NO_RETRY = Retry(NoBackoff(), 0)


@functools.cache
def image_path() -> str:
    """PATH as the data stores' alpine images have it: busybox's applets (``sh`` is its ash, as
    are sha256sum, date, sleep, kill and grep) and the servers, nothing from this machine's
    coreutils or dash. The pods' init scripts and serve.sh run on it."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox is not installed: the images' shell (scripts/install.sh installs it)")
    d = Path(tempfile.mkdtemp(prefix="skyfleet-image-bin-"))
    atexit.register(shutil.rmtree, d, True)
    applets = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True).stdout
    for applet in applets.split():
        (d / applet).symlink_to(busybox)
    for server in ("redis-server", "redis-cli"):
        (d / server).symlink_to(shutil.which(server) or f"/usr/bin/{server}")
    (d / "nats-server").symlink_to(NATS_SERVER)
    return str(d)


def assert_image_shell(proc: subprocess.Popen[bytes]) -> None:
    """The container command runs on the images' shell (busybox), not this machine's."""
    assert Path(f"/proc/{proc.pid}/exe").resolve() == Path(image_path(), "sh").resolve(), proc.args


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plan() -> Plan:
    """onprem-prod on its own: this target's tests do not depend on the other targets'."""
    return plan_stack(ROOT, STACK)


@pytest.fixture(scope="module")
def dev_plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    return plan_dev_site(tmp_path_factory.mktemp("onprem-dev"))


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on a private loop: asyncio.run would unset the thread's loop, which the Pulumi SDK
    (the plans of later tests) still needs."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a server's process group: serve.sh and the server it runs."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def wait_until(
    check: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], log: Path, attempts: int = 100
) -> None:
    """Poll (bounded) until ``check`` passes; fail with the server's log otherwise."""
    for _ in range(attempts):
        if proc.poll() is not None:
            break
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    kill_group(proc)
    out = log.read_text() if log.exists() else ""
    raise AssertionError(f"{what} did not come up:\n{out[-2000:]}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.crt, tls.crt, tls.key as a cert-manager Secret holds them (server and client auth)."""
    d = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=skyfleet-test-ca",
    )
    run("req", *ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    run("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "tls.crt", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return d


@pytest.fixture
def servers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_group(p)


# serve.sh looks for a renewed certificate this often here (the pods: every 10 s).
POLL_SECONDS = "1"


def container_command(
    plan: Plan,
    sts: str,
    container: str,
    config: str,
    root: Path,
    mapped: dict[str, str],
    step: str | None = None,
    renew: str | None = None,
) -> list[str]:
    """A data store container's command as planned: serve.sh (written from its ConfigMap) running
    the server, the in-pod paths mapped, serve.sh's poll shortened (and its step and its renewal,
    if given)."""
    pod = one(plan, "kubernetes:apps/v1:StatefulSet", sts)["spec"]["template"]["spec"]
    command = [str(x) for x in next(c for c in pod["containers"] if c["name"] == container)["command"]]
    assert command[:2] == ["sh", f"{'/etc/redis' if sts == 'redis' else '/etc/nats'}/conf/serve.sh"], command
    script = root / "serve.sh"
    script.write_text(one(plan, "kubernetes:core/v1:ConfigMap", config)["data"]["serve.sh"])
    command[1], command[3] = str(script), POLL_SECONDS
    if step is not None:
        command[4] = step
    if renew is not None:
        command[5] = renew
    for i, word in enumerate(command[2:], start=2):
        for a, b in mapped.items():
            word = word.replace(a, b)
        command[i] = str(NATS_SERVER) if word == "nats-server" else word
    return command


def secret_volume(files: Path, mount: Path) -> Path:
    """``files`` (ca.crt, tls.crt, tls.key) laid out at ``mount`` as the kubelet lays out a Secret
    volume: a timestamped folder, ``..data`` pointing at it, each file a link through ``..data``."""
    mount.mkdir(parents=True)
    renew_secret(mount, files)
    for name in ("ca.crt", "tls.crt", "tls.key"):
        (mount / name).symlink_to(f"..data/{name}")
    return mount


def renew_secret(mount: Path, files: Path) -> None:
    """Swap the volume's contents atomically, as the kubelet does when the Secret changes."""
    stamp = mount / f"..{time.monotonic_ns()}"
    stamp.mkdir()
    for name in ("ca.crt", "tls.crt", "tls.key"):
        (stamp / name).write_bytes((files / name).read_bytes())
    (mount / "..data_tmp").symlink_to(stamp.name)
    os.replace(mount / "..data_tmp", mount / "..data")


def start_redis(
    plan: Plan,
    pki: Path,
    root: Path,
    pod: str,
    servers: list[subprocess.Popen[bytes]],
    primary_port: int = 0,
    *,
    tls: Path | None = None,
    step: str | None = None,
    renew: str | None = None,
) -> int:
    """One Redis pod: the init container's script with its plan env, then the container's command
    (serve.sh running redis-server on the ConfigMap). Paths, the port and the pods' DNS names map
    to this machine (loopback ports); no Sentinel answers here, so the script takes the fresh-set
    roles (pod 0 primary). ``tls``: the Secret volume (default: ``pki`` itself)."""
    files = one(plan, "kubernetes:core/v1:ConfigMap", "redis-config")["data"]
    sts = one(plan, "kubernetes:apps/v1:StatefulSet", "redis")["spec"]["template"]["spec"]
    (init,) = sts["initContainers"]
    plan_env = {k: v["value"] for k, v in env_of(init).items() if "value" in v}
    port = free_port()
    data, run_dir, sentinel_dir = root / pod / "data", root / pod / "run", root / pod / "sentinel"
    data.mkdir(parents=True)
    run_dir.mkdir()
    sentinel_dir.mkdir()
    mapped = {
        "/etc/redis/tls": str(tls or pki),
        "/run/redis": str(run_dir),
        "/run/sentinel": str(sentinel_dir),
        "dir /data": f"dir {data}",
    }
    conf, script = files["redis.conf"], files["init.sh"]
    for a, b in mapped.items():
        conf, script = conf.replace(a, b), script.replace(a, b)
    conf = conf.replace("tls-port 6379", f"tls-port {port}")
    (root / pod / "redis.conf").write_text(conf)
    env = {"PATH": image_path(), **plan_env, "POD_NAME": pod, "REDIS_PASSWORD": PASSWORD}
    subprocess.run(["sh", "-c", script], env=env, check=True)
    runtime = (run_dir / "runtime.conf").read_text()
    # The pods' DNS names (pod.redis-headless...:6379) are loopback ports here.
    runtime = re.sub(r"replicaof \S+ 6379", f"replicaof 127.0.0.1 {primary_port}", runtime)
    runtime = re.sub(r"replica-announce-ip \S+", "replica-announce-ip 127.0.0.1", runtime)
    (run_dir / "runtime.conf").write_text(runtime)
    paths = {
        **mapped,
        "/etc/redis/conf/redis.conf": str(root / pod / "redis.conf"),
        "-p 6379 ": f"-p {port} ",
    }
    command = container_command(plan, "redis", "redis", "redis-config", root / pod, paths, step, renew)
    proc = subprocess.Popen(
        command,
        start_new_session=True,
        env={"PATH": image_path(), "POD_NAME": pod, "REDISCLI_AUTH": PASSWORD},
        stdout=(root / pod / "redis.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    servers.append(proc)
    assert_image_shell(proc)
    wait_until(lambda: redis_client(pki, port).ping() is True, f"redis {pod}", proc, root / pod / "redis.log")
    return port


def redis_client(pki: Path, port: int, password: str | None = PASSWORD) -> redis.Redis:
    return redis.Redis(
        host="localhost",
        port=port,
        password=password,
        ssl=True,
        ssl_ca_certs=str(pki / "ca.crt"),
        socket_timeout=5,
        retry=NO_RETRY,
    )


def test_redis_config_serves_tls_with_auth_and_replicates(
    plan: Plan, pki: Path, tmp_path: Path, servers: list[subprocess.Popen[bytes]]
) -> None:
    primary = start_redis(plan, pki, tmp_path, "redis-0", servers)
    # AUTH is required; the password file never leaves the pod's memory volume.
    with pytest.raises(redis.AuthenticationError):
        redis_client(pki, primary, password=None).set("k", "v")
    with pytest.raises(redis.AuthenticationError):
        redis_client(pki, primary, password="wrong").ping()
    # TLS only: a plain-text client gets no answer it can use.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(
            host="127.0.0.1", port=primary, password=PASSWORD, socket_timeout=1, retry=NO_RETRY
        ).ping()
    client = redis_client(pki, primary)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    with pytest.raises(redis.ResponseError, match="unknown command"):
        client.execute_command("FLUSHALL")
    # Pod 1 replicates pod 0 over TLS with the same password (masterauth).
    replica = start_redis(plan, pki, tmp_path, "redis-1", servers, primary_port=primary)
    linked = lambda: redis_client(pki, replica).info("replication")["master_link_status"] == "up"  # noqa: E731
    wait_until(linked, "replica sync", servers[-1], tmp_path / "redis-1" / "redis.log", attempts=300)
    # The primary takes writes only once it counts the replica good (min-replicas-to-write): at
    # its first acknowledgement, which a busy machine may delay past the replica's "up".
    good = lambda: client.info("replication").get("min_slaves_good_slaves", 0) >= 1  # noqa: E731
    primary_log = tmp_path / "redis-0" / "redis.log"
    wait_until(good, "primary counts its replica", servers[0], primary_log, attempts=300)
    client.set("skyfleet:session:1", "turns")
    assert client.execute_command("WAIT", 1, 10000) == 1
    assert redis_client(pki, replica).get("skyfleet:session:1") == b"turns"
    assert redis_client(pki, replica).info("replication")["role"] == "slave"


def issue(pki: Path, dest: Path) -> Path:
    """A renewed certificate (new key, same names) from ``pki``'s CA, as cert-manager issues one."""
    dest.mkdir()

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=dest, check=True, capture_output=True)

    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "tls.key",
        "-out", "tls.csr", "-subj", "/CN=localhost")  # fmt: skip
    run("x509", "-req", "-in", "tls.csr", "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
        "-CAcreateserial", "-out", "tls.crt", "-days", "2", "-extfile", str(pki / "ext.cnf"))  # fmt: skip
    (dest / "ca.crt").write_bytes((pki / "ca.crt").read_bytes())
    return dest


def served_certificate(pki: Path, port: int, *, nats_info: bool = False) -> bytes:
    """The certificate a TLS server on ``port`` presents to a new client (DER). ``nats_info``: the
    server first sends its INFO line in the clear, as NATS does, and the client then starts TLS."""
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if nats_info:
            info = b""
            while not info.endswith(b"\r\n"):
                info += sock.recv(1)
            assert info.startswith(b"INFO ") and b'"tls_required":true' in info, info
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True) or b""


def der(certificate: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(certificate.read_text())


def descendants(pid: int) -> list[int]:
    kids = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return kids + [d for k in kids for d in descendants(k)]


def server_of(proc: subprocess.Popen[bytes]) -> int:
    """The pid of the server serve.sh (``proc``) runs (its other child is its poll's sleep)."""
    pids = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    (server,) = [p for p in pids if Path(f"/proc/{p}/comm").read_text().strip().endswith("-server")]
    return server


def test_redis_reloads_a_renewed_certificate_in_place_one_pod_at_a_time(
    plan: Plan, pki: Path, tmp_path: Path, servers: list[subprocess.Popen[bytes]]
) -> None:
    """Redis keeps the certificate it loaded while cert-manager renews the Secret's files: serve.sh
    has it read them again (CONFIG SET, the same server), pod N only N steps after it saw the
    change. The kubelet's SIGTERM reaches the server."""
    tls = secret_volume(pki, tmp_path / "tls")
    primary = start_redis(plan, pki, tmp_path, "redis-0", servers, tls=tls)
    first = servers[-1]
    # Pod 1 waits one step (10 s here) after it sees the renewal.
    second_port = start_redis(plan, pki, tmp_path, "redis-1", servers, primary, tls=tls, step="10")
    second = servers[-1]
    pids = (server_of(first), server_of(second))
    assert served_certificate(pki, primary) == served_certificate(pki, second_port) == der(pki / "tls.crt")
    renewed = issue(pki, tmp_path / "renewed")
    renew_secret(tls, renewed)
    wait_until(
        lambda: served_certificate(pki, primary) == der(renewed / "tls.crt"),
        "redis-0 on the renewed certificate",
        first,
        tmp_path / "redis-0" / "redis.log",
    )
    assert served_certificate(pki, second_port) == der(pki / "tls.crt")  # not before its turn
    wait_until(
        lambda: served_certificate(pki, second_port) == der(renewed / "tls.crt"),
        "redis-1 on the renewed certificate",
        second,
        tmp_path / "redis-1" / "redis.log",
        attempts=300,
    )
    assert (server_of(first), server_of(second)) == pids  # read again, not restarted
    # The replica links again over TLS with the renewed certificates.
    linked = lambda: redis_client(pki, second_port).info("replication")["master_link_status"] == "up"  # noqa: E731
    wait_until(linked, "replica sync", second, tmp_path / "redis-1" / "redis.log", attempts=300)
    # The kubelet's SIGTERM is passed on: the server, and serve.sh's own watch, end with serve.sh.
    family = descendants(first.pid)
    assert pids[0] in family and len(family) >= 3  # the server, the watch and its sleep
    first.terminate()
    assert first.wait(timeout=30) == 0
    assert [p for p in family if Path(f"/proc/{p}").exists()] == []


def test_a_server_that_cannot_reload_is_restarted_on_a_renewed_certificate(
    plan: Plan, pki: Path, tmp_path: Path, servers: list[subprocess.Popen[bytes]]
) -> None:
    """Sentinel cannot read its TLS files again: its renewal ends the server, serve.sh exits
    with it at once (the kubelet then starts the container again on the new files). Run with
    redis-server, as Sentinel is, under the planned Sentinel container's renewal."""
    pod = one(plan, "kubernetes:apps/v1:StatefulSet", "redis")["spec"]["template"]["spec"]
    sentinel = next(c for c in pod["containers"] if c["name"] == "sentinel")
    tls = secret_volume(pki, tmp_path / "tls")
    port = start_redis(plan, pki, tmp_path, "redis-0", servers, tls=tls, renew=sentinel["command"][5])
    wrapper = servers[-1]
    server = server_of(wrapper)
    renew_secret(tls, issue(pki, tmp_path / "renewed"))
    assert wrapper.wait(timeout=30) == 0
    assert not Path(f"/proc/{server}").exists()
    again = subprocess.Popen(
        wrapper.args,
        start_new_session=True,
        env={"PATH": image_path(), "POD_NAME": "redis-0", "REDISCLI_AUTH": PASSWORD},
        stdout=(tmp_path / "redis-0" / "redis.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    servers.append(again)
    wait_until(
        lambda: served_certificate(pki, port) == der(tmp_path / "renewed" / "tls.crt"),
        "redis-0 restarted on the renewed certificate",
        again,
        tmp_path / "redis-0" / "redis.log",
    )


def test_nats_reloads_a_renewed_certificate_in_place(
    dev_plan: Plan, pki: Path, tmp_path: Path, servers: list[subprocess.Popen[bytes]]
) -> None:
    """NATS reloads its TLS files on SIGHUP: serve.sh sends it once the Secret's files change,
    and the same server presents the renewed certificate to new clients."""
    conf = one(dev_plan, "kubernetes:core/v1:ConfigMap", "nats-config")["data"]["nats.conf"]
    tls = secret_volume(pki, tmp_path / "tls")
    client, _ = start_nats(dev_plan, conf, pki, tmp_path, "nats-0", servers, tls=tls)
    wrapper = servers[-1]
    server = server_of(wrapper)
    assert served_certificate(pki, client, nats_info=True) == der(pki / "tls.crt")
    renewed = issue(pki, tmp_path / "renewed")
    renew_secret(tls, renewed)
    wait_until(
        lambda: served_certificate(pki, client, nats_info=True) == der(renewed / "tls.crt"),
        "nats on the renewed certificate",
        wrapper,
        tmp_path / "nats-0" / "nats.log",
    )
    assert server_of(wrapper) == server  # reloaded, not restarted


def start_nats(
    plan: Plan,
    conf_text: str,
    pki: Path,
    root: Path,
    pod: str,
    servers: list[subprocess.Popen[bytes]],
    *,
    tls: Path | None = None,
) -> tuple[int, int]:
    """One NATS pod: the container's command (serve.sh running nats-server) on its ConfigMap, on
    free loopback ports. ``tls``: the Secret volume (default: ``pki`` itself)."""
    client, monitor = free_port(), free_port()
    d = root / pod
    (d / "data").mkdir(parents=True)
    conf = conf_text.replace("/etc/nats/tls", str(tls or pki)).replace('"/data', f'"{d}/data')
    conf = conf.replace("port: 4222", f"port: {client}").replace("http_port: 8222", f"http_port: {monitor}")
    (d / "nats.conf").write_text(conf)
    paths = {"/etc/nats/tls": str(tls or pki), "/etc/nats/conf/nats.conf": str(d / "nats.conf")}
    proc = subprocess.Popen(
        container_command(plan, "nats", "nats", "nats-config", d, paths),
        start_new_session=True,
        env={"PATH": image_path(), "POD_NAME": pod, **NATS_PASSWORDS},
        stdout=(d / "nats.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    servers.append(proc)
    assert_image_shell(proc)
    health = f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"  # the pods' probe
    wait_until(
        lambda: urllib.request.urlopen(health, timeout=2).status == 200, f"nats {pod}", proc, d / "nats.log"
    )
    return client, monitor


async def create_streams(plan: Plan, pki: Path, port: int) -> dict[str, dict[str, Any]]:
    """What the setup Job does: send each stream file to JetStream's create API as is."""
    files = one(plan, "kubernetes:core/v1:ConfigMap", "nats-streams")["data"]
    tls = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    # As the Job does: its own user, which may only create and read the two streams.
    nc = await nats.connect(
        f"tls://localhost:{port}",
        tls=tls,
        connect_timeout=5,
        user="streams",
        password=NATS_PASSWORD["streams"],
    )
    try:
        created = {}
        for body in files.values():
            cfg = json.loads(body)
            reply = json.loads(
                (await nc.request(f"$JS.API.STREAM.CREATE.{cfg['name']}", body.encode(), 10)).data
            )
            assert "error" not in reply, reply
            created[cfg["name"]] = reply
    finally:
        await nc.close()
    # The api as its own user: it may publish tasks, and nothing the table does not grant.
    (c,) = one(plan, "kubernetes:apps/v1:Deployment", "api")["spec"]["template"]["spec"]["containers"]
    queue = parse_queue_url(env_of(c)[Env.QUEUE_URL]["value"])
    assert isinstance(queue, NatsQueue) and queue.user == "api"
    nc = await nats.connect(
        f"tls://localhost:{port}", tls=tls, connect_timeout=5, user="api", password=NATS_PASSWORD["api"]
    )
    try:
        js = nc.jetstream()
        assert (await js.publish(queue.subject, b"task")).stream == queue.stream
        with pytest.raises(nats.errors.Error):
            await js.publish(queue.dlq_subject, b"dead", timeout=2)  # the worker's subject
    finally:
        await nc.close()
    with pytest.raises(nats.errors.Error):  # an unknown client gets nothing
        await asyncio.wait_for(
            nats.connect(
                f"tls://localhost:{port}",
                tls=tls,
                connect_timeout=2,
                allow_reconnect=False,
                user="x",
                password="y",
            ),
            10,
        )
    return created


def test_dev_nats_config_runs_jetstream_with_tls_and_the_streams_apply(
    dev_plan: Plan, pki: Path, tmp_path: Path, servers: list[subprocess.Popen[bytes]]
) -> None:
    conf = one(dev_plan, "kubernetes:core/v1:ConfigMap", "nats-config")["data"]["nats.conf"]
    client, _ = start_nats(dev_plan, conf, pki, tmp_path, "nats-0", servers)
    created = run_async(create_streams(dev_plan, pki, client))
    tasks = created["AGENT_TASKS"]["config"]
    assert tasks["retention"] == "workqueue" and tasks["max_age"] == 345600 * 10**9
    assert tasks["metadata"]["skyfleet.max_deliver"] == "5"
    assert created["AGENT_TASKS_DLQ"]["config"]["max_age"] == 1209600 * 10**9


def test_prod_nats_config_forms_a_three_node_jetstream_cluster_over_mutual_tls(
    plan: Plan, pki: Path, tmp_path: Path, servers: list[subprocess.Popen[bytes]]
) -> None:
    conf = one(plan, "kubernetes:core/v1:ConfigMap", "nats-config")["data"]["nats.conf"]
    (tmp_path / "nats-t.conf").write_text(conf.replace("/etc/nats/tls", str(pki)))
    check = subprocess.run(
        [str(NATS_SERVER), "-t", "-c", str(tmp_path / "nats-t.conf")],
        env={"PATH": os.environ["PATH"], "POD_NAME": "nats-0", **NATS_PASSWORDS},
        capture_output=True,
    )
    assert check.returncode == 0, check.stderr.decode()
    # The peers' DNS names (nats-N.nats-headless...) map to loopback ports.
    routes = {f"nats-{i}.nats-headless.{NAMESPACE}.svc.cluster.local:6222": free_port() for i in range(3)}
    mapped = conf
    for peer, port in routes.items():
        mapped = mapped.replace(peer, f"127.0.0.1:{port}")
    clients = []
    for i, port in enumerate(routes.values()):
        own = mapped.replace("port: 6222", f"port: {port}")
        # The planned store limit is the volume's; this machine's scratch disk takes 1 GiB.
        proc_conf, limits = re.subn(r"max_file_store: \d+MB", "max_file_store: 1GB", own)
        assert limits == 1, "the planned JetStream store limit was not found"
        clients.append(start_nats(plan, proc_conf, pki, tmp_path, f"nats-{i}", servers)[0])
    # R3 streams need all three peers: created only if routes authenticate each other.
    created = {}
    for _ in range(100):
        try:
            created = run_async(create_streams(plan, pki, clients[0]))
            break
        except (AssertionError, nats.errors.Error, TimeoutError):
            time.sleep(0.2)
    assert created, "the streams could not be created on the cluster"
    assert created["AGENT_TASKS"]["config"]["num_replicas"] == 3
    assert len(created["AGENT_TASKS"]["cluster"]["replicas"]) == 2
