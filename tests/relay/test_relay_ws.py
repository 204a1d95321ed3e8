"""WebSocket delivery (``GET /v1/stream``) against a real relay, through RelayClient.connect_stream.

Frames are sent raw where the test needs a frame the client library would not produce.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from clients.client import RelayClient, RelayStream
from clients.errors import AuthenticationError
from keys.envelope import SealedEnvelope, seal
from keys.identity import Identity
from keys.receipts import sign_receipt, verify_receipt
from relay.settings import RelaySettings
from tests.netfixture import NOW, Network
from tests.relayfixture import FakeClock, RelayEnv, start_relay
from tests.waiting import until

NOTICE = {"kind": "free_text", "text": "stream test"}
WS = RelayStream
Frame = dict[str, Any]


def seal_to(env: RelayEnv, to: str = "fr-oclcc", sender: str = "it-tpc") -> SealedEnvelope:
    return seal(env.net[sender], env.net.directory, to=[to], content=NOTICE, now=env.clock())


async def send(env: RelayEnv, *msgs: SealedEnvelope) -> None:
    for m in msgs:
        assert not (await env.client("it-tpc").send(m.token)).duplicate


async def receive(ws: WS) -> Frame:
    """The next event (items pushed together arrive one by one), as its JSON object."""
    async with asyncio.timeout(5.0):
        event = await ws.receive()
    return event.model_dump(mode="json", exclude_none=True)


async def send_json(ws: WS, frame: Frame) -> None:
    """A frame exactly as given (valid or not), bypassing the client's own checks."""
    await ws.send_raw(json.dumps(frame))


async def receive_until(ws: WS, done: Callable[[list[Frame]], bool]) -> list[Frame]:
    frames: list[Frame] = []
    while not done(frames):
        frames.append(await receive(ws))
    return frames


def envelopes(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f["type"] == "envelope"]


async def assert_alive(ws: WS) -> list[Frame]:
    """ping -> pong on the same connection; returns whatever arrived before the pong."""
    await send_json(ws, {"type": "ping"})
    frames = await receive_until(ws, lambda fs: bool(fs) and fs[-1]["type"] == "pong")
    assert not ws.closed
    return frames[:-1]


async def assert_nothing_more(ws: WS, wait: float = 0.3) -> None:
    """Nothing is pushed (the relay had every chance: a ping round trip, then a pause)."""
    assert envelopes(await assert_alive(ws)) == []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(wait):
            await ws.receive()


@pytest.fixture
async def fr_ws(relay: RelayEnv) -> AsyncIterator[WS]:
    ws = await relay.client("fr-oclcc").connect_stream()
    try:
        yield ws
    finally:
        await ws.close()


async def test_hello_then_live_push(relay: RelayEnv, fr_ws: WS) -> None:
    hello = await receive(fr_ws)
    assert hello == {"type": "hello", "authority": "fr-oclcc", "pending": 0}
    msg = seal_to(relay)
    await send(relay, msg)
    frame = await receive(fr_ws)
    assert frame["type"] == "envelope" and frame["id"] == msg.id
    assert frame["envelope"] == msg.token and frame["reminder"] is False
    assert isinstance(frame["seq"], int)
    # A message for someone else is not pushed here.
    await send(relay, seal_to(relay, to="de-bka"))
    await assert_nothing_more(fr_ws)


async def test_hello_counts_pending_and_backlog_is_pushed_in_order(relay: RelayEnv) -> None:
    msgs = [seal_to(relay) for _ in range(3)]
    await send(relay, *msgs)
    ws = await relay.client("fr-oclcc").connect_stream()
    try:
        assert await receive(ws) == {"type": "hello", "authority": "fr-oclcc", "pending": 3}
        frames = await receive_until(ws, lambda fs: len(fs) == 3)
        assert [f["id"] for f in frames] == [m.id for m in msgs]
        seqs = [f["seq"] for f in frames]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3
    finally:
        await ws.close()


async def test_explicit_ack_removes_the_item(relay: RelayEnv, fr_ws: WS) -> None:
    await receive(fr_ws)
    first, second = seal_to(relay), seal_to(relay)
    await send(relay, first, second)
    frames = await receive_until(fr_ws, lambda fs: len(fs) == 2)
    await send_json(fr_ws, {"type": "ack", "seqs": [frames[0]["seq"]]})
    fr = relay.client("fr-oclcc")

    async def only_second_left() -> bool:
        return [i.id for i in await fr.poll()] == [second.id]

    await until(only_second_left)
    await fr_ws.close()
    # After a reconnect only the unacknowledged item is pushed again.
    ws = await fr.connect_stream()
    try:
        assert (await receive(ws))["pending"] == 1
        again = await receive(ws)
        assert again["id"] == second.id and again["seq"] == frames[1]["seq"]
        await assert_nothing_more(ws)
    finally:
        await ws.close()


async def test_unacked_item_is_pushed_again_after_reconnect(relay: RelayEnv) -> None:
    msg = seal_to(relay)
    await send(relay, msg)
    fr = relay.client("fr-oclcc")
    for _ in range(2):
        ws = await fr.connect_stream()
        try:
            assert (await receive(ws))["pending"] == 1
            frame = await receive(ws)
            assert frame["id"] == msg.id and frame["envelope"] == msg.token
        finally:
            await ws.close()
    # Still queued for the long-poll transport too.
    assert [i.id for i in await fr.poll()] == [msg.id]


async def test_receipt_frames_are_verified_stored_and_answered(relay: RelayEnv, fr_ws: WS) -> None:
    net = relay.net
    await receive(fr_ws)
    msg = seal_to(relay)
    await send(relay, msg)
    await receive(fr_ws)
    sender_ws = await relay.client("it-tpc").connect_stream()
    try:
        assert (await receive(sender_ws))["type"] == "hello"
        delivered = sign_receipt(
            net["fr-oclcc"], msg_id=msg.id, envelope_hash=msg.hash, status="delivered", now=NOW
        )
        await send_json(fr_ws, {"type": "receipt", "receipt": delivered, "ref": 7})
        ok = await receive(fr_ws)
        assert ok["type"] == "receipt_ok" and ok["id"] == msg.id and ok["ref"] == 7
        assert ok["duplicate"] is False
        # Stored: in the sender's timeline, state advanced, and pushed to the sender live.
        timeline = await relay.client("it-tpc").timeline(msg.id)
        assert timeline.state == "delivered" and timeline.receipts[1:] == [delivered]
        pushed = await receive(sender_ws)
        assert pushed["type"] == "receipt" and pushed["id"] == msg.id
        assert pushed["receipt"] == delivered
        verify_receipt(pushed["receipt"], net.directory, header=msg.header, envelope_hash=msg.hash)
        # The same receipt again is answered as a duplicate and not queued twice.
        await send_json(fr_ws, {"type": "receipt", "receipt": delivered, "ref": 8})
        again = await receive(fr_ws)
        assert again["type"] == "receipt_ok" and again["duplicate"] is True and again["ref"] == 8
        await assert_nothing_more(sender_ws)
    finally:
        await sender_ws.close()


async def test_bad_receipt_frames_get_error_frames_and_the_connection_stays(
    relay: RelayEnv, fr_ws: WS
) -> None:
    net = relay.net
    await receive(fr_ws)
    msg = seal_to(relay)
    await send(relay, msg)
    await receive(fr_ws)

    def receipt(aid: str, status: Any = "delivered", env_hash: str = msg.hash) -> str:
        return sign_receipt(net[aid], msg_id=msg.id, envelope_hash=env_hash, status=status, now=NOW)

    cases: list[tuple[Frame, int, str]] = [
        ({"type": "receipt"}, 400, "malformed"),
        ({"type": "receipt", "receipt": 5}, 400, "malformed"),
        ({"type": "receipt", "receipt": "garbage"}, 400, "malformed"),
        ({"type": "receipt", "receipt": receipt("fr-oclcc", "accepted")}, 422, "receipt_invalid"),
        (
            {"type": "receipt", "receipt": receipt("fr-oclcc", env_hash="0" * 64)},
            422,
            "receipt_mismatch",
        ),
        ({"type": "receipt", "receipt": receipt("de-bka")}, 403, "signer_mismatch"),
    ]
    for i, (frame, status, code) in enumerate(cases):
        await send_json(fr_ws, {**frame, "ref": i})
        reply = await receive(fr_ws)
        assert reply["type"] == "error" and reply["ref"] == i, (frame, reply)
        problem = reply["problem"]
        assert problem["status"] == status and problem["code"] == code, (frame, problem)
        assert problem["type"] == f"urn:cpar:problem:{code}" and problem["detail"]
        await assert_alive(fr_ws)
    # None of them reached the sender or moved the message.
    timeline = await relay.client("it-tpc").timeline(msg.id)
    assert timeline.state == "accepted" and len(timeline.receipts) == 1
    assert await relay.client("it-tpc").poll() == []


async def test_envelopes_submitted_over_the_session_are_answered_in_order(
    relay: RelayEnv, fr_ws: WS
) -> None:
    await receive(fr_ws)
    sender = await relay.client("it-tpc").connect_stream()
    try:
        assert (await receive(sender))["type"] == "hello"
        a, b = seal_to(relay), seal_to(relay)
        foreign = seal_to(relay, sender="de-bka")  # not the session's authority
        await sender.submit([a.token, b.token, foreign.token, "garbage"], ref="batch-1")
        answer = await receive(sender)
        assert answer["type"] == "submitted" and answer["ref"] == "batch-1"
        ok_a, ok_b, refused, bad = answer["results"]
        assert (ok_a["id"], ok_a["duplicate"], ok_b["id"]) == (a.id, False, b.id)
        verify_receipt(ok_a["receipt"], relay.net.directory, header=a.header, envelope_hash=a.hash)
        assert refused["problem"]["status"] == 403 and bad["problem"]["status"] == 400
        # Durable and delivered, like an HTTP submit; a repeat is a duplicate.
        pushed = await receive_until(fr_ws, lambda fs: len(envelopes(fs)) == 2)
        assert [f["id"] for f in envelopes(pushed)] == [a.id, b.id]
        await sender.submit([a.token], ref=2)
        again = await receive(sender)
        assert again["results"][0]["duplicate"] is True and again["ref"] == 2
        # Over the relay's batch size: one error frame for the whole frame.
        over = [seal_to(relay).token for _ in range(relay.settings.max_batch + 1)]
        await sender.submit(over, ref=3)
        error = await receive(sender)
        assert error["type"] == "error" and error["ref"] == 3
        assert error["problem"]["status"] == 400
        await assert_alive(sender)
    finally:
        await sender.close()


MALFORMED_FRAMES: dict[str, str | bytes] = {
    "not-json": "hello there",
    "not-object": "[1, 2]",
    "json-string": '"ack"',
    "unknown-type": '{"type": "subscribe"}',
    "no-type": '{"seqs": [1]}',
    "deeply-nested": "[" * 50_000 + "]" * 50_000,
    "ack-not-list": '{"type": "ack", "seqs": 3}',
    "ack-negative": '{"type": "ack", "seqs": [-1]}',
    "ack-huge": '{"type": "ack", "seqs": [18446744073709551616]}',
    "binary": b"\x00\x01binary",
}


@pytest.mark.parametrize("data", MALFORMED_FRAMES.values(), ids=MALFORMED_FRAMES.keys())
async def test_malformed_frame_gets_an_error_and_the_connection_stays(
    relay: RelayEnv, fr_ws: WS, data: str | bytes
) -> None:
    await receive(fr_ws)
    msg = seal_to(relay)
    await send(relay, msg)
    pushed = await receive(fr_ws)
    await fr_ws.send_raw(data)
    reply = await receive(fr_ws)
    assert reply["type"] == "error"
    assert reply["problem"]["status"] == 400 and reply["problem"]["code"] == "malformed"
    await assert_alive(fr_ws)
    # Nothing was acknowledged by it, and delivery goes on.
    assert [i.id for i in await relay.client("fr-oclcc").poll()] == [msg.id]
    later = seal_to(relay)
    await send(relay, later)
    assert (await receive(fr_ws))["id"] == later.id
    await send_json(fr_ws, {"type": "ack", "seqs": [pushed["seq"]]})
    await assert_alive(fr_ws)


async def test_ping_pong(relay: RelayEnv, fr_ws: WS) -> None:
    await receive(fr_ws)
    for _ in range(3):
        await send_json(fr_ws, {"type": "ping"})
        assert await receive(fr_ws) == {"type": "pong"}


@pytest.fixture
async def windowed(relay_settings: RelaySettings, net: Network) -> AsyncIterator[RelayEnv]:
    settings = RelaySettings(**{**relay_settings.model_dump(), "delivery_window": 3})
    env = RelayEnv(net=net, settings=settings, clock=FakeClock())
    async for started in start_relay(env):
        yield started


async def test_delivery_window_limits_unacked_pushes(windowed: RelayEnv) -> None:
    env = windowed
    msgs = [seal_to(env) for _ in range(5)]
    await send(env, *msgs)
    ws = await env.client("fr-oclcc").connect_stream()
    try:
        assert (await receive(ws))["pending"] == 5
        first = await receive_until(ws, lambda fs: len(fs) == 3)
        assert [f["id"] for f in first] == [m.id for m in msgs[:3]]
        await assert_nothing_more(ws)
        # One ack frees one slot: exactly one more item.
        await send_json(ws, {"type": "ack", "seqs": [first[0]["seq"]]})
        fourth = await receive(ws)
        assert fourth["id"] == msgs[3].id
        await assert_nothing_more(ws)
        # Live submissions respect the window too.
        extra = seal_to(env)
        await send(env, extra)
        await assert_nothing_more(ws)
        await send_json(ws, {"type": "ack", "seqs": [f["seq"] for f in first[1:]]})
        rest = await receive_until(ws, lambda fs: len(fs) == 2)
        assert [f["id"] for f in rest] == [msgs[4].id, extra.id]
    finally:
        await ws.close()


async def test_acks_by_long_poll_free_the_stream_window(windowed: RelayEnv) -> None:
    env = windowed
    msgs = [seal_to(env) for _ in range(4)]
    await send(env, *msgs)
    ws = await env.client("fr-oclcc").connect_stream()
    try:
        await receive(ws)
        first = await receive_until(ws, lambda fs: len(fs) == 3)
        assert await env.client("fr-oclcc").ack([first[0]["seq"]]) == 1
        assert (await receive(ws))["id"] == msgs[3].id
    finally:
        await ws.close()


async def test_unsigned_upgrade_is_refused_before_the_upgrade(relay: RelayEnv) -> None:
    url = relay.base_url + "/v1/stream"
    upgrade = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers=upgrade) as resp:
            assert resp.status == 401
            assert resp.content_type == "application/problem+json"
            body = await resp.json(content_type=None)
            assert body["code"] == "missing_signature" and body["status"] == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await http.ws_connect(url)
        assert err.value.status == 401
        # Signed, but not an upgrade.
        headers = relay.client("fr-oclcc").signed_headers("GET", url, b"")
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 400 and resp.content_type == "application/problem+json"
            assert (await resp.json(content_type=None))["code"] == "websocket_required"
    # A key the directory does not list.
    stranger = Identity.generate("fr-oclcc", now=NOW - 1000)
    async with RelayClient(relay.base_url, stranger, clock=relay.clock) as client:
        with pytest.raises(AuthenticationError) as err:
            await client.connect_stream()
        assert err.value.status == 401


@pytest.fixture
async def limited(relay_settings: RelaySettings, net: Network) -> AsyncIterator[RelayEnv]:
    from relay.core.ratelimit import RateLimit

    slow = {"default": RateLimit(per_second=0.01, burst=3)}
    settings = relay_settings.model_copy(update={"rate_limits": slow})
    async for started in start_relay(RelayEnv(net=net, settings=settings, clock=FakeClock())):
        yield started


async def test_submit_frames_spend_the_authoritys_request_rate(limited: RelayEnv) -> None:
    """One signed upgrade, then frames: each submission costs one request of the rate."""
    sender = await limited.client("it-tpc").connect_stream()  # the upgrade: 1 of 3
    try:
        assert (await receive(sender))["type"] == "hello"
        for ref in (1, 2):
            await sender.submit([seal_to(limited).token], ref=ref)
            assert (await receive(sender))["type"] == "submitted"
        await sender.submit([seal_to(limited).token], ref=3)
        refused = await receive(sender)
        assert refused["type"] == "error" and refused["ref"] == 3
        assert (refused["problem"]["status"], refused["problem"]["code"]) == (429, "rate_limited")
        await assert_alive(sender)  # refused, not cut off
    finally:
        await sender.close()
