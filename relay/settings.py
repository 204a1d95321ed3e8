"""Relay configuration: ``RELAY_*`` environment variables and an optional TOML file.

Precedence (highest first): explicit keyword arguments, environment variables, the
TOML file named by ``RELAY_CONFIG`` (or ``relay serve --config``), then defaults.
Everything is validated at start; a bad value stops the relay with one line naming
the setting (:func:`load_settings` raises :class:`ConfigError`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import SettingsConfigDict

from keys import settingsfile
from relay.core.policy import DEFAULT_POLICIES, PolicyConfig
from relay.core.ratelimit import DEFAULT_RATE_LIMITS, RateLimit


class OperatorCredential(BaseModel):
    """An operator's token, stored as its SHA-256 (``relay operator-token`` makes one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ConfigError(Exception):
    """A setting is missing or invalid. The message names it, on one line."""


class RelaySettings(settingsfile.PinnedRootSettings):
    model_config = SettingsConfigDict(
        env_prefix="RELAY_", extra="forbid", frozen=True, validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    tls_cert_file: Path | None = None
    """The relay's TLS certificate (PEM; ``keys tls create``); its key's pin must be
    listed in the relay's directory entry (``tls_spki_sha256``)."""
    tls_key_file: Path | None = None
    """The certificate's private key (PEM)."""
    plain_http: bool = False
    """Serve plain HTTP: only behind a TLS-terminating proxy whose key is pinned in the
    directory. Without TLS files and without this, ``relay serve`` refuses to start."""
    data_dir: Path = Path("var/relay")
    """Holds the SQLite database, attachments and the directory pin."""

    store: Literal["sqlite", "redis", "memory"] = "sqlite"
    """``memory`` keeps nothing across a restart: for tests and trying the relay out."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """The Redis server shared by every relay instance (``store = "redis"``)."""
    redis_durability: Literal["always", "everysec"] = "always"
    """``always``: a message is accepted only once Redis has fsynced it (WAITAOF on Redis
    >= 7.2, else ``appendfsync always`` is required). ``everysec``: up to a second of
    accepted messages may be lost if the Redis server crashes."""
    redis_allow_no_aof: bool = False
    """Start even if Redis has no AOF (or its configuration cannot be read): test servers only."""

    directory_dir: Path = Path("var/directory")
    """Folder of signed directory versions (``*.jws``), re-read when files change."""
    keystore: Path = Path("var/relay.ks")
    """The relay's own identity (``keys identity create --kind relay``)."""
    keystore_passphrase_file: Path | None = None
    keystore_passphrase_env: str = "RELAY_KEYSTORE_PASSPHRASE"  # noqa: S105 - a name

    max_body_bytes: int = Field(8 * 1024 * 1024, ge=4096)
    max_envelope_bytes: int = Field(4 * 1024 * 1024, ge=4096)
    max_batch: int = Field(100, ge=1, le=10_000)
    max_attachment_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    max_message_lifetime_ms: int = Field(90 * 86_400_000, ge=60_000)
    clock_skew_ms: int = Field(5 * 60_000, ge=0, le=3_600_000)

    ws_heartbeat_s: float = Field(30.0, gt=0)
    delivery_window: int = Field(1000, ge=1)
    """Most items pushed to one daemon and not yet acknowledged."""
    longpoll_max_wait_s: float = Field(30.0, gt=0, le=120)
    shutdown_grace_s: float = Field(10.0, ge=0)

    policies: dict[str, PolicyConfig] = Field(default_factory=lambda: dict(DEFAULT_POLICIES))
    """Escalation policy per priority (urgent, high, routine); see docs/OPERATIONS.md."""
    escalation_interval_s: float = Field(0.25, gt=0, le=10)
    probe_interval_s: float = Field(60.0, gt=0)
    """How often each connected daemon is probed end to end."""
    unreachable_after_s: float = Field(600.0, gt=0)
    """An authority unreachable for longer than this makes the relay's health degraded."""
    operators: list[OperatorCredential] = Field(default_factory=list)
    """Operator credentials for /ops, /metrics and `relay status` (hashed tokens)."""

    header_timeout_s: float = Field(10.0, gt=0, le=300)
    """A request head must arrive complete within this (from connection or first byte)."""
    idle_timeout_s: float = Field(30.0, gt=0, le=3600)
    """A kept-alive connection with no request in progress is closed after this."""
    body_timeout_s: float = Field(60.0, gt=0, le=3600)
    """A request body must arrive within this; an upload may not stall for longer."""
    max_unauthenticated_connections: int | None = Field(None, ge=1)
    """Connections not yet authenticated, in all (default: half the open-file limit
    left after 128 reserved descriptors)."""
    max_unauthenticated_per_source: int | None = Field(None, ge=1)
    """Connections not yet authenticated from one source address (default: an eighth
    of the total bound)."""
    rate_limits: dict[str, RateLimit] = Field(default_factory=lambda: dict(DEFAULT_RATE_LIMITS))
    """Requests per authority: ``default`` and optional per-role entries
    (national_body, central_authority, supervisory, duty_desk)."""

    retention_days: float = Field(400.0, ge=0)
    """Closed messages accepted longer ago than this are forgotten, with their receipts,
    and so are attachments no stored message references; 0 keeps everything."""
    retention_interval_s: float = Field(3600.0, gt=0)
    """How often retention runs (and once at start)."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("rate_limits")
    @classmethod
    def _rate_limit_roles(cls, value: dict[str, RateLimit]) -> dict[str, RateLimit]:
        known = {"default", "national_body", "central_authority", "supervisory", "duty_desk"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"unknown role {', '.join(unknown)} (use default or {', '.join(sorted(known - {'default'}))})"
            )
        return value

    @field_validator("policies")
    @classmethod
    def _all_priorities(cls, value: dict[str, PolicyConfig]) -> dict[str, PolicyConfig]:
        missing = {"urgent", "high", "routine"} - set(value)
        extra = set(value) - {"urgent", "high", "routine"}
        if missing or extra:
            raise ValueError(
                "give exactly the priorities urgent, high and routine"
                + (f" (missing {', '.join(sorted(missing))})" if missing else "")
                + (f" (unknown {', '.join(sorted(extra))})" if extra else "")
            )
        return value

    @field_validator("root_key")
    @classmethod
    def _root_key_shape(cls, value: str) -> str:
        if value:
            from keys.directory import root_public_key
            from keys.errors import KeysError

            try:
                root_public_key(value)
            except KeysError as exc:
                raise ValueError("must be a 32-byte base64url Ed25519 public key") from exc
        return value

    @property
    def db_path(self) -> Path:
        return self.data_dir / "relay.sqlite3"


def load_settings(
    config_file: str | os.PathLike[str] | None = None, **overrides: Any
) -> RelaySettings:
    """Build settings from overrides, env variables and the TOML file, or raise one line."""
    return settingsfile.load(
        RelaySettings,
        config_file,
        overrides,
        config_env="RELAY_CONFIG",
        prefix="RELAY_",
        error=ConfigError,
    )
