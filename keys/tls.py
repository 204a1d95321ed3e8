"""The relay's TLS key and certificate, and the pin that daemons check it against.

Authorities do not trust a web PKI to reach the relay: the relay's directory entry
lists the SHA-256 of its certificate's SubjectPublicKeyInfo (``tls_spki_sha256``,
unpadded base64url, the HPKP / RFC 7469 ``pin-sha256`` value), and a client accepts a
TLS connection only when the presented certificate's key is one of those listed in the
root-signed directory it has pinned. The certificate itself is self-signed (ECDSA
P-256, the key type every TLS stack supports); its subject and dates do not matter to
a pinning client but are kept sensible for tools that show them.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from keys.encoding import b64e
from keys.errors import KeysError

DEFAULT_DAYS = 825
_HOSTNAME = re.compile(
    r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def create_certificate(
    relay_id: str, hosts: Sequence[str], *, now_ms: int, days: int = DEFAULT_DAYS
) -> tuple[bytes, bytes]:
    """A new key and self-signed certificate for ``hosts``: ``(key_pem, cert_pem)``."""
    if not hosts:
        raise KeysError("a TLS certificate needs at least one host name or address")
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not _HOSTNAME.fullmatch(host):
                raise KeysError(f"{host!r} is neither an IP address nor a host name") from None
            names.append(x509.DNSName(host.lower()))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, relay_id)])
    start = datetime.datetime.fromtimestamp(now_ms / 1000, tz=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(hours=1))
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def spki_sha256(cert: x509.Certificate) -> str:
    """The pin of a certificate: base64url (unpadded) SHA-256 of its SubjectPublicKeyInfo."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return b64e(hashlib.sha256(spki).digest())


def spki_sha256_der(der: bytes) -> str:
    """The pin of a DER certificate; :class:`KeysError` for anything unparseable (an
    unknown key algorithm included), never another exception."""
    try:
        return spki_sha256(x509.load_der_x509_certificate(der))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeysError("the peer's certificate cannot be parsed") from exc


def spki_sha256_pem(pem: bytes) -> str:
    try:
        return spki_sha256(x509.load_pem_x509_certificate(pem))
    except ValueError as exc:
        raise KeysError("not a PEM certificate") from exc
