"""The one factory that builds the relay: ``create_app(settings, *, store=None, clock=None)``.

Everything the app needs is built here or passed in; nothing lives at module level.
Startup (in ``cleanup_ctx``) opens the store, loads the relay identity and the
directory (off the event loop), and starts the maintenance loop; shutdown closes the
WebSockets with "going away", then the store, finishing writes in flight.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from aiohttp import WSCloseCode, web

from keys.directory import Directory
from keys.encoding import now_ms
from keys.errors import KeysError
from keys.httpsig import NonceCache
from keys.identity import Identity
from keys.keystore import load_keystore, resolve_passphrase
from keys.tls import spki_sha256_pem
from relay.api.auth import auth_middleware
from relay.api.connections import ConnectionGuard, ConnectionLimits, GuardedSite
from relay.api.handlers import routes
from relay.api.openapi import setup_openapi
from relay.api.ops import setup_ops
from relay.api.problems import problem_middleware
from relay.api.state import (
    CLOCK,
    CORE,
    DIRECTORY,
    DISK,
    GUARD,
    METRICS,
    NONCES,
    RATE_LIMITER,
    SETTINGS,
    SOCKET_KEYS,
    SOCKETS,
    STORE,
    Core,
)
from relay.core.delivery import Clock, Delivery, Hub
from relay.core.directory import DirectoryHolder
from relay.core.disk import DiskHealth, remove_stale_uploads
from relay.core.escalation import EscalationEngine
from relay.core.intake import Intake, Limits, MessageIndex
from relay.core.log import TransparencyLog
from relay.core.metrics import Metrics
from relay.core.probes import Prober
from relay.core.ratelimit import RateLimiter
from relay.core.readmodel import DIRECTORY_WARN_MS, ReadModel
from relay.core.retention import Retention
from relay.lock import DataDirInUseError, DataDirLock
from relay.settings import RelaySettings
from relay.store.base import QueueItem, Store, StoreError
from relay.store.memory import MemoryStore
from relay.store.sqlite import SQLiteStore

log = logging.getLogger(__name__)
MAINTENANCE_INTERVAL_S = 5.0
_WARNED_HOUR: web.AppKey[list[int]] = web.AppKey("directory_warned_hour")
CLOSE_TIMEOUT_S = 2.0
LINGERING_S = 2.0
"""How long an unread request body is drained after the answer before the close."""


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
    if settings.store == "memory":
        return MemoryStore()
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
    app[SOCKET_KEYS] = {}
    app[_WARNED_HOUR] = [-1]  # mutable: the app is frozen once it runs
    app[DIRECTORY] = make_directory(settings)
    app[GUARD] = ConnectionGuard(connection_limits(settings), app[METRICS].registry)
    app[RATE_LIMITER] = RateLimiter(settings.rate_limits)
    app[DISK] = DiskHealth(settings.data_dir / "attachments")
    app.router.add_routes(routes)
    setup_openapi(app)
    setup_ops(app)  # /metrics, /ops: operator-authenticated
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_close_sockets)
    return app


def connection_limits(settings: RelaySettings) -> ConnectionLimits:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return ConnectionLimits.derive(
        soft if soft != resource.RLIM_INFINITY else 1_048_576,
        header_timeout_s=settings.header_timeout_s,
        idle_timeout_s=settings.idle_timeout_s,
        total=settings.max_unauthenticated_connections,
        per_source=settings.max_unauthenticated_per_source,
    )


def tls_context(settings: RelaySettings, directory: Directory) -> ssl.SSLContext | None:
    """The server's TLS context, or ``None`` with ``plain_http``; :class:`StartupError`
    when neither is configured or the certificate is not pinned in the directory."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        if settings.tls_cert_file is not None or settings.tls_key_file is not None:
            raise StartupError("set both tls_cert_file and tls_key_file, or neither")
        if settings.plain_http:
            return None
        raise StartupError(
            "no TLS certificate: set tls_cert_file and tls_key_file (keys tls create), "
            "or plain_http = true behind a TLS-terminating proxy"
        )
    try:
        pem = settings.tls_cert_file.read_bytes()
        pin = spki_sha256_pem(pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError, KeysError) as exc:
        raise StartupError(f"TLS certificate or key: {exc}") from exc
    if pin not in directory.tls_pins():
        raise StartupError(
            f"the TLS certificate {settings.tls_cert_file} (pin {pin}) is not listed under "
            f"tls_spki_sha256 in directory version {directory.version}: daemons would "
            "refuse it; publish a directory version that lists it first"
        )
    return context


async def start_serving(
    app: web.Application,
    settings: RelaySettings,
    *,
    host: str | None = None,
    port: int | None = None,
    tls: bool = True,
) -> tuple[web.AppRunner, GuardedSite]:
    """Run ``app`` on a guarded TCP site (deadlines, connection bounds, problem+json for
    parser errors); the caller cleans the runner up. With ``tls`` the site serves HTTPS
    with the configured certificate, or plain HTTP only if ``plain_http`` says so."""
    runner = web.AppRunner(
        app,
        shutdown_timeout=settings.shutdown_grace_s,
        handle_signals=False,
        access_log=None,
        # aiohttp's own idle timer is a backstop: the guard's deadline (counted in
        # /metrics) closes an idle connection first.
        keepalive_timeout=settings.idle_timeout_s + 1.0,
        lingering_time=LINGERING_S,
    )
    await runner.setup()
    try:
        context = (
            await asyncio.to_thread(tls_context, settings, app[DIRECTORY].current) if tls else None
        )
        site = GuardedSite(
            runner,
            settings.host if host is None else host,
            settings.port if port is None else port,
            guard=app[GUARD],
            ssl_context=context,
        )
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, site


def make_directory(settings: RelaySettings) -> DirectoryHolder:
    return DirectoryHolder(
        settings.directory_dir,
        lambda: [settings.root_public_key()],
        settings.data_dir / "directory-pin.json",
    )


async def prepare(settings: RelaySettings, store: Store, holder: DirectoryHolder) -> Identity:
    """Everything ``relay serve`` checks before it serves: the data folder, the keystore
    and its passphrase, a verified directory listing this relay, and a working store
    (started; the caller closes it). Raises :class:`StartupError` with one line."""
    try:
        await asyncio.to_thread(settings.data_dir.mkdir, parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"data_dir {settings.data_dir}: {exc.strerror or exc}") from exc
    identity = await asyncio.to_thread(load_identity, settings)
    try:
        await asyncio.to_thread(holder.load)
    except KeysError as exc:
        raise StartupError(f"directory: {exc}") from exc
    if holder.current.get(identity.id) is None:
        raise StartupError(f"relay {identity.id} is not listed in the directory")
    try:
        await store.start()
    except StoreError as exc:  # unreachable, or configured so it cannot keep the promise
        raise StartupError(f"store: {exc}") from exc
    return identity


async def check(settings: RelaySettings) -> str:
    """``relay check-config``: :func:`prepare` without serving, firing or binding."""
    store, holder = make_store(settings), make_directory(settings)
    identity = await prepare(settings, store, holder)
    try:
        await store.ping()
        context = await asyncio.to_thread(tls_context, settings, holder.current)
    except StoreError as exc:
        raise StartupError(f"store: {exc}") from exc
    finally:
        await store.close()
    served = "HTTPS" if context is not None else "plain HTTP (plain_http)"
    return f"relay {identity.id}, directory version {holder.current.version}, {served}"


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    settings, store, holder = app[SETTINGS], app[STORE], app[DIRECTORY]
    lock: DataDirLock | None = None
    if settings.store != "redis":  # one process owns a SQLite (or memory) relay's state
        lock = DataDirLock(settings.data_dir)
        try:
            await asyncio.to_thread(settings.data_dir.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(lock.acquire)
        except DataDirInUseError as exc:
            raise StartupError(str(exc)) from exc
        except OSError as exc:
            raise StartupError(f"data_dir {settings.data_dir}: {exc.strerror or exc}") from exc
    try:
        identity = await prepare(settings, store, holder)
        stale = await asyncio.to_thread(
            remove_stale_uploads,
            settings.data_dir / "attachments" / "incoming",
            # Alone on its data folder, every temp file is from an interrupted relay;
            # instances sharing one (Redis) leave each other's live uploads alone.
            older_than_s=stale_upload_age(settings) if settings.store == "redis" else 0,
        )
        if stale:
            log.info("removed %d temporary upload file(s) left by an interrupted relay", stale)
        try:
            core = app[CORE] = wire(app, identity, holder, store)
            tasks = [
                asyncio.create_task(_maintenance(app), name="relay-maintenance"),
                asyncio.create_task(
                    core.escalation.run(interval_s=settings.escalation_interval_s),
                    name="escalation",
                ),
                asyncio.create_task(_listen(store, core.delivery.hub), name="store-listener"),
                asyncio.create_task(core.prober.run(), name="probes"),
                asyncio.create_task(
                    Retention(
                        store=store,
                        clock=app[CLOCK],
                        metrics=app[METRICS],
                        attachments=settings.data_dir / "attachments",
                        days=settings.retention_days,
                        interval_s=settings.retention_interval_s,
                        index=core.intake.index,
                    ).run(),
                    name="retention",
                ),
            ]
            log.info("relay %s ready (directory version %d)", identity.id, holder.current.version)
            _directory_expiry(app)
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await store.close()
    finally:
        if lock is not None:
            await asyncio.to_thread(lock.release)


def wire(app: web.Application, identity: Identity, holder: DirectoryHolder, store: Store) -> Core:
    """Build the collaborators, each with its explicit dependencies (no locator)."""
    settings, clock, metrics = app[SETTINGS], app[CLOCK], app[METRICS]

    def directory() -> Directory:
        return holder.current

    hub = Hub()
    delivery = Delivery(store=store, hub=hub, clock=clock, window=settings.delivery_window)
    index = MessageIndex()
    prober = Prober(hub=hub, directory=directory, clock=clock, interval_s=settings.probe_interval_s)
    read = ReadModel(
        store=store,
        hub=hub,
        prober=prober,
        index=index,
        relay_id=identity.id,
        directory=directory,
        clock=clock,
        unreachable_after_ms=int(settings.unreachable_after_s * 1000),
    )
    intake = Intake(
        store=store,
        delivery=delivery,
        identity=identity,
        directory=directory,
        clock=clock,
        index=index,
        limits=Limits(
            max_envelope_bytes=settings.max_envelope_bytes,
            max_batch=settings.max_batch,
            max_message_lifetime_ms=settings.max_message_lifetime_ms,
            clock_skew_ms=settings.clock_skew_ms,
        ),
        policies=settings.policies,
        metrics=metrics,
        reachability=read.reachability,  # the sender is told who is offline
    )
    escalation = EscalationEngine(
        store=store,
        delivery=delivery,
        identity=identity,
        directory=directory,
        clock=clock,
        metrics=metrics,
    )
    log = TransparencyLog(store=store, identity=identity, clock=clock)
    return Core(intake, delivery, escalation, prober, read, store, log)


async def _listen(store: Store, hub: Hub) -> None:
    """Pushes committed by other relay instances (shared stores only); retried on error."""

    def deliver(items: list[QueueItem]) -> None:
        if items:
            hub.publish(items)
        else:
            # The store may have missed pushes (its listener reconnected, or a write's
            # outcome is unknown): every local session and long-poll waiter re-reads.
            hub.resync_all()

    while True:
        try:
            await store.listen(deliver)
            return  # a single-instance store has nothing to listen to
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("store listener failed; retrying")
            await asyncio.sleep(1.0)


def _directory_expiry(app: web.Application) -> None:
    """Publish the directory's expiry; warn (at most hourly) in the last 14 days."""
    current, metrics = app[DIRECTORY].current, app[METRICS]
    expires = current.expires
    metrics.directory_expires.set(0 if expires is None else expires / 1000)
    if expires is None or expires - app[CLOCK]() > DIRECTORY_WARN_MS:
        return
    hour = app[CLOCK]() // 3_600_000
    warned = app[_WARNED_HOUR]
    if warned[0] != hour:
        warned[0] = hour
        log.warning(
            "directory version %d %s on %s: daemons refuse it after their grace; "
            "the directory keeper must publish a newer version",
            current.version,
            "expired" if expires <= app[CLOCK]() else "expires",
            datetime.fromtimestamp(expires / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )


async def cut_revoked_sessions(app: web.Application) -> int:
    """Close every WebSocket whose upgrade was signed with a key the directory in force no
    longer lets its authority use (revoked, expired, removed); returns how many. Each
    close is bounded in time, so a peer that stops reading cannot stall the caller."""
    directory, now = app[DIRECTORY].current, app[CLOCK]()
    doomed = []
    for ws, (authority, kid) in list(app[SOCKET_KEYS].items()):
        found = directory.signer(kid)
        if found is not None and found[0].id == authority and found[1].usable_at(now):
            continue
        log.warning(
            "closing the session of %s: its signing key %s is no longer valid", authority, kid
        )
        app[SOCKET_KEYS].pop(ws, None)
        doomed.append(ws)

    async def close(ws: web.WebSocketResponse) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await ws.close(
                    code=WSCloseCode.POLICY_VIOLATION, message=b"signing key no longer valid"
                )
        except TimeoutError:  # the peer stopped reading: drop the connection
            writer = ws._writer  # aiohttp has no public abort
            if writer is not None:
                writer.transport.close()

    await asyncio.gather(*(close(ws) for ws in doomed), return_exceptions=True)
    return len(doomed)


def stale_upload_age(settings: RelaySettings) -> float:
    """How long an upload's temp file may go untouched before it is surely abandoned."""
    return 2 * settings.body_timeout_s + 60


async def _maintenance(app: web.Application) -> None:
    """Periodic chores; one failing step is logged and the loop goes on."""
    holder, settings = app[DIRECTORY], app[SETTINGS]
    while True:
        await asyncio.sleep(MAINTENANCE_INTERVAL_S)
        try:
            await asyncio.to_thread(holder.load)
        except Exception:
            log.exception("directory reload failed; keeping version %d", holder.current.version)
        try:
            _directory_expiry(app)
        except Exception:
            log.exception("publishing the directory's expiry failed")
        try:
            await cut_revoked_sessions(app)
        except Exception:
            log.exception("checking open sessions' keys failed")
        try:
            await asyncio.to_thread(
                remove_stale_uploads,
                settings.data_dir / "attachments" / "incoming",
                older_than_s=stale_upload_age(settings),
            )
        except Exception:
            log.exception("removing abandoned upload files failed")
        try:
            app[NONCES].purge(app[CLOCK]() // 1000)
        except Exception:
            log.exception("nonce cache purge failed")


async def _close_sockets(app: web.Application) -> None:
    sockets = app[SOCKETS]
    for ws in [*sockets]:
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"relay shutting down")
