"""The relay's TLS certificate and its pin (keys/tls.py)."""

from __future__ import annotations

import base64

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from keys.errors import KeysError
from keys.tls import create_certificate, spki_sha256_der, spki_sha256_pem
from tests.netfixture import NOW


def test_a_certificate_names_its_hosts_and_its_pin_is_the_spki_hash() -> None:
    key_pem, cert_pem = create_certificate(
        "relay-eu", ["127.0.0.1", "Relay.Example.org"], now_ms=NOW
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["relay.example.org"]
    der = cert.public_bytes(serialization.Encoding.DER)
    pin = spki_sha256_pem(cert_pem)
    assert pin == spki_sha256_der(der)
    assert len(base64.urlsafe_b64decode(pin + "=")) == 32
    assert b"PRIVATE KEY" in key_pem


@pytest.mark.parametrize("host", ["", "bad host", "-x.example", "a..b"])
def test_a_bad_host_name_is_refused(host: str) -> None:
    with pytest.raises(KeysError):
        create_certificate("relay-eu", [host], now_ms=NOW)


def test_garbage_from_a_peer_is_a_keys_error() -> None:
    for der in (b"", b"\x30\x03\x02\x01\x01", b"not a certificate"):
        with pytest.raises(KeysError):
            spki_sha256_der(der)
