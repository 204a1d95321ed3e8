"""An attachment upload is authenticated before any of its body reaches the disk."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator

import aiohttp
import pytest

from relay.settings import RelaySettings
from tests.netfixture import Network
from tests.relayfixture import FakeClock, RelayEnv, start_relay


async def _files(relay: RelayEnv) -> list[str]:
    folder = relay.settings.data_dir / "attachments"

    def walk() -> list[str]:
        return [str(p) for p in folder.rglob("*") if p.is_file()] if folder.exists() else []

    return await asyncio.to_thread(walk)


@pytest.fixture
async def small(relay_settings: RelaySettings, net: Network) -> AsyncIterator[RelayEnv]:
    settings = relay_settings.model_copy(update={"max_attachment_bytes": 1024 * 1024})
    async for env in start_relay(RelayEnv(net=net, settings=settings, clock=FakeClock())):
        yield env


async def test_unsigned_upload_is_refused_before_its_body_is_read(small: RelayEnv) -> None:
    # Larger than the relay accepts, sent chunked (no Content-Length to refuse it by):
    # had the body been streamed before the signature check, the answer would be 413
    # (too large); it is 401 because nothing was read.
    body = b"x" * (2 * 1024 * 1024)
    relay = small
    digest = hashlib.sha256(body).hexdigest()

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    async with (
        aiohttp.ClientSession() as s,
        s.put(f"{relay.base_url}/v1/attachments/{digest}", data=chunks()) as resp,
    ):
        assert resp.status == 401
        assert resp.content_type == "application/problem+json"
        assert resp.headers.get("Connection", "").lower() == "close"
    assert await _files(relay) == []
    # A declared Content-Length over the cap is refused before the signature, unread.
    async with (
        aiohttp.ClientSession() as s,
        s.put(f"{relay.base_url}/v1/attachments/{digest}", data=io.BytesIO(body)) as resp,
    ):
        assert resp.status == 413
        assert (await resp.json())["code"] == "too_large"
    assert await _files(relay) == []


async def test_signed_upload_whose_body_differs_from_its_digest_is_refused(relay: RelayEnv) -> None:
    client = relay.client("it-tpc")
    claimed = b"the body that was signed"
    digest = hashlib.sha256(claimed).hexdigest()
    url = client.url(f"/v1/attachments/{digest}")
    headers = client.signed_headers("PUT", url, claimed)
    async with (
        aiohttp.ClientSession() as s,
        s.put(url, data=b"another body", headers=headers) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["code"] == "digest_mismatch"
    assert await _files(relay) == []
