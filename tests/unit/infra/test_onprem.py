"""The onprem target's plan: restricted pods, probes, limits, HA, network isolation, Redis and
NATS as the app needs them, and every Kubernetes object valid for the stated API version. (The
data stores' generated configs run on real servers in tests/integration/infra/.)

Assertions read the wire-form inputs a policy (and the Kubernetes provider) receives.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from agent_app import contract
from agent_app.contract import Env, NatsQueue, parse_queue_url
from infra.capabilities import COMPONENTS
from infra.outputs import SiteOutputs
from skyfleet.plan import Plan, PlannedResource, plan_stack
from tests.support.onprem import (
    NAMESPACE,
    SECRET_SIG,
    STACK,
    containers,
    env_of,
    kube_objects,
    manifest,
    one,
    plain,
    plan_dev_site,
    pod_specs,
)
from tests.support.plans import ROOT

# The Kubernetes version every object is validated against (the oldest we support).
K8S_VERSION = "1.30.0"
CERTIFICATE = "kubernetes:cert-manager.io/v1:Certificate"
# Custom resources: no schema in the Kubernetes OpenAPI; their shape is checked by hand.
CRDS = {
    "kubernetes:cert-manager.io/v1:Certificate",
    "kubernetes:monitoring.coreos.com/v1:PrometheusRule",
    "kubernetes:monitoring.coreos.com/v1:PodMonitor",
}
CLUSTER_SCOPED = {"kubernetes:core/v1:Namespace"}
# Ingress annotations ingress-nginx reads (docs/user-guide/nginx-configuration/annotations.md),
# those the site could use; "hsts", "hsts-max-age" and "ssl-protocols" are ConfigMap keys only.
NGINX_PREFIX = "nginx.ingress.kubernetes.io/"
INGRESS_NGINX_ANNOTATIONS = {
    "ssl-redirect",
    "force-ssl-redirect",
    "proxy-body-size",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "proxy-connect-timeout",
    "ssl-ciphers",
    "ssl-prefer-server-ciphers",
    "limit-rps",
    "limit-connections",
    "whitelist-source-range",
    "backend-protocol",
}


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plan() -> Plan:
    """onprem-prod on its own: this target's tests do not depend on the other targets'."""
    return plan_stack(ROOT, STACK)


@pytest.fixture(scope="module")
def dev_plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    return plan_dev_site(tmp_path_factory.mktemp("onprem-dev"))


# --- components and placement ---------------------------------------------------------------------


def test_all_components_present_and_own_their_resources(plan: Plan) -> None:
    components = {r.urn: r for r in plan.resources if not r.custom}
    names = {r.type for r in components.values()}
    assert {f"skyfleet:onprem:{c}" for c in COMPONENTS} <= names
    for r in kube_objects(plan):
        assert r.parent in components, f"{r.type} {r.name} is not inside a component"
        assert r.provider and "pulumi:providers:kubernetes::onprem" in r.provider


def test_provider_targets_the_configured_context(plan: Plan) -> None:
    (provider,) = plan.of_type("pulumi:providers:kubernetes")
    assert provider.inputs["context"] == "dc1-prod"


def test_nothing_in_the_default_namespace(plan: Plan) -> None:
    for r in kube_objects(plan):
        meta = manifest(r)["metadata"]
        if r.type in CLUSTER_SCOPED:
            assert meta["name"] == NAMESPACE
        else:
            assert meta.get("namespace") == NAMESPACE, f"{r.type} {meta.get('name')} is not in {NAMESPACE}"


def test_namespace_enforces_restricted_pod_security(plan: Plan) -> None:
    labels = one(plan, "kubernetes:core/v1:Namespace", NAMESPACE)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["owner"] == "platform-team" and labels["environment"] == "prod"


def test_outputs_follow_the_site_contract(plan: Plan) -> None:
    out = SiteOutputs.model_validate(plan.outputs)
    assert out.target == "onprem" and out.namespace == NAMESPACE and out.kube_context == "dc1-prod"
    assert out.endpoint == "https://onprem.agents.example.com"
    assert out.health_check_path == contract.READINESS_PATH
    assert (out.api_deployment, out.worker_deployment) == ("api", "worker")


def test_mock_outputs_resolve_what_the_api_server_would_add(plan: Plan) -> None:
    """Apply-chains read server-set fields: the Ingress address, a Service's clusterIP."""
    assert ipaddress.ip_address(plan.outputs["ingressAddress"])
    (svc,) = [r for r in plan.of_type("kubernetes:core/v1:Service") if r.outputs["metadata"]["name"] == "api"]
    assert ipaddress.ip_address(svc.outputs["spec"]["clusterIP"]) in ipaddress.ip_network("10.96.0.0/12")
    assert svc.outputs["metadata"]["uid"] and svc.outputs["metadata"]["resourceVersion"]
    (headless,) = [
        r
        for r in plan.of_type("kubernetes:core/v1:Service")
        if r.outputs["metadata"]["name"] == "redis-headless"
    ]
    assert headless.outputs["spec"]["clusterIP"] == "None"


# --- pods ---------------------------------------------------------------------------------------


def test_every_pod_is_restricted(plan: Plan) -> None:
    pods = list(pod_specs(plan))
    assert {name for name, _ in pods} >= {
        "Deployment/api",
        "Deployment/worker",
        "StatefulSet/redis",
        "StatefulSet/nats",
        "Job/nats-streams",
    }
    for name, pod in pods:
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, name
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for c in containers(pod):
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert csc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert csc["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])
            assert csc["runAsNonRoot"] is True and csc.get("privileged") is False, (name, c["name"])
            assert csc["seccompProfile"] == {"type": "RuntimeDefault"}, (name, c["name"])
            res = c["resources"]
            assert set(res["requests"]) == set(res["limits"]) == {"cpu", "memory"}, (name, c["name"])


def test_app_pods_run_as_the_image_user_with_a_scratch_dir(plan: Plan) -> None:
    for role in ("api", "worker"):
        pod = one(plan, "kubernetes:apps/v1:Deployment", role)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == contract.RUN_AS_UID
        assert pod["serviceAccountName"] == role
        (c,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts[contract.SCRATCH_DIR]]
        if role == "api":
            keys = volumes[mounts[contract.API_KEYS_MOUNT_DIR]]["secret"]
            assert keys["secretName"] == "api-keys"
            assert keys["items"] == [
                {"key": contract.API_KEYS_FILE_NAME, "path": contract.API_KEYS_FILE_NAME}
            ]
        else:
            # The worker serves no client: it gets neither the keys nor the variable.
            assert contract.API_KEYS_MOUNT_DIR not in mounts
            assert not any(v.get("secret", {}).get("secretName") == "api-keys" for v in volumes.values())
            assert Env.API_KEYS_FILE not in env_of(c)
        spread = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
        assert "topology.kubernetes.io/zone" in spread
        sa = one(plan, "kubernetes:core/v1:ServiceAccount", role)
        assert sa["automountServiceAccountToken"] is False


def test_pods_spread_over_the_nodes_they_may_run_on(plan: Plan) -> None:
    """A tainted node (a control plane) holds none of these pods: counted as a host, it would cap
    every other host at one pod, and a rollout's surge pod or the autoscaler's next could not be
    placed. A Deployment's spread counts the new revision's pods apart from the old."""
    workloads = [
        (kind, r)
        for kind in ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")
        for r in plan.resources
        if r.type == kind
    ]
    assert {r.name for _, r in workloads} >= {"api", "worker", "redis", "nats"}
    for kind, r in workloads:
        constraints = r.inputs["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert any(c["whenUnsatisfiable"] == "DoNotSchedule" for c in constraints), r.name
        for c in constraints:
            assert c["nodeTaintsPolicy"] == "Honor", r.name
            if kind.endswith("Deployment"):
                assert c["matchLabelKeys"] == ["pod-template-hash"], r.name


def test_the_app_ends_its_shutdown_before_the_kubelet_kills_it(plan: Plan) -> None:
    """The kubelet's grace runs from the preStop hook. The api's hook waits for the ingress
    controller to see its endpoint go before SIGTERM starts the drain; the worker has none."""
    for role in ("api", "worker"):
        pod = one(plan, "kubernetes:apps/v1:Deployment", role)["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        grace = int(env_of(c)[Env.SHUTDOWN_GRACE_SECONDS]["value"])
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        assert pre_stop == (5 if role == "api" else 0), role
        assert 0 < pre_stop + grace + contract.SHUTDOWN_EXIT_SECONDS <= pod["terminationGracePeriodSeconds"]


def test_app_env_follows_the_contract_and_secrets_come_from_secret_refs(plan: Plan) -> None:
    for role, command in (("api", contract.API_COMMAND), ("worker", contract.WORKER_COMMAND)):
        (c,) = one(plan, "kubernetes:apps/v1:Deployment", role)["spec"]["template"]["spec"]["containers"]
        assert tuple(c["command"]) == command
        env = env_of(c)
        pods = [f"redis-{i}.redis-headless.{NAMESPACE}.svc.cluster.local" for i in range(3)]
        # The primary is whichever pod the Sentinels elected; the URL names the first pod (TLS).
        assert env[Env.REDIS_URL]["value"] == f"rediss://{pods[0]}:6379"
        assert env[Env.REDIS_SENTINELS]["value"] == ",".join(f"{p}:26379" for p in pods)
        assert env[Env.REDIS_SENTINEL_MASTER]["value"] == "skyfleet"
        assert env[Env.REDIS_CA_FILE]["value"].endswith("/ca.crt")
        if role == "api":
            assert (
                env[Env.API_KEYS_FILE]["value"]
                == f"{contract.API_KEYS_MOUNT_DIR}/{contract.API_KEYS_FILE_NAME}"
            )
        queue = parse_queue_url(env[Env.QUEUE_URL]["value"])
        assert isinstance(queue, NatsQueue)
        assert queue.servers == (f"tls://nats.{NAMESPACE}.svc:4222",)
        assert queue.max_deliver == 5
        for var in contract.SECRET_ENV:
            if var in env:
                assert "value" not in env[var], f"{role}: {var} is given in plain text"
                assert env[var]["valueFrom"]["secretKeyRef"]["name"]
        assert env[Env.REDIS_PASSWORD]["valueFrom"]["secretKeyRef"] == {
            "name": "redis-auth",
            "key": "password",
        }


def test_app_probes_use_the_contract_paths(plan: Plan) -> None:
    # Both processes serve the health paths on the contract's port (the worker for probes only).
    for role in ("api", "worker"):
        (c,) = one(plan, "kubernetes:apps/v1:Deployment", role)["spec"]["template"]["spec"]["containers"]
        port = contract.DEFAULT_PORT
        assert c["livenessProbe"]["httpGet"] == {"path": contract.LIVENESS_PATH, "port": port}, role
        assert c["readinessProbe"]["httpGet"] == {"path": contract.READINESS_PATH, "port": port}, role
        assert c["startupProbe"]["httpGet"]["path"] == contract.LIVENESS_PATH, role
    for sts in ("redis", "nats"):
        pod = one(plan, "kubernetes:apps/v1:StatefulSet", sts)["spec"]["template"]["spec"]
        for c in pod["containers"]:
            assert c["readinessProbe"] and c["livenessProbe"], (sts, c["name"])


# --- HA: replicas, autoscaling, disruption budgets ---------------------------------------------------


def test_prod_runs_at_least_two_of_everything(plan: Plan) -> None:
    for typ, name, least in (
        ("kubernetes:apps/v1:Deployment", "api", 2),
        ("kubernetes:apps/v1:Deployment", "worker", 2),
        ("kubernetes:apps/v1:StatefulSet", "redis", 2),
        ("kubernetes:apps/v1:StatefulSet", "nats", 3),
    ):
        assert one(plan, typ, name)["spec"]["replicas"] >= least, name


def test_hpa_scales_each_deployment_on_cpu_within_the_spec(plan: Plan) -> None:
    for role, lo, hi in (("api", 3, 20), ("worker", 2, 10)):
        hpa = one(plan, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler", role)
        assert hpa["apiVersion"] == "autoscaling/v2"
        spec = hpa["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": role}
        assert (spec["minReplicas"], spec["maxReplicas"]) == (lo, hi)
        (metric,) = spec["metrics"]
        assert metric["resource"]["name"] == "cpu"
        assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}


def test_pdbs_allow_disruption_without_going_to_zero(plan: Plan) -> None:
    owners = {
        **{r: one(plan, "kubernetes:apps/v1:Deployment", r) for r in ("api", "worker")},
        **{r: one(plan, "kubernetes:apps/v1:StatefulSet", r) for r in ("redis", "nats")},
    }
    for role, owner in owners.items():
        pdb = one(plan, "kubernetes:policy/v1:PodDisruptionBudget", role)["spec"]
        assert pdb["selector"]["matchLabels"] == owner["spec"]["selector"]["matchLabels"]
        replicas = owner["spec"]["replicas"]
        allowed = pdb["maxUnavailable"] if "maxUnavailable" in pdb else replicas - pdb["minAvailable"]
        assert allowed >= 1, f"{role}: the PDB blocks every eviction"
        assert replicas - allowed >= 1, f"{role}: the PDB lets the role go to zero"


# --- network -------------------------------------------------------------------------------------


def _policies(plan: Plan) -> dict[str, dict[str, Any]]:
    return {
        manifest(r)["metadata"]["name"]: manifest(r)["spec"]
        for r in plan.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    }


# HTTPS to the internet, private ranges excepted.
_HTTPS_OUT = {
    "to": [
        {
            "ipBlock": {
                "cidr": "0.0.0.0/0",
                "except": [
                    "10.0.0.0/8",
                    "172.16.0.0/12",
                    "192.168.0.0/16",
                    "169.254.0.0/16",
                    "100.64.0.0/10",
                ],
            }
        }
    ],
    "ports": [{"port": 443, "protocol": "TCP"}],
}


def _admits(rules: list[dict[str, Any]], peer_key: str, role: str, port: int) -> bool:
    for rule in rules:
        ports = {p["port"] for p in rule.get("ports", [])}
        roles = {
            p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
            for p in rule.get(peer_key, [])
        }
        if port in ports and role in roles:
            return True
    return False


def test_default_deny_then_only_the_flows_the_app_needs(plan: Plan) -> None:
    policies = _policies(plan)
    deny = policies["default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny.get("ingress") and not deny.get("egress")
    dns = policies["allow-dns"]["egress"][0]
    assert {p["port"] for p in dns["ports"]} == {53}
    api = policies["allow-api"]
    namespaces = [
        p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for p in api["ingress"][0]["from"]
    ]
    assert "ingress-nginx" in namespaces and api["ingress"][0]["ports"] == [{"port": 8080, "protocol": "TCP"}]
    for role in ("api", "worker"):
        egress = policies[f"allow-{role}"]["egress"]
        assert _admits(egress, "to", "redis", 6379) and _admits(egress, "to", "nats", 4222), role
    (worker_in,) = policies["allow-worker"]["ingress"]
    assert [p["namespaceSelector"] for p in worker_in["from"]] == [
        {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    ]
    assert _admits(policies["allow-redis"]["ingress"], "from", "api", 6379)
    assert _admits(policies["allow-redis"]["egress"], "to", "redis", 6379)  # replication
    assert _admits(policies["allow-nats"]["ingress"], "from", "nats", 6222)  # cluster routes
    assert _admits(policies["allow-nats"]["ingress"], "from", "nats-streams", 4222)
    # A fleet site's api and worker reach the other sites at their regional names: HTTPS to
    # the internet, never into private ranges; no other role goes out.
    for role, policy in policies.items():
        internet = [r for r in policy.get("egress", []) if "ipBlock" in json.dumps(r)]
        assert internet == ([_HTTPS_OUT] if role in ("allow-api", "allow-worker") else []), role


def test_only_a_site_that_calls_out_may_reach_the_internet(plan: Plan, dev_plan: Plan) -> None:
    """What the pods' env says they call (the fleet's sites, a model API) is what their
    NetworkPolicy lets out: a fleet site whose pods could not reach the others would count only
    itself, and no write of its would reach a majority."""
    fleets = []
    for site_plan in (plan, dev_plan):
        policies = _policies(site_plan)
        for role in ("api", "worker"):
            pod = one(site_plan, "kubernetes:apps/v1:Deployment", role)["spec"]["template"]["spec"]
            env = {k: v for c in containers(pod) for k, v in env_of(c).items()}
            model = env.get(Env.MODEL_BACKEND.value, {}).get("value", "offline")
            calls_out = Env.FLEET_SITES.value in env or model != "offline"
            assert (_HTTPS_OUT in policies[f"allow-{role}"]["egress"]) == calls_out, (role, calls_out)
            fleets.append(Env.FLEET_SITES.value in env)
    assert fleets == [True, True, False, False]  # prod is a fleet site; the dev site is not


def test_ingress_is_https_only_with_a_cert_manager_certificate(plan: Plan) -> None:
    ing = one(plan, "kubernetes:networking.k8s.io/v1:Ingress", "api")
    annotations = ing["metadata"]["annotations"]
    # The public issuer, not the in-cluster CA that signs the Redis and NATS certificates.
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt-dns01"
    internal = {c.inputs["spec"]["issuerRef"]["name"] for c in plan.of_type(CERTIFICATE)}
    assert internal == {"skyfleet-internal-ca"}
    assert annotations["nginx.ingress.kubernetes.io/force-ssl-redirect"] == "true"
    # Only annotations ingress-nginx reads: HSTS and the TLS protocols are keys of the
    # controller's ConfigMap (a cluster prerequisite), and an unknown annotation is ignored.
    nginx = {k.removeprefix(NGINX_PREFIX) for k in annotations if k.startswith(NGINX_PREFIX)}
    assert nginx <= INGRESS_NGINX_ANNOTATIONS, nginx - INGRESS_NGINX_ANNOTATIONS
    spec = ing["spec"]
    assert spec["ingressClassName"] == "nginx"
    # Every name clients use (the site's own and the edge's global name) is in the certificate
    # and has a host rule.
    names = ["onprem.agents.example.com", "api.agents.example.com"]
    assert plan.outputs["hostNames"] == names
    assert spec["tls"] == [{"hosts": names, "secretName": "api-ingress-tls"}]
    assert [r["host"] for r in spec["rules"]] == names
    for rule in spec["rules"]:
        backend = rule["http"]["paths"][0]["backend"]["service"]
        assert backend == {"name": "api", "port": {"number": contract.DEFAULT_PORT}}
    svc = one(plan, "kubernetes:core/v1:Service", "api")["spec"]
    assert svc["type"] == "ClusterIP"


# --- secrets ------------------------------------------------------------------------------------


def test_secrets_are_secret_outputs_and_never_leak_into_other_objects(plan: Plan) -> None:
    secrets = {manifest(r)["metadata"]["name"]: r for r in plan.of_type("kubernetes:core/v1:Secret")}
    assert {"api-keys", "redis-auth"} <= set(secrets)
    for r in secrets.values():
        assert SECRET_SIG in json.dumps(r.inputs["stringData"]), f"{r.name}: stringData is not a secret"
    # Generated: the Redis AUTH and one password per NATS user (each app role, the setup Job).
    generated = {r.name: r for r in plan.of_type("random:index/randomPassword:RandomPassword")}
    assert set(generated) == {"redis-auth", "nats-api", "nats-worker", "nats-streams"}
    assert all(r.inputs["special"] is False for r in generated.values())
    for name in generated:
        password = plain(secrets[name].inputs)["stringData"]["password"]
        assert len(password) >= 32
        for r in kube_objects(plan):
            if r.type != "kubernetes:core/v1:Secret":
                assert password not in json.dumps(r.inputs), (
                    f"the {name} password appears in {r.type} {r.name}"
                )


# --- Redis ---------------------------------------------------------------------------------------


def test_redis_has_auth_tls_and_a_volume(plan: Plan) -> None:
    conf = one(plan, "kubernetes:core/v1:ConfigMap", "redis-config")["data"]
    lines = conf["redis.conf"].splitlines()
    assert "port 0" in lines and "tls-port 6379" in lines and "tls-replication yes" in lines
    assert not any(line.startswith("requirepass") for line in lines)  # no literal password
    assert "requirepass" in conf["init.sh"] and "$REDIS_PASSWORD" in conf["init.sh"]
    assert any(line.startswith("include ") for line in lines)
    # A primary cut off from its replicas stops taking writes (the stale side of a partition).
    assert "min-replicas-to-write 1" in lines
    sts = one(plan, "kubernetes:apps/v1:StatefulSet", "redis")["spec"]
    pod = sts["template"]["spec"]
    (init,) = pod["initContainers"]
    assert env_of(init)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "redis-auth",
        "key": "password",
    }
    # A fork (snapshot, replica sync) may copy up to the whole data set: twice maxmemory fits it.
    maxmemory = next(
        int(line.split()[1].removesuffix("mb")) for line in lines if line.startswith("maxmemory ")
    )
    server = next(c for c in pod["containers"] if c["name"] == "redis")
    assert server["resources"]["limits"]["memory"] == f"{2 * maxmemory}Mi"
    (claim,) = sts["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    tls = {v["name"]: v for v in pod["volumes"]}["tls"]["secret"]["secretName"]
    cert = one(plan, "kubernetes:cert-manager.io/v1:Certificate", tls)["spec"]
    assert cert["secretName"] == tls and f"*.redis-headless.{NAMESPACE}.svc.cluster.local" in cert["dnsNames"]
    assert cert["issuerRef"] == {
        "kind": "ClusterIssuer",
        "name": "skyfleet-internal-ca",
        "group": "cert-manager.io",
    }


def test_data_stores_take_a_renewed_certificate_one_pod_at_a_time(plan: Plan) -> None:
    """cert-manager renews the TLS Secret in place; Redis, Sentinel and NATS keep the certificate
    they loaded. Each runs through serve.sh, which hands it the renewed one: NATS reloads (HUP),
    Redis reads its TLS files again (CONFIG SET), Sentinel restarts (TERM), the set's pods 300 s
    apart."""
    reload_redis = (
        "redis-cli --tls --cacert /etc/redis/tls/ca.crt -h localhost -p 6379 CONFIG SET tls-cert-file "
        "/etc/redis/tls/tls.crt tls-key-file /etc/redis/tls/tls.key tls-ca-cert-file /etc/redis/tls/ca.crt"
        " | grep -q OK"
    )
    expected = {
        ("redis", "redis"): (
            "redis-config",
            "/etc/redis",
            reload_redis,
            ["redis-server", "/etc/redis/conf/redis.conf"],
        ),
        ("redis", "sentinel"): (
            "redis-config",
            "/etc/redis",
            'kill -TERM "$1"',
            ["redis-server", "/run/sentinel/sentinel.conf", "--sentinel"],
        ),
        ("nats", "nats"): (
            "nats-config",
            "/etc/nats",
            'kill -HUP "$1"',
            ["nats-server", "--config", "/etc/nats/conf/nats.conf"],
        ),
    }
    for (sts_name, container), (config, base, renew, server) in expected.items():
        pod = one(plan, "kubernetes:apps/v1:StatefulSet", sts_name)["spec"]["template"]["spec"]
        c = next(x for x in pod["containers"] if x["name"] == container)
        script = f"{base}/conf/serve.sh"
        assert c["command"] == ["sh", script, f"{base}/tls/tls.crt", "10", "300", renew, *server]
        assert one(plan, "kubernetes:core/v1:ConfigMap", config)["data"]["serve.sh"].startswith("# serve.sh")
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes[mounts[f"{base}/conf"]]["configMap"]["name"] == config
        assert volumes[mounts[f"{base}/tls"]]["secret"]["secretName"] == f"{sts_name}-tls"
        assert env_of(c)["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # redis-cli authenticates with the password the container already holds.
    redis_pod = one(plan, "kubernetes:apps/v1:StatefulSet", "redis")["spec"]["template"]["spec"]
    assert "REDISCLI_AUTH" in env_of(redis_pod["containers"][0])


def test_redis_fails_over_with_a_sentinel_in_every_pod(plan: Plan) -> None:
    """cache.ha: three pods, each with a Sentinel (quorum 2); nothing pins the primary to pod 0,
    and each pod asks the Sentinels for the current primary when it starts."""
    sts = one(plan, "kubernetes:apps/v1:StatefulSet", "redis")["spec"]
    assert sts["replicas"] == 3
    pod = sts["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    assert names == ["redis", "sentinel"]
    sentinel = pod["containers"][1]
    assert sentinel["command"][-3:] == ["redis-server", "/run/sentinel/sentinel.conf", "--sentinel"]
    assert {p["containerPort"] for p in sentinel["ports"]} == {26379}
    (init,) = pod["initContainers"]
    env = {k: v.get("value") for k, v in env_of(init).items()}
    assert env["SENTINEL"] == "true" and env["PODS"] == "3" and env["QUORUM"] == "2"
    script = one(plan, "kubernetes:core/v1:ConfigMap", "redis-config")["data"]["init.sh"]
    assert "sentinel get-master-addr-by-name" in script and "sentinel monitor" in script
    # No Service pins the app to one pod: it finds the primary through the Sentinels.
    services = {manifest(r)["metadata"]["name"] for r in plan.of_type("kubernetes:core/v1:Service")}
    assert "redis" not in services and "redis-headless" in services
    ports = {p["port"] for p in one(plan, "kubernetes:core/v1:Service", "redis-headless")["spec"]["ports"]}
    assert ports == {6379, 26379}
    # The app and the pods may reach the Sentinels.
    policies = _policies(plan)
    assert _admits(policies["allow-redis"]["ingress"], "from", "api", 26379)
    assert _admits(policies["allow-redis"]["ingress"], "from", "redis", 26379)


# --- NATS JetStream -------------------------------------------------------------------------------


def test_nats_is_a_tls_jetstream_cluster_with_volumes(plan: Plan) -> None:
    conf = one(plan, "kubernetes:core/v1:ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "jetstream {" in conf and "tls {" in conf and "verify: true" in conf
    routes = [f"nats-{i}.nats-headless.{NAMESPACE}.svc.cluster.local:6222" for i in range(3)]
    assert all(r in conf for r in routes)
    sts = one(plan, "kubernetes:apps/v1:StatefulSet", "nats")["spec"]
    assert (
        sts["replicas"] == 3
        and sts["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "20Gi"
    )
    # JetStream stops at its store limit before the volume is full: the filesystem keeps some of
    # the 20 GiB (NATS's MB are MiB), and a write that finds no room disables JetStream.
    limit_mib = int(re.search(r"max_file_store: (\d+)MB", conf)[1])  # type: ignore[index]
    assert 0.8 * 20 * 1024 <= limit_mib <= 0.9 * 20 * 1024


def test_stream_job_creates_the_task_and_dead_letter_streams(plan: Plan) -> None:
    (c,) = one(plan, "kubernetes:apps/v1:Deployment", "api")["spec"]["template"]["spec"]["containers"]
    queue = parse_queue_url(env_of(c)[Env.QUEUE_URL]["value"])
    assert isinstance(queue, NatsQueue)
    files = one(plan, "kubernetes:core/v1:ConfigMap", "nats-streams")["data"]
    tasks, dlq = json.loads(files["tasks.json"]), json.loads(files["dlq.json"])
    assert tasks["name"] == queue.stream and tasks["subjects"] == [queue.subject]
    assert dlq["subjects"] == [queue.dlq_subject] and dlq["name"] != tasks["name"]
    assert tasks["num_replicas"] == dlq["num_replicas"] == 3
    assert tasks["metadata"]["skyfleet.max_deliver"] == str(queue.max_deliver)
    assert dlq["max_age"] == 1209600 * 10**9
    job = one(plan, "kubernetes:batch/v1:Job", "nats-streams")
    pod = job["spec"]["template"]["spec"]
    script = pod["containers"][0]["command"][-1]
    assert "tasks.json" in script and "dlq.json" in script
    assert {v["name"]: v for v in pod["volumes"]}["streams"]["configMap"]["name"] == "nats-streams"
    (r,) = plan.of_type("kubernetes:batch/v1:Job")
    nats_sts = next(x for x in plan.of_type("kubernetes:apps/v1:StatefulSet") if x.name == "nats")
    assert nats_sts.urn in r.dependencies, "the stream job must wait for NATS"


# --- alarms and logs ------------------------------------------------------------------------------


def test_alarms_cover_errors_dead_letters_and_unready_pods(plan: Plan) -> None:
    (rule,) = plan.of_type("kubernetes:monitoring.coreos.com/v1:PrometheusRule")
    alerts = {r["alert"]: r for g in manifest(rule)["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {"AgentApiErrorRate", "AgentDeadLetters", "AgentPodsNotReady"}
    assert "AGENT_TASKS_DLQ" in alerts["AgentDeadLetters"]["expr"]
    assert f'namespace="{NAMESPACE}"' in alerts["AgentPodsNotReady"]["expr"]
    logs = one(plan, "kubernetes:core/v1:ConfigMap", "log-pipeline")["data"]["fluent-bit.conf"]
    assert f"_{NAMESPACE}_" in logs and "tls         On" in logs


def test_monitoring_objects_carry_the_labels_prometheus_selects_them_by(plan: Plan) -> None:
    """A kube-prometheus-stack Prometheus only loads PodMonitors and PrometheusRules labelled
    with its release: the stack's monitoringLabels go on those objects, and only on those."""
    config = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{STACK}.yaml").read_text())["config"]
    wanted = config["skyfleet:cluster"]["monitoringLabels"]
    assert wanted, "the shipped stack sets monitoringLabels"
    monitoring = [
        *plan.of_type("kubernetes:monitoring.coreos.com/v1:PrometheusRule"),
        *plan.of_type("kubernetes:monitoring.coreos.com/v1:PodMonitor"),
    ]
    assert len(monitoring) == 4
    for r in monitoring:
        assert manifest(r)["metadata"]["labels"].items() >= wanted.items(), r.name
    others = [r for r in kube_objects(plan) if r not in monitoring]
    labelled = [r.name for r in others if wanted.keys() & (r.inputs["metadata"].get("labels") or {})]
    assert others and not labelled


def test_pods_not_ready_leaves_out_pods_that_ran_to_completion(plan: Plan) -> None:
    """The nats-streams Job's pod is never ready once it succeeded: the alert must not count it,
    or it fires for as long as the completed pod is kept."""
    assert plan.of_type("kubernetes:batch/v1:Job"), "the plan has a Job whose pod completes"
    (rule,) = plan.of_type("kubernetes:monitoring.coreos.com/v1:PrometheusRule")
    alerts = {r["alert"]: r for g in manifest(rule)["spec"]["groups"] for r in g["rules"]}
    expr = " ".join(alerts["AgentPodsNotReady"]["expr"].split())
    not_ready = (
        f'sum by (namespace, pod) (kube_pod_status_ready{{namespace="{NAMESPACE}",condition!="true"}})'
    )
    succeeded = f'kube_pod_status_phase{{namespace="{NAMESPACE}",phase="Succeeded"}} == 1'
    # PromQL binds a comparison tighter than "unless": the threshold is parenthesised with the sum.
    assert expr == f"({not_ready} > 0) unless on (namespace, pod) ({succeeded})", expr


# --- schema validation ------------------------------------------------------------------------------


def _validate_crd(m: dict[str, Any]) -> None:
    """cert-manager and Prometheus Operator objects: their CRDs are not in the Kubernetes
    OpenAPI, so check the fields their controllers require."""
    assert m["metadata"]["name"] and m["metadata"]["namespace"] == NAMESPACE
    spec = m["spec"]
    if m["kind"] == "Certificate":
        assert m["apiVersion"] == "cert-manager.io/v1"
        assert spec["secretName"] and spec["dnsNames"] and spec["issuerRef"]["name"]
    elif m["kind"] == "PrometheusRule":
        assert m["apiVersion"] == "monitoring.coreos.com/v1"
        for group in spec["groups"]:
            for rule in group["rules"]:
                assert {"alert", "expr"} <= set(rule) and rule["for"].endswith("m")
    elif m["kind"] == "PodMonitor":
        assert spec["selector"]["matchLabels"] and spec["podMetricsEndpoints"][0]["port"]
    else:
        raise AssertionError(f"unexpected custom resource {m['kind']}")


def _objects(plan: Plan) -> list[tuple[str, PlannedResource]]:
    return [(f"{r.type.rsplit(':', 1)[-1]}/{r.name}", r) for r in kube_objects(plan)]


def test_every_object_type_is_checked(plan: Plan) -> None:
    types = {r.type for _, r in _objects(plan)}
    assert len(types) >= 15 and types >= CRDS


def test_every_kubernetes_object_validates_against_the_openapi_schema(plan: Plan) -> None:
    failures = []
    for label, r in _objects(plan):
        m = manifest(r)
        # Round-trip through YAML: what `kubectl apply -f` would read.
        doc = yaml.safe_load(yaml.safe_dump(m))
        try:
            if r.type in CRDS:
                _validate_crd(doc)
            else:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, AssertionError, KeyError) as exc:
            failures.append(f"{label}: {str(exc).splitlines()[0]}")
    assert not failures, "\n".join(failures)


def test_schema_validation_rejects_a_broken_object(plan: Plan) -> None:
    """The check above can fail: a typo'd field and a wrong type are caught."""
    m = one(plan, "kubernetes:apps/v1:Deployment", "api")
    m["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonroot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(m, K8S_VERSION, strict=True)
    m = one(plan, "kubernetes:apps/v1:Deployment", "api")
    m["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(m, K8S_VERSION, strict=True)


# --- dev differs --------------------------------------------------------------------------------------


def test_dev_is_smaller_and_still_restricted(dev_plan: Plan) -> None:
    assert one(dev_plan, "kubernetes:apps/v1:Deployment", "api")["spec"]["replicas"] == 1
    assert one(dev_plan, "kubernetes:apps/v1:StatefulSet", "redis")["spec"]["replicas"] == 1
    assert one(dev_plan, "kubernetes:apps/v1:StatefulSet", "nats")["spec"]["replicas"] == 1
    conf = one(dev_plan, "kubernetes:core/v1:ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "cluster {" not in conf and "jetstream {" in conf
    streams = json.loads(one(dev_plan, "kubernetes:core/v1:ConfigMap", "nats-streams")["data"]["tasks.json"])
    assert streams["num_replicas"] == 1
    for name, pod in pod_specs(dev_plan):
        assert pod["securityContext"]["runAsNonRoot"] is True, name


def test_plain_unwraps_the_wire_form() -> None:
    """`plain` turns wire-form numbers back into ints and unwraps secrets."""
    wire = {"a": 3.0, "b": {SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270", "value": {"k": 1.5}}}
    assert plain(wire) == {"a": 3, "b": {"k": 1.5}}
