"""The relay's disk: a full disk answers 507 and makes /readyz not ready until space frees
(no restart); temporary upload files of cut-off connections do not pile up."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from clients.errors import RelayProblem
from relay.core.disk import remove_stale_uploads
from relay.settings import RelaySettings
from tests.netfixture import Network
from tests.relayfixture import FakeClock, RelayEnv, start_guarded_relay
from tests.waiting import until


@pytest.fixture
def small_disk(relay_settings: RelaySettings) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs) mounted where the relay keeps attachments."""
    folder = relay_settings.data_dir / "attachments"
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
async def relay_on(relay_settings: RelaySettings, net: Network) -> AsyncIterator[RelayEnv]:
    env = RelayEnv(net=net, settings=relay_settings, clock=FakeClock())
    async for ready in start_guarded_relay(env):
        yield ready


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
    return filler


def _ciphertext(tmp: Path, size: int) -> tuple[Path, str]:
    data = os.urandom(size)
    path = tmp / f"blob-{size}"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


async def _ready(env: RelayEnv) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(env.base_url + "/readyz") as resp:
        return resp.status, await resp.json()


async def test_a_full_disk_answers_507_and_recovers_without_a_restart(
    small_disk: Path, relay_on: RelayEnv, tmp_path: Path
) -> None:
    env = relay_on
    client = env.client("it-tpc")
    blob, digest = await asyncio.to_thread(_ciphertext, tmp_path, 100_000)
    filler = await asyncio.to_thread(_fill, small_disk)
    with pytest.raises(RelayProblem) as refused:
        await client.upload_attachment(blob, digest)
    assert (refused.value.status, refused.value.code) == (507, "insufficient_storage")
    status, body = await _ready(env)
    assert status == 503
    assert any("disk" in str(p) for p in body["problems"])  # type: ignore[union-attr]
    incoming = small_disk / "incoming"
    assert not await asyncio.to_thread(lambda: list(incoming.glob(".upload-*")))
    # Space frees: ready again, and the same upload now succeeds.
    await asyncio.to_thread(filler.unlink)
    assert (await _ready(env))[0] == 200
    stored = await client.upload_attachment(blob, digest)
    assert stored.digest == digest


async def test_stale_temporary_uploads_are_removed_at_start(
    relay_settings: RelaySettings, net: Network
) -> None:
    incoming = relay_settings.data_dir / "attachments" / "incoming"
    await asyncio.to_thread(incoming.mkdir, parents=True, exist_ok=True)
    left = incoming / ".upload-0123456789abcdef01234567"  # a relay killed mid-upload
    await asyncio.to_thread(left.write_bytes, b"half an upload")
    env = RelayEnv(net=net, settings=relay_settings, clock=FakeClock())
    async for _ in start_guarded_relay(env):  # alone on its data folder (SQLite)
        assert not await asyncio.to_thread(left.exists)


def test_instances_sharing_a_folder_remove_only_untouched_temp_files(tmp_path: Path) -> None:
    old, live = tmp_path / ".upload-old", tmp_path / ".upload-live"
    for path in (old, live):
        path.write_bytes(b"part of an upload")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    assert remove_stale_uploads(tmp_path, older_than_s=180) == 1
    assert not old.exists() and live.exists()  # another instance's upload in progress


async def test_an_upload_cut_off_midway_leaves_no_temporary_file(relay_on: RelayEnv) -> None:
    env = relay_on
    client = env.client("it-tpc")
    body = os.urandom(1024 * 1024)
    url = client.url(f"/v1/attachments/{hashlib.sha256(body).hexdigest()}")
    headers = client.signed_headers("PUT", url, body)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", int(url.split(":")[2].split("/")[0])
    )
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        (
            f"PUT /v1/attachments/{hashlib.sha256(body).hexdigest()} HTTP/1.1\r\n"
            f"Host: {url.split('/')[2]}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n"
        ).encode()
        + body[: 300 * 1024]
    )
    await writer.drain()
    incoming = env.settings.data_dir / "attachments" / "incoming"

    def temp_files() -> list[Path]:
        return list(incoming.glob(".upload-*")) if incoming.exists() else []

    async def some() -> bool:
        return bool(await asyncio.to_thread(temp_files))

    async def none() -> bool:
        return not await asyncio.to_thread(temp_files)

    await until(some, 5)
    writer.transport.abort()  # the client goes away mid-upload
    await until(none, 5)
    del reader
