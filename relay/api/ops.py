"""The operator endpoints: ``/metrics``, ``/ops`` (dashboard, with its stylesheet and
script under ``/ops/static/``), ``/ops/events`` (SSE), ``/ops/snapshot`` and
``/ops/messages/{id}``.

Operators authenticate with their own bearer token (``Authorization: Bearer <token>``,
or HTTP Basic with the token as the password so that a browser can log in), never with
an authority's request signature. The relay stores only each token's SHA-256
(``[[operators]]`` in the configuration, made by ``relay operator-token``) and compares
digests with :func:`hmac.compare_digest`. With no operator configured these endpoints
answer ``403``. Everything they show is delivery metadata.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
from base64 import b64decode
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from relay.api.ops_page import ASSETS, Dashboard, dashboard_view, load_dashboard
from relay.api.problems import problem
from relay.api.state import CORE, METRICS, SETTINGS
from relay.core.errors import UnavailableError
from relay.settings import OperatorCredential
from relay.status import LatencyTracker, build_snapshot, message_timeline, refresh_gauges

log = logging.getLogger(__name__)

SSE_INTERVAL_S = 2.0
"""How often ``/ops/events`` sends a snapshot (and once on connect)."""
REALM = "cpar relay operators"
OPERATOR = web.RequestKey("operator", str)
"""request[OPERATOR]: the name of the authenticated operator."""
OPS_TRACKER = web.AppKey("ops_tracker", LatencyTracker)
OPS_CLOSING = web.AppKey("ops_closing", asyncio.Event)
OPS_DASHBOARD = web.AppKey("ops_dashboard", Dashboard)
MAX_ID_LENGTH = 200

OpsHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- credentials -------------------------------------------------------------------------


def new_operator_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def match_operator(operators: Sequence[OperatorCredential], token: str) -> str | None:
    """The name of the operator holding ``token``, or None (compares every entry)."""
    digest = token_digest(token)
    found: str | None = None
    for op in operators:
        if hmac.compare_digest(digest, op.token_sha256) and found is None:
            found = op.name
    return found


def presented_token(header: str | None) -> str | None:
    """The token from ``Bearer <token>`` or ``Basic base64(anything:<token>)``."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


def _challenge(detail: str) -> web.Response:
    resp = problem(401, "operator_auth_required", "Operator credentials required", detail)
    resp.headers.add("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
    resp.headers.add("WWW-Authenticate", f'Bearer realm="{REALM}"')
    resp.headers["Cache-Control"] = "no-store"
    return resp


def operator_only(handler: OpsHandler) -> OpsHandler:
    """Let the request through only with a configured operator's token."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        operators = request.app[SETTINGS].operators
        if not operators:
            return problem(
                403,
                "operators_disabled",
                "Operator endpoints disabled",
                "no operator is configured: run `relay operator-token --name NAME` and add "
                "the [[operators]] entry it prints to the relay configuration",
            )
        header = request.headers.get("Authorization")
        token = presented_token(header)
        if token is None:
            return _challenge(
                "send an operator token: 'Authorization: Bearer <token>' "
                "(or HTTP Basic with the token as the password)"
            )
        name = match_operator(operators, token)
        if name is None:
            return _challenge("this operator token is not configured on this relay")
        request[OPERATOR] = name
        return await handler(request)

    return guarded


# -- handlers ----------------------------------------------------------------------------


async def _snapshot(app: web.Application) -> dict[str, object]:
    return await build_snapshot(app[CORE].read, app[OPS_TRACKER])


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@operator_only
async def metrics_handler(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    await refresh_gauges(request.app[CORE].read, metrics)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(metrics.registry), headers={"Content-Type": content_type})


@operator_only
async def snapshot_handler(request: web.Request) -> web.Response:
    return _json(await _snapshot(request.app))


@operator_only
async def message_handler(request: web.Request) -> web.Response:
    msg_id = request.match_info["id"]
    found = None
    if len(msg_id) <= MAX_ID_LENGTH:
        found = await message_timeline(request.app[CORE].read, msg_id)
    if found is None:
        return problem(404, "unknown_message", "Unknown message", f"no message {msg_id[:80]}")
    return _json(found)


PAGE_CSP = (
    # Nothing from anywhere else, and nothing inline: the stylesheet and the script are
    # files served from /ops/static/.
    "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@operator_only
async def page_handler(request: web.Request) -> web.Response:
    snap = await _snapshot(request.app)
    lookup = request.query.get("message", "").strip()
    message = None
    if lookup and len(lookup) <= MAX_ID_LENGTH:
        message = await message_timeline(request.app[CORE].read, lookup)
    body = request.app[OPS_DASHBOARD].render(snap, lookup=lookup, message=message)
    return web.Response(
        text=body,
        content_type="text/html",
        charset="utf-8",
        headers={**_SECURITY_HEADERS, "Cache-Control": "no-store"},
    )


@operator_only
async def static_handler(request: web.Request) -> web.Response:
    """``/ops/static/ops.css`` and ``ops.js``: the dashboard's own files, nothing else."""
    name = request.match_info["name"]
    content_type = ASSETS.get(name)
    if content_type is None:
        return problem(404, "not_found", "Not found", f"no dashboard file {name[:80]}")
    return web.Response(
        body=request.app[OPS_DASHBOARD].assets[name],
        content_type=content_type,
        charset="utf-8",
        headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )


@operator_only
async def events_handler(request: web.Request) -> web.StreamResponse:
    """Server-sent events: a ``snapshot`` event on connect, then every SSE_INTERVAL_S.

    Each carries the snapshot and, under ``view``, the dashboard's text for it.
    """
    app = request.app
    closing = app[OPS_CLOSING]
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    try:
        await resp.write(f"retry: {int(SSE_INTERVAL_S * 1000)}\n\n".encode())
        while not closing.is_set():
            try:
                snap = await build_snapshot(app[CORE].read, app[OPS_TRACKER])
                data = json.dumps({**snap, "view": dashboard_view(snap)})
                event = f"event: snapshot\ndata: {data}\n\n"
            except UnavailableError as exc:
                event = f"event: problem\ndata: {json.dumps({'detail': str(exc)})}\n\n"
            await resp.write(event.encode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(closing.wait(), timeout=SSE_INTERVAL_S)
    except ConnectionError:
        pass  # the viewer went away
    return resp


def setup_ops(app: web.Application) -> None:
    """Register the operator endpoints on ``app`` (called by create_app)."""
    app[OPS_TRACKER] = LatencyTracker()
    app[OPS_CLOSING] = asyncio.Event()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/ops", page_handler)
    app.router.add_get("/ops/static/{name}", static_handler)
    app.router.add_get("/ops/events", events_handler, allow_head=False)
    app.router.add_get("/ops/snapshot", snapshot_handler)
    app.router.add_get("/ops/messages/{id}", message_handler)
    app.on_startup.append(_load_dashboard)
    app.on_shutdown.append(_close_streams)


async def _load_dashboard(app: web.Application) -> None:
    app[OPS_DASHBOARD] = await load_dashboard()


async def _close_streams(app: web.Application) -> None:
    app[OPS_CLOSING].set()
