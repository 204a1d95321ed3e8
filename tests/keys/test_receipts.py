"""Receipts: signed, bound to one envelope, and only by a signer entitled to the status."""

from __future__ import annotations

import json

import pytest

from keys import errors
from keys.encoding import b64d, b64e, dumps
from keys.envelope import SealedEnvelope, seal
from keys.receipts import RootCache, receipt_body, sign_receipt, sign_receipts, verify_receipt
from tests.netfixture import NOW, Network


@pytest.fixture
def sealed(net: Network) -> SealedEnvelope:
    return seal(
        net["it-tpc"],
        net.directory,
        to=["fr-oclcc"],
        fallback=["fr-desk"],
        content={"kind": "free_text", "text": "x"},
        now=NOW,
    )


@pytest.mark.parametrize(
    ("signer", "status"),
    [
        ("relay-eu", "accepted"),
        ("fr-oclcc", "delivered"),
        ("fr-oclcc", "acknowledged"),
        ("fr-oclcc", "rejected"),
        ("relay-eu", "rejected"),
        ("relay-eu", "expired"),
        ("relay-eu", "escalated"),
        ("fr-desk", "acknowledged"),
    ],
)
def test_each_status_verifies_offline(
    net: Network, sealed: SealedEnvelope, signer: str, status: str
) -> None:
    ident = net.relay if signer == "relay-eu" else net[signer]
    token = sign_receipt(
        ident,
        msg_id=sealed.id,
        envelope_hash=sealed.hash,
        status=status,  # type: ignore[arg-type]
        now=NOW + 5,
        reason="because" if status == "rejected" else None,
        person="Lt. Dupont" if status == "acknowledged" else None,
        step=2 if status == "escalated" else None,
    )
    receipt = verify_receipt(
        token, net.directory, header=sealed.header, envelope_hash=sealed.hash, now=NOW + 6
    )
    assert receipt.status == status
    assert receipt.body.msg == sealed.id and receipt.body.env == sealed.hash
    assert receipt.body.by == signer and receipt.signer.id == signer
    assert receipt.body.at == NOW + 5


@pytest.mark.parametrize("status", ["accepted", "expired", "escalated"])
def test_relay_statuses_signed_by_an_authority_are_refused(
    net: Network, sealed: SealedEnvelope, status: str
) -> None:
    token = sign_receipt(
        net["fr-oclcc"], msg_id=sealed.id, envelope_hash=sealed.hash, status=status, now=NOW
    )  # type: ignore[arg-type]
    with pytest.raises(errors.ReceiptError, match="must be signed by a relay"):
        verify_receipt(token, net.directory, header=sealed.header)


@pytest.mark.parametrize("status", ["delivered", "acknowledged"])
def test_recipient_statuses_signed_by_the_relay_are_refused(
    net: Network, sealed: SealedEnvelope, status: str
) -> None:
    token = sign_receipt(
        net.relay, msg_id=sealed.id, envelope_hash=sealed.hash, status=status, now=NOW
    )  # type: ignore[arg-type]
    with pytest.raises(errors.ReceiptError, match="recipient"):
        verify_receipt(token, net.directory, header=sealed.header)


def test_delivered_by_a_non_recipient_is_refused(net: Network, sealed: SealedEnvelope) -> None:
    token = sign_receipt(
        net["de-bka"], msg_id=sealed.id, envelope_hash=sealed.hash, status="delivered", now=NOW
    )
    with pytest.raises(errors.ReceiptError, match="not a recipient"):
        verify_receipt(token, net.directory, header=sealed.header)


def test_receipt_for_another_message_or_envelope_is_refused(
    net: Network, sealed: SealedEnvelope
) -> None:
    other = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content={"k": 1}, now=NOW)
    token = sign_receipt(
        net["fr-oclcc"], msg_id=other.id, envelope_hash=other.hash, status="delivered", now=NOW
    )
    with pytest.raises(errors.ReceiptError, match="about message"):
        verify_receipt(token, net.directory, header=sealed.header)
    same_id = sign_receipt(
        net["fr-oclcc"], msg_id=sealed.id, envelope_hash=other.hash, status="delivered", now=NOW
    )
    with pytest.raises(errors.ReceiptError, match="different envelope"):
        verify_receipt(same_id, net.directory, header=sealed.header, envelope_hash=sealed.hash)


def test_tampered_receipt_is_refused(net: Network, sealed: SealedEnvelope) -> None:
    token = sign_receipt(
        net["fr-oclcc"],
        msg_id=sealed.id,
        envelope_hash=sealed.hash,
        status="rejected",
        now=NOW,
        reason="no",
    )
    head, payload, sig = token.split(".")
    body = json.loads(b64d(payload))
    body["status"] = "acknowledged"
    with pytest.raises(errors.TamperedError):
        verify_receipt(f"{head}.{b64e(dumps(body))}.{sig}", net.directory)


def test_receipt_claiming_another_signer_is_refused(net: Network, sealed: SealedEnvelope) -> None:
    """'by' must name the authority whose key signed it."""
    body = {
        "v": 2,
        "msg": sealed.id,
        "env": sealed.hash,
        "status": "delivered",
        "at": NOW,
        "by": "fr-oclcc",
    }
    (token,) = sign_receipts(net["de-bka"], [body], now=NOW)
    with pytest.raises(errors.TamperedError, match="signed by de-bka"):
        verify_receipt(token, net.directory)


def test_a_batch_signs_once_and_each_receipt_verifies_alone(
    net: Network, sealed: SealedEnvelope
) -> None:
    fr = net["fr-oclcc"]
    bodies = [
        receipt_body(
            fr, msg_id=sealed.id, envelope_hash=sealed.hash, status="delivered", now=NOW + i
        )
        for i in range(7)
    ]
    tokens = sign_receipts(fr, bodies, now=NOW)
    cache = RootCache()
    for i, token in enumerate(tokens):
        r = verify_receipt(
            token, net.directory, header=sealed.header, envelope_hash=sealed.hash, cache=cache
        )
        assert r.body.at == NOW + i
    assert len(cache._seen) == 1  # one root signature checked for the whole batch
    head, payload, sig = tokens[3].split(".")
    part = bytearray(b64d(sig))
    # A changed path, index, root signature or statement is refused.
    for at in (0, 3, 8, 8 + 31, len(part) - 1):
        bad = bytearray(part)
        bad[at] ^= 1
        with pytest.raises(errors.TamperedError):
            verify_receipt(f"{head}.{payload}.{b64e(bytes(bad))}", net.directory, cache=RootCache())
    other = tokens[4].split(".")[1]
    with pytest.raises(errors.TamperedError):
        verify_receipt(f"{head}.{other}.{sig}", net.directory, cache=RootCache())


def test_a_version_1_receipt_is_refused_naming_the_version(
    net: Network, sealed: SealedEnvelope
) -> None:
    key = net["fr-oclcc"].signing_key()
    body = {"v": 1, "msg": sealed.id, "env": sealed.hash, "status": "delivered", "at": NOW}
    from keys.jws import sign_compact

    token = sign_compact(
        dumps({"alg": "Ed25519", "typ": "cpar-receipt+jws", "kid": key.kid}),
        dumps({**body, "by": "fr-oclcc"}),
        key.secret,
    )
    with pytest.raises(errors.EncodingError, match="protocol version 1"):
        verify_receipt(token, net.directory)


def test_receipt_by_an_unknown_key_is_refused(net: Network, sealed: SealedEnvelope) -> None:
    from keys.identity import Identity

    stranger = Identity.generate("fr-oclcc", now=NOW - 10)
    token = sign_receipt(
        stranger, msg_id=sealed.id, envelope_hash=sealed.hash, status="delivered", now=NOW
    )
    with pytest.raises(errors.UnknownSigningKeyError):
        verify_receipt(token, net.directory)


def test_receipt_from_the_future_is_refused(net: Network, sealed: SealedEnvelope) -> None:
    token = sign_receipt(
        net["fr-oclcc"],
        msg_id=sealed.id,
        envelope_hash=sealed.hash,
        status="delivered",
        now=NOW + 3_600_000,
    )
    with pytest.raises(errors.ReceiptError, match="future"):
        verify_receipt(token, net.directory, now=NOW)


def test_a_cached_batch_root_does_not_excuse_other_signature_bytes(
    net: Network, sealed: SealedEnvelope
) -> None:
    """The cache is keyed by the signature too: once a genuine receipt of a batch has been
    verified, a sibling whose signature bytes are forged is still refused."""
    fr = net["fr-oclcc"]
    bodies = [
        receipt_body(fr, msg_id=sealed.id, envelope_hash=sealed.hash, status=st, now=NOW)
        for st in ("delivered", "acknowledged")
    ]
    delivered, acked = sign_receipts(fr, bodies, now=NOW)
    cache = RootCache()
    verify_receipt(delivered, net.directory, cache=cache)
    head, payload, sig = acked.split(".")
    part = b64d(sig)
    forged = f"{head}.{payload}.{b64e(part[:-64] + bytes(64))}"
    with pytest.raises(errors.TamperedError):
        verify_receipt(forged, net.directory, cache=cache)
    verify_receipt(acked, net.directory, cache=cache)  # the genuine one still verifies
