"""Connection-level defences: deadlines, a bound on unauthenticated connections, and
parser errors answered as problem+json.

aiohttp's defaults let a client hold a connection forever while it trickles a request
head, keep an idle connection for an hour, and answer a request the HTTP parser cannot
read with ``text/plain`` that echoes the input and a traceback at ERROR. Here:

* **Deadlines** (Go's ``ReadHeaderTimeout`` and ``IdleTimeout`` are the model): a new
  connection must deliver a complete request head within ``header_timeout_s``; between
  requests a kept-alive connection may idle for ``idle_timeout_s``, and once the next
  head starts arriving it must complete within ``header_timeout_s``. The body deadline
  lives in the auth middleware (bodies are read only after the signature checked out).
* **A bound on unauthenticated connections**, total and per source address, derived from
  the open-file limit (:func:`raise_nofile_limit` raises the soft limit to the hard one).
  A connection counts as unauthenticated until a request on it passes signature
  verification (the auth middleware calls :meth:`ConnectionGuard.authenticated`), so an
  authority's WebSocket and its kept-alive HTTP connections never count. Past the
  per-source bound a new connection is refused at once; past the total bound the oldest
  unauthenticated connection still waiting for its first request is closed to make room
  (so a flood cannot keep a newly arriving authority out), and refused only if none is.
  Refusals are counted in ``/metrics`` and logged at WARNING at most once a minute.
* **Parser errors** (oversized or malformed head, bad chunking, unknown method) get a
  problem+json answer that does not echo the input, and one WARNING line without a
  traceback, at most once a minute with a count.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client import Counter as PromCounter

from keys import wire
from relay.api.problems import PROBLEM_TYPE, problem_body

log = logging.getLogger(__name__)
RESERVED_FILES = 128
"""File descriptors kept for the store, logs, attachments and authorities' connections."""
WARN_EVERY_S = 60.0


def raise_nofile_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; return the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # pragma: no cover - refused by the platform
            log.warning("could not raise the open-file limit above %d", soft)
    return soft


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    max_unauthenticated: int = 512
    max_unauthenticated_per_source: int = 64

    @classmethod
    def derive(
        cls,
        nofile: int,
        *,
        header_timeout_s: float,
        idle_timeout_s: float,
        total: int | None,
        per_source: int | None,
    ) -> ConnectionLimits:
        """Half of the file descriptors left after :data:`RESERVED_FILES` may be held by
        unauthenticated clients, an eighth of that by any one source address; the other
        half stays for authorities."""
        derived_total = max(16, (nofile - RESERVED_FILES) // 2)
        total = total if total is not None else derived_total
        per_source = per_source if per_source is not None else max(4, total // 8)
        return cls(header_timeout_s, idle_timeout_s, total, min(per_source, total))


class _RateLimitedWarning:
    """One WARNING line per ``every_s`` at most, with how many events it stands for."""

    def __init__(self, every_s: float = WARN_EVERY_S) -> None:
        self._every_s = every_s
        self._last = -float("inf")
        self._suppressed = 0

    def __call__(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self._every_s:
            self._suppressed += 1
            return
        more = (
            f" (and {self._suppressed} more since the last such line)" if self._suppressed else ""
        )
        self._last, self._suppressed = now, 0
        log.warning(message + more, *args)


class ConnectionGuard:
    """Counts and bounds unauthenticated connections; one per relay process."""

    def __init__(self, limits: ConnectionLimits, registry: CollectorRegistry) -> None:
        self.limits = limits
        self._unauthenticated: dict[GuardedHandler, str] = {}  # insertion order = age
        self._per_source: Counter[str] = Counter()
        self._warn_refused = _RateLimitedWarning()
        self.warn_parser = _RateLimitedWarning()
        self.unauthenticated_gauge = Gauge(
            "cpar_unauthenticated_connections",
            "Open connections on which no request has been authenticated yet",
            registry=registry,
        )
        self.refused = PromCounter(
            "cpar_connections_refused",
            "Connections refused or closed early to keep capacity for authorities",
            ["reason"],
            registry=registry,
        )
        self.timeouts = PromCounter(
            "cpar_connection_timeouts",
            "Connections closed by a deadline: request head, idle keep-alive, request body",
            ["phase"],
            registry=registry,
        )
        self.rate_limited = PromCounter(
            "cpar_rate_limited",
            "Authenticated requests refused with 429, by the authority's role",
            ["role"],
            registry=registry,
        )
        self.parser_errors = PromCounter(
            "cpar_http_parser_errors", "Requests the HTTP parser could not read", registry=registry
        )
        for reason in ("per_source", "total", "evicted"):
            self.refused.labels(reason=reason)
        for phase in ("head", "idle", "body"):
            self.timeouts.labels(phase=phase)

    def __len__(self) -> int:
        return len(self._unauthenticated)

    def admit(self, handler: GuardedHandler, source: str) -> bool:
        limits = self.limits
        if self._per_source[source] >= limits.max_unauthenticated_per_source:
            self._refuse("per_source", source)
            return False
        if len(self._unauthenticated) >= limits.max_unauthenticated:
            victim = next((h for h in self._unauthenticated if h.waiting_for_first), None)
            if victim is None:
                self._refuse("total", source)
                return False
            self.refused.labels(reason="evicted").inc()
            self._warn_refused(
                "unauthenticated connections at the bound of %d: closing the oldest idle one",
                limits.max_unauthenticated,
            )
            self.forget(victim)
            victim.force_close()
        self._unauthenticated[handler] = source
        self._per_source[source] += 1
        self.unauthenticated_gauge.set(len(self._unauthenticated))
        return True

    def _refuse(self, reason: Literal["per_source", "total"], source: str) -> None:
        self.refused.labels(reason=reason).inc()
        if reason == "per_source":
            self._warn_refused(
                "refusing unauthenticated connections from %s: it holds %d already",
                source,
                self.limits.max_unauthenticated_per_source,
            )
        else:
            self._warn_refused(
                "refusing unauthenticated connections: %d open, the bound",
                self.limits.max_unauthenticated,
            )

    def authenticated(self, protocol: object) -> None:
        """A request on this connection passed signature verification."""
        if isinstance(protocol, GuardedHandler):
            self.forget(protocol)

    def forget(self, handler: GuardedHandler) -> None:
        source = self._unauthenticated.pop(handler, None)
        if source is not None:
            self._per_source[source] -= 1
            if self._per_source[source] <= 0:
                del self._per_source[source]
            self.unauthenticated_gauge.set(len(self._unauthenticated))


_REFUSAL = wire.encode(
    problem_body(
        503,
        "too_many_connections",
        "Temporarily unavailable",
        "too many connections are waiting to authenticate; retry later",
    )
)
_REFUSAL_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
    + PROBLEM_TYPE.encode()
    + b"\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: "
    + str(len(_REFUSAL)).encode()
    + b"\r\n\r\n"
    + _REFUSAL
)
_PARSER_TITLES = {
    400: "Malformed HTTP request",
    413: "Request too large",
    431: "Request header fields too large",
}


class GuardedHandler(RequestHandler):
    """aiohttp's per-connection protocol, with the guard's admission and deadlines."""

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: Literal["first", "idle", "head", "request"] = "first"

    @property
    def waiting_for_first(self) -> bool:
        """No request has arrived on this connection yet (nothing would be lost by closing)."""
        return self._phase == "first" and self._request_count == 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else "local"
        if not self._guard.admit(self, source):
            self._refused = True
            write: Callable[[bytes], None] | None = getattr(transport, "write", None)
            if write is not None:
                write(_REFUSAL_RESPONSE)
            transport.close()
            return
        super().connection_made(transport)
        self._arm(self._guard.limits.header_timeout_s)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._guard.forget(self)
        if self._refused:
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        before = self._request_count
        super().data_received(data)
        if self._request_count > before:
            self._phase = "request"
            self._disarm()
        elif data and self._phase == "idle":
            self._phase = "head"  # the next request head started: it has header_timeout_s
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._guard.limits.header_timeout_s
            if self._deadline is None or deadline < self._deadline.when():
                self._arm(self._guard.limits.header_timeout_s)

    async def finish_response(
        self, request: BaseRequest, resp: StreamResponse, start_time: float | None
    ) -> tuple[StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            if not self._messages and self.transport is not None and not self._force_close:
                self._phase = "idle"
                self._arm(self._guard.limits.idle_timeout_s)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = asyncio.get_running_loop().call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self._phase == "request":
            return
        self._guard.timeouts.labels(phase="idle" if self._phase == "idle" else "head").inc()
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        if status >= 500:  # an unexpected failure in the server itself, not bad input
            log.error("error handling a request from %s", request.remote, exc_info=exc)
            body = problem_body(500, "internal", "Internal error", "unexpected error")
        else:
            self._guard.parser_errors.inc()
            self._guard.warn_parser(
                "unparseable HTTP request from %s (%s); answered %d",
                request.remote,
                type(exc).__name__ if exc is not None else "unknown",
                status,
            )
            title = _PARSER_TITLES.get(status, "Malformed HTTP request")
            body = problem_body(
                status, "bad_http_request", title, "the request could not be read as HTTP/1.1"
            )
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started")
        resp = web.Response(status=body.status, body=wire.encode(body), content_type=PROBLEM_TYPE)
        resp.force_close()
        return resp


class GuardedSite(web.TCPSite):
    """A TCP site whose connections are :class:`GuardedHandler` protocols."""

    def __init__(
        self,
        runner: web.AppRunner,
        host: str,
        port: int,
        *,
        guard: ConnectionGuard,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, host, port, reuse_address=True, ssl_context=ssl_context)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        guard = self._guard
        kwargs = dict(server._kwargs)  # the runner's handler settings (timeouts, logging)
        loop = asyncio.get_running_loop()

        def factory() -> GuardedHandler:
            return GuardedHandler(server, guard=guard, loop=loop, **kwargs)

        self._server = await loop.create_server(
            factory,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=True,
            # A TLS connection reaches connection_made (and the guard) only once its
            # handshake is done: the handshake gets the head deadline too.
            ssl_handshake_timeout=guard.limits.header_timeout_s if self._ssl_context else None,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
