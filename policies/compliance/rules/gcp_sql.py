"""Cloud SQL: private networking, TLS-only connections, backups, the database flags CIS asks
for, and the MySQL root user."""

from __future__ import annotations

from collections.abc import Iterator

from pulumi_policy import EnforcementLevel, Severity

from ._net import is_world
from ._rule import Controls, Rule, Subject, as_list, get_path, is_false, norm, truthy

INSTANCE = ("gcp:sql/databaseInstance:DatabaseInstance",)
USER = ("gcp:sql/user:User",)
SSL_ONLY = ("encrypted_only", "trusted_client_certificate_required")

# engine prefix -> flags that must be off (CIS GCP 6.1.3, 6.3.x)
INSECURE_FLAGS = {
    "mysql": {"local_infile": "off"},
    "sqlserver": {
        "cross db ownership chaining": "off",
        "contained database authentication": "off",
        "external scripts enabled": "off",
        "remote access": "off",
    },
}
# PostgreSQL logging flags CIS GCP 6.2 asks for.
POSTGRES_LOG_FLAGS = {
    "log_connections": "on",
    "log_disconnections": "on",
    "log_checkpoints": "on",
    "log_lock_waits": "on",
    "log_hostname": "on",
    "cloudsql.enable_pgaudit": "on",
}


def _flags(s: Subject) -> dict[str, str]:
    return {
        norm(get_path(f, "name")): norm(get_path(f, "value"))
        for f in as_list(get_path(s.props, "settings", "databaseFlags"))
    }


def _engine(s: Subject) -> str:
    return norm(s.props.get("databaseVersion"))


def _public(s: Subject) -> Iterator[str]:
    ip = get_path(s.props, "settings", "ipConfiguration") or {}
    for net in as_list(get_path(ip, "authorizedNetworks")):
        if is_world(get_path(net, "value")):
            yield f"authorizedNetworks admits {get_path(net, 'value')}: the database is open to the internet"
    if not is_false(get_path(ip, "ipv4Enabled")):
        yield (
            "ipv4Enabled is "
            f"{'unset (default true)' if get_path(ip, 'ipv4Enabled') is None else 'true'}: the "
            "instance has a public "
            "IP; set ipv4_enabled=False and private_network"
        )


def _ssl(s: Subject) -> Iterator[str]:
    ip = get_path(s.props, "settings", "ipConfiguration") or {}
    mode = norm(get_path(ip, "sslMode"))
    if mode in SSL_ONLY or (not mode and truthy(get_path(ip, "requireSsl"))):
        return
    yield f"sslMode is {mode.upper() or 'unset (ALLOW_UNENCRYPTED_AND_ENCRYPTED)'}; set ENCRYPTED_ONLY"


def _backups(s: Subject) -> Iterator[str]:
    if s.props.get("masterInstanceName"):
        return  # read replicas are not backed up; their primary is
    backup = get_path(s.props, "settings", "backupConfiguration") or {}
    if not truthy(get_path(backup, "enabled")):
        yield "backupConfiguration.enabled must be true in prod"


def _insecure_flags(s: Subject) -> Iterator[str]:
    engine, flags = _engine(s), _flags(s)
    for prefix, wanted in INSECURE_FLAGS.items():
        if not engine.startswith(prefix):
            continue
        for flag, value in wanted.items():
            if flags.get(flag) not in (None, value):
                yield f"database flag {flag!r} is {flags[flag]!r}; it must be {value!r}"


def _log_flags(s: Subject) -> Iterator[str]:
    if not _engine(s).startswith("postgres"):
        return
    flags = _flags(s)
    missing = [f"{k}={v}" for k, v in POSTGRES_LOG_FLAGS.items() if flags.get(k) != v]
    if missing:
        yield f"PostgreSQL logging flags not set: {', '.join(missing)}"


def _root_user(s: Subject) -> Iterator[str]:
    name, host = norm(s.props.get("name")), s.props.get("host")
    if name == "root" and (host is None or str(host).strip() in ("%", "0.0.0.0", "")):
        yield "the MySQL root user accepts connections from any host ('%')"


RULES = [
    Rule(
        "gcp-sql-not-public",
        "Cloud SQL instances have no public IP and no 0.0.0.0/0 authorized network.",
        Severity.CRITICAL,
        Controls(cis=("GCP-6.5", "GCP-6.6"), nist=("SC-7", "AC-3"), soc2=("CC6.6",), pci=("1.4.4",)),
        "Set settings.ip_configuration={ipv4_enabled: False, private_network: <VPC id>} and connect through "
        "private IP (or the Cloud SQL Auth Proxy).",
        INSTANCE,
        _public,
        checkov=("CKV_GCP_11", "CKV_GCP_60"),
    ),
    Rule(
        "gcp-sql-ssl-required",
        "Cloud SQL instances accept only TLS connections.",
        Severity.HIGH,
        Controls(cis=("GCP-6.4",), nist=("SC-8", "SC-8(1)"), soc2=("CC6.7",), pci=("4.2.1",)),
        "Set settings.ip_configuration.ssl_mode='ENCRYPTED_ONLY' (or TRUSTED_CLIENT_CERTIFICATE_REQUIRED).",
        INSTANCE,
        _ssl,
        checkov=("CKV_GCP_6",),
    ),
    Rule(
        "gcp-sql-backups",
        "Prod Cloud SQL instances keep automated backups.",
        Severity.MEDIUM,
        Controls(cis=("GCP-6.7",), nist=("CP-9",), soc2=("A1.2",)),
        "Set settings.backup_configuration={enabled: True} (and point-in-time recovery for the "
        "RPO you need).",
        INSTANCE,
        _backups,
        prod_only=True,
        checkov=("CKV_GCP_14",),
    ),
    Rule(
        "gcp-sql-secure-flags",
        "Cloud SQL database flags that open the engine (MySQL local_infile, SQL Server cross-database "
        "ownership chaining, contained authentication, external scripts, remote access) are off.",
        Severity.MEDIUM,
        Controls(
            cis=("GCP-6.1.3", "GCP-6.3.1", "GCP-6.3.2", "GCP-6.3.7"), nist=("CM-6", "CM-7"), soc2=("CC6.8",)
        ),
        "Set settings.database_flags with the flag at 'off'.",
        INSTANCE,
        _insecure_flags,
        checkov=("CKV_GCP_50", "CKV_GCP_58", "CKV_GCP_59"),
    ),
    Rule(
        "gcp-sql-postgres-logging",
        "Cloud SQL for PostgreSQL logs connections, disconnections, checkpoints, lock waits and audits "
        "with pgAudit.",
        Severity.LOW,
        Controls(
            cis=("GCP-6.2.1", "GCP-6.2.2", "GCP-6.2.3"),
            nist=("AU-2", "AU-12"),
            soc2=("CC7.2",),
            pci=("10.2.1",),
        ),
        "Add settings.database_flags log_connections, log_disconnections, log_checkpoints, log_lock_waits, "
        "log_hostname and cloudsql.enable_pgaudit set to 'on'.",
        INSTANCE,
        _log_flags,
        enforcement=EnforcementLevel.ADVISORY,
        checkov=("CKV_GCP_51", "CKV_GCP_52", "CKV_GCP_53", "CKV_GCP_54", "CKV_GCP_108", "CKV_GCP_110"),
    ),
    Rule(
        "gcp-sql-no-open-root",
        "The MySQL root user is not reachable from any host.",
        Severity.HIGH,
        Controls(nist=("AC-6", "AC-17"), soc2=("CC6.1",), pci=("8.2.2",)),
        "Restrict root to a host (host='localhost' or the proxy's address) or do not create it; give the "
        "app its own user.",
        USER,
        _root_user,
        checkov=("CKV2_GCP_7",),
    ),
]
