"""The officer console's own TLS: an HTTPS server context from two PEM files.

With ``console_tls_cert`` and ``console_tls_key`` set, the console serves HTTPS (TLS 1.2
or newer, the ``ssl`` module's server defaults) and its session cookie is ``Secure``;
only then may it listen on a non-loopback address (clients/config.py). Loading reads
files, so the daemon calls :func:`console_ssl_context` off the event loop.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from clients.config import ClientSettings
from clients.errors import ClientError


def console_ssl_context(settings: ClientSettings) -> ssl.SSLContext | None:
    """The console's server TLS context, or None when no certificate is configured.

    Raises :class:`ClientError` with one plain sentence naming the file when the
    certificate or the key is missing, unreadable, not PEM, or the two do not match.
    """
    cert, key = settings.console_tls_cert, settings.console_tls_key
    if cert is None or key is None:
        return None
    for what, path in (("certificate", cert), ("private key", key)):
        if not path.is_file():
            raise ClientError(f"the console's TLS {what} {path} does not exist or is not a file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2

    def no_password() -> bytes:
        # Never OpenSSL's terminal prompt: a daemon has no one to answer it.
        raise _EncryptedKeyError

    try:
        context.load_cert_chain(cert, key, password=no_password)
    except _EncryptedKeyError:
        raise ClientError(
            f"the console's TLS private key {key} is encrypted and the daemon cannot ask for "
            "its passphrase: store it unencrypted, readable only by the daemon's user"
        ) from None
    except ssl.SSLError as exc:
        raise ClientError(_explain(exc, cert, key)) from exc
    except OSError as exc:
        name = exc.filename or cert
        raise ClientError(
            f"the console's TLS file {name} could not be read: {exc.strerror or exc}"
        ) from exc
    return context


class _EncryptedKeyError(Exception):
    """The key file asks for a password (raised from the password callback)."""


def _explain(exc: ssl.SSLError, cert: Path, key: Path) -> str:
    """One sentence for what OpenSSL refused, naming the file it is about."""
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"the console's TLS private key {key} does not match the certificate {cert}"
    if not _is_pem_certificate(cert):
        return f"the console's TLS certificate {cert} is not a PEM certificate"
    return f"the console's TLS private key {key} is not a PEM private key"


def _is_pem_certificate(path: Path) -> bool:
    """Whether ``path`` holds at least one PEM certificate the ssl module can read."""
    try:
        ssl.create_default_context().load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError):
        return False
    return True
