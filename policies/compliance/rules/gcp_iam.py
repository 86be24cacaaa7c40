"""Project-level IAM: no basic roles, no project-wide service-account impersonation."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._rule import Controls, Rule, Subject

PROJECT_IAM = ("gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding")
BASIC_ROLES = ("roles/owner", "roles/editor", "roles/viewer")
IMPERSONATION_ROLES = ("roles/iam.serviceAccountUser", "roles/iam.serviceAccountTokenCreator")


def _role_in(roles: tuple[str, ...], why: str):
    def check(s: Subject) -> Iterator[str]:
        role = s.props.get("role")
        if role in roles:
            yield f"project-level grant of {role}: {why}"

    return check


RULES = [
    Rule(
        "gcp-iam-no-basic-roles",
        "No basic roles (owner, editor, viewer) are granted at project level.",
        Severity.HIGH,
        Controls(cis=("GCP-1.5",), nist=("AC-6", "AC-6(1)"), soc2=("CC6.3",), pci=("7.2.1",)),
        "Grant predefined or custom roles scoped to what the principal uses.",
        PROJECT_IAM,
        _role_in(BASIC_ROLES, "basic roles span every service in the project"),
    ),
    Rule(
        "gcp-iam-no-project-sa-impersonation",
        "Service Account User / Token Creator are not granted at project level.",
        Severity.HIGH,
        Controls(cis=("GCP-1.6",), nist=("AC-6", "AC-6(10)"), soc2=("CC6.3",), pci=("7.2.2",)),
        "Grant the role on the specific service account (gcp.serviceaccount.IAMMember) instead.",
        PROJECT_IAM,
        _role_in(IMPERSONATION_ROLES, "it lets the member act as every service account in the project"),
    ),
]
