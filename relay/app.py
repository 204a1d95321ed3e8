"""The one factory that builds the relay: ``create_app(settings, *, store=None, clock=None)``.

Everything the app needs is built here or passed in; nothing lives at module level.
Startup (in ``cleanup_ctx``) opens the store, loads the relay identity and the
directory (off the event loop), and starts the maintenance loop; shutdown closes the
WebSockets with "going away", then the store, finishing writes in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web

from keys.encoding import now_ms
from keys.errors import KeysError
from keys.httpsig import NonceCache
from keys.identity import Identity
from keys.keystore import load_keystore, resolve_passphrase
from relay.api.auth import auth_middleware
from relay.api.handlers import routes
from relay.api.openapi import setup_openapi
from relay.api.ops import setup_ops
from relay.api.problems import problem_middleware
from relay.api.state import CLOCK, CORE, DIRECTORY, METRICS, NONCES, SETTINGS, SOCKETS, STORE
from relay.core.directory import DirectoryHolder
from relay.core.metrics import Metrics
from relay.core.relay import Clock, Limits, RelayCore
from relay.settings import RelaySettings
from relay.store.base import QueueItem, Store, StoreError
from relay.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)
MAINTENANCE_INTERVAL_S = 5.0


class StartupError(Exception):
    """The relay cannot start: a one-line reason (keystore, directory, store)."""


def load_identity(settings: RelaySettings) -> Identity:
    try:
        passphrase = resolve_passphrase(
            env=settings.keystore_passphrase_env,
            file=settings.keystore_passphrase_file,
            prompt=None,
        )
        identity = load_keystore(settings.keystore, passphrase)
    except KeysError as exc:
        raise StartupError(f"relay keystore: {exc}") from exc
    if identity.kind != "relay":
        raise StartupError(f"{settings.keystore} holds a {identity.kind} identity, not a relay")
    return identity


def make_store(settings: RelaySettings) -> Store:
    if settings.store == "sqlite":
        return SQLiteStore(settings.db_path)
    from relay.store.redis import RedisStore

    return RedisStore(
        settings.redis_url,
        durability=settings.redis_durability,
        allow_no_aof=settings.redis_allow_no_aof,
    )


def create_app(
    settings: RelaySettings, *, store: Store | None = None, clock: Clock | None = None
) -> web.Application:
    clock = clock or now_ms
    app = web.Application(
        middlewares=[problem_middleware, auth_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock
    app[STORE] = store or make_store(settings)
    app[NONCES] = NonceCache()
    app[METRICS] = Metrics()
    app[SOCKETS] = set()
    app[DIRECTORY] = DirectoryHolder(
        settings.directory_dir,
        lambda: [settings.root_public_key()],
        settings.data_dir / "directory-pin.json",
    )
    app.router.add_routes(routes)
    setup_openapi(app)
    setup_ops(app)  # /metrics, /ops: operator-authenticated
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_close_sockets)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = app[STORE]
    holder = app[DIRECTORY]
    try:
        await asyncio.to_thread(settings.data_dir.mkdir, parents=True, exist_ok=True)
        identity = await asyncio.to_thread(load_identity, settings)
        await asyncio.to_thread(holder.load)
    except KeysError as exc:
        raise StartupError(f"directory: {exc}") from exc
    if holder.current.get(identity.id) is None:
        raise StartupError(f"relay {identity.id} is not listed in the directory")
    try:
        await store.start()
    except StoreError as exc:  # unreachable, or configured so it cannot keep the promise
        raise StartupError(f"store: {exc}") from exc
    app[CORE] = RelayCore(
        store=store,
        identity=identity,
        directory=lambda: holder.current,
        clock=app[CLOCK],
        limits=Limits(
            max_envelope_bytes=settings.max_envelope_bytes,
            max_batch=settings.max_batch,
            max_message_lifetime_ms=settings.max_message_lifetime_ms,
            clock_skew_ms=settings.clock_skew_ms,
            delivery_window=settings.delivery_window,
        ),
        policies=settings.policies,
        metrics=app[METRICS],
    )
    core = app[CORE]
    core.prober.interval_s = settings.probe_interval_s
    tasks = [
        asyncio.create_task(_maintenance(app), name="relay-maintenance"),
        asyncio.create_task(
            core.escalation.run(interval_s=settings.escalation_interval_s), name="escalation"
        ),
        asyncio.create_task(_listen(core), name="store-listener"),
        asyncio.create_task(core.prober.run(), name="probes"),
    ]
    log.info("relay %s ready (directory version %d)", identity.id, holder.current.version)
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await store.close()


async def _listen(core: RelayCore) -> None:
    """Pushes committed by other relay instances (shared stores only); retried on error."""

    def deliver(items: list[QueueItem]) -> None:
        if items:
            core.hub.publish(items)
            return
        # The store may have missed pushes (its listener reconnected, or a write's outcome
        # is unknown): every local session and long-poll waiter re-reads its queue.
        for group in core.hub.sessions.values():
            for session in group:
                session.resync()

    while True:
        try:
            await core.store.listen(deliver)
            return  # a single-instance store has nothing to listen to
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("store listener failed; retrying")
            await asyncio.sleep(1.0)


async def _maintenance(app: web.Application) -> None:
    """Periodic chores; one failing step is logged and the loop goes on."""
    holder = app[DIRECTORY]
    while True:
        await asyncio.sleep(MAINTENANCE_INTERVAL_S)
        try:
            await asyncio.to_thread(holder.load)
        except Exception:
            log.exception("directory reload failed; keeping version %d", holder.current.version)
        try:
            app[NONCES].purge(app[CLOCK]() // 1000)
        except Exception:
            log.exception("nonce cache purge failed")


async def _close_sockets(app: web.Application) -> None:
    sockets = app[SOCKETS]
    for ws in [*sockets]:
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"relay shutting down")
