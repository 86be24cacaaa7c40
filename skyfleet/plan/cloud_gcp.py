"""Mock outputs for Google Cloud resources: what the provider returns after an apply. Ids and
selfLinks in the APIs' own formats (``https://www.googleapis.com/compute/v1/projects/<p>/...``,
``projects/<p>/topics/<t>``), server-assigned names for auto-named resources, and the values
apply-chains read: Memorystore's host, TLS port, AUTH string and server CA, a service
account's e-mail, a Cloud Run service's URI, a global address's IP, a secret version's number.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable
from typing import Any

from skyfleet.plan.mocks import MockContext

_COMPUTE = "https://www.googleapis.com/compute/v1"
_CREATED = "2026-01-01T00:00:00.000000Z"

Outputs = dict[str, Any]


def _project(inputs: dict[str, Any], ctx: MockContext) -> str:
    return str(inputs.get("project") or ctx.gcp_project)


def _region(inputs: dict[str, Any], ctx: MockContext) -> str:
    return str(inputs.get("region") or inputs.get("location") or ctx.region)


def _name(name: str, inputs: dict[str, Any], ctx: MockContext) -> str:
    """The input name, or the name Pulumi's auto-naming would give (logical name + suffix)."""
    return str(inputs.get("name") or f"{name}-{ctx.uid(name, 7)}")


def _digits(ctx: MockContext, name: str, n: int = 19) -> str:
    return str(int(ctx.uid(name, 16), 16))[:n]


def _last(ref: object) -> str:
    """``projects/p/topics/t`` or a selfLink -> ``t``."""
    return str(ref).rstrip("/").rsplit("/", 1)[-1]


def _agent(ctx: MockContext, domain: str) -> str:
    """A Google service agent of the project (named after the project number)."""
    return f"serviceAccount:service-{ctx.gcp_project_number}@{domain}.iam.gserviceaccount.com"


def _compute(kind: str, scope: str | None) -> Callable[[str, dict[str, Any], MockContext], Outputs]:
    """A compute resource: id and selfLink under projects/<p>/(global|regions/<r>)/<kind>/<name>."""

    def make(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
        n = _name(name, inputs, ctx)
        where = "global" if scope is None else f"regions/{_region(inputs, ctx)}"
        path = f"projects/{_project(inputs, ctx)}/{where}/{kind}/{n}"
        return {
            "id": path,
            "name": n,
            "selfLink": f"{_COMPUTE}/{path}",
            "creationTimestamp": "2026-01-01T00:00:00.000-08:00",
        }

    return make


def _global_address(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
    out = _compute("addresses", None)(name, inputs, ctx)
    if inputs.get("addressType", "EXTERNAL") == "EXTERNAL" and not inputs.get("address"):
        # A documentation address (TEST-NET-2) standing in for Google's anycast VIP.
        out["address"] = f"198.51.100.{int(ctx.uid(f'ip/{name}', 4), 16) % 254 + 1}"
    out["labelFingerprint"] = ctx.uid(f"lf/{name}", 12)
    return out


def _forwarding_rule(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
    out = _compute("forwardingRules", None)(name, inputs, ctx)
    out["labelFingerprint"] = ctx.uid(f"lf/{name}", 12)
    out["forwardingRuleId"] = int(_digits(ctx, name, 18))
    return out


def _managed_certificate(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
    out = _compute("sslCertificates", None)(name, inputs, ctx)
    domains = list((inputs.get("managed") or {}).get("domains") or [])
    out.update(
        certificateId=int(_digits(ctx, name, 18)),
        subjectAlternativeNames=domains,
        expireTime="2027-01-01T00:00:00.000-08:00",
        type="MANAGED",
    )
    return out


def _redis(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
    project, region = _project(inputs, ctx), _region(inputs, ctx)
    n = _name(name, inputs, ctx)
    tls = inputs.get("transitEncryptionMode") == "SERVER_AUTHENTICATION"
    # Memorystore allocates from the reserved peering range; a stable host inside 10.41.0.0/20.
    host = str(ipaddress.ip_address("10.41.0.0") + 3 + int(ctx.uid(f"redis/{name}", 4), 16) % 200)
    pem = base64.encodebytes(bytes.fromhex(ctx.uid(f"ca/{name}", 64)) * 8).decode()
    out: Outputs = {
        "id": f"projects/{project}/locations/{region}/instances/{n}",
        "name": n,
        "host": host,
        "port": 6378 if tls else 6379,
        "currentLocationId": f"{region}-b",
        "locationId": f"{region}-b",
        "createTime": _CREATED,
        "persistenceIamIdentity": _agent(ctx, "cloud-redis"),
        "serverCaCerts": [
            {
                "serialNumber": "0",
                "cert": f"-----BEGIN CERTIFICATE-----\n{pem}-----END CERTIFICATE-----\n",
                "createTime": _CREATED,
                "expireTime": "2036-01-01T00:00:00Z",
                "sha1Fingerprint": ctx.uid(f"sha1/{name}", 40),
            }
        ]
        if tls
        else [],
    }
    if inputs.get("authEnabled"):
        out["authString"] = f"{ctx.uid(f'auth/{name}', 8)}-{ctx.uid(f'auth2/{name}', 4)}-mock-auth"
    if inputs.get("tier") == "STANDARD_HA":
        out["alternativeLocationId"] = f"{region}-c"
        if inputs.get("readReplicasMode") == "READ_REPLICAS_ENABLED":
            out["readEndpoint"] = str(ipaddress.ip_address(host) + 1)
            out["readEndpointPort"] = out["port"]
    return out


def _pubsub(kind: str) -> Callable[[str, dict[str, Any], MockContext], Outputs]:
    def make(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
        n = _name(name, inputs, ctx)
        return {"id": f"projects/{_project(inputs, ctx)}/{kind}/{n}", "name": n}

    return make


def _secret(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
    secret_id = str(inputs.get("secretId") or name)
    return {
        "id": f"projects/{_project(inputs, ctx)}/secrets/{secret_id}",
        "name": f"projects/{ctx.gcp_project_number}/secrets/{secret_id}",
        "createTime": _CREATED,
    }


def _secret_version(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
    secret_id = _last(inputs.get("secret") or name)
    path = f"projects/{ctx.gcp_project_number}/secrets/{secret_id}/versions/1"
    return {"id": path, "name": path, "version": "1", "createTime": _CREATED}


def _service_account(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
    project = _project(inputs, ctx)
    email = f"{inputs.get('accountId') or name}@{project}.iam.gserviceaccount.com"
    return {
        "id": f"projects/{project}/serviceAccounts/{email}",
        "name": f"projects/{project}/serviceAccounts/{email}",
        "email": email,
        "member": f"serviceAccount:{email}",
        "uniqueId": _digits(ctx, f"sa/{name}", 21),
    }


def _cloud_run(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
    project, region = _project(inputs, ctx), _region(inputs, ctx)
    n = _name(name, inputs, ctx)
    uri = f"https://{n}-{ctx.uid(f'run/{name}', 10)}-ew.a.run.app"
    revision = f"projects/{project}/locations/{region}/services/{n}/revisions/{n}-00001-abc"
    return {
        "id": f"projects/{project}/locations/{region}/services/{n}",
        "name": n,
        "uri": uri,
        "urls": [uri],
        "uid": ctx.uid(f"uid/{name}", 32),
        "generation": "1",
        "latestReadyRevision": revision,
        "latestCreatedRevision": revision,
        "terminalConditions": [{"type": "Ready", "state": "CONDITION_SUCCEEDED"}],
        "createTime": _CREATED,
    }


def _iam_member(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
    return {"etag": f"BwY{ctx.uid(f'etag/{name}', 9)}"}


def _log_bucket(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
    location, bucket = inputs.get("location", "global"), inputs.get("bucketId", name)
    path = f"projects/{_project(inputs, ctx)}/locations/{location}/buckets/{bucket}"
    return {"id": path, "name": path, "lifecycleState": "ACTIVE"}


def _log_sink(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
    n = _name(name, inputs, ctx)
    return {
        "id": f"projects/{_project(inputs, ctx)}/sinks/{n}",
        "name": n,
        "writerIdentity": _agent(ctx, "gcp-sa-logging"),
    }


def _monitoring(kind: str) -> Callable[[str, dict[str, Any], MockContext], Outputs]:
    def make(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
        path = f"projects/{_project(inputs, ctx)}/{kind}/{_digits(ctx, f'{kind}/{name}')}"
        out: Outputs = {"id": path, "name": path}
        if kind == "notificationChannels":
            out["verificationStatus"] = "VERIFIED"
        return out

    return make


def _service_networking(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
    return {
        "id": f"{inputs.get('network', name)}:{inputs.get('service', 'servicenetworking.googleapis.com')}",
        "peering": "servicenetworking-googleapis-com",
    }


def _service_identity(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
    service = str(inputs.get("service") or "pubsub.googleapis.com").split(".", 1)[0]
    email = f"service-{ctx.gcp_project_number}@gcp-sa-{service}.iam.gserviceaccount.com"
    return {"id": f"projects/{_project(inputs, ctx)}/services/{service}.googleapis.com", "email": email}


def _certificate_manager(kind: str) -> Callable[[str, dict[str, Any], MockContext], Outputs]:
    """Certificate Manager: projects/<p>/locations/<l>/<kind>/<name>."""

    def make(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
        n = _name(name, inputs, ctx)
        path = f"projects/{_project(inputs, ctx)}/locations/{inputs.get('location') or 'global'}/{kind}/{n}"
        out: Outputs = {"id": path, "name": n}
        if kind == "dnsAuthorizations":
            domain = str(inputs.get("domain") or "example.com")
            # FIXED_RECORD: _acme-challenge.<domain>; PER_PROJECT_RECORD: a label of the project's.
            label, data_of = "_acme-challenge", path
            if inputs.get("type") == "PER_PROJECT_RECORD":
                label += f"_{ctx.uid(f'{_project(inputs, ctx)}/acme-label', 16)}"
                data_of = f"{_project(inputs, ctx)}/{domain}"  # one record per project and name
            out["dnsResourceRecords"] = [
                {
                    "name": f"{label}.{domain}.",
                    "type": "CNAME",
                    "data": f"{ctx.uid(data_of, 12)}.{ctx.uid(f'{data_of}/n', 1)}"
                    ".authorize.certificatemanager.goog.",
                }
            ]
        return out

    return make


def _project_service(name: str, inputs: dict[str, Any], ctx: MockContext) -> Outputs:
    return {"id": f"{_project(inputs, ctx)}/{inputs.get('service', name)}"}


_TYPES: dict[str, Callable[[str, dict[str, Any], MockContext], Outputs]] = {
    "gcp:projects/service:Service": _project_service,
    "gcp:projects/serviceIdentity:ServiceIdentity": _service_identity,
    "gcp:certificatemanager/dnsAuthorization:DnsAuthorization": _certificate_manager("dnsAuthorizations"),
    "gcp:certificatemanager/certificate:Certificate": _certificate_manager("certificates"),
    "gcp:certificatemanager/certificateMap:CertificateMap": _certificate_manager("certificateMaps"),
    "gcp:certificatemanager/certificateMapEntry:CertificateMapEntry": _certificate_manager(
        "certificateMapEntries"
    ),
    "gcp:compute/network:Network": _compute("networks", None),
    "gcp:compute/subnetwork:Subnetwork": _compute("subnetworks", "region"),
    "gcp:compute/firewall:Firewall": _compute("firewalls", None),
    "gcp:compute/globalAddress:GlobalAddress": _global_address,
    "gcp:servicenetworking/connection:Connection": _service_networking,
    "gcp:redis/instance:Instance": _redis,
    "gcp:pubsub/topic:Topic": _pubsub("topics"),
    "gcp:pubsub/subscription:Subscription": _pubsub("subscriptions"),
    "gcp:pubsub/topicIAMMember:TopicIAMMember": _iam_member,
    "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember": _iam_member,
    "gcp:secretmanager/secret:Secret": _secret,
    "gcp:secretmanager/secretVersion:SecretVersion": _secret_version,
    "gcp:secretmanager/secretIamMember:SecretIamMember": _iam_member,
    "gcp:serviceaccount/account:Account": _service_account,
    "gcp:cloudrunv2/service:Service": _cloud_run,
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember": _iam_member,
    "gcp:compute/regionNetworkEndpointGroup:RegionNetworkEndpointGroup": _compute(
        "networkEndpointGroups", "region"
    ),
    "gcp:compute/backendService:BackendService": _compute("backendServices", None),
    "gcp:compute/securityPolicy:SecurityPolicy": _compute("securityPolicies", None),
    "gcp:compute/uRLMap:URLMap": _compute("urlMaps", None),
    "gcp:compute/managedSslCertificate:ManagedSslCertificate": _managed_certificate,
    "gcp:compute/sSLPolicy:SSLPolicy": _compute("sslPolicies", None),
    "gcp:compute/targetHttpsProxy:TargetHttpsProxy": _compute("targetHttpsProxies", None),
    "gcp:compute/targetHttpProxy:TargetHttpProxy": _compute("targetHttpProxies", None),
    "gcp:compute/globalForwardingRule:GlobalForwardingRule": _forwarding_rule,
    "gcp:logging/projectBucketConfig:ProjectBucketConfig": _log_bucket,
    "gcp:logging/projectSink:ProjectSink": _log_sink,
    "gcp:monitoring/notificationChannel:NotificationChannel": _monitoring("notificationChannels"),
    "gcp:monitoring/alertPolicy:AlertPolicy": _monitoring("alertPolicies"),
}


def outputs(typ: str, name: str, inputs: dict[str, Any], ctx: MockContext) -> dict[str, Any] | None:
    make = _TYPES.get(typ)
    if make is None:
        return None
    out = make(name, inputs, ctx)
    labels = inputs.get("labels")
    if isinstance(labels, dict) and typ != "gcp:monitoring/notificationChannel:NotificationChannel":
        # What the provider reports: the resource's labels plus its own attribution label.
        out.setdefault("effectiveLabels", {**labels, "goog-pulumi-provisioned": "true"})
        out.setdefault("pulumiLabels", {**labels, "goog-pulumi-provisioned": "true"})
    return out


def call(token: str, args: dict[str, Any], ctx: MockContext) -> dict[str, Any] | None:
    """Invokes the gcp target makes beyond the common ones in mocks.py (none today)."""
    return None
