"""The relay's log on Redis: leaves appended by the write scripts, integrated here.

Lua has no SHA-256, so the scripts that store a receipt append its leaf hash (computed
by the caller) to the LIST ``cpar:log`` in the same script, atomically with the receipt.
The interior of the tree is computed in Python: :meth:`RedisLog.head` integrates the
leaves past ``cpar:log:size`` into the HASH ``cpar:log:nodes`` (``<level>:<index>`` ->
hex hash of each perfect subtree) and raises the size (compare-and-set, never down).
The tree is a function of the leaves in order, so instances integrating at once write
the same values; after a crash between appending and integrating, the next
:meth:`head` catches up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis

from keys.merkle import Frontier
from relay.store.base import LogHead, StoreUnavailableError
from relay.store.redisparts import PREFIX, WAITAOF_TIMEOUT_MS, _Script

LOG = PREFIX + "log"
LOG_NODES = PREFIX + "log:nodes"
LOG_SIZE = PREFIX + "log:size"
LOG_SYNCS = PREFIX + "log:syncs"
"""A counter written only to wait for the AOF's fsync (WAITAOF) before a head is given."""
CHUNK = 10_000
"""Leaves read from the list per round trip while integrating."""
RAISE_SIZE = _Script.load("log_size")

Call = Callable[[Callable[[aioredis.Redis], Awaitable[Any]]], Awaitable[Any]]


def _field(level: int, index: int) -> str:
    return f"{level}:{index}"


class RedisLog:
    def __init__(self, call: Call, *, waitaof: Callable[[], bool] = lambda: False) -> None:
        self._call = call
        self._waitaof = waitaof
        """True when the store confirms writes with WAITAOF (appendfsync everysec on
        Redis >= 7.2): then a head is returned only once its leaves are on disk."""
        """The store's ``_call`` (retry once on a dropped connection; errors become
        StoreUnavailableError)."""
        self._frontier = Frontier()
        self._lock = asyncio.Lock()

    async def nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        wanted = list(keys)
        if not wanted:
            return {}

        async def q(r: aioredis.Redis) -> list[Any]:
            return list(await r.hmget(LOG_NODES, [_field(*k) for k in wanted]))

        values: list[str | None] = await self._call(q)
        return {k: bytes.fromhex(v) for k, v in zip(wanted, values, strict=True) if v}

    async def head(self) -> LogHead:
        async with self._lock:  # one integration at a time in this process
            total, size = await self._call(_sizes)
            if self._frontier.size != size:  # another instance integrated: reload
                keys = Frontier.keys(size)
                found = await self.nodes(keys)
                self._frontier = Frontier(size, [found[k] for k in keys])
            frontier = Frontier(self._frontier.size, list(self._frontier.nodes))
            while frontier.size < total:
                start = frontier.size
                leaves = await self._call(_read(start, min(total, start + CHUNK)))
                made: dict[str, str] = {}
                for leaf in leaves:
                    for level, index, h in frontier.append(bytes.fromhex(leaf)):
                        made[_field(level, index)] = h.hex()
                await self._call(_write(made, frontier.size))
            self._frontier = frontier
            if self._waitaof():
                # Leaves other connections appended may not be fsynced yet; the AOF is
                # one sequence, so once a write of ours is on disk, they are too.
                await self._call(_synced)
            return LogHead(frontier.size, frontier.root())


async def _synced(r: aioredis.Redis) -> None:
    pipe = r.pipeline(transaction=False)
    pipe.incr(LOG_SYNCS)
    pipe.execute_command("WAITAOF", 1, 0, WAITAOF_TIMEOUT_MS)
    _, waited = await pipe.execute()
    if int(waited[0]) < 1:
        raise StoreUnavailableError(f"redis did not fsync the log within {WAITAOF_TIMEOUT_MS} ms")


async def _sizes(r: aioredis.Redis) -> tuple[int, int]:
    pipe = r.pipeline(transaction=False)
    pipe.llen(LOG)
    pipe.get(LOG_SIZE)
    total, size = await pipe.execute()
    return int(total), int(size or 0)


def _read(start: int, stop: int) -> Callable[[aioredis.Redis], Awaitable[list[str]]]:
    async def q(r: aioredis.Redis) -> list[str]:
        return [str(v) for v in await r.lrange(LOG, start, stop - 1)]

    return q


def _write(made: dict[str, str], size: int) -> Callable[[aioredis.Redis], Awaitable[None]]:
    async def w(r: aioredis.Redis) -> None:
        pipe = r.pipeline(transaction=True)
        pipe.hset(LOG_NODES, mapping=dict(made))  # type: ignore[arg-type]
        pipe.eval(RAISE_SIZE.text, 1, LOG_SIZE, str(size))
        await pipe.execute()

    return w
