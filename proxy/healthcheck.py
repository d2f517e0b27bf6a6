"""Docker HEALTHCHECK: GET /health on our own port and scheme; exit 0 only on HTTP 200.

Reads PW_PORT and PW_HTTPS like the proxy (and the `server:` block of a PW_CONFIG file),
so the check follows the configuration. Kept free of heavy imports: it runs every 30 s.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request


def _listening() -> tuple[str, bool]:
    """(port, https) as the proxy will have them."""
    if os.environ.get("PW_CONFIG", "").strip():
        from proxy.config import load_config  # the file may move the port

        config = load_config(os.environ)
        return str(config.port), config.https == "yes"
    port = os.environ.get("PW_PORT", "8675").strip() or "8675"
    return port, os.environ.get("PW_HTTPS", "no").strip().lower() == "yes"


def main() -> int:
    try:
        port, https = _listening()
    except ValueError:  # a bad config file: the proxy did not start either
        return 1
    url = f"{'https' if https else 'http'}://127.0.0.1:{port}/health"
    context = ssl._create_unverified_context() if https else None  # our own self-signed cert
    try:
        with urllib.request.urlopen(url, timeout=8, context=context) as r:
            return 0 if r.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


if __name__ == "__main__":
    sys.exit(main())
