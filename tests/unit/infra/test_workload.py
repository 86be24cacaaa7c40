"""The processes every target runs: each secret an ``app.secrets`` entry names reaches its
variable, and no variable gets another secret's value."""

from __future__ import annotations

from typing import Any

import pytest

from agent_app.contract import Env
from infra.spec import SECRET_KEYS, AwsStack, parse_spec
from infra.workload import API_KEYS, FLEET_KEY, MODEL_API_KEY, SECRET_BY_KEY, secret_values, workloads


def _spec(secrets: dict[str, str]) -> AwsStack:
    spec = parse_spec(
        {
            "target": "aws",
            "environment": "dev",
            "site": "aws-dev",
            "region": "eu-west-1",
            "accountId": "123456789012",
            "app": {"image": "r.example.com/a@sha256:" + "a" * 64, "secrets": secrets},
            "domain": {"name": "aws.example.com", "zoneId": "Z0EXAMPLE"},
            "tags": {"owner": "o", "costCenter": "c"},
            "fleet": {
                "name": "pair",
                "replication": "async",
                "sites": [
                    {"name": "aws-dev", "host": "aws.example.com"},
                    {"name": "gcp-dev", "host": "gcp.example.com"},
                ],
            },
            "apiKeys": "client-keys-0123456789",
            "modelApiKey": "model-key",
            "fleetKey": "f" * 40,
        }
    )
    assert isinstance(spec, AwsStack)
    return spec


def test_every_secret_key_has_its_own_logical_secret() -> None:
    assert set(SECRET_BY_KEY) == SECRET_KEYS
    assert len(set(SECRET_BY_KEY.values())) == len(SECRET_BY_KEY)


@pytest.mark.parametrize(
    ("key", "logical"), [("apiKeys", API_KEYS), ("modelApiKey", MODEL_API_KEY), ("fleetKey", FLEET_KEY)]
)
def test_an_app_secret_gets_the_secret_it_names(key: str, logical: str) -> None:
    spec = _spec({"VENDOR_CREDENTIAL": key})
    api, worker = workloads(
        spec, redis_url="rediss://r:6379", queue_url="sqs://q/1/q", api_keys_as_file=False
    )
    for w in (api, worker):
        assert w.secret_env["VENDOR_CREDENTIAL"] == logical, (w.role, key)
    # The value the platform injects is the one of the key the entry names.
    values: dict[str, Any] = secret_values(spec)
    assert values[logical] == getattr(
        spec, {"apiKeys": "api_keys", "modelApiKey": "model_api_key"}.get(key, "fleet_key")
    )


def test_the_platform_secrets_keep_their_own_values() -> None:
    api, worker = workloads(
        _spec({}), redis_url="rediss://r:6379", queue_url="sqs://q/1/q", api_keys_as_file=False
    )
    assert api.secret_env[Env.API_KEYS.value] == API_KEYS
    for w in (api, worker):
        assert w.secret_env[Env.FLEET_KEY.value] == FLEET_KEY
        assert w.secret_env[Env.MODEL_API_KEY.value] == MODEL_API_KEY
    assert Env.API_KEYS.value not in worker.secret_env
