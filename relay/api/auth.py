"""Request authentication: every ``/v1/`` request carries an RFC 9421 signature.

The key id must name a usable signing key of an authority in the current directory
(relays cannot call the API as authorities). The authenticated authority id is put in
``request[AUTHORITY]``; handlers never look at anything else to decide who is asking.
Attachment uploads are streamed to disk first, and their SHA-256 stands in for the
body in the Content-Digest check, so a large upload is never held in memory.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
import time

from aiohttp import web

from keys.encoding import b64d
from keys.errors import NonceCacheFullError, RequestAuthError
from keys.httpsig import verify_request
from keys.models import DirectoryEntry
from relay.api.handlers import stream_body_to_file
from relay.api.problems import Handler, from_relay_error, problem
from relay.api.state import (
    AUTHORITY,
    CLOCK,
    DIRECTORY,
    DISK,
    GUARD,
    KEYID,
    NONCES,
    RATE_LIMITER,
    SETTINGS,
    STORE,
    UPLOAD_FILE,
    UPLOAD_SHA256,
    UPLOAD_SIZE,
)
from relay.core.errors import BodyTimeoutError, TooLargeError

_UPLOAD = re.compile(r"^/v1/attachments/[0-9a-f]{64}$")
_NO_DIGEST = bytes(32)
_DIGEST = re.compile(r"sha-256=:([A-Za-z0-9+/]{43}=):")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/"):
        return await handler(request)
    app = request.app
    now_ms = app[CLOCK]()
    directory = app[DIRECTORY].current
    who: list[DirectoryEntry] = []

    def resolve(kid: str) -> bytes | None:
        found = directory.signer(kid)
        if found is None:
            return None
        entry, key = found
        if entry.role == "relay" or not key.usable_at(now_ms):
            return None
        who.append(entry)
        return b64d(key.pk)

    # The signature, which covers the *claimed* Content-Digest, is checked before a byte
    # of the body is read: an unauthenticated client cannot make the relay buffer or
    # store anything. The body is then read (within body_timeout_s, capped by
    # max_body_bytes, or streamed to disk for an upload) and checked against that digest.
    header = request.headers.get("Content-Digest")
    upload = request.method == "PUT" and _UPLOAD.match(request.path) is not None
    settings = app[SETTINGS]
    cap = settings.max_attachment_bytes if upload else settings.max_body_bytes
    if request.content_length is not None and request.content_length > cap:
        # A declared size over the cap is refused before anything else, unread.
        return _refused(
            problem(413, "too_large", "Request too large", f"the body is limited to {cap} bytes")
        )
    claimed = _claimed_sha256(header or "")
    if upload and claimed is None:
        return _refused(
            problem(
                401,
                "missing_signature",
                "Request signature refused",
                "an upload needs a Content-Digest: sha-256=:<base64>: header",
            )
        )
    try:
        verified = verify_request(
            method=request.method,
            authority=request.host,
            path=request.rel_url.raw_path,
            query=request.rel_url.raw_query_string,
            headers=request.headers,
            body=None,
            # A malformed digest field is refused as digest_mismatch, as before.
            body_sha256=claimed if claimed is not None else _NO_DIGEST,
            resolve_key=resolve,
            nonces=app[NONCES],
            now=now_ms // 1000,
            scheme=request.scheme,
        )
    except NonceCacheFullError as exc:
        return problem(503, exc.code, "Temporarily unavailable", str(exc), **{"Retry-After": "5"})
    except RequestAuthError as exc:
        code = exc.code if exc.code != "request_auth_failed" else "unauthenticated"
        return _refused(problem(401, code, "Request signature refused", str(exc)))
    # The in-memory cache refused replays within this process; the store remembers the
    # nonce across restarts (and instances), so a captured request never works twice.
    if not await app[STORE].claim_nonce(verified.nonce, verified.expires):
        return _refused(
            problem(
                401, "replayed_nonce", "Request signature refused", "this request was already seen"
            )
        )
    entry = who[-1]
    request[AUTHORITY] = entry.id
    request[KEYID] = verified.keyid
    app[GUARD].authenticated(request.protocol)
    wait = app[RATE_LIMITER].take(entry.id, entry.role, time.monotonic())
    if wait > 0:
        app[GUARD].rate_limited.labels(role=entry.role).inc()
        return problem(
            429,
            "rate_limited",
            "Too many requests",
            f"{entry.id} is over its request rate; retry after the Retry-After delay",
            **{"Retry-After": str(max(1, math.ceil(wait)))},
        )
    if upload:
        try:
            tmp, hexdigest, size = await stream_body_to_file(
                request,
                settings.data_dir / "attachments" / "incoming",
                settings.max_attachment_bytes,
                stall_timeout_s=settings.body_timeout_s,
                disk=app[DISK],
            )
        except (BodyTimeoutError, TooLargeError) as exc:  # the rest is never read
            if isinstance(exc, BodyTimeoutError):
                app[GUARD].timeouts.labels(phase="body").inc()
            return _refused(from_relay_error(exc))
        request[UPLOAD_FILE], request[UPLOAD_SHA256], request[UPLOAD_SIZE] = tmp, hexdigest, size
        if claimed is None or bytes.fromhex(hexdigest) != claimed:
            await _discard(request)
            return problem(
                400,
                "digest_mismatch",
                "Malformed request",
                "the uploaded body does not match its signed Content-Digest",
            )
    else:
        try:
            async with asyncio.timeout(settings.body_timeout_s):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:  # a chunked body past max_body_bytes
            return _refused(
                problem(
                    413,
                    "too_large",
                    "Request too large",
                    f"the body is limited to {settings.max_body_bytes} bytes",
                )
            )
        except TimeoutError:
            app[GUARD].timeouts.labels(phase="body").inc()
            return _refused(
                problem(
                    408,
                    "body_timeout",
                    "Request timeout",
                    f"the request body did not arrive within {settings.body_timeout_s:g} s",
                )
            )
        if claimed is None or hashlib.sha256(body).digest() != claimed:
            return _refused(
                problem(
                    401,
                    "digest_mismatch",
                    "Request signature refused",
                    "the Content-Digest header is not the SHA-256 of the body",
                )
            )
    try:
        return await handler(request)
    finally:
        await _discard(request)


def _refused(response: web.Response) -> web.Response:
    """An authentication failure closes the connection once the answer is written."""
    response.force_close()
    return response


def _claimed_sha256(value: str) -> bytes | None:
    match = _DIGEST.fullmatch(value.strip())
    if match is None:
        return None
    try:
        raw = base64.b64decode(match.group(1), validate=True)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


async def _discard(request: web.Request) -> None:
    tmp = request.get(UPLOAD_FILE)
    if tmp is not None:
        await asyncio.to_thread(tmp.unlink, True)
