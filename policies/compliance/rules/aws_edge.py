"""Internet-facing front doors other than the ALB: CloudFront distributions and API Gateway
(REST and HTTP APIs)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from pulumi_policy import EnforcementLevel, Severity

from ._rule import Controls, Rule, StackView, Subject, as_list, get_path, norm, truthy

DISTRIBUTION = ("aws:cloudfront/distribution:Distribution",)
METHOD = ("aws:apigateway/method:Method",)
ROUTE = ("aws:apigatewayv2/route:Route",)
ZONE = ("aws:route53/zone:Zone",)
DNSSEC = ("aws:route53/hostedZoneDnsSec:HostedZoneDnsSec",)
STAGES = ("aws:apigateway/stage:Stage", "aws:apigatewayv2/stage:Stage")
# CloudFront security policies older than TLS 1.2.
OLD_VIEWER_PROTOCOLS = ("sslv3", "tlsv1", "tlsv1_2016", "tlsv1.1_2016")


def _behaviors(s: Subject) -> list[object]:
    return [s.props.get("defaultCacheBehavior"), *as_list(s.props.get("orderedCacheBehaviors"))]


def _viewer_https(s: Subject) -> Iterator[str]:
    for behavior in _behaviors(s):
        policy = norm(get_path(behavior, "viewerProtocolPolicy"))
        if policy == "allow-all":
            where = get_path(behavior, "pathPattern") or "default"
            yield f"cache behavior {where!r} serves plain HTTP (viewerProtocolPolicy allow-all)"
    cert = s.props.get("viewerCertificate") or {}
    minimum = norm(get_path(cert, "minimumProtocolVersion"))
    if minimum in OLD_VIEWER_PROTOCOLS:
        yield f"viewerCertificate.minimumProtocolVersion is {minimum}; use TLSv1.2_2021"
    elif not minimum and not truthy(get_path(cert, "cloudfrontDefaultCertificate")):
        yield "viewerCertificate.minimumProtocolVersion is unset (TLSv1): set TLSv1.2_2021"


def _origins(s: Subject) -> Iterator[str]:
    for origin in as_list(s.props.get("origins")):
        oid = get_path(origin, "originId")
        custom = get_path(origin, "customOriginConfig")
        if custom is not None and norm(get_path(custom, "originProtocolPolicy")) == "http-only":
            yield f"origin {oid!r} is fetched over plain HTTP (originProtocolPolicy http-only)"
        domain = str(get_path(origin, "domainName") or "")
        is_s3 = bool(re.search(r"\.s3[.-]([a-z0-9-]+\.)?amazonaws\.com$", domain)) and custom is None
        if (
            is_s3
            and not get_path(origin, "originAccessControlId")
            and not get_path(origin, "s3OriginConfig", "originAccessIdentity")
        ):
            yield f"S3 origin {oid!r} has no origin access control: the bucket must be public for it to work"


def _waf(s: Subject) -> Iterator[str]:
    if not s.props.get("webAclId"):
        yield "no AWS WAF web ACL (webAclId) protects the distribution"


def _cf_logging(s: Subject) -> Iterator[str]:
    if not get_path(s.props, "loggingConfig", "bucket"):
        yield "no access logging (loggingConfig.bucket)"


def _api_auth(s: Subject) -> Iterator[str]:
    if s.type in METHOD:
        if norm(s.props.get("httpMethod")) == "options":
            return  # CORS preflight carries no credentials by design
        if norm(s.props.get("authorization")) == "none" and not truthy(s.props.get("apiKeyRequired")):
            yield f"{s.props.get('httpMethod')} method has authorization NONE and no API key"
    else:
        if str(s.props.get("routeKey") or "").upper().startswith("OPTIONS "):
            return
        if norm(s.props.get("authorizationType") or "NONE") == "none" and not truthy(
            s.props.get("apiKeyRequired")
        ):
            yield f"route {s.props.get('routeKey')!r} has authorizationType NONE"


def _access_logs(s: Subject) -> Iterator[str]:
    if not get_path(s.props, "accessLogSettings", "destinationArn"):
        yield "accessLogSettings.destinationArn is not set: requests are not logged"


def _dnssec(view: StackView) -> Iterator[tuple[str, str | None]]:
    signing = view.of_type(*DNSSEC)
    for zone in view.of_type(*ZONE):
        if as_list(zone.props.get("vpcs")):
            continue  # private zones are not resolvable from the internet
        if not any(zone in view.refers(d, "hostedZoneId", ZONE) for d in signing):
            yield (
                f"public hosted zone {zone.name!r} is not DNSSEC-signed (aws.route53.HostedZoneDnsSec)",
                zone.urn,
            )


RULES = [
    Rule(
        "aws-cloudfront-viewer-https",
        "CloudFront serves viewers over HTTPS with TLS 1.2 or newer.",
        Severity.HIGH,
        Controls(nist=("SC-8", "SC-8(1)", "SC-13"), soc2=("CC6.7",), pci=("4.2.1",)),
        "Set viewer_protocol_policy='redirect-to-https' on every behavior and "
        "viewer_certificate.minimum_protocol_version='TLSv1.2_2021' with an ACM certificate.",
        DISTRIBUTION,
        _viewer_https,
        checkov=("CKV_AWS_34", "CKV_AWS_174", "CKV2_AWS_54"),
    ),
    Rule(
        "aws-cloudfront-origin-protected",
        "CloudFront reaches origins over HTTPS, and S3 origins through origin access control.",
        Severity.MEDIUM,
        Controls(nist=("SC-8", "AC-3"), soc2=("CC6.6", "CC6.7"), pci=("4.2.1",)),
        "Set origin_protocol_policy='https-only' on custom origins; give S3 origins an origin access control "
        "and keep the bucket private.",
        DISTRIBUTION,
        _origins,
        checkov=("CKV2_AWS_72", "CKV2_AWS_46"),
    ),
    Rule(
        "aws-cloudfront-waf",
        "CloudFront distributions are protected by AWS WAF.",
        Severity.LOW,
        Controls(nist=("SC-7", "SI-4"), soc2=("CC6.6",), pci=("6.4.2",)),
        "Attach a WAFv2 web ACL (scope CLOUDFRONT) with the AWS managed rule groups.",
        DISTRIBUTION,
        _waf,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_68",),
    ),
    Rule(
        "aws-cloudfront-logging",
        "CloudFront distributions log requests.",
        Severity.LOW,
        Controls(nist=("AU-2", "AU-12"), soc2=("CC7.2",), pci=("10.2.1",)),
        "Set logging_config={bucket: '<log bucket>.s3.amazonaws.com'}.",
        DISTRIBUTION,
        _cf_logging,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_86",),
    ),
    Rule(
        "aws-apigw-auth",
        "API Gateway methods and routes require authorization (IAM, a Cognito/JWT/Lambda authorizer) or "
        "an API key.",
        Severity.HIGH,
        Controls(nist=("AC-3", "IA-2"), soc2=("CC6.1",), pci=("8.3.1",)),
        "Set authorization (REST) or authorization_type (HTTP API) to AWS_IAM, COGNITO_USER_POOLS, JWT or "
        "CUSTOM with an authorizer.",
        METHOD + ROUTE,
        _api_auth,
        checkov=("CKV_AWS_59", "CKV2_AWS_70", "CKV_AWS_309"),
    ),
    Rule(
        "aws-apigw-access-logging",
        "API Gateway stages write access logs.",
        Severity.LOW,
        Controls(nist=("AU-2", "AU-12"), soc2=("CC7.2",), pci=("10.2.1",)),
        "Set access_log_settings={destination_arn: <log group ARN>, format: ...}.",
        STAGES,
        _access_logs,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_76",),
    ),
    Rule(
        "aws-route53-dnssec",
        "Public Route 53 hosted zones are signed with DNSSEC.",
        Severity.LOW,
        Controls(nist=("SC-20",), soc2=("CC6.6",)),
        "Add an aws.route53.KeySigningKey (KMS key in us-east-1) and aws.route53.HostedZoneDnsSec for the "
        "zone.",
        stack_check=_dnssec,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV2_AWS_38",),
    ),
]
