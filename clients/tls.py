"""TLS to the relay, pinned through the signed directory (no web PKI).

A client built with pins accepts a TLS connection only when the certificate the relay
presents has a key whose pin (base64url SHA-256 of its SubjectPublicKeyInfo) the
pinned directory lists under a relay's ``tls_spki_sha256``. The check runs right after
the handshake, before a byte of the request is sent (aiohttp's fingerprint hook), so a
relay impostor sees no request at all. Before the first directory has been accepted
there is nothing to pin against: that first fetch is allowed, and what it brings is
itself verified against the pinned root key before anything trusts it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp import Fingerprint, ServerFingerprintMismatch

from keys.tls import spki_sha256_der

Pins = Callable[[], frozenset[str] | None]
"""The pins of the current pinned directory; ``None`` before there is one."""


class TlsPinMismatch(ServerFingerprintMismatch):
    """The relay's TLS key is not one the pinned directory lists."""

    def __init__(self, message: str, got: str, host: str, port: int) -> None:
        super().__init__(b"", got.encode(), host, port)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SpkiPin(Fingerprint):
    """aiohttp's ``ssl=`` value that checks the peer's SPKI pin instead of a CA chain."""

    def __init__(self, pins: Pins) -> None:
        super().__init__(bytes(32))  # the parent's digest is unused: check() is ours
        self._pins = pins

    def check(self, transport: asyncio.Transport) -> None:
        sslobj = transport.get_extra_info("ssl_object")
        peer = transport.get_extra_info("peername") or ("?", 0)
        host, port = str(peer[0]), int(peer[1])
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if der is None:
            raise TlsPinMismatch(
                f"the relay at {host}:{port} presented no TLS certificate", "", host, port
            )
        try:
            got = spki_sha256_der(der)
        except Exception as exc:  # whatever the peer sent: a refusal, never a crash
            raise TlsPinMismatch(f"the relay at {host}:{port}: {exc}", "", host, port) from exc
        pins = self._pins()
        if pins is None:
            return  # no directory accepted yet: the fetched one is verified by the root key
        if got not in pins:
            listed = ", ".join(sorted(pins)) or "none"
            raise TlsPinMismatch(
                f"the relay at {host}:{port} presented a TLS key (pin {got}) that the pinned "
                f"directory does not list for any relay (listed: {listed}); refusing it",
                got,
                host,
                port,
            )
