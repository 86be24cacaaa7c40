"""IAM permission documents: no admin wildcards, no privilege-escalation actions."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import Severity

from ._docs import DocumentError, Statement, statements
from ._rule import Controls, Rule, Subject, as_list, get_path

POLICY_TYPES = (
    "aws:iam/policy:Policy",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/groupPolicy:GroupPolicy",
    "aws:iam/role:Role",
)
ATTACHMENT = ("aws:iam/rolePolicyAttachment:RolePolicyAttachment",)

# Actions that let a principal grant itself more than it was given.
ESCALATION_ACTIONS = frozenset(
    a.lower()
    for a in (
        "iam:*",
        "iam:CreatePolicyVersion",
        "iam:SetDefaultPolicyVersion",
        "iam:AttachUserPolicy",
        "iam:AttachRolePolicy",
        "iam:AttachGroupPolicy",
        "iam:PutUserPolicy",
        "iam:PutRolePolicy",
        "iam:PutGroupPolicy",
        "iam:CreateAccessKey",
        "iam:CreateLoginProfile",
        "iam:UpdateLoginProfile",
        "iam:UpdateAssumeRolePolicy",
        "iam:AddUserToGroup",
        "iam:CreateRole",
        "iam:PutRolePermissionsBoundary",
        "iam:DeleteRolePermissionsBoundary",
        "sts:*",
    )
)
ADMIN_POLICY_ARNS = ("arn:aws:iam::aws:policy/AdministratorAccess", "arn:aws:iam::aws:policy/IAMFullAccess")


def permission_statements(s: Subject) -> Iterator[Statement]:
    """Every Allow statement of the resource's permission documents (not trust policies)."""
    docs = (
        [s.props.get("policy")]
        if s.type != "aws:iam/role:Role"
        else [get_path(p, "policy") for p in as_list(s.props.get("inlinePolicies"))]
    )
    for doc in docs:
        if doc:
            for stmt in statements(doc, "IAM policy"):
                if stmt.effect == "Allow":
                    yield stmt


def _wildcards(s: Subject) -> Iterator[str]:
    try:
        for stmt in permission_statements(s):
            for action in stmt.actions:
                if action in ("*", "*:*"):
                    yield f"statement allows Action {action!r}"
                elif action.endswith(":*") and "*" in stmt.resources:
                    yield f"statement allows {action!r} on Resource '*'"
    except DocumentError as exc:
        yield str(exc)


def _escalation(s: Subject) -> Iterator[str]:
    try:
        for stmt in permission_statements(s):
            for action in stmt.actions:
                if action.lower() in ESCALATION_ACTIONS:
                    yield f"statement allows privilege-escalation action {action!r}"
                elif action.lower() == "iam:passrole" and "*" in stmt.resources:
                    yield "statement allows iam:PassRole on Resource '*'; name the exact role ARNs"
    except DocumentError as exc:
        yield str(exc)


def _admin_attachment(s: Subject) -> Iterator[str]:
    arn = str(s.props.get("policyArn") or "")
    if arn in ADMIN_POLICY_ARNS:
        yield f"role gets the managed policy {arn}"


_LEAST = Controls(cis=("AWS-1.16",), nist=("AC-6", "AC-6(1)"), soc2=("CC6.3",), pci=("7.2.1",))

RULES = [
    Rule(
        "aws-iam-no-wildcard-actions",
        "IAM policies do not allow '*' actions, nor service-wide actions on '*' resources.",
        Severity.CRITICAL,
        _LEAST,
        "List the exact actions (e.g. sqs:ReceiveMessage) and resource ARNs the workload uses.",
        POLICY_TYPES,
        _wildcards,
    ),
    Rule(
        "aws-iam-no-privilege-escalation",
        "IAM policies do not allow privilege-escalation actions.",
        Severity.CRITICAL,
        Controls(cis=("AWS-1.16",), nist=("AC-6", "AC-6(10)"), soc2=("CC6.3",), pci=("7.2.2",)),
        "Remove iam:* write actions and scope iam:PassRole to the exact role ARNs.",
        POLICY_TYPES,
        _escalation,
    ),
    Rule(
        "aws-iam-no-admin-attachment",
        "Roles do not get AdministratorAccess or IAMFullAccess.",
        Severity.CRITICAL,
        _LEAST,
        "Attach a least-privilege customer managed policy instead.",
        ATTACHMENT,
        _admin_attachment,
    ),
]
