"""Drill-test helpers: the outputs of deployed site stacks (as a stack exports them), an ECS
service on moto, a test process stripped of cloud credentials, and a one-site agent app."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest

from skyfleet.testing.servers import API_KEY, AppProcess, RedisServer, free_port

SITES: dict[str, dict[str, Any]] = {
    "aws-dev": {
        "target": "aws",
        "environment": "dev",
        "site": "aws",
        "endpoint": "https://aws.example.test",
        "endpointHost": "aws.example.test",
        "healthCheckPath": "/readyz",
        "region": "us-east-1",
        "clusterName": "skyfleet-aws-dev",
        "apiServiceName": "skyfleet-api",
        "workerServiceName": "skyfleet-worker",
        "taskSecurityGroupId": "sg-0123456789abcdef0",
    },
    "gcp-prod": {
        "target": "gcp",
        "environment": "prod",
        "site": "gcp",
        "endpoint": "https://gcp.example.test",
        "endpointHost": "gcp.example.test",
        "healthCheckPath": "/readyz",
        "region": "europe-west1",
        "project": "skyfleet-prod",
        "apiServiceName": "skyfleet-api",
    },
    "onprem-prod": {
        "target": "onprem",
        "environment": "prod",
        "site": "onprem",
        "endpoint": "https://onprem.example.test",
        "endpointHost": "onprem.example.test",
        "healthCheckPath": "/readyz",
        "namespace": "skyfleet",
        "kubeContext": "dc1",
        "apiDeployment": "skyfleet-api",
        "workerDeployment": "skyfleet-worker",
    },
}


def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strip every cloud credential and point the SDKs at a closed port: a call would fail."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "GOOGLE_", "CLOUDSDK_", "KUBECONFIG")):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("KUBECONFIG", "/nonexistent")


def ecs_service(cluster: str, service: str, count: int) -> Callable[[], int]:
    """Create an ECS service of ``count`` tasks on moto (``aws_env``); return a reader of its
    desired count."""
    ecs = boto3.client("ecs", region_name="us-east-1")
    ecs.create_cluster(clusterName=cluster)
    ecs.register_task_definition(
        family="api", containerDefinitions=[{"name": "api", "image": "agent:1", "memory": 512}]
    )
    ecs.create_service(cluster=cluster, serviceName=service, taskDefinition="api", desiredCount=count)

    def desired() -> int:
        return ecs.describe_services(cluster=cluster, services=[service])["services"][0]["desiredCount"]

    return desired


@dataclass
class AgentSite:
    """A real agent app: api and worker processes on real Redis and NATS JetStream."""

    api: AppProcess
    worker: AppProcess
    redis: RedisServer

    @property
    def url(self) -> str:
        return self.api.url

    @property
    def api_key(self) -> str:
        return API_KEY
