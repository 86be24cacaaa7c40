"""Lambda: who may invoke a function (resource policy, function URL) and supported runtimes."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import EnforcementLevel, Severity

from ._rule import Controls, Rule, Subject, as_list, get_path, norm

FUNCTION = ("aws:lambda/function:Function",)
PERMISSION = ("aws:lambda/permission:Permission",)
FUNCTION_URL = ("aws:lambda/functionUrl:FunctionUrl",)

# Runtimes past their deprecation date (AWS Lambda runtime support policy).
DEPRECATED_RUNTIMES = frozenset(
    {
        "python2.7",
        "python3.6",
        "python3.7",
        "python3.8",
        "nodejs",
        "nodejs4.3",
        "nodejs6.10",
        "nodejs8.10",
        "nodejs10.x",
        "nodejs12.x",
        "nodejs14.x",
        "nodejs16.x",
        "java8",
        "dotnetcore1.0",
        "dotnetcore2.0",
        "dotnetcore2.1",
        "dotnetcore3.1",
        "dotnet5.0",
        "dotnet6",
        "go1.x",
        "ruby2.5",
        "ruby2.7",
        "provided",
    }
)


def _permission(s: Subject) -> Iterator[str]:
    principal = str(s.props.get("principal") or "")
    scoped = s.props.get("sourceArn") or s.props.get("sourceAccount") or s.props.get("principalOrgId")
    if principal.strip() == "*":
        if not scoped:
            yield "lets Principal '*' invoke the function with no source_arn/source_account"
    elif principal.endswith(".amazonaws.com") and not scoped:
        yield (
            f"lets the service {principal} invoke the function on behalf of any account (set source_arn or "
            "source_account: confused deputy)"
        )


def _function_url(s: Subject) -> Iterator[str]:
    auth = s.props.get("authorizationType")
    if norm(auth) == "none":
        yield "function URL authorizationType is NONE: anyone on the internet may invoke the function"
    origins = [str(o) for o in as_list(get_path(s.props, "cors", "allowOrigins"))]
    methods = [str(m) for m in as_list(get_path(s.props, "cors", "allowMethods"))]
    if "*" in origins and "*" in methods:
        yield "CORS allows every method from every origin ('*')"


def _runtime(s: Subject) -> Iterator[str]:
    runtime = norm(s.props.get("runtime"))
    if runtime in DEPRECATED_RUNTIMES:
        yield f"runtime {runtime} is deprecated: it no longer receives security patches"


RULES = [
    Rule(
        "aws-lambda-permission-restricted",
        "Lambda permissions name who may invoke the function (no '*', service principals scoped by source).",
        Severity.HIGH,
        Controls(nist=("AC-3", "AC-6"), soc2=("CC6.1",), pci=("7.2.1",)),
        "Set principal to the account or service and source_arn (the bucket, topic, rule or API) or "
        "source_account.",
        PERMISSION,
        _permission,
        checkov=("CKV_AWS_301", "CKV_AWS_364"),
    ),
    Rule(
        "aws-lambda-url-auth",
        "Lambda function URLs require IAM authentication and do not open CORS to every origin and method.",
        Severity.HIGH,
        Controls(nist=("AC-3", "IA-2"), soc2=("CC6.1",), pci=("8.3.1",)),
        "Set authorization_type='AWS_IAM' (put API Gateway with an authorizer in front for public clients).",
        FUNCTION_URL,
        _function_url,
        checkov=("CKV_AWS_258", "CKV2_AWS_75"),
    ),
    Rule(
        "aws-lambda-supported-runtime",
        "Lambda functions run on a supported runtime.",
        Severity.MEDIUM,
        Controls(nist=("SI-2", "CM-6"), soc2=("CC7.1",), pci=("6.3.3",)),
        "Move to a current runtime (python3.12, nodejs20.x, java21, ...).",
        FUNCTION,
        _runtime,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_AWS_363",),
    ),
]
