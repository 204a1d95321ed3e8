"""HTTP and WebSocket handlers. They only translate between JSON and the domain core."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from relay.api.problems import relay_error_body
from relay.api.state import (
    AUTHORITY,
    CLOCK,
    CORE,
    DIRECTORY,
    SETTINGS,
    SOCKETS,
    STORE,
    UPLOAD_FILE,
    UPLOAD_SHA256,
    UPLOAD_SIZE,
    Core,
)
from relay.core.delivery import Session
from relay.core.errors import (
    MalformedError,
    NotFoundError,
    RelayError,
    TooLargeError,
    UnavailableError,
)
from relay.core.intake import Submitted
from relay.core.items import item_json
from relay.store.base import QueueItem

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_MSG_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
WS_MAX_FRAME = 1024 * 1024
WS_CONCURRENCY = 256
MAX_RECEIPTS_PER_FRAME = 1000
MAX_SEQ = 2**63 - 1
"""Largest sequence number (a SQLite INTEGER); larger values are malformed, not a crash."""


def _json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(data).encode(), content_type="application/json"
    )


def _json_object(raw: str | bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply
        raise MalformedError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedError(f"{what} must be a JSON object")
    return data


async def _json_body(request: web.Request) -> dict[str, Any]:
    return _json_object(await request.read(), "request body")


def _submitted_json(s: Submitted) -> dict[str, Any]:
    return {"id": s.id, "receipt": s.receipt, "duplicate": s.duplicate}


# --- messages ---------------------------------------------------------------------


@routes.post("/v1/messages")
async def submit(request: web.Request) -> web.Response:
    core = request.app[CORE]
    body = await _json_body(request)
    authority: str = request[AUTHORITY]
    if "envelope" in body and "envelopes" not in body:
        if not isinstance(body["envelope"], str):
            raise MalformedError("'envelope' must be a string (compact JWS)")
        (result,) = await core.intake.submit(authority, [body["envelope"]])
        if isinstance(result, RelayError):
            raise result
        return _json_response(_submitted_json(result), status=200 if result.duplicate else 201)
    if "envelopes" in body and "envelope" not in body:
        tokens = body["envelopes"]
        if (
            not isinstance(tokens, list)
            or not tokens
            or not all(isinstance(t, str) for t in tokens)
        ):
            raise MalformedError("'envelopes' must be a non-empty list of strings")
        results = await core.intake.submit(authority, tokens)
        out = [
            {"problem": relay_error_body(r)} if isinstance(r, RelayError) else _submitted_json(r)
            for r in results
        ]
        return _json_response({"results": out})
    raise MalformedError('send {"envelope": ...} or {"envelopes": [...]}')


@routes.get("/v1/messages/{id}")
async def timeline(request: web.Request) -> web.Response:
    msg_id = request.match_info["id"]
    if not _MSG_ID.match(msg_id):
        raise NotFoundError(f"no message {msg_id[:64]}", code="unknown_message")
    t = await request.app[CORE].intake.timeline(request[AUTHORITY], msg_id)
    return _json_response(
        {
            "id": t.record.id,
            "header": t.header,
            "envelope_hash": t.record.env_hash,
            "state": t.record.state,
            "receipts": t.receipts,
        }
    )


@routes.post("/v1/receipts")
async def receipt(request: web.Request) -> web.Response:
    body = await _json_body(request)
    token = body.get("receipt")
    if not isinstance(token, str):
        raise MalformedError("'receipt' must be a string (compact JWS)")
    stored = await request.app[CORE].intake.submit_receipt(request[AUTHORITY], token)
    return _json_response({"duplicate": not stored.new}, status=202 if stored.new else 200)


# --- inbox: long-poll ---------------------------------------------------------------


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise MalformedError(f"query parameter {name} must be an integer") from exc
    if not lo <= value <= hi:
        raise MalformedError(f"query parameter {name} must be between {lo} and {hi}")
    return value


@routes.get("/v1/inbox")
async def inbox(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    after = _int_param(request, "after", 0, 0, 2**62)
    wait = _int_param(request, "wait", 0, 0, int(settings.longpoll_max_wait_s))
    limit = _int_param(request, "limit", 100, 1, 500)
    items = await request.app[CORE].delivery.poll(
        request[AUTHORITY], after=after, wait_s=wait, limit=limit
    )
    return _json_response({"items": [item_json(i) for i in items]})


def _seqs(body: dict[str, Any]) -> list[int]:
    seqs = body.get("seqs")
    if (
        not isinstance(seqs, list)
        or len(seqs) > 10_000
        or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEQ for s in seqs
        )
    ):
        raise MalformedError(f"'seqs' must be a list of at most 10000 integers from 0 to {MAX_SEQ}")
    return seqs


@routes.post("/v1/inbox/ack")
async def inbox_ack(request: web.Request) -> web.Response:
    body = await _json_body(request)
    removed = await request.app[CORE].delivery.ack(None, request[AUTHORITY], _seqs(body))
    return _json_response({"acked": removed})


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
    session = Session(authority=authority, connected_at=app[CLOCK]())

    async def send(items: list[QueueItem]) -> None:
        # Several items travel in one "items" frame: one write and one parse, not many.
        if len(items) == 1:
            await ws.send_str(json.dumps(item_json(items[0])))
        else:
            await ws.send_str(json.dumps({"type": "items", "items": [item_json(i) for i in items]}))

    async def control(frame: dict[str, Any]) -> None:
        await ws.send_str(json.dumps(frame))

    session.send = send
    session.control = control
    core.delivery.hub.attach(session)
    tasks: set[asyncio.Task[None]] = set()
    slots = asyncio.Semaphore(WS_CONCURRENCY)

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
        await ws.send_str(json.dumps({"type": "hello", "authority": authority, "pending": pending}))
        pump = asyncio.create_task(run_pump(), name=f"pump-{authority}")
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await slots.acquire()
                task = asyncio.create_task(_frame(core, session, ws, msg.data))
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
        running = [*tasks, *([pump] if pump is not None else [])]
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return ws


async def _send_error(ws: web.WebSocketResponse, exc: RelayError, ref: Any = None) -> None:
    """An error frame; ``ref`` echoes the client's correlation value, if it sent one."""
    if not ws.closed:
        frame: dict[str, Any] = {"type": "error", "problem": relay_error_body(exc)}
        if ref is not None:
            frame["ref"] = ref
        await ws.send_str(json.dumps(frame))


async def _frame(core: Core, session: Session, ws: web.WebSocketResponse, data: str) -> None:
    frame: Any = None
    try:
        frame = _json_object(data, "frame")
        kind = frame.get("type")
        if kind == "ack":
            try:
                await core.delivery.ack(session, session.authority, _seqs(frame))
            except UnavailableError:
                # The acknowledgement may not have been stored, and the delivery window
                # still counts those items: start over on a fresh connection.
                await ws.close(code=1011, message=b"acknowledgement not stored; reconnect")
                return
        elif kind == "receipt":
            token = frame.get("receipt")
            if not isinstance(token, str):
                raise MalformedError("'receipt' must be a string (compact JWS)")
            stored = await core.intake.submit_receipt(session.authority, token)
            if not ws.closed:
                reply = {"type": "receipt_ok", "id": stored.msg_id, "duplicate": not stored.new}
                await ws.send_str(json.dumps({**reply, "ref": frame.get("ref")}))
        elif kind == "receipts":
            tokens = frame.get("receipts")
            if not isinstance(tokens, list) or not 0 < len(tokens) <= MAX_RECEIPTS_PER_FRAME:
                raise MalformedError(
                    f"'receipts' must be a list of 1 to {MAX_RECEIPTS_PER_FRAME} receipts"
                )
            results = await core.intake.submit_receipts(session.authority, tokens)
            if not ws.closed:
                out = [
                    {"problem": relay_error_body(r)}
                    if isinstance(r, RelayError)
                    else {"id": r.msg_id, "duplicate": not r.new}
                    for r in results
                ]
                await ws.send_str(
                    json.dumps({"type": "receipts_ok", "results": out, "ref": frame.get("ref")})
                )
        elif kind == "probe_ok":
            core.prober.answer(session.authority, frame.get("nonce"), frame.get("answer"))
        elif kind == "ping":
            if not ws.closed:
                await ws.send_str('{"type":"pong"}')
        else:
            raise MalformedError(f"unknown frame type {str(kind)[:40]!r}")
    except RelayError as exc:
        await _send_error(ws, exc, frame.get("ref") if isinstance(frame, dict) else None)
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
    await asyncio.to_thread(_move_into_place, tmp, final)
    new = await request.app[STORE].put_attachment(
        digest, uploader=request[AUTHORITY], size=size, at=request.app[CLOCK]()
    )
    return _json_response({"digest": digest, "size": size}, status=201 if new else 200)


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
    request: web.Request, folder: Path, limit: int
) -> tuple[Path, str, int]:
    """Stream a request body to a temp file: (path, sha256 hex, size). Never all in memory."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    tmp = folder / f".upload-{os.getpid()}-{id(request)}"
    hasher = hashlib.sha256()
    size = 0
    fh = await asyncio.to_thread(open, tmp, "wb")
    try:
        while chunk := await request.content.read(256 * 1024):
            size += len(chunk)
            if size > limit:
                raise TooLargeError(f"attachments are limited to {limit} bytes")
            hasher.update(chunk)
            await asyncio.to_thread(fh.write, chunk)
    except BaseException:
        await asyncio.to_thread(fh.close)
        await asyncio.to_thread(tmp.unlink, True)
        raise
    await asyncio.to_thread(fh.close)
    return tmp, hasher.hexdigest(), size


# --- directory and health ------------------------------------------------------------------


@routes.get("/v1/directory")
async def directory(request: web.Request) -> web.Response:
    current = request.app[DIRECTORY].current
    return _json_response({"version": current.version, "jws": current.token})


@routes.get("/v1/directory/history")
async def directory_history(request: web.Request) -> web.Response:
    return _json_response({"versions": [d.token for d in request.app[DIRECTORY].history]})


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return _json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    problems: list[str] = []
    try:
        await asyncio.wait_for(request.app[STORE].ping(), timeout=2)
    except Exception as exc:  # any failure means not ready
        problems.append(f"store: {exc}")
    try:
        request.app[DIRECTORY].current  # noqa: B018 - raises when none is loaded
    except Exception as exc:
        problems.append(f"directory: {exc}")
    if problems:
        return _json_response({"status": "unavailable", "problems": problems}, status=503)
    return _json_response({"status": "ready"})
