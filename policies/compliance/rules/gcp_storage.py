"""Cloud Storage buckets: nobody outside the organisation reads or writes them (IAM grants and
ACLs, whichever resource sets them), uniform bucket-level access, and versioning, access logs and
public access prevention as advice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pulumi_policy import EnforcementLevel, PolicyResource, Severity

from ._docs import DocumentError, load_json
from ._rule import Controls, Rule, StackView, Subject, as_list, get_path, norm, truthy

BUCKET = ("gcp:storage/bucket:Bucket",)
BUCKET_IAM = (
    "gcp:storage/bucketIAMMember:BucketIAMMember",
    "gcp:storage/bucketIAMBinding:BucketIAMBinding",
    "gcp:storage/bucketIAMPolicy:BucketIAMPolicy",
    "gcp:storage/managedFolderIamMember:ManagedFolderIamMember",
    "gcp:storage/managedFolderIamBinding:ManagedFolderIamBinding",
)
ACLS = (
    "gcp:storage/bucketACL:BucketACL",
    "gcp:storage/defaultObjectACL:DefaultObjectACL",
    "gcp:storage/objectACL:ObjectACL",
    "gcp:storage/bucketAccessControl:BucketAccessControl",
    "gcp:storage/defaultObjectAccessControl:DefaultObjectAccessControl",
    "gcp:storage/objectAccessControl:ObjectAccessControl",
)
PUBLIC_MEMBERS = ("allusers", "allauthenticatedusers")
PUBLIC_PREDEFINED = ("publicread", "publicreadwrite", "authenticatedread")


def members_of(props: Any) -> list[str]:
    """Every member an IAM member/binding/policy resource grants to (policyData parsed)."""
    members = [str(m) for m in [props.get("member"), *as_list(props.get("members"))] if m]
    data = props.get("policyData")
    if data:
        try:
            doc = load_json(data, "policyData")
        except DocumentError:
            doc = {}
        for binding in as_list(doc.get("bindings") if isinstance(doc, dict) else None):
            if isinstance(binding, dict):
                members += [str(m) for m in as_list(binding.get("members"))]
    return members


def public_members(props: Any) -> list[str]:
    return [m for m in members_of(props) if norm(m) in PUBLIC_MEMBERS]


def _public(s: Subject) -> Iterator[str]:
    p = s.props
    if s.type in BUCKET_IAM:
        for m in public_members(p):
            yield f"grants {p.get('role') or 'roles'} to {m}: everyone on the internet"
        return
    predefined = norm(p.get("predefinedAcl"))
    if predefined in PUBLIC_PREDEFINED:
        yield f"predefinedAcl {p.get('predefinedAcl')} makes the data public"
    for entity in [*as_list(p.get("roleEntities")), p.get("entity")]:
        text = norm(entity)
        if any(text.endswith(m) for m in PUBLIC_MEMBERS):
            yield f"ACL entry {entity!r} opens the data to everyone"


def _uniform(s: Subject) -> Iterator[str]:
    if not truthy(s.props.get("uniformBucketLevelAccess")):
        yield "uniformBucketLevelAccess is off: object ACLs can grant access the bucket's IAM does not show"


def _prevention(s: Subject) -> Iterator[str]:
    if norm(s.props.get("publicAccessPrevention")) != "enforced":
        yield "publicAccessPrevention is not 'enforced' (it inherits the organisation policy)"


def _versioning(s: Subject) -> Iterator[str]:
    if not truthy(get_path(s.props, "versioning", "enabled")):
        yield "versioning is off: overwritten or deleted objects cannot be recovered"


def _log_target(view: StackView, bucket: PolicyResource) -> list[PolicyResource]:
    """The bucket(s) this bucket's access logs go to (by value or by property dependency)."""
    found = {r.urn: r for r in view.referenced(get_path(bucket.props, "logging", "logBucket"), BUCKET)}
    found.update(
        {d.urn: d for d in bucket.property_dependencies.get("logging", []) if d.resource_type in BUCKET}
    )
    return list(found.values())


def _access_logs(view: StackView) -> Iterator[tuple[str, str | None]]:
    buckets = view.of_type(*BUCKET)
    targets = {t.urn: b for b in buckets for t in _log_target(view, b)}
    for b in buckets:
        logging = b.props.get("logging")
        logs_to = _log_target(view, b)
        if any(t.urn == b.urn for t in logs_to):
            yield f"bucket {b.name!r} logs into itself", b.urn
        elif not logs_to and not get_path(logging, "logBucket") and b.urn not in targets:
            yield f"bucket {b.name!r} has no access logging (logging.logBucket)", b.urn


_PUBLIC = Controls(cis=("GCP-5.1",), nist=("AC-3", "SC-7"), soc2=("CC6.1",), pci=("1.4.4", "7.2.1"))

RULES = [
    Rule(
        "gcp-storage-no-public-access",
        "Cloud Storage buckets and objects are not granted to allUsers or allAuthenticatedUsers.",
        Severity.CRITICAL,
        _PUBLIC,
        "Grant roles to named service accounts or groups; serve public content through a load balancer "
        "with Cloud CDN and signed URLs.",
        BUCKET_IAM + ACLS,
        _public,
        checkov=("CKV_GCP_28",),
    ),
    Rule(
        "gcp-storage-uniform-access",
        "Cloud Storage buckets use uniform bucket-level access.",
        Severity.MEDIUM,
        Controls(cis=("GCP-5.2",), nist=("AC-3",), soc2=("CC6.1",), pci=("7.2.1",)),
        "Set uniform_bucket_level_access=True.",
        BUCKET,
        _uniform,
        checkov=("CKV_GCP_29",),
    ),
    Rule(
        "gcp-storage-public-access-prevention",
        "Cloud Storage buckets enforce public access prevention.",
        Severity.LOW,
        _PUBLIC,
        "Set public_access_prevention='enforced'.",
        BUCKET,
        _prevention,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_GCP_114",),
    ),
    Rule(
        "gcp-storage-versioning",
        "Cloud Storage buckets keep object versions.",
        Severity.LOW,
        Controls(nist=("CP-9", "SI-12"), soc2=("A1.2",)),
        "Set versioning={enabled: True} (with a lifecycle rule for old versions).",
        BUCKET,
        _versioning,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_GCP_78",),
    ),
    Rule(
        "gcp-storage-access-logging",
        "Cloud Storage buckets (other than log buckets) log access to another bucket.",
        Severity.LOW,
        Controls(nist=("AU-2", "AU-12"), soc2=("CC7.2",), pci=("10.2.1",)),
        "Set logging={log_bucket: <a separate log bucket>}.",
        stack_check=_access_logs,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_GCP_62", "CKV_GCP_63"),
    ),
]
