"""Retention on a running relay: closed messages past the period are forgotten with
their receipts and attachment files, counted in /metrics; open ones stay."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.errors import RelayProblem
from keys.attachments import encrypt_stream
from keys.envelope import SealedEnvelope, seal
from keys.models import AttachmentManifestEntry
from keys.receipts import sign_receipt
from relay.api.state import METRICS, STORE
from relay.settings import RelaySettings
from tests.netfixture import Network
from tests.relayfixture import FakeClock, RelayEnv, start_relay

PERIOD_MS = 60_000


@pytest.fixture
async def relay(relay_settings: RelaySettings, net: Network) -> AsyncIterator[RelayEnv]:
    settings = relay_settings.model_copy(
        update={"retention_days": PERIOD_MS / 86_400_000, "retention_interval_s": 0.05}
    )
    async for env in start_relay(RelayEnv(net=net, settings=settings, clock=FakeClock())):
        yield env


def _encrypted(folder: Path, size: int) -> tuple[AttachmentManifestEntry, Path]:
    out = io.BytesIO()
    entry = encrypt_stream(io.BytesIO(os.urandom(size)), out, name="p.jpg", media_type="image/jpeg")
    path = folder / entry.h
    path.write_bytes(out.getvalue())
    return entry, path


def _seal(relay: RelayEnv, to: str, attachments: list[AttachmentManifestEntry]) -> SealedEnvelope:
    content = {"kind": "free_text", "text": "retention test"}
    net = relay.net
    return seal(
        net["it-tpc"],
        net.directory,
        to=[to],
        content=content,
        now=relay.clock(),
        attachments=attachments,
    )


def _stored(relay: RelayEnv, digest: str) -> Path:
    return relay.settings.data_dir / "attachments" / digest[:2] / digest


async def test_closed_messages_past_the_period_are_forgotten(
    relay: RelayEnv, tmp_path: Path
) -> None:
    assert relay.server is not None
    app = relay.server.app
    store, metrics = app[STORE], app[METRICS]
    sender, fr = relay.client("it-tpc"), relay.client("fr-oclcc")
    photo, photo_file = await asyncio.to_thread(_encrypted, tmp_path, 5_000)
    unsent, unsent_file = await asyncio.to_thread(_encrypted, tmp_path, 3_000)
    await sender.upload_attachment(photo_file, photo.h)
    await sender.upload_attachment(unsent_file, unsent.h)
    closed = _seal(relay, "fr-oclcc", [photo])
    still_open = _seal(relay, "de-bka", [])
    await sender.send(closed.token)
    await sender.send(still_open.token)
    for status in ("delivered", "acknowledged"):
        token = sign_receipt(
            relay.net["fr-oclcc"],
            status=status,
            msg_id=closed.id,
            envelope_hash=closed.hash,
            now=relay.clock(),
        )
        assert await fr.send_receipt(token)
    assert (await sender.timeline(closed.id)).state == "acknowledged"
    assert await asyncio.to_thread(_stored(relay, photo.h).exists)

    relay.clock.advance(PERIOD_MS + 1_000)

    async def forgotten() -> bool:
        return await store.get_message(closed.id) is None

    for _ in range(200):
        if await forgotten():
            break
        await asyncio.sleep(0.02)
    assert await forgotten()
    with pytest.raises(RelayProblem) as err:
        await sender.timeline(closed.id)
    assert (err.value.status, err.value.code) == (404, "unknown_message")
    assert (await sender.timeline(still_open.id)).state == "accepted"  # not closed: kept
    # A late receipt about the forgotten message finds nothing (not even in a cache).
    late = sign_receipt(
        relay.net["fr-oclcc"],
        status="rejected",
        msg_id=closed.id,
        envelope_hash=closed.hash,
        now=relay.clock(),
        reason="too late",
    )
    with pytest.raises(RelayProblem) as err:
        await fr.send_receipt(late)
    assert (err.value.status, err.value.code) == (404, "unknown_message")
    for digest in (photo.h, unsent.h):
        assert not await asyncio.to_thread(_stored(relay, digest).exists)
        assert await store.attachment_uploader(digest) is None

    def sample(what: str) -> float | None:
        return metrics.registry.get_sample_value("cpar_retention_pruned_total", {"what": what})

    assert sample("messages") == 1 and sample("receipts") == 2 and sample("attachments") == 2
    assert (metrics.registry.get_sample_value("cpar_retention_last_run_timestamp_seconds") or 0) > 0
