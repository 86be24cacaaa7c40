"""S3 buckets: public access block, no public ACL or policy, TLS-only policy, encryption,
versioning, access logging and CORS.

Each setting can be made inline on the bucket (pulumi-aws 6 and earlier: `acl`, `policy`,
`versioning`, `serverSideEncryptionConfiguration`, `loggings`, `corsRules`) or by a companion
resource that names the bucket (BucketPolicy, BucketVersioning, ...), and for the public access
block also account-wide (AccountPublicAccessBlock): every form counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from pulumi_policy import EnforcementLevel, PolicyResource, Severity

from ._docs import DocumentError, public_grants, statements
from ._rule import Controls, Rule, StackView, Subject, as_list, get_path, norm, truthy

BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
PAB = ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",)
ACCOUNT_PAB = ("aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock",)
BUCKET_POLICY = ("aws:s3/bucketPolicy:BucketPolicy",)
SSE = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
VERSIONING = ("aws:s3/bucketVersioning:BucketVersioning", "aws:s3/bucketVersioningV2:BucketVersioningV2")
ACL = ("aws:s3/bucketAcl:BucketAcl", "aws:s3/bucketAclV2:BucketAclV2")
OBJECTS = ("aws:s3/bucketObject:BucketObject", "aws:s3/bucketObjectv2:BucketObjectv2")
CORS = (
    "aws:s3/bucketCorsConfiguration:BucketCorsConfiguration",
    "aws:s3/bucketCorsConfigurationV2:BucketCorsConfigurationV2",
)
LOGGING = ("aws:s3/bucketLogging:BucketLogging", "aws:s3/bucketLoggingV2:BucketLoggingV2")
OWNERSHIP = ("aws:s3/bucketOwnershipControls:BucketOwnershipControls",)
PAB_FIELDS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
PUBLIC_CANNED_ACLS = ("public-read", "public-read-write", "authenticated-read")
PUBLIC_GRANTEES = (
    "acs.amazonaws.com/groups/global/allusers",
    "acs.amazonaws.com/groups/global/authenticatedusers",
)
SSE_ALGORITHMS = ("aws:kms", "aws:kms:dsse", "aes256")
WRITE_METHODS = ("PUT", "POST", "DELETE")


def _pab_settings(s: Subject) -> Iterator[str]:
    off = [f for f in PAB_FIELDS if not truthy(s.props.get(f))]
    if off:
        yield f"{', '.join(off)} must be true"


def _pab_complete(r: PolicyResource) -> bool:
    return all(truthy(r.props.get(f)) for f in PAB_FIELDS)


def denies_plain_http(document: object) -> bool:
    for stmt in statements(document, "bucket policy"):
        if stmt.effect == "Deny" and "false" in stmt.condition_value("Bool", "aws:SecureTransport"):
            return True
    return False


def _tls_policy(s: Subject) -> Iterator[str]:
    try:
        if not denies_plain_http(s.props.get("policy")):
            yield "bucket policy has no Deny statement with Condition Bool aws:SecureTransport=false"
    except DocumentError as exc:
        yield str(exc)


def _public_policy(s: Subject) -> Iterator[str]:
    yield from public_grants(s.props.get("policy"), "bucket policy")


def _sse_algorithms(rules: Any) -> list[str]:
    return [norm(get_path(r, "applyServerSideEncryptionByDefault", "sseAlgorithm")) for r in as_list(rules)]


def _inline_sse(props: Any) -> list[str]:
    return _sse_algorithms(get_path(props, "serverSideEncryptionConfiguration", "rule")) or _sse_algorithms(
        get_path(props, "serverSideEncryptionConfiguration", "rules")
    )


def _sse(s: Subject) -> Iterator[str]:
    if s.type in BUCKETS:
        if s.props.get("serverSideEncryptionConfiguration") is None:
            return  # the stack rule aws-s3-bucket-encrypted looks for a companion
        algorithms = _inline_sse(s.props)
    else:
        algorithms = _sse_algorithms(s.props.get("rules"))
    bad = [a or "none" for a in algorithms if a not in SSE_ALGORITHMS]
    if not algorithms or bad:
        found = ", ".join(bad) if bad else "no rule"
        yield f"sseAlgorithm is {found}; every rule needs aws:kms, aws:kms:dsse or AES256"


def _versioning(s: Subject) -> Iterator[str]:
    if s.type in BUCKETS:
        inline = s.props.get("versioning")
        if inline is not None and not truthy(get_path(inline, "enabled")):
            yield "versioning.enabled is false"
        return
    status = get_path(s.props, "versioningConfiguration", "status")
    if norm(status) != "enabled":
        yield f"versioningConfiguration.status is {status!r}; it must be 'Enabled'"


def _public_acl(s: Subject) -> Iterator[str]:
    acl = s.props.get("acl")
    if norm(acl) in PUBLIC_CANNED_ACLS:
        yield f"canned ACL {acl!r} opens the {'object' if s.type in OBJECTS else 'bucket'} to everyone"
    for grant in as_list(get_path(s.props, "accessControlPolicy", "grants")) + as_list(s.props.get("grants")):
        uri = norm(get_path(grant, "grantee", "uri") or get_path(grant, "uri"))
        if any(uri.endswith(g) for g in PUBLIC_GRANTEES):
            perm = get_path(grant, "permission") or ", ".join(
                str(p) for p in as_list(get_path(grant, "permissions"))
            )
            yield f"ACL grants {perm} to {uri.rsplit('/', 1)[-1]}"


def _cors(s: Subject) -> Iterator[str]:
    for rule in as_list(s.props.get("corsRules")):
        origins = [str(o) for o in as_list(get_path(rule, "allowedOrigins"))]
        methods = [str(m).upper() for m in as_list(get_path(rule, "allowedMethods"))]
        writes = [m for m in methods if m in WRITE_METHODS]
        if "*" in origins and writes:
            yield f"CORS lets any origin ('*') send {', '.join(writes)} requests"


def _ownership(s: Subject) -> Iterator[str]:
    owner = get_path(s.props, "rule", "objectOwnership")
    if norm(owner) != "bucketownerenforced":
        yield f"objectOwnership is {owner!r}; BucketOwnerEnforced disables ACLs"


# -- stack rules: every bucket, through whichever resource sets it ------------------------------


def _companions(view: StackView, bucket: PolicyResource, types: tuple[str, ...]) -> list[PolicyResource]:
    return view.referrers(bucket, types, "bucket")


def _bucket_check(
    what: str, inline: Callable[[PolicyResource], bool], companion: Callable[[PolicyResource], bool]
) -> Callable[[StackView], Iterator[tuple[str, str | None]]]:
    def check(view: StackView) -> Iterator[tuple[str, str | None]]:
        for bucket in view.of_type(*BUCKETS):
            if not inline(bucket) and not companion(bucket):
                yield f"bucket {bucket.name!r} has no {what}", bucket.urn

    return check


def _has_pab(view: StackView) -> Callable[[PolicyResource], bool]:
    account_wide = any(_pab_complete(r) for r in view.of_type(*ACCOUNT_PAB))
    return lambda b: account_wide or any(_companions(view, b, PAB))


def _public_access_blocked(view: StackView) -> Iterator[tuple[str, str | None]]:
    yield from _bucket_check(
        "public access block (bucket or account level)", lambda b: False, _has_pab(view)
    )(view)


def _policy_ok(policy: Any) -> bool:
    try:
        return bool(policy) and denies_plain_http(policy)
    except DocumentError:
        return False


def _tls_only(view: StackView) -> Iterator[tuple[str, str | None]]:
    yield from _bucket_check(
        "policy denying plain-HTTP requests",
        lambda b: _policy_ok(b.props.get("policy")),
        lambda b: any(_policy_ok(p.props.get("policy")) for p in _companions(view, b, BUCKET_POLICY)),
    )(view)


def _encrypted(view: StackView) -> Iterator[tuple[str, str | None]]:
    yield from _bucket_check(
        "server-side encryption configuration",
        lambda b: bool(_inline_sse(b.props)),
        lambda b: bool(_companions(view, b, SSE)),
    )(view)


def _versioned(view: StackView) -> Iterator[tuple[str, str | None]]:
    yield from _bucket_check(
        "versioning enabled",
        lambda b: truthy(get_path(b.props, "versioning", "enabled")),
        lambda b: any(
            norm(get_path(v.props, "versioningConfiguration", "status")) == "enabled"
            for v in _companions(view, b, VERSIONING)
        ),
    )(view)


def _log_targets(view: StackView) -> set[str]:
    """Buckets that receive logs (access logs of buckets, ALBs, CloudFront, CloudTrail)."""
    names: set[str] = set()
    for r in view.of_type(*LOGGING):
        names.add(str(r.props.get("targetBucket")))
    for b in view.of_type(*BUCKETS):
        for entry in as_list(b.props.get("loggings")) + as_list(b.props.get("logging")):
            names.add(str(get_path(entry, "targetBucket")))
    for r in view.of_type("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer"):
        names.add(str(get_path(r.props, "accessLogs", "bucket")))
    for r in view.of_type("aws:cloudtrail/trail:Trail"):
        names.add(str(r.props.get("s3BucketName")))
    for r in view.of_type("aws:cloudfront/distribution:Distribution"):
        names.add(str(get_path(r.props, "loggingConfig", "bucket")).split(".s3", 1)[0])
    return names


def _access_logging(view: StackView) -> Iterator[tuple[str, str | None]]:
    targets = _log_targets(view)
    for bucket in view.of_type(*BUCKETS):
        if view.ids_of(bucket) & targets:
            continue  # a log bucket does not log into itself
        inline = as_list(bucket.props.get("loggings")) + as_list(bucket.props.get("logging"))
        if not inline and not _companions(view, bucket, LOGGING):
            yield f"bucket {bucket.name!r} has no server access logging (BucketLogging)", bucket.urn


_PUBLIC = Controls(cis=("AWS-2.1.4",), nist=("AC-3", "SC-7"), soc2=("CC6.1",), pci=("1.4.4",))
_TLS = Controls(cis=("AWS-2.1.1",), nist=("SC-8",), soc2=("CC6.7",), pci=("4.2.1",))
_ENC = Controls(nist=("SC-28",), soc2=("CC6.1",), pci=("3.5.1",))
_VER = Controls(nist=("CP-9", "SI-12"), soc2=("A1.2",))

RULES = [
    Rule(
        "aws-s3-public-access-block",
        "S3 public access blocks enable all four settings.",
        Severity.HIGH,
        _PUBLIC,
        "Set block_public_acls, block_public_policy, ignore_public_acls and restrict_public_buckets to True.",
        PAB + ACCOUNT_PAB,
        _pab_settings,
        checkov=("CKV_AWS_53", "CKV_AWS_54", "CKV_AWS_55", "CKV_AWS_56"),
    ),
    Rule(
        "aws-s3-tls-only-policy",
        "S3 bucket policies deny requests that are not over TLS.",
        Severity.HIGH,
        _TLS,
        "Add a Deny statement for s3:* on the bucket and its objects with Condition "
        "{Bool: {aws:SecureTransport: 'false'}}.",
        BUCKET_POLICY,
        _tls_policy,
        checkov=("CKV_AWS_379",),
    ),
    Rule(
        "aws-s3-no-public-policy",
        "S3 bucket policies do not grant access to everyone.",
        Severity.CRITICAL,
        _PUBLIC,
        "Name the principals (roles, the CloudFront distribution through OAC with aws:SourceArn) instead "
        "of '*'.",
        BUCKET_POLICY + BUCKETS,
        _public_policy,
        checkov=("CKV_AWS_70",),
    ),
    Rule(
        "aws-s3-no-public-acl",
        "S3 buckets and objects have no ACL granting everyone (AllUsers, AuthenticatedUsers) access.",
        Severity.CRITICAL,
        _PUBLIC,
        "Use the private canned ACL (or none, with BucketOwnerEnforced ownership) and share through "
        "CloudFront or pre-signed URLs.",
        BUCKETS + ACL + OBJECTS,
        _public_acl,
        checkov=("CKV_AWS_20", "CKV_AWS_57", "CKV_AWS_375", "CKV2_AWS_43"),
    ),
    Rule(
        "aws-s3-encryption",
        "S3 server-side encryption configurations use KMS or AES256.",
        Severity.MEDIUM,
        _ENC,
        "Set rules[].apply_server_side_encryption_by_default.sse_algorithm='aws:kms' (with a key).",
        SSE + BUCKETS,
        _sse,
    ),
    Rule(
        "aws-s3-versioning",
        "S3 versioning resources enable versioning.",
        Severity.LOW,
        _VER,
        "Set versioning_configuration.status='Enabled'.",
        VERSIONING + BUCKETS,
        _versioning,
    ),
    Rule(
        "aws-s3-no-open-cors",
        "S3 CORS rules do not let every origin write.",
        Severity.MEDIUM,
        Controls(nist=("AC-4", "SC-7"), soc2=("CC6.6",), pci=("6.2.4",)),
        "List the exact origins allowed to PUT/POST/DELETE (the app's domain), or allow only "
        "GET/HEAD from '*'.",
        CORS + BUCKETS,
        _cors,
        checkov=("CKV2_AWS_75",),
    ),
    Rule(
        "aws-s3-acls-disabled",
        "S3 object ownership is BucketOwnerEnforced (ACLs disabled).",
        Severity.LOW,
        Controls(nist=("AC-3",), soc2=("CC6.1",)),
        "Set rule.object_ownership='BucketOwnerEnforced' (the default for new buckets).",
        OWNERSHIP,
        _ownership,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV2_AWS_65",),
    ),
    Rule(
        "aws-s3-bucket-public-access-blocked",
        "Every S3 bucket has a public access block (its own or the account's).",
        Severity.HIGH,
        _PUBLIC,
        "Add an aws.s3.BucketPublicAccessBlock with all four settings for the bucket (or an "
        "AccountPublicAccessBlock).",
        stack_check=_public_access_blocked,
        checkov=("CKV2_AWS_6",),
    ),
    Rule(
        "aws-s3-bucket-tls-only",
        "Every S3 bucket has a policy that denies plain-HTTP requests.",
        Severity.HIGH,
        _TLS,
        "Add an aws.s3.BucketPolicy with the aws:SecureTransport deny statement.",
        stack_check=_tls_only,
    ),
    Rule(
        "aws-s3-bucket-encrypted",
        "Every S3 bucket has a server-side encryption configuration.",
        Severity.MEDIUM,
        _ENC,
        "Add an aws.s3.BucketServerSideEncryptionConfiguration for the bucket.",
        stack_check=_encrypted,
        checkov=("CKV_AWS_19",),
    ),
    Rule(
        "aws-s3-bucket-versioned",
        "Every S3 bucket has versioning enabled.",
        Severity.LOW,
        _VER,
        "Add an aws.s3.BucketVersioning with status 'Enabled' for the bucket.",
        stack_check=_versioned,
        checkov=("CKV_AWS_21",),
    ),
    Rule(
        "aws-s3-access-logging",
        "S3 buckets (other than log buckets) record server access logs.",
        Severity.LOW,
        Controls(cis=("AWS-3.6",), nist=("AU-2", "AU-12"), soc2=("CC7.2",), pci=("10.2.1",)),
        "Add an aws.s3.BucketLogging that sends the bucket's access logs to a log bucket.",
        stack_check=_access_logging,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_18",),
    ),
]
