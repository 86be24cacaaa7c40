"""IAM: no basic roles or service-account impersonation at project, folder or organisation
level, no grants to the default service accounts, no admin roles for service accounts, no
user-managed service account keys, and no resource granted to allUsers/allAuthenticatedUsers.

Grants are read from every form the provider offers: IAMMember, IAMBinding and the
authoritative IAMPolicy (its policy_data JSON).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from pulumi_policy import Severity

from ._docs import DocumentError, load_json
from ._rule import Controls, Rule, Subject, as_list, get_path, norm
from .gcp_storage import PUBLIC_MEMBERS, members_of

PROJECT_IAM = ("gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding")
HIERARCHY_IAM = (
    *PROJECT_IAM,
    "gcp:projects/iAMPolicy:IAMPolicy",
    "gcp:folder/iAMMember:IAMMember",
    "gcp:folder/iAMBinding:IAMBinding",
    "gcp:folder/iAMPolicy:IAMPolicy",
    "gcp:organizations/iAMMember:IAMMember",
    "gcp:organizations/iAMBinding:IAMBinding",
    "gcp:organizations/iAMPolicy:IAMPolicy",
)
ANY_IAM = (
    "gcp:*IAMMember:*",
    "gcp:*IamMember:*",
    "gcp:*IAMBinding:*",
    "gcp:*IamBinding:*",
    "gcp:*IAMPolicy:*",
    "gcp:*IamPolicy:*",
)
# Resource IAM judged by their own rules (gcp-storage-no-public-access, gcp-pubsub-not-public,
# gcp-run-public-invoker-behind-lb). A public Cloud Run service is judged there in both forms, an
# allUsers grant and invokerIamDisabled, because either is allowed behind the load balancer only.
OWN_PUBLIC_RULE = ("gcp:storage/", "gcp:pubsub/", "gcp:cloudrun/iam", "gcp:cloudrunv2/service")
DATASET = ("gcp:bigquery/dataset:Dataset", "gcp:bigquery/datasetAccess:DatasetAccess")
SA_KEY = ("gcp:serviceaccount/key:Key",)
BASIC_ROLES = ("roles/owner", "roles/editor", "roles/viewer")
IMPERSONATION_ROLES = (
    "roles/iam.serviceAccountUser",
    "roles/iam.serviceAccountTokenCreator",
    "roles/iam.serviceAccountAdmin",
    "roles/iam.serviceAccountKeyAdmin",
    "roles/iam.workloadIdentityUser",
)
DEFAULT_SA = re.compile(r"(-compute@developer\.gserviceaccount\.com|@appspot\.gserviceaccount\.com)$", re.I)


def _level(s: Subject) -> str:
    return {"projects": "project", "folder": "folder", "organizations": "organisation"}.get(
        s.type.split(":")[1].split("/")[0], "resource"
    )


def grants(s: Subject) -> list[tuple[str, str]]:
    """(role, member) pairs the resource grants."""
    p = s.props
    out = [
        (str(p.get("role")), m) for m in [p.get("member"), *as_list(p.get("members"))] if p.get("role") and m
    ]
    if p.get("policyData"):
        try:
            doc = load_json(p.get("policyData"), "policyData")
        except DocumentError:
            doc = {}
        for binding in as_list(doc.get("bindings") if isinstance(doc, dict) else None):
            if isinstance(binding, dict):
                out += [(str(binding.get("role")), str(m)) for m in as_list(binding.get("members"))]
    return [(r, str(m)) for r, m in out]


def _role_in(roles: tuple[str, ...], why: str):
    wanted = {r.lower() for r in roles}

    def check(s: Subject) -> Iterator[str]:
        for role in sorted({r for r, _ in grants(s) if r.lower() in wanted}):
            yield f"{_level(s)}-level grant of {role}: {why}"

    return check


def _default_sa(s: Subject) -> Iterator[str]:
    for role, member in grants(s):
        if DEFAULT_SA.search(member):
            account = member.split(":", 1)[-1]
            yield f"{_level(s)}-level grant of {role} to the default service account {account}"


def _sa_admin(s: Subject) -> Iterator[str]:
    for role, member in grants(s):
        if not norm(member).startswith("serviceaccount:"):
            continue
        short = role.lower().rsplit("/", 1)[-1]
        if role.lower() in ("roles/owner", "roles/editor") or short.endswith("admin"):
            yield f"service account {member.split(':', 1)[-1]} gets {role} at {_level(s)} level"


def _public(s: Subject) -> Iterator[str]:
    if s.type.startswith(OWN_PUBLIC_RULE):
        return
    p = s.props
    if s.type in DATASET:
        entries = as_list(p.get("accesses")) if s.type.endswith(":Dataset") else [p]
        for entry in entries:
            for key in ("specialGroup", "iamMember"):
                value = get_path(entry, key)
                if norm(value) in PUBLIC_MEMBERS or norm(value).endswith(":allusers"):
                    yield f"dataset access grants {get_path(entry, 'role') or 'a role'} to {value}"
        return
    for member in members_of(p):
        if norm(member) in PUBLIC_MEMBERS:
            yield f"grants {p.get('role') or 'roles in the policy'} to {member}: everyone on the internet"


def _sa_key(s: Subject) -> Iterator[str]:
    if s.props.get("publicKeyData"):
        return  # uploading a public key keeps the private key with its owner (HSM, workload)
    yield (
        "creates a user-managed service account key: a long-lived credential that leaks; use "
        "Workload Identity"
    )


_LEAST = Controls(cis=("GCP-1.5",), nist=("AC-6", "AC-6(1)"), soc2=("CC6.3",), pci=("7.2.1",))

RULES = [
    Rule(
        "gcp-iam-no-basic-roles",
        "No basic roles (owner, editor, viewer) are granted at project, folder or organisation level.",
        Severity.HIGH,
        _LEAST,
        "Grant predefined or custom roles scoped to what the principal uses.",
        HIERARCHY_IAM,
        _role_in(BASIC_ROLES, "basic roles span every service"),
        checkov=("CKV_GCP_117", "CKV_GCP_115", "CKV_GCP_116"),
    ),
    Rule(
        "gcp-iam-no-project-sa-impersonation",
        "Roles that impersonate or manage service accounts are not granted at project, folder or "
        "organisation level.",
        Severity.HIGH,
        Controls(cis=("GCP-1.6",), nist=("AC-6", "AC-6(10)"), soc2=("CC6.3",), pci=("7.2.2",)),
        "Grant the role on the specific service account (gcp.serviceaccount.IAMMember) instead.",
        HIERARCHY_IAM,
        _role_in(IMPERSONATION_ROLES, "it lets the member act as, or manage, every service account below it"),
        checkov=("CKV_GCP_41", "CKV_GCP_44", "CKV_GCP_45", "CKV_GCP_49"),
    ),
    Rule(
        "gcp-iam-no-default-sa-grants",
        "The default Compute Engine and App Engine service accounts get no project, folder or organisation "
        "roles.",
        Severity.HIGH,
        Controls(cis=("GCP-1.5",), nist=("AC-6",), soc2=("CC6.3",), pci=("7.2.2",)),
        "Create a dedicated service account per workload and grant the roles to it.",
        HIERARCHY_IAM,
        _default_sa,
        checkov=("CKV_GCP_46", "CKV_GCP_47", "CKV_GCP_48"),
    ),
    Rule(
        "gcp-iam-sa-no-admin-roles",
        "Service accounts get no owner, editor or *Admin roles at project, folder or organisation level.",
        Severity.HIGH,
        _LEAST,
        "Grant the service account the narrow roles it uses (e.g. roles/storage.objectViewer), on the "
        "resources it uses.",
        HIERARCHY_IAM,
        _sa_admin,
        checkov=("CKV_GCP_42",),
    ),
    Rule(
        "gcp-iam-no-public-members",
        "No resource (KMS keys, datasets, secrets, functions, registries, ...) is granted to allUsers or "
        "allAuthenticatedUsers.",
        Severity.CRITICAL,
        Controls(cis=("GCP-1.9", "GCP-7.1"), nist=("AC-3", "AC-6"), soc2=("CC6.1",), pci=("7.2.1",)),
        "Grant the role to named service accounts, groups or domains.",
        ANY_IAM + DATASET,
        _public,
        checkov=(
            "CKV_GCP_15",
            "CKV_GCP_101",
            "CKV_GCP_107",
            "CKV_GCP_112",
            "CKV2_GCP_6",
            "CKV2_GCP_8",
        ),
    ),
    Rule(
        "gcp-iam-no-user-managed-sa-keys",
        "No user-managed service account keys are created.",
        Severity.HIGH,
        Controls(cis=("GCP-1.4",), nist=("IA-5", "AC-2"), soc2=("CC6.1",), pci=("8.3.1",)),
        "Use Workload Identity (GKE, Cloud Run), workload identity federation (CI), or impersonation instead "
        "of exported keys.",
        SA_KEY,
        _sa_key,
        checkov=("CKV2_GCP_3",),
    ),
]
