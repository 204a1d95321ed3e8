"""A private ``redis-server`` per test session (or per test), never the shared one.

Started with the AOF on and ``appendfsync always`` (what production needs for "accepted
means durable"), no RDB snapshots, on a free loopback port, its files in a temp folder.
The session server backs the ``redis`` entry of the store contract suite; tests that kill
or restart Redis start their own with :meth:`RedisServer.start` (asyncio subprocess,
nothing blocks the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from relay.store.redis import _NO_CLIENT_SETINFO
from tests.procfixture import free_port
from tests.waiting import until

REDIS_SERVER = shutil.which("redis-server")


@dataclass
class RedisServer:
    dir: Path
    port: int = field(default_factory=free_port)
    appendonly: str = "yes"
    appendfsync: str = "always"
    proc: asyncio.subprocess.Process | None = None
    sync_proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        assert REDIS_SERVER is not None, "redis-server is not installed"
        return [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--appendonly",
            self.appendonly,
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
        ]

    # -- blocking (session fixtures, outside the event loop) -------------------------------

    def start_sync(self, timeout: float = 15.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sync_proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    if time.monotonic() > deadline or self.sync_proc.poll() is not None:
                        raise RuntimeError(f"redis-server did not start: {self.log()}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def flushall_sync(self) -> None:
        client = redis.Redis(port=self.port)
        try:
            client.flushall()
        finally:
            client.close()

    def stop_sync(self) -> None:
        if self.sync_proc is not None:
            self.sync_proc.kill()
            self.sync_proc.wait(10)
            self.sync_proc = None

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "redis.log").read_text()[-2000:]
        return ""

    # -- asyncio (process tests) -----------------------------------------------------------

    async def start(self, limit_s: float = 30.0) -> None:
        """Start (or restart, on the same port and files) and wait until it answers PING
        (which it does only once the AOF is loaded)."""
        await asyncio.to_thread(self.dir.mkdir, parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv(), stdout=asyncio.subprocess.DEVNULL
        )
        proc = self.proc
        client = async_client(f"redis://127.0.0.1:{self.port}/0", socket_connect_timeout=0.5)

        async def answers() -> bool:
            try:
                return bool(await client.ping())
            except redis.RedisError:
                if proc.returncode is not None:
                    log = await asyncio.to_thread(self.log)
                    raise RuntimeError(f"redis-server did not start: {log}") from None
                return False

        try:
            await until(answers, limit_s)
        finally:
            await client.aclose()

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            await asyncio.wait_for(self.proc.wait(), 30)
            self.proc = None


def async_client(url: str, **options: Any) -> aioredis.Redis:
    """A plain redis.asyncio client for assertions (no CLIENT SETINFO: see relay.store.redis)."""
    return aioredis.Redis.from_url(url, decode_responses=True, **_NO_CLIENT_SETINFO, **options)


_SESSION: list[RedisServer] = []


def set_session_server(server: RedisServer | None) -> None:
    _SESSION.clear()
    if server is not None:
        _SESSION.append(server)


def session_redis_url() -> str:
    """The URL of the session's private Redis (started by the ``redis_server`` fixture)."""
    if not _SESSION:
        raise RuntimeError("the redis_server session fixture has not started a server")
    return _SESSION[0].url
