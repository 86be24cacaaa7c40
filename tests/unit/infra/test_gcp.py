"""The gcp target, planned offline: the security and HA properties a reviewer (and the policy
pack) reads off the wire-form inputs of gcp-prod, and of dev variants of it.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent_app import contract
from agent_app.contract import Env
from infra.capabilities import COMPONENTS, missing_capabilities
from infra.gcp.apis import api_for
from infra.gcp.load_balancer import EDGE_RATE_FACTOR
from infra.gcp.service import cloud_run_limits
from infra.outputs import SiteOutputs
from skyfleet.plan import ConfigError, Plan, PlannedResource, plan_stack

ROOT = Path(__file__).resolve().parents[3]
STACK = "gcp-prod"
STACK_FILE = ROOT / "stacks" / f"Pulumi.{STACK}.yaml"

RUN = "gcp:cloudrunv2/service:Service"
RUN_INVOKER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
TOPIC = "gcp:pubsub/topic:Topic"
REDIS = "gcp:redis/instance:Instance"
FORWARDING_RULE = "gcp:compute/globalForwardingRule:GlobalForwardingRule"
SECRET = "gcp:secretmanager/secret:Secret"
# Roles that grant broad power: never bound by this target.
BROAD_ROLES = {
    "roles/owner",
    "roles/editor",
    "roles/viewer",
    "roles/iam.serviceAccountUser",
    "roles/iam.serviceAccountTokenCreator",
}


# --- plans ------------------------------------------------------------------------------------


def config() -> dict[str, Any]:
    return yaml.safe_load(STACK_FILE.read_text())["config"]


def variant(**overrides: Any) -> str:
    """gcp-prod's stack file with some ``skyfleet:`` keys replaced (None removes a key)."""
    doc = yaml.safe_load(STACK_FILE.read_text())
    for key, value in overrides.items():
        full = f"skyfleet:{key}"
        if value is None:
            doc["config"].pop(full, None)
        else:
            doc["config"][full] = value
    return yaml.safe_dump(doc, sort_keys=False)


def dev_overrides() -> dict[str, Any]:
    app = dict(config()["skyfleet:app"])
    app.pop("replicas")
    app.pop("workerReplicas")
    return {
        "environment": "dev",
        "site": "gcp-dev",
        "app": app,
        "cache": {"ha": False, "sizeGb": 1},
        "queue": {"maxDeliveryAttempts": 7},
        "cloudArmor": False,
        "alertEmail": None,
        "logRetentionDays": None,
        "policy": {"profile": "dev"},
        "modelApiKey": {"secure": "v1:Zm9v:AAAAplaceholderMODELkey=="},
    }


@pytest.fixture(scope="module")
def prod() -> Plan:
    return plan_stack(ROOT, STACK)


@pytest.fixture
def dev(temp_project: Callable[[str, str], Path]) -> Plan:
    # A dev site on its own: no fleet, client keys of its own.
    doc = yaml.safe_load(variant(**dev_overrides()))
    doc.pop("environment")
    doc["config"]["skyfleet:apiKeys"] = {"secure": "v1:ZGV2:placeholder"}
    return plan_stack(temp_project("gcp-dev", yaml.safe_dump(doc, sort_keys=False)), "gcp-dev")


def of(plan: Plan, typ: str) -> list[PlannedResource]:
    return [r for r in plan.resources if r.type == typ]


def one(plan: Plan, typ: str, name: str | None = None) -> PlannedResource:
    found = [r for r in of(plan, typ) if name is None or r.name == name]
    assert len(found) == 1, f"expected one {typ} {name or ''}, found {[r.name for r in found]}"
    return found[0]


def by_id(plan: Plan) -> dict[str, PlannedResource]:
    """Resources by the id (and selfLink) the provider returned: how wire-form references point
    at them."""
    return {
        str(r.outputs[key]): r
        for r in plan.resources
        if r.custom
        for key in ("id", "selfLink")
        if r.outputs.get(key)
    }


def plain(value: Any) -> Any:
    """A wire-form value with Pulumi's secret wrapper removed."""
    if isinstance(value, dict) and "4dabf18193072939515e22adb298388d" in value:
        return value["value"]
    return value


def service(plan: Plan, role: str) -> PlannedResource:
    return one(plan, RUN, role)


def app_container(svc: PlannedResource, role: str) -> dict[str, Any]:
    return next(c for c in svc.inputs["template"]["containers"] if c["name"] == role)


def envs(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("envs", [])}


def iam_members(plan: Plan) -> Iterator[PlannedResource]:
    return (r for r in plan.resources if r.custom and ("IAMMember" in r.type or "IamMember" in r.type))


# --- structure -----------------------------------------------------------------------------------


def test_capabilities_and_components_are_present(prod: Plan) -> None:
    assert missing_capabilities("gcp", prod.resources) == []
    components = {r.type for r in prod.resources if not r.custom}
    assert {f"skyfleet:gcp:{c}" for c in COMPONENTS} <= components


def test_every_resource_is_parented_under_a_gcp_component(prod: Plan) -> None:
    components = {r.urn for r in prod.resources if r.type.startswith("skyfleet:gcp:")}
    for r in prod.resources:
        if r.custom and not r.type.startswith("pulumi:providers:"):
            assert r.parent in components, f"{r.type} {r.name} is parented to {r.parent}"


def test_every_resource_uses_the_explicit_provider(prod: Plan) -> None:
    providers = {r.urn for r in prod.resources if r.type == "pulumi:providers:gcp"}
    assert len(providers) == 1
    for r in prod.resources:
        if r.custom and r.type.startswith("gcp:"):
            assert r.provider and r.provider.rsplit("::", 1)[0] in providers, f"{r.name}: {r.provider}"


def _label_field(typ: str) -> str | None:
    """``labels`` or ``userLabels`` when the SDK's resource accepts them. Read from the SDK's
    source: importing pulumi_gcp here would re-register the package the plans import fresh."""
    spec = importlib.util.find_spec("pulumi_gcp")
    assert spec is not None and spec.origin is not None
    folder = Path(spec.origin).parent / typ.split(":")[1].split("/")[0]
    for source in folder.glob("*.py"):
        text = source.read_text()
        if f'type_token("{typ}")' in text:
            init = text[text.index("def _internal_init") :]
            params = init[: init.index("):")]
            if re.search(r"\buser_labels:", params):
                return "userLabels"
            return "labels" if re.search(r"\blabels:", params) else None
    raise AssertionError(f"{typ} is not in the SDK at {folder}")


def test_every_labelable_resource_carries_the_spec_labels(prod: Plan) -> None:
    tags = config()["skyfleet:tags"]
    expected = {
        "owner": tags["owner"],
        "cost-center": tags["costCenter"],
        "environment": "prod",
        "app": "agent-app",
        "managed-by": "skyfleet",
    }
    checked = 0
    for r in prod.resources:
        if not r.custom or not r.type.startswith("gcp:"):
            continue
        field = _label_field(r.type)
        if field is None:
            continue
        labels = r.inputs.get(field) or {}
        assert expected.items() <= labels.items(), f"{r.type} {r.name}: {field}={labels}"
        checked += 1
    assert checked >= 15


def test_outputs_match_the_site_contract(prod: Plan) -> None:
    out = SiteOutputs.model_validate(prod.outputs)
    domain = config()["skyfleet:domain"]["name"]
    assert out.target == "gcp" and out.environment == "prod"
    assert out.endpoint == f"https://{domain}" and out.endpoint_host == domain
    assert out.health_check_path == contract.READINESS_PATH
    assert out.project == config()["skyfleet:project"]
    assert out.api_service_name == service(prod, "api").inputs["name"]
    address = one(prod, "gcp:compute/globalAddress:GlobalAddress", "lb-address")
    assert prod.outputs["ipAddress"] == address.outputs["address"]


def test_required_apis_are_enabled_and_left_on_destroy(prod: Plan) -> None:
    services = {r.inputs["service"]: r for r in of(prod, "gcp:projects/service:Service")}
    for api in ("run", "redis", "pubsub", "secretmanager", "servicenetworking", "compute", "monitoring"):
        svc = services[f"{api}.googleapis.com"]
        assert svc.inputs["disableOnDestroy"] is False


def test_every_google_resource_waits_for_its_api(prod: Plan) -> None:
    """On a fresh project no API is on: a resource created before its API is refused. Each
    resource depends directly on the enablement of the API it calls."""
    services = {r.inputs["service"]: r.urn for r in of(prod, "gcp:projects/service:Service")}
    checked = 0
    for r in prod.resources:
        if not r.custom or not r.type.startswith("gcp:") or r.type == "gcp:projects/service:Service":
            continue
        api = api_for(r.type, r.inputs)
        assert api is not None, f"{r.type}: no API known for it"
        assert services[api] in r.dependencies, f"{r.type} {r.name} does not wait for {api}"
        checked += 1
    assert checked >= 40
    # The ones the review found racing their API.
    for typ in (
        "gcp:serviceaccount/account:Account",
        "gcp:compute/sSLPolicy:SSLPolicy",
        "gcp:compute/globalAddress:GlobalAddress",
        "gcp:compute/securityPolicy:SecurityPolicy",
        "gcp:certificatemanager/certificate:Certificate",
    ):
        assert of(prod, typ), typ


# --- load balancer: HTTPS only ---------------------------------------------------------------------


def test_https_only_with_tls12_policy_and_managed_certificate(prod: Plan) -> None:
    ids = by_id(prod)
    rules = {r.inputs["portRange"]: r for r in of(prod, FORWARDING_RULE)}
    assert set(rules) == {"443", "80"}
    for rule in rules.values():
        assert rule.inputs["loadBalancingScheme"] == "EXTERNAL_MANAGED"
    assert rules["443"].inputs["ipAddress"] == rules["80"].inputs["ipAddress"]

    https_proxy = ids[rules["443"].inputs["target"]]
    assert https_proxy.type == "gcp:compute/targetHttpsProxy:TargetHttpsProxy"
    policy = ids[https_proxy.inputs["sslPolicy"]]
    assert policy.inputs["minTlsVersion"] == "TLS_1_2"
    assert policy.inputs["profile"] in ("MODERN", "RESTRICTED")
    assert "sslCertificates" not in https_proxy.inputs

    backend = ids[ids[https_proxy.inputs["urlMap"]].inputs["defaultService"]]
    assert backend.inputs["logConfig"]["enable"] is True
    neg = ids[backend.inputs["backends"][0]["group"]]
    assert neg.inputs["networkEndpointType"] == "SERVERLESS"
    assert neg.inputs["cloudRun"]["service"] == service(prod, "api").inputs["name"]


def test_certificate_covers_every_host_name_through_dns_authorization(prod: Plan) -> None:
    """The global name's DNS points at whichever site the edge picks, so a certificate for it can
    only be issued with DNS authorization; every name is in the map the HTTPS proxy serves."""
    domain = config()["skyfleet:domain"]
    names = [domain["name"], *domain["aliases"]]
    assert prod.outputs["hostNames"] == names
    ids = by_id(prod)
    auths = {r.outputs["id"]: r for r in of(prod, "gcp:certificatemanager/dnsAuthorization:DnsAuthorization")}
    assert sorted(a.inputs["domain"] for a in auths.values()) == sorted(names)
    # Per project: the CNAME sits at _acme-challenge_<id>.<name>, so it never clashes with an
    # ACME DNS-01 solver's TXT at _acme-challenge.<name> (the onprem site's, for the global name).
    assert {a.inputs.get("type") for a in auths.values()} == {"PER_PROJECT_RECORD"}
    cert = one(prod, "gcp:certificatemanager/certificate:Certificate")
    assert cert.inputs["managed"]["domains"] == names
    assert set(cert.inputs["managed"]["dnsAuthorizations"]) == set(auths)
    cmap = one(prod, "gcp:certificatemanager/certificateMap:CertificateMap")
    entries = of(prod, "gcp:certificatemanager/certificateMapEntry:CertificateMapEntry")
    assert all(e.inputs["map"] == cmap.outputs["name"] for e in entries)
    assert all(e.inputs["certificates"] == [cert.outputs["id"]] for e in entries)
    assert sorted(e.inputs["hostname"] for e in entries if "hostname" in e.inputs) == sorted(names)
    assert [e.inputs.get("matcher") for e in entries if "hostname" not in e.inputs] == ["PRIMARY"]
    rule = next(r for r in of(prod, FORWARDING_RULE) if r.inputs["portRange"] == "443")
    proxy = ids[rule.inputs["target"]]
    assert proxy.inputs["certificateMap"] == f"//certificatemanager.googleapis.com/{cmap.outputs['id']}"
    # The proxy waits for the entries, so it never serves a map without them.
    assert {e.urn for e in entries} <= set(proxy.dependencies) | set(
        u for deps in proxy.property_dependencies.values() for u in deps
    )
    # What the edge creates for each name (tests/unit/infra/test_edge.py): one CNAME each, in
    # the outputs' contract.
    records = prod.outputs["dnsAuthorizations"]
    assert len(records) == len(names)
    for n in names:
        (r,) = [r for r in records if r["name"].endswith(f".{n}.")]
        assert r["name"].startswith("_acme-challenge_"), r  # the per-project label
    assert all(r["type"] == "CNAME" and r["data"] for r in records)
    exported = SiteOutputs.model_validate(prod.outputs).dns_authorizations
    assert [(r.name, r.type, r.data) for r in exported] == [
        (r["name"], r["type"], r["data"]) for r in records
    ]


def test_plain_http_only_redirects(prod: Plan) -> None:
    ids = by_id(prod)
    rule = next(r for r in of(prod, FORWARDING_RULE) if r.inputs["portRange"] == "80")
    proxy = ids[rule.inputs["target"]]
    assert proxy.type == "gcp:compute/targetHttpProxy:TargetHttpProxy"
    url_map = ids[proxy.inputs["urlMap"]]
    assert url_map.inputs["defaultUrlRedirect"]["httpsRedirect"] is True
    # The redirect map reaches no backend.
    assert not {"defaultService", "pathMatchers", "hostRules"} & set(url_map.inputs)


def test_cloud_armor_guards_the_backend_when_configured(prod: Plan, dev: Plan) -> None:
    ids = by_id(prod)
    backend = one(prod, "gcp:compute/backendService:BackendService")
    armor = ids[backend.inputs["securityPolicy"]]
    actions = [rule["action"] for rule in armor.inputs["rules"]]
    assert "throttle" in actions and "deny(403)" in actions
    waf = [
        rule["match"]["expr"]["expression"] for rule in armor.inputs["rules"] if rule["action"] == "deny(403)"
    ]
    assert any("sqli" in e for e in waf) and any("xss" in e for e in waf)
    # Chat text looks like SQL and script often enough: the least false-positive-prone level, and
    # the free-text routes (their bodies are data to the app) left to the app.
    for e in waf:
        assert "{'sensitivity': 1}" in e, e
        assert "!request.path.matches('^/v1/sessions/[^/]+/(messages|tasks)$')" in e, e
    throttle = next(rule for rule in armor.inputs["rules"] if rule["action"] == "throttle")
    assert throttle["rateLimitOptions"]["exceedAction"] == "deny(429)"
    # Per client address, a multiple of the fleet's per-key budget (one client, several keys).
    fleet_budget = 600  # stacks/environments/fleet-prod.yaml
    assert throttle["rateLimitOptions"]["rateLimitThreshold"] == {
        "count": fleet_budget * EDGE_RATE_FACTOR,
        "intervalSec": 60,
    }
    # Off in the dev variant: no policy, and the backend names none.
    assert not of(dev, "gcp:compute/securityPolicy:SecurityPolicy")
    assert "securityPolicy" not in one(dev, "gcp:compute/backendService:BackendService").inputs


def applies(rule: dict[str, Any], path: str) -> bool:
    """Whether a planned Cloud Armor rule's match holds for a request to ``path``, the WAF's own
    verdict taken as "attack" (so a WAF rule applies wherever its path conditions let it)."""
    match = rule["match"]
    if "expr" not in match:
        assert match["versionedExpr"] == "SRC_IPS_V1" and match["config"]["srcIpRanges"] == ["*"], match
        return True
    result = True
    for clause in match["expr"]["expression"].split(" && "):
        found = re.fullmatch(r"(!?)request\.path\.matches\('([^']*)'\)", clause)
        if found:
            # CEL's matches is RE2 with search semantics; these patterns mean the same in re.
            result = result and bool(re.search(found[2], path)) != bool(found[1])
        else:
            assert clause.startswith("evaluatePreconfiguredWaf("), clause
    return result


def paths(templates: list[str]) -> list[str]:
    return [re.sub(r"\{[^}]+\}", "Ab-0_9", t) for t in templates]


def test_cloud_armor_leaves_the_fleet_routes_to_the_app(prod: Plan) -> None:
    """Replication (PUT .../{sessions|tasks}/{id}) and appends carry users' messages, and come from
    a peer site's few NAT addresses: the WAF would refuse a chat with SQL or HTML in it, and the
    per-IP limit would throttle a whole site's replication. The app checks the fleet key (the
    client requests behind them were limited by key), so every fleet route passes the WAF and the
    throttle; client routes do not."""
    from agent_app.routers.fleet import router as fleet_router

    ids = by_id(prod)
    armor = ids[one(prod, "gcp:compute/backendService:BackendService").inputs["securityPolicy"]]
    rules = armor.inputs["rules"]
    waf = [r for r in rules if r["action"] == "deny(403)"]
    (throttle,) = [r for r in rules if r["action"] == "throttle"]
    assert len(waf) >= 4

    fleet = paths([route.path for route in fleet_router.routes])  # type: ignore[attr-defined]
    assert fleet and all(p.startswith(f"{contract.FLEET_PATH_PREFIX}/") for p in fleet)
    for path in fleet:
        assert not any(applies(r, path) for r in waf), path
        assert not applies(throttle, path), path

    # Every client route is still throttled per IP, and inspected by the WAF unless its body is
    # free text; a path that only looks like the fleet's is no way around either.
    client = paths(list(json.loads((ROOT / "agent_app" / "openapi.json").read_text())["paths"]))
    free_text = {"/v1/sessions/Ab-0_9/messages", "/v1/sessions/Ab-0_9/tasks"}
    assert free_text < set(client) and "/v1/sessions" in client
    prefix = contract.FLEET_PATH_PREFIX
    lookalikes = [
        f"{prefix}/../../v1/sessions",
        f"{prefix}/%2e%2e/%2e%2e/v1/sessions",
        f"{prefix}x/sessions/Ab-0_9",
        prefix,
    ]
    for path in [*client, *lookalikes]:
        assert applies(throttle, path), path
        if path not in free_text:
            assert all(applies(r, path) for r in waf), path
    assert throttle["rateLimitOptions"]["enforceOnKey"] == "IP"
    assert throttle["rateLimitOptions"]["conformAction"] == "allow"


# --- Cloud Run: not public beyond the load balancer ----------------------------------------------


def test_cloud_run_ingress_is_restricted(prod: Plan) -> None:
    assert service(prod, "api").inputs["ingress"] == "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
    assert service(prod, "worker").inputs["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"
    # The load balancer's serverless NEG presents no identity: the api's invoker check is off and
    # its ingress keeps everyone but the load balancer out; the worker keeps the check.
    assert service(prod, "api").inputs["invokerIamDisabled"] is True
    assert service(prod, "worker").inputs["invokerIamDisabled"] is False


def test_no_public_invoker_grant(prod: Plan) -> None:
    """allUsers as invoker is refused under Domain Restricted Sharing, and not needed."""
    public = [r for r in iam_members(prod) if r.inputs["member"] in ("allUsers", "allAuthenticatedUsers")]
    assert public == []
    assert not of(prod, RUN_INVOKER)


def test_direct_vpc_egress_to_private_ranges(prod: Plan) -> None:
    subnet = one(prod, "gcp:compute/subnetwork:Subnetwork")
    vpc = one(prod, "gcp:compute/network:Network")
    assert vpc.inputs["autoCreateSubnetworks"] is False
    assert subnet.inputs["privateIpGoogleAccess"] is True and subnet.inputs["logConfig"]
    for role in ("api", "worker"):
        access = service(prod, role).inputs["template"]["vpcAccess"]
        assert access["egress"] == "PRIVATE_RANGES_ONLY"
        assert access["networkInterfaces"][0]["subnetwork"] == subnet.outputs["id"]


def test_api_and_worker_run_the_contract_commands_from_one_image(prod: Plan) -> None:
    image = config()["skyfleet:app"]["image"]
    api = app_container(service(prod, "api"), "api")
    worker = app_container(service(prod, "worker"), "worker")
    assert api["image"] == worker["image"] == image
    assert tuple(api["commands"]) == contract.API_COMMAND
    assert tuple(worker["commands"]) == contract.WORKER_COMMAND
    assert api["startupProbe"]["httpGet"]["path"] == contract.READINESS_PATH
    assert api["livenessProbe"]["httpGet"]["path"] == contract.LIVENESS_PATH
    assert api["ports"]["containerPort"] == contract.DEFAULT_PORT
    # The worker is its own ingress container: it serves its probes on the contract's port.
    containers = service(prod, "worker").inputs["template"]["containers"]
    assert [c["name"] for c in containers] == ["worker"]
    assert worker["ports"]["containerPort"] == contract.DEFAULT_PORT
    assert worker["startupProbe"]["httpGet"]["path"] == contract.READINESS_PATH
    assert worker["livenessProbe"]["httpGet"]["path"] == contract.LIVENESS_PATH
    assert worker["resources"]["cpuIdle"] is False


def test_cpu_idles_between_requests_only_where_nothing_runs_between_them(prod: Plan, dev: Plan) -> None:
    """The worker pulls its tasks, and a fleet's api takes a lost site's tasks over and finishes
    its copies with no request in flight: Cloud Run would starve both of CPU. A dev site on its
    own has an api that works only in requests."""
    assert Env.FLEET_SITES.value in envs(app_container(service(prod, "api"), "api"))
    assert Env.FLEET_SITES.value not in envs(app_container(service(dev, "api"), "api"))
    for role in ("api", "worker"):
        assert app_container(service(prod, role), role)["resources"]["cpuIdle"] is False, role
    assert app_container(service(dev, "api"), "api")["resources"]["cpuIdle"] is True
    assert app_container(service(dev, "worker"), "worker")["resources"]["cpuIdle"] is False


def test_min_instances_follow_the_spec_in_prod(prod: Plan) -> None:
    app = config()["skyfleet:app"]
    api = service(prod, "api").inputs["template"]["scaling"]
    worker = service(prod, "worker").inputs["template"]["scaling"]
    assert api["minInstanceCount"] == app["replicas"]["min"] >= 2
    assert api["maxInstanceCount"] == app["replicas"]["max"]
    assert worker["minInstanceCount"] == app["workerReplicas"]["min"] >= 1
    assert worker["maxInstanceCount"] == app["workerReplicas"]["max"]
    # Autoscaling on the spec's CPU target; the worker (no requests) on CPU alone.
    target = app["autoscaling"]["cpuTargetPercent"] / 100
    assert api["cpuUtilization"] == worker["cpuUtilization"] == target
    assert worker["concurrencyUtilization"] == 0 and "concurrencyUtilization" not in api


def test_app_env_wires_cache_queue_and_secrets(prod: Plan) -> None:
    redis = one(prod, REDIS)
    topic = one(prod, TOPIC, "tasks")
    sub = one(prod, SUBSCRIPTION, "tasks-worker")
    secrets = {r.name: r for r in of(prod, SECRET)}
    for role in ("api", "worker"):
        svc = service(prod, role)
        env = envs(app_container(svc, role))
        assert env[Env.REDIS_URL]["value"] == f"rediss://{redis.outputs['host']}:{int(redis.outputs['port'])}"
        assert env[Env.QUEUE_URL]["value"] == contract.pubsub_queue_url(
            config()["skyfleet:project"], topic.outputs["name"], sub.outputs["name"]
        )
        # The Redis password only as a secret reference, never as a value.
        # Memorystore's certificate names only its IP (in the CN): the name check is off, the
        # chain is still checked against the instance's own CA.
        assert env[Env.REDIS_TLS_CHECK_HOSTNAME]["value"] == "false"
        ref = env[Env.REDIS_PASSWORD]["valueSource"]["secretKeyRef"]
        assert "value" not in env[Env.REDIS_PASSWORD]
        assert ref["secret"] == secrets["redis-auth"].inputs["secretId"]
        # The Redis CA, from the instance's serverCaCerts, mounted as a file.
        ca_dir, ca_file = env[Env.REDIS_CA_FILE]["value"].rsplit("/", 1)
        volumes = {v["name"]: v for v in svc.inputs["template"]["volumes"]}
        mount = next(m for m in app_container(svc, role)["volumeMounts"] if m["mountPath"] == ca_dir)
        assert volumes[mount["name"]]["secret"]["secret"] == secrets["redis-ca"].inputs["secretId"]
        assert volumes[mount["name"]]["secret"]["items"][0]["path"] == ca_file
    # Only the api gets the client API keys, as a file at the contract's path.
    api_env = envs(app_container(service(prod, "api"), "api"))
    assert (
        api_env[Env.API_KEYS_FILE]["value"] == f"{contract.API_KEYS_MOUNT_DIR}/{contract.API_KEYS_FILE_NAME}"
    )
    assert Env.API_KEYS_FILE not in envs(app_container(service(prod, "worker"), "worker"))
    assert Env.API_KEYS not in api_env


# Cloud Run's container runtime contract: SIGKILL 10 s after SIGTERM.
CLOUD_RUN_SIGKILL_SECONDS = 10


def test_the_app_ends_its_shutdown_before_cloud_run_kills_it(prod: Plan) -> None:
    for role in ("api", "worker"):
        grace = int(envs(app_container(service(prod, role), role))[Env.SHUTDOWN_GRACE_SECONDS]["value"])
        assert 0 < grace + contract.SHUTDOWN_EXIT_SECONDS <= CLOUD_RUN_SIGKILL_SECONDS


def test_secret_values_are_pulumi_secrets_in_region(prod: Plan) -> None:
    region = config()["skyfleet:region"]
    for secret in of(prod, SECRET):
        replicas = secret.inputs["replication"]["userManaged"]["replicas"]
        assert [r["location"] for r in replicas] == [region]
    versions = of(prod, "gcp:secretmanager/secretVersion:SecretVersion")
    assert versions
    for v in versions:
        data = v.inputs["secretData"]
        assert isinstance(data, dict) and "4dabf18193072939515e22adb298388d" in data, v.name
    redis = one(prod, REDIS)
    auth = next(v for v in versions if v.name == "redis-auth-version")
    assert plain(auth.inputs["secretData"]) == plain(redis.outputs["authString"])


# --- IAM: dedicated identities, least privilege ------------------------------------------------------


def test_each_service_has_a_dedicated_service_account(prod: Plan) -> None:
    accounts = {r.outputs["email"] for r in of(prod, "gcp:serviceaccount/account:Account")}
    used = [service(prod, role).inputs["template"]["serviceAccount"] for role in ("api", "worker")]
    assert len(set(used)) == 2 and set(used) <= accounts
    assert not any(u.endswith("-compute@developer.gserviceaccount.com") for u in used)


def test_no_project_level_or_broad_grants(prod: Plan) -> None:
    for r in prod.resources:
        assert not r.type.startswith("gcp:projects/iAM"), f"project-level IAM: {r.name}"
        assert not r.type.startswith("gcp:organizations/iAM"), r.name
    for m in iam_members(prod):
        assert m.inputs["role"] not in BROAD_ROLES, f"{m.name}: {m.inputs['role']}"
        assert "*" not in m.inputs["role"]


def test_service_accounts_hold_only_their_grants(prod: Plan) -> None:
    secrets = {r.outputs["id"]: r.name for r in of(prod, SECRET)}
    topic = one(prod, TOPIC, "tasks").outputs["name"]
    dead_letter = one(prod, TOPIC, "tasks-dead-letter").outputs["name"]
    sub = one(prod, SUBSCRIPTION, "tasks-worker").outputs["name"]
    for role in ("api", "worker"):
        svc = service(prod, role)
        member = f"serviceAccount:{svc.inputs['template']['serviceAccount']}"
        grants = [m for m in iam_members(prod) if m.inputs["member"] == member]
        # Secret access: exactly the secrets the service mounts or injects.
        template = svc.inputs["template"]
        referenced = {v["secret"]["secret"] for v in template.get("volumes", [])} | {
            e["valueSource"]["secretKeyRef"]["secret"]
            for c in template["containers"]
            for e in c.get("envs", [])
            if "valueSource" in e
        }
        accessed = {
            f"{prod.outputs['site']}-{secrets[g.inputs['secretId']]}"
            for g in grants
            if g.inputs["role"] == "roles/secretmanager.secretAccessor"
        }
        assert accessed == referenced, role
        queue = {
            (g.inputs.get("topic") or g.inputs["subscription"], g.inputs["role"])
            for g in grants
            if "pubsub" in g.type
        }
        if role == "api":
            assert queue == {(topic, "roles/pubsub.publisher"), (topic, "roles/pubsub.viewer")}
        else:
            assert queue == {
                (sub, "roles/pubsub.subscriber"),
                (sub, "roles/pubsub.viewer"),
                (topic, "roles/pubsub.publisher"),  # a copy of what it hands back on shutdown
                (dead_letter, "roles/pubsub.publisher"),  # what it dead-letters
            }
        assert len(grants) == len(accessed) + len(queue)


# --- Memorystore -----------------------------------------------------------------------------------


def test_memorystore_is_private_with_auth_and_tls_and_ha_in_prod(prod: Plan) -> None:
    redis = one(prod, REDIS)
    vpc = one(prod, "gcp:compute/network:Network")
    assert redis.inputs["authEnabled"] is True
    assert redis.inputs["transitEncryptionMode"] == "SERVER_AUTHENTICATION"
    assert redis.inputs["connectMode"] == "PRIVATE_SERVICE_ACCESS"
    assert redis.inputs["authorizedNetwork"] == vpc.outputs["id"]
    assert redis.inputs["tier"] == "STANDARD_HA" and redis.inputs["replicaCount"] >= 1
    assert redis.inputs["deletionProtection"] is True and redis.protect
    # Private service access: a peering range and the servicenetworking connection using it.
    rng = one(prod, "gcp:compute/globalAddress:GlobalAddress", "private-services-range")
    assert rng.inputs["purpose"] == "VPC_PEERING" and rng.inputs["addressType"] == "INTERNAL"
    conn = one(prod, "gcp:servicenetworking/connection:Connection")
    assert conn.inputs["reservedPeeringRanges"] == [rng.outputs["name"]]
    assert redis.inputs["reservedIpRange"] == rng.outputs["name"]


def test_model_key_is_a_secret_both_processes_read(dev: Plan) -> None:
    model = one(dev, SECRET, "model-api-key")
    for role in ("api", "worker"):
        svc = service(dev, role)
        env = envs(app_container(svc, role))
        assert env[Env.MODEL_API_KEY]["valueSource"]["secretKeyRef"]["secret"] == model.inputs["secretId"]
        member = f"serviceAccount:{svc.inputs['template']['serviceAccount']}"
        assert any(
            m.inputs["member"] == member and m.inputs.get("secretId") == model.outputs["id"]
            for m in iam_members(dev)
        )


def test_dev_gets_a_basic_cache_and_single_instances(dev: Plan) -> None:
    redis = one(dev, REDIS)
    assert redis.inputs["tier"] == "BASIC" and "replicaCount" not in redis.inputs
    assert redis.inputs["deletionProtection"] is False and not redis.protect
    assert redis.inputs["authEnabled"] is True
    assert redis.inputs["transitEncryptionMode"] == "SERVER_AUTHENTICATION"
    assert service(dev, "api").inputs["template"]["scaling"]["minInstanceCount"] == 1
    assert service(dev, "api").inputs["deletionProtection"] is False
    assert one(dev, "gcp:compute/sSLPolicy:SSLPolicy").inputs["minTlsVersion"] == "TLS_1_2"


# --- Pub/Sub dead-lettering ----------------------------------------------------------------------


def _assert_dead_letter_wiring(plan: Plan, attempts: int) -> None:
    sub = one(plan, SUBSCRIPTION, "tasks-worker")
    dlq = one(plan, TOPIC, "tasks-dead-letter")
    policy = sub.inputs["deadLetterPolicy"]
    assert policy["deadLetterTopic"] == dlq.outputs["id"]
    assert policy["maxDeliveryAttempts"] == attempts + 1  # the worker's reserved delivery
    assert sub.inputs["expirationPolicy"]["ttl"] == ""
    hold = one(plan, SUBSCRIPTION, "tasks-dead-letter-hold")
    assert hold.inputs["topic"] == dlq.outputs["id"]
    # The Pub/Sub service agent may publish to the DLQ topic and ack on the source subscription;
    # it is generated first, so the grants never name an agent that does not exist yet.
    identity = one(plan, "gcp:projects/serviceIdentity:ServiceIdentity")
    assert identity.inputs["service"] == "pubsub.googleapis.com"
    agent = f"serviceAccount:{identity.outputs['email']}"
    granted = [r for r in iam_members(plan) if r.inputs["member"] == agent]
    assert all(identity.urn in r.dependencies for r in granted)
    grants = {(r.inputs.get("topic") or r.inputs.get("subscription"), r.inputs["role"]) for r in granted}
    assert grants == {
        (dlq.outputs["name"], "roles/pubsub.publisher"),
        (sub.outputs["name"], "roles/pubsub.subscriber"),
    }


def test_dead_letter_policy_follows_config(prod: Plan, dev: Plan) -> None:
    _assert_dead_letter_wiring(prod, config()["skyfleet:queue"]["maxDeliveryAttempts"])
    _assert_dead_letter_wiring(dev, 7)
    sub = one(prod, SUBSCRIPTION, "tasks-worker")
    queue = config()["skyfleet:queue"]
    assert sub.inputs["ackDeadlineSeconds"] == queue["visibilityTimeoutSeconds"]
    assert sub.inputs["messageRetentionDuration"] == f"{min(queue['retentionSeconds'], 604800)}s"


# --- logs and alerts -----------------------------------------------------------------------------


def test_logs_go_to_a_bucket_with_the_configured_retention(prod: Plan) -> None:
    bucket = one(prod, "gcp:logging/projectBucketConfig:ProjectBucketConfig")
    assert bucket.inputs["retentionDays"] == config()["skyfleet:logRetentionDays"]
    sink = one(prod, "gcp:logging/projectSink:ProjectSink")
    assert sink.inputs["destination"] == f"logging.googleapis.com/{bucket.outputs['id']}"
    for role in ("api", "worker"):
        assert f'"{service(prod, role).inputs["name"]}"' in sink.inputs["filter"]


def test_alerts_cover_error_rate_and_dead_letters_and_notify(prod: Plan) -> None:
    policies = {r.name: r for r in of(prod, "gcp:monitoring/alertPolicy:AlertPolicy")}
    channel = one(prod, "gcp:monitoring/notificationChannel:NotificationChannel")
    assert channel.inputs["labels"]["email_address"] == config()["skyfleet:alertEmail"]
    filters = {
        name: " ".join(c["conditionThreshold"]["filter"] for c in p.inputs["conditions"])
        for name, p in policies.items()
    }
    https_rule = next(r for r in of(prod, FORWARDING_RULE) if r.inputs["portRange"] == "443")
    assert "response_code_class=500" in filters["api-5xx-rate"]
    assert f'forwarding_rule_name="{https_rule.outputs["name"]}"' in filters["api-5xx-rate"]
    hold = one(prod, SUBSCRIPTION, "tasks-dead-letter-hold")
    assert "num_undelivered_messages" in filters["dead-letter-backlog"]
    assert f'subscription_id="{hold.outputs["name"]}"' in filters["dead-letter-backlog"]
    for p in policies.values():
        assert p.inputs["notificationChannels"] == [channel.outputs["id"]]


# --- config errors and preview -------------------------------------------------------------------


def test_values_pubsub_cannot_honour_fail_before_any_resource(
    temp_project: Callable[[str, str], Path],
) -> None:
    text = variant(queue={"maxDeliveryAttempts": 3}, logRetentionDays=3653)
    with pytest.raises(ConfigError) as err:
        plan_stack(temp_project("gcp-bad", text), "gcp-bad")
    message = str(err.value)
    assert "stacks/Pulumi.gcp-bad.yaml" in message
    assert "skyfleet:queue.maxDeliveryAttempts" in message and "given 3" in message and "4..99" in message
    assert "skyfleet:logRetentionDays" in message and "given 3653" in message
    assert err.value.registered == 0


def test_a_region_gcp_has_no_such_name_for_fails_before_any_resource(
    temp_project: Callable[[str, str], Path],
) -> None:
    with pytest.raises(ConfigError) as err:
        plan_stack(temp_project("gcp-region", variant(region="eu-west-1")), "gcp-region")
    assert "skyfleet:region" in str(err.value) and "given 'eu-west-1'" in str(err.value)
    assert err.value.registered == 0


def test_cpu_units_are_vcpus_of_1024_and_large_sizes_need_their_memory(
    prod: Plan, temp_project: Callable[[str, str], Path]
) -> None:
    # 1024 units are one vCPU, as on Fargate (not two, as 1000 millicores each would make them).
    assert cloud_run_limits(1024, 1024) == {"cpu": "1", "memory": "1024Mi"}
    assert cloud_run_limits(2048, 2048)["cpu"] == "2"
    assert cloud_run_limits(4096, 2048)["cpu"] == "4"
    app = config()["skyfleet:app"]
    limits = app_container(service(prod, "api"), "api")["resources"]["limits"]
    assert limits["cpu"] == str(-(-app["cpu"] // 1024))
    # 4 vCPUs need 2 GiB: a stack asking for less fails before any resource, naming the keys.
    text = variant(app={**app, "cpu": 4096, "memory": 1024})
    with pytest.raises(ConfigError) as err:
        plan_stack(temp_project("gcp-small", text), "gcp-small")
    message = str(err.value)
    assert "skyfleet:app.memory" in message and "given 1024" in message and ">= 2048" in message
    assert err.value.registered == 0


def test_preview_plans_with_unknown_outputs() -> None:
    plan = plan_stack(ROOT, STACK, preview=True)
    assert len(of(plan, RUN)) == 2 and of(plan, REDIS)
