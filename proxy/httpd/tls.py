"""Self-signed TLS material, generated at run time (no key ever lives in the repository)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path


def self_signed_pem(names: tuple[str, ...] = ("localhost",), days: int = 3650) -> tuple[bytes, bytes]:
    """A fresh EC P-256 self-signed certificate and its key, PEM encoded (fast to make)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (keys)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_self_signed(cert_path: Path, key_path: Path, names: tuple[str, ...] = ("localhost",),
                      days: int = 3650) -> None:
    """Write a self-signed certificate and its key (mode 0600)."""
    cert_pem, key_pem = self_signed_pem(names, days)
    write_private(key_path, key_pem)
    cert_path.write_bytes(cert_pem)


def server_context(cert: str, key: str, auth_path: str) -> ssl.SSLContext:
    """A server SSLContext from PW_TLS_CERT/PW_TLS_KEY, or a pair kept under PW_AUTH_PATH."""
    if not cert:
        folder = Path(auth_path or ".")
        cert_path, key_path = folder / "proxy-tls-cert.pem", folder / "proxy-tls-key.pem"
        if not (cert_path.exists() and key_path.exists()):
            write_self_signed(cert_path, key_path)
        cert, key = str(cert_path), str(key_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context
