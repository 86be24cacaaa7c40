"""How the rules reason: settings made by companion resources count, roles come from wiring not
names, credentials are judged by value, comparisons are normalised, and messages never list the
rejected value as allowed. Every check goes through the running pack (the gate's gRPC path)."""

from __future__ import annotations

import json

import pytest

from policies.compliance.rules._secrets import is_credential_name, secret_in_variable, secrets_in_text
from skyfleet.plan import PlannedResource
from tests.support.gate import Gate
from tests.support.policies.kit import TAGS, doc, res

PAB = {
    "blockPublicAcls": True,
    "blockPublicPolicy": True,
    "ignorePublicAcls": True,
    "restrictPublicBuckets": True,
}
TLS_ONLY = doc(
    {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": "arn:aws:s3:::b/*",
        "Condition": {"bool": {"AWS:SecureTransport": ["false"]}},
    }
)


def rules_on(gate: Gate, resources: list[PlannedResource], name: str | None = None) -> set[str]:
    result = gate.check(resources)
    return {f.rule for f in result.findings if name is None or f.resource_name == name}


def messages(gate: Gate, resources: list[PlannedResource], rule: str) -> list[str]:
    return [f.message.split("\n")[-1] for f in gate.check(resources).findings if f.rule == rule]


# -- companions count ------------------------------------------------------------------------------


def test_inline_bucket_settings_and_the_account_block_count(gate: Gate) -> None:
    inline = res(
        "aws:s3/bucket:Bucket",
        "b",
        {
            "tags": TAGS,
            "acl": "private",
            "policy": TLS_ONLY,
            "versioning": {"enabled": True},
            "serverSideEncryptionConfiguration": {
                "rule": {"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}
            },
        },
    )
    account = res("aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock", "account-pab", dict(PAB))
    s3 = {
        "aws-s3-bucket-public-access-blocked",
        "aws-s3-bucket-tls-only",
        "aws-s3-bucket-encrypted",
        "aws-s3-bucket-versioned",
    }
    assert rules_on(gate, [inline, account]) & s3 == set()
    bare = res("aws:s3/bucket:Bucket", "b", {"tags": TAGS})
    assert rules_on(gate, [bare]) & s3 == s3


def test_a_redrive_policy_resource_wires_the_dead_letter_queue(gate: Gate) -> None:
    work = res("aws:sqs/queue:Queue", "orders", {"sqsManagedSseEnabled": True, "tags": TAGS}, id_="q-orders")
    work.outputs["url"] = "https://sqs.eu-west-1.amazonaws.com/1/orders"
    parked = res("aws:sqs/queue:Queue", "parking-lot", {"sqsManagedSseEnabled": True, "tags": TAGS})
    redrive = res(
        "aws:sqs/redrivePolicy:RedrivePolicy",
        "orders-redrive",
        {
            "queueUrl": "https://sqs.eu-west-1.amazonaws.com/1/orders",
            "redrivePolicy": json.dumps(
                {"deadLetterTargetArn": "arn:fixture:parking-lot", "maxReceiveCount": 3}
            ),
        },
    )
    assert "aws-sqs-dead-letter-queue" not in rules_on(gate, [work, parked, redrive])
    assert rules_on(gate, [work, parked]) >= {"aws-sqs-dead-letter-queue"}


def test_account_defaults_cover_instances(gate: Gate) -> None:
    vm = res("aws:ec2/instance:Instance", "vm", {"ami": "ami-1", "instanceType": "t3.micro"})
    defaults = [
        res("aws:ec2/instanceMetadataDefaults:InstanceMetadataDefaults", "imds", {"httpTokens": "required"}),
        res("aws:ebs/encryptionByDefault:EncryptionByDefault", "ebs", {"enabled": True}),
    ]
    assert rules_on(gate, [vm, *defaults]) & {"aws-ec2-imdsv2", "aws-ebs-encrypted"} == set()
    assert rules_on(gate, [vm]) >= {"aws-ec2-imdsv2", "aws-ebs-encrypted"}


def test_project_os_login_covers_vms(gate: Gate) -> None:
    vm = res(
        "gcp:compute/instance:Instance",
        "vm",
        {"zone": "europe-west1-b", "serviceAccount": {"email": "vm@p.iam.gserviceaccount.com"}},
    )
    project = res(
        "gcp:compute/projectMetadataItem:ProjectMetadataItem",
        "oslogin",
        {"key": "enable-oslogin", "value": "TRUE"},
    )
    assert "gcp-compute-ssh-access-controlled" not in rules_on(gate, [vm, project])
    assert "gcp-compute-ssh-access-controlled" in rules_on(gate, [vm])


def _deployment(spec: dict[str, object]) -> PlannedResource:
    container = {"name": "app", "image": "app:1.0", "resources": {}}
    return res(
        "kubernetes:apps/v1:Deployment",
        "app",
        {
            "metadata": {"name": "app", "namespace": "shop"},
            "spec": {
                "template": {
                    "metadata": {"labels": {"app": "app"}},
                    "spec": {"containers": [container], **spec},
                }
            },
        },
    )


def test_namespace_limit_range_and_service_account_settings_count(gate: Gate) -> None:
    limits = res(
        "kubernetes:core/v1:LimitRange",
        "defaults",
        {
            "metadata": {"namespace": "shop"},
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"}}]},
        },
    )
    account = res(
        "kubernetes:core/v1:ServiceAccount",
        "app-sa",
        {"metadata": {"name": "app", "namespace": "shop"}, "automountServiceAccountToken": False},
    )
    app = _deployment({"serviceAccountName": "app"})
    found = rules_on(gate, [app, limits, account], "app")
    assert found & {"k8s-resource-limits", "k8s-no-service-account-token"} == set()
    assert rules_on(gate, [app], "app") >= {"k8s-resource-limits", "k8s-no-service-account-token"}


def test_pods_whose_account_is_bound_to_a_role_may_mount_its_token(gate: Gate) -> None:
    binding = res(
        "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding",
        "app-reads-config",
        {
            "metadata": {"namespace": "shop"},
            "roleRef": {"kind": "Role", "name": "config-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"}],
        },
    )
    app = _deployment({"serviceAccountName": "app"})
    assert "k8s-no-service-account-token" not in rules_on(gate, [app, binding], "app")


# -- roles from wiring, not names ----------------------------------------------------------------


def test_a_dead_letter_drain_is_known_by_wiring_not_by_name(gate: Gate) -> None:
    topics = [res("gcp:pubsub/topic:Topic", t, {}) for t in ("events", "parked")]
    work = res(
        "gcp:pubsub/subscription:Subscription",
        "worker",
        {
            "topic": "events-id",
            "deadLetterPolicy": {"deadLetterTopic": "parked-id", "maxDeliveryAttempts": 10},
        },
    )
    hold = res("gcp:pubsub/subscription:Subscription", "hold", {"topic": "parked-id"})
    agent = "serviceAccount:service-1@gcp-sa-pubsub.iam.gserviceaccount.com"
    grants = [  # the Pub/Sub service agent forwards dead letters: it reads the work, writes the parked
        res(
            "gcp:pubsub/topicIAMMember:TopicIAMMember",
            "parked-publisher",
            {"topic": "parked-id", "role": "roles/pubsub.publisher", "member": agent},
        ),
        res(
            "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember",
            "worker-forwarder",
            {"subscription": "worker-id", "role": "roles/pubsub.subscriber", "member": agent},
        ),
    ]
    assert "gcp-pubsub-dead-letter" not in rules_on(gate, [*topics, work, hold, *grants])
    # A subscription *named* like a dead-letter drain but draining a work topic is a work queue.
    misnamed = res("gcp:pubsub/subscription:Subscription", "tasks-dlq-sub", {"topic": "events-id"})
    assert "gcp-pubsub-dead-letter" in rules_on(gate, [*topics, misnamed])


# -- a TCP passthrough is judged by where it ends ------------------------------------------------------

PASSTHROUGH = "aws-nlb-tcp-passthrough-to-https"
FIX = "terminate TLS on a TLS listener, or forward to an ALB's HTTPS listener"


def _nlb_front(*, target_type: str = "alb", port: int = 443) -> list[PlannedResource]:
    """An NLB whose TCP listener on ``port`` forwards to a target group of ``target_type``
    (attached to the ALB on ``port`` when it is an ``alb`` group); the ALB serves HTTPS on 443
    and only redirects on 80."""
    lb, listener = "aws:lb/loadBalancer:LoadBalancer", "aws:lb/listener:Listener"
    forward = [{"type": "forward", "targetGroupArn": "arn:fixture:front"}]
    stack = [
        res(lb, "alb", {"loadBalancerType": "application", "tags": TAGS}),
        res(
            listener,
            "alb-https",
            {
                "loadBalancerArn": "arn:fixture:alb",
                "protocol": "HTTPS",
                "port": 443,
                "sslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
                "certificateArn": "arn:fixture:cert",
                "defaultActions": [{"type": "forward", "targetGroupArn": "arn:fixture:tasks"}],
            },
        ),
        res(
            listener,
            "alb-http",
            {
                "loadBalancerArn": "arn:fixture:alb",
                "protocol": "HTTP",
                "port": 80,
                "defaultActions": [{"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443"}}],
            },
        ),
        res(
            "aws:lb/targetGroup:TargetGroup", "tasks", {"targetType": "ip", "protocol": "HTTP", "port": 8080}
        ),
        res(lb, "nlb", {"loadBalancerType": "network", "internal": False}),
        res(
            "aws:lb/targetGroup:TargetGroup",
            "front",
            {"targetType": target_type, "protocol": "TCP", "port": port},
        ),
        res(
            listener,
            "nlb-tcp",
            {
                "loadBalancerArn": "arn:fixture:nlb",
                "protocol": "TCP",
                "port": port,
                "defaultActions": forward,
            },
        ),
    ]
    if target_type == "alb":
        attach = {"targetGroupArn": "arn:fixture:front", "targetId": "arn:fixture:alb", "port": port}
        stack.append(res("aws:lb/targetGroupAttachment:TargetGroupAttachment", "front-alb", attach))
    return stack


def test_tcp_passthrough_to_an_alb_https_listener_passes(gate: Gate) -> None:
    assert messages(gate, _nlb_front(), PASSTHROUGH) == []
    # The weighted form of forward names its target groups the same way.
    weighted = _nlb_front()
    nlb_tcp = next(r for r in weighted if r.name == "nlb-tcp")
    action = {"type": "forward", "forward": {"targetGroups": [{"arn": "arn:fixture:front", "weight": 1}]}}
    nlb_tcp.inputs["defaultActions"] = nlb_tcp.outputs["defaultActions"] = [action]
    assert messages(gate, weighted, PASSTHROUGH) == []


def test_tcp_passthrough_to_ip_targets_fails(gate: Gate) -> None:
    assert messages(gate, _nlb_front(target_type="ip"), PASSTHROUGH) == [
        "TCP listener 'nlb-tcp' on port 443 forwards plain TCP to target group 'front' "
        f"(target type ip): {FIX}"
    ]


def test_tcp_passthrough_to_an_alb_port_without_https_fails(gate: Gate) -> None:
    # Port 80 of the ALB only redirects, but the bytes to it are plain HTTP all the same.
    assert messages(gate, _nlb_front(port=80), PASSTHROUGH) == [
        "TCP listener 'nlb-tcp' on port 80 forwards plain TCP to target group 'front' (target type alb), "
        f"but ALB 'alb' serves HTTP on port 80, not HTTPS: {FIX}"
    ]
    assert messages(gate, _nlb_front(port=8443), PASSTHROUGH) == [
        "TCP listener 'nlb-tcp' on port 8443 forwards plain TCP to target group 'front' (target type alb), "
        f"but ALB 'alb' has no listener on port 8443: {FIX}"
    ]


# -- credentials by value ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "postgres://app:Zx81kq@db:5432/app"),
        ("NOTES", "AKIAIOSFODNN7EXAMPLE"),
        ("CONFIG", "-----BEGIN RSA PRIVATE KEY-----\nMIIE..."),
        ("STRIPE", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        ("OPAQUE", "q8Zr2LmN5vX7pT1wK9bC3dF6gH0jY4sA"),
        ("DB_PASSWORD", "hunter2"),
        ("jwtSigningKey", "dev"),
        ("SECRET_KEY_BASE", "abc"),
    ],
)
def test_credentials_are_found_by_value_or_by_a_credential_name_with_a_literal(name: str, value: str) -> None:
    assert secret_in_variable(name, value) is not None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOKEN_TTL_SECONDS", "900"),
        ("AUTH_MODE", "oidc"),
        ("PASSWORD_MIN_LENGTH", "12"),
        ("SECRETS_BACKEND", "vault"),
        ("DB_PASSWORD_FILE", "/run/secrets/db"),
        ("DB_PASSWORD", "arn:aws:secretsmanager:eu-west-1:1:secret:db"),
        ("GOOGLE_APPLICATION_CREDENTIALS", "/var/secrets/key.json"),
        ("GIT_SHA", "3f2a9c1e0b7d4f6a8e5c2b1d0f9e8a7b6c5d4e3f"),
        ("REDIS_URL", "rediss://cache.internal:6379/0"),
        ("API_TOKEN", "${API_TOKEN}"),
    ],
)
def test_harmless_names_and_references_are_not_credentials(name: str, value: str) -> None:
    assert secret_in_variable(name, value) is None


def test_credential_names_are_words_not_fragments() -> None:
    assert is_credential_name("GITHUB_TOKEN") and is_credential_name("clientSecret")
    assert not is_credential_name("TOKEN_ENDPOINT") and not is_credential_name("PASSWORDLESS_LOGIN")
    assert list(secrets_in_text("#!/bin/sh\nexport API_KEY=$(cat /run/secrets/key)\n")) == []
    assert list(secrets_in_text("#!/bin/sh\nexport API_KEY=f00dcafe42\n")) != []


# -- normalised comparisons and honest messages ------------------------------------------------------


@pytest.mark.parametrize("location", ["EUROPE-WEST1", "europe-west1-b", "EU", "eur4"])
def test_regions_accept_case_zones_and_multi_regions(gate: Gate, location: str) -> None:
    bucket = res("gcp:storage/bucket:Bucket", "b", {"location": location})
    assert "allowed-regions" not in rules_on(gate, [bucket])


def test_a_rejected_value_is_never_listed_as_allowed(gate: Gate) -> None:
    for resource, rule, found in [
        (res("gcp:storage/bucket:Bucket", "b", {"location": "ASIA-EAST1"}), "allowed-regions", "asia-east1"),
        (
            res("gcp:compute/sSLPolicy:SSLPolicy", "p", {"minTlsVersion": "tls_1_1", "profile": "modern"}),
            "gcp-ssl-policy-min-tls12",
            "TLS_1_1",
        ),
        (
            res(
                "gcp:redis/instance:Instance", "r", {"transitEncryptionMode": "disabled", "authEnabled": True}
            ),
            "gcp-redis-tls",
            "DISABLED",
        ),
    ]:
        (message,) = messages(gate, [resource], rule)
        allowed = message.split("allowed:", 1)[1].lower()
        assert found.lower() in message.lower() and found.lower() not in allowed, message


def test_enum_case_does_not_decide(gate: Gate) -> None:
    listener = res(
        "aws:lb/listener:Listener",
        "l",
        {
            "protocol": "https",
            "port": 443,
            "sslPolicy": "elbsecuritypolicy-tls13-1-2-2021-06",
            "defaultActions": [{"type": "forward"}],
        },
    )
    ssl = res("gcp:compute/sSLPolicy:SSLPolicy", "p", {"minTlsVersion": "tls_1_2", "profile": "restricted"})
    found = rules_on(gate, [listener, ssl])
    assert (
        found & {"aws-alb-tls12-policy", "gcp-ssl-policy-min-tls12", "gcp-ssl-policy-no-weak-profile"}
        == set()
    )


def test_iam_actions_match_as_iam_evaluates_them(gate: Gate) -> None:
    def policy(action: str, resource: str = "*") -> PlannedResource:
        return res(
            "aws:iam/policy:Policy",
            "p",
            {"policy": doc({"Effect": "allow", "Action": action, "Resource": resource}), "tags": TAGS},
        )

    assert "aws-iam-no-wildcard-actions" in rules_on(gate, [policy("S3:*")])
    assert "aws-iam-no-unscoped-data-access" in rules_on(gate, [policy("SecretsManager:Get*")])
    assert "aws-iam-no-unscoped-data-access" not in rules_on(
        gate, [policy("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:eu-west-1:1:secret:x")]
    )


# -- Skyfleet's design choices apply to Skyfleet programs only ---------------------------------------


def _web_and_cache(web_port: int, cache_cidr: str) -> list[PlannedResource]:
    return [
        res(
            "aws:ec2/securityGroup:SecurityGroup",
            "web",
            {
                "tags": TAGS,
                "ingress": [
                    {"protocol": "tcp", "fromPort": web_port, "toPort": web_port, "cidrBlocks": ["0.0.0.0/0"]}
                ],
            },
        ),
        res(
            "aws:ec2/securityGroup:SecurityGroup",
            "cache-sg",
            {
                "tags": TAGS,
                "ingress": [
                    {"protocol": "tcp", "fromPort": 6379, "toPort": 6379, "cidrBlocks": [cache_cidr]}
                ],
            },
            id_="sg-cache",
        ),
        res(
            "aws:elasticache/replicationGroup:ReplicationGroup",
            "cache",
            {"securityGroupIds": ["sg-cache"], "port": 6379, "tags": TAGS},
        ),
    ]


def test_outside_skyfleet_a_web_server_may_serve_https_and_a_cache_its_vpc(gate: Gate) -> None:
    from tests.support.policies.fixtures import skyfleet_program

    design = {"aws-network-alb-only-public-ingress", "aws-network-cache-ingress-from-service"}
    assert rules_on(gate, _web_and_cache(443, "10.0.0.0/16")) & design == set()
    assert rules_on(gate, skyfleet_program(lambda: _web_and_cache(443, "10.0.0.0/16"), "aws")()) >= design
    # Beyond the web ports and private ranges, the rules hold for every program.
    assert rules_on(gate, _web_and_cache(8080, "198.51.100.0/24")) >= design


def test_a_cache_is_what_serves_redis_not_what_mentions_it(gate: Gate) -> None:
    def pod(name: str, image: str, port: int) -> PlannedResource:
        container = {"name": name, "image": image, "ports": [{"containerPort": port}]}
        return res(
            "kubernetes:core/v1:Pod",
            name,
            {"metadata": {"name": name, "namespace": "shop"}, "spec": {"containers": [container]}},
        )

    found = {
        f.resource_name
        for f in gate.check(
            [
                pod("php-redis", "pulumi/guestbook-php-redis:1.0", 80),
                pod("replica", "pulumi/guestbook-redis-replica:1.0", 6379),
                pod("cache", "docker.io/library/redis:7.2", 6380),
            ]
        ).findings
        if f.rule == "k8s-cache-ingress-from-service"
    }
    assert found == {"replica", "cache"}
