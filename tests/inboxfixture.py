"""Messages for inbox and hook tests: real envelopes sealed and opened with a test network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import JsonValue

from keys.encoding import b64e
from keys.envelope import OpenedEnvelope, open_envelope, seal
from keys.models import AttachmentManifestEntry
from tests.netfixture import NOW, Network

NOTICE: dict[str, JsonValue] = {
    "kind": "identification_notice",
    "object_description": "Etruscan bronze mirror, 3rd c. BC",
    "identified_where": "Online auction, lot 42",
    "identified_at": NOW - 3_600_000,
    "sale_deadline": NOW + 36_000_000,
    "country_of_origin": "IT",
    "photos": ["front.jpg"],
}
PHOTO = AttachmentManifestEntry(
    h="ab" * 32, n=1024, key=b64e(b"\x07" * 32), name="front.jpg", type="image/jpeg", size=1000
)


def deliver(
    net: Network,
    content: dict[str, JsonValue] | None = None,
    *,
    to: Sequence[str] = ("fr-oclcc",),
    reader: str | None = None,
    now: int = NOW,
    **kwargs: Any,
) -> tuple[OpenedEnvelope, str]:
    """Seal a message from it-tpc to ``to`` and open it as ``reader`` (default ``to[0]``)."""
    sealed = seal(
        net["it-tpc"],
        net.directory,
        to=to,
        content=NOTICE if content is None else content,
        now=now,
        **kwargs,
    )
    opened = open_envelope(sealed.token, net.directory, net[reader or to[0]], now=now + 1000)
    return opened, sealed.token
