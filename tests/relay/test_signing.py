"""The relay signs the statements asked for in one turn of the loop as one batch."""

from __future__ import annotations

import asyncio

from keys.envelope import seal
from keys.receipts import RootCache, receipt_body, verify_receipt
from relay.core.signing import BatchSigner
from tests.netfixture import NOW, Network


async def test_concurrent_requests_share_one_signature(net: Network) -> None:
    signer = BatchSigner(net.relay)
    sealed = [
        seal(
            net["it-tpc"],
            net.directory,
            to=["fr-oclcc"],
            content={"kind": "free_text", "text": str(i)},
            now=NOW,
        )
        for i in range(5)
    ]

    def body(i: int) -> dict[str, object]:
        s = sealed[i]
        return receipt_body(
            net.relay, msg_id=s.id, envelope_hash=s.hash, status="accepted", now=NOW
        )

    first, second, third = await asyncio.gather(
        signer.sign([body(0), body(1)], now=NOW),
        signer.sign([body(2)], now=NOW),
        signer.sign([body(3), body(4)], now=NOW),
    )
    assert signer.signatures == 1
    cache = RootCache()
    for i, token in enumerate([*first, *second, *third]):
        r = verify_receipt(
            token, net.directory, header=sealed[i].header, envelope_hash=sealed[i].hash, cache=cache
        )
        assert r.status == "accepted" and r.body.msg == sealed[i].id
    assert len(cache._seen) == 1  # one root for all five
    assert await signer.sign([], now=NOW) == []
    (alone,) = await signer.sign([body(0)], now=NOW)  # later: a batch of its own
    assert signer.signatures == 2 and alone != first[0]
