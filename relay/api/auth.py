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
import re

from aiohttp import web

from keys.encoding import b64d
from keys.errors import NonceCacheFullError, RequestAuthError
from keys.httpsig import verify_request
from relay.api.handlers import stream_body_to_file
from relay.api.problems import Handler, problem
from relay.api.state import (
    AUTHORITY,
    CLOCK,
    DIRECTORY,
    NONCES,
    SETTINGS,
    STORE,
    UPLOAD_FILE,
    UPLOAD_SHA256,
    UPLOAD_SIZE,
)

_UPLOAD = re.compile(r"^/v1/attachments/[0-9a-f]{64}$")
_DIGEST = re.compile(r"sha-256=:([A-Za-z0-9+/]{43}=):")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/"):
        return await handler(request)
    app = request.app
    now_ms = app[CLOCK]()
    directory = app[DIRECTORY].current
    who: list[str] = []

    def resolve(kid: str) -> bytes | None:
        found = directory.signer(kid)
        if found is None:
            return None
        entry, key = found
        if entry.role == "relay" or not key.usable_at(now_ms):
            return None
        who.append(entry.id)
        return b64d(key.pk)

    body: bytes | None = None
    digest: bytes | None = None
    upload = request.method == "PUT" and _UPLOAD.match(request.path) is not None
    if upload:
        # Verify the signature over the *claimed* Content-Digest before a byte of the body
        # touches the disk; the body is then checked against that digest as it streams.
        digest = _claimed_sha256(request.headers.get("Content-Digest", ""))
        if digest is None:
            return problem(
                401,
                "missing_signature",
                "Request signature refused",
                "an upload needs a Content-Digest: sha-256=:<base64>: header",
            )
    else:
        body = await request.read()
    try:
        verified = verify_request(
            method=request.method,
            authority=request.host,
            path=request.rel_url.raw_path,
            query=request.rel_url.raw_query_string,
            headers=request.headers,
            body=body,
            body_sha256=digest,
            resolve_key=resolve,
            nonces=app[NONCES],
            now=now_ms // 1000,
            scheme=request.scheme,
        )
    except NonceCacheFullError as exc:
        await _discard(request)
        return problem(503, exc.code, "Temporarily unavailable", str(exc), **{"Retry-After": "5"})
    except RequestAuthError as exc:
        await _discard(request)
        code = exc.code if exc.code != "request_auth_failed" else "unauthenticated"
        return problem(401, code, "Request signature refused", str(exc))
    # The in-memory cache refused replays within this process; the store remembers the
    # nonce across restarts (and instances), so a captured request never works twice.
    if not await app[STORE].claim_nonce(verified.nonce, verified.expires):
        await _discard(request)
        return problem(
            401, "replayed_nonce", "Request signature refused", "this request was already seen"
        )
    request[AUTHORITY] = who[-1]
    if upload:
        settings = app[SETTINGS]
        tmp, hexdigest, size = await stream_body_to_file(
            request, settings.data_dir / "attachments" / "incoming", settings.max_attachment_bytes
        )
        request[UPLOAD_FILE], request[UPLOAD_SHA256], request[UPLOAD_SIZE] = tmp, hexdigest, size
        if digest is None or bytes.fromhex(hexdigest) != digest:
            await _discard(request)
            return problem(
                400,
                "digest_mismatch",
                "Malformed request",
                "the uploaded body does not match its signed Content-Digest",
            )
    try:
        return await handler(request)
    finally:
        await _discard(request)


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
