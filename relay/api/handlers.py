"""HTTP and WebSocket handlers. They only translate between JSON and the domain core."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, get_args

from aiohttp import WSMsgType, web
from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError

from keys import wire
from keys.encoding import MESSAGE_ID_PATTERN
from keys.lifecycle import STEP_NAMES
from keys.models import Priority
from relay.api.problems import relay_error_body
from relay.api.state import (
    AUTHORITY,
    CLOCK,
    CORE,
    DIRECTORY,
    DISK,
    KEYID,
    RATE_LIMITER,
    SETTINGS,
    SOCKET_KEYS,
    SOCKETS,
    STORE,
    UPLOAD_FILE,
    UPLOAD_SHA256,
    UPLOAD_SIZE,
    Core,
)
from relay.core.delivery import Session
from relay.core.disk import DiskHealth
from relay.core.errors import (
    BodyTimeoutError,
    MalformedError,
    NotFoundError,
    RateLimitedError,
    RelayError,
    TooLargeError,
    UnavailableError,
)
from relay.core.intake import Submitted
from relay.store.base import QueueItem

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
_DIGEST = re.compile(wire.DIGEST_PATTERN)
_MSG_ID = re.compile(MESSAGE_ID_PATTERN)
WS_MAX_FRAME = 1024 * 1024
WS_CONCURRENCY = 256
T = TypeVar("T")
Q = TypeVar("Q", bound=BaseModel)
R = TypeVar("R")


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(status=status, body=wire.encode(model), content_type="application/json")


async def _parse(request: web.Request, adapter: TypeAdapter[T], *, union: bool = False) -> T:
    """The request body, parsed once into its wire model; a 400 naming what is wrong."""
    try:
        return adapter.validate_json(await request.read())
    except ValidationError as exc:
        raise MalformedError(wire.describe(exc, "request body", union=union)) from exc


def _submitted(s: Submitted, *, plan: bool = False) -> wire.Submitted:
    """The wire answer; with ``plan`` (a single new envelope), the recipients' presence
    and the escalation schedule too."""
    if not plan or s.duplicate:
        return wire.Submitted.model_construct(id=s.id, receipt=s.receipt, duplicate=s.duplicate)
    return wire.Submitted.model_construct(
        id=s.id,
        receipt=s.receipt,
        duplicate=s.duplicate,
        recipients=[
            wire.Presence.model_construct(id=aid, reachable=ok, unreachable_since=since)
            for aid, ok, since in s.presence
        ],
        schedule=[
            wire.PlannedStep.model_construct(step=step, name=STEP_NAMES.get(step, "?"), due=due)
            for step, due in s.schedule
        ],
    )


def _each(results: Sequence[R | RelayError], ok: Callable[[R], BaseModel]) -> list[Any]:
    """A batch's answers in order: ``ok`` for each success, a problem for each refusal."""
    return [
        wire.ProblemResult.model_construct(problem=relay_error_body(r))
        if isinstance(r, RelayError)
        else ok(r)
        for r in results
    ]


def wire_item(item: QueueItem) -> wire.EnvelopeItem | wire.ReceiptItem | wire.EscalationItem:
    """The wire form of a queued item (built without re-validating what the store holds)."""
    if item.type == "envelope":
        return wire.EnvelopeItem.model_construct(
            seq=item.seq,
            type="envelope",
            id=item.msg_id,
            envelope=item.payload,
            reminder=item.reminder,
            note=item.note or None,
        )
    if item.type == "escalation":
        return wire.EscalationItem.model_construct(
            seq=item.seq,
            type="escalation",
            id=item.msg_id,
            notice=item.payload,
            note=item.note or None,
        )
    return wire.ReceiptItem.model_construct(
        seq=item.seq, type="receipt", id=item.msg_id, receipt=item.payload, note=item.note or None
    )


_SUBMIT: TypeAdapter[wire.SubmitRequest] = wire.SUBMIT_REQUEST
_RECEIPT = TypeAdapter(wire.ReceiptRequest)
_ACK = TypeAdapter(wire.AckRequest)


# --- messages ---------------------------------------------------------------------


@routes.post("/v1/messages")
async def submit(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await _parse(request, _SUBMIT, union=True)
    authority: str = request[AUTHORITY]
    if isinstance(body, wire.SubmitOne):
        (result,) = await core.intake.submit(authority, [body.envelope], plan=True)
        if isinstance(result, RelayError):
            raise result
        return json_response(_submitted(result, plan=True), status=200 if result.duplicate else 201)
    results = await core.intake.submit(authority, body.envelopes)
    return json_response(wire.BatchResults.model_construct(results=_each(results, _submitted)))


@routes.get("/v1/messages/{id}")
async def timeline(request: web.Request) -> web.Response:
    msg_id = request.match_info["id"]
    if not _MSG_ID.match(msg_id):
        raise NotFoundError(f"no message {msg_id[:64]}", code="unknown_message")
    t = await request.app[CORE].intake.timeline(request[AUTHORITY], msg_id)
    return json_response(
        wire.Timeline.model_construct(
            id=t.record.id,
            header=t.header,
            envelope_hash=t.record.env_hash,
            state=t.record.state,
            receipts=t.receipts,
            envelope=t.record.envelope,
        )
    )


@routes.get("/v1/messages/{id}/proofs")
async def message_proofs(request: web.Request) -> web.Response:
    msg_id = request.match_info["id"]
    if not _MSG_ID.match(msg_id):
        raise NotFoundError(f"no message {msg_id[:64]}", code="unknown_message")
    query = _query(request, wire.ProofsQuery)
    head, entries = await request.app[CORE].log.message(request[AUTHORITY], msg_id, query.size)
    return json_response(
        wire.MessageProofs.model_construct(
            id=msg_id,
            head=head,
            entries=[
                wire.LogEntryProof.model_construct(
                    index=index, receipt=receipt, path=[h.hex() for h in path]
                )
                for index, receipt, path in entries
            ],
        )
    )


@routes.post("/v1/receipts")
async def receipt(request: web.Request) -> web.Response:
    body = await _parse(request, _RECEIPT)
    stored = await request.app[CORE].intake.submit_receipt(request[AUTHORITY], body.receipt)
    return json_response(
        wire.ReceiptStored(duplicate=not stored.new), status=202 if stored.new else 200
    )


# --- inbox: long-poll ---------------------------------------------------------------


def _query(request: web.Request, model: type[Q]) -> Q:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise MalformedError(wire.describe(exc, "query")) from exc


@routes.get("/v1/inbox")
async def inbox(request: web.Request) -> web.Response:
    query = _query(request, wire.InboxQuery)
    # Within the documented bounds, wait is clamped to this relay's own maximum.
    wait = min(query.wait, request.app[SETTINGS].longpoll_max_wait_s)
    items = await request.app[CORE].delivery.poll(
        request[AUTHORITY], after=query.after, wait_s=wait, limit=query.limit
    )
    return json_response(wire.InboxPage.model_construct(items=[wire_item(i) for i in items]))


@routes.post("/v1/inbox/ack")
async def inbox_ack(request: web.Request) -> web.Response:
    body = await _parse(request, _ACK)
    removed = await request.app[CORE].delivery.ack(None, request[AUTHORITY], body.seqs)
    return json_response(wire.Acked(acked=removed))


# --- inbox: WebSocket ----------------------------------------------------------------


@routes.get("/v1/stream")
async def stream(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    core = app[CORE]
    authority: str = request[AUTHORITY]
    ws = web.WebSocketResponse(
        heartbeat=app[SETTINGS].ws_heartbeat_s, max_msg_size=WS_MAX_FRAME, autoping=True
    )
    if not ws.can_prepare(request).ok:
        raise MalformedError("this endpoint needs a WebSocket upgrade", code="websocket_required")
    await ws.prepare(request)
    sockets = app[SOCKETS]
    sockets.add(ws)
    app[SOCKET_KEYS][ws] = (authority, request[KEYID])  # revoked keys' sessions are cut
    session = Session(authority=authority, connected_at=app[CLOCK]())

    async def send(items: list[QueueItem]) -> None:
        # Several items travel in one "items" frame: one write and one parse, not many.
        frame: BaseModel
        if len(items) == 1:
            frame = wire_item(items[0])
        else:
            frame = wire.ItemsFrame.model_construct(
                type="items", items=[wire_item(i) for i in items]
            )
        await ws.send_str(wire.encode_text(frame))

    async def control(frame: wire.Probe) -> None:
        await ws.send_str(wire.encode_text(frame))

    session.send = send
    session.control = control
    core.delivery.hub.attach(session)
    tasks: set[asyncio.Task[None]] = set()
    slots = asyncio.Semaphore(WS_CONCURRENCY)
    entry = app[DIRECTORY].current.get(authority)
    role = entry.role if entry is not None else "default"

    def charge() -> float:
        return app[RATE_LIMITER].take(authority, role, time.monotonic())

    async def run_pump() -> None:
        try:
            await core.delivery.pump(session)
        except Exception as exc:  # the store went away: tell the daemon to come back
            log.warning("delivery to %s stopped: %s", authority, exc)
            await ws.close(code=1011, message=b"delivery interrupted; reconnect")

    def finished(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        slots.release()

    pump: asyncio.Task[None] | None = None
    try:
        # hello comes first, before the pump pushes anything.
        pending = await core.delivery.queued(authority)
        await ws.send_str(wire.encode_text(wire.Hello(authority=authority, pending=pending)))
        pump = asyncio.create_task(run_pump(), name=f"pump-{authority}")
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await slots.acquire()
                task = asyncio.create_task(_frame(core, session, ws, msg.data, charge))
                tasks.add(task)
                task.add_done_callback(finished)
            elif msg.type == WSMsgType.BINARY:
                await _send_error(ws, MalformedError("binary frames are not part of the protocol"))
    except RelayError as exc:  # the store is unavailable: no hello, come back later
        log.warning("stream for %s not started: %s", authority, exc.detail)
        await ws.close(code=1011, message=b"relay unavailable; reconnect")
    finally:
        # Forget the session first: the handler may itself be cancelled (the client
        # went away) while it waits below, and a stale session would look connected.
        core.delivery.hub.detach(session, app[CLOCK]())
        sockets.discard(ws)
        app[SOCKET_KEYS].pop(ws, None)
        running = [*tasks, *([pump] if pump is not None else [])]
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return ws


async def _send(ws: web.WebSocketResponse, frame: BaseModel) -> None:
    if not ws.closed:
        await ws.send_str(wire.encode_text(frame))


async def _send_error(ws: web.WebSocketResponse, exc: RelayError, ref: JsonValue = None) -> None:
    """An error frame; ``ref`` echoes the client's correlation value, if it sent one."""
    await _send(
        ws, wire.ErrorFrame.model_construct(type="error", problem=relay_error_body(exc), ref=ref)
    )


def _ref_of(data: str, exc: ValidationError) -> JsonValue:
    """The ``ref`` of a frame that did not validate (only on this error path: parse again)."""
    if any(e["type"] == "json_invalid" for e in exc.errors(include_url=False)):
        return None
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return frame.get("ref") if isinstance(frame, dict) else None


async def _frame(
    core: Core,
    session: Session,
    ws: web.WebSocketResponse,
    data: str,
    charge: Callable[[], float] = lambda: 0.0,
) -> None:
    ref: JsonValue = None
    try:
        try:
            frame = wire.CLIENT_FRAME.validate_json(data)
        except ValidationError as exc:
            ref = _ref_of(data, exc)
            raise MalformedError(wire.describe(exc, "frame", union=True)) from exc
        if isinstance(frame, wire.AckFrame):
            try:
                await core.delivery.ack(session, session.authority, frame.seqs)
            except UnavailableError:
                # The acknowledgement may not have been stored, and the delivery window
                # still counts those items: start over on a fresh connection.
                await ws.close(code=1011, message=b"acknowledgement not stored; reconnect")
        elif isinstance(frame, wire.ReceiptFrame):
            ref = frame.ref
            stored = await core.intake.submit_receipt(session.authority, frame.receipt)
            await _send(
                ws,
                wire.ReceiptOk.model_construct(
                    type="receipt_ok", id=stored.msg_id, duplicate=not stored.new, ref=ref
                ),
            )
        elif isinstance(frame, wire.ReceiptsFrame):
            ref = frame.ref
            results = await core.intake.submit_receipts(session.authority, frame.receipts)
            answers = _each(
                results,
                lambda r: wire.ReceiptResult.model_construct(id=r.msg_id, duplicate=not r.new),
            )
            await _send(
                ws, wire.ReceiptsOk.model_construct(type="receipts_ok", results=answers, ref=ref)
            )
        elif isinstance(frame, wire.SubmitFrame):
            ref = frame.ref
            wait = charge()  # a submission costs what a signed request costs
            if wait > 0:
                raise RateLimitedError(
                    f"{session.authority} is over its request rate; retry in "
                    f"{max(1, math.ceil(wait))} s"
                )
            submitted = await core.intake.submit(session.authority, frame.envelopes)
            await _send(
                ws,
                wire.SubmittedFrame.model_construct(
                    type="submitted", results=_each(submitted, _submitted), ref=ref
                ),
            )
        elif isinstance(frame, wire.ProbeAnswer):
            core.prober.answer(session.authority, frame.nonce, frame.answer)
        else:
            await _send(ws, wire.Pong())
    except RelayError as exc:
        await _send_error(ws, exc, ref)
    except ConnectionResetError:
        pass


# --- attachments ----------------------------------------------------------------------


def _attachment_path(request: web.Request, digest: str) -> Path:
    return request.app[SETTINGS].data_dir / "attachments" / digest[:2] / digest


@routes.put("/v1/attachments/{digest}")
async def put_attachment(request: web.Request) -> web.Response:
    digest = request.match_info["digest"]
    if not _DIGEST.match(digest):
        raise MalformedError(
            "attachments are addressed by the lowercase hex SHA-256 of their ciphertext"
        )
    body_hash = request[UPLOAD_SHA256]
    size = request[UPLOAD_SIZE]
    tmp = request[UPLOAD_FILE]
    if body_hash != digest:
        raise MalformedError(
            "the body's SHA-256 does not match the address", code="digest_mismatch"
        )
    final = _attachment_path(request, digest)
    try:
        await asyncio.to_thread(_move_into_place, tmp, final)
    except OSError as exc:
        raise request.app[DISK].failed(exc) from None
    new = await request.app[STORE].put_attachment(
        digest, uploader=request[AUTHORITY], size=size, at=request.app[CLOCK]()
    )
    return json_response(
        wire.AttachmentStored(digest=digest, size=size), status=201 if new else 200
    )


def _move_into_place(tmp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)


@routes.get("/v1/attachments/{digest}")
async def get_attachment(request: web.Request) -> web.StreamResponse:
    digest = request.match_info["digest"]
    if not _DIGEST.match(digest) or not await request.app[STORE].may_read_attachment(
        digest, request[AUTHORITY]
    ):
        raise NotFoundError(f"no attachment {digest[:64]} for you", code="unknown_attachment")
    return web.FileResponse(_attachment_path(request, digest))


async def stream_body_to_file(
    request: web.Request, folder: Path, limit: int, *, stall_timeout_s: float, disk: DiskHealth
) -> tuple[Path, str, int]:
    """Stream a request body to a temp file: (path, sha256 hex, size). Never all in memory.

    The upload is abandoned (and its temp file removed) when no data arrives for
    ``stall_timeout_s``, when the client goes away, past ``limit`` bytes, or when the
    disk refuses the write (507 when it is full, see :class:`DiskHealth`)."""
    tmp = folder / f".upload-{secrets.token_hex(12)}"
    hasher = hashlib.sha256()
    size = 0
    try:
        fh = await asyncio.to_thread(_open_new, tmp)
    except OSError as exc:
        raise disk.failed(exc) from None
    try:
        while True:
            try:
                async with asyncio.timeout(stall_timeout_s):
                    chunk = await request.content.read(256 * 1024)
            except TimeoutError:
                raise BodyTimeoutError(
                    f"the upload stalled for more than {stall_timeout_s:g} s"
                ) from None
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise TooLargeError(f"attachments are limited to {limit} bytes")
            hasher.update(chunk)
            await _write(disk, fh.write, chunk)
        await _write(disk, fh.close)
    except BaseException:  # the client went away, or a refusal: nothing is left behind
        await asyncio.to_thread(_close_and_remove, fh, tmp)
        raise
    return tmp, hasher.hexdigest(), size


async def _write(disk: DiskHealth, call: Callable[..., object], *args: object) -> None:
    """A write to the disk, off the loop; only its failures are the disk's (a client that
    goes away mid-upload is not a disk failure)."""
    try:
        await asyncio.to_thread(call, *args)
    except OSError as exc:
        raise disk.failed(exc) from None


def _open_new(tmp: Path) -> BinaryIO:
    tmp.parent.mkdir(parents=True, exist_ok=True)
    return open(tmp, "wb")


def _close_and_remove(fh: BinaryIO, tmp: Path) -> None:
    with contextlib.suppress(OSError):
        fh.close()
    tmp.unlink(missing_ok=True)


# --- directory and health ------------------------------------------------------------------


@routes.get("/v1/directory")
async def directory(request: web.Request) -> web.Response:
    current = request.app[DIRECTORY].current
    return json_response(wire.DirectoryCurrent(version=current.version, jws=current.token))


@routes.get("/v1/directory/history")
async def directory_history(request: web.Request) -> web.Response:
    holder = request.app[DIRECTORY]
    return json_response(
        wire.DirectoryHistory.model_construct(
            versions=[d.token for d in holder.history], rotations=list(holder.rotations)
        )
    )


# --- the relay's log ------------------------------------------------------------------------


@routes.get("/v1/log/head")
async def log_head(request: web.Request) -> web.Response:
    _, token = await request.app[CORE].log.head()
    return json_response(wire.LogHead(head=token))


@routes.get("/v1/log/consistency")
async def log_consistency(request: web.Request) -> web.Response:
    query = _query(request, wire.ConsistencyQuery)
    proof = await request.app[CORE].log.consistency(query.first, query.second)
    return json_response(
        wire.ConsistencyProof.model_construct(
            first=query.first, second=query.second, proof=[h.hex() for h in proof]
        )
    )


@routes.get("/v1/presence")
async def presence(request: web.Request) -> web.Response:
    """Every authority of the directory: is its daemon reachable now, or since when not."""
    read = request.app[CORE].read
    now = request.app[CLOCK]()
    out = []
    for entry in request.app[DIRECTORY].current.authorities:
        if entry.role == "relay":
            continue
        r = read.reachability(entry.id, now)
        out.append(
            wire.Presence.model_construct(
                id=entry.id,
                reachable=r.reachable,
                unreachable_since=None if r.reachable else r.since,
            )
        )
    return json_response(wire.PresenceList.model_construct(at=now, authorities=out))


@routes.get("/v1/policy")
async def policy(request: web.Request) -> web.Response:
    """The escalation policy per priority, as a message accepted now gets it; a sender
    shows it before sending. An ``ack_by`` earlier than the first step pulls every step
    earlier (docs/PROTOCOL.md, section 6.1)."""
    delays = request.app[CORE].intake.delays
    out = []
    for prio in get_args(Priority):  # most urgent first
        offsets, working_hours = delays[prio]
        remind, release, notify = (delay for _, delay in offsets)
        out.append(
            wire.EscalationPolicy.model_construct(
                priority=prio,
                remind_after_ms=remind,
                release_after_ms=release,
                notify_after_ms=notify,
                working_hours=working_hours,
            )
        )
    return json_response(wire.PolicyList.model_construct(policies=out))


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response(wire.Health())


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Unauthenticated: says what is not ready, never the error text (addresses, paths);
    the details go to the log."""
    problems: list[str] = []
    try:
        await asyncio.wait_for(request.app[STORE].ping(), timeout=2)
    except Exception as exc:  # any failure means not ready
        log.warning("not ready: the store does not answer: %s", exc)
        problems.append("store: unavailable")
    try:
        request.app[DIRECTORY].current  # noqa: B018 - raises when none is loaded
    except Exception as exc:
        log.warning("not ready: no directory: %s", exc)
        problems.append("directory: none loaded")
    failing = await request.app[DISK].recheck()
    if failing is not None:
        problems.append(f"disk: writes fail ({failing})")
    if problems:
        return json_response(wire.NotReady(problems=problems), status=503)
    return json_response(wire.Ready())
