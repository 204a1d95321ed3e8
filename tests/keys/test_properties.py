"""Property tests: tampering with any single byte is refused; any payload round-trips."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keys.encoding import b64e
from keys.envelope import open_envelope, seal
from keys.errors import KeysError
from keys.receipts import sign_receipt, verify_receipt
from tests.netfixture import NOW, make_network

NET = make_network(["it-tpc", "fr-oclcc", "fr-desk"])
SEALED = seal(
    NET["it-tpc"],
    NET.directory,
    to=["fr-oclcc"],
    fallback=["fr-desk"],
    content={"kind": "free_text", "text": "Lot 112 closes at 18:00"},
    now=NOW,
    priority="urgent",
)
TOKEN = SEALED.token.encode("ascii")
RECEIPT = sign_receipt(
    NET["fr-oclcc"],
    msg_id=SEALED.id,
    envelope_hash=SEALED.hash,
    status="acknowledged",
    now=NOW + 1,
    person="Lt. Dupont",
).encode("ascii")


def _mutate(data: bytes, index: int, value: int) -> bytes:
    i = index % len(data)
    new = value if value != data[i] else (value + 1) % 256
    return data[:i] + bytes([new]) + data[i + 1 :]


@settings(max_examples=400, deadline=None)
@given(index=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_in_an_envelope_is_refused(index: int, value: int) -> None:
    tampered = _mutate(TOKEN, index, value)
    try:
        open_envelope(tampered, NET.directory, NET["fr-oclcc"], now=NOW + 1)
    except KeysError:
        return
    raise AssertionError(f"byte {index % len(TOKEN)} changed to {value} was accepted")


@settings(max_examples=400, deadline=None)
@given(index=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_in_a_receipt_is_refused(index: int, value: int) -> None:
    tampered = _mutate(RECEIPT, index, value)
    try:
        verify_receipt(tampered, NET.directory, header=SEALED.header, envelope_hash=SEALED.hash)
    except KeysError:
        return
    raise AssertionError(f"byte {index % len(RECEIPT)} changed to {value} was accepted")


def test_the_untampered_originals_are_accepted() -> None:
    """Guards the two properties above against passing because everything fails."""
    assert open_envelope(TOKEN, NET.directory, NET["fr-oclcc"], now=NOW + 1).header.id == SEALED.id
    assert verify_receipt(RECEIPT, NET.directory, header=SEALED.header).status == "acknowledged"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.one_of(st.integers(0, 2048), st.integers(0, 1 << 20)),
    seed=st.integers(0, 2**32),
    text=st.text(max_size=2000),
    doc=json_values,
)
def test_seal_and_open_round_trip_any_payload_up_to_1_mib(
    size: int, seed: int, text: str, doc: object
) -> None:
    blob = random.Random(seed).randbytes(size)
    content = {"blob": b64e(blob), "text": text, "doc": doc}
    sealed = seal(NET["it-tpc"], NET.directory, to=["fr-oclcc"], content=content, now=NOW)  # type: ignore[arg-type]
    opened = open_envelope(sealed.token, NET.directory, NET["fr-oclcc"], now=NOW)
    assert opened.content == content


def test_a_full_mebibyte_of_binary_round_trips() -> None:
    blob = random.Random(7).randbytes(1 << 20)
    sealed = seal(
        NET["it-tpc"], NET.directory, to=["fr-oclcc"], content={"blob": b64e(blob)}, now=NOW
    )
    assert open_envelope(sealed.token, NET.directory, NET["fr-oclcc"], now=NOW).content == {
        "blob": b64e(blob)
    }
