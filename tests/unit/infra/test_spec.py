"""The spec refuses what the app or the clouds would refuse, naming the key: platform-set
variables in app.env and app.secrets, site names no cloud id can hold, short fleet keys; and the
longest site name it allows plans ids every cloud accepts."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from agent_app.contract import PLATFORM_ENV, SECRET_ENV, Env
from infra.config import SpecError, load_spec
from infra.spec import (
    FLEET_KEY_MIN_LENGTH,
    SECRET_KEYS,
    SITE_NAME_MAX_LENGTH,
    SITE_NAME_MIN_LENGTH,
    parse_spec,
)
from skyfleet.plan import ConfigError, Plan, plan_stack
from tests.support.plans import ROOT, minimal_aws_spec

AWS_DEV = (ROOT / "stacks" / "Pulumi.aws-dev.yaml").read_text()
# The longest site name the spec allows, with a hyphen where an id cut at a cloud's limit would
# otherwise end in one.
LONGEST_SITE = "prod-eu-west-dc1-site-a"


def _base(**extra: Any) -> dict[str, Any]:
    return minimal_aws_spec(**extra)


def _refused(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        parse_spec(data)
    return str(info.value)


def _file_error(make: Callable[[str, str], Path], text: str) -> str:
    project = make("broken", text)
    with pytest.raises(ConfigError) as info:
        plan_stack(project, "broken")
    assert info.value.registered == 0, "resources were registered despite invalid config"
    return str(info.value)


def _break(text: str, old: str, new: str) -> str:
    assert old in text, f"fixture drifted: {old!r} not in aws-dev"
    return text.replace(old, new, 1)


# --- app.secrets: the platform's own variables, and only the secret keys -------------------------


@pytest.mark.parametrize("var", sorted(e.value for e in PLATFORM_ENV | SECRET_ENV))
def test_app_secrets_may_not_name_a_variable_the_platform_sets(var: str) -> None:
    message = _refused(_base(fleetKey="k" * 40, app={**_base()["app"], "secrets": {var: "fleetKey"}}))
    assert "app.secrets" in message and f"{var} is set by the platform" in message


def test_app_secrets_name_one_of_the_secret_keys() -> None:
    message = _refused(_base(app={**_base()["app"], "secrets": {"VENDOR_TOKEN": "vendorKey"}}))
    assert "app.secrets" in message and "VENDOR_TOKEN: vendorKey" in message
    assert str(sorted(SECRET_KEYS)) in message


def test_a_platform_secret_in_app_secrets_is_refused_in_the_stack_file(
    temp_project: Callable[[str, str], Path],
) -> None:
    text = _break(AWS_DEV, "    env:\n", "    secrets:\n      AGENT_FLEET_KEY: apiKeys\n    env:\n")
    message = _file_error(temp_project, text)
    assert "stacks/Pulumi.broken.yaml" in message
    assert re.search(r"skyfleet:app\.secrets \(line \d+\): given .*AGENT_FLEET_KEY", message), message
    assert "AGENT_FLEET_KEY is set by the platform (from the fleetKey secret)" in message


def test_a_variable_in_both_app_env_and_app_secrets_is_refused() -> None:
    app = {**_base()["app"], "env": {"VENDOR_REGION": "eu"}, "secrets": {"VENDOR_REGION": "apiKeys"}}
    assert "VENDOR_REGION is in both app.env and app.secrets" in _refused(_base(app=app))


# --- app.env: what the platform computes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "source"),
    [
        (Env.RATE_LIMIT_PER_MINUTE, "app.rateLimitPerMinute, or fleet.rateLimitPerMinute"),
        (Env.TASK_LEASE_SECONDS, "queue.visibilityTimeoutSeconds"),
    ],
)
def test_app_env_may_not_override_what_the_platform_computes(
    temp_project: Callable[[str, str], Path], var: Env, source: str
) -> None:
    assert var in PLATFORM_ENV
    text = _break(
        AWS_DEV,
        "      AGENT_MODEL_BACKEND: offline",
        f"      AGENT_MODEL_BACKEND: offline\n      {var.value}: '30'",
    )
    message = _file_error(temp_project, text)
    assert re.search(r"skyfleet:app\.env \(line \d+\)", message), message
    assert f"{var.value} is set by the platform (from {source}" in message
    assert "remove it from app.env" in message


def test_no_shipped_stack_sets_a_platform_variable() -> None:
    reserved = {e.value for e in PLATFORM_ENV | SECRET_ENV}
    for path in sorted((ROOT / "stacks").glob("Pulumi.*.yaml")):
        app = (yaml.safe_load(path.read_text())["config"] or {}).get("skyfleet:app") or {}
        assert not reserved & set(app.get("env") or {}), path.name
        assert not reserved & set(app.get("secrets") or {}), path.name


# --- site names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "site",
    [
        "Prod_EU-west",  # upper case, underscore
        "prod-eu-",  # ends in a hyphen
        "1prod",  # starts with a digit
        "prod--eu",  # two hyphens (ElastiCache refuses them)
        "pr",  # too short
        "a" * (SITE_NAME_MAX_LENGTH + 1),  # a cache or service account id could not hold it whole
    ],
)
def test_a_site_name_no_cloud_id_can_hold_is_refused(site: str) -> None:
    message = _refused(_base(site=site))
    assert (
        "site" in message and f"{SITE_NAME_MIN_LENGTH}-{SITE_NAME_MAX_LENGTH} lower-case letters" in message
    )


def test_a_bad_site_name_is_named_in_the_stack_file(temp_project: Callable[[str, str], Path]) -> None:
    message = _file_error(
        temp_project, _break(AWS_DEV, "skyfleet:site: aws-dev", "skyfleet:site: Prod_EU-west")
    )
    assert re.search(
        r"skyfleet:site \(line \d+\): given 'Prod_EU-west'; expected 3-23 lower-case", message
    ), message


def _stack_with_site(target: str, site: str) -> str:
    """A shipped stack of ``target`` as a site on its own (no fleet) named ``site``."""
    if target == "aws":
        return _break(AWS_DEV, "skyfleet:site: aws-dev", f"skyfleet:site: {site}")
    doc = yaml.safe_load((ROOT / "stacks" / f"Pulumi.{target}-prod.yaml").read_text())
    doc.pop("environment", None)
    doc["config"]["skyfleet:site"] = site
    doc["config"]["skyfleet:apiKeys"] = {"secure": "v1:ZGV2:placeholder"}
    return yaml.safe_dump(doc)


@pytest.fixture(scope="module")
def longest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Plan]:
    """Each site target planned with the longest site name, from a copy of the project."""
    plans = {}
    for target in ("aws", "gcp", "onprem"):
        directory = tmp_path_factory.mktemp(target)
        shutil.copy(ROOT / "Pulumi.yaml", directory / "Pulumi.yaml")
        (directory / "infra").symlink_to(ROOT / "infra")
        (directory / "stacks").mkdir()
        stack = f"{target}-longest"
        (directory / "stacks" / f"Pulumi.{stack}.yaml").write_text(_stack_with_site(target, LONGEST_SITE))
        plans[target] = plan_stack(directory, stack)
    return plans


def _inputs(plan: Plan, type_: str, key: str) -> list[str]:
    return [r.inputs[key] for r in plan.resources if r.type == type_ and isinstance(r.inputs.get(key), str)]


def test_the_longest_site_name_plans_ids_every_cloud_accepts(longest: dict[str, Plan]) -> None:
    assert len(LONGEST_SITE) == SITE_NAME_MAX_LENGTH
    parse_spec(_base(site=LONGEST_SITE))
    # AWS: the ElastiCache replication group id (1-40; a letter first, no "--", no trailing "-"),
    # whole; the S3 bucket for the ALB's logs (3-63, no trailing "-").
    aws = longest["aws"]
    (group,) = _inputs(aws, "aws:elasticache/replicationGroup:ReplicationGroup", "replicationGroupId")
    assert len(group) <= 40 and re.fullmatch(r"[a-z](?:-?[a-z0-9])*", group) and LONGEST_SITE in group, group
    buckets = set(_inputs(aws, "aws:s3/bucket:Bucket", "bucket")) | set(
        _inputs(aws, "aws:s3/bucketV2:BucketV2", "bucket")
    )
    assert buckets
    for bucket in buckets:
        assert 3 <= len(bucket) <= 63 and re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", bucket), bucket
    # GCP: service account ids (6-30), Memorystore (at most 40), Cloud Run (at most 49), every
    # other name of the site (at most 63): lower case, a letter first, no trailing "-", whole.
    gcp = longest["gcp"]
    accounts = _inputs(gcp, "gcp:serviceaccount/account:Account", "accountId")
    assert accounts
    for account in accounts:
        assert re.fullmatch(r"[a-z][-a-z0-9]{4,28}[a-z0-9]", account) and LONGEST_SITE in account, account
    limits = {"gcp:redis/instance:Instance": 40, "gcp:cloudrunv2/service:Service": 49}
    named = [
        (r.type, r.inputs["name"]) for r in gcp.resources if LONGEST_SITE in str(r.inputs.get("name", ""))
    ]
    assert len(named) > 10
    for type_, name in named:
        assert len(name) <= limits.get(type_, 63) and re.fullmatch(r"[a-z](?:[-a-z0-9]*[a-z0-9])?", name), (
            type_,
            name,
        )
    # onprem: the site's name is the app's AGENT_SITE.
    sites = {
        e.get("value")
        for r in longest["onprem"].resources
        if r.type == "kubernetes:apps/v1:Deployment"
        for c in r.inputs["spec"]["template"]["spec"]["containers"]
        for e in c.get("env") or []
        if e.get("name") == Env.SITE.value
    }
    assert sites == {LONGEST_SITE}


# --- the fleet key ---------------------------------------------------------------------------------


FLEET = {
    "name": "prod",
    "sites": [
        {"name": "aws", "host": "a.example.com"},
        *({"name": n, "host": f"{n}.example.com"} for n in ("bbb", "ccc")),
    ],
}


def _in_fleet(**extra: Any) -> dict[str, Any]:
    return _base(fleet=FLEET, **extra)


def test_a_fleet_key_shorter_than_the_app_accepts_is_refused_and_not_shown() -> None:
    short = "s3cr3t-but-too-short"
    assert len(short) < FLEET_KEY_MIN_LENGTH
    config = {f"skyfleet:{k}": v for k, v in _in_fleet(fleetKey=short).items()}
    with pytest.raises(SpecError) as info:
        load_spec(config, {"skyfleet:apiKeys", "skyfleet:fleetKey"}, source="Pulumi.short.yaml")
    message = str(info.value)
    assert "skyfleet:fleetKey: given a value (not shown); expected at least 32 characters" in message
    assert Env.FLEET_KEY.value in message and short not in message
    parse_spec(_in_fleet(fleetKey="k" * FLEET_KEY_MIN_LENGTH))


def test_a_fleet_key_without_a_fleet_is_refused_and_not_shown() -> None:
    """A fleet's ESC environment that delivers the keys but not the fleet must not deploy the
    site alone; the error names the key, never its value, as one problem."""
    key = "f00dfeed" * 8
    config = {f"skyfleet:{k}": v for k, v in _base(fleetKey=key).items()}
    with pytest.raises(SpecError) as info:
        load_spec(config, {"skyfleet:apiKeys", "skyfleet:fleetKey"}, source="Pulumi.alone.yaml")
    assert [p.key for p in info.value.problems] == ["skyfleet:fleetKey"]
    message = str(info.value)
    assert "fleetKey is set but there is no fleet section: the site would deploy alone" in message
    assert "define fleet" in message and "a value (not shown)" in message
    assert "f00dfeed" not in message


def test_a_whole_stack_problem_is_one_problem_under_its_key() -> None:
    config = {
        f"skyfleet:{k}": v
        for k, v in _base(
            target="onprem",
            cluster={"context": "c", "monitoringLabels": {"owner": "x"}},
        ).items()
        if k not in ("region", "accountId")
    }
    with pytest.raises(SpecError) as info:
        load_spec(config, {"skyfleet:apiKeys"}, source="Pulumi.labels.yaml")
    assert [p.key for p in info.value.problems] == ["skyfleet:cluster.monitoringLabels"]
    assert "has owner, the stack's own labels (from tags and environment): choose other keys" in str(
        info.value
    )


def test_the_spec_requires_the_fleet_key_length_the_app_does() -> None:
    from agent_app.config import Settings

    def app_accepts(key: str) -> bool:
        env = {
            Env.SITE.value: "a",
            Env.REDIS_URL.value: "redis://localhost:6379/0",
            Env.QUEUE_URL.value: "nats://localhost:4222/S?subject=s",
            Env.FLEET_SITES.value: "a=https://a.example.com,b=https://b.example.com",
            Env.FLEET_REPLICATION.value: "async",
            Env.FLEET_KEY.value: key,
        }
        try:
            Settings.model_validate(env)
        except ValidationError:
            return False
        return True

    def spec_accepts(key: str) -> bool:
        try:
            parse_spec(_in_fleet(fleetKey=key))
        except ValidationError:
            return False
        return True

    for n in (FLEET_KEY_MIN_LENGTH - 1, FLEET_KEY_MIN_LENGTH):
        assert app_accepts("k" * n) == spec_accepts("k" * n), n


@pytest.mark.parametrize(
    "url", ["http://models.example.com/v1", "https://models.example.com:8000/v1", "https:///v1"]
)
def test_a_model_api_the_sites_egress_cannot_reach_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match=r"AGENT_MODEL_BASE_URL: given .*port 443"):
        parse_spec(_base(app={**_base()["app"], "env": {"AGENT_MODEL_BASE_URL": url}}))
    ok = "https://models.example.com/v1"
    parse_spec(_base(app={**_base()["app"], "env": {"AGENT_MODEL_BASE_URL": ok}}))


@pytest.mark.parametrize("region", ["Not a region!", "eu-west", "europe-west1"])
def test_an_aws_region_name_aws_has_no_such_form_of_is_refused(region: str) -> None:
    with pytest.raises(ValidationError, match="region"):
        parse_spec(_base(region=region))
    for real in ("eu-west-1", "us-gov-west-1", "ap-southeast-2"):
        parse_spec(_base(region=real))


# --- processes that work between requests -----------------------------------------------------------


def test_a_process_that_works_between_requests_keeps_a_replica() -> None:
    """Nothing starts a worker for a queued message, nor a fleet's api to take a lost site's
    tasks over: neither may scale to zero. An api on its own may (Cloud Run starts one for a
    request)."""
    fleet = {
        "name": "f",
        "sites": [{"name": s, "host": f"{s}.example.com"} for s in ("aws", "b", "c")],
    }
    app = _base()["app"]
    message = _refused(_base(app={**app, "workerReplicas": {"min": 0, "max": 2}}))
    assert "app.workerReplicas.min is 0; the worker pulls its tasks" in message
    parse_spec(_base(app={**app, "workerReplicas": {"min": 1, "max": 2}}))
    alone = _base(app={**app, "replicas": {"min": 0, "max": 2}})
    parse_spec(alone)
    in_fleet = {**alone, "fleet": fleet, "fleetKey": "k" * FLEET_KEY_MIN_LENGTH}
    message = _refused({**in_fleet, "domain": {"name": "aws.example.com", "zoneId": "Z0EXAMPLE"}})
    assert "app.replicas.min is 0; in a fleet the api takes a lost site's tasks over" in message
    in_fleet["app"] = {**app, "replicas": {"min": 1, "max": 2}}
    parse_spec({**in_fleet, "domain": {"name": "aws.example.com", "zoneId": "Z0EXAMPLE"}})


# --- on-prem monitoring labels ------------------------------------------------------------------------


def _onprem(**cluster: Any) -> dict[str, Any]:
    base = _base(target="onprem", cluster={"context": "c", **cluster})
    del base["region"], base["accountId"]
    return base


@pytest.mark.parametrize(
    ("labels", "problem"),
    [
        ({"release": "a b"}, "release: 'a b': a label value is empty or 63 characters or fewer"),
        ({"release": "x" * 64}, "a label value is empty or 63 characters or fewer"),
        ({"-release": "k"}, "'-release': a label key is a name"),
        ({"Example.com/release": "k"}, "'Example.com/release': a label key is a name"),
        ({"app.kubernetes.io/name": "k"}, "the app's own labels use this prefix"),
        ({"/release": "k"}, "'/release': a label key is a name"),
        ({"owner": "someone-else"}, "cluster.monitoringLabels has owner, the stack's own labels"),
    ],
)
def test_monitoring_labels_kubernetes_would_refuse_or_that_clash_are_named(
    labels: dict[str, str], problem: str
) -> None:
    message = _refused(_onprem(monitoringLabels=labels))
    assert problem in message, message
    assert "monitoringLabels" in message, message


def test_monitoring_labels_kubernetes_accepts_pass() -> None:
    labels = {"release": "kube-prometheus-stack", "prometheus.example.com/scrape": "", "team": "a.b_c-d"}
    spec = parse_spec(_onprem(monitoringLabels=labels))
    assert spec.cluster.monitoring_labels == labels  # type: ignore[union-attr]


# --- client API keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ("client-key-0123456789,short", "key on line 2 is shorter than 16 characters"),
        # What a YAML tool makes of a file of one key per line: the keys joined by spaces.
        ("client-key-0123456789 other-key-0123456789", "key on line 1 holds whitespace"),
        (" , # none", "no key: give one or more"),
    ],
)
def test_api_keys_the_app_would_refuse_are_refused_and_not_shown(keys: str, problem: str) -> None:
    from agent_app.auth import ApiKeys
    from agent_app.config import ConfigError as AppConfigError

    with pytest.raises(AppConfigError):  # the app itself refuses them at start
        ApiKeys(file=None, inline=keys)
    config = {f"skyfleet:{k}": v for k, v in _base(apiKeys=keys).items()}
    with pytest.raises(SpecError) as info:
        load_spec(config, {"skyfleet:apiKeys"}, source="Pulumi.keys.yaml")
    message = str(info.value)
    assert "skyfleet:apiKeys" in message and problem in message, message
    assert "0123456789" not in message
