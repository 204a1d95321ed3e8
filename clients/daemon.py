"""The authority's daemon: always on, outbound only, exactly-once into the local inbox.

For every envelope pushed by the relay it verifies and decrypts (off the event loop),
deduplicates by message id, commits it to the local inbox, and only then returns a
signed ``delivered`` receipt and acknowledges the item. A crash anywhere in between
means the relay pushes the item again; the inbox sees the id, keeps one copy, and the
receipt is sent again (the relay ignores the repeat). Receipts about messages this
authority sent are verified and recorded in the inbox.

The connection is a WebSocket (or long-poll), reconnected with exponential backoff and
full jitter. SIGTERM sets the stop event: the batch in hand is finished and
acknowledged, then the connection is closed; nothing accepted is lost, because what is
not acknowledged is redelivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clients.client import Event, QueueItem, RelayClient, RelayStream
from clients.config import LOOPBACK_HOSTS, ClientSettings
from clients.directory import DirectoryExpiredError, PinnedDirectory
from clients.errors import ClientError, RelayProblem, StreamClosedError
from clients.escalations import envelope_event, is_release, notice_event
from clients.hooks import HookRunner
from clients.logwatch import ForkedLogError, LogWatch
from clients.metrics import Stats, serve_metrics
from clients.outbox import OutboxWorker, log_event
from clients.retention import RetentionWorker
from clients.store import EVENTS, Inbox
from keys import wire
from keys.attachments import decrypt_file
from keys.directory import Directory
from keys.encoding import now_ms
from keys.envelope import OpenedEnvelope, envelope_hash, open_envelope
from keys.errors import KeysError, UnknownSenderError, UnknownSigningKeyError
from keys.files import private_dir
from keys.identity import Identity
from keys.jws import unverified_header
from keys.keystore import write_private_file
from keys.loghead import SignedHead
from keys.receipts import Receipt, receipt_body, sign_probe, sign_receipts, verify_receipt

log = logging.getLogger(__name__)
Clock = Callable[[], int]
Reply = wire.ReceiptOk | wire.ReceiptsOk | wire.ErrorFrame
RECEIPT_REPLY_TIMEOUT_S = 30.0
MAX_UNCONFIRMED_BATCHES = 8
STALE_DIRECTORY_ERRORS = (UnknownSenderError, UnknownSigningKeyError)


@dataclass
class _Processed:
    """The outcome of one batch: what to send back and what to acknowledge."""

    receipts: list[str] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    downloads: list[OpenedEnvelope] = field(default_factory=list)


class Daemon:
    def __init__(
        self,
        settings: ClientSettings,
        identity: Identity,
        *,
        clock: Clock | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.clock = clock or now_ms
        self.rand = rand
        self.stats = Stats()
        self.connected = asyncio.Event()
        self.inbox: Inbox | None = None
        self.client: RelayClient | None = None
        self.pin: PinnedDirectory | None = None
        self._refreshed_at = 0
        self._refs = 0
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        self._downloads: set[asyncio.Task[None]] = set()
        self._sends: set[asyncio.Task[None]] = set()
        self._ws: RelayStream | None = None
        self._hooks: HookRunner | None = None
        self.outbox: OutboxWorker | None = None
        self.retention: RetentionWorker | None = None
        self.logwatch = LogWatch(settings.log_head_path)
        self.log_head: SignedHead | None = None
        """The relay's newest log head, verified to extend the ones seen before."""
        self.log_fork: str | None = None
        """Set while the relay shows a log that does not extend the held head."""
        self.console_link: str | None = None
        """The console's current one-time sign-in link (also logged)."""
        self.metrics_address: Any = None
        """(host, port) of the metrics endpoint once it listens (``metrics_port``)."""

    async def _serve_console(self) -> Any:
        # The console's modules (Jinja2, Babel) are imported off the loop: Babel reads
        # the system's timezone files when imported.
        await asyncio.to_thread(importlib.import_module, "clients.console.app")
        from clients.console.app import ConsoleContext, serve_console
        from clients.console.tls import console_ssl_context

        assert self.inbox is not None
        ctx = ConsoleContext(
            self.settings,
            self.identity,
            self.inbox,
            self.clock,
            directory=lambda: self.pin.current if self.pin is not None else None,
            presence=lambda: self._http().presence(),
            policy=lambda: self._http().policy(),
        )
        s = self.settings
        assert s.console_port is not None

        def on_link(url: str) -> None:
            self.console_link = url
            log.info("console: sign in at %s (a one-time link)", url)
            # Also in data_dir/console-link (0600), for the administrator and the demo.
            task = asyncio.get_running_loop().create_task(
                asyncio.to_thread(write_private_file, s.data_dir / "console-link", url.encode())
            )
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)

        ssl_context = await asyncio.to_thread(console_ssl_context, s)
        if s.console_host not in LOOPBACK_HOSTS:
            log.warning(
                "console: listening on %s, reachable from the network (over TLS)", s.console_host
            )
        return await serve_console(
            ctx, s.console_host, s.console_port, on_link=on_link, ssl_context=ssl_context
        )

    @property
    def directory(self) -> Directory:
        if self.pin is None:
            raise ClientError("no directory yet")
        return self.pin.require(self.clock())

    # -- lifecycle ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then finish the batch in hand and close."""
        s = self.settings
        await asyncio.to_thread(private_dir, s.data_dir)
        self.pin = await asyncio.to_thread(PinnedDirectory.load, s)
        self.inbox = await Inbox.open(s.inbox_path)
        urls = s.relay_endpoints
        current = 0
        self.client = RelayClient(
            urls[current], self.identity, clock=self.clock, tls_pins=self.pin.tls_pins
        )
        self._hooks = HookRunner(self.inbox, s.hooks, clock=self.clock)
        hook_stop = asyncio.Event()
        hook_task = asyncio.create_task(
            self._hooks.run_forever(hook_stop, s.hook_interval_s), name="hooks"
        )
        hooks = self._hooks

        async def on_event(event: str, msg_id: str) -> None:
            """An outbox event (``expired``: never submitted) reaches people: the log and
            the hooks that want it."""
            await log_event(event, msg_id)
            if event in EVENTS:
                await hooks.fire(event, msg_id, at=self.clock())

        self.outbox = OutboxWorker(
            self.inbox,
            lambda: self._http(),
            lambda: self.directory,
            clock=self.clock,
            on_event=on_event,
        )
        outbox_task = asyncio.create_task(
            self.outbox.run_forever(hook_stop, s.outbox_interval_s), name="outbox"
        )
        self.retention = RetentionWorker(
            self.inbox, days=s.retention_days, archive_dir=s.retention_archive_dir, clock=self.clock
        )
        retention_task = asyncio.create_task(
            self.retention.run_forever(hook_stop, s.retention_interval_s), name="retention"
        )
        metrics = console = None
        backoff = s.reconnect_min_s
        try:
            if s.console_port is not None:
                console = await self._serve_console()
            if s.metrics_port is not None:
                metrics = await serve_metrics(self, s.metrics_host, s.metrics_port)
                self.metrics_address = metrics.addresses[0]
            while not stop.is_set():
                try:
                    await self.refresh_directory()
                    if s.transport == "websocket":
                        await self._run_websocket(stop)
                    else:
                        await self._run_longpoll(stop)
                    backoff = s.reconnect_min_s
                except DirectoryExpiredError as exc:
                    # Fail closed, loudly: nothing is verified or acknowledged (the relay
                    # keeps every item) until a newer directory version is published.
                    log.error("%s", exc)
                except (ClientError, KeysError, OSError) as exc:
                    log.warning("relay connection failed: %s", exc)
                self.connected.clear()
                if stop.is_set():
                    break
                if len(urls) > 1:
                    # Client-side failover: each reconnect goes to the next relay instance.
                    current = (current + 1) % len(urls)
                    self.client.base_url = urls[current].rstrip("/")
                delay = backoff * self.rand()  # full jitter
                backoff = min(s.reconnect_max_s, backoff * 2)
                log.info("reconnecting in %.1f s", delay)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await stop.wait()
        finally:
            hook_stop.set()
            await asyncio.gather(hook_task, outbox_task, retention_task, return_exceptions=True)
            if metrics is not None:
                await metrics.cleanup()
            if console is not None:
                await console.cleanup()
            for task in list(self._downloads):
                task.cancel()
            await asyncio.gather(*self._downloads, return_exceptions=True)
            await self.client.close()
            await self.inbox.close()

    def _http(self) -> RelayClient:
        assert self.client is not None
        return self.client

    async def refresh_directory(self, *, force: bool = False) -> None:
        """Fetch the directory history and move the pin forward (refusing forks/rollback)."""
        now = self.clock()
        fresh = now - self._refreshed_at < self.settings.directory_refresh_s * 1000
        if self.pin is not None and self.pin.current is not None and fresh and not force:
            return
        assert self.client is not None and self.pin is not None
        current = await self.pin.refresh(self.client)
        self._refreshed_at = now
        self.pin.usable(current, now)  # fail closed past expiry + grace (logged by run())
        if current.get(self.identity.id) is None:
            raise ClientError(f"{self.identity.id} is not in directory version {current.version}")
        await self.check_log(current)

    async def check_log(self, directory: Directory) -> None:
        """Check that the relay's log extends the head held here (clients/logwatch.py).
        A fork is refused loudly: one ERROR line, ``cpar_daemon_log_inconsistent`` and
        the ``log_inconsistent`` hook event, once per pair of heads; delivery goes on
        (every message and receipt is signed end to end), the held head is kept."""
        assert self.client is not None
        try:
            checked = await self.logwatch.check(self.client, directory)
        except ForkedLogError as exc:
            held, shown = exc.held, exc.shown
            key = f"{held.size}-{shown.size}-{shown.body.root[:16]}"
            if self.log_fork != key:
                self.log_fork = key
                log.error("refusing the relay's log: %s", exc)
                if self._hooks is not None:
                    await self._hooks.fire(
                        "log_inconsistent",
                        shown.body.log,
                        at=self.clock(),
                        occurrence=key,
                        data={
                            "held_size": held.size,
                            "held_root": held.body.root,
                            "shown_size": shown.size,
                            "shown_root": shown.body.root,
                        },
                    )
            return
        except (ClientError, KeysError) as exc:
            log.warning("could not check the relay's log: %s", exc)
            return
        self.log_head = checked.head
        self.log_fork = None

    # -- WebSocket transport ------------------------------------------------------------

    async def _run_websocket(self, stop: asyncio.Event) -> None:
        assert self.client is not None
        ws = await self.client.connect_stream()
        self._ws = ws
        self.stats.connects += 1
        queue: asyncio.Queue[QueueItem | None] = asyncio.Queue()
        worker = asyncio.create_task(self._ws_worker(ws, queue), name="daemon-worker")
        stopper = asyncio.create_task(stop.wait(), name="daemon-stop")
        watch: set[asyncio.Future[Any]] = {stopper, worker}
        deadline: float | None = None
        try:
            while True:
                receive = asyncio.ensure_future(ws.receive_many())
                timeout = (
                    None
                    if deadline is None
                    else max(0.0, deadline - asyncio.get_running_loop().time())
                )
                done, _ = await asyncio.wait(
                    {receive, *watch}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if stopper in done:
                    # Stop taking new work, but keep reading: the batch in hand still needs
                    # the relay's answer to its receipts before it can be acknowledged.
                    watch.discard(stopper)
                    queue.put_nowait(None)  # stop after the batch in hand
                    deadline = asyncio.get_running_loop().time() + self.settings.shutdown_grace_s
                if worker in done or not done:
                    receive.cancel()
                    break
                if receive not in done:
                    receive.cancel()
                    continue
                try:
                    events = receive.result()
                except StreamClosedError:
                    break
                for event in events:
                    self._dispatch(event, queue)
        finally:
            worker.cancel()
            stopper.cancel()
            await asyncio.gather(worker, stopper, return_exceptions=True)
            for fut in self._waiting.values():
                fut.cancel()
            self._waiting.clear()
            await ws.close()
        if worker.done() and not worker.cancelled() and worker.exception() is not None:
            raise ClientError(f"processing failed: {worker.exception()}")

    def _dispatch(self, frame: Event, queue: asyncio.Queue[QueueItem | None]) -> None:
        if isinstance(
            frame, wire.EnvelopeItem | wire.ReceiptItem | wire.EscalationItem | wire.UnknownItem
        ):
            queue.put_nowait(frame)
        elif (
            isinstance(frame, wire.ReceiptsOk | wire.ReceiptOk | wire.ErrorFrame)
            and isinstance(frame.ref, int)
            and frame.ref in self._waiting
        ):
            fut = self._waiting.pop(frame.ref)
            if not fut.done():  # it may have timed out already
                fut.set_result(frame)
        elif isinstance(frame, wire.Probe):
            self._answer_probe(frame.nonce)
        elif isinstance(frame, wire.Hello):
            base = self.client.base_url if self.client else self.settings.relay_url
            log.info("connected to %s as %s", base, frame.authority)
            self.connected.set()
            if self.outbox is not None:
                self.outbox.wake()
        elif isinstance(frame, wire.ErrorFrame):
            log.warning("relay reported: %s", frame.problem.detail)

    def _answer_probe(self, nonce: str) -> None:
        """Answer the relay's reachability probe with our signature (cheap: one sign)."""
        if self._ws is None or self._ws.closed:
            return
        answer = sign_probe(self.identity, nonce=nonce, now=self.clock())
        task = asyncio.create_task(self._ws.answer_probe(nonce, answer))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _ws_worker(self, ws: RelayStream, queue: asyncio.Queue[QueueItem | None]) -> None:
        """Process batches; each batch's acknowledgement waits for the relay to confirm its
        receipts, while the next batch is already being processed (bounded pipeline)."""
        confirming: set[asyncio.Task[None]] = set()
        try:
            while True:
                batch = [await queue.get()]
                while not queue.empty() and len(batch) < 256:
                    batch.append(queue.get_nowait())
                stopping = any(f is None for f in batch)
                items = [f for f in batch if f is not None]
                if items:
                    done = await self.process(items)
                    while len(confirming) >= MAX_UNCONFIRMED_BATCHES:
                        await asyncio.wait(confirming, return_when=asyncio.FIRST_COMPLETED)
                        for t in [t for t in confirming if t.done()]:
                            confirming.discard(t)
                            t.result()  # a failure ends the session (and reconnects)
                    task = asyncio.create_task(self._confirm(ws, done))
                    confirming.add(task)
                if stopping:
                    break
            if confirming:
                await asyncio.gather(*confirming)
        finally:
            for t in confirming:
                t.cancel()

    async def _confirm(self, ws: RelayStream, done: _Processed) -> None:
        """Send a batch's receipts, wait until the relay stored them, then acknowledge."""
        if done.receipts:
            self._refs += 1
            ref = self._refs
            fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
            self._waiting[ref] = fut
            try:
                await ws.send_receipts(done.receipts, ref)
                answer = await asyncio.wait_for(fut, RECEIPT_REPLY_TIMEOUT_S)
            except TimeoutError as exc:
                raise ClientError("the relay did not confirm our receipts in time") from exc
            finally:
                self._waiting.pop(ref, None)
            if isinstance(answer, wire.ErrorFrame):
                raise ClientError(f"relay refused our receipts: {answer.problem.detail}")
            for result in answer.results if isinstance(answer, wire.ReceiptsOk) else []:
                if isinstance(result, wire.ProblemResult):
                    log.warning("relay refused a receipt: %s", result.problem.detail)
        if done.seqs:
            await ws.ack(done.seqs)
        self._start_downloads(done.downloads)

    # -- long-poll transport ------------------------------------------------------------

    async def _run_longpoll(self, stop: asyncio.Event) -> None:
        assert self.client is not None
        self.stats.connects += 1
        self.connected.set()
        if self.outbox is not None:
            self.outbox.wake()
        after = 0
        while not stop.is_set():
            poll = asyncio.ensure_future(self.client.poll(after=after, wait=25, limit=256))
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({poll, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if poll not in done:
                poll.cancel()
                await asyncio.gather(poll, return_exceptions=True)
                return
            items = poll.result()
            if not items:
                continue
            result = await self.process(items)
            for token in result.receipts:
                try:
                    await self.client.send_receipt(token)
                except RelayProblem as exc:
                    if exc.status >= 500:  # not stored: do not acknowledge; try again later
                        raise
                    log.warning("relay refused a receipt: %s", exc)
            if result.seqs:
                await self.client.ack(result.seqs)
            after = max(i.seq for i in items)
            self._start_downloads(result.downloads)

    # -- processing -------------------------------------------------------------------

    async def process(self, items: list[QueueItem]) -> _Processed:
        """Verify, decrypt, store and receipt a batch of pushed items."""
        assert self.inbox is not None and self._hooks is not None
        self.stats.batches += 1
        out = _Processed()
        envelopes = [i for i in items if isinstance(i, wire.EnvelopeItem)]
        receipts = [i for i in items if isinstance(i, wire.ReceiptItem)]
        notices = [i for i in items if isinstance(i, wire.EscalationItem)]
        # Items of a type this daemon does not know are acknowledged and dropped.
        out.seqs.extend(i.seq for i in items if isinstance(i, wire.UnknownItem))
        if envelopes:
            now = self.clock()
            opened = await asyncio.to_thread(self._open_all, envelopes, now)
            stale = [
                e
                for e, r in zip(envelopes, opened, strict=True)
                if isinstance(r, STALE_DIRECTORY_ERRORS)
            ]
            if stale:
                # Perhaps a newer directory lists the sender. If it cannot be fetched now,
                # do not reject (a final answer) nor acknowledge: end the session, and the
                # relay pushes these again after the reconnect.
                try:
                    await self.refresh_directory(force=True)
                except (ClientError, KeysError) as exc:
                    raise ClientError(f"directory refresh failed, will retry: {exc}") from exc
                retried = iter(await asyncio.to_thread(self._open_all, stale, now))
                opened = [
                    next(retried) if isinstance(r, STALE_DIRECTORY_ERRORS) else r for r in opened
                ]
            pairs = [
                (e, o)
                for e, o in zip(envelopes, opened, strict=True)
                if isinstance(o, OpenedEnvelope)
            ]
            # A message released to us is new to us, but its event is "released": its hooks
            # run for that event, not also for "received".
            for release, group in (
                (False, [p for p in pairs if not is_release(p[0])]),
                (True, [p for p in pairs if is_release(p[0])]),
            ):
                flags = (
                    await self.inbox.received.store_many(
                        [(o, e.envelope) for e, o in group],
                        received_at=now,
                        hooks=() if release else self._hooks.hook_names,
                    )
                    if group
                    else []
                )
                for (_, o), new in zip(group, flags, strict=True):
                    if new:
                        self.stats.stored += 1
                        if o.plaintext.attachments:
                            out.downloads.append(o)
                    else:
                        self.stats.duplicates += 1
            for e, o in pairs:
                await self._record_envelope_event(e, o, now)
            out.receipts.extend(await asyncio.to_thread(self._receipts_for, envelopes, opened, now))
            out.seqs.extend(e.seq for e in envelopes)
        if receipts:
            tokens = [i.receipt for i in receipts]
            verified = await asyncio.to_thread(self._verify_all, tokens)
            await self._record_receipts(tokens, verified)
            out.seqs.extend(i.seq for i in receipts)
        for item in notices:
            await self._record_escalation(item.notice, item.note)
            out.seqs.append(item.seq)
        return out

    def _open_all(
        self, items: list[wire.EnvelopeItem], now: int
    ) -> list[OpenedEnvelope | KeysError]:
        directory = self.directory
        out: list[OpenedEnvelope | KeysError] = []
        for item in items:
            try:
                out.append(open_envelope(item.envelope, directory, self.identity, now=now))
            except KeysError as exc:
                out.append(exc)
        return out

    def _receipts_for(
        self, items: list[wire.EnvelopeItem], opened: list[OpenedEnvelope | KeysError], now: int
    ) -> list[str]:
        """``delivered`` for what we stored (again, for repeats); ``rejected`` for refusals;
        all signed as one batch (one signature, keys/receipts.py)."""
        bodies: list[dict[str, object]] = []
        for item, result in zip(items, opened, strict=True):
            if isinstance(result, OpenedEnvelope):
                bodies.append(
                    receipt_body(
                        self.identity,
                        msg_id=result.header.id,
                        envelope_hash=result.hash,
                        status="delivered",
                        now=now,
                    )
                )
                continue
            msg_id = _header_id(item.envelope)
            self.stats.rejected += 1
            log.warning("refused message %s: %s", msg_id or "(unreadable)", result.code)
            if msg_id is not None:
                with contextlib.suppress(KeysError):  # an id that is not even a UUIDv7
                    bodies.append(
                        receipt_body(
                            self.identity,
                            msg_id=msg_id,
                            envelope_hash=envelope_hash(item.envelope),
                            status="rejected",
                            now=now,
                            reason=f"{result.code}: {result}"[:500],
                        )
                    )
        return sign_receipts(self.identity, bodies, now=now) if bodies else []

    def _verify_all(self, tokens: list[str]) -> list[Receipt | KeysError]:
        """Verify receipts about our messages (in a worker thread: one Ed25519 each)."""
        directory, now = self.directory, self.clock()
        out: list[Receipt | KeysError] = []
        for token in tokens:
            try:
                out.append(verify_receipt(token, directory, now=now))
            except KeysError as exc:
                out.append(exc)
        return out

    async def _record_receipts(
        self, tokens: list[str], verified: list[Receipt | KeysError]
    ) -> None:
        """Store the receipts that verify, in one transaction (group commit)."""
        assert self.inbox is not None
        good: list[tuple[str, Receipt]] = []
        for token, receipt in zip(tokens, verified, strict=True):
            if isinstance(receipt, KeysError):
                log.warning("dropping a receipt that does not verify: %s", receipt)
            else:
                good.append((token, receipt))
        results = await self.inbox.sent.record_receipts(
            [(r.body.msg, t, r.body.status, r.body.by, r.body.at, r.body.env) for t, r in good]
        )
        for (_, receipt), new in zip(good, results, strict=True):
            b = receipt.body
            if new is None:
                log.warning("dropping a receipt for message %s about another envelope", b.msg)
            elif new:
                self.stats.receipts += 1
                if b.status == "acknowledged" and self._hooks is not None:
                    await self._hooks.fire(
                        "acknowledged",
                        b.msg,
                        occurrence=b.by,
                        data={"by": b.by, "person": b.person, "signed_at": b.at},
                    )

    async def _record_envelope_event(
        self, item: wire.EnvelopeItem, opened: OpenedEnvelope, now: int
    ) -> None:
        """A reminder or a release: recorded once per pushed item, with its hook jobs."""
        assert self._hooks is not None
        found = envelope_event(item, opened)
        if found is None:
            return
        event, occurrence, data = found
        if await self._hooks.fire(event, item.id, at=now, occurrence=occurrence, data=data):
            log.warning(
                "%s: message %s from %s: %s", event.upper(), item.id, opened.header.from_, item.note
            )

    async def _record_escalation(self, token: str, note: str | None) -> None:
        """A relay-signed notice that a message (not necessarily ours) is unacknowledged."""
        assert self.inbox is not None
        try:
            notice = verify_receipt(token, self.directory, now=self.clock())
        except KeysError as exc:
            log.warning("dropping an escalation notice that does not verify: %s", exc)
            return
        b = notice.body
        if b.status != "escalated":
            log.warning("dropping an escalation notice with status %s", b.status)
            return
        assert self._hooks is not None
        log.warning(
            "ESCALATION: message %s is not acknowledged (step %s): %s", b.msg, b.step, b.reason
        )
        if await self.inbox.sent.record_receipt(
            b.msg, token, status=b.status, signer=b.by, at=b.at
        ):
            self.stats.escalations += 1
        occurrence, data = notice_event(b, note, token, self.directory, self.identity.id)
        await self._hooks.fire("escalation", b.msg, occurrence=occurrence, data=data)

    # -- attachments -----------------------------------------------------------------------

    def _start_downloads(self, messages: list[OpenedEnvelope]) -> None:
        for opened in messages:
            task = asyncio.create_task(self._download(opened), name=f"download-{opened.header.id}")
            self._downloads.add(task)
            task.add_done_callback(self._downloads.discard)

    async def _download(self, opened: OpenedEnvelope) -> None:
        assert self.client is not None and self.inbox is not None
        for entry in opened.plaintext.attachments:
            target = self.inbox.attachment_path(opened.header.id, entry.name)
            blob = target.with_name(f".{entry.h}.enc")
            for attempt in range(5):
                try:
                    await self.client.download_attachment(entry.h, blob)
                    await asyncio.to_thread(decrypt_file, blob, entry, target)
                    break
                except (ClientError, KeysError) as exc:
                    log.warning("attachment %s of %s: %s", entry.name, opened.header.id, exc)
                    await asyncio.sleep(min(30.0, 2.0**attempt))
                finally:
                    await asyncio.to_thread(blob.unlink, True)


def _header_id(token: str) -> str | None:
    try:
        value = unverified_header(token, what="envelope").get("id")
    except KeysError:
        return None
    return value if isinstance(value, str) else None
