"""docs/PROTOCOL.md says what the code does: the notice tables (§4.9), the handling codes
(§4.10) and the canonical ``@signature-params`` line (§9.2) are checked against the code,
so an independent client written from the document interoperates."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import nacl.bindings
import pytest
from pydantic import BaseModel

from clients.kinds import (
    BLOCKS_ONWARD_SHARING,
    HANDLING_CODES,
    KINDS,
    Consultation,
    FreeText,
    IdentificationNotice,
    MlaRequest,
    Reference,
    Reply,
    StolenItem,
    StolenPropertyUpdate,
)
from keys.encoding import b64e, key_id
from keys.errors import BadRequestSignatureError
from keys.httpsig import (
    NonceCache,
    content_digest,
    sign_request,
    signature_base,
    signature_params,
    verify_request,
)
from keys.jws import ed25519_sign

PROTOCOL = (Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md").read_text(
    encoding="utf-8"
)
MODELS: dict[str, type[BaseModel]] = {
    "identification_notice": IdentificationNotice,
    "mla_request": MlaRequest,
    "consultation": Consultation,
    "stolen_property_update": StolenPropertyUpdate,
    "reply": Reply,
    "free_text": FreeText,
}
ROW = re.compile(r"^\| `([a-z_]+)` \| (.+?) \| (yes|no[^|]*) \|", re.MULTILINE)


def section(title: str) -> str:
    start = PROTOCOL.index(f"\n### {title}")
    end = PROTOCOL.index("\n### ", start + 1)
    return PROTOCOL[start:end]


def member_table(text: str, heading: str) -> list[tuple[str, bool]]:
    """(member, required) rows of the first table after ``heading``."""
    start = text.index(heading)
    table = text[text.index("\n|", start) :]
    table = table[: table.index("\n\n")]
    return [(name, req == "yes") for name, _type, req in ROW.findall(table)]


def model_members(model: type[BaseModel]) -> list[tuple[str, bool]]:
    return [
        (name, field.is_required() or name == "kind") for name, field in model.model_fields.items()
    ]


NOTICES = section("4.9 Notice content (`content`)")


def test_the_kinds_listed_are_the_kinds_there_are() -> None:
    listed = re.findall(
        r"^\| `([a-z_]+)` \| ([^|]+) \| `docs/schemas/\1\.schema\.json` \|", NOTICES, re.M
    )
    assert [(k, label.strip()) for k, label in listed] == list(KINDS.items())
    assert set(MODELS) == set(KINDS)


@pytest.mark.parametrize("kind", list(MODELS))
def test_each_kind_table_lists_the_model_members_and_which_are_required(kind: str) -> None:
    assert member_table(NOTICES, f"**`{kind}`**") == model_members(MODELS[kind])


@pytest.mark.parametrize(
    ("model", "sentence"),
    [
        (
            Reference,
            "`Reference`: `system` (ShortText, required), e.g. `INTERPOL Stolen Works of Art`, and\n`ref` (ShortText, required)",
        ),
        (
            StolenItem,
            "`StolenItem`: `id` (ShortText, required), `description` (Text, required),\n`reported_at` (Millis or null, optional)",
        ),
    ],
)
def test_nested_objects_are_described(model: type[BaseModel], sentence: str) -> None:
    assert sentence in NOTICES
    described = re.findall(r"`([a-z_]+)` \([^,]+, (required|optional)\)", sentence)
    assert [(n, r == "required") for n, r in described] == model_members(model)


def test_the_handling_code_table_matches_what_the_daemon_enforces() -> None:
    text = section("4.10 Handling codes (`handling`)")
    rows = re.findall(r"^\| `([a-z-]+)` \| [^|]+ \| (yes|no)[:|]", text, re.M)
    assert sorted(code for code, _ in rows) == sorted(HANDLING_CODES)
    assert {code for code, enforced in rows if enforced == "yes"} == BLOCKS_ONWARD_SHARING


# -- §9.2: the canonical @signature-params line -------------------------------------------

CREATED, EXPIRES, KID, NONCE = 1800000120, 1800000180, "4jsyzqvhjnokosv4", bytes(range(16))


def test_the_documented_signature_params_line_is_the_canonical_one() -> None:
    text = section("9.2 Signature base and signature")
    line = signature_params(created=CREATED, expires=EXPIRES, nonce=b64e(NONCE), keyid=KID)
    assert f"\nSignature-Input: sig1={line}\n" in text
    assert f'\n"@signature-params": {line}\n' in text


def test_only_a_signature_over_the_canonical_line_verifies() -> None:
    """The relay rebuilds the line: an equivalent spelling of the field is accepted, but a
    signature made over that spelling is not."""
    pk, sk = nacl.bindings.crypto_sign_seed_keypair(bytes(range(32)))
    kid = key_id(pk)
    url = "https://relay.example.org/v1/stream"
    headers = sign_request(
        method="GET", url=url, body=b"", kid=kid, secret_key=sk, now=CREATED, nonce=NONCE
    )
    canonical = headers["Signature-Input"].removeprefix("sig1=")
    spaced = canonical.replace(";", "; ").replace('" "', '"  "', 1)
    leading_zero = canonical.replace(f"created={CREATED}", f"created=0{CREATED}")

    def verify(sig_input: str, signed_line: str) -> None:
        base = signature_base(
            method="GET",
            authority="relay.example.org",
            path="/v1/stream",
            query="",
            digest=content_digest(b""),
            created=CREATED,
            expires=CREATED + 60,
            nonce=b64e(NONCE),
            keyid=kid,
        )
        base = base.rsplit(b"\n", 1)[0] + b'\n"@signature-params": ' + signed_line.encode()
        signature = base64.b64encode(ed25519_sign(sk, base)).decode()
        verify_request(
            method="GET",
            authority="relay.example.org",
            path="/v1/stream",
            query="",
            headers={**headers, "Signature-Input": sig_input, "Signature": f"sig1=:{signature}:"},
            body=b"",
            resolve_key=lambda _kid: pk,
            nonces=NonceCache(),
            now=CREATED,
        )

    for spelling in (canonical, spaced, leading_zero):
        verify("sig1=" + spelling, canonical)
    for spelling in (spaced, leading_zero):
        with pytest.raises(BadRequestSignatureError):
            verify("sig1=" + spelling, spelling)
