"""The scale-out store: Redis (redis.asyncio + hiredis), shared by several relay instances.

Layout (``cpar:`` prefix; hash tags keep the keys of one entity in one slot):

=============================== ==============================================================
``cpar:{<authority>}:q``        STREAM: the authority's queue of unacknowledged items, with
                                the consumer group ``relay``. Entry id ``<seq>-0``; fields
                                ``t`` type, ``m`` message id, ``at`` enqueued at, ``p``
                                payload (absent: the message's own envelope), ``r`` reminder,
                                ``n`` note.
``cpar:{<msg id>}:m``           HASH: the message (envelope, header fields, state, fencing
                                generation, escalation step, released fallbacks).
``cpar:{<msg id>}:r`` / ``:rk`` LIST of receipts in the order received / SET of their
                                idempotency keys (signer|status|step).
``cpar:{<msg id>}:qi``          SET of ``recipient|seq``: the queued copies of the envelope
                                (withdrawn on expiry).
``cpar:{<digest>}:a`` / ``:rd`` HASH: attachment metadata / SET: who may read it /
``:ms``                         SET: the stored messages that reference it.
``cpar:retention``              ZSET of message ids by accepted_at; ``cpar:uploads``: ZSET
                                of attachments not yet referenced, by upload time (prune).
``cpar:{timers}:z`` / ``:lease`` ZSET ``<msg id>|<step>`` scored by due time (ms) / HASH of
                                short leases (``instance|until``) taken by ``due_timers``.
``cpar:seq``                    the counter every queue seq is taken from (INCR).
``cpar:recipients``             SET of authorities that have had something queued.
``cpar:escalating``             ZSET of messages past step 1 (by accepted_at), for the ops view.
``cpar:nonce:{<nonce>}``        request nonces (SET NX EX), shared by every instance.
``cpar:push``                   pub/sub channel: items committed, ``<instance>\\n<json>``.
=============================== ==============================================================

**Seq.** The protocol's integer ``seq`` is the millisecond part of the stream entry id:
every item gets ``seq = INCR cpar:seq`` and is added with ``XADD ... <seq>-0``. Seqs are
therefore unique across all queues (one authority cannot name another's items) and
increase in commit order within each queue, so ``pending(after)`` is ``XRANGE
(<after>-0 +`` on the stream itself.

**Queue and consumer group.** The stream holds exactly the unacknowledged items: ``ack``
is ``XACK`` + ``XDEL``, so depth is ``XLEN`` and ``pending`` reads the stream. When an
instance reads items for a daemon connected to it, the same script records the hand-over
in the consumer group (one consumer per relay process): ``XAUTOCLAIM`` (idle 0) takes
over the daemon's unacknowledged items from whichever instance had them before (a dead
one, or the previous connection), ``XREADGROUP`` takes the newly queued ones, and empty
consumers of departed instances are deleted. ``XPENDING cpar:{aid}:q relay`` then shows
which instance delivers what, and how often an item was redelivered. The group is a
ledger, never the source of truth: items pushed from memory right after a commit do not
pass through it until the next store read.

**Atomicity.** Every write is one Lua script (EVALSHA): accept + dedupe of a whole batch;
a batch of receipts (idempotency, state change, fencing); firing escalation timers
(compare-and-delete of the timer on its due time, the generation check and every effect
in one script, so only the instance whose script removes the timer fires it); acks;
attachment metadata. Concurrent accepts (and receipts, acks, nonces) are coalesced into
one script call while the previous one is in flight: group commit, as in SQLite. The
scripts build key names themselves and touch several slots: they run on one Redis server
(with replicas), not on Redis Cluster (docs/OPERATIONS.md).

**Pushes between instances.** Each script PUBLISHes the items it queued, in full (an
envelope item carries the envelope), prefixed with the writer's instance id;
:meth:`RedisStore.listen` hands the items of *other* instances to the local hub. When
it (re)subscribes or loses the subscription, and after a write whose outcome is unknown
(the connection dropped), it calls ``deliver([])``: every local session then re-reads
its queue from the store, so nothing published while the subscription was down is
missed (and if Redis cannot be reached, the sessions close and their daemons move on).

**Durability.** An ``accepted`` receipt is returned only after the write is on disk: on
Redis >= 7.2 each durable write is followed by ``WAITAOF 1 0`` on the same connection; on
older servers the store relies on ``appendfsync always`` (Redis fsyncs the AOF before it
replies). :meth:`RedisStore.start` reads ``appendonly``/``appendfsync`` (CONFIG GET) and
refuses a server that cannot keep the promise, unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from keys.lifecycle import transition
from relay.store.base import (
    TERMINAL_STATES,
    AcceptResult,
    Escalation,
    LogHead,
    MessageRecord,
    NewMessage,
    Pruned,
    QueueItem,
    QueueStats,
    ReceiptRecord,
    StoreUnavailableError,
    Timer,
    log_leaf,
)
from relay.store.redislog import RedisLog
from relay.store.redisparts import (
    _KEEPALIVE,
    _NO_CLIENT_SETINFO,
    ACCEPT,
    ACK,
    BATCH_BYTES,
    BATCH_ITEMS,
    CHANNEL,
    DUE,
    ESCALATING,
    FIRE,
    LEASE_MS,
    NONCES,
    PENDING,
    POOL_SIZE,
    PREFIX,
    PRUNE,
    PUT_ATTACHMENT,
    QUEUE_STATS,
    RECEIPTS,
    RECIPIENTS,
    RETRIES,
    STATS_SCAN,
    TIMERS,
    UPLOADS,
    WAITAOF_TIMEOUT_MS,
    Durability,
    StoreConfigError,
    _Script,
    accept_args,
    akey,
    durability_plan,
    index_for_retention,
    mkey,
    parse_version,
    pruned,
    qkey,
    readers_key,
    receipt_record,
    rkey,
)
from relay.store.redisparts import pushed_item as _pushed_item
from relay.store.redisparts import record as _record

log = logging.getLogger(__name__)
T = TypeVar("T")
# --- the store ----------------------------------------------------------------------------


async def _any(aw: Awaitable[Any]) -> Any:
    """redis-py's reply types are wider than what ``decode_responses=True`` gives."""
    return await aw


class _Coalescer:
    """Group commit for one kind of write: calls made while the previous script call of
    that kind is in flight go to Redis together, as one script call.

    Each call gives its part of the script's arguments and how many results it expects;
    the script (ARGV: prefix, instance, total, parts...) returns one flat list of
    results, split back in order. At low load a call goes alone and waits for nothing.
    """

    def __init__(self, store: RedisStore, script: _Script, *, durable: bool, queues: bool) -> None:
        self.store = store
        self.script = script
        self.durable = durable
        self.queues = queues
        self._queue: deque[tuple[list[Any], int, int, asyncio.Future[list[Any]]]] = deque()
        self._flusher: asyncio.Task[None] | None = None

    async def call(self, args: list[Any], count: int, size: int = 0) -> list[Any]:
        self.store._conn()  # refuse at once when closed
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((args, count, size, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="redis-group-commit")
        return await fut

    async def _flush(self) -> None:
        while self._queue:
            batch: list[tuple[list[Any], int, int, asyncio.Future[list[Any]]]] = []
            count = size = 0
            while self._queue and (
                not batch or (count < BATCH_ITEMS and size + self._queue[0][2] < BATCH_BYTES)
            ):
                item = self._queue.popleft()
                batch.append(item)
                count += item[1]
                size += item[2]
            args = self.store._args(count)
            for part, _, _, _ in batch:
                args += part
            self.store.commits += 1
            try:
                raw = await self.store._write(
                    self.script, [], args, durable=self.durable, queues=self.queues
                )
            except BaseException as exc:
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            at = 0
            for _, n, _, fut in batch:
                if not fut.done():
                    fut.set_result(list(raw[at : at + n]))
                at += n

    async def drain(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            await asyncio.gather(self._flusher, return_exceptions=True)


class RedisStore:
    """:class:`relay.store.base.Store` on one Redis server, shared by many relay processes."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        durability: Durability = "always",
        allow_no_aof: bool = False,
        instance: str | None = None,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.url = url
        self.durability: Durability = durability
        self.allow_no_aof = allow_no_aof
        self.instance = instance or f"{os.getpid()}-{secrets.token_hex(4)}"
        """This process's name: its consumer in every group, and the tag on its pushes."""
        self._pool_size = pool_size
        self._r: aioredis.Redis | None = None
        self._closed = False
        self._waitaof = False
        self._deliver: Callable[[list[QueueItem]], None] | None = None
        self.server_version: tuple[int, int, int] = (0, 0, 0)
        self.commits = 0
        """Coalesced script calls sent (for benchmarks and tests: writes per call)."""
        self._accepts = _Coalescer(self, ACCEPT, durable=True, queues=True)
        self._receipts = _Coalescer(self, RECEIPTS, durable=True, queues=True)
        self._acks = _Coalescer(self, ACK, durable=False, queues=False)
        self._nonces = _Coalescer(self, NONCES, durable=False, queues=False)
        self._log = RedisLog(lambda fn: self._call(fn, write=True), waitaof=lambda: self._waitaof)
        self._indexed = False
        """Whether this process saw the retention indexes complete (index_for_retention)."""

    # -- lifecycle ------------------------------------------------------------------

    def _client(self, **extra: Any) -> aioredis.Redis:
        """A separate client (the pub/sub listener's)."""
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": 2.0,
            "socket_keepalive": True,
            "socket_keepalive_options": _KEEPALIVE,
            # No retries inside redis-py: _call retries itself, knowing what a repeated
            # write means. A failed connection is reopened by the pool on next use.
            "retry": Retry(NoBackoff(), 0),
            **_NO_CLIENT_SETINFO,
            **extra,
        }
        return aioredis.Redis.from_url(self.url, **options)

    async def start(self) -> None:
        # A blocking pool: under load a command waits (up to 5 s) for a free connection
        # instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=self._pool_size,
            timeout=5.0,
            decode_responses=True,
            socket_connect_timeout=2.0,
            socket_timeout=WAITAOF_TIMEOUT_MS / 1000 + 5.0,
            socket_keepalive=True,
            socket_keepalive_options=_KEEPALIVE,
            retry=Retry(NoBackoff(), 0),
            **_NO_CLIENT_SETINFO,
        )
        self._r = aioredis.Redis.from_pool(pool)
        r = self._r
        try:
            info = await r.info("server")
            self.server_version = parse_version(str(info.get("redis_version", "0")))
            try:
                cfg = await r.config_get("append*")
                appendonly: str | None = cfg.get("appendonly")
                appendfsync: str | None = cfg.get("appendfsync")
            except RedisError as exc:
                if isinstance(exc, RedisConnectionError | RedisTimeoutError):
                    raise
                appendonly = appendfsync = None
        except RedisError as exc:
            await self._drop_client()
            raise StoreUnavailableError(f"redis at {self._where()}: {exc}") from exc
        try:
            self._waitaof, warning = durability_plan(
                version=self.server_version,
                appendonly=appendonly,
                appendfsync=appendfsync,
                durability=self.durability,
                allow_no_aof=self.allow_no_aof,
            )
        except StoreConfigError:
            await self._drop_client()
            raise
        if warning:
            log.warning("redis store: %s", warning)
        log.info(
            "redis store at %s (redis %s, appendonly %s, appendfsync %s, %s), instance %s",
            self._where(),
            ".".join(map(str, self.server_version)),
            appendonly,
            appendfsync,
            "WAITAOF after each durable write" if self._waitaof else "no WAITAOF",
            self.instance,
        )

    def _where(self) -> str:
        """The URL without credentials (user, password), for messages and logs."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    async def _drop_client(self) -> None:
        if self._r is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._r.aclose()
            self._r = None

    async def close(self) -> None:
        self._closed = True
        for batcher in (self._accepts, self._receipts, self._acks, self._nonces):
            await batcher.drain()  # writes in flight finish
        await self._drop_client()

    async def ping(self) -> None:
        await self._call(lambda r: r.ping(), write=False)

    # -- plumbing -------------------------------------------------------------------

    def _conn(self) -> aioredis.Redis:
        if self._closed or self._r is None:
            raise StoreUnavailableError(
                "store is closed" if self._closed else "store is not started"
            )
        return self._r

    async def _call(
        self,
        fn: Callable[[aioredis.Redis], Awaitable[T]],
        *,
        write: bool,
        queues: bool = False,
    ) -> T:
        """Run ``fn``; every Redis failure becomes :class:`StoreUnavailableError`.

        A connection error is retried once, on a fresh connection: after Redis restarts,
        every pooled connection is stale and fails on first use. Every write is
        idempotent (a repeated accept is a duplicate with the original receipt, a
        repeated receipt or timer firing is a no-op), so running one twice is safe; but
        if the first attempt did commit, its items never reached the local hub, so when
        a write that ``queues`` items fails, local sessions are told to re-read.
        Timeouts are not retried (a slow server would only get more work).
        """
        r = self._r  # not _conn(): writes queued before close() still go out
        if r is None:
            raise StoreUnavailableError(
                "store is closed" if self._closed else "store is not started"
            )
        for attempt in range(1 + RETRIES):
            try:
                return await fn(r)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if write and queues:
                    self._resync()
                if isinstance(exc, RedisConnectionError) and attempt < RETRIES:
                    continue
                raise StoreUnavailableError(f"redis at {self._where()}: {exc}") from exc
            except RedisError as exc:  # e.g. LOADING after a restart, MISCONF (disk full)
                raise StoreUnavailableError(f"redis at {self._where()}: {exc}") from exc
        raise AssertionError("unreachable")

    async def _eval(
        self, r: aioredis.Redis, script: _Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """EVALSHA (loading the script when the server does not know it: nothing ran)."""
        try:
            return await r.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await r.script_load(script.text)
            return await r.evalsha(script.sha, len(keys), *keys, *args)

    async def _write(
        self,
        script: _Script,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        durable: bool = True,
        queues: bool = False,
    ) -> Any:
        async def run(r: aioredis.Redis) -> Any:
            if not (durable and self._waitaof):
                return await self._eval(r, script, keys, args)
            for _ in range(2):
                # WAITAOF waits for this connection's writes: same pipeline, same connection.
                pipe = r.pipeline(transaction=False)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                pipe.execute_command("WAITAOF", 1, 0, WAITAOF_TIMEOUT_MS)
                result, waited = await pipe.execute(raise_on_error=False)
                if isinstance(result, NoScriptError):
                    await r.script_load(script.text)
                    continue
                if isinstance(result, Exception):
                    raise result
                if isinstance(waited, Exception):
                    raise waited
                if int(waited[0]) < 1:
                    if queues:
                        self._resync()
                    raise StoreUnavailableError(
                        f"redis did not fsync the write within {WAITAOF_TIMEOUT_MS} ms"
                    )
                return result
            raise StoreUnavailableError("redis keeps forgetting the store's scripts")

        return await self._call(run, write=True, queues=queues)

    def _resync(self) -> None:
        if self._deliver is not None:
            try:
                self._deliver([])
            except Exception:
                log.exception("resync of local sessions failed")

    def _args(self, *rest: Any) -> list[Any]:
        return [PREFIX, self.instance, *rest]

    # -- messages -------------------------------------------------------------------

    async def accept(self, messages: Sequence[NewMessage]) -> list[AcceptResult]:
        msgs = list(messages)
        if not msgs:
            return []
        args = [arg for m in msgs for arg in accept_args(m)]
        size = sum(len(m.envelope) for m in msgs)
        raw = await self._accepts.call(args, len(msgs), size)
        out: list[AcceptResult] = []
        for m, row in zip(msgs, raw, strict=True):
            outcome = row[0]
            if outcome == "accepted":
                out.append(AcceptResult(m.id, "accepted", row[1], tuple(int(s) for s in row[2:])))
            elif outcome == "duplicate":
                out.append(AcceptResult(m.id, "duplicate", row[1]))
            else:
                out.append(AcceptResult(m.id, "conflict", None))
        return out

    async def get_message(self, msg_id: str) -> MessageRecord | None:
        h: dict[str, str] = await self._call(lambda r: _any(r.hgetall(mkey(msg_id))), write=False)
        return _record(msg_id, h) if h else None

    async def add_receipt(self, receipt: ReceiptRecord, *, notify: str) -> bool:
        (seq,) = await self.add_receipts([(receipt, notify)])
        return seq is not None

    async def add_receipts(self, receipts: Sequence[tuple[ReceiptRecord, str]]) -> list[int | None]:
        batch = list(receipts)
        if not batch:
            return []
        args: list[Any] = []
        for r, notify in batch:
            rule = transition(r.status)
            args += [
                r.msg_id,
                r.status,
                r.signer,
                str(r.at),
                r.token,
                str(r.received_at),
                str(r.step),
                notify,
                ",".join(sorted(rule.before)) if rule else "",
                rule.after if rule else "",
                "1" if rule and rule.closes else "0",
                log_leaf(r.token).hex(),
            ]
        raw = await self._receipts.call(args, len(batch), sum(len(r.token) for r, _ in batch))
        return [int(s) or None for s in raw]

    async def receipts(self, msg_id: str) -> list[ReceiptRecord]:
        rows: list[str] = await self._call(
            lambda r: _any(r.lrange(rkey(msg_id), 0, -1)), write=False
        )
        return [receipt_record(msg_id, row) for row in rows]

    # -- queues ---------------------------------------------------------------------

    async def pending(self, recipient: str, *, after: int, limit: int) -> list[QueueItem]:
        after = max(0, int(after))
        if limit <= 0:
            return []
        args = self._args(recipient, str(after), str(after + 1), str(limit))
        # A write (the consumer-group ledger), but not one that needs to be durable.
        page = await self._write(PENDING, [], args, durable=False)
        items: list[QueueItem] = []
        need: dict[str, str | None] = {}
        for entry_id, flat in page:
            f = dict(zip(flat[0::2], flat[1::2], strict=True))
            if "p" not in f:
                need[f["m"]] = None
            items.append(
                QueueItem(
                    seq=int(entry_id.split("-", 1)[0]),
                    recipient=recipient,
                    type=f["t"],
                    msg_id=f["m"],
                    payload=f.get("p", ""),
                    enqueued_at=int(f["at"]),
                    reminder=f.get("r") == "1",
                    note=f.get("n") or None,
                )
            )
        if need:
            ids = list(need)

            async def envelopes(r: aioredis.Redis) -> list[Any]:
                pipe = r.pipeline(transaction=False)
                for msg_id in ids:
                    pipe.hget(mkey(msg_id), "envelope")
                return list(await pipe.execute())

            for msg_id, env in zip(ids, await self._call(envelopes, write=False), strict=True):
                need[msg_id] = env
            items = [
                i
                if i.payload or i.type != "envelope"
                else QueueItem(
                    i.seq,
                    i.recipient,
                    i.type,
                    i.msg_id,
                    need.get(i.msg_id) or "",
                    i.enqueued_at,
                    i.reminder,
                    i.note,
                )
                for i in items
            ]
        return items

    async def ack(self, recipient: str, seqs: Sequence[int]) -> int:
        ids = [f"{int(s)}-0" for s in seqs]
        if not ids:
            return 0
        (removed,) = await self._acks.call([recipient, len(ids), *ids], 1)
        return int(removed)

    async def depth(self, recipient: str) -> int:
        return int(await self._call(lambda r: r.xlen(qkey(recipient)), write=False))

    async def queue_stats(self) -> list[QueueStats]:
        rows = await self._call(
            lambda r: self._eval(r, QUEUE_STATS, [RECIPIENTS], [PREFIX, STATS_SCAN]), write=False
        )
        return [
            QueueStats(aid, int(depth), int(oldest) if oldest else None)
            for aid, depth, oldest in rows
        ]

    # -- escalation timers ------------------------------------------------------------

    async def due_timers(self, now: int, *, limit: int) -> list[tuple[Timer, MessageRecord]]:
        if limit <= 0:
            return []  # ZRANGEBYSCORE ... LIMIT 0 -1 would mean "all"
        flat = await self._write(
            DUE, [], self._args(str(now), str(limit), str(LEASE_MS)), durable=False
        )
        due = [(flat[i], int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]
        if not due:
            return []
        ids = [member.rsplit("|", 1)[0] for member, _ in due]

        async def load(r: aioredis.Redis) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for msg_id in ids:
                pipe.hgetall(mkey(msg_id))
            return list(await pipe.execute())

        records = await self._call(load, write=False)
        out: list[tuple[Timer, MessageRecord]] = []
        for (member, due_at), msg_id, h in zip(due, ids, records, strict=True):
            if not h:
                continue
            record = _record(msg_id, h)
            step = int(member.rsplit("|", 1)[1])
            out.append((Timer(msg_id, step, due_at, record.generation), record))
        return out

    async def fire(self, escalations: Sequence[Escalation]) -> list[tuple[int, ...] | None]:
        batch = list(escalations)
        if not batch:
            return []
        args = self._args()
        for e in batch:
            t = e.timer
            r = e.receipt
            args.append(
                json.dumps(
                    {
                        "msg": t.msg_id,
                        "step": str(t.step),
                        "due": str(t.due),
                        "gen": str(t.generation),
                        "items": [
                            [
                                i.recipient,
                                i.type,
                                i.payload or "",
                                "1" if i.reminder else "0",
                                i.note or "",
                            ]
                            for i in e.items
                        ],
                        "receipt": None
                        if r is None
                        else [
                            r.status,
                            r.signer,
                            str(r.at),
                            r.token,
                            str(r.received_at),
                            str(r.step),
                            log_leaf(r.token).hex(),
                        ],
                        "sender": e.sender,
                        "next": None
                        if e.next_timer is None
                        else [str(e.next_timer[0]), str(e.next_timer[1])],
                        "new_state": e.new_state or "",
                        "released": list(e.released),
                        "drop": e.drop_queued,
                        "close": e.close,
                        "record_step": e.record_step,
                    }
                )
            )
        raw = await self._write(FIRE, [], args, queues=True)
        return [tuple(int(s) for s in row[1:]) if int(row[0]) else None for row in raw]

    async def timer_stats(self, now: int, *, overdue_after_ms: int) -> tuple[int, int, int | None]:
        async def q(r: aioredis.Redis) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            pipe.zcard(TIMERS)
            pipe.zcount(TIMERS, "-inf", f"({now - overdue_after_ms}")
            pipe.zrange(TIMERS, 0, 0, withscores=True)
            return list(await pipe.execute())

        total, overdue, first = await self._call(q, write=False)
        nxt = int(first[0][1]) if first else None
        return int(total), int(overdue), nxt

    async def open_escalations(self, *, limit: int) -> list[MessageRecord]:
        ids: list[str] = await self._call(
            lambda r: _any(r.zrevrange(ESCALATING, 0, max(0, limit * 2 - 1))), write=False
        )
        if not ids:
            return []

        async def load(r: aioredis.Redis) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for msg_id in ids:
                pipe.hgetall(mkey(msg_id))
            return list(await pipe.execute())

        out = []
        for msg_id, h in zip(ids, await self._call(load, write=False), strict=True):
            if h and h["state"] not in TERMINAL_STATES and int(h["step"]) > 0:
                out.append(_record(msg_id, h))
        return out[:limit]

    # -- coordination between instances -----------------------------------------------

    async def listen(self, deliver: Callable[[list[QueueItem]], None]) -> None:
        self._conn()
        self._deliver = deliver
        backoff = 0.05
        try:
            while True:
                sub = self._client(socket_timeout=None, health_check_interval=10)
                pubsub = sub.pubsub()
                subscribed = False
                try:
                    await pubsub.subscribe(CHANNEL)
                    subscribed = True
                    # Subscribed: whatever was committed while we were not is in the store.
                    deliver([])
                    backoff = 0.05
                    while True:
                        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                        if msg is None:
                            continue
                        self._handle_push(msg["data"], deliver)
                except (RedisError, OSError) as exc:
                    log.warning("redis push listener: %s; resubscribing", exc)
                    if subscribed:
                        # Pushes from other instances stop here: sessions re-read, and if
                        # Redis cannot be reached they close, so their daemons reconnect
                        # (to an instance that can reach it, when only this one cannot).
                        deliver([])
                finally:
                    with contextlib.suppress(RedisError, OSError):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                    with contextlib.suppress(RedisError, OSError):
                        await sub.aclose()
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
        finally:
            self._deliver = None

    def _handle_push(self, data: str, deliver: Callable[[list[QueueItem]], None]) -> None:
        origin, _, body = data.partition("\n")
        if origin == self.instance:
            return  # our own commit: the hub had it before the script returned
        try:
            items = [_pushed_item(raw) for raw in json.loads(body)]
        except (ValueError, TypeError) as exc:
            log.warning("dropping a malformed push from %s: %s", origin, exc)
            return
        if items:
            deliver(items)

    async def claim_nonce(self, nonce: str, expires_at: int) -> bool:
        ttl = max(1, min(expires_at - int(time.time()), 7 * 86_400))
        (new,) = await self._nonces.call([nonce, ttl], 1)
        return bool(int(new))

    # -- attachments ----------------------------------------------------------------

    async def put_attachment(self, digest: str, *, uploader: str, size: int, at: int) -> bool:
        new = await self._write(
            PUT_ATTACHMENT, [akey(digest), UPLOADS], [uploader, str(size), str(at), digest]
        )
        return bool(int(new))

    async def attachment_uploader(self, digest: str) -> str | None:
        uploader: str | None = await self._call(
            lambda r: _any(r.hget(akey(digest), "uploader")), write=False
        )
        return uploader

    async def may_read_attachment(self, digest: str, authority: str) -> bool:
        uploader = await self._call(lambda r: r.hget(akey(digest), "uploader"), write=False)
        if uploader is None:
            return False
        if uploader == authority:
            return True
        return bool(
            await self._call(lambda r: r.sismember(readers_key(digest), authority), write=False)
        )

    # -- the log (relay/store/redislog.py) -------------------------------------------

    async def log_head(self) -> LogHead:
        return await self._log.head()

    async def log_nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return await self._log.nodes(keys)

    # -- retention ------------------------------------------------------------------

    async def prune(self, before: int, *, limit: int) -> Pruned:
        if not self._indexed:
            indexed = await self._call(index_for_retention, write=True)
            if indexed:
                log.info("indexed %d messages stored before retention existed", indexed)
            self._indexed = True
        return pruned(await self._write(PRUNE, [], self._args(str(before), str(max(0, limit)))))
