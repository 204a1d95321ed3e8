"""Redis plumbing for :mod:`relay.store.redis`: key names, the Lua scripts (package data,
run by SHA), connection options and the durability check of a server's AOF settings."""

from __future__ import annotations

import hashlib
import inspect
import json
import socket
from importlib import resources
from typing import Any, Literal

import redis.asyncio as aioredis

from relay.store.base import (
    MessageRecord,
    NewMessage,
    Pruned,
    QueueItem,
    ReceiptRecord,
    StoreError,
    log_leaf,
)

Durability = Literal["always", "everysec"]

PREFIX = "cpar:"
GROUP = "relay"
CHANNEL = PREFIX + "push"
LEASE_MS = 5_000
"""How long ``due_timers`` hides a timer from other instances while this one fires it."""
WAITAOF_TIMEOUT_MS = 5_000
POOL_SIZE = 64
STATS_SCAN = 64
"""queue_stats looks at the first items of each queue for the oldest enqueued_at."""
RETRIES = 1
BATCH_ITEMS = 500
BATCH_BYTES = 16 * 1024 * 1024
"""Most messages (or receipts, acks, nonces) and bytes in one coalesced script call."""
WAITAOF_MIN_VERSION = (7, 2, 0)


# A Redis host that vanishes without closing the connection (a partition) is noticed in
# about 20-25 s instead of the OS defaults (hours idle, ~15 min with data in flight).
_KEEPALIVE: dict[int, int] = {
    opt: value
    for name, value in (
        ("TCP_KEEPIDLE", 10),
        ("TCP_KEEPINTVL", 5),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", 20_000),
    )
    if (opt := getattr(socket, name, None)) is not None
}

# No CLIENT SETINFO on connect: redis-py would read its package metadata from disk (a
# blocking call on the event loop) for every new connection. (redis-py >= 7 spells it
# driver_info; older versions lib_name/lib_version.)
_NO_CLIENT_SETINFO: dict[str, Any] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(aioredis.Redis.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)


class StoreConfigError(StoreError):
    """The Redis server is reachable but configured so it cannot keep the store's promise."""


def qkey(authority: str) -> str:
    return f"{PREFIX}{{{authority}}}:q"


def mkey(msg_id: str) -> str:
    return f"{PREFIX}{{{msg_id}}}:m"


def rkey(msg_id: str) -> str:
    return f"{PREFIX}{{{msg_id}}}:r"


def akey(digest: str) -> str:
    return f"{PREFIX}{{{digest}}}:a"


def readers_key(digest: str) -> str:
    return f"{PREFIX}{{{digest}}}:rd"


TIMERS = PREFIX + "{timers}:z"
LEASES = PREFIX + "{timers}:lease"
RECIPIENTS = PREFIX + "recipients"
ESCALATING = PREFIX + "escalating"
RETENTION = PREFIX + "retention"
"""ZSET of message ids by accepted_at: what :meth:`RedisStore.prune` looks at."""
UPLOADS = PREFIX + "uploads"
"""ZSET of attachment digests not yet referenced, by upload time."""
RETENTION_INDEXED = PREFIX + "retention:indexed"
"""Set once the retention indexes cover the messages stored before they existed."""


# --- Lua ---------------------------------------------------------------------------------
# Every write is one script; the scripts live in relay/store/lua/*.lua (package data),
# are read once at import, and run by SHA (EVALSHA, loaded again on NOSCRIPT).


class _Script:
    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    @classmethod
    def load(cls, name: str, *, common: bool = False) -> _Script:
        """``lua/<name>.lua``, after ``lua/common.lua`` when ``common``."""
        files = resources.files("relay.store.lua")
        text = files.joinpath(f"{name}.lua").read_text(encoding="utf-8")
        if common:
            text = files.joinpath("common.lua").read_text(encoding="utf-8") + text
        return cls(text)


ACCEPT = _Script.load("accept", common=True)
RECEIPTS = _Script.load("receipts", common=True)
FIRE = _Script.load("fire", common=True)
DUE = _Script.load("due", common=True)
PENDING = _Script.load("pending", common=True)
ACK = _Script.load("ack")
NONCES = _Script.load("nonces")
PUT_ATTACHMENT = _Script.load("put_attachment")
QUEUE_STATS = _Script.load("queue_stats")
PRUNE = _Script.load("prune", common=True)


# --- durability ---------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, int, int]:
    """'7.0.15' -> (7, 0, 15); anything unreadable counts as 0."""
    parts = [int(p) if p.isdigit() else 0 for p in text.split(".")[:3]]
    parts += [0] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def durability_plan(
    *,
    version: tuple[int, int, int],
    appendonly: str | None,
    appendfsync: str | None,
    durability: Durability,
    allow_no_aof: bool,
) -> tuple[bool, str | None]:
    """Decide how a write is made durable: (use WAITAOF, a warning to log).

    Raises :class:`StoreConfigError` (one line) when the server cannot give the chosen
    durability. ``appendonly``/``appendfsync`` are None when CONFIG GET is not allowed.
    """
    waitaof = version >= WAITAOF_MIN_VERSION
    if appendonly is None:
        if allow_no_aof:
            return False, "cannot read the redis AOF configuration (CONFIG GET refused)"
        raise StoreConfigError(
            "cannot read the redis AOF configuration (CONFIG GET refused); allow CONFIG GET "
            "for the relay's user, or set redis_allow_no_aof = true to run without the check"
        )
    if appendonly != "yes":
        if allow_no_aof:
            return False, "redis has appendonly off: accepted messages can be lost on a crash"
        raise StoreConfigError(
            "redis has appendonly off, so accepted messages would not be durable; run redis "
            "with --appendonly yes --appendfsync always (or set redis_allow_no_aof = true "
            "for a throwaway test server)"
        )
    if durability == "always":
        if waitaof and appendfsync == "everysec":
            return True, (
                "redis appendfsync is everysec: every accept waits for the next fsync "
                "(WAITAOF); appendfsync always is faster with redis_durability = always"
            )
        if appendfsync != "always":
            if allow_no_aof:
                return False, f"redis appendfsync is {appendfsync}: writes are not fsynced"
            needs = "always or everysec" if waitaof else "always (WAITAOF needs redis 7.2)"
            raise StoreConfigError(
                f"redis_durability = always needs appendfsync {needs} on redis "
                f"{'.'.join(map(str, version))}, found {appendfsync}"
            )
        return waitaof, None
    # everysec: up to a second of accepted writes may be lost on a crash of the server.
    if appendfsync not in ("always", "everysec"):
        if allow_no_aof:
            return False, f"redis appendfsync is {appendfsync}: writes are fsynced by the OS"
        raise StoreConfigError(
            f"redis_durability = everysec needs appendfsync everysec or always "
            f"(found {appendfsync})"
        )
    return False, None


# --- records ------------------------------------------------------------------------------


def num(value: int | None) -> str:
    return "" if value is None else str(value)


def accept_args(m: NewMessage) -> list[str]:
    """The 16 fields accept.lua takes per message."""
    return [
        m.id,
        m.sender,
        json.dumps(list(m.to)),
        json.dumps(list(m.fallbacks)),
        m.envelope,
        m.env_hash,
        str(m.created),
        str(m.expires),
        m.priority,
        num(m.ack_by),
        str(m.accepted_at),
        m.accepted_receipt,
        json.dumps(list(m.attachments)),
        m.policy,
        json.dumps([[str(step), str(due)] for step, due in m.timers]),
        log_leaf(m.accepted_receipt).hex(),
    ]


def record(msg_id: str, h: dict[str, str]) -> MessageRecord:
    return MessageRecord(
        id=msg_id,
        sender=h["sender"],
        to=tuple(json.loads(h["to"])),
        fallbacks=tuple(json.loads(h["fallbacks"])),
        envelope=h["envelope"],
        env_hash=h["env_hash"],
        created=int(h["created"]),
        expires=int(h["expires"]),
        priority=h["priority"],
        ack_by=int(h["ack_by"]) if h.get("ack_by") else None,
        accepted_at=int(h["accepted_at"]),
        accepted_receipt=h["accepted_receipt"],
        state=h["state"],  # type: ignore[arg-type]
        attachments=tuple(json.loads(h["attachments"])),
        policy=h["policy"],
        generation=int(h["gen"]),
        escalation_step=int(h["step"]),
        released=tuple(json.loads(h["released"])),
        log_index=int(h["li"]) if h.get("li") else None,
    )


def receipt_record(msg_id: str, row: str) -> ReceiptRecord:
    """One entry of ``cpar:{<msg id>}:r`` (older entries have no log index)."""
    status, signer, at, token, received_at, step, *li = json.loads(row)
    return ReceiptRecord(
        msg_id,
        status,
        signer,
        int(at),
        token,
        int(received_at),
        step=int(step),
        log_index=int(li[0]) if li else None,
    )


def pushed_item(raw: list[Any]) -> QueueItem:
    seq, recipient, typ, msg_id, payload, at, reminder, note = raw
    return QueueItem(
        int(seq), recipient, typ, msg_id, payload, int(at), bool(reminder), note or None
    )


def pruned(raw: list[Any]) -> Pruned:
    return Pruned(int(raw[0]), int(raw[1]), int(raw[2]), tuple(str(d) for d in raw[3:]))


async def index_for_retention(r: aioredis.Redis) -> int:
    """Put the messages and attachments stored by a relay older than the retention
    indexes into them (once per database; idempotent, so instances starting together
    may both do it). Returns how many messages were indexed."""
    if await r.exists(RETENTION_INDEXED):
        return 0
    indexed = 0
    async for mk in r.scan_iter(match=f"{PREFIX}{{*}}:m", count=500):
        accepted_at, attachments = await r.hmget(mk, "accepted_at", "attachments")
        if accepted_at is None:
            continue
        msg_id = mk[len(PREFIX) + 1 : -3]
        pipe = r.pipeline(transaction=False)
        pipe.zadd(RETENTION, {msg_id: int(accepted_at)})
        for digest in json.loads(attachments or "[]"):
            pipe.sadd(f"{PREFIX}{{{digest}}}:ms", msg_id)
        await pipe.execute()
        indexed += 1
    async for ak in r.scan_iter(match=f"{PREFIX}{{*}}:a", count=500):
        digest = ak[len(PREFIX) + 1 : -3]
        stored_at = await r.hget(ak, "stored_at")
        if stored_at is not None and not await r.exists(f"{PREFIX}{{{digest}}}:ms"):
            await r.zadd(UPLOADS, {digest: int(stored_at)})
    await r.set(RETENTION_INDEXED, "1")
    return indexed
