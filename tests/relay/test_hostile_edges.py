"""Hostile edges of the HTTP server, on the site ``relay serve`` runs (real sockets).

Each test is a regression for a defect an adversarial pass found: no deadline on a
request head or an idle connection, connections kept after a failed authentication,
no bound on unauthenticated connections, no rate limit per authority, a body read
before its signature was checked, parser errors answered in text/plain with the input
echoed and a traceback logged each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from relay.api.state import METRICS
from relay.core.ratelimit import RateLimit
from relay.settings import RelaySettings
from tests.netfixture import Network
from tests.relayfixture import FakeClock, RelayEnv, start_guarded_relay


async def _guarded(settings: RelaySettings, net: Network, **update: Any) -> AsyncIterator[RelayEnv]:
    env = RelayEnv(net=net, settings=settings.model_copy(update=update), clock=FakeClock())
    async for ready in start_guarded_relay(env):
        yield ready


@pytest.fixture
async def guarded(relay_settings: RelaySettings, net: Network) -> AsyncIterator[RelayEnv]:
    async for env in _guarded(
        relay_settings,
        net,
        header_timeout_s=0.5,
        idle_timeout_s=0.8,
        body_timeout_s=0.5,
        max_unauthenticated_connections=6,
        max_unauthenticated_per_source=3,
        rate_limits={"default": RateLimit(per_second=1.0, burst=3)},
    ):
        yield env


def _port(env: RelayEnv) -> int:
    return int(env.base_url.rsplit(":", 1)[1])


async def _connect(
    env: RelayEnv, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", _port(env), local_addr=(source, 0))


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes; fails if it is still open after ``seconds``."""
    async with asyncio.timeout(seconds):
        return await reader.read(-1)


async def _shut(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _metric(env: RelayEnv, name: str, **labels: str) -> float:
    assert env.app is not None
    value = env.app[METRICS].registry.get_sample_value(name, labels)
    return float(value or 0.0)


def _split(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


async def test_a_trickled_request_head_is_cut_off_at_its_deadline(guarded: RelayEnv) -> None:
    reader, writer = await _connect(guarded)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n")  # never finished
    await writer.drain()
    assert await _closed_within(reader, 5) == b""
    await _shut(writer)
    assert _metric(guarded, "cpar_connection_timeouts_total", phase="head") == 1
    # A connection that sends nothing at all is cut off by the same deadline.
    reader, writer = await _connect(guarded)
    assert await _closed_within(reader, 5) == b""
    await _shut(writer)


async def test_an_idle_kept_alive_connection_is_closed(guarded: RelayEnv) -> None:
    reader, writer = await _connect(guarded)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
    await writer.drain()
    raw = await _closed_within(reader, 5)
    status, headers, _ = _split(raw)
    assert status == 200
    assert headers.get("connection", "keep-alive").lower() != "close"
    await _shut(writer)
    assert _metric(guarded, "cpar_connection_timeouts_total", phase="idle") == 1


async def test_a_failed_authentication_closes_the_connection(guarded: RelayEnv) -> None:
    reader, writer = await _connect(guarded)
    writer.write(b"GET /v1/inbox HTTP/1.1\r\nHost: relay\r\n\r\n")
    await writer.drain()
    raw = await _closed_within(reader, 1.0)  # well before the idle deadline
    status, headers, body = _split(raw)
    assert status == 401
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"].lower() == "close"
    assert json.loads(body)["code"] == "missing_signature"
    await _shut(writer)


async def test_an_unsigned_body_is_never_read(guarded: RelayEnv) -> None:
    """8 MiB announced, 1 KiB sent, no signature: answered at once from the head alone."""
    reader, writer = await _connect(guarded)
    writer.write(
        b"POST /v1/messages HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
        b"Content-Length: 8000000\r\n\r\n" + b"x" * 1024
    )
    await writer.drain()
    async with asyncio.timeout(2):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401")
    await _shut(writer)


async def test_a_stalled_signed_body_times_out_with_408(guarded: RelayEnv) -> None:
    client = guarded.client("it-tpc")
    url = client.url("/v1/messages")
    body = b'{"envelope": "' + b"x" * 200 + b'"}'
    headers = client.signed_headers("POST", url, body)
    reader, writer = await _connect(guarded)
    lines = [f"{k}: {v}" for k, v in headers.items()]
    writer.write(
        (
            f"POST /v1/messages HTTP/1.1\r\nHost: {url.split('/')[2]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            + "\r\n".join(lines)
            + "\r\n\r\n"
        ).encode()
        + body[:20]
    )
    await writer.drain()
    status, headers_back, problem = _split(await _closed_within(reader, 5))
    assert status == 408
    assert json.loads(problem)["code"] == "body_timeout"
    assert headers_back["connection"].lower() == "close"
    await _shut(writer)
    assert _metric(guarded, "cpar_connection_timeouts_total", phase="body") == 1


async def test_unauthenticated_connections_are_bounded_per_source(guarded: RelayEnv) -> None:
    held = [await _connect(guarded, "127.0.0.2") for _ in range(3)]
    await asyncio.sleep(0.05)
    reader, writer = await _connect(guarded, "127.0.0.2")
    status, headers, body = _split(await _closed_within(reader, 2))
    assert status == 503
    assert headers["retry-after"] == "5"
    assert json.loads(body)["code"] == "too_many_connections"
    await _shut(writer)
    assert _metric(guarded, "cpar_connections_refused_total", reason="per_source") == 1
    # An authority from another address is not affected, and is not counted once it
    # has authenticated.
    client = guarded.client("it-tpc")
    assert await client.poll(wait=0) is not None
    assert _metric(guarded, "cpar_unauthenticated_connections") == 3
    for _, w in held:
        await _shut(w)


async def test_a_full_table_makes_room_by_closing_the_oldest_idle_connection(
    guarded: RelayEnv,
) -> None:
    held = [await _connect(guarded, f"127.0.0.{2 + i // 3}") for i in range(6)]
    await asyncio.sleep(0.05)
    assert _metric(guarded, "cpar_unauthenticated_connections") == 6
    # An authority arriving now is served: the oldest idle connection makes room.
    client = guarded.client("it-tpc")
    assert await client.poll(wait=0) is not None
    assert await _closed_within(held[0][0], 2) == b""
    assert _metric(guarded, "cpar_connections_refused_total", reason="evicted") >= 1
    for _, w in held:
        await _shut(w)


async def test_an_authority_over_its_rate_gets_429_with_retry_after(guarded: RelayEnv) -> None:
    client = guarded.client("it-tpc")
    url = client.url("/v1/inbox")
    statuses = []
    async with aiohttp.ClientSession() as http:
        for _ in range(4):
            async with http.get(url, headers=client.signed_headers("GET", url, b"")) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    problem = await resp.json()
                    retry_after = resp.headers["Retry-After"]
                    assert resp.content_type == "application/problem+json"
    assert statuses == [200, 200, 200, 429]
    assert problem["code"] == "rate_limited"
    assert int(retry_after) >= 1
    # Another authority has its own bucket.
    other = guarded.client("fr-oclcc")
    assert await other.poll(wait=0) is not None


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /v1/inbox HTTP/1.1\r\nHost: relay\r\nX-Evil: a\x00<script>\r\n\r\n",
        b"FR<script>OB /v1/inbox HTTP/1.1\r\nHost: relay\r\n\r\n",
        b"GET /<script> HTTP/1.1\r\nHost: relay\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
        b"POST /v1/messages HTTP/1.1\r\nHost: relay\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz<script>\r\n",
    ],
    ids=["nul-in-header", "bad-method", "oversized-header", "bad-chunking"],
)
async def test_parser_errors_get_problem_json_without_echo(
    guarded: RelayEnv, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            reader, writer = await _connect(guarded)
            writer.write(raw)
            await writer.drain()
            status, headers, body = _split(await _closed_within(reader, 3))
            await _shut(writer)
            assert 400 <= status < 500
            assert headers["content-type"] == "application/problem+json"
            assert b"script" not in body
            assert json.loads(body)["status"] == status
    lines = [r for r in caplog.records if r.name == "relay.api.connections"]
    assert len(lines) == 1, [r.getMessage() for r in lines]  # rate-limited
    assert lines[0].levelno == logging.WARNING and lines[0].exc_info is None
    assert "script" not in lines[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
