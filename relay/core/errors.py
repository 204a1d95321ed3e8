"""Domain errors, each with the HTTP status and stable code the API layer reports."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from keys.errors import KeysError
from relay.store.base import StoreError

T = TypeVar("T")


class RelayError(Exception):
    """A request the relay refuses. ``code`` is stable; ``status`` is the HTTP status."""

    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(self, detail: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class MalformedError(RelayError):
    status, code, title = 400, "malformed", "Malformed request"


class ForbiddenError(RelayError):
    status, code, title = 403, "forbidden", "Not allowed"


class NotFoundError(RelayError):
    status, code, title = 404, "not_found", "Not found"


class ConflictError(RelayError):
    status, code, title = 409, "id_conflict", "Message id already used"


class TooLargeError(RelayError):
    status, code, title = 413, "too_large", "Request too large"


class BodyTimeoutError(RelayError):
    status, code, title = 408, "body_timeout", "Request timeout"


class InsufficientStorageError(RelayError):
    """The relay's disk refused a write (full, over quota): retry later."""

    status, code, title = 507, "insufficient_storage", "Insufficient storage"


class RejectedError(RelayError):
    """The envelope or receipt is well-formed but not acceptable."""

    status, code, title = 422, "rejected", "Refused"


class UnavailableError(RelayError):
    status, code, title = 503, "store_unavailable", "Temporarily unavailable"


class RateLimitedError(RelayError):
    """Over the authority's request rate (a WebSocket frame; HTTP answers 429 itself)."""

    status, code, title = 429, "rate_limited", "Too many requests"


def from_keys_error(exc: KeysError) -> RelayError:
    """Translate a trust-layer refusal into a 422 (or 400 for malformed input)."""
    if exc.code == "malformed":
        return MalformedError(str(exc))
    return RejectedError(str(exc), code=exc.code)


async def guard(aw: Awaitable[T]) -> T:
    """Await a store call; a store failure becomes :class:`UnavailableError` (503).

    The one place where storage errors are translated: every collaborator calls the
    store through this, so the API layer only ever sees :class:`RelayError`.
    """
    try:
        return await aw
    except StoreError as exc:
        raise UnavailableError(f"the message store is unavailable: {exc}") from exc
