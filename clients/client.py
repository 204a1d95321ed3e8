"""An async client for the relay API (docs/API.md), signing every request (RFC 9421).

::

    async with RelayClient("http://127.0.0.1:8080", identity) as relay:
        result = await relay.send(sealed.token)
        timeline = await relay.timeline(result.id)

Errors are :mod:`clients.errors` exceptions; aiohttp's own never escape.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from clients.errors import ClientError, RelayProblem, TransportError
from keys.encoding import now_ms
from keys.httpsig import sign_request
from keys.identity import Identity

Clock = Callable[[], int]
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=60, connect=10)


@dataclass(frozen=True, slots=True)
class SubmitResult:
    id: str
    receipt: str
    duplicate: bool


@dataclass(frozen=True, slots=True)
class TimelineResult:
    id: str
    header: dict[str, Any]
    envelope_hash: str
    state: str
    receipts: list[str]


class RelayClient:
    """One authority's connection to one relay. Reuse it: it pools connections."""

    def __init__(
        self,
        base_url: str,
        identity: Identity,
        *,
        clock: Clock | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.identity = identity
        self.clock = clock or now_ms
        self._session = session
        self._own_session = session is None
        self._timeout = timeout

    async def __aenter__(self) -> RelayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(limit=64)
            )
        return self._session

    def signed_headers(
        self, method: str, url: str, body: bytes | None, *, body_sha256: bytes | None = None
    ) -> dict[str, str]:
        key = self.identity.signing_key(self.clock())
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

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """Send a signed JSON request; return (status, decoded JSON) or raise."""
        url = self.url(path, params)
        raw = b"" if body is None else json.dumps(body).encode()
        headers = self.signed_headers(method, url, raw)
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self.session.request(method, url, data=raw, headers=headers) as resp:
                payload = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"cannot reach the relay at {self.base_url}: {exc}") from exc
        try:
            data = json.loads(payload) if payload else None
        except ValueError as exc:
            raise TransportError(
                f"the relay answered {status} with a body that is not JSON"
            ) from exc
        if status >= 400:
            raise RelayProblem.from_body(status, data)
        return status, data

    # -- messages -------------------------------------------------------------------

    async def send(self, envelope: str) -> SubmitResult:
        """Submit one envelope. Returns once the relay has made it durable."""
        _, data = await self.request("POST", "/v1/messages", body={"envelope": envelope})
        return SubmitResult(data["id"], data["receipt"], bool(data["duplicate"]))

    async def send_batch(self, envelopes: Sequence[str]) -> list[SubmitResult | RelayProblem]:
        _, data = await self.request("POST", "/v1/messages", body={"envelopes": list(envelopes)})
        out: list[SubmitResult | RelayProblem] = []
        for item in data["results"]:
            if "problem" in item:
                p = item["problem"]
                out.append(RelayProblem.from_body(int(p.get("status", 422)), p))
            else:
                out.append(SubmitResult(item["id"], item["receipt"], bool(item["duplicate"])))
        return out

    async def timeline(self, msg_id: str) -> TimelineResult:
        _, d = await self.request("GET", f"/v1/messages/{msg_id}")
        return TimelineResult(
            d["id"], d["header"], d["envelope_hash"], d["state"], list(d["receipts"])
        )

    async def send_receipt(self, receipt: str) -> bool:
        """Send a delivered/acknowledged/rejected receipt. True if the relay had not seen it."""
        _, data = await self.request("POST", "/v1/receipts", body={"receipt": receipt})
        return not data["duplicate"]

    # -- inbox (long-poll) ----------------------------------------------------------

    async def poll(
        self, *, after: int = 0, wait: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        _, data = await self.request(
            "GET", "/v1/inbox", params={"after": after, "wait": wait, "limit": limit}
        )
        return list(data["items"])

    async def ack(self, seqs: Sequence[int]) -> int:
        _, data = await self.request("POST", "/v1/inbox/ack", body={"seqs": list(seqs)})
        return int(data["acked"])

    async def connect_stream(self, *, heartbeat: float = 30.0) -> aiohttp.ClientWebSocketResponse:
        """Open the signed WebSocket (``/v1/stream``)."""
        url = self.url("/v1/stream")
        headers = self.signed_headers("GET", url, b"")
        try:
            return await self.session.ws_connect(
                url, headers=headers, heartbeat=heartbeat, max_msg_size=8 * 1024 * 1024
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise RelayProblem.from_body(
                exc.status, {"code": "handshake_refused", "detail": exc.message}
            ) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"cannot open the stream at {self.base_url}: {exc}") from exc

    # -- directory ------------------------------------------------------------------

    async def directory_history(self) -> list[str]:
        _, data = await self.request("GET", "/v1/directory/history")
        return list(data["versions"])

    # -- attachments ----------------------------------------------------------------

    async def upload_attachment(self, path: str | os.PathLike[str], digest: str) -> None:
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
            async with self.session.put(url, data=_chunks(fh), headers=headers) as resp:
                payload = await resp.read()
                if resp.status >= 400:
                    raise RelayProblem.from_body(resp.status, _json_or_none(payload))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"upload to {self.base_url} failed: {exc}") from exc
        finally:
            await asyncio.to_thread(fh.close)

    async def download_attachment(self, digest: str, dest: str | os.PathLike[str]) -> Path:
        """Download ciphertext into ``dest`` (atomically), checking its SHA-256."""
        url = self.url(f"/v1/attachments/{digest}")
        headers = self.signed_headers("GET", url, b"")
        target = Path(dest)
        tmp = target.with_name(f".{target.name}.part")
        hasher = hashlib.sha256()
        try:
            async with self.session.get(url, headers=headers) as resp:
                if resp.status >= 400:
                    raise RelayProblem.from_body(resp.status, _json_or_none(await resp.read()))
                await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
                fh = await asyncio.to_thread(tmp.open, "wb")
                try:
                    async for chunk in resp.content.iter_chunked(256 * 1024):
                        hasher.update(chunk)
                        await asyncio.to_thread(fh.write, chunk)
                finally:
                    await asyncio.to_thread(fh.close)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            await asyncio.to_thread(tmp.unlink, True)
            raise TransportError(f"download from {self.base_url} failed: {exc}") from exc
        if hasher.hexdigest() != digest:
            await asyncio.to_thread(tmp.unlink, True)
            raise ClientError(f"attachment {digest} arrived corrupted")
        await asyncio.to_thread(os.replace, tmp, target)
        return target


def _sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h.digest()


async def _chunks(fh: Any) -> Any:
    while chunk := await asyncio.to_thread(fh.read, 256 * 1024):
        yield chunk


def _json_or_none(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except ValueError:
        return None
