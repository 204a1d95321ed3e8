"""Loading ``pydantic-settings`` classes from env variables and a TOML file.

Shared by the relay (``RELAY_*``) and the clients (``CPAR_*``), which may not import each
other. Precedence: keyword overrides, environment variables, then the TOML file; relative
paths in the file are relative to the file. Every validation problem becomes one line
naming the setting and its environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Self, TypeVar

from pydantic import ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from keys.directory import root_public_key

S = TypeVar("S", bound=BaseSettings)


class TomlFileSource(TomlConfigSettingsSource):
    """The TOML source, with relative paths taken relative to the file, not the cwd."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        self._fields = settings_cls.model_fields  # _read_file runs inside __init__
        super().__init__(settings_cls)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        data = super()._read_file(file_path)
        base = Path(str(file_path)).parent
        for name, info in self._fields.items():
            value = data.get(name)
            ann = info.annotation
            is_path = ann is Path or Path in getattr(ann, "__args__", ())
            if is_path and isinstance(value, str) and not Path(value).is_absolute():
                data[name] = str(base / value)
        return data


class PinnedRootSettings(BaseSettings):
    """Base of the relay's and the clients' settings: the env + TOML sources, and the
    network root key that every directory must be signed by."""

    root_key: str = ""
    """The network root public key (base64url), pinned: every directory must be signed by it."""
    root_key_file: Path | None = None

    @model_validator(mode="after")
    def _root_given(self) -> Self:
        if not self.root_key and self.root_key_file is None:
            p = self.model_config.get("env_prefix", "")
            raise ValueError(
                f"root_key ({p}ROOT_KEY) or root_key_file ({p}ROOT_KEY_FILE) is required"
            )
        return self

    def root_public_key(self) -> bytes:
        if self.root_key:
            return root_public_key(self.root_key)
        assert self.root_key_file is not None
        return root_public_key(self.root_key_file.read_text(encoding="ascii"))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return sources(settings_cls, init_settings, env_settings)


def sources(
    settings_cls: type[BaseSettings],
    init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """For ``settings_customise_sources``: overrides, then env, then the TOML file."""
    return (init_settings, env_settings, TomlFileSource(settings_cls))


def load(
    cls: type[S],
    config_file: str | os.PathLike[str] | None,
    overrides: dict[str, Any],
    *,
    config_env: str,
    prefix: str,
    error: type[Exception],
) -> S:
    """Build ``cls`` from its sources; any problem raises ``error`` with one line."""
    config_file = config_file or os.environ.get(config_env) or None
    target: type[S] = cls
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise error(f"config file {path} does not exist")
        config = SettingsConfigDict(**{**cls.model_config, "toml_file": path})
        target = type(f"{cls.__name__}FromFile", (cls,), {"model_config": config})
    try:
        return target(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        if not err["loc"]:  # a rule about several settings: its message names them
            raise error(
                f"invalid configuration: {err['msg'].removeprefix('Value error, ')}"
            ) from exc
        name = ".".join(str(p) for p in err["loc"])
        env = f"{prefix}{str(err['loc'][0]).upper()}"
        raise error(f"invalid setting {name} ({env}): {err['msg']}") from exc
    except ValueError as exc:  # e.g. a TOML syntax error
        raise error(f"invalid configuration: {exc}") from exc
