"""The lab's secrets: the client API key, the Redis password and the front door's TLS cert.

The lab plays the secret store here. Every secret is generated fresh at ``up``, written
0600 into the state folder's ``secrets/`` (itself 0700), and handed to processes as files or
injected at spawn time; none is ever written into the state file or a command line.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

API_KEY_FILE = "api-keys"
REDIS_PASSWORD_FILE = "redis-password"
CA_CERT_FILE = "ca.pem"
SERVER_PEM_FILE = "frontdoor.pem"  # HAProxy wants the certificate and its key in one file


def write_secret(path: Path, value: str | bytes) -> Path:
    """Write ``value`` to a new file readable by its owner only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = value.encode() if isinstance(value, str) else value
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)
    return path


def generate(secrets_dir: Path, *, hosts: list[str]) -> None:
    """Create the API key, the Redis password and a CA-signed cert for ``hosts``."""
    write_secret(secrets_dir / API_KEY_FILE, f"sk-lab-{secrets.token_urlsafe(32)}\n")
    write_secret(secrets_dir / REDIS_PASSWORD_FILE, secrets.token_urlsafe(32))
    ca_pem, server_pem = _certificates(hosts)
    write_secret(secrets_dir / CA_CERT_FILE, ca_pem)
    os.chmod(secrets_dir / CA_CERT_FILE, 0o644)  # public: clients need it to verify
    write_secret(secrets_dir / SERVER_PEM_FILE, server_pem)


def _certificates(hosts: list[str]) -> tuple[bytes, bytes]:
    """A throwaway CA and a server cert it signs, valid for 30 days."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "skyfleet lab CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "skyfleet lab front door")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    server_pem = (
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        + ca_pem
    )
    return ca_pem, server_pem
