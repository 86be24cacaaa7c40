"""The app's TLS to Redis against a real redis-server serving the kind of certificate a managed
cache serves: Memorystore's names only the instance's IP, in its CN, signed by a CA of that
instance alone. The chain must always be checked; only the name check may be switched off.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent_app.cache import connect
from agent_app.config import Settings
from skyfleet.testing.servers import REDIS_SERVER, free_port, port_open, wait_until

PASSWORD = "memorystore-auth-string"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(obj: Any) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool,
    ip_san: str | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip_san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip_san))]), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _ca(folder: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    cert = _cert(name, key, None, ca=True)
    (folder / f"{name}.pem").write_bytes(_pem(cert))
    return cert, key


class TlsRedis:
    """redis-server on a TLS port only, with a certificate named like Memorystore's."""

    def __init__(self, folder: Path, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]) -> None:
        key = _key()
        # The CN is the address; no subjectAltName at all (hostname checks read only SANs).
        cert = _cert("127.0.0.1", key, issuer, ca=False)
        (folder / "server.pem").write_bytes(_pem(cert))
        (folder / "server.key").write_bytes(_pem(key))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", "0",
                "--tls-port", str(self.port),
                "--bind", "127.0.0.1",
                "--tls-cert-file", str(folder / "server.pem"),
                "--tls-key-file", str(folder / "server.key"),
                "--tls-auth-clients", "no",
                "--requirepass", PASSWORD,
                "--save", "",
                "--dir", str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: port_open(self.port), what=f"TLS redis-server on {self.port}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def pki() -> Iterator[tuple[Path, TlsRedis]]:
    folder = Path(tempfile.mkdtemp(prefix="redis-tls-"))
    instance_ca = _ca(folder, "instance-ca")
    _ca(folder, "other-ca")
    server = TlsRedis(folder, instance_ca)
    yield folder, server
    server.stop()


def _ping(ca_file: Path, port: int, **env: str) -> Any:
    settings = Settings.model_validate(
        {
            "AGENT_REDIS_URL": f"rediss://127.0.0.1:{port}",
            "AGENT_REDIS_PASSWORD": PASSWORD,
            "AGENT_REDIS_CA_FILE": str(ca_file),
            "AGENT_QUEUE_URL": "nats://127.0.0.1:4222/AGENT_TASKS",
            **env,
        }
    )

    async def go() -> Any:
        client = connect(settings)
        try:
            return await client.ping()
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_the_name_check_refuses_a_certificate_that_names_only_its_ip_in_the_cn(
    pki: tuple[Path, TlsRedis],
) -> None:
    folder, server = pki
    with pytest.raises(Exception, match=r"IP address mismatch"):
        _ping(folder / "instance-ca.pem", server.port)


def test_with_the_name_check_off_the_instance_ca_still_authenticates_the_server(
    pki: tuple[Path, TlsRedis],
) -> None:
    folder, server = pki
    assert _ping(folder / "instance-ca.pem", server.port, AGENT_REDIS_TLS_CHECK_HOSTNAME="false") is True
    # Another CA's trust does not reach this server: the chain is still verified.
    with pytest.raises(Exception, match=r"(?i)certificate verify failed"):
        _ping(folder / "other-ca.pem", server.port, AGENT_REDIS_TLS_CHECK_HOSTNAME="false")
