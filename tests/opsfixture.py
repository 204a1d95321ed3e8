"""Helpers for the operator-side tests (test_ops.py, test_ops_browser.py): an in-process
relay with a fake clock, messages sent, answered and left to escalate."""

from __future__ import annotations

import asyncio

from clients.client import RelayStream
from keys import wire
from keys.envelope import SealedEnvelope, seal
from keys.models import ReceiptStatus
from keys.receipts import sign_receipt
from relay.api.state import CORE, Core
from tests.relayfixture import RelayEnv
from tests.waiting import until

OPERATOR_TOKEN = "test-operator-token-0123456789abcdefghijklmnopqrstuv"
NOTICE = {"kind": "free_text", "text": "stolen icon, do not show this to operators"}
REMIND_URGENT_MS = 10 * 60_000


def core_of(env: RelayEnv) -> Core:
    assert env.server is not None
    return env.server.app[CORE]


def seal_to(
    env: RelayEnv, to: str = "fr-oclcc", sender: str = "it-tpc", priority: str = "routine"
) -> SealedEnvelope:
    return seal(
        env.net[sender],
        env.net.directory,
        to=[to],
        content=NOTICE,
        now=env.clock(),
        priority=priority,  # type: ignore[arg-type]
    )


async def send(env: RelayEnv, msg: SealedEnvelope) -> None:
    assert not (await env.client(msg.header.from_).send(msg.token)).duplicate


async def answer(
    env: RelayEnv, msg: SealedEnvelope, status: ReceiptStatus, by: str = "fr-oclcc"
) -> str:
    token = sign_receipt(
        env.net[by], msg_id=msg.id, envelope_hash=msg.hash, status=status, now=env.clock()
    )
    assert await env.client(by).send_receipt(token) is True  # new to the relay
    return token


async def open_escalation(env: RelayEnv) -> SealedEnvelope:
    """An urgent message nobody acknowledges, past its reminder step."""
    msg = seal_to(env, priority="urgent")
    await send(env, msg)
    env.clock.advance(REMIND_URGENT_MS + 1000)
    core = core_of(env)
    await core.escalation.tick()  # the relay's own loop may have fired it first

    async def escalated() -> bool:
        return any(m.id == msg.id for m in await core.store.open_escalations(limit=10))

    await until(escalated)
    return msg


async def connect(env: RelayEnv, aid: str) -> RelayStream:
    """A daemon's WebSocket, once the relay has said hello (the session is attached)."""
    ws = await env.client(aid).connect_stream()
    async with asyncio.timeout(5):
        hello = await ws.receive()
    assert isinstance(hello, wire.Hello)
    return ws
