"""The on-prem faults' calls on the wire, against a stand-in for the Kubernetes API (no API server
runs here): the objects are the onprem-prod plan's own (its api Deployment and NetworkPolicies),
and the stand-in applies a patch only as its Content-Type says, as the API server does (a JSON
patch is a list of operations; a merge patch an object)."""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.outputs import SiteOutputs
from skyfleet.drills.actions import kubernetes
from skyfleet.plan import Plan, plan_stack
from tests.support.plans import ROOT

POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return plan_stack(ROOT, "onprem-prod")


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


def _json_patch(target: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902 add/replace at an object member path (what the faults send)."""
    out = copy.deepcopy(target)
    for op in ops:
        assert op["op"] in ("add", "replace"), op
        *parents, last = op["path"].strip("/").split("/")
        node = out
        for p in parents:
            node = node[p]
        node[last] = op["value"]
    return out


def _served(value: Any) -> Any:
    """A planned manifest as the API server serves it: the plan's wire numbers are doubles."""
    if isinstance(value, dict):
        return {k: _served(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_served(v) for v in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


class Cluster:
    """The namespace's objects, as the API server keeps them."""

    def __init__(self, plan: Plan) -> None:
        self.namespace = plan.outputs["namespace"]
        deployment = next(
            r.inputs
            for r in plan.of_type("kubernetes:apps/v1:Deployment")
            if r.inputs["metadata"]["name"] == "api"
        )
        self.deployment = {**_served(deployment), "kind": "Deployment", "apiVersion": "apps/v1"}
        self.replicas = int(self.deployment["spec"].get("replicas") or 3)
        self.policies = {
            r.inputs["metadata"]["name"]: {**_served(r.inputs), "kind": "NetworkPolicy"}
            for r in plan.of_type(POLICY)
        }
        self.content_types: list[str] = []


def _handler(cluster: Cluster) -> type[BaseHTTPRequestHandler]:
    ns = cluster.namespace
    apps = f"/apis/apps/v1/namespaces/{ns}/deployments/"
    net = f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> Any:
            return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")

        def _patched(self, current: dict[str, Any]) -> dict[str, Any] | None:
            kind = self.headers.get("Content-Type", "").split(";")[0]
            cluster.content_types.append(kind)
            body = self._body()
            if kind == "application/json-patch+json" and isinstance(body, list):
                return _json_patch(current, body)
            if kind in (
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ) and isinstance(body, dict):
                return _merge(current, body)
            self._send(400, {"kind": "Status", "status": "Failure", "reason": "BadRequest", "code": 400})
            return None

        def _scale(self) -> dict[str, Any]:
            return {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": {"name": "api", "namespace": ns},
                "spec": {"replicas": cluster.replicas},
            }

        def do_GET(self) -> None:
            path = self.path.split("?")[0]
            if path == apps + "api":
                self._send(200, cluster.deployment)
            elif path == apps + "api/scale":
                self._send(200, self._scale())
            elif path == net:
                items = list(cluster.policies.values())
                self._send(
                    200, {"kind": "NetworkPolicyList", "apiVersion": "networking.k8s.io/v1", "items": items}
                )
            else:
                self._send(404, {"kind": "Status", "code": 404})

        def do_PATCH(self) -> None:
            path = self.path.split("?")[0]
            if path == apps + "api/scale":
                patched = self._patched(self._scale())
                if patched is not None:
                    cluster.replicas = int(patched["spec"]["replicas"])
                    self._send(200, self._scale())
            elif (m := re.fullmatch(re.escape(net) + r"/([^/]+)", path)) and m[1] in cluster.policies:
                patched = self._patched(cluster.policies[m[1]])
                if patched is not None:
                    cluster.policies[m[1]] = patched
                    self._send(200, patched)
            else:
                self._send(404, {"kind": "Status", "code": 404})

        def do_POST(self) -> None:
            body = self._body()
            if self.path.split("?")[0] != net:
                self._send(404, {"kind": "Status", "code": 404})
            elif body["metadata"]["name"] in cluster.policies:
                self._send(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
            else:
                cluster.policies[body["metadata"]["name"]] = body
                self._send(201, body)

        def do_DELETE(self) -> None:
            m = re.fullmatch(re.escape(net) + r"/([^/]+)", self.path.split("?")[0])
            if m and cluster.policies.pop(m[1], None) is not None:
                self._send(200, {"kind": "Status", "status": "Success"})
            else:
                self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})

    return Handler


@pytest.fixture
def cluster(plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    state = Cluster(plan)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    context = plan.outputs["kubeContext"]
    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
                "current-context": context,
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(config))
    yield state
    server.shutdown()


def _site(plan: Plan) -> SiteOutputs:
    return SiteOutputs.model_validate(plan.outputs)


def _api_labels(cluster: Cluster) -> dict[str, str]:
    return cluster.deployment["spec"]["template"]["metadata"]["labels"]


def test_the_planned_policies_admit_the_api_and_only_an_emptied_allow_stops_it(cluster: Cluster) -> None:
    """NetworkPolicies add up: the stack's allow-api admits the ingress controller, so a deny-all
    beside it blocks nothing; emptying the policies that admit some is what cuts the pods off."""
    policies = list(cluster.policies.values())
    assert [p["metadata"]["name"] for p in kubernetes.admitting(policies, _api_labels(cluster))] == [
        "allow-api"
    ]
    with_deny = [*policies, kubernetes.deny_all_policy(cluster.deployment["spec"]["selector"]["matchLabels"])]
    assert kubernetes.admitting(with_deny, _api_labels(cluster)), (
        "a deny-all alone leaves allow-api admitting"
    )


def test_deny_all_cuts_the_api_pods_off_and_its_undo_puts_every_rule_back(
    plan: Plan, cluster: Cluster
) -> None:
    before = copy.deepcopy(cluster.policies)
    saved = kubernetes.add_deny_all(_site(plan), "api")
    assert sorted(saved) == ["allow-api"]
    assert kubernetes.DENY_POLICY_NAME in cluster.policies
    assert kubernetes.admitting(list(cluster.policies.values()), _api_labels(cluster)) == []
    assert cluster.policies["allow-nats"] == before["allow-nats"]  # other pods keep theirs
    kubernetes.remove_deny_all(_site(plan), saved)
    assert cluster.policies == before
    assert set(cluster.content_types) == {kubernetes.JSON_PATCH}


def test_scale_sends_a_merge_patch_and_returns_the_previous_count(plan: Plan, cluster: Cluster) -> None:
    previous = cluster.replicas
    assert kubernetes.scale(_site(plan), "api", 0) == previous
    assert cluster.replicas == 0
    assert kubernetes.scale(_site(plan), "api", previous) == 0
    assert cluster.replicas == previous and cluster.content_types == [kubernetes.MERGE_PATCH] * 2
