"""IAM: permission documents (no admin wildcards, no privilege escalation, no data access on
every resource), trust policies, long-lived credentials and where policies are attached.

Action names are compared case-insensitively and as the patterns IAM evaluates them as
(``s3:Get*`` grants ``s3:GetObject``); a policy attached through a separate resource
(RolePolicy, RolePolicyAttachment, PolicyAttachment) counts the same as one set inline.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator

from pulumi_policy import EnforcementLevel, Severity

from ._docs import DocumentError, Statement, is_public_principal, statements, wildcard_principal
from ._rule import Controls, Rule, Subject, as_list, get_path, num

POLICY_TYPES = (
    "aws:iam/policy:Policy",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/groupPolicy:GroupPolicy",
    "aws:iam/role:Role",
)
ROLE = ("aws:iam/role:Role",)
ATTACHMENT = (
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
    "aws:iam/policyAttachment:PolicyAttachment",
    "aws:iam/role:Role",
)
USER_POLICY = (
    "aws:iam/userPolicy:UserPolicy",
    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
    "aws:iam/policyAttachment:PolicyAttachment",
)
CREDENTIALS = ("aws:iam/accessKey:AccessKey", "aws:iam/userLoginProfile:UserLoginProfile")
PASSWORD_POLICY = ("aws:iam/accountPasswordPolicy:AccountPasswordPolicy",)

# Actions that let a principal grant itself more than it was given, whatever they apply to.
ESCALATION_ACTIONS = (
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
# Actions that run code as another identity: escalation when they apply to every resource.
ESCALATION_ON_ANY = (
    "lambda:UpdateFunctionCode",
    "lambda:UpdateFunctionConfiguration",
    "glue:UpdateDevEndpoint",
)
# Actions that read or change data, or hand out credentials: on Resource "*" they reach every
# bucket, secret, table and queue of the account.
DATA_ACTIONS = (
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:GetObjectVersion",
    "secretsmanager:GetSecretValue",
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:GetParametersByPath",
    "kms:Decrypt",
    "kms:GenerateDataKey",
    "dynamodb:GetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "sqs:ReceiveMessage",
    "sqs:SendMessage",
    "sqs:DeleteMessage",
    "sns:Publish",
    "lambda:InvokeFunction",
    "rds-db:connect",
    "kinesis:GetRecords",
    "kinesis:PutRecord",
    "sts:AssumeRole",
    "iam:PassRole",
    "ec2:GetPasswordData",
    "rds:ModifyDBInstance",
)
ADMIN_POLICY = re.compile(r"^arn:aws[a-z-]*:iam::aws:policy/(AdministratorAccess|IAMFullAccess)$", re.I)


def grants(pattern: str, action: str) -> bool:
    """IAM matches actions case-insensitively, `*` and `?` as wildcards."""
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


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
                if stmt.allows:
                    yield stmt


def _everything(stmt: Statement) -> bool:
    return "*" in stmt.resources and not stmt.has_condition


def _wildcards(s: Subject) -> Iterator[str]:
    try:
        for stmt in permission_statements(s):
            if stmt.not_actions:
                yield f"statement allows every action except {', '.join(stmt.not_actions)} (NotAction)"
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
                if action in ("*", "*:*"):
                    continue  # reported by aws-iam-no-wildcard-actions
                if any(grants(action, e) for e in ESCALATION_ACTIONS):
                    yield f"statement allows privilege-escalation action {action!r}"
                elif "*" in stmt.resources and any(grants(action, e) for e in ESCALATION_ON_ANY):
                    yield (
                        f"statement allows {action!r} on Resource '*': it can run code as any function's role"
                    )
                elif grants(action, "iam:PassRole") and "*" in stmt.resources:
                    yield "statement allows iam:PassRole on Resource '*'; name the exact role ARNs"
    except DocumentError as exc:
        yield str(exc)


def _unscoped_data(s: Subject) -> Iterator[str]:
    try:
        for stmt in permission_statements(s):
            if not _everything(stmt):
                continue
            for action in stmt.actions:
                if action in ("*", "*:*") or action.endswith(":*") or grants(action, "iam:PassRole"):
                    continue  # reported by the wildcard and escalation rules
                hit = next((d for d in DATA_ACTIONS if grants(action, d)), None)
                if hit:
                    yield (
                        f"statement allows {action!r} on Resource '*' (every "
                        f"{hit.split(':')[0]} resource in the account); name the ARNs the workload uses"
                    )
    except DocumentError as exc:
        yield str(exc)


def _attached_arns(s: Subject) -> list[str]:
    if s.type == "aws:iam/role:Role":
        return [str(a) for a in as_list(s.props.get("managedPolicyArns"))]
    return [str(s.props.get("policyArn") or "")]


def _admin_attachment(s: Subject) -> Iterator[str]:
    for arn in _attached_arns(s):
        if ADMIN_POLICY.match(arn.strip()):
            yield f"attaches the AWS managed policy {arn}"


# -- trust policies ------------------------------------------------------------------------------


def _oidc_trust(stmt: Statement, federated: str) -> Iterator[str]:
    """Web-identity trust must pin the token's subject (Cognito: the identity pool, `aud`)."""
    if not any(grants(a, "sts:AssumeRoleWithWebIdentity") for a in stmt.actions):
        return
    issuer = federated.split("oidc-provider/", 1)[-1].lower()
    claim = ":aud" if issuer.startswith("cognito-identity.amazonaws.com") else ":sub"
    # The condition key names the issuer (token.actions.githubusercontent.com:sub); the provider's
    # ARN may not be known yet, so any issuer's claim key counts.
    values = [
        v
        for op in stmt.condition
        for k in stmt.condition_keys()
        if k.endswith(claim)
        for v in stmt.condition_value(str(op), k)
    ]
    who = issuer if "." in issuer else "the OIDC provider"
    if not values:
        yield (
            f"web-identity trust on {who} has no condition on the token's '{claim[1:]}' claim: any "
            "workload that can get a token from the issuer may assume the role"
        )
    elif any(v.strip("*") in ("", "repo:", "system:serviceaccount:") for v in values):
        accepted = ", ".join(values)
        yield f"web-identity trust on {who} accepts '{claim[1:]}' {accepted}: that matches every workload"


def _trust(s: Subject) -> Iterator[str]:
    doc = s.props.get("assumeRolePolicy")
    if not doc:
        return
    try:
        for stmt in statements(doc, "assumeRolePolicy"):
            if not stmt.allows:
                continue
            anyone = wildcard_principal(stmt)
            if anyone is not None and is_public_principal(stmt):
                yield (
                    f"trust policy lets Principal {anyone!r} assume the role without a condition on "
                    "the caller"
                )
            if "*" in stmt.principal_types.get("Service", ()):
                yield "trust policy lets every AWS service (Service '*') assume the role"
            for federated in stmt.principal_types.get("Federated", ()):
                yield from _oidc_trust(stmt, federated)
    except DocumentError as exc:
        yield str(exc)


# Conditions that tie a cross-account trust to a known caller (third party, organisation, MFA).
CROSS_ACCOUNT_KEYS = frozenset(
    {
        "sts:externalid",
        "aws:principalorgid",
        "aws:principalorgpaths",
        "aws:principalarn",
        "aws:multifactorauthpresent",
        "aws:sourceaccount",
        "aws:sourcearn",
    }
)
ACCOUNT = re.compile(r"^(?:arn:aws[a-z-]*:iam::)?(\d{12})(?::root)?$")


def _own_accounts(s: Subject) -> set[str]:
    if s.provider is None:
        return set()
    allowed = s.provider.props.get("allowedAccountIds")
    text = allowed if isinstance(allowed, str) else json.dumps(allowed or [])
    return set(re.findall(r"\d{12}", text))


def _cross_account(s: Subject) -> Iterator[str]:
    doc = s.props.get("assumeRolePolicy")
    if not doc:
        return
    own = _own_accounts(s)
    try:
        for stmt in statements(doc, "assumeRolePolicy"):
            if not stmt.allows or stmt.condition_keys() & CROSS_ACCOUNT_KEYS:
                continue
            for principal in stmt.principal_types.get("AWS", ()):
                match = ACCOUNT.match(principal.strip())
                if match and match.group(1) not in own:
                    yield (
                        f"any identity of account {match.group(1)} may assume the role, with no "
                        "sts:ExternalId, aws:PrincipalOrgID, aws:PrincipalArn or MFA condition"
                    )
    except DocumentError as exc:
        yield str(exc)


# -- users and their credentials ---------------------------------------------------------------


def _for_user(s: Subject) -> str:
    user = s.props.get("user")
    return f" for IAM user {user!r}" if user else " for an IAM user"


def _long_lived(s: Subject) -> Iterator[str]:
    if s.type == "aws:iam/accessKey:AccessKey":
        if str(s.props.get("status") or "Active").lower() != "inactive":
            yield (
                f"creates a long-lived access key{_for_user(s)}; use a role (instance/task role, IRSA, "
                "or OIDC federation for CI) instead"
            )
    else:
        yield f"gives{_for_user(s)} a console password; use IAM Identity Center (SSO)"


def _user_policy(s: Subject) -> Iterator[str]:
    if s.type == "aws:iam/policyAttachment:PolicyAttachment":
        users = [str(u) for u in as_list(s.props.get("users"))]
        if users:
            yield f"attaches a policy directly to user(s) {', '.join(users)}; attach it to a group"
    else:
        yield f"attaches a policy directly to{_for_user(s).replace(' for', '')}; attach it to a group or role"


def _password_policy(s: Subject) -> Iterator[str]:
    p = s.props
    length = p.get("minimumPasswordLength")
    if not isinstance(length, int | float) or length < 14:
        yield (
            f"minimumPasswordLength is {num(length) if length is not None else 'unset (8)'}; CIS asks for 14"
        )
    reuse = p.get("passwordReusePrevention")
    if not isinstance(reuse, int | float) or reuse < 24:
        yield f"passwordReusePrevention is {num(reuse) if reuse is not None else 'unset'}; CIS asks for 24"
    for key in (
        "requireLowercaseCharacters",
        "requireUppercaseCharacters",
        "requireNumbers",
        "requireSymbols",
    ):
        if p.get(key) is not True:
            yield f"{key} must be true"
    age = p.get("maxPasswordAge")
    if isinstance(age, int | float) and (age <= 0 or age > 90):
        yield f"maxPasswordAge is {age:g}; 90 days at most"


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
        checkov=("CKV_AWS_62", "CKV_AWS_63", "CKV_AWS_290"),
    ),
    Rule(
        "aws-iam-no-privilege-escalation",
        "IAM policies do not allow privilege-escalation actions.",
        Severity.CRITICAL,
        Controls(cis=("AWS-1.16",), nist=("AC-6", "AC-6(10)"), soc2=("CC6.3",), pci=("7.2.2",)),
        "Remove iam:* write actions and scope iam:PassRole to the exact role ARNs.",
        POLICY_TYPES,
        _escalation,
        checkov=("CKV_AWS_286", "CKV_AWS_289", "CKV2_AWS_40"),
    ),
    Rule(
        "aws-iam-no-unscoped-data-access",
        "IAM policies do not grant data or credential actions on every resource ('*').",
        Severity.HIGH,
        _LEAST,
        "Name the bucket, secret, table, queue or key ARNs the workload uses in Resource.",
        POLICY_TYPES,
        _unscoped_data,
        checkov=("CKV_AWS_355", "CKV_AWS_287", "CKV_AWS_288"),
    ),
    Rule(
        "aws-iam-no-admin-attachment",
        "Roles, users and groups do not get AdministratorAccess or IAMFullAccess.",
        Severity.CRITICAL,
        _LEAST,
        "Attach a least-privilege customer managed policy instead.",
        ATTACHMENT,
        _admin_attachment,
        checkov=("CKV_AWS_274", "CKV2_AWS_56"),
    ),
    Rule(
        "aws-iam-trust-policy-restricted",
        "Role trust policies name who may assume the role; web-identity trust pins the token's subject.",
        Severity.CRITICAL,
        Controls(cis=("AWS-1.16",), nist=("AC-3", "AC-6", "IA-8"), soc2=("CC6.1", "CC6.3"), pci=("7.2.1",)),
        "Name the exact account, role or service in Principal; for OIDC (GitHub Actions, GitLab) add "
        "a StringEquals/StringLike condition on '<issuer>:sub' naming the repository and branch.",
        ROLE,
        _trust,
        checkov=("CKV_AWS_60", "CKV_AWS_61", "CKV_AWS_393"),
    ),
    Rule(
        "aws-iam-no-long-lived-credentials",
        "No IAM user access keys or console passwords are created; workloads and people use roles.",
        Severity.HIGH,
        Controls(cis=("AWS-1.4", "AWS-1.12"), nist=("IA-2", "IA-5", "AC-2"), soc2=("CC6.1",), pci=("8.3.1",)),
        "Give workloads a role (task/instance role, IRSA) and CI an OIDC-federated role; give people SSO.",
        CREDENTIALS,
        _long_lived,
        checkov=("CKV_AWS_273", "CKV_AWS_348", "CKV2_AWS_22"),
    ),
    Rule(
        "aws-iam-no-user-attached-policies",
        "IAM policies are attached to groups or roles, not to users.",
        Severity.LOW,
        Controls(cis=("AWS-1.15",), nist=("AC-2", "AC-6"), soc2=("CC6.3",), pci=("7.2.1",)),
        "Put the user in a group and attach the policy to the group.",
        USER_POLICY,
        _user_policy,
        checkov=("CKV_AWS_40",),
    ),
    Rule(
        "aws-iam-password-policy",
        "The account password policy meets CIS (14+ characters, all character classes, no reuse of 24).",
        Severity.MEDIUM,
        Controls(cis=("AWS-1.8", "AWS-1.9"), nist=("IA-5(1)",), soc2=("CC6.1",), pci=("8.3.6",)),
        "Set minimum_password_length=14, password_reuse_prevention=24 and require every character class.",
        PASSWORD_POLICY,
        _password_policy,
        checkov=(
            "CKV_AWS_9",
            "CKV_AWS_10",
            "CKV_AWS_11",
            "CKV_AWS_12",
            "CKV_AWS_13",
            "CKV_AWS_14",
            "CKV_AWS_15",
        ),
    ),
    Rule(
        "aws-iam-cross-account-trust-conditions",
        "Roles that another account may assume require an external id, an organisation, a named principal "
        "or MFA.",
        Severity.MEDIUM,
        Controls(nist=("AC-3", "IA-8"), soc2=("CC6.1",), pci=("7.2.1",)),
        "Add Condition {StringEquals: {sts:ExternalId: ...}} for third parties, aws:PrincipalOrgID for your "
        "organisation, or name the exact role ARN in Principal.",
        ROLE,
        _cross_account,
        enforcement=EnforcementLevel.ADVISORY,
    ),
]
