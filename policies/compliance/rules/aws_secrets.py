"""Credentials in plain configuration (Lambda environments, EC2 user data, plain SSM
parameters, CodeBuild and Batch environments) judged by their values, and Secrets Manager
rotation."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from typing import Any

from pulumi_policy import EnforcementLevel, Severity

from ._rule import Controls, Rule, StackView, Subject, as_list, get_path, norm
from ._secrets import secret_in_variable, secrets_in_env, secrets_in_text

FUNCTION = ("aws:lambda/function:Function",)
USER_DATA = (
    "aws:ec2/instance:Instance",
    "aws:ec2/launchTemplate:LaunchTemplate",
    "aws:ec2/launchConfiguration:LaunchConfiguration",
    "aws:ec2/spotInstanceRequest:SpotInstanceRequest",
)
PARAMETER = ("aws:ssm/parameter:Parameter",)
CODEBUILD = ("aws:codebuild/project:Project",)
BATCH = ("aws:batch/jobDefinition:JobDefinition",)
SECRET = ("aws:secretsmanager/secret:Secret",)
ROTATION = ("aws:secretsmanager/secretRotation:SecretRotation",)


def _decode(value: Any) -> str:
    """User data as the instance will see it (launch templates and *Base64 fields are base64)."""
    if not isinstance(value, str):
        return ""
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return value
    return decoded if decoded.isprintable() or "\n" in decoded else value


def _plaintext(s: Subject) -> Iterator[str]:
    p = s.props
    if s.type in FUNCTION:
        for name, what in secrets_in_env(get_path(p, "environment", "variables")):
            yield f"environment variable {name!r} holds {what}; read it from Secrets Manager or SSM at start"
    elif s.type in USER_DATA:
        for key in ("userData", "userDataBase64"):
            for what in secrets_in_text(_decode(p.get(key))):
                yield f"{key} contains {what}; fetch credentials at boot from Secrets Manager or SSM"
    elif s.type in PARAMETER:
        if norm(p.get("type")) != "securestring":
            what = secret_in_variable(str(p.get("name") or s.name), p.get("value") or p.get("insecureValue"))
            if what is not None:
                yield f"a {p.get('type') or 'String'} parameter holds {what}; use type SecureString"
    elif s.type in CODEBUILD:
        for var in as_list(get_path(p, "environment", "environmentVariables")):
            if norm(get_path(var, "type") or "PLAINTEXT") == "plaintext":
                name = str(get_path(var, "name"))
                what = secret_in_variable(name, get_path(var, "value"))
                if what is not None:
                    yield f"build variable {name!r} holds {what}; use type SECRETS_MANAGER or PARAMETER_STORE"
    elif s.type in BATCH:
        try:
            props = json.loads(p.get("containerProperties") or "{}")
        except (TypeError, json.JSONDecodeError):
            props = {}
        for env in as_list(props.get("environment") if isinstance(props, dict) else None):
            if isinstance(env, dict):
                what = secret_in_variable(str(env.get("name")), env.get("value"))
                if what is not None:
                    yield f"job environment variable {env.get('name')!r} holds {what}; use secrets[]"


def _rotation(view: StackView) -> Iterator[tuple[str, str | None]]:
    for secret in view.of_type(*SECRET):
        rotations = view.referrers(secret, ROTATION, "secretId")
        # rotationEnabled is an output the provider computes, never a program's setting.
        if not rotations:
            yield f"secret {secret.name!r} has no rotation (aws.secretsmanager.SecretRotation)", secret.urn


RULES = [
    Rule(
        "aws-no-plaintext-secrets",
        "Credentials are not set in plain configuration: Lambda environments, EC2 user data, String SSM "
        "parameters, CodeBuild and Batch environments.",
        Severity.HIGH,
        Controls(nist=("IA-5(7)", "SC-28"), soc2=("CC6.1",), pci=("8.6.2",)),
        "Keep the credential in Secrets Manager (or an SSM SecureString) and read it at start with the "
        "workload's role.",
        FUNCTION + USER_DATA + PARAMETER + CODEBUILD + BATCH,
        _plaintext,
        checkov=("CKV_AWS_45", "CKV_AWS_46", "CKV2_AWS_34"),
    ),
    Rule(
        "aws-secrets-rotation",
        "Secrets Manager secrets rotate automatically.",
        Severity.LOW,
        Controls(nist=("IA-5(1)", "SC-12"), soc2=("CC6.1",), pci=("8.3.9",)),
        "Add an aws.secretsmanager.SecretRotation with a rotation Lambda and rotation_rules.",
        stack_check=_rotation,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV2_AWS_57",),
    ),
]
