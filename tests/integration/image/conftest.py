"""Fixtures for the image tests: the app image built from agent_app/Dockerfile (once per
session, on the content-keyed local base), and one site of the shipped prod stacks at a time,
built from its offline plan.

A site is the twin's (``skyfleet.lab.twin``): its network (a namespace per pod), its managed
services (ElastiCache and SQS as redis-server and moto's server, Memorystore and Pub/Sub, the
on-prem Redis and NATS StatefulSets with the plan's own configs), all as the plan configures
them. Its app pods (the api and the worker) then run in the image with podman, every container
from its plan (``skyfleet.lab.runtime``). Skipped, with the reason, where podman or the
servers cannot run."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import random
import secrets
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agent_app.contract import READINESS_PATH
from skyfleet.lab import container, fabric, image, pods, runtime, twin
from skyfleet.lab.container import Podman, problems
from skyfleet.lab.model import PodSpec
from skyfleet.lab.network import _subnet_in_use
from skyfleet.lab.targets.base import SiteTwin
from skyfleet.plan import Plan
from skyfleet.plan.runner import plan_stack
from skyfleet.testing.servers import wait_until

ROOT = Path(__file__).resolve().parents[3]
SITES = ("aws-prod", "onprem-prod", "gcp-prod")
READY_TIMEOUT = 90.0
# The twin's servers: this machine's builds (the venv's for nats-server and moto).
SERVERS = ("redis-server", "nats-server", "moto_server", "unshare", "nsenter", "ip")


def missing() -> list[str]:
    found = problems()
    if shutil.which("debootstrap") is None and shutil.which("debootstrap", path="/usr/sbin:/sbin") is None:
        found.append(f"debootstrap is not installed: {image.DEBOOTSTRAP_HINT}")
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    absent = [s for s in SERVERS if shutil.which(s, path=path) is None]
    if absent:
        found.append(f"{', '.join(absent)} not installed: bash scripts/install.sh --dev (as root)")
    return found


SKIP_REASON = "; ".join(missing())


@pytest.fixture(scope="session")
def podman() -> Podman:
    return Podman()


@pytest.fixture(scope="session")
def base_image(podman: Podman) -> image.Built:
    """The local base (debootstrapped once, then found by its content key)."""
    return image.build_base(podman)


@pytest.fixture(scope="session")
def app_image(podman: Podman, base_image: image.Built) -> Iterator[image.Built]:
    """The app image from agent_app/Dockerfile, under a tag of this session's own.

    A Dockerfile that does not build raises here, which errors every test that needs it.
    """
    tag = f"localhost/skyfleet/agent-app:test-{uuid.uuid4().hex[:8]}"
    built = image.build_app(podman, base=base_image.tag, tag=tag)
    yield built
    podman.run("rmi", "--force", tag, check=False)


@pytest.fixture(scope="session")
def plans() -> dict[str, Plan]:
    """The shipped site stacks' offline plans, each planned once per session when first asked."""
    return {}


def free_subnet() -> str:
    """A private /24 no interface here uses (labs of `skyfleet lab up` take 10.231.x.0/24)."""
    for _ in range(50):
        subnet = f"10.233.{random.randint(1, 254)}.0/24"
        if _subnet_in_use(subnet) is None:
            return subnet
    raise RuntimeError("no free 10.233.x.0/24 found for the test site")


@dataclass
class Site:
    """One site of a stack's plan, its backing services up; app pods run in podman on demand."""

    name: str
    plan: Plan
    built: twin.Built
    ctx: runtime.SiteContext
    podman: Podman

    @property
    def twin(self) -> SiteTwin:
        return self.built.sites[0]

    @property
    def state_dir(self) -> Path:
        return Path(self.built.state.state_dir)

    def pod(self, main: str, index: int = 0) -> pods.Pod:
        """The placed replica ``index`` of the workload whose main container is ``main``."""
        for pod in self.built.placed.values():
            if pod.index == index and [c.name for c in pod.spec.main_containers] == [main]:
                return pod
        raise KeyError(f"{self.name}: no replica {index} of a workload running {main!r}")

    def place(self, like: pods.Pod, spec: PodSpec, folder_name: str) -> pods.Pod:
        """``spec`` (from a changed plan) placed where ``like`` is, its volumes written afresh
        into a folder of its own, as the platform would write them for that spec."""
        pod = dataclasses.replace(like, spec=spec, folder=like.folder.with_name(folder_name))
        issuers = pods.Issuers(self.twin.issuers, cache=self.state_dir / "certificates" / self.name)
        for volume in spec.volumes:
            pods.materialize_volume(
                pod, volume, self.built.values, self.twin.plan_values, issuers, self.ctx.data_dir
            )
        return pod

    def runs(self, pod: pods.Pod) -> list[runtime.Run]:
        return runtime.pod_runs(pod, self.ctx)

    def start(self, pod: pods.Pod, *, wait: bool = True) -> list[runtime.Run]:
        """Start ``pod`` as its platform would (init containers to completion first); with
        ``wait``, until every main container answers its readiness path (fail with its log if
        one exits)."""
        runs = self.runs(pod)
        mains = [r for r in runs if not r.spec.init]
        runtime.start_pod(self.podman, runs)
        if wait:
            for run in mains:
                self.wait_ready(run)
        return mains

    def wait_ready(self, run: runtime.Run) -> None:
        port = run.container.ports[0]
        url = f"http://{run.pod.address}:{port}{READINESS_PATH}"

        def check() -> str | None:
            state = container.inspect(self.podman, run.spec.name)
            if state is None or not state.running:
                return "exited"
            try:
                with httpx.Client(trust_env=False, timeout=2) as client:
                    return "ready" if client.get(url).status_code == 200 else None
            except httpx.HTTPError:
                return None

        try:
            outcome = wait_until(check, timeout=READY_TIMEOUT, interval=0.1, what=f"{url} 200")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{runtime.describe_failure(self.podman, run)}") from None
        assert outcome == "ready", runtime.describe_failure(self.podman, run)

    def remove(self, runs: list[runtime.Run]) -> None:
        for run in runs:
            container.remove(self.podman, run.spec.name)


def standalone(stack: str, directory: Path) -> Path:
    """A copy of the project whose ``stack`` imports no fleet environment."""
    import yaml

    shutil.copy(ROOT / "Pulumi.yaml", directory / "Pulumi.yaml")
    (directory / "infra").symlink_to(ROOT / "infra")
    (directory / "stacks").mkdir()
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{stack}.yaml").read_text())
    doc.pop("environment", None)
    doc["config"]["skyfleet:apiKeys"] = {"secure": "v1:c3RhbmRhbG9uZQ==:placeholder"}
    (directory / "stacks" / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


@pytest.fixture(scope="module")
def site(
    request: pytest.FixtureRequest,
    podman: Podman,
    app_image: image.Built,
    plans: dict[str, Plan],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Site]:
    """The site ``request.param`` (a stack) of the twin: its network and managed services up,
    built from the plan, in namespaces and a subnet of its own. Two replicas of each workload
    are placed (the plan runs more): replica 0 serves, replica 1 is for the tests that plant a
    defect or kill a container.

    The site stands alone: the stack as a one-site deployment (no fleet, client keys of its own),
    since its fleet's other sites are not here and a fleet acknowledges a write only once a
    majority of its sites hold it (tests/integration/agent_app/test_fleet.py and the lab cover
    the fleet)."""
    stack = str(request.param)
    if stack not in plans:
        plans[stack] = plan_stack(standalone(stack, tmp_path_factory.mktemp(f"project-{stack}")), stack)
    plan = plans[stack]
    state_dir = tmp_path_factory.mktemp(f"twin-{stack}")
    lab_id = secrets.token_hex(3)
    built = twin.build([plan], state_dir=state_dir, lab_id=lab_id, subnet=free_subnet(), max_replicas=2)
    assert ipaddress.IPv4Network(built.state.fabric.subnet).is_private
    try:
        twin.start_backing(built)
        ctx = runtime.SiteContext.of(built, built.sites[0].site, podman=podman, image=app_image.tag)
        yield Site(name=built.sites[0].site, plan=plan, built=built, ctx=ctx, podman=podman)
    finally:
        container.remove_leftovers(podman, str(state_dir))
        twin.stop(built.state)
        left = fabric.destroy_by_id(lab_id)  # what stop missed, found by the lab id alone
    assert container.leftovers(podman, str(state_dir)) == []
    assert left == [], f"twin.stop left {left}"


@dataclass
class App:
    """Replica 0 of the site's api and worker, running in the image, ready."""

    site: Site
    api: runtime.Run
    worker: runtime.Run

    @property
    def url(self) -> str:
        return f"http://{self.api.pod.address}:{self.api.container.ports[0]}"


@pytest.fixture(scope="module")
def app(site: Site) -> Iterator[App]:
    (api,) = site.start(site.pod("api"))
    (worker,) = site.start(site.pod("worker"))
    yield App(site, api, worker)
    for run in (api, worker):
        container.stop(site.podman, run.spec.name)
