"""Credentials in plain configuration on GCP (Cloud Run and Cloud Functions environments, VM
metadata and startup scripts), judged by their values."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pulumi_policy import Severity

from ._rule import Controls, Rule, Subject, as_list, get_path
from ._secrets import secret_in_variable, secrets_in_env, secrets_in_text

RUN_V2 = ("gcp:cloudrunv2/service:Service", "gcp:cloudrunv2/job:Job")
RUN_V1 = ("gcp:cloudrun/service:Service",)
FUNCTION_V1 = ("gcp:cloudfunctions/function:Function",)
FUNCTION_V2 = ("gcp:cloudfunctionsv2/function:Function",)
INSTANCE = (
    "gcp:compute/instance:Instance",
    "gcp:compute/instanceTemplate:InstanceTemplate",
    "gcp:compute/regionInstanceTemplate:RegionInstanceTemplate",
)
SCRIPT_KEYS = ("startup-script", "user-data", "shutdown-script", "windows-startup-script-ps1")


def _containers(s: Subject) -> list[Any]:
    p = s.props
    if s.type == "gcp:cloudrunv2/job:Job":
        return as_list(get_path(p, "template", "template", "containers"))
    if s.type in RUN_V2:
        return as_list(get_path(p, "template", "containers"))
    return as_list(get_path(p, "template", "spec", "containers"))


def _env_list(container: Any) -> Iterator[tuple[str, str]]:
    for env in as_list(get_path(container, "envs")):
        name = str(get_path(env, "name") or "")
        what = secret_in_variable(name, get_path(env, "value"))
        if what is not None:
            yield name, what


def _plaintext(s: Subject) -> Iterator[str]:
    p = s.props
    if s.type in RUN_V2 + RUN_V1:
        for c in _containers(s):
            for name, what in _env_list(c):
                yield (
                    f"container {get_path(c, 'name') or get_path(c, 'image')!r}: env {name!r} holds {what}; "
                    "use value_source.secret_key_ref (Secret Manager)"
                )
    elif s.type in FUNCTION_V1 + FUNCTION_V2:
        maps = (
            [
                ("environmentVariables", p.get("environmentVariables")),
                ("buildEnvironmentVariables", p.get("buildEnvironmentVariables")),
            ]
            if s.type in FUNCTION_V1
            else [
                ("serviceConfig.environmentVariables", get_path(p, "serviceConfig", "environmentVariables")),
                ("buildConfig.environmentVariables", get_path(p, "buildConfig", "environmentVariables")),
            ]
        )
        for where, env in maps:
            for name, what in secrets_in_env(env):
                yield f"{where} {name!r} holds {what}; use secret_environment_variables (Secret Manager)"
    else:
        meta = p.get("metadata") or {}
        scripts = [(k, meta[k]) for k in meta if str(k) in SCRIPT_KEYS] if hasattr(meta, "keys") else []
        scripts.append(("metadataStartupScript", p.get("metadataStartupScript")))
        for key, text in scripts:
            for what in secrets_in_text(str(text or "")):
                yield f"{key} contains {what}; read credentials from Secret Manager at boot"


RULES = [
    Rule(
        "gcp-no-plaintext-secrets",
        "Credentials are not set in plain configuration: Cloud Run and Cloud Functions environments, VM "
        "metadata and startup scripts.",
        Severity.HIGH,
        Controls(nist=("IA-5(7)", "SC-28"), soc2=("CC6.1",), pci=("8.6.2",)),
        "Store the credential in Secret Manager and mount or reference it (secret_key_ref, "
        "secret_environment_variables), granting roles/secretmanager.secretAccessor to the service account.",
        RUN_V2 + RUN_V1 + FUNCTION_V1 + FUNCTION_V2 + INSTANCE,
        _plaintext,
    ),
]
