"""The published test vectors are what the code produces, and open with raw libsodium."""

from __future__ import annotations

import hashlib
import json

import nacl.bindings

from keys.directory import DirectoryPin
from keys.encoding import b64d
from keys.envelope import open_envelope
from keys.evidence import verify_bundle
from keys.identity import EncryptionKey, Identity, SigningKey
from keys.loghead import check_extends, check_included, verify_log_head
from keys.receipts import verify_receipt
from tests.vectors import generate


def test_vectors_regenerate_byte_for_byte() -> None:
    for name, text in generate.build().items():
        on_disk = (generate.HERE / name).read_text(encoding="utf-8")
        assert on_disk == text, (
            f"tests/vectors/{name} is stale: run python -m tests.vectors.generate"
        )


def _load(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((generate.HERE / name).read_text())  # type: ignore[no-any-return]


def test_vectors_verify_with_the_production_code() -> None:
    keys, dirs, env, rcpt = (
        _load(n) for n in ("keys.json", "directory.json", "envelope.json", "receipt.json")
    )
    pin = DirectoryPin([b64d(dirs["root_public_key"])])
    directory = pin.accept_history([v["jws"] for v in dirs["versions"]])
    assert directory.version == 2
    fr = next(i for i in keys["identities"] if i["id"] == "fr-oclcc")
    ident = Identity(
        id="fr-oclcc",
        kind="authority",
        signing_keys=(SigningKey(seed=bytes.fromhex(fr["signing"][0]["seed"]), nbf=0, exp=2**52),),
        encryption_keys=(
            EncryptionKey(
                secret=bytes.fromhex(fr["encryption"][0]["secret"]),
                nbf=0,
                exp=2**52,
                signer="",
                sig=b"",
            ),
        ),
    )
    opened = open_envelope(env["jws"], directory, ident, now=env["open_at"])
    assert opened.hash == env["envelope_hash"]
    assert opened.content == json.loads(env["plaintext"])["content"]
    receipt = verify_receipt(
        rcpt["jws"], directory, header=opened.header, envelope_hash=opened.hash
    )
    assert receipt.body.person == "Lt. Dupont"


def test_envelope_vector_decrypts_with_raw_libsodium_only() -> None:
    """What a client in another language does, step by step, per docs/PROTOCOL.md."""
    keys, env = _load("keys.json"), _load("envelope.json")
    fr = next(i for i in keys["identities"] if i["id"] == "fr-oclcc")
    sk = bytes.fromhex(fr["encryption"][0]["secret"])
    pk = b64d(fr["encryption"][0]["public"])
    assert nacl.bindings.crypto_scalarmult_base(sk) == pk
    head_b64, payload_b64, sig_b64 = env["jws"].split(".")
    header = json.loads(b64d(head_b64))
    it = next(i for i in keys["identities"] if i["id"] == "it-tpc")
    signer_pk = b64d(it["signing"][0]["public"])
    nacl.bindings.crypto_sign_open(b64d(sig_b64) + f"{head_b64}.{payload_b64}".encode(), signer_pk)
    wrapped = next(r["wk"] for r in header["rcpt"] if r["aid"] == "fr-oclcc")
    content_key = nacl.bindings.crypto_box_seal_open(b64d(wrapped), pk, sk)
    assert content_key.hex() == env["content_key"]
    payload = b64d(payload_b64)
    assert payload[:24].hex() == env["aead_nonce"]
    plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        payload[24:], head_b64.encode("ascii"), payload[:24], content_key
    )
    assert plain.decode() == env["plaintext"]
    import hashlib

    assert hashlib.sha256(env["jws"].encode("ascii")).hexdigest() == env["envelope_hash"]


def test_log_vector_verifies_with_the_production_code() -> None:
    dirs, log = _load("directory.json"), _load("log.json")
    directory = DirectoryPin([b64d(dirs["root_public_key"])]).accept_history(
        [v["jws"] for v in dirs["versions"]]
    )
    old, new = (verify_log_head(h["jws"], directory) for h in log["heads"])
    assert (old.size, new.size) == (2, 3)
    for leaf, expected in zip(log["leaves"], log["leaf_hashes"], strict=True):
        assert hashlib.sha256(b"\x00" + leaf.encode()).hexdigest() == expected
    for case in log["inclusion"]:
        check_included(new, case["index"], log["leaves"][case["index"]], case["path"])
    check_extends(old, new, log["consistency"]["proof"])


def test_evidence_vector_verifies_with_the_root_key_alone() -> None:
    dirs = _load("directory.json")
    data = (generate.HERE / "evidence.json").read_bytes()
    proven = verify_bundle(data, [b64d(dirs["root_public_key"])])
    assert [s[0] for s in proven.statements()] == ["sent", "accepted", "delivered", "acknowledged"]
    assert proven.exporter == "it-tpc" and proven.head.size == 3


def test_receipt_vector_verifies_as_the_protocol_document_says() -> None:
    """PROTOCOL.md §6, followed with raw libsodium: a batch of one."""
    keys, rcpt = _load("keys.json"), _load("receipt.json")
    fr = next(i for i in keys["identities"] if i["id"] == "fr-oclcc")
    head, payload, sig = rcpt["jws"].split(".")
    assert json.loads(b64d(head)) == {
        "alg": "cpar-batch-Ed25519",
        "typ": "cpar-receipt+jws",
        "kid": fr["signing"][0]["kid"],
    }
    part = b64d(sig)
    assert len(part) == 8 + 64  # index 0, size 1, no path, the signature
    index, size = int.from_bytes(part[:4], "big"), int.from_bytes(part[4:8], "big")
    assert (index, size) == (0, 1)
    root = hashlib.sha256(b"\x00" + f"{head}.{payload}".encode()).digest()
    message = b"cpar-receipt-batch-v2\x00" + size.to_bytes(8, "big") + root
    nacl.bindings.crypto_sign_open(part[8:] + message, b64d(fr["signing"][0]["public"]))


def test_an_evidence_bundle_with_a_member_left_out_or_nested_deep_is_refused() -> None:
    import pytest

    from keys.evidence import EvidenceError

    root = b64d(_load("directory.json")["root_public_key"])
    data = (generate.HERE / "evidence.json").read_bytes()
    assert b'      "rotations": [],\n' in data
    for changed in (
        data.replace(b'      "rotations": [],\n', b"", 1),  # a default left out
        b"[" * 100_000 + b"]" * 100_000,
    ):
        with pytest.raises(EvidenceError):
            verify_bundle(changed, [root])
