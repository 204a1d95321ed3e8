"""``/openapi.json``, generated from the app's route table and the models of keys/wire.py.

Nothing here describes a body by hand: each route names the wire types it reads and
answers, and their JSON Schemas come from pydantic. :func:`generate` builds the
document for an application (every route in its router that :data:`ROUTES` documents);
:func:`setup_openapi` serves it, generated once at startup. docs/API.md is the prose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from keys import wire

Auth = Literal["signature", "operator", "none"]
Mode = Literal["validation", "serialization"]
PROBLEM = "application/problem+json"
JSON = "application/json"
_REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Answer:
    """One documented response: a wire type (JSON), or a media type with no schema."""

    description: str
    body: Any = None
    """A wire model or union, a :class:`wire.Problem` for problem+json, or None."""
    media: str | None = None
    """For bodies that are not JSON (ciphertext, HTML, event streams, metrics)."""


@dataclass(frozen=True)
class Route:
    summary: str
    answers: dict[int, Answer]
    auth: Auth = "signature"
    body: Any = None
    """The wire type of a JSON request body."""
    body_media: str | None = None
    """A request body that is not JSON (an attachment's ciphertext)."""
    query: type[BaseModel] | None = None
    path: dict[str, Any] = field(default_factory=dict)
    """Path parameter -> its wire type (a constrained string)."""
    frames: bool = False
    """A WebSocket: its frames are documented under ``x-websocket-frames``."""


def _problem(description: str) -> Answer:
    return Answer(description, wire.Problem)


BAD = _problem("Malformed request (code `malformed`, or a more precise one)")
UNSIGNED = _problem("Request signature refused: missing, bad, expired, replayed, unknown key")
TOO_LARGE = _problem("The request body is larger than this relay accepts")
UNAVAILABLE = _problem("The message store is unavailable; retry after `Retry-After` seconds")
NO_OPERATOR = _problem("No operator token, or a wrong one")
NO_OPERATORS = _problem("No operators are configured on this relay")

ROUTES: dict[tuple[str, str], Route] = {
    ("POST", "/v1/messages"): Route(
        "Submit one envelope or a batch",
        {
            200: Answer(
                "The same envelope was accepted before (single), or per-envelope results (batch)",
                wire.Submitted | wire.BatchResults,
            ),
            201: Answer(
                "Accepted and durable; with each recipient's presence and the escalation plan",
                wire.Submitted,
            ),
            400: BAD,
            401: UNSIGNED,
            403: _problem("The envelope's sender is not the signing authority"),
            409: _problem("Another envelope was accepted under this message id"),
            413: TOO_LARGE,
            422: _problem("Refused: signature, key, expiry, recipient or attachment"),
            503: UNAVAILABLE,
        },
        body=wire.SubmitRequest,
    ),
    ("GET", "/v1/messages/{id}"): Route(
        "Receipt timeline of a message you sent",
        {
            200: Answer("The timeline", wire.Timeline),
            401: UNSIGNED,
            404: _problem("No such message sent by you"),
            503: UNAVAILABLE,
        },
        path={"id": wire.MessageId},
    ),
    ("GET", "/v1/messages/{id}/proofs"): Route(
        "Where each receipt of a message is in the relay's log, with inclusion proofs "
        "(sender and recipients)",
        {
            200: Answer("Every logged receipt, proven against one signed head", wire.MessageProofs),
            400: BAD,
            401: UNSIGNED,
            404: _problem("No such message of yours, or no such log size here"),
            503: UNAVAILABLE,
        },
        path={"id": wire.MessageId},
        query=wire.ProofsQuery,
    ),
    ("POST", "/v1/receipts"): Route(
        "Send a delivered, acknowledged or rejected receipt",
        {
            200: Answer("Already stored (same signer and status)", wire.ReceiptStored),
            202: Answer("Stored and queued for the sender", wire.ReceiptStored),
            400: BAD,
            401: UNSIGNED,
            403: _problem("The receipt's signer is not the signing authority"),
            404: _problem("No such message addressed to you"),
            413: TOO_LARGE,
            422: _problem("Refused: signature, status or envelope hash"),
            503: UNAVAILABLE,
        },
        body=wire.ReceiptRequest,
    ),
    ("GET", "/v1/inbox"): Route(
        "Long-poll for queued items (out of bounds: 400; `wait` clamped to the relay's maximum)",
        {
            200: Answer("Items with seq > after, in seq order", wire.InboxPage),
            400: BAD,
            401: UNSIGNED,
            503: UNAVAILABLE,
        },
        query=wire.InboxQuery,
    ),
    ("POST", "/v1/inbox/ack"): Route(
        "Acknowledge queued items by seq",
        {
            200: Answer("How many were removed", wire.Acked),
            400: BAD,
            401: UNSIGNED,
            413: TOO_LARGE,
            503: UNAVAILABLE,
        },
        body=wire.AckRequest,
    ),
    ("GET", "/v1/stream"): Route(
        "WebSocket push delivery (frames: docs/API.md, keys/wire.py)",
        {
            101: Answer("Switching protocols"),
            400: _problem("Not a WebSocket upgrade (code `websocket_required`)"),
            401: UNSIGNED,
        },
        frames=True,
    ),
    ("PUT", "/v1/attachments/{digest}"): Route(
        "Upload attachment ciphertext (signed Content-Digest, checked while streaming)",
        {
            200: Answer("Already stored", wire.AttachmentStored),
            201: Answer("Stored", wire.AttachmentStored),
            400: _problem("Bad address, or the body does not match its digest"),
            401: UNSIGNED,
            413: TOO_LARGE,
            503: UNAVAILABLE,
        },
        body_media="application/octet-stream",
        path={"digest": wire.Digest},
    ),
    ("GET", "/v1/attachments/{digest}"): Route(
        "Download attachment ciphertext (uploader and recipients only)",
        {
            200: Answer("The ciphertext", media="application/octet-stream"),
            401: UNSIGNED,
            404: _problem("No such attachment for you"),
            503: UNAVAILABLE,
        },
        path={"digest": wire.Digest},
    ),
    ("GET", "/v1/directory"): Route(
        "Current signed directory",
        {200: Answer("The directory", wire.DirectoryCurrent), 401: UNSIGNED},
    ),
    ("GET", "/v1/directory/history"): Route(
        "Every directory version",
        {200: Answer("Oldest first", wire.DirectoryHistory), 401: UNSIGNED},
    ),
    ("GET", "/v1/log/head"): Route(
        "The newest signed tree head of the relay's log",
        {200: Answer("The head", wire.LogHead), 401: UNSIGNED, 503: UNAVAILABLE},
    ),
    ("GET", "/v1/log/consistency"): Route(
        "A consistency proof between two sizes of the relay's log (RFC 9162)",
        {
            200: Answer("The proof", wire.ConsistencyProof),
            400: _problem("Sizes out of order or beyond the log (code `bad_log_size`)"),
            401: UNSIGNED,
            503: UNAVAILABLE,
        },
        query=wire.ConsistencyQuery,
    ),
    ("GET", "/v1/presence"): Route(
        "Which authorities' daemons are reachable now (no queue or message data)",
        {200: Answer("Every authority of the directory", wire.PresenceList), 401: UNSIGNED},
    ),
    ("GET", "/v1/policy"): Route(
        "The escalation policy per priority, as a message accepted now would get it",
        {200: Answer("One policy per priority", wire.PolicyList), 401: UNSIGNED},
    ),
    ("GET", "/healthz"): Route("Liveness", {200: Answer("Alive", wire.Health)}, auth="none"),
    ("GET", "/readyz"): Route(
        "Readiness: store and directory",
        {200: Answer("Ready", wire.Ready), 503: Answer("Not ready", wire.NotReady)},
        auth="none",
    ),
    ("GET", "/openapi.json"): Route(
        "This document", {200: Answer("OpenAPI 3.1", media=JSON)}, auth="none"
    ),
    ("GET", "/metrics"): Route(
        "Prometheus metrics",
        {
            200: Answer("Text exposition", media="text/plain"),
            401: NO_OPERATOR,
            403: NO_OPERATORS,
        },
        auth="operator",
    ),
    ("GET", "/ops"): Route(
        "Operator dashboard",
        {200: Answer("HTML", media="text/html"), 401: NO_OPERATOR, 403: NO_OPERATORS},
        auth="operator",
    ),
    ("GET", "/ops/events"): Route(
        "Dashboard snapshots as server-sent events",
        {
            200: Answer("One snapshot on connect, then periodically", media="text/event-stream"),
            401: NO_OPERATOR,
            403: NO_OPERATORS,
        },
        auth="operator",
    ),
    ("GET", "/ops/static/{name}"): Route(
        "The dashboard's stylesheet and script (ops.css, ops.js)",
        {
            200: Answer("The file", media="text/css"),
            401: NO_OPERATOR,
            403: NO_OPERATORS,
            404: _problem("No such dashboard file"),
        },
        auth="operator",
        path={"name": str},
    ),
    ("GET", "/ops/snapshot"): Route(
        "Delivery health snapshot (metadata only)",
        {200: Answer("The snapshot", media=JSON), 401: NO_OPERATOR, 403: NO_OPERATORS},
        auth="operator",
    ),
    ("GET", "/ops/messages/{id}"): Route(
        "One message's timeline (metadata only)",
        {
            200: Answer("The timeline", media=JSON),
            401: NO_OPERATOR,
            403: NO_OPERATORS,
            404: _problem("No such message"),
        },
        auth="operator",
        path={"id": str},
    ),
}

_SECURITY: dict[Auth, list[dict[str, list[str]]]] = {
    "signature": [{"httpMessageSignature": []}],
    "operator": [{"operatorToken": []}],
    "none": [],
}


class _Schemas:
    """JSON Schemas of wire types, each model once under ``components/schemas``."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def of(self, tp: Any, mode: Mode) -> dict[str, Any]:
        schema = TypeAdapter(tp).json_schema(ref_template=_REF, mode=mode)
        self.components.update(schema.pop("$defs", {}))
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            self.components[tp.__name__] = schema
            return {"$ref": _REF.format(model=tp.__name__)}
        return schema


def _operation(route: Route, schemas: _Schemas) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": route.summary, "responses": {}}
    if route.auth != "none":
        op["security"] = _SECURITY[route.auth]
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": schemas.of(tp, "validation")}
        for name, tp in route.path.items()
    ]
    if route.query is not None:
        props = route.query.model_json_schema(mode="validation")["properties"]
        params += [
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": prop.pop("description", ""),
                "schema": {k: v for k, v in prop.items() if k != "title"},
            }
            for name, prop in props.items()
        ]
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": schemas.of(route.body, "validation")}},
        }
    elif route.body_media is not None:
        op["requestBody"] = {"required": True, "content": {route.body_media: {}}}
    if route.frames:
        op["x-websocket-frames"] = {
            "server": schemas.of(wire.ServerFrame, "serialization"),
            "client": schemas.of(wire.ClientFrame, "validation"),
        }
    for status, answer in sorted(route.answers.items()):
        doc: dict[str, Any] = {"description": answer.description}
        if answer.body is wire.Problem:
            doc["content"] = {PROBLEM: {"schema": schemas.of(wire.Problem, "serialization")}}
        elif answer.body is not None:
            doc["content"] = {JSON: {"schema": schemas.of(answer.body, "serialization")}}
        elif answer.media is not None:
            doc["content"] = {answer.media: {}}
        op["responses"][str(status)] = doc
    return op


def generate(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every documented route ``app`` serves."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for resource in app.router.resources():
        path = resource.canonical
        for r in resource:
            route = ROUTES.get((r.method, path))
            if route is not None:
                paths.setdefault(path, {})[r.method.lower()] = _operation(route, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cultural Property Alert Relay",
            "version": "1",
            "description": "Signed, end-to-end encrypted notices between authorities. Every "
            "/v1 request carries an RFC 9421 signature (docs/PROTOCOL.md). Errors are RFC 9457 "
            "problem+json with a stable `code`. WebSocket frames: docs/API.md.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "securitySchemes": {
                "operatorToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "operator token from `relay operator-token`",
                },
                "httpMessageSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Signature",
                    "description": "RFC 9421 profile cpar-v1, see docs/PROTOCOL.md",
                },
            },
        },
    }


def undocumented(app: web.Application) -> list[tuple[str, str]]:
    """Routes ``app`` serves that :data:`ROUTES` does not describe (HEAD aside)."""
    return sorted(
        (r.method, resource.canonical)
        for resource in app.router.resources()
        for r in resource
        if r.method != "HEAD" and (r.method, resource.canonical) not in ROUTES
    )


@dataclass
class _Served:
    body: bytes = b""


def setup_openapi(app: web.Application) -> None:
    """Serve ``/openapi.json``, generated once when the app starts (all routes added)."""
    served = _Served()

    async def generate_on_startup(app: web.Application) -> None:
        served.body = json.dumps(generate(app)).encode()

    async def openapi_handler(request: web.Request) -> web.Response:
        return web.Response(body=served.body, content_type=JSON)

    app.router.add_get("/openapi.json", openapi_handler)
    app.on_startup.append(generate_on_startup)
