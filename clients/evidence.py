"""Use case: export the evidence bundle of a message (``notice evidence``).

The sender (or a recipient) asks the relay for the message's envelope, receipts and
their places in the log, checks that the relay's newest log head extends the one held
here (clients/logwatch.py), and writes a bundle (keys/evidence.py) that anyone can
check offline with the root key alone: ``keys evidence verify FILE --root-key-file``.
The bundle is verified here before it is written, so a relay that answers with
something that does not verify gets no bundle made from it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from clients.client import RelayClient
from clients.config import ClientSettings
from clients.directory import PinnedDirectory
from clients.logwatch import LogWatch
from clients.refusal import RefusedError
from clients.store import Inbox
from keys.evidence import Proven, build_bundle, verify_bundle
from keys.identity import Identity
from keys.loghead import verify_log_head

__all__ = ["export_evidence"]


async def export_evidence(
    settings: ClientSettings,
    identity: Identity,
    pinned: PinnedDirectory,
    msg_id: str,
    *,
    clock: Callable[[], int],
) -> tuple[bytes, Proven]:
    """The bundle's bytes and what it proves (already verified)."""
    async with RelayClient(
        settings.relay_url, identity, clock=clock, tls_pins=pinned.tls_pins
    ) as client:
        directory = pinned.usable(await pinned.refresh(client), clock())
        proofs = await client.message_proofs(msg_id)
        envelope = None
        if await asyncio.to_thread(settings.inbox_path.exists):
            async with await Inbox.open(settings.inbox_path) as inbox:
                received = await inbox.received.get(msg_id)
            envelope = None if received is None else received.token
        if envelope is None:  # not received here: sent by us, and the relay has it
            envelope = (await client.timeline(msg_id)).envelope
        if envelope is None:
            raise RefusedError(f"the relay did not return the envelope of message {msg_id}")
        checked = await LogWatch(settings.log_head_path).check(client, directory)
        head_size = verify_log_head(proofs.head, directory).size
        consistency = []
        if checked.head.size != head_size:
            consistency = await client.log_consistency(head_size, checked.head.size)
        chain = await client.directory_chain()
    if not proofs.entries:
        raise RefusedError(f"message {msg_id} has no receipts in the relay's log")
    data = build_bundle(
        identity,
        envelope=envelope,
        receipts=[(e.index, e.receipt, e.path) for e in proofs.entries],
        head=proofs.head,
        newest_head=checked.head.token,
        consistency=consistency,
        versions=chain.versions,
        rotations=chain.rotations,
        now=clock(),
    )
    proven = await asyncio.to_thread(verify_bundle, data, [settings.root_public_key()])
    return data, proven
