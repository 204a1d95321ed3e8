"""Deterministic protocol test vectors: fixed keys, nonces, times and content.

Run ``python -m tests.vectors.generate`` to rewrite the JSON files beside this module;
``tests/keys/test_vectors.py`` regenerates them in memory and compares byte for byte, and
opens them with the production code. An implementation in another language can use
these files to check its envelope, receipt and directory code (docs/PROTOCOL.md).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from keys.directory import sign_directory
from keys.encoding import Rng, b64e
from keys.envelope import seal
from keys.evidence import build_bundle
from keys.identity import Identity
from keys.loghead import sign_log_head
from keys.merkle import Frontier, consistency_proof, inclusion_proof, leaf_hash
from keys.models import DirectoryEntry, EscalationChain, WorkingHours
from keys.receipts import sign_receipt

HERE = Path(__file__).parent
T0 = 1_800_000_000_000  # 2027-01-15T08:00:00Z


class SeededRng:
    """SHA-256 in counter mode over a label: the same label gives the same bytes."""

    def __init__(self, label: str) -> None:
        self.label = label.encode()
        self.counter = 0
        self.log: list[str] = []

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.label + self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        self.log.append(out[:n].hex())
        return out[:n]


def _rng(label: str) -> Rng:
    return SeededRng(label)


def _identity(aid: str, kind: str = "authority") -> Identity:
    return Identity.generate(aid, kind=kind, now=T0, rng=_rng(f"identity:{aid}"))  # type: ignore[arg-type]


def _keys_doc(ident: Identity) -> dict[str, Any]:
    return {
        "id": ident.id,
        "signing": [
            {
                "seed": k.seed.hex(),
                "public": b64e(k.public),
                "kid": k.kid,
                "fingerprint": k.fingerprint,
            }
            for k in ident.signing_keys
        ],
        "encryption": [
            {"secret": k.secret.hex(), "public": b64e(k.public), "kid": k.kid}
            for k in ident.encryption_keys
        ],
    }


def build() -> dict[str, str]:
    """Return ``{file name: file content}`` for every vector file."""
    root = _identity("root", "root")
    relay = _identity("relay-eu", "relay")
    it = _identity("it-tpc")
    fr = _identity("fr-oclcc")
    desk = _identity("fr-desk")

    def entry(ident: Identity, role: str, name: str, country: str, **kw: Any) -> DirectoryEntry:
        pub = ident.public_keys()
        return DirectoryEntry.model_validate(
            {
                "id": ident.id,
                "name": name,
                "country": country,
                "role": role,
                "signing_keys": pub.signing_keys,
                "encryption_keys": pub.encryption_keys,
                **kw,
            }
        )

    entries = [
        entry(
            relay,
            "relay",
            "EU relay",
            "BE",
            tls_spki_sha256=[b64e(hashlib.sha256(b"vector relay SPKI").digest())],
        ),
        entry(it, "national_body", "Carabinieri TPC", "IT"),
        entry(
            fr,
            "national_body",
            "OCBC",
            "FR",
            escalation=EscalationChain(duty_desk="fr-desk"),
            hours=WorkingHours(tz="Europe/Paris", days=[1, 2, 3, 4, 5], start="08:00", end="18:00"),
        ),
        entry(desk, "duty_desk", "OCBC duty desk", "FR"),
    ]
    d1 = sign_directory(root, network="vector-net", authorities=entries, previous=None, now=T0)
    d2 = sign_directory(
        root, network="vector-net", authorities=entries, previous=d1, now=T0 + 60_000
    )

    env_rng = SeededRng("envelope")
    sealed = seal(
        it,
        d2,
        to=["fr-oclcc"],
        fallback=["fr-desk"],
        content={"kind": "free_text", "text": "Lot 112 closes at 18:00 CET."},
        now=T0 + 120_000,
        priority="urgent",
        ttl_ms=86_400_000,
        ack_by=T0 + 120_000 + 1_800_000,
        handling=["H2"],
        rng=env_rng,
    )
    head_b64, payload_b64, sig_b64 = sealed.token.split(".")
    receipt = sign_receipt(
        fr,
        msg_id=sealed.id,
        envelope_hash=sealed.hash,
        status="acknowledged",
        now=T0 + 300_000,
        person="Lt. Dupont",
    )

    # The relay's log over three receipts of that envelope (docs/PROTOCOL.md §6.4).
    accepted = sign_receipt(
        relay, msg_id=sealed.id, envelope_hash=sealed.hash, status="accepted", now=T0 + 120_001
    )
    delivered = sign_receipt(
        fr, msg_id=sealed.id, envelope_hash=sealed.hash, status="delivered", now=T0 + 200_000
    )
    leaves = [accepted, delivered, receipt]
    log = Frontier()
    nodes: dict[tuple[int, int], bytes] = {}
    for token in leaves:
        for level, index, h in log.append(leaf_hash(token.encode())):
            nodes[(level, index)] = h

    def perfect(level: int, index: int) -> bytes:
        return nodes[(level, index)]

    root2 = Frontier.load(2, perfect).root()
    head2 = sign_log_head(relay, size=2, root=root2, now=T0 + 250_000)
    head3 = sign_log_head(relay, size=3, root=log.root(), now=T0 + 400_000)

    def dump(obj: Any) -> str:
        return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"

    # The order of rng draws in seal(): message id (10 bytes), content key (32), then for
    # each recipient an ephemeral seed (32), then the AEAD nonce (24).
    draws = env_rng.log
    return {
        "keys.json": dump(
            {"t0": T0, "identities": [_keys_doc(i) for i in (root, relay, it, fr, desk)]}
        ),
        "directory.json": dump(
            {
                "root_public_key": b64e(root.signing_key().public),
                "versions": [
                    {"version": d.version, "jws": d.token, "hash": d.hash, "prev": d.document.prev}
                    for d in (d1, d2)
                ],
            }
        ),
        "envelope.json": dump(
            {
                "directory_version": 2,
                "open_at": T0 + 120_000,
                "recipient": "fr-oclcc",
                "fallback": "fr-desk",
                "uuid7_random": draws[0],
                "content_key": draws[1],
                "ephemeral_seeds": draws[2:4],
                "aead_nonce": draws[4],
                "protected_header_json": json.loads(_b64d(head_b64)),
                "plaintext": _plaintext(sealed.token, bytes.fromhex(draws[1])),
                "jws": sealed.token,
                "envelope_hash": sealed.hash,
                "signature": sig_b64,
                "payload_bytes": len(_b64d(payload_b64)),
            }
        ),
        "receipt.json": dump(
            {"jws": receipt, "payload_json": json.loads(_b64d(receipt.split(".")[1]))}
        ),
        "evidence.json": build_bundle(
            it,
            envelope=sealed.token,
            receipts=[
                (i, t, [p.hex() for p in inclusion_proof(i, 3, perfect)])
                for i, t in enumerate(leaves)
            ],
            head=head3,
            newest_head=head3,
            consistency=[],
            versions=[d1.token, d2.token],
            now=T0 + 500_000,
        ).decode(),
        "log.json": dump(
            {
                "leaves": leaves,
                "leaf_hashes": [leaf_hash(t.encode()).hex() for t in leaves],
                "heads": [
                    {"jws": h, "payload_json": json.loads(_b64d(h.split(".")[1]))}
                    for h in (head2, head3)
                ],
                "inclusion": [
                    {
                        "index": i,
                        "size": 3,
                        "path": [p.hex() for p in inclusion_proof(i, 3, perfect)],
                    }
                    for i in range(3)
                ],
                "consistency": {
                    "first": 2,
                    "second": 3,
                    "proof": [p.hex() for p in consistency_proof(2, 3, perfect)],
                },
            }
        ),
    }


def _b64d(text: str) -> bytes:
    from keys.encoding import b64d

    return b64d(text)


def _plaintext(token: str, content_key: bytes) -> str:
    """Decrypt with raw libsodium, exactly as docs/PROTOCOL.md tells a client to."""
    import nacl.bindings

    head_b64, payload_b64, _ = token.split(".")
    payload = _b64d(payload_b64)
    plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        payload[24:], head_b64.encode("ascii"), payload[:24], content_key
    )
    return plain.decode("utf-8")


def main() -> None:
    for name, text in build().items():
        (HERE / name).write_text(text, encoding="utf-8")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
