"""Typed application state keys (aiohttp ``web.AppKey``): no string keys, no globals."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from keys.httpsig import NonceCache
from relay.api.connections import ConnectionGuard
from relay.core.delivery import Clock, Delivery
from relay.core.directory import DirectoryHolder
from relay.core.disk import DiskHealth
from relay.core.escalation import EscalationEngine
from relay.core.intake import Intake
from relay.core.log import TransparencyLog
from relay.core.metrics import Metrics
from relay.core.probes import Prober
from relay.core.ratelimit import RateLimiter
from relay.core.readmodel import ReadModel
from relay.settings import RelaySettings
from relay.store.base import Store


@dataclass(frozen=True, slots=True)
class Core:
    """The collaborators ``create_app`` wired, each with its own explicit dependencies.

    Handlers take the one they need; none of them reaches another through this.
    """

    intake: Intake
    delivery: Delivery
    escalation: EscalationEngine
    prober: Prober
    read: ReadModel
    store: Store
    log: TransparencyLog


SETTINGS = web.AppKey("settings", RelaySettings)
METRICS = web.AppKey("metrics", Metrics)
CORE = web.AppKey("core", Core)
STORE = web.AppKey("store", Store)
DIRECTORY = web.AppKey("directory", DirectoryHolder)
NONCES = web.AppKey("nonces", NonceCache)
GUARD = web.AppKey("guard", ConnectionGuard)
DISK = web.AppKey("disk", DiskHealth)
RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
CLOCK: web.AppKey[Clock] = web.AppKey("clock")
SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets")
SOCKET_KEYS: web.AppKey[dict[web.WebSocketResponse, tuple[str, str]]] = web.AppKey("socket_keys")
"""Each open WebSocket's (authority, signing key id) from its authenticated upgrade."""
AUTHORITY = web.RequestKey("authority", str)
"""request[AUTHORITY]: the authenticated authority id (set by the auth middleware)."""
KEYID = web.RequestKey("keyid", str)
"""request[KEYID]: the signing key id the request was signed with."""
UPLOAD_FILE = web.RequestKey("upload_file", Path)
UPLOAD_SHA256 = web.RequestKey("upload_sha256", str)
UPLOAD_SIZE = web.RequestKey("upload_size", int)
