"""Sealing and opening envelopes: round trips, and every way an envelope is refused."""

from __future__ import annotations

import json
from collections.abc import Callable

import nacl.bindings
import nacl.exceptions
import pytest

from keys import errors
from keys.encoding import b64d, b64e, dumps
from keys.envelope import envelope_hash, open_envelope, seal, seal_box, verify_envelope
from keys.identity import DAY_MS, Identity
from keys.jws import sign_compact
from keys.models import EnvelopeHeader
from tests.netfixture import NOW, Network, make_network

NOTICE = {"kind": "identification_notice", "object": "Etruscan bronze mirror, 3rd c. BC"}


def _split(token: str) -> tuple[dict[str, object], str, str]:
    head, payload, sig = token.split(".")
    return json.loads(b64d(head)), payload, sig


def _rejoin(header: dict[str, object], payload: str, sig: str) -> str:
    return f"{b64e(dumps(header))}.{payload}.{sig}"


@pytest.mark.parametrize("n_recipients", [1, 2, 10])
def test_round_trip_every_recipient_reads_the_same_notice(n_recipients: int) -> None:
    names = ["it-tpc", *(f"auth-{i:02d}" for i in range(n_recipients))]
    net = make_network(names)
    to = names[1:]
    sealed = seal(net["it-tpc"], net.directory, to=to, content=NOTICE, now=NOW, priority="urgent")
    assert sealed.header.to == to
    assert len(sealed.header.rcpt) == n_recipients
    for aid in to:
        opened = open_envelope(sealed.token, net.directory, net[aid], now=NOW + 1000)
        assert opened.content == NOTICE
        assert opened.role == "to"
        assert opened.header.id == sealed.id
        assert opened.sender.id == "it-tpc"
        assert opened.hash == sealed.hash == envelope_hash(sealed.token)


def test_header_carries_routing_metadata_only(net: Network) -> None:
    sealed = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW)
    header_bytes = b64d(sealed.token.split(".")[0])
    assert b"Etruscan" not in header_bytes and b"identification_notice" not in header_bytes
    assert b"Etruscan" not in sealed.token.encode()
    assert set(json.loads(header_bytes)) <= set(EnvelopeHeader.model_fields) | {"from"}


def test_fallback_opens_only_with_its_own_wrapped_key(net: Network) -> None:
    sealed = seal(
        net["it-tpc"], net.directory, to=["fr-oclcc"], fallback=["fr-desk"], content=NOTICE, now=NOW
    )
    opened = open_envelope(sealed.token, net.directory, net["fr-desk"], now=NOW)
    assert opened.role == "fallback"
    assert opened.content == NOTICE
    assert sealed.header.fallbacks == ["fr-desk"]
    # The primary recipient's wrapped key does not open with the fallback's secret key.
    primary = next(r for r in sealed.header.rcpt if r.role == "to")
    desk_key = net["fr-desk"].encryption_keys[0]
    with pytest.raises(nacl.exceptions.CryptoError):
        nacl.bindings.crypto_box_seal_open(b64d(primary.wk), desk_key.public, desk_key.secret)
    # Without a wrapped key made for it, the desk cannot open the message at all.
    plain = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW)
    with pytest.raises(errors.WrongRecipientError):
        open_envelope(plain.token, net.directory, net["fr-desk"], now=NOW)


def test_deterministic_sealed_box_matches_libsodium(net: Network) -> None:
    key = net["fr-oclcc"].encryption_keys[0]
    boxed = seal_box(b"k" * 32, key.public, ephemeral_seed=b"\x01" * 32)
    assert nacl.bindings.crypto_box_seal_open(boxed, key.public, key.secret) == b"k" * 32
    assert boxed == seal_box(b"k" * 32, key.public, ephemeral_seed=b"\x01" * 32)


# --- refusals -------------------------------------------------------------------------


@pytest.fixture
def sealed_token(net: Network) -> str:
    return seal(
        net["it-tpc"], net.directory, to=["fr-oclcc"], fallback=["fr-desk"], content=NOTICE, now=NOW
    ).token


def _tamper_header(token: str, change: Callable[[dict[str, object]], None]) -> str:
    header, payload, sig = _split(token)
    change(header)
    return _rejoin(header, payload, sig)


@pytest.mark.parametrize(
    "change",
    [
        lambda h: h.update(prio="urgent"),
        lambda h: h.update(expires=int(h["expires"]) + DAY_MS),  # type: ignore[call-overload]
        lambda h: h.update(to=["de-bka"]) or h["rcpt"][0].update(aid="de-bka"),  # type: ignore[index]
    ],
    ids=["priority", "expiry", "recipient"],
)
def test_tampered_header_is_refused(
    net: Network, sealed_token: str, change: Callable[[dict[str, object]], None]
) -> None:
    with pytest.raises(errors.TamperedError):
        open_envelope(_tamper_header(sealed_token, change), net.directory, net["fr-oclcc"], now=NOW)


def test_tampered_wrapped_key_is_refused(net: Network, sealed_token: str) -> None:
    def flip(h: dict[str, object]) -> None:
        rcpt = h["rcpt"]
        assert isinstance(rcpt, list)
        wk = bytearray(b64d(rcpt[0]["wk"]))
        wk[40] ^= 0x01
        rcpt[0]["wk"] = b64e(bytes(wk))

    with pytest.raises(errors.TamperedError):
        open_envelope(_tamper_header(sealed_token, flip), net.directory, net["fr-oclcc"], now=NOW)


def test_tampered_ciphertext_is_refused(net: Network, sealed_token: str) -> None:
    head, payload, sig = sealed_token.split(".")
    raw = bytearray(b64d(payload))
    raw[-5] ^= 0x80
    with pytest.raises(errors.TamperedError):
        open_envelope(f"{head}.{b64e(bytes(raw))}.{sig}", net.directory, net["fr-oclcc"], now=NOW)


def test_wrong_recipient_is_refused(net: Network, sealed_token: str) -> None:
    with pytest.raises(errors.WrongRecipientError, match="no key for de-bka"):
        open_envelope(sealed_token, net.directory, net["de-bka"], now=NOW)


def test_unknown_sender_is_refused(net: Network) -> None:
    stranger = make_network(["xx-stranger", "fr-oclcc"])
    # The stranger seals to a copy of fr-oclcc's keys in its own directory.
    stranger.ids["fr-oclcc"] = net["fr-oclcc"]
    stranger.republish()
    token = seal(
        stranger["xx-stranger"], stranger.directory, to=["fr-oclcc"], content=NOTICE, now=NOW
    ).token
    with pytest.raises(errors.UnknownSenderError, match="xx-stranger"):
        open_envelope(token, net.directory, net["fr-oclcc"], now=NOW)


def test_signature_by_a_key_not_in_the_directory_is_refused(net: Network) -> None:
    impostor = Identity.generate("it-tpc", now=NOW - 1000)  # same id, other keys
    other = make_network(["fr-oclcc"])
    other.ids["it-tpc"] = impostor
    other.ids["fr-oclcc"] = net["fr-oclcc"]
    other.republish()
    token = seal(impostor, other.directory, to=["fr-oclcc"], content=NOTICE, now=NOW).token
    with pytest.raises(errors.UnknownSigningKeyError, match="does not list"):
        open_envelope(token, net.directory, net["fr-oclcc"], now=NOW)


def test_revoked_sender_key_is_refused(net: Network) -> None:
    old = net["it-tpc"]
    token = seal(old, net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW).token
    old_kid = old.signing_key().kid
    rotated = old.rotate_signing(now=NOW + 1).revoke(old_kid, now=NOW + 2)
    net.republish(now=NOW + 3, replace=[rotated])
    with pytest.raises(errors.SenderKeyRevokedError, match="revoked"):
        open_envelope(token, net.directory, net["fr-oclcc"], now=NOW + 4)
    # The new key works.
    fresh = seal(rotated, net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW + 5).token
    assert open_envelope(fresh, net.directory, net["fr-oclcc"], now=NOW + 6).content == NOTICE


def test_expired_sender_key_is_refused(net: Network) -> None:
    short = Identity.generate("it-tpc", now=NOW - 1000, signing_validity_ms=DAY_MS)
    net.republish(replace=[short])
    key_exp = short.signing_key().exp
    token = seal(short, net.directory, to=["fr-oclcc"], content=NOTICE, now=key_exp - 10).token
    assert open_envelope(token, net.directory, net["fr-oclcc"], now=key_exp).content == NOTICE
    with pytest.raises(errors.SenderKeyExpiredError):
        open_envelope(token, net.directory, net["fr-oclcc"], now=key_exp + 1)


def test_expired_message_is_refused(net: Network) -> None:
    token = seal(
        net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW, ttl_ms=60_000
    ).token
    assert open_envelope(token, net.directory, net["fr-oclcc"], now=NOW + 59_999).content == NOTICE
    with pytest.raises(errors.MessageExpiredError):
        open_envelope(token, net.directory, net["fr-oclcc"], now=NOW + 60_000)


def test_message_from_the_future_is_refused(net: Network) -> None:
    token = seal(
        net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW + 3_600_000
    ).token
    with pytest.raises(errors.NotYetValidError):
        verify_envelope(token, net.directory, now=NOW)


def test_sender_binding_mismatch_is_refused(net: Network) -> None:
    """A co-recipient re-signs another authority's notice under its own name."""
    original = seal(
        net["it-tpc"], net.directory, to=["fr-oclcc", "de-bka"], content=NOTICE, now=NOW
    )
    # de-bka legitimately reads the notice, then forges a header claiming it sent it.
    stolen = open_envelope(original.token, net.directory, net["de-bka"], now=NOW)
    thief = net["de-bka"]
    fr_key = net.directory.get("fr-oclcc").current_encryption_key(NOW)  # type: ignore[union-attr]
    assert fr_key is not None
    content_key = b"\x07" * 32
    header = {
        "alg": "Ed25519",
        "typ": "cpar-envelope+jws",
        "kid": thief.signing_key().kid,
        "v": 1,
        "id": original.id,
        "from": "de-bka",
        "to": ["fr-oclcc"],
        "created": NOW,
        "expires": NOW + DAY_MS,
        "prio": "urgent",
        "rcpt": [
            {
                "aid": "fr-oclcc",
                "kid": fr_key.kid,
                "role": "to",
                "wk": b64e(seal_box(content_key, b64d(fr_key.pk))),
            }
        ],
    }
    plaintext = stolen.plaintext.model_dump_json(by_alias=True).encode()  # still says from it-tpc
    head_b64 = b64e(dumps(header))
    nonce = b"\x09" * 24
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, head_b64.encode(), nonce, content_key
    )
    forged = sign_compact(dumps(header), nonce + ct, thief.signing_key().secret)
    with pytest.raises(errors.SenderBindingError, match="'from'"):
        open_envelope(forged, net.directory, net["fr-oclcc"], now=NOW)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "x" * 10,
        "!!!.e30." + "A" * 86,  # each part not base64url, the others well-formed
        "e30.!!!." + "A" * 86,
        "e30.e30.!!!",
        "e30.e30." + "A" * 86,  # a header without the members an envelope needs
    ],
)
def test_malformed_envelopes_raise_encoding_errors(net: Network, token: str) -> None:
    with pytest.raises(errors.EncodingError) as err:
        open_envelope(token, net.directory, net["fr-oclcc"], now=NOW)
    assert err.value.code == "malformed"


def test_oversized_envelope_is_refused_before_parsing(net: Network) -> None:
    with pytest.raises(errors.EncodingError, match="larger than"):
        verify_envelope("a" * 5_000_000, net.directory, now=NOW)


def test_sealing_to_an_unknown_or_relay_recipient_is_refused(net: Network) -> None:
    with pytest.raises(errors.RecipientKeyError, match="not in the directory"):
        seal(net["it-tpc"], net.directory, to=["zz-nobody"], content=NOTICE, now=NOW)
    with pytest.raises(errors.RecipientKeyError, match="relay"):
        seal(net["it-tpc"], net.directory, to=["relay-eu"], content=NOTICE, now=NOW)


def test_sealing_bad_metadata_is_refused(net: Network) -> None:
    with pytest.raises(errors.EncodingError):
        seal(net["it-tpc"], net.directory, to=["it-tpc"], content=NOTICE, now=NOW)  # to self
    with pytest.raises(errors.EncodingError):
        seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW, ack_by=NOW - 1)
    with pytest.raises(errors.EncodingError):
        seal(
            net["it-tpc"],
            net.directory,
            to=["fr-oclcc"],
            fallback=["fr-oclcc"],
            content=NOTICE,
            now=NOW,
        )


def test_encryption_key_rotation_grace_period(net: Network) -> None:
    """Mail sealed to the old key still opens after rotation; new mail uses the new key."""
    before = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW).token
    rotated = net["fr-oclcc"].rotate_encryption(now=NOW + 10, grace_ms=DAY_MS)
    net.republish(now=NOW + 20, replace=[rotated])
    after = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW + 30)
    assert (
        after.header.rcpt[0].kid
        == rotated.encryption_keys[-1].kid
        != rotated.encryption_keys[0].kid
    )
    for token in (before, after.token):
        assert open_envelope(token, net.directory, rotated, now=NOW + 40).content == NOTICE
    # After the grace period the old key is no longer offered to senders.
    late = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=NOW + 2 * DAY_MS)
    assert late.header.rcpt[0].kid == rotated.encryption_keys[-1].kid


def test_keys_never_appear_in_reprs(net: Network) -> None:
    ident = net["it-tpc"]
    text = repr(ident) + repr(ident.signing_keys) + repr(ident.encryption_keys)
    for secret in (ident.signing_keys[0].seed, ident.encryption_keys[0].secret):
        assert secret.hex() not in text and b64e(secret) not in text
