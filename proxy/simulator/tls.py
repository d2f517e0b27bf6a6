"""A throw-away self-signed certificate, made at start: no key ever lives in the repo."""

from __future__ import annotations

import shutil
import ssl
import tempfile
from pathlib import Path

from proxy.httpd.tls import self_signed_pem, write_private


def server_context() -> ssl.SSLContext:
    """TLS server context with a fresh EC P-256 certificate (fast to generate)."""
    cert_pem, key_pem = self_signed_pem(("powerwall", "localhost"), days=365)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # ssl only loads certificates from files; they live in a private temp dir just
    # long enough to be read, so no key stays on disk while the simulator runs.
    folder = Path(tempfile.mkdtemp(prefix="pwsim-tls-"))
    try:
        cert_path, key_path = folder / "cert.pem", folder / "key.pem"
        write_private(cert_path, cert_pem)
        write_private(key_path, key_pem)
        context.load_cert_chain(cert_path, key_path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return context
