"""The relay's HTTP API against a real relay on a socket: happy paths and refusals."""

from __future__ import annotations

from keys.envelope import seal
from keys.receipts import sign_receipt, verify_receipt
from tests.netfixture import NOW
from tests.relayfixture import RelayEnv

NOTICE = {"kind": "free_text", "text": "hello"}


async def test_submit_returns_a_durable_signed_accepted_receipt(relay: RelayEnv) -> None:
    net = relay.net
    sealed = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW)
    result = await relay.client("it-tpc").send(sealed.token)
    assert result.id == sealed.id and not result.duplicate
    receipt = verify_receipt(
        result.receipt, net.directory, header=sealed.header, envelope_hash=sealed.hash
    )
    assert receipt.status == "accepted" and receipt.signer.id == "relay-eu"
    again = await relay.client("it-tpc").send(sealed.token)
    assert again.duplicate and again.receipt == result.receipt


async def test_recipient_polls_acks_and_receipts_flow_back(relay: RelayEnv) -> None:
    net = relay.net
    sealed = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW)
    await relay.client("it-tpc").send(sealed.token)
    fr = relay.client("fr-oclcc")
    items = await fr.poll()
    assert [i.type for i in items] == ["envelope"] and items[0].envelope == sealed.token
    delivered = sign_receipt(
        net["fr-oclcc"], msg_id=sealed.id, envelope_hash=sealed.hash, status="delivered", now=NOW
    )
    assert await fr.send_receipt(delivered) is True  # new to the relay
    assert await fr.ack([items[0].seq]) == 1
    assert await fr.poll() == []
    timeline = await relay.client("it-tpc").timeline(sealed.id)
    assert timeline.state == "delivered"
    assert len(timeline.receipts) == 2
    sender_items = await relay.client("it-tpc").poll()
    assert sender_items[0].type == "receipt" and sender_items[0].receipt == delivered
