"""Strict base64url (keys/encoding.py): what it refuses, shown against a reference.

``b64d`` decides canonicality from the last character instead of encoding the result
again; this holds it to the reference rule (decode, encode again, compare) on every
kind of input, and shows that a JWS whose payload is refused still is when the payload
is only decoded on demand.
"""

from __future__ import annotations

import base64
import binascii
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys.encoding import b64d, b64e, check_b64
from keys.errors import EncodingError
from keys.jws import parse_compact

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _reference(text: str) -> bytes | None:
    """The rule as first written: strict alphabet, no padding, canonical by re-encoding."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if b64e(raw) == text else None


def _decoded(text: str) -> bytes | None:
    try:
        return b64d(text)
    except EncodingError:
        return None


@given(st.text(alphabet=_ALPHABET + "=+/ .\n", max_size=40))
def test_b64d_refuses_exactly_what_the_reference_refuses(text: str) -> None:
    assert _decoded(text) == _reference(text)


@given(st.binary(max_size=64), st.sampled_from(list(_ALPHABET)))
def test_every_changed_last_character_is_decoded_or_refused_as_the_reference_says(
    data: bytes, last: str
) -> None:
    text = b64e(data)
    if not text:
        return
    other = text[:-1] + last
    assert _decoded(other) == _reference(other)
    assert _decoded(text) == data


def test_a_jws_with_a_non_canonical_payload_is_refused_when_parsed() -> None:
    head, sig = b64e(b'{"alg":"EdDSA"}'), b64e(bytes(64))
    assert b64d("QQ") == b"A"
    with pytest.raises(EncodingError, match="canonical"):
        check_b64("QR")  # "QR" and "QQ" would both decode to b"A"
    with pytest.raises(EncodingError, match="payload is not canonical"):
        parse_compact(f"{head}.QR.{sig}", what="envelope")
    with pytest.raises(EncodingError, match="payload is not unpadded"):
        parse_compact(f"{head}.QQ==.{sig}", what="envelope")
    assert parse_compact(f"{head}.QQ.{sig}", what="envelope").payload == b"A"
