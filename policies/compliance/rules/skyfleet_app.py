"""The agent app as the plan will run it: every app container's environment validated by the
app's own settings model, its files provided by mounts, its client keys where they belong, and
its TLS connections to the cache and the broker verifiable by the names it uses.

An app container is one whose command is the contract's api or worker command, or whose
environment sets ``AGENT_*`` variables. Values that arrive from a secret store count as present;
where the plan holds the secret itself (a Secrets Manager or Secret Manager version, a
Kubernetes Secret) its value is validated too.
"""

from __future__ import annotations

import contextlib
import typing
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from pulumi_policy import Severity
from pydantic import ValidationError
from pydantic.types import PathType
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from agent_app import contract
from agent_app.auth import ApiKeys
from agent_app.config import ConfigError, Settings, describe
from agent_app.contract import Env, process_role

from ._plan import (
    K8S_SECRET,
    Container,
    SecretRef,
    as_int,
    certificate_names,
    k8s_data,
    k8s_keys,
    k8s_servers,
    name_covers,
    plan_containers,
    provides,
    secret_value,
    served_certificates,
    text,
)
from ._rule import SKYFLEET, Controls, Rule, StackView, get_path, norm, truthy
from .aws_alb import LB

API, WORKER = contract.API_ROLE, contract.WORKER_ROLE
# Variables a process role never reads: giving them to it only widens what a compromise leaks.
UNREAD_BY_ROLE: dict[str, frozenset[Env]] = {WORKER: frozenset({Env.API_KEYS, Env.API_KEYS_FILE})}
MEMORYSTORE = "gcp:redis/instance:Instance"
# A secret store's value is not known offline: one that fits every secret's format (>= 32 characters).
_PLACEHOLDER = "secret-value-from-the-platforms-secret-store"


class PlannedSettings(Settings):
    """The app's settings model fed only the given mapping. (pydantic-settings' model_validate
    still merges os.environ underneath: the checking machine's environment must not count.)"""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _is_file_path(annotation: Any) -> bool:
    if any(
        isinstance(m, PathType) and m.path_type == "file" for m in getattr(annotation, "__metadata__", ())
    ):
        return True
    return any(_is_file_path(a) for a in typing.get_args(annotation))


# Settings that name a file the process reads (FilePath fields): the plan must mount it.
FILE_SETTINGS: tuple[str, ...] = tuple(
    str(f.validation_alias) for f in Settings.model_fields.values() if _is_file_path(f.annotation)
)


def app_containers(
    view: StackView, platforms: tuple[str, ...] = ("ecs", "cloudrun", "kubernetes")
) -> Iterator[tuple[Container, str | None]]:
    for c in plan_containers(view, platforms):
        role = process_role(c.command)
        if role is not None or any(name.startswith("AGENT_") for name in c.env):
            yield c, role


class Resolved:
    """One app container's environment as the app would see it, validated by its settings model.

    With ``secrets``, values the plan holds in a secret store are used; without, every
    secret-sourced variable is present but unknown (and no secret value is read, so a preview's
    unknown secrets do not stop the rest of the check)."""

    def __init__(self, view: StackView, container: Container, *, secrets: bool = False) -> None:
        self.container = container
        self.unknown: set[str] = set()  # values the plan does not know: only presence counts
        self.mapping: dict[str, str] = {}
        for name, value in container.env.items():
            known = value.value if value.kind == "value" else None
            if secrets and value.kind == "secret" and value.secret is not None:
                known = secret_value(view, value.secret)
            if known is None:
                self.unknown.add(name)
                self.mapping[name] = _PLACEHOLDER
            else:
                self.mapping[name] = known
        self.files = {name: self.mapping.pop(name) for name in FILE_SETTINGS if name in self.mapping}
        self.problems: list[tuple[str, str]] = []  # (variable, the app's message)
        self.settings: Settings | None = None
        try:
            self.settings = PlannedSettings.model_validate(self.mapping)
        except ValidationError as exc:
            rejected: set[str] = set()
            for err, line in zip(exc.errors(), describe(exc), strict=True):
                var = str(err["loc"][0]) if err["loc"] else ""
                rejected.add(var)
                if var in self.unknown and err["type"] != "missing":
                    continue  # a value the plan does not know cannot be judged
                if err["type"] == "missing" and container.opaque_env:
                    continue  # it may come from a source the plan does not show
                self.problems.append((var, line))
            # The settings without the rejected variables, for the checks that read the others.
            try:
                rest = {k: v for k, v in self.mapping.items() if k not in rejected}
                self.settings = PlannedSettings.model_validate(rest)
            except ValidationError:
                self.settings = None


def _env_problems(view: StackView, c: Container, role: str | None) -> Iterator[str]:
    resolved = Resolved(view, c)
    yield from (line for _, line in resolved.problems)
    for name, path in resolved.files.items():
        if name in resolved.unknown:
            continue
        ok, why = provides(view, c, path)
        if not ok:
            yield f"{name}: {path} is not provided by the plan: {why}"
    if role == API:
        inline_var, file_var = Env.API_KEYS.value, Env.API_KEYS_FILE.value
        has_file = file_var in resolved.files and provides(view, c, resolved.files[file_var])[0]
        if not has_file and inline_var not in c.env:
            # The api refuses to start without client keys (agent_app.auth.ApiKeys): its own words.
            try:
                ApiKeys(file=None, inline=None)
            except ConfigError as exc:
                yield str(exc)


def _secret_problems(view: StackView, c: Container, role: str | None) -> Iterator[str]:
    secret_vars = {n for n, v in c.env.items() if v.kind == "secret" and v.secret is not None}
    for name in sorted(secret_vars):
        ref = c.env[name].secret
        assert ref is not None
        if ref.store == "kubernetes":
            keys = k8s_keys(view, K8S_SECRET, ref.name, ref.scope)
            if keys is not None and ref.key not in keys:
                yield f"{name}: Secret {ref.name!r} has no key {ref.key!r}"
    resolved = Resolved(view, c, secrets=True)
    yield from (f"{line} (from the secret store)" for var, line in resolved.problems if var in secret_vars)
    if role != API:
        return
    inline_var, file_var = Env.API_KEYS.value, Env.API_KEYS_FILE.value
    if inline_var in secret_vars and inline_var not in resolved.unknown:
        try:
            ApiKeys(file=None, inline=resolved.mapping[inline_var])
        except ConfigError as exc:
            yield str(exc)
    if file_var in resolved.files:
        content = _file_content(view, c, resolved.files[file_var])
        if content is not None:
            try:
                ApiKeys(file=None, inline=content)
            except ConfigError as exc:
                yield f"{file_var} ({resolved.files[file_var]}): {str(exc).split(': ', 1)[-1]}"


def _file_content(view: StackView, c: Container, path: str) -> str | None:
    """The content of a file mounted from a secret whose value the plan holds."""
    for m in c.mounts:
        base = m.path.rstrip("/") + "/"
        if not path.startswith(base):
            continue
        rel = path[len(base) :]
        for source in m.sources:
            if source.kind != "secret" or not source.name:
                continue
            if c.platform == "kubernetes":
                data = k8s_data(view, K8S_SECRET, source.name, source.scope)
                if data is not None and rel in data:
                    return data[rel]
            elif c.platform == "cloudrun":
                return secret_value(view, SecretRef("secretmanager", source.name, None, source.scope))
    return None


def _app_env(view: StackView) -> Iterator[tuple[str, str | None]]:
    for c, role in app_containers(view):
        for problem in _env_problems(view, c, role):
            yield f"{c.label} ({role or 'app'}) would exit at start: {problem}", c.resource.urn


def _secret_values(view: StackView) -> Iterator[tuple[str, str | None]]:
    for c, role in app_containers(view):
        for problem in _secret_problems(view, c, role):
            yield f"{c.label} ({role or 'app'}) would exit at start: {problem}", c.resource.urn


def _unread(view: StackView) -> Iterator[tuple[str, str | None]]:
    for c, role in app_containers(view):
        given = sorted(v.value for v in UNREAD_BY_ROLE.get(role or "", frozenset()) if v.value in c.env)
        if given:
            yield (
                f"{c.label} ({role}) is given {', '.join(given)}, which the {role} never reads",
                c.resource.urn,
            )


# -- processes that work between requests --------------------------------------------------------


def _min_instances(service: Mapping[str, Any]) -> int:
    """The fewest instances the service runs: its minimums, or its manual count."""
    counts = [
        get_path(service, *path, "minInstanceCount") for path in (("template", "scaling"), ("scaling",))
    ]
    if str(get_path(service, "scaling", "scalingMode") or "").upper() == "MANUAL":
        counts.append(get_path(service, "scaling", "manualInstanceCount"))
    found = 0
    for n in counts:
        with contextlib.suppress(TypeError, ValueError):
            found = max(found, int(float(n)))  # the wire form's numbers are floats
    return found


def _between_requests(view: StackView) -> Iterator[tuple[str, str | None]]:
    """Cloud Run gives an instance CPU only while it serves requests (cpuIdle) and scales to zero
    instances without them: a process that works between requests would stall or never run."""
    for c, role in app_containers(view, ("cloudrun",)):
        if not contract.works_between_requests(role, fleet=Env.FLEET_SITES.value in c.env):
            continue
        what = "pulls its tasks" if role == WORKER else "takes a lost site's tasks over and copies writes on"
        resources = c.raw.get("resources")
        # The API's default: CPU only during requests, unless ``resources`` is set (then always).
        idle = resources.get("cpuIdle") if isinstance(resources, Mapping) else True
        if truthy(idle):
            yield (
                f"{c.label} ({role}) {what} between requests, but its CPU is allocated only during "
                "them (resources.cpuIdle)",
                c.resource.urn,
            )
        if _min_instances(c.resource.props) < 1:
            yield (
                f"{c.label} ({role}) {what} between requests, but the service may scale to zero "
                "instances (minInstanceCount)",
                c.resource.urn,
            )


# An ALB's idle timeout where the plan sets none (idle_timeout.timeout_seconds).
ALB_IDLE_TIMEOUT = 60


def _outlasts_lb_idle(view: StackView) -> Iterator[tuple[str, str | None]]:
    """An ALB reuses its connections to a target until they have been idle for its idle timeout;
    a target that closes one sooner can be sent a request just as it closes it, which the ALB
    answers 502 (AWS: set the application's keep-alive above the load balancer's idle timeout)."""
    if not any(True for _ in app_containers(view, ("ecs",))):
        return
    for lb in view.of_type(*LB):
        if norm(lb.props.get("loadBalancerType") or "application") != "application":
            continue
        idle = lb.props.get("idleTimeout")
        seconds = ALB_IDLE_TIMEOUT if idle is None else as_int(idle)
        if seconds is not None and seconds >= contract.KEEP_ALIVE_SECONDS:
            yield (
                f"{lb.name} keeps idle connections to the app open {seconds} s (idleTimeout), but the "
                f"app closes them after {contract.KEEP_ALIVE_SECONDS} s: a request sent as it closes "
                "one is answered 502",
                lb.urn,
            )


# -- TLS to the cache and the broker -----------------------------------------------------------


def _tls_problems(view: StackView, c: Container, settings: Settings) -> Iterator[str]:
    redis = urlsplit(settings.redis_url)
    if redis.scheme == "rediss" and redis.hostname:
        check_hostname = bool(getattr(settings, "redis_tls_check_hostname", True))
        yield from _server_tls(
            view, c, redis.hostname, check_hostname, Env.REDIS_URL.value, Env.REDIS_CA_FILE.value
        )
        # With Sentinel the app connects to every Sentinel with the same TLS settings.
        for host in dict.fromkeys(h for h, _ in settings.sentinel_hosts if h != redis.hostname):
            yield from _server_tls(
                view,
                c,
                host,
                check_hostname,
                Env.REDIS_SENTINELS.value,
                Env.REDIS_CA_FILE.value,
                ca_check=False,  # said once, for the URL
            )
    queue = settings.queue
    if isinstance(queue, contract.NatsQueue):
        for server in queue.servers:
            parts = urlsplit(server)
            if parts.scheme == "tls" and parts.hostname:
                yield from _server_tls(
                    view, c, parts.hostname, True, Env.QUEUE_URL.value, Env.QUEUE_CA_FILE.value
                )


def _server_tls(
    view: StackView,
    c: Container,
    host: str,
    check_hostname: bool,
    url_var: str,
    ca_var: str,
    *,
    ca_check: bool = True,
) -> Iterator[str]:
    has_ca = ca_var in c.env or not ca_check
    for instance in view.of_type(MEMORYSTORE):
        if text(instance.props.get("host")) != host:
            continue
        if text(instance.props.get("transitEncryptionMode")) != "SERVER_AUTHENTICATION":
            continue
        # Memorystore's server certificate is signed by the instance's own CA and names the
        # instance's IP only in its subject CN; hostname verification checks subjectAltName only.
        if check_hostname:
            yield (
                f"{url_var} connects to Memorystore at {host}, whose certificate names that address only in "
                "its subject CN, so hostname verification fails: turn the client's hostname check off "
                "(the CA is still verified)"
            )
        if not has_ca:
            yield f"{url_var}: Memorystore's certificate is signed by the instance's own CA; set {ca_var}"
        return
    if c.platform != "kubernetes":
        return
    certs = served_certificates(view, k8s_servers(view, host, c.scope))
    if not certs:
        return
    names = [n for cert in certs for n in certificate_names(cert)]
    if check_hostname and not any(name_covers(n, host) for n in names):
        listed = ", ".join(names)
        yield f"{url_var} connects to {host}, which the server's certificate does not name ({listed})"
    if not has_ca:
        yield f"{url_var}: the server's certificate comes from an in-cluster issuer; set {ca_var} to its CA"


def _tls_names(view: StackView) -> Iterator[tuple[str, str | None]]:
    for c, role in app_containers(view):
        resolved = Resolved(view, c)
        if resolved.settings is None:
            continue  # skyfleet-app-env reports why: a required setting is missing or malformed
        for problem in _tls_problems(view, c, resolved.settings):
            yield f"{c.label} ({role or 'app'}): {problem}", c.resource.urn


CONTROLS = Controls(nist=("CM-6", "SI-10"), soc2=("CC8.1", "CC7.1"))

RULES = [
    Rule(
        "skyfleet-app-env",
        "Every app container's environment is accepted by the app's own settings model (secret-sourced "
        "values count as present), its *_FILE settings are provided by mounts, and the api has client keys.",
        Severity.CRITICAL,
        CONTROLS,
        "Fix each variable named in the message (the message is the app's own); mount the files the "
        "*_FILE settings name; give the api AGENT_API_KEYS from the secret store or AGENT_API_KEYS_FILE.",
        stack_check=_app_env,
        group=SKYFLEET,
    ),
    Rule(
        "skyfleet-app-secret-values",
        "Every secret an app container takes from a secret store exists (Kubernetes Secret key) and, where "
        "the plan holds its value, the app accepts it.",
        Severity.HIGH,
        CONTROLS,
        "Fix the secret's value in the secret store (the message is the app's own), or reference an "
        "existing Secret key.",
        stack_check=_secret_values,
        group=SKYFLEET,
    ),
    Rule(
        "skyfleet-worker-no-api-keys",
        "The worker is not given the client API keys, which it never reads.",
        Severity.MEDIUM,
        Controls(nist=("AC-6", "SC-28"), soc2=("CC6.1",), pci=("7.2.2",)),
        "Inject AGENT_API_KEYS / AGENT_API_KEYS_FILE into the api only.",
        stack_check=_unread,
        group=SKYFLEET,
    ),
    Rule(
        "skyfleet-app-cpu-between-requests",
        "A Cloud Run app process that works between requests (the worker; the api in a fleet) has CPU "
        "between requests and at least one instance.",
        Severity.HIGH,
        Controls(nist=("CP-10", "SC-5"), soc2=("A1.2",)),
        "Set resources.cpu_idle=False on the container and scaling.min_instance_count >= 1 on the service.",
        stack_check=_between_requests,
        group=SKYFLEET,
    ),
    Rule(
        "skyfleet-app-outlasts-lb-idle",
        "The app keeps idle connections open longer than the application load balancer in front of "
        "it does, so the balancer never reuses one the app is closing.",
        Severity.MEDIUM,
        Controls(nist=("SC-5",), soc2=("A1.2",)),
        f"Set the ALB's idle_timeout below the app's keep-alive ({contract.KEEP_ALIVE_SECONDS} s, "
        "agent_app.contract.KEEP_ALIVE_SECONDS).",
        stack_check=_outlasts_lb_idle,
        group=SKYFLEET,
    ),
    Rule(
        "skyfleet-app-tls-names",
        "The app can verify TLS to its cache and broker: the server's certificate names the host the app "
        "connects to (or hostname checking is off where the provider's certificate cannot), and a "
        "private CA is given as a CA file.",
        Severity.HIGH,
        Controls(nist=("SC-8", "SC-23"), soc2=("CC6.7",), pci=("4.2.1",)),
        "Connect by a name the server's certificate carries (add it to the Certificate's dnsNames), set "
        "AGENT_REDIS_CA_FILE / AGENT_QUEUE_CA_FILE for private CAs, and for Memorystore turn hostname "
        "checking off (AGENT_REDIS_TLS_CHECK_HOSTNAME=false) while keeping CA verification.",
        stack_check=_tls_names,
        group=SKYFLEET,
    ),
]

__all__ = ["FILE_SETTINGS", "RULES", "PlannedSettings", "app_containers", "process_role"]
