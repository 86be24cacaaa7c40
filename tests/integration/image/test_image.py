"""The app image is the Dockerfile's, and it runs as the plans say.

Builds ``agent_app/Dockerfile`` with podman on the local base, then runs the api and the worker
of each shipped prod site (ECS task definitions, Kubernetes Deployments, Cloud Run services)
from it, every container as its plan says (``skyfleet.lab.runtime``), against the site's
managed services as the twin runs them, and checks what actually runs: the plan's user and
groups, a read-only root where the plan says so, the plan's mounts, the plan's environment
(only the lab's rewrite table differs), a turn and a task end to end; and that a defect planted
in a plan makes the container fail with the app's own message.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_app.contract import DEFAULT_PORT, READINESS_PATH, RUN_AS_GID, RUN_AS_UID, SCRATCH_DIR
from skyfleet.lab import container, image, runtime
from skyfleet.lab.container import Podman
from skyfleet.lab.model import (
    ECS_TASK_DEFINITION,
    PodSpec,
    is_secret,
    plain,
    pods,
)
from skyfleet.plan import Plan
from skyfleet.testing.servers import wait_until
from tests.integration.image.conftest import SITES, SKIP_REASON, App, Site

pytestmark = [
    pytest.mark.skipif(bool(SKIP_REASON), reason=SKIP_REASON or "podman can run containers"),
    # The first test pays for the session's image builds (base cold: about a minute).
    pytest.mark.timeout(900),
]

# Every site, as a module-scoped parameter of the `site` fixture (one site up at a time).
every_site = pytest.mark.parametrize("site", SITES, indirect=True, scope="module")
# Where the root is read-only, nothing but the plan's writable mounts takes a write; the app's
# code and venv included.
READ_ONLY_PATHS = ("/", "/app", "/app/agent_app", "/opt/venv", "/etc", "/var/tmp", "/run", "/root", "/usr")
# What differs from each plan, said out loud (runtime.differences), besides the image: the
# endpoints the lab cannot serve as planned (the twin's rewrite table) and the variables the
# platform adds. Patterns (fnmatch): lab addresses are the test's own.
EXPECTED_DIFFERENCES = {
    "aws-prod": [
        "platform variables: AWS_ACCESS_KEY_ID, AWS_DEFAULT_REGION, AWS_REGION, AWS_SECRET_ACCESS_KEY"
    ],
    "onprem-prod": [],
    "gcp-prod": [
        "AGENT_REDIS_URL: Memorystore endpoint (a VPC address) 10.41.0.13:6378 -> "
        "memorystore.gcp-prod.lab.internal:6378",
        "PUBSUB_EMULATOR_HOST (the platform's): Pub/Sub API for gcp-prod-{which}@*.iam.gserviceaccount.com "
        "(PUBSUB_EMULATOR_HOST, plain gRPC) pubsub.googleapis.com:443 -> 10.233.*",
        "platform variables: PUBSUB_EMULATOR_HOST",
    ],
}
# The twin's whole table per site (`skyfleet lab status` prints it): nothing else is rewritten.
REWRITES = {"aws-prod": 0, "onprem-prod": 0, "gcp-prod": 3}


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


def exec_in(podman: Podman, name: str, code: str) -> subprocess.CompletedProcess[str]:
    """Run Python in the running container, as its user (podman exec)."""
    return podman.run("exec", name, "python", "-c", code, check=False)


def image_env(podman: Podman, tag: str) -> dict[str, str]:
    raw = podman.run("image", "inspect", "--format", "{{json .Config.Env}}", tag).stdout
    return dict(item.split("=", 1) for item in json.loads(raw))


def _gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{p}").exists() for p in pids)


# --- the image ----------------------------------------------------------------------------------


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


# --- each site's api and worker, from the plan ---------------------------------------------------


@every_site
def test_api_and_worker_serve_a_turn_and_a_task(app: App) -> None:
    key = app.site.built.values.api_keys[0]
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=app.url, headers=headers, timeout=10, trust_env=False) as client:
        # The on-prem cache takes a write once a replica has synced (the plan's redis.conf says
        # min-replicas-to-write 1); until then the api answers 503 "retry shortly", as it would
        # on a cluster just brought up, and a client retries.
        session = wait_until(
            lambda: (r := client.post("/v1/sessions")).status_code != 503 and r,
            timeout=60,
            interval=0.5,
            what="the api to take a session (its cache to take writes)",
        )
        assert session.status_code == 201, session.text
        session_id = session.json()["id"]
        turn = client.post(f"/v1/sessions/{session_id}/messages", json={"content": "hello there"})
        assert turn.status_code == 200, turn.text
        assert turn.json()["reply"]["content"]
        assert turn.headers["X-Skyfleet-Site"] == app.site.name
        accepted = client.post(f"/v1/sessions/{session_id}/tasks", json={"input": "what is 6*7"})
        assert accepted.status_code == 202, accepted.text
        task_id = accepted.json()["task_id"]
        task = wait_until(
            lambda: (body := client.get(f"/v1/tasks/{task_id}").json())["status"] == "succeeded" and body,
            timeout=60,
            interval=0.2,
            what=f"task {task_id} to succeed",
        )
        assert task["result"] == "6*7 = 42"
    # Done by the worker container: it logs the task once its result is stored (the api never
    # runs one).
    wait_until(
        lambda: task_id in app.worker.log_file.read_text(errors="replace"),
        timeout=10,
        what=f"the worker container to log task {task_id}",
    )


@every_site
def test_what_differs_from_the_plan_is_said(app: App) -> None:
    for which, run in (("api", app.api), ("worker", app.worker)):
        found = runtime.differences(run, app.site.built.values)
        print(f"\n{run.origin}:\n  " + "\n  ".join(found))
        image_line = f"image: the plan's {run.container.image} runs as {app.site.ctx.image} (built here)"
        assert found[0] == image_line
        expected = [e.replace("{which}", which) for e in EXPECTED_DIFFERENCES[app.site.name]]
        assert len(found[1:]) == len(expected), found
        for line, pattern in zip(found[1:], expected, strict=True):
            assert fnmatch.fnmatchcase(line, pattern), (line, pattern)
    table = [f"{r.what}: {r.plan} -> {r.lab}" for r in app.site.built.values.rewrites]
    print("\nrewrite table:\n  " + "\n  ".join(table or ["(empty)"]))
    assert len(table) == REWRITES[app.site.name], table


def expected_env(site: Site, run: runtime.Run) -> dict[str, str]:
    """The container's variables, from the plan alone: plain values verbatim (through the
    rewrite table), secrets as the lab serves the plan's values, the downward API."""
    values, plan_values = site.built.values, site.twin.plan_values
    env = {}
    for var in run.container.env:
        if var.value is not None:
            value = var.value
            for r in values.rewrites:
                if r.site == site.name and r.plan in value:
                    value = value.replace(r.plan, r.lab)
            env[var.name] = value
        elif var.secret is not None:
            env[var.name] = values.secret(plain(plan_values.secret_value(var.secret)))
        elif var.field_path == "metadata.name":
            env[var.name] = run.pod.name
    return env


@every_site
@pytest.mark.parametrize("which", ["api", "worker"])
def test_containers_run_as_the_plan_says(app: App, which: str) -> None:
    site = app.site
    run = {"api": app.api, "worker": app.worker}[which]
    c, spec = run.container, run.pod.spec
    state = container.inspect(site.podman, run.spec.name)
    assert state is not None and state.running and state.pid
    pid = state.pid

    # User and groups: the plan's (Cloud Run: the image's USER), the pod's fsGroup added.
    uid = c.user if c.user is not None else RUN_AS_UID
    gid = c.group if c.group is not None else RUN_AS_GID
    for p in pids_in(pid):
        fields = status_fields(p)
        assert fields["Uid"].split() == [str(uid)] * 4, (p, fields["Uid"])
        assert fields["Gid"].split() == [str(gid)] * 4, (p, fields["Gid"])
        fs_group = {spec.fs_group} if spec.fs_group is not None else set()
        assert {int(g) for g in fields["Groups"].split()} | {gid} == {gid} | fs_group
        assert fields["CapEff"] == "0000000000000000"
        assert fields["NoNewPrivs"] == "1"

    # The plan's own probe passes, run as its platform runs it (ECS: the health check's command
    # inside the container; Kubernetes and Cloud Run: HTTP against the pod's address).
    probe = c.readiness or c.startup or c.liveness
    assert probe is not None and runtime.ready(site.podman, run), probe

    # Its network namespace is its pod's (an awsvpc task's, a pod's, an instance's own).
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{run.pod.netns}").st_ino

    # The environment: exactly the plan's AGENT_* variables, values as the plan gives them; the
    # rest is the image's ENV, the platform's variables and what every runtime sets.
    env = environ(pid)
    want = expected_env(site, run)
    assert {k: env.get(k) for k in want} == want
    assert {k for k in env if k.startswith("AGENT_")} <= set(want)  # the app reads nothing else
    extra = set(env) - set(want) - set(image_env(site.podman, site.ctx.image)) - set(run.pod.platform_env)
    assert extra <= {"HOSTNAME", "container", "TERM"}, extra
    assert {k: env[k] for k in run.pod.platform_env} == dict(run.pod.platform_env)
    # Secrets reach the container through podman's environment, never its command line.
    argv = container.create_args(run.spec)
    for var in c.env:
        if var.secret is not None:
            assert not any(want[var.name] in a for a in argv), var.name

    # Root read-only where the plan says so (Cloud Run: writable); the plan's mounts as planned.
    # Debian's /var/run is a link to /run: mount points show the resolved path.
    opts = {
        p.replace("/run/", "/var/run/", 1) if p.startswith("/run/") else p: o
        for p, o in mount_options(pid).items()
    }
    read_only_root = c.read_only_root and not spec.writable_root
    assert ("ro" in opts["/"]) is read_only_root
    writable = [m.path for m in c.mounts if not m.read_only and spec.volume(m.volume).kind == "empty"]
    read_only = [m.path for m in c.mounts if m.read_only]
    for path in writable:
        assert "rw" in opts[path], (path, opts[path])
    for path in read_only:
        assert "ro" in opts[path], (path, opts[path])
    files = {  # a secret volume's files, with the mode and group the platform gives them
        f"{m.path}/{item.path}": (item.mode or volume.default_mode, spec.fs_group)
        for m in c.mounts
        if (volume := spec.volume(m.volume)).kind == "secret"
        for item in volume.items
    }
    probe = f"""
import json, os
out = {{"writes": {{}}, "files": {{}}}}
for d in {[SCRATCH_DIR, *writable, *READ_ONLY_PATHS, *read_only]!r}:
    try:
        open(os.path.join(d, "probe-" + str(os.getpid())), "w").close()
        out["writes"][d] = True
    except OSError:
        out["writes"][d] = False
for f in {list(files)!r}:
    st = os.stat(f)
    out["files"][f] = [st.st_mode & 0o7777, st.st_gid, len(open(f).read()) > 0]
print(json.dumps(out))
"""
    out = exec_in(site.podman, run.spec.name, probe)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["writes"][SCRATCH_DIR], f"{SCRATCH_DIR}: the app's scratch dir takes no write"
    for path in writable:
        assert seen["writes"][path], f"{path}: the plan mounts it writable"
    for path in read_only:
        assert not seen["writes"][path], f"{path}: the plan mounts it read-only"
    if read_only_root:
        taken = [d for d in READ_ONLY_PATHS if seen["writes"][d] and d not in writable]
        assert taken == [], f"writable on a read-only root: {taken}"
    for path, (mode, group) in files.items():
        assert seen["files"][path] == [mode, group if group is not None else 0, True], path


on_aws = pytest.mark.parametrize("site", ["aws-prod"], indirect=True, scope="module")


@on_aws
def test_ecs_scratch_dir_is_the_tasks_bind_mount_opened_by_its_init_container(app: App) -> None:
    """Fargate gives a task's bind mount to root, mode 0755: the plan's non-essential root
    container (scratch-permissions) opens it before the app starts, as it does on ECS."""
    assert [c.name for c in app.api.pod.spec.init_containers] == ["scratch-permissions"]
    code = "import os; s = os.stat('/tmp'); print(oct(s.st_mode & 0o7777), s.st_uid)"
    out = exec_in(app.site.podman, app.api.spec.name, code)
    assert out.stdout.split() == ["0o1777", "0"], out


# --- defects planted in a plan -----------------------------------------------------------------


def _edit_container(plan: Plan, main: str, edit: Callable[[dict[str, Any], str], None]) -> Plan:
    """A copy of ``plan`` whose container ``main`` (in its platform's own form) is ``edit``ed;
    ``edit`` gets the container's dict and the platform's env key."""
    planted = copy.deepcopy(plan)
    for r in planted.resources:
        if r.type == ECS_TASK_DEFINITION:
            wire = r.inputs["containerDefinitions"]
            defs = json.loads(plain(wire))
            for c in defs:
                if c["name"] == main:
                    edit(c, "environment")
            text = json.dumps(defs)
            r.inputs["containerDefinitions"] = {**wire, "value": text} if is_secret(wire) else text
        elif r.type == "gcp:cloudrunv2/service:Service":
            for c in (r.inputs.get("template") or {}).get("containers") or []:
                if c.get("name") == main:
                    edit(c, "envs")
        elif r.type == "kubernetes:apps/v1:Deployment":
            for c in r.inputs["spec"]["template"]["spec"]["containers"]:
                if c["name"] == main:
                    edit(c, "env")
    return planted


def planted_spec(plan: Plan, main: str) -> PodSpec:
    found = [p for p in pods(plan, image_user=RUN_AS_UID) if [c.name for c in p.main_containers] == [main]]
    assert len(found) == 1, found
    return found[0]


def set_env(name: str, value: str) -> Callable[[dict[str, Any], str], None]:
    def edit(c: dict[str, Any], key: str) -> None:
        entries = [e for e in c.get(key) or [] if e.get("name") != name]
        c[key] = [*entries, {"name": name, "value": value}]

    return edit


def run_to_exit(site: Site, planted: PodSpec, folder: str) -> tuple[int, str, runtime.Run]:
    """Start the planted pod where replica 1 lives; return the app's exit code and its log."""
    pod = site.place(site.pod(planted.main_containers[0].name, 1), planted, folder)
    runs = site.start(pod, wait=False)
    try:
        (run,) = runs
        code = container.wait_exit(site.podman, run.spec.name, timeout=90)
        return code, run.log_file.read_text(errors="replace"), run
    finally:
        site.remove(runs)


@every_site
def test_an_env_value_the_app_rejects_fails_the_container_with_its_message(site: Site) -> None:
    plan = _edit_container(site.plan, "api", set_env("AGENT_LOG_LEVEL", "verbose"))
    planted = planted_spec(plan, "api")
    code, log, run = run_to_exit(site, planted, "api-1-bad-log-level")
    assert code == 2, log
    assert "agent_app: invalid configuration" in log
    assert "AGENT_LOG_LEVEL" in log and "'verbose'" in log
    assert run.spec.env["AGENT_LOG_LEVEL"] == "verbose"  # the planted value, verbatim
    assert container.inspect(site.podman, run.spec.name) is None


def _without_fs_group(plan: Plan, deployment: str) -> Plan:
    """A copy of ``plan`` whose Deployment's pod securityContext has no fsGroup."""
    planted = copy.deepcopy(plan)
    for r in planted.resources:
        if r.type == "kubernetes:apps/v1:Deployment" and r.inputs["metadata"]["name"] == deployment:
            r.inputs["spec"]["template"]["spec"]["securityContext"].pop("fsGroup")
    return planted


@pytest.mark.parametrize("site", ["onprem-prod"], indirect=True, scope="module")
def test_the_pods_fs_group_is_what_lets_its_user_read_the_secret(site: Site) -> None:
    """The kubelet writes the API keys Secret root:<fsGroup> 0440 and gives the pod's user the
    fsGroup: a user of another primary group reads it through that group alone."""

    def other_group(c: dict[str, Any], _: str) -> None:
        c["securityContext"]["runAsGroup"] = 10002

    spec = planted_spec(_edit_container(site.plan, "api", other_group), "api")
    assert (spec.main_containers[0].group, spec.fs_group) == (10002, 10001)
    pod = site.place(site.pod("api", 1), spec, "api-1-other-group")
    runs = site.start(pod)
    try:
        state = container.inspect(site.podman, runs[0].spec.name)
        assert state is not None and state.pid
        fields = status_fields(state.pid)
        assert fields["Gid"].split() == ["10002"] * 4 and "10001" in fields["Groups"].split()
    finally:
        site.remove(runs)


@pytest.mark.parametrize("site", ["onprem-prod"], indirect=True, scope="module")
def test_a_pod_whose_user_cannot_read_its_secret_fails_with_the_apps_message(site: Site) -> None:
    """Without the pod's fsGroup, the kubelet writes the API keys Secret root:root 0440: the
    plan's user cannot read it, and the api says so and exits."""
    spec = planted_spec(_without_fs_group(site.plan, "api"), "api")
    assert spec.fs_group is None
    code, log, _ = run_to_exit(site, spec, "api-1-no-fsgroup")
    assert code == 2, log
    assert "agent_app: invalid configuration" in log
    assert "AGENT_API_KEYS_FILE (/var/run/secrets/skyfleet/api-keys): cannot read: Permission denied" in log


@on_aws
def test_an_ecs_task_without_its_scratch_init_container_cannot_write_its_scratch_dir(site: Site) -> None:
    """The defect the plan's init container exists for: without it the app's user meets the
    bind mount as Fargate creates it (root's, 0755), and a write to the scratch dir fails."""
    planted = copy.deepcopy(site.plan)
    for r in planted.resources:
        if r.type == ECS_TASK_DEFINITION:
            wire = r.inputs["containerDefinitions"]
            defs = json.loads(plain(wire))
            defs = [c for c in defs if c["name"] != "scratch-permissions"]
            for c in defs:
                c.pop("dependsOn", None)
            text = json.dumps(defs)
            r.inputs["containerDefinitions"] = {**wire, "value": text} if is_secret(wire) else text
    spec = planted_spec(planted, "api")
    assert spec.init_containers == []
    pod = site.place(site.pod("api", 1), spec, "api-1-no-init")
    runs = site.start(pod)
    try:
        out = exec_in(site.podman, runs[0].spec.name, "open('/tmp/probe', 'w')")
        assert out.returncode != 0 and "Permission denied: '/tmp/probe'" in out.stderr, out
    finally:
        site.remove(runs)


# --- lifecycle: what the lab does to a container (on the Kubernetes site) ------------------------

on_onprem = pytest.mark.parametrize("site", ["onprem-prod"], indirect=True, scope="module")


def start_spare(site: Site) -> tuple[runtime.Run, list[int]]:
    """A ready api container in replica 1's pod, and the host pids of its processes."""
    (run,) = site.start(site.pod("api", 1))
    state = container.inspect(site.podman, run.spec.name)
    assert state is not None and state.pid
    return run, pids_in(state.pid)


@on_onprem
def test_stop_drains_and_leaves_nothing(site: Site) -> None:
    run, pids = start_spare(site)
    try:
        assert container.stop(site.podman, run.spec.name) == 0  # SIGTERM: drained and exited cleanly
        assert "drained" in run.log_file.read_text(errors="replace")
        assert container.inspect(site.podman, run.spec.name) is None
        wait_until(lambda: _gone(pids), timeout=10, what="the container's processes to be gone")
    finally:
        site.remove([run])


@on_onprem
def test_stop_after_a_pause_fault_still_drains(site: Site) -> None:
    """A pause fault SIGSTOPs the tracked pid; stopping then must not end in SIGKILL."""
    run, pids = start_spare(site)
    try:
        os.killpg(pids[0], signal.SIGSTOP)
        assert container.stop(site.podman, run.spec.name) == 0
        assert "drained" in run.log_file.read_text(errors="replace")
    finally:
        site.remove([run])


@on_onprem
def test_kill_kills_the_container_itself(site: Site) -> None:
    run, pids = start_spare(site)
    try:
        before = run.log_file.read_text(errors="replace").count("drained")
        assert container.kill(site.podman, run.spec.name) == 137  # SIGKILL: no drain
        assert run.log_file.read_text(errors="replace").count("drained") == before
        assert container.inspect(site.podman, run.spec.name) is None
        wait_until(lambda: _gone(pids), timeout=10, what="the container's processes to be gone")
    finally:
        site.remove([run])


@on_onprem
def test_sigkill_of_the_tracked_pid_is_a_site_loss(site: Site) -> None:
    """The lab's own kill path (procs: SIGKILL to the recorded pid) kills the container."""
    run, pids = start_spare(site)
    try:
        os.killpg(min(pids), signal.SIGKILL)
        assert container.wait_exit(site.podman, run.spec.name, timeout=30) == 137
        wait_until(lambda: _gone(pids), timeout=10, what="the container's processes to be gone")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://{run.pod.address}:{run.container.ports[0]}{READINESS_PATH}", timeout=2)
        # The exited container waits for removal (its exit code, as a stopped task keeps it);
        # the lab's teardown finds it by label.
        assert run.spec.name in {s.name for s in container.leftovers(site.podman, site.ctx.lab)}
    finally:
        site.remove([run])


@on_onprem
def test_leftovers_are_found_and_removed_after_a_crash(site: Site, tmp_path: Path) -> None:
    """A lab that crashed knows nothing but its marker: that is enough to clean up."""
    (run,) = [r for r in site.runs(site.pod("api", 1)) if not r.spec.init]
    other = str(tmp_path)
    spec = run.spec.model_copy(update={"lab": other, "name": container.container_name("0ther0", "api-1")})
    started = container.start(site.podman, spec, log_file=tmp_path / "api.log", secret_values=run.secrets)
    assert started.pid is not None
    try:
        found = container.leftovers(Podman(), other)  # a fresh client: nothing remembered
        assert [s.name for s in found] == [spec.name] and found[0].running
        assert run.spec.name not in [s.name for s in found]  # another lab's containers are not its
        assert spec.name not in [s.name for s in container.leftovers(site.podman, site.ctx.lab)]
        assert container.remove_leftovers(Podman(), other) == [spec.name]
        assert container.leftovers(Podman(), other) == []
        wait_until(lambda: not Path(f"/proc/{started.pid}").exists(), timeout=10, what="the app to be gone")
    finally:
        container.remove(site.podman, spec.name)
