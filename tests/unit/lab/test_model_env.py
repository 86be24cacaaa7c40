"""Every env source a planned container names is run by the lab, or stops it naming the workload,
the container and the variable: a variable silently left out would have the app fall back to its
defaults, and the lab would run something the plan does not."""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import pytest

from skyfleet.lab.errors import LabError
from skyfleet.lab.model import CLOUD_RUN, K8S_CONFIGMAP, K8S_DEPLOYMENT, pods
from skyfleet.plan import Plan, PlannedResource, plan_stack
from skyfleet.testing.edge import ROOT


@functools.cache
def planned(stack: str) -> Plan:
    return plan_stack(ROOT, stack)


def edited(stack: str, typ: str, edit: Callable[[PlannedResource], None]) -> Plan:
    plan = copy.deepcopy(planned(stack))
    edit(next(r for r in plan.of_type(typ) if "api" in r.name))
    return plan


def k8s_api(r: PlannedResource) -> dict[str, Any]:
    return r.inputs["spec"]["template"]["spec"]["containers"][0]


def env_of(plan: Plan, pod: str, name: str) -> Any:
    spec = next(p for p in pods(plan) if pod in p.name)
    return next(v for c in spec.containers for v in c.env if v.name == name)


def test_a_config_map_key_is_given_as_its_value() -> None:
    def edit(r: PlannedResource) -> None:
        k8s_api(r)["env"].append(
            {"name": "SOME_SETTING", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}}}
        )

    plan = edited("onprem-prod", K8S_DEPLOYMENT, edit)
    namespace = next(r for r in plan.of_type(K8S_DEPLOYMENT) if "api" in r.name).inputs["metadata"][
        "namespace"
    ]
    plan.resources.append(
        PlannedResource(
            urn="urn:pulumi:onprem-prod::skyfleet::kubernetes:core/v1:ConfigMap::settings",
            type=K8S_CONFIGMAP,
            name="settings",
            parent=None,
            provider=None,
            inputs={"metadata": {"name": "settings", "namespace": namespace}, "data": {"level": "debug"}},
            outputs={},
            dependencies=[],
        )
    )
    assert env_of(plan, "api", "SOME_SETTING").value == "debug"


@pytest.mark.parametrize(
    ("stack", "typ", "edit", "message"),
    [
        (
            "onprem-prod",
            K8S_DEPLOYMENT,
            lambda r: k8s_api(r)["env"].append(
                {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}
            ),
            "env 'X' comes from ConfigMap 'absent' key 'k', which the plan does not hold",
        ),
        (
            "onprem-prod",
            K8S_DEPLOYMENT,
            lambda r: k8s_api(r)["env"].append(
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
            ),
            "env 'NODE' comes from fieldRef, which the lab does not run",
        ),
        (
            "onprem-prod",
            K8S_DEPLOYMENT,
            lambda r: k8s_api(r)["env"].append(
                {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}
            ),
            "env 'CPU' comes from resourceFieldRef, which the lab does not run",
        ),
        (
            "onprem-prod",
            K8S_DEPLOYMENT,
            lambda r: k8s_api(r).update(envFrom=[{"configMapRef": {"name": "settings"}}]),
            "envFrom is not run by the lab",
        ),
        (
            "gcp-prod",
            CLOUD_RUN,
            lambda r: r.inputs["template"]["containers"][0]["envs"].append({"name": "EMPTY"}),
            "env 'EMPTY' comes from no value, which the lab does not run",
        ),
    ],
    ids=["missing config map key", "unrun field", "resource field", "envFrom", "cloud run without value"],
)
def test_an_env_source_the_lab_cannot_give_stops_it_naming_the_variable(
    stack: str, typ: str, edit: Callable[[PlannedResource], None], message: str
) -> None:
    with pytest.raises(LabError, match="api") as err:
        pods(edited(stack, typ, edit))
    assert message in str(err.value)


def test_the_shipped_plans_name_only_sources_the_lab_runs() -> None:
    for stack in ("aws-prod", "gcp-prod", "onprem-prod"):
        assert pods(planned(stack))


def test_a_pods_grace_in_the_lab_is_what_the_kubelet_leaves_after_its_pre_stop_sleep() -> None:
    """The lab runs no preStop hook and signals at once; the kubelet's grace runs from the hook,
    so the lab gives the process only what the hook leaves of it."""
    plan = planned("onprem-prod")
    api = next(r for r in plan.of_type(K8S_DEPLOYMENT) if r.name == "api")
    template = api.inputs["spec"]["template"]["spec"]
    sleep = k8s_api(api)["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert sleep > 0
    spec = next(p for p in pods(plan) if p.name == "api")
    assert spec.grace_seconds == template["terminationGracePeriodSeconds"] - sleep
    worker = next(r for r in plan.of_type(K8S_DEPLOYMENT) if r.name == "worker")
    assert "lifecycle" not in k8s_api(worker)
    worker_spec = next(p for p in pods(plan) if p.name == "worker")
    assert (
        worker_spec.grace_seconds
        == worker.inputs["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    )
