"""problem+json (RFC 9457) responses, and the middleware that guarantees them."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from keys import wire
from keys.errors import KeysError
from relay.core.errors import RelayError, UnavailableError
from relay.store.base import StoreError

log = logging.getLogger(__name__)
PROBLEM_TYPE = "application/problem+json"

_HTTP_CODES = {
    400: ("malformed", "Malformed request"),
    401: ("unauthenticated", "Request signature refused"),
    403: ("forbidden", "Not allowed"),
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("too_large", "Request too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
    503: ("unavailable", "Temporarily unavailable"),
}


def problem_body(status: int, code: str, title: str, detail: str) -> wire.Problem:
    return wire.Problem.model_construct(
        type=f"urn:cpar:problem:{code}", title=title, status=status, detail=detail, code=code
    )


def problem(status: int, code: str, title: str, detail: str, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        body=wire.encode(problem_body(status, code, title, detail)),
        content_type=PROBLEM_TYPE,
        headers=headers or None,
    )


def from_relay_error(exc: RelayError) -> web.Response:
    extra = {"Retry-After": "5"} if exc.status == 503 else {}
    return problem(exc.status, exc.code, exc.title, exc.detail, **extra)


def relay_error_body(exc: RelayError) -> wire.Problem:
    return problem_body(exc.status, exc.code, exc.title, exc.detail)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as problem+json; nothing a client sends produces a 5xx."""
    try:
        return await handler(request)
    except RelayError as exc:
        return from_relay_error(exc)
    except StoreError as exc:  # a store call outside RelayCore (nonces, attachments)
        return from_relay_error(UnavailableError(f"the message store is unavailable: {exc}"))
    except KeysError as exc:  # a refusal the handler did not translate itself
        return problem(422, exc.code, "Refused", str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, title = _HTTP_CODES.get(exc.status, ("http_error", exc.reason))
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if exc.status == 413:
            detail = "the request body is larger than this relay accepts"
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return problem(exc.status, code, title, detail or title, **headers)
    except (ConnectionResetError, TimeoutError):
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "internal", "Internal error", "the relay hit an unexpected error")
