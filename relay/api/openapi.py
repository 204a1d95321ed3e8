"""The OpenAPI 3.1 description served at ``/openapi.json`` (docs/API.md in prose)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

_SIGNED: list[dict[str, list[str]]] = [{"httpMessageSignature": []}]
_PROBLEM = {"$ref": "#/components/responses/Problem"}


def _op(
    summary: str,
    responses: dict[str, Any],
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    signed: bool = True,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, "4XX": _PROBLEM}}
    if signed:
        op["security"] = _SIGNED
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_JWS = {"type": "string", "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"}
_SUBMITTED = {
    "type": "object",
    "required": ["id", "receipt", "duplicate"],
    "properties": {"id": {"type": "string"}, "receipt": _JWS, "duplicate": {"type": "boolean"}},
}
_ITEM = {
    "type": "object",
    "required": ["seq", "type", "id"],
    "properties": {
        "seq": {"type": "integer"},
        "type": {"enum": ["envelope", "receipt"]},
        "id": {"type": "string"},
        "envelope": _JWS,
        "receipt": _JWS,
        "reminder": {"type": "boolean"},
    },
}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_DIGEST = {
    "name": "digest",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Cultural Property Alert Relay",
        "version": "1",
        "description": "Signed, end-to-end encrypted notices between authorities. Every /v1 "
        "request carries an RFC 9421 signature (docs/PROTOCOL.md). Errors are RFC 9457 "
        "problem+json with a stable `code`.",
    },
    "paths": {
        "/v1/messages": {
            "post": _op(
                "Submit one envelope or a batch",
                {
                    "200": _json(_SUBMITTED, "Duplicate (single) or batch results"),
                    "201": _json(_SUBMITTED, "Accepted and durable"),
                },
                body={
                    "oneOf": [
                        {
                            "type": "object",
                            "required": ["envelope"],
                            "properties": {"envelope": _JWS},
                        },
                        {
                            "type": "object",
                            "required": ["envelopes"],
                            "properties": {
                                "envelopes": {"type": "array", "items": _JWS, "minItems": 1}
                            },
                        },
                    ]
                },
            )
        },
        "/v1/messages/{id}": {
            "get": _op(
                "Receipt timeline of a message you sent",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "header": {"type": "object"},
                                "envelope_hash": {"type": "string"},
                                "state": {"type": "string"},
                                "receipts": {"type": "array", "items": _JWS},
                            },
                        }
                    )
                },
                params=[_ID],
            )
        },
        "/v1/receipts": {
            "post": _op(
                "Send a delivered, acknowledged or rejected receipt",
                {
                    "200": _json({"type": "object"}, "Already stored"),
                    "202": _json({"type": "object"}, "Stored and queued for the sender"),
                },
                body={"type": "object", "required": ["receipt"], "properties": {"receipt": _JWS}},
            )
        },
        "/v1/inbox": {
            "get": _op(
                "Long-poll for queued items",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"items": {"type": "array", "items": _ITEM}},
                        }
                    )
                },
                params=[
                    {"name": n, "in": "query", "schema": {"type": "integer"}}
                    for n in ("after", "wait", "limit")
                ],
            )
        },
        "/v1/inbox/ack": {
            "post": _op(
                "Acknowledge queued items by seq",
                {"200": _json({"type": "object"})},
                body={
                    "type": "object",
                    "required": ["seqs"],
                    "properties": {"seqs": {"type": "array", "items": {"type": "integer"}}},
                },
            )
        },
        "/v1/stream": {
            "get": _op(
                "WebSocket push delivery (see docs/API.md)",
                {"101": {"description": "Switching protocols"}},
            )
        },
        "/v1/attachments/{digest}": {
            "put": {
                **_op(
                    "Upload attachment ciphertext",
                    {"200": _json({"type": "object"}), "201": _json({"type": "object"})},
                    params=[_DIGEST],
                ),
                "requestBody": {"content": {"application/octet-stream": {}}},
            },
            "get": _op(
                "Download attachment ciphertext",
                {"200": {"description": "Ciphertext", "content": {"application/octet-stream": {}}}},
                params=[_DIGEST],
            ),
        },
        "/v1/directory": {
            "get": _op("Current signed directory", {"200": _json({"type": "object"})})
        },
        "/v1/directory/history": {
            "get": _op("Every directory version", {"200": _json({"type": "object"})})
        },
        "/metrics": {
            "get": {
                **_op(
                    "Prometheus metrics (operator token)",
                    {"200": {"description": "text exposition"}},
                    signed=False,
                ),
                "security": [{"operatorToken": []}],
            }
        },
        "/ops": {
            "get": {
                **_op("Operator dashboard (HTML)", {"200": {"description": "HTML"}}, signed=False),
                "security": [{"operatorToken": []}],
            }
        },
        "/ops/events": {
            "get": {
                **_op(
                    "Dashboard snapshots (SSE)",
                    {"200": {"description": "text/event-stream"}},
                    signed=False,
                ),
                "security": [{"operatorToken": []}],
            }
        },
        "/ops/snapshot": {
            "get": {
                **_op("Delivery health snapshot", {"200": _json({"type": "object"})}, signed=False),
                "security": [{"operatorToken": []}],
            }
        },
        "/ops/messages/{id}": {
            "get": {
                **_op(
                    "One message's timeline (metadata)",
                    {"200": _json({"type": "object"})},
                    params=[_ID],
                    signed=False,
                ),
                "security": [{"operatorToken": []}],
            }
        },
        "/healthz": {"get": _op("Liveness", {"200": _json({"type": "object"})}, signed=False)},
        "/readyz": {
            "get": _op(
                "Readiness: store and directory",
                {"200": _json({"type": "object"}), "503": _json({"type": "object"}, "Not ready")},
                signed=False,
            )
        },
    },
    "components": {
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
        "responses": {
            "Problem": {
                "description": "RFC 9457 problem details",
                "content": {
                    "application/problem+json": {
                        "schema": {
                            "type": "object",
                            "required": ["type", "title", "status", "code"],
                            "properties": {
                                "type": {"type": "string"},
                                "title": {"type": "string"},
                                "status": {"type": "integer"},
                                "detail": {"type": "string"},
                                "code": {"type": "string"},
                            },
                        }
                    }
                },
            }
        },
    },
}
_BODY = json.dumps(SPEC).encode()


async def openapi_handler(request: web.Request) -> web.Response:
    return web.Response(body=_BODY, content_type="application/json")
