"""The relay's log over the API: signed heads, inclusion proofs of a message's receipts,
consistency proofs between sizes, all checked the way a client checks them."""

from __future__ import annotations

import pytest

from clients.errors import RelayProblem
from keys.envelope import SealedEnvelope, seal
from keys.errors import LogError, LogForkError
from keys.loghead import check_extends, check_included, sign_log_head, verify_log_head
from keys.receipts import sign_receipt
from tests.relayfixture import RelayEnv

NOTICE = {"kind": "free_text", "text": "log test"}


async def _send(relay: RelayEnv) -> SealedEnvelope:
    net = relay.net
    sealed = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=relay.clock())
    await relay.client("it-tpc").send(sealed.token)
    return sealed


async def _receipt(relay: RelayEnv, sealed: SealedEnvelope, status: str) -> None:
    token = sign_receipt(
        relay.net["fr-oclcc"],
        msg_id=sealed.id,
        envelope_hash=sealed.hash,
        status=status,  # type: ignore[arg-type]
        now=relay.clock(),
    )
    assert await relay.client("fr-oclcc").send_receipt(token)


async def test_every_receipt_of_a_message_is_proven_in_the_signed_log(relay: RelayEnv) -> None:
    directory = relay.net.directory
    sender = relay.client("it-tpc")
    first = verify_log_head(await sender.log_head(), directory)
    assert first.size == 0 and first.body.log == relay.net.relay.id
    sealed = await _send(relay)
    await _receipt(relay, sealed, "delivered")
    await _receipt(relay, sealed, "acknowledged")
    other = await _send(relay)

    proofs = await sender.message_proofs(sealed.id)
    head = verify_log_head(proofs.head, directory)
    assert head.size == 4
    timeline = await sender.timeline(sealed.id)
    assert [e.receipt for e in proofs.entries] == timeline.receipts
    assert [e.index for e in proofs.entries] == [0, 1, 2]
    for e in proofs.entries:
        check_included(head, e.index, e.receipt, e.path)
    # The recipient may prove them too; a third authority is told nothing.
    assert (await relay.client("fr-oclcc").message_proofs(sealed.id)).entries == proofs.entries
    with pytest.raises(RelayProblem) as err:
        await relay.client("de-bka").message_proofs(sealed.id)
    assert (err.value.status, err.value.code) == (404, "unknown_message")
    # A changed receipt, path or index does not verify.
    e = proofs.entries[1]
    with pytest.raises(LogError):
        check_included(head, e.index, proofs.entries[2].receipt, e.path)
    with pytest.raises(LogError):
        check_included(head, e.index + 1, e.receipt, e.path)
    with pytest.raises(LogError):
        check_included(head, e.index, e.receipt, [e.path[0][::-1], *e.path[1:]])

    # Proven against an older size, too (the head the sender held then).
    older = await sender.message_proofs(other.id, size=4)
    assert older.entries[0].index == 3
    check_included(
        verify_log_head(older.head, directory), 3, older.entries[0].receipt, older.entries[0].path
    )
    with pytest.raises(RelayProblem) as err:
        await sender.message_proofs(other.id, size=99)
    assert (err.value.status, err.value.code) == (400, "bad_log_size")


async def test_a_newer_head_extends_the_older_one_and_a_rewrite_is_caught(
    relay: RelayEnv,
) -> None:
    directory = relay.net.directory
    client = relay.client("fr-oclcc")
    await _send(relay)
    old = verify_log_head(await client.log_head(), directory)
    for _ in range(3):
        await _receipt(relay, await _send(relay), "delivered")
    new = verify_log_head(await client.log_head(), directory)
    assert new.size == old.size + 6
    check_extends(old, new, await client.log_consistency(old.size, new.size))
    check_extends(new, old, await client.log_consistency(old.size, new.size))  # shown older
    # A relay that rewrote leaf 0 signs a head over another history: no proof joins them.
    forged = verify_log_head(
        sign_log_head(relay.net.relay, size=new.size, root=bytes(32), now=relay.clock()),
        directory,
    )
    with pytest.raises(LogForkError, match="rewritten or forked"):
        check_extends(old, forged, await client.log_consistency(old.size, new.size))
    with pytest.raises(RelayProblem) as err:
        await client.log_consistency(new.size, old.size)
    assert (err.value.status, err.value.code) == (400, "bad_log_size")


async def test_a_head_signed_by_an_authority_is_refused(relay: RelayEnv) -> None:
    fake = sign_log_head(relay.net["it-tpc"], size=1, root=bytes(32), now=relay.clock())
    with pytest.raises(LogError, match="must be signed by the relay"):
        verify_log_head(fake, relay.net.directory)
