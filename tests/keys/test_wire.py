"""keys/wire.py: what the relay parses is strict, what clients parse is tolerant, and
the client library speaks it without letting aiohttp through."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from clients.client import RelayClient
from clients.errors import ClientError, SigningKeyError, StreamClosedError, TransportError
from keys import wire
from keys.encoding import uuid7
from keys.envelope import seal
from keys.errors import EncodingError
from keys.jws import split_compact, unverified_header, unverified_payload
from relay.settings import RelaySettings
from tests.netfixture import NOW, Network, make_network
from tests.relayfixture import FakeClock, RelayEnv, start_relay, until

MSG = uuid7(ms=NOW)
TOKEN = "eyJhIjoxfQ.eyJiIjoyfQ.c2ln"


# --- the relay's side: strict ------------------------------------------------------------

REFUSED_FRAMES = {
    "ack-bool": {"type": "ack", "seqs": [True]},
    "ack-float": {"type": "ack", "seqs": [1.0]},
    "ack-string": {"type": "ack", "seqs": ["1"]},
    "ack-negative": {"type": "ack", "seqs": [-1]},
    "ack-too-big": {"type": "ack", "seqs": [wire.MAX_SEQ + 1]},
    "ack-too-many": {"type": "ack", "seqs": list(range(wire.MAX_ACK_SEQS + 1))},
    "ack-extra": {"type": "ack", "seqs": [1], "all": True},
    "receipt-missing": {"type": "receipt"},
    "receipt-number": {"type": "receipt", "receipt": 5},
    "receipts-empty": {"type": "receipts", "receipts": []},
    "receipts-too-many": {"type": "receipts", "receipts": [TOKEN] * 1001},
    "probe-no-answer": {"type": "probe_ok", "nonce": "n"},
    "unknown-type": {"type": "subscribe"},
    "no-type": {"seqs": [1]},
}


@pytest.mark.parametrize("frame", REFUSED_FRAMES.values(), ids=REFUSED_FRAMES.keys())
def test_the_relay_refuses_frames_outside_the_protocol(frame: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        wire.CLIENT_FRAME.validate_json(json.dumps(frame))


def test_the_relay_parses_each_client_frame_into_its_type() -> None:
    parsed = [
        wire.CLIENT_FRAME.validate_json(json.dumps(f))
        for f in (
            {"type": "ack", "seqs": [0, wire.MAX_SEQ]},
            {"type": "receipt", "receipt": TOKEN, "ref": {"any": ["json"]}},
            {"type": "receipts", "receipts": [TOKEN], "ref": 8},
            {"type": "probe_ok", "nonce": "n", "answer": TOKEN},
            {"type": "ping"},
        )
    ]
    assert [type(p) for p in parsed] == [
        wire.AckFrame,
        wire.ReceiptFrame,
        wire.ReceiptsFrame,
        wire.ProbeAnswer,
        wire.Ping,
    ]
    assert parsed[1].ref == {"any": ["json"]}  # type: ignore[union-attr]


SUBMITS = {
    '{"envelope": "x"}': wire.SubmitOne,
    '{"envelopes": ["x", "y"]}': wire.SubmitBatch,
}


@pytest.mark.parametrize(("raw", "kind"), SUBMITS.items())
def test_submit_body_is_one_or_a_batch(raw: str, kind: type) -> None:
    assert type(wire.SUBMIT_REQUEST.validate_json(raw)) is kind


@pytest.mark.parametrize(
    "raw",
    [
        '{"envelope": "x", "envelopes": ["y"]}',
        '{"envelopes": []}',
        '{"envelope": 5}',
        "{}",
        "[]",
        '{"envelope": "x", "extra": 1}',
    ],
)
def test_submit_body_outside_the_protocol_is_refused(raw: str) -> None:
    with pytest.raises(ValidationError):
        wire.SUBMIT_REQUEST.validate_json(raw)


@pytest.mark.parametrize(
    "query",
    [
        {"after": "-1"},
        {"after": str(wire.MAX_SEQ + 1)},
        {"after": " 1"},
        {"after": "1_000"},
        {"wait": "1.5"},
        {"wait": str(wire.POLL_MAX_WAIT_S + 1)},
        {"limit": "0"},
        {"limit": str(wire.POLL_MAX_LIMIT + 1)},
        {"limit": ""},
    ],
)
def test_inbox_query_out_of_bounds_is_refused_and_named(query: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as err:
        wire.InboxQuery.model_validate(query)
    assert next(iter(query)) in wire.describe(err.value, "query")


def test_inbox_query_defaults() -> None:
    q = wire.InboxQuery.model_validate({})
    assert (q.after, q.wait, q.limit) == (0, 0, wire.POLL_DEFAULT_LIMIT)


def test_describe_names_the_place_and_never_echoes_the_input() -> None:
    huge = "A" * 100_000
    with pytest.raises(ValidationError) as err:
        wire.CLIENT_FRAME.validate_json(json.dumps({"type": "receipt", "receipt": 1, "x": huge}))
    text = wire.describe(err.value, "frame", union=True)
    assert "receipt" in text and huge[:100] not in text and len(text) < 300
    with pytest.raises(ValidationError) as err:
        wire.CLIENT_FRAME.validate_json("[" * 10_000)
    assert wire.describe(err.value, "frame") == "frame is not valid JSON"


# --- the client's side: tolerant -----------------------------------------------------------

SERVER_FRAMES: list[wire.Outbound] = [
    wire.Hello(authority="fr-oclcc", pending=3),
    wire.EnvelopeItem(seq=1, id=MSG, envelope=TOKEN),
    wire.EnvelopeItem(seq=2, id=MSG, envelope=TOKEN, reminder=True, note="reminder"),
    wire.ReceiptItem(seq=3, id=MSG, receipt=TOKEN),
    wire.EscalationItem(seq=4, id=MSG, notice=TOKEN, note="step 2"),
    wire.Probe(nonce="abc"),
    wire.ReceiptOk(id=MSG, duplicate=False, ref=7),
    wire.ReceiptsOk(
        results=[
            wire.ReceiptResult(id=MSG, duplicate=True),
            wire.ProblemResult(
                problem=wire.Problem(
                    type="urn:cpar:problem:x", title="X", status=422, detail="d", code="x"
                )
            ),
        ],
        ref="r",
    ),
    wire.ErrorFrame(
        problem=wire.Problem(
            type="urn:cpar:problem:malformed", title="M", status=400, detail="d", code="malformed"
        )
    ),
    wire.Pong(),
]


@pytest.mark.parametrize("frame", SERVER_FRAMES, ids=lambda f: type(f).__name__)
def test_every_server_frame_round_trips_through_the_client(frame: wire.Outbound) -> None:
    assert wire.RECEIVED_FRAME.validate_json(wire.encode(frame)) == frame


def test_encoding_leaves_out_absent_members_only() -> None:
    body = json.loads(wire.encode(wire.EnvelopeItem(seq=1, id=MSG, envelope=TOKEN)))
    assert body == {"seq": 1, "type": "envelope", "id": MSG, "envelope": TOKEN, "reminder": False}
    assert json.loads(wire.encode(wire.ErrorFrame(problem=SERVER_FRAMES[-2].problem, ref=0))) == {  # type: ignore[attr-defined]
        "type": "error",
        "problem": SERVER_FRAMES[-2].problem.model_dump(),  # type: ignore[attr-defined]
        "ref": 0,
    }


def test_a_newer_relay_does_not_break_the_client() -> None:
    """New frame types, new item types and new members are tolerated, not refused; an
    item the client cannot read still has its seq, so it can be acknowledged."""
    frame = wire.RECEIVED_FRAME.validate_json('{"type": "maintenance", "at": 5}')
    assert frame == wire.UnknownFrame(type="maintenance")
    items = wire.RECEIVED_FRAME.validate_json(
        json.dumps(
            {
                "type": "items",
                "items": [
                    {"seq": 9, "type": "tombstone", "id": MSG},
                    {"seq": 10, "type": "receipt", "id": MSG, "receipt": TOKEN, "new": 1},
                    {"seq": 11, "type": "envelope", "id": MSG, "envelope": 5},
                ],
            }
        )
    )
    assert isinstance(items, wire.ReceivedItems)
    assert items.items == [
        wire.UnknownItem(seq=9, type="tombstone"),
        wire.ReceiptItem(seq=10, id=MSG, receipt=TOKEN),
        wire.UnknownItem(seq=11, type="envelope"),  # unreadable: acknowledged and dropped
    ]
    hello = wire.RECEIVED_FRAME.validate_json('{"type": "hello", "authority": 5}')
    assert hello == wire.UnknownFrame(type="hello")


# --- JWS parts: only keys/jws.py splits tokens ----------------------------------------------


def test_unverified_parts_of_a_real_envelope(net: Network) -> None:
    sealed = seal(
        net["it-tpc"],
        net.directory,
        to=["fr-oclcc"],
        content={"kind": "free_text", "text": "x"},
        now=NOW,
    )
    assert unverified_header(sealed.token, what="envelope")["id"] == sealed.id
    assert len(split_compact(sealed.token, what="envelope")) == 3
    for bad in ("a.b", "a.b.c.d", "not base64!.x.y"):
        with pytest.raises(EncodingError):
            unverified_payload(bad, what="token")


# --- the client library: typed, and no aiohttp outside ------------------------------------------


async def test_stream_yields_typed_events_and_ends_when_closed(relay: RelayEnv) -> None:
    sealed = seal(
        relay.net["it-tpc"],
        relay.net.directory,
        to=["fr-oclcc"],
        content={"kind": "free_text", "text": "typed"},
        now=relay.clock(),
    )
    await relay.client("it-tpc").send(sealed.token)
    async with relay.client("fr-oclcc").stream() as events:
        seen: list[object] = []
        async for event in events:
            seen.append(event)
            if isinstance(event, wire.EnvelopeItem):
                await events.ack([event.seq])
                await events.ping()
            if isinstance(event, wire.Pong):
                await events.close()
    assert isinstance(seen[0], wire.Hello) and seen[0].pending == 1
    assert isinstance(seen[1], wire.EnvelopeItem) and seen[1].envelope == sealed.token
    assert isinstance(seen[-1], wire.Pong)
    with pytest.raises(StreamClosedError):
        await events.receive()

    async def acknowledged() -> bool:  # frames are handled concurrently: the ack may trail
        return await relay.client("fr-oclcc").poll() == []

    await until(acknowledged)


async def test_an_unreachable_relay_is_a_transport_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    identity = make_network()["it-tpc"]
    async with RelayClient(f"http://127.0.0.1:{port}", identity, clock=FakeClock()) as client:
        with pytest.raises(TransportError):
            await client.poll()
        with pytest.raises(TransportError):
            await client.connect_stream()


async def test_an_identity_with_no_usable_key_is_a_client_error(relay: RelayEnv) -> None:
    """Our own key expired (or revoked): one ClientError naming it, no KeysError."""
    identity = relay.net["it-tpc"]
    too_late = max(k.exp for k in identity.signing_keys) + 1
    async with RelayClient(relay.base_url, identity, clock=lambda: too_late) as client:
        with pytest.raises(SigningKeyError, match="cannot sign requests as it-tpc"):
            await client.poll()


async def test_input_outside_the_protocol_is_refused_before_sending(relay: RelayEnv) -> None:
    client = relay.client("fr-oclcc")
    with pytest.raises(ClientError, match="seqs"):
        await client.ack([-1])
    with pytest.raises(ClientError, match="limit"):
        await client.poll(limit=0)
    with pytest.raises(ClientError, match="envelopes"):
        await client.send_batch([])


def test_no_aiohttp_type_in_the_client_librarys_public_api() -> None:
    import inspect

    from clients import client as module

    for cls in (module.RelayClient, module.RelayStream):
        for name, member in inspect.getmembers(cls):
            if name.startswith("_") and name not in ("__init__",):
                continue
            if cls is module.RelayStream and name == "__init__":
                continue  # made by RelayClient.connect_stream, not by callers
            if callable(member):
                hints = str(inspect.signature(member))
            elif isinstance(member, property) and member.fget is not None:
                hints = str(inspect.signature(member.fget))
            else:
                continue
            assert "aiohttp" not in hints, (cls.__name__, name, hints)


@pytest.fixture
async def impatient(relay_settings: RelaySettings, net: Network) -> AsyncIterator[RelayEnv]:
    """A relay that holds a long-poll at most 10 ms."""
    settings = relay_settings.model_copy(update={"longpoll_max_wait_s": 0.01})
    env = RelayEnv(net=net, settings=settings, clock=FakeClock())
    async for started in start_relay(env):
        yield started


async def test_a_longer_wait_than_the_relay_allows_is_clamped_not_refused(
    impatient: RelayEnv,
) -> None:
    # Were it not clamped, this would hold for two minutes (past the test's timeout).
    assert await impatient.client("fr-oclcc").poll(wait=wire.POLL_MAX_WAIT_S) == []
