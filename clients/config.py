"""Client-side configuration (the daemon and the ``notice`` CLI share it).

Sources, highest first: keyword arguments, ``CPAR_*`` environment variables, the TOML
file given by ``--config`` (or ``CPAR_CONFIG``). A bad value raises
:class:`ConfigError` naming the setting, on one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import SettingsConfigDict

from clients.hooks import HookConfig
from keys import settingsfile

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
"""The console addresses allowed without TLS and without ``console_allow_remote``."""


class ConfigError(Exception):
    """A client setting is missing or invalid."""


class ConsoleUser(BaseModel):
    """A person who may sign in to the officer console with a password."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=200)
    password_hash: str = Field(pattern=r"^\$argon2id\$", max_length=512)


class ClientSettings(settingsfile.PinnedRootSettings):
    model_config = SettingsConfigDict(env_prefix="CPAR_", extra="forbid", frozen=True)

    relay_url: str = "http://127.0.0.1:8080"
    relay_urls: list[str] = Field(default_factory=list)
    """Several instances of one relay (sharing a Redis store): the daemon connects to the
    first and moves on to the next each time it reconnects (client-side failover). When
    set, it replaces ``relay_url`` for the daemon. Environment: a JSON list."""
    keystore: Path = Path("authority.ks")
    passphrase_file: Path | None = None
    passphrase_env: str = "CPAR_KEYSTORE_PASSPHRASE"  # noqa: S105 - a variable name
    data_dir: Path = Path("var/authority")
    """The inbox database, the directory pin and downloaded attachments."""

    transport: Literal["websocket", "longpoll"] = "websocket"
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(5.0, gt=0)
    """The longest wait between reconnection attempts (full jitter: 0 to this); after a
    relay restart a daemon is back within about this long."""
    directory_refresh_s: float = Field(300.0, gt=0)
    directory_grace_s: float = Field(7 * 86400.0, ge=0)
    """How long past its ``expires`` a directory version is still used; after that the
    daemon and the CLI refuse it until the keeper publishes a newer one."""
    hook_interval_s: float = Field(1.0, gt=0)
    outbox_interval_s: float = Field(1.0, gt=0)
    """How often the daemon looks for messages and decisions queued in the outbox."""
    shutdown_grace_s: float = Field(10.0, ge=0)
    retention_days: float = Field(400.0, ge=0)
    """Closed messages (received: decided or expired; sent: closed by a receipt) older
    than this are forgotten by the daemon, with their receipts and events; 0 keeps all."""
    retention_archive_dir: Path | None = None
    """When set, each message's evidence is written here as JSON before it is forgotten."""
    retention_interval_s: float = Field(3600.0, gt=0)
    metrics_port: int | None = Field(None, ge=0, le=65535)
    """When set, the daemon serves Prometheus metrics at ``/metrics`` on this port."""
    metrics_host: str = "127.0.0.1"
    """Where the metrics listen (no authentication: counts only, never content)."""
    console_port: int | None = Field(None, ge=0, le=65535)
    """When set, the daemon serves the officer console on this port (docs/OPERATIONS.md)."""
    console_host: str = "127.0.0.1"
    """The console's address: loopback by default. Any other address (``0.0.0.0``
    included) also needs ``console_tls_cert``, ``console_tls_key`` and
    ``console_allow_remote = true``: the console serves decrypted notices."""
    console_tls_cert: Path | None = None
    """The console's TLS certificate chain (PEM); with ``console_tls_key`` it serves HTTPS
    and its session cookie is ``Secure``."""
    console_tls_key: Path | None = None
    """The private key of ``console_tls_cert`` (PEM, unencrypted); both or neither."""
    console_allow_remote: bool = False
    """An explicit yes to serving the console on a non-loopback ``console_host`` (TLS
    required)."""
    console_users: list[ConsoleUser] = Field(default_factory=list)
    """People who sign in with a password (``notice console user add``)."""
    console_link_person: str | None = Field(None, min_length=1, max_length=200)
    """When set, opening the one-time sign-in link signs this person in at once (no name
    asked): for a demonstration or a single-officer desk. Unset, the link asks a name."""
    hooks: list[HookConfig] = Field(default_factory=list)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _check(self) -> ClientSettings:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        if not self.relay_url.startswith(("http://", "https://")):
            raise ValueError("relay_url must start with http:// or https://")
        if not all(u.startswith(("http://", "https://")) for u in self.relay_urls):
            raise ValueError("every relay_urls entry must start with http:// or https://")
        if (self.console_tls_cert is None) != (self.console_tls_key is None):
            raise ValueError("console_tls_cert and console_tls_key must be set together")
        tls = self.console_tls_cert is not None
        if self.console_host not in LOOPBACK_HOSTS and not (tls and self.console_allow_remote):
            raise ValueError(
                f"console_host {self.console_host} is not a loopback address (127.0.0.1, "
                "::1 or localhost): to serve the console on the network, set "
                "console_tls_cert and console_tls_key (PEM files) and console_allow_remote = "
                "true"
            )
        names = [h.name for h in self.hooks]
        if len(set(names)) != len(names):
            raise ValueError("two hooks have the same name")
        return self

    @property
    def relay_endpoints(self) -> list[str]:
        """The relay URLs the daemon rotates through: ``relay_urls``, else ``relay_url``."""
        return list(self.relay_urls) or [self.relay_url]

    @property
    def inbox_path(self) -> Path:
        return self.data_dir / "inbox.sqlite3"

    @property
    def pin_path(self) -> Path:
        return self.data_dir / "directory-pin.json"

    @property
    def log_head_path(self) -> Path:
        """The newest head of the relay's log verified here (clients/logwatch.py)."""
        return self.data_dir / "log-head.json"


def load_client_settings(
    config_file: str | os.PathLike[str] | None = None, **overrides: Any
) -> ClientSettings:
    """Build settings from overrides, env variables and the TOML file, or raise one line."""
    return settingsfile.load(
        ClientSettings,
        config_file,
        overrides,
        config_env="CPAR_CONFIG",
        prefix="CPAR_",
        error=ConfigError,
    )
