"""A self-signed certificate for 127.0.0.1, for tests that run real TLS on loopback."""

from __future__ import annotations

import time
from pathlib import Path

from keys.tls import create_certificate


def self_signed_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """``folder/name.crt`` and ``folder/name.key`` (PEM; the key unencrypted, mode 0600):
    the relay's own certificate maker (:func:`keys.tls.create_certificate`), for
    127.0.0.1 (blocking: call it off the loop)."""
    key_pem, cert_pem = create_certificate(name, ["127.0.0.1"], now_ms=int(time.time() * 1000))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    key_path.chmod(0o600)
    return cert_path, key_path
