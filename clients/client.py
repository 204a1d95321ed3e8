"""An async client for the relay API (docs/API.md), signing every request (RFC 9421).

::

    async with RelayClient("http://127.0.0.1:8080", identity) as relay:
        result = await relay.send(sealed.token)
        timeline = await relay.timeline(result.id)
        async with relay.stream() as events:
            async for event in events:
                ...  # keys.wire.Hello, EnvelopeItem, ReceiptItem, Probe, ReceiptsOk, ...

Bodies and frames are the models of :mod:`keys.wire`, parsed once from the bytes
received. Errors are :mod:`clients.errors` exceptions; no aiohttp type or exception
crosses this module's public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
from pydantic import BaseModel, ValidationError

from clients.errors import (
    ClientError,
    ProtocolError,
    RelayProblem,
    SigningKeyError,
    StreamClosedError,
    TransportError,
)
from clients.tls import Pins, SpkiPin, TlsPinMismatch
from keys import wire
from keys.encoding import now_ms
from keys.errors import KeysError
from keys.files import open_private, private_dir
from keys.httpsig import sign_request
from keys.identity import Identity

Clock = Callable[[], int]
M = TypeVar("M", bound=BaseModel)

SubmitResult = wire.Submitted
"""What the relay answers to an accepted envelope (``id``, ``receipt``, ``duplicate``)."""
TimelineResult = wire.Timeline
Event = (
    wire.Hello
    | wire.EnvelopeItem
    | wire.ReceiptItem
    | wire.EscalationItem
    | wire.UnknownItem
    | wire.Probe
    | wire.ReceiptOk
    | wire.ReceiptsOk
    | wire.SubmittedFrame
    | wire.ErrorFrame
    | wire.Pong
    | wire.UnknownFrame
)
"""One thing the stream delivers; several items pushed in one frame arrive one by one."""
QueueItem = wire.EnvelopeItem | wire.ReceiptItem | wire.EscalationItem | wire.UnknownItem
"""An item of the inbox; ``UnknownItem`` is a type this client does not know (ack, drop)."""


class RelayClient:
    """One authority's connection to one relay. Reuse it: it pools connections."""

    def __init__(
        self,
        base_url: str,
        identity: Identity,
        *,
        clock: Clock | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        max_connections: int = 64,
        tls_pins: Pins | None = None,
    ) -> None:
        """``max_connections`` 0 means no limit (many streams through one client).

        ``tls_pins``: for an ``https://`` relay, accept only a TLS key the pinned
        directory lists (:mod:`clients.tls`); without it, the system's CAs decide."""
        self.base_url = base_url.rstrip("/")
        self.identity = identity
        self.clock = clock or now_ms
        self._http: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self._max_connections = max_connections
        self._ssl: SpkiPin | bool = SpkiPin(tls_pins) if tls_pins is not None else True
        self._pins = tls_pins
        self._unpinned = False
        """The session was made before any directory was pinned: it never reuses a
        connection, and is replaced by a keep-alive one once pins exist."""
        self._retired: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        await asyncio.gather(*self._retired, return_exceptions=True)

    def _session(self) -> aiohttp.ClientSession:
        pins = self._pins
        if self._http is not None and self._unpinned and pins is not None and pins() is not None:
            # A directory is pinned now: no connection made before may be reused (the
            # unpinned session kept none), and every later one is checked.
            old, self._http = self._http, None
            task = asyncio.get_running_loop().create_task(old.close())
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)
        if self._http is None:
            self._unpinned = self._pins is not None and self._pins() is None
            self._http = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections, ssl=self._ssl, force_close=self._unpinned
                ),
            )
        return self._http

    def signed_headers(
        self, method: str, url: str, body: bytes | None, *, body_sha256: bytes | None = None
    ) -> dict[str, str]:
        try:
            key = self.identity.signing_key(self.clock())
        except KeysError as exc:
            raise SigningKeyError(f"cannot sign requests as {self.identity.id}: {exc}") from exc
        return sign_request(
            method=method,
            url=url,
            body=body,
            body_sha256=body_sha256,
            kid=key.kid,
            secret_key=key.secret,
            now=self.clock() // 1000,
        )

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        url = f"{self.base_url}{path}"
        if params:
            url += "?" + urlencode(params)
        return url

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: BaseModel | None = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[int, bytes]:
        """Send a signed request; (status, body bytes) of a 2xx answer, or raise."""
        return await self._send(method, path, None if body is None else wire.encode(body), params)

    async def _send(
        self, method: str, path: str, raw: bytes | None, params: dict[str, Any] | None
    ) -> tuple[int, bytes]:
        """The one place a signed request goes out: ``raw`` is a JSON body, or None."""
        url = self.url(path, params)
        headers = self.signed_headers(method, url, raw or b"")
        if raw is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._session().request(
                method, url, data=raw or b"", headers=headers
            ) as resp:
                payload = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"cannot reach the relay at {self.base_url}: {_why(exc)}") from exc
        if status >= 400:
            raise _problem(status, payload)
        return status, payload

    async def _typed(
        self,
        model: type[M],
        method: str,
        path: str,
        *,
        body: BaseModel | None = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[int, M]:
        status, payload = await self._call(method, path, body=body, params=params)
        return status, _parse(model, payload, f"{method} {path}")

    async def request(
        self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        """Send any signed JSON request; (status, decoded JSON) or raise. Prefer the
        typed methods; this one is for requests they do not cover."""
        raw = None if body is None else json.dumps(body).encode()
        status, payload = await self._send(method, path, raw, params)
        try:
            return status, (json.loads(payload) if payload else None)
        except ValueError as exc:
            raise ProtocolError(
                f"the relay answered {status} with a body that is not JSON"
            ) from exc

    # -- messages -------------------------------------------------------------------

    async def send(self, envelope: str) -> wire.Submitted:
        """Submit one envelope. Returns once the relay has made it durable."""
        _, result = await self._typed(
            wire.Submitted, "POST", "/v1/messages", body=_build(wire.SubmitOne, envelope=envelope)
        )
        return result

    async def send_batch(self, envelopes: Sequence[str]) -> list[wire.Submitted | RelayProblem]:
        """Submit several envelopes at once; one result per envelope, in order."""
        _, answer = await self._typed(
            wire.BatchResults,
            "POST",
            "/v1/messages",
            body=_build(wire.SubmitBatch, envelopes=list(envelopes)),
        )
        return [
            RelayProblem.from_problem(r.problem) if isinstance(r, wire.ProblemResult) else r
            for r in answer.results
        ]

    async def timeline(self, msg_id: str) -> wire.Timeline:
        _, result = await self._typed(wire.Timeline, "GET", f"/v1/messages/{msg_id}")
        return result

    async def send_receipt(self, receipt: str) -> bool:
        """Send a delivered/acknowledged/rejected receipt. True if the relay had not seen it."""
        _, result = await self._typed(
            wire.ReceiptStored,
            "POST",
            "/v1/receipts",
            body=_build(wire.ReceiptRequest, receipt=receipt),
        )
        return not result.duplicate

    # -- inbox (long-poll) ----------------------------------------------------------

    async def poll(self, *, after: int = 0, wait: int = 0, limit: int = 100) -> list[QueueItem]:
        """Queued items with ``seq > after``, waiting up to ``wait`` s for the first one."""
        query = _build(wire.InboxQuery, after=after, wait=wait, limit=limit)
        _, page = await self._typed(
            wire.ReceivedInboxPage, "GET", "/v1/inbox", params=query.model_dump()
        )
        return list(page.items)

    async def ack(self, seqs: Sequence[int]) -> int:
        """Remove items from the queue; returns how many were removed."""
        _, result = await self._typed(
            wire.Acked, "POST", "/v1/inbox/ack", body=_build(wire.AckRequest, seqs=list(seqs))
        )
        return result.acked

    # -- inbox (WebSocket) ------------------------------------------------------------

    async def connect_stream(self, *, heartbeat: float = 30.0) -> RelayStream:
        """Open the signed WebSocket (``/v1/stream``); close it when done."""
        url = self.url("/v1/stream")
        headers = self.signed_headers("GET", url, b"")
        try:
            ws = await self._session().ws_connect(
                url, headers=headers, heartbeat=heartbeat, max_msg_size=8 * 1024 * 1024
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise RelayProblem.from_body(
                exc.status, {"code": "handshake_refused", "detail": exc.message}
            ) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"cannot open the stream at {self.base_url}: {_why(exc)}") from exc
        return RelayStream(ws, self.base_url)

    @asynccontextmanager
    async def stream(self, *, heartbeat: float = 30.0) -> AsyncIterator[RelayStream]:
        """``async with relay.stream() as events: async for event in events: ...``"""
        events = await self.connect_stream(heartbeat=heartbeat)
        try:
            yield events
        finally:
            await events.close()

    # -- directory ------------------------------------------------------------------

    async def directory(self) -> wire.DirectoryCurrent:
        _, result = await self._typed(wire.DirectoryCurrent, "GET", "/v1/directory")
        return result

    async def presence(self) -> wire.PresenceList:
        """Which authorities' daemons the relay can reach now (``GET /v1/presence``)."""
        _, result = await self._typed(wire.PresenceList, "GET", "/v1/presence")
        return result

    async def policy(self) -> wire.PolicyList:
        """The relay's escalation policy per priority (``GET /v1/policy``)."""
        _, result = await self._typed(wire.PolicyList, "GET", "/v1/policy")
        return result

    async def directory_history(self) -> list[str]:
        return list((await self.directory_chain()).versions)

    async def directory_chain(self) -> wire.DirectoryHistory:
        """Every directory version and the root-key rotation statements, oldest first."""
        _, result = await self._typed(wire.DirectoryHistory, "GET", "/v1/directory/history")
        return result

    # -- the relay's log ------------------------------------------------------------

    async def log_head(self) -> str:
        """The relay's newest signed tree head (verify it: :func:`keys.loghead.verify_log_head`)."""
        _, result = await self._typed(wire.LogHead, "GET", "/v1/log/head")
        return result.head

    async def log_consistency(self, first: int, second: int) -> list[str]:
        """The relay's consistency proof between two sizes of its log (hex hashes)."""
        _, result = await self._typed(
            wire.ConsistencyProof,
            "GET",
            "/v1/log/consistency",
            params={"first": first, "second": second},
        )
        return list(result.proof)

    async def message_proofs(self, msg_id: str, size: int | None = None) -> wire.MessageProofs:
        """Where each receipt of a message is in the relay's log, proven against a head."""
        params = None if size is None else {"size": size}
        _, result = await self._typed(
            wire.MessageProofs, "GET", f"/v1/messages/{msg_id}/proofs", params=params
        )
        return result

    # -- attachments ----------------------------------------------------------------

    async def upload_attachment(
        self, path: str | os.PathLike[str], digest: str
    ) -> wire.AttachmentStored:
        """Upload an encrypted attachment file (streamed; never read into memory whole)."""
        file = Path(path)
        sha = await asyncio.to_thread(_sha256_file, file)
        if sha.hex() != digest:
            raise ClientError(f"{file} does not hash to {digest}")
        url = self.url(f"/v1/attachments/{digest}")
        headers = self.signed_headers("PUT", url, None, body_sha256=sha)
        headers["Content-Type"] = "application/octet-stream"
        fh = await asyncio.to_thread(file.open, "rb")
        try:
            async with self._session().put(url, data=_chunks(fh), headers=headers) as resp:
                payload = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"upload to {self.base_url} failed: {_why(exc)}") from exc
        finally:
            await asyncio.to_thread(fh.close)
        if status >= 400:
            raise _problem(status, payload)
        return _parse(wire.AttachmentStored, payload, "PUT /v1/attachments")

    async def download_attachment(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        """Download ciphertext into ``dest`` (atomically), checking its SHA-256."""
        url = self.url(f"/v1/attachments/{digest}")
        headers = self.signed_headers("GET", url, b"")
        target = Path(dest)
        tmp = target.with_name(f".{target.name}.part")
        hasher = hashlib.sha256()
        try:
            async with self._session().get(url, headers=headers) as resp:
                if resp.status >= 400:
                    raise _problem(resp.status, await resp.read())
                await asyncio.to_thread(private_dir, target.parent)
                fh = await asyncio.to_thread(open_private, tmp)
                try:
                    async for chunk in resp.content.iter_chunked(256 * 1024):
                        hasher.update(chunk)
                        await asyncio.to_thread(fh.write, chunk)
                finally:
                    await asyncio.to_thread(fh.close)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            await asyncio.to_thread(tmp.unlink, True)
            raise TransportError(f"download from {self.base_url} failed: {_why(exc)}") from exc
        if hasher.hexdigest() != digest:
            await asyncio.to_thread(tmp.unlink, True)
            raise ClientError(f"attachment {digest} arrived corrupted")
        await asyncio.to_thread(os.replace, tmp, target)
        return target


class RelayStream:
    """An open ``/v1/stream`` WebSocket: typed events in, typed frames out.

    Iterate (``async for event in stream``) or call :meth:`receive`; both end with
    :class:`~clients.errors.StreamClosedError` semantics (iteration simply stops).
    An ``items`` frame is unpacked: its items arrive one by one, in order.
    """

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, base_url: str) -> None:
        self._ws = ws
        self._base_url = base_url
        self._backlog: deque[Event] = deque()

    @property
    def closed(self) -> bool:
        return self._ws.closed

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):  # already gone
            await self._ws.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        while True:
            try:
                yield await self.receive()
            except StreamClosedError:
                return

    async def receive(self) -> Event:
        """The next event; :class:`StreamClosedError` once the stream has ended. Bound the
        wait with ``asyncio.timeout``."""
        while not self._backlog:
            self._backlog.extend(await self._next_frame())
        return self._backlog.popleft()

    async def receive_many(self) -> list[Event]:
        """Every event of the next frame (several items pushed at once), or what is left
        of the previous one: for a consumer that handles items in batches."""
        while not self._backlog:
            self._backlog.extend(await self._next_frame())
        events = list(self._backlog)
        self._backlog.clear()
        return events

    async def _next_frame(self) -> list[Event]:
        try:
            msg = await self._ws.receive()
        except (aiohttp.ClientError, OSError) as exc:
            raise StreamClosedError(f"the stream from {self._base_url} broke: {_why(exc)}") from exc
        if msg.type == aiohttp.WSMsgType.BINARY:
            raise ProtocolError("the relay sent a binary frame")
        if msg.type != aiohttp.WSMsgType.TEXT:
            code = self._ws.close_code
            raise StreamClosedError(
                f"the stream from {self._base_url} ended (close code {code})", code
            )
        try:
            frame = wire.RECEIVED_FRAME.validate_json(msg.data)
        except ValidationError as exc:
            raise ProtocolError(wire.describe(exc, "a frame from the relay", union=True)) from exc
        if isinstance(frame, wire.ReceivedItems):
            return list(frame.items)
        return [frame]

    # -- frames to the relay --------------------------------------------------------

    async def send(self, frame: BaseModel) -> None:
        """Send one frame (a :mod:`keys.wire` client frame)."""
        await self.send_raw(wire.encode_text(frame))

    async def send_raw(self, data: str | bytes) -> None:
        """Send a text (or binary) frame as is: for testing the relay's refusals."""
        try:
            if isinstance(data, bytes):
                await self._ws.send_bytes(data)
            else:
                await self._ws.send_str(data)
        except (aiohttp.ClientError, OSError, RuntimeError) as exc:
            # RuntimeError: aiohttp refuses to write on a closing connection.
            raise StreamClosedError(f"cannot send to {self._base_url}: {_why(exc)}") from exc

    async def ack(self, seqs: Sequence[int]) -> None:
        await self.send(_build(wire.AckFrame, seqs=list(seqs)))

    async def send_receipt(self, receipt: str, ref: wire.Ref = None) -> None:
        """Answered by a ``ReceiptOk`` or an ``ErrorFrame`` carrying the same ``ref``."""
        await self.send(_build(wire.ReceiptFrame, receipt=receipt, ref=ref))

    async def send_receipts(self, receipts: Sequence[str], ref: wire.Ref = None) -> None:
        """Answered by a ``ReceiptsOk`` or an ``ErrorFrame`` carrying the same ``ref``."""
        await self.send(_build(wire.ReceiptsFrame, receipts=list(receipts), ref=ref))

    async def submit(self, envelopes: Sequence[str], ref: wire.Ref = None) -> None:
        """Submit envelopes over this session (no request signature each): answered by a
        ``SubmittedFrame`` (one result per envelope) or an ``ErrorFrame`` with ``ref``."""
        await self.send(_build(wire.SubmitFrame, envelopes=list(envelopes), ref=ref))

    async def answer_probe(self, nonce: str, answer: str) -> None:
        await self.send(_build(wire.ProbeAnswer, nonce=nonce, answer=answer))

    async def ping(self) -> None:
        """Answered by a ``Pong``."""
        await self.send(wire.Ping())


def _why(exc: BaseException) -> str:
    """Why a connection failed, in words: aiohttp's text names the host again and says
    ``ssl:default`` even for plain http; the operating system's reason is what matters."""
    if isinstance(exc, TlsPinMismatch):
        return exc.message
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        return os.strerror(err.errno) if err.errno else (err.strerror or type(err).__name__)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _build(model: type[M], **fields: Any) -> M:
    """A request body or frame; what the protocol does not allow is refused before sending."""
    try:
        return model(**fields)
    except ValidationError as exc:
        raise ClientError(wire.describe(exc, f"a {model.__name__}")) from exc


def _parse(model: type[M], payload: bytes, what: str) -> M:
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise ProtocolError(wire.describe(exc, f"the answer to {what}")) from exc


def _problem(status: int, payload: bytes) -> RelayProblem:
    try:
        body = json.loads(payload) if payload else None
    except ValueError:
        body = None
    return RelayProblem.from_body(status, body)


def _sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h.digest()


async def _chunks(fh: Any) -> Any:
    while chunk := await asyncio.to_thread(fh.read, 256 * 1024):
        yield chunk
