"""S3 buckets: public access block, TLS-only policy, encryption and versioning."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import PolicyResource, Severity

from ._docs import DocumentError, statements
from ._rule import Controls, Rule, StackView, Subject, as_list, get_path, truthy

BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
PAB = ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",)
BUCKET_POLICY = ("aws:s3/bucketPolicy:BucketPolicy",)
SSE = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
VERSIONING = ("aws:s3/bucketVersioning:BucketVersioning", "aws:s3/bucketVersioningV2:BucketVersioningV2")
PAB_FIELDS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def _pab_settings(s: Subject) -> Iterator[str]:
    off = [f for f in PAB_FIELDS if not truthy(s.props.get(f))]
    if off:
        yield f"{', '.join(off)} must be true"


def denies_plain_http(document: object) -> bool:
    for stmt in statements(document, "bucket policy"):
        if stmt.effect == "Deny" and get_path(stmt.condition, "Bool", "aws:SecureTransport") in (
            "false",
            False,
        ):
            return True
    return False


def _tls_policy(s: Subject) -> Iterator[str]:
    try:
        if not denies_plain_http(s.props.get("policy")):
            yield "bucket policy has no Deny statement with Condition Bool aws:SecureTransport=false"
    except DocumentError as exc:
        yield str(exc)


def _sse(s: Subject) -> Iterator[str]:
    algorithms = [
        get_path(r, "applyServerSideEncryptionByDefault", "sseAlgorithm")
        for r in as_list(s.props.get("rules"))
    ]
    if not algorithms or any(a not in ("aws:kms", "aws:kms:dsse", "AES256") for a in algorithms):
        yield "every rule needs applyServerSideEncryptionByDefault.sseAlgorithm aws:kms or AES256"


def _versioning(s: Subject) -> Iterator[str]:
    status = get_path(s.props, "versioningConfiguration", "status")
    if status != "Enabled":
        yield f"versioningConfiguration.status is {status!r}; it must be 'Enabled'"


def _bucket_companion(types: tuple[str, ...], what: str, ok=lambda r: True):
    """A stack check: every bucket has a companion resource of `types` that points at it."""

    def check(view: StackView) -> Iterator[tuple[str, str | None]]:
        companions: list[PolicyResource] = [r for r in view.of_type(*types) if ok(r)]
        for bucket in view.of_type(*BUCKETS):
            names = view.ids_of(bucket)
            linked = any(str(c.props.get("bucket")) in names or bucket.urn in _deps(c) for c in companions)
            if not linked:
                yield f"bucket {bucket.name!r} has no {what}", bucket.urn

    return check


def _deps(r: PolicyResource) -> set[str]:
    urns = {d.urn for d in r.dependencies}
    urns.update(d.urn for d in r.property_dependencies.get("bucket", []))
    return urns


def _tls_ok(r: PolicyResource) -> bool:
    try:
        return denies_plain_http(r.props.get("policy"))
    except DocumentError:
        return False


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
        PAB,
        _pab_settings,
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
    ),
    Rule(
        "aws-s3-encryption",
        "S3 server-side encryption configurations use KMS or AES256.",
        Severity.MEDIUM,
        _ENC,
        "Set rules[].apply_server_side_encryption_by_default.sse_algorithm='aws:kms' (with a key).",
        SSE,
        _sse,
    ),
    Rule(
        "aws-s3-versioning",
        "S3 versioning resources enable versioning.",
        Severity.LOW,
        _VER,
        "Set versioning_configuration.status='Enabled'.",
        VERSIONING,
        _versioning,
    ),
    Rule(
        "aws-s3-bucket-public-access-blocked",
        "Every S3 bucket has a public access block.",
        Severity.HIGH,
        _PUBLIC,
        "Add an aws.s3.BucketPublicAccessBlock with all four settings for the bucket.",
        stack_check=_bucket_companion(PAB, "BucketPublicAccessBlock"),
    ),
    Rule(
        "aws-s3-bucket-tls-only",
        "Every S3 bucket has a policy that denies plain-HTTP requests.",
        Severity.HIGH,
        _TLS,
        "Add an aws.s3.BucketPolicy with the aws:SecureTransport deny statement.",
        stack_check=_bucket_companion(BUCKET_POLICY, "TLS-only bucket policy", _tls_ok),
    ),
    Rule(
        "aws-s3-bucket-encrypted",
        "Every S3 bucket has a server-side encryption configuration.",
        Severity.MEDIUM,
        _ENC,
        "Add an aws.s3.BucketServerSideEncryptionConfiguration for the bucket.",
        stack_check=_bucket_companion(SSE, "server-side encryption configuration"),
    ),
    Rule(
        "aws-s3-bucket-versioned",
        "Every S3 bucket has versioning enabled.",
        Severity.LOW,
        _VER,
        "Add an aws.s3.BucketVersioning with status 'Enabled' for the bucket.",
        stack_check=_bucket_companion(
            VERSIONING,
            "versioning",
            lambda r: get_path(r.props, "versioningConfiguration", "status") == "Enabled",
        ),
    ),
]
