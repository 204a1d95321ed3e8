"""Configuration: validated at start, one line naming the bad setting, paths relative to the file."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from clients.config import ConfigError as ClientConfigError
from clients.config import load_client_settings
from relay.cli import main as relay_main
from relay.settings import ConfigError, RelaySettings, load_settings
from tests.netfixture import Network
from tests.relayfixture import RelayEnv, write_relay_files

ROOT_KEY = "A" * 43  # 32 zero bytes in base64url


def test_relative_paths_in_a_config_file_are_relative_to_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "relay.toml"
    conf.parent.mkdir()
    conf.write_text(f'root_key = "{ROOT_KEY}"\ndata_dir = "data"\nkeystore = "/abs/relay.ks"\n')
    s = load_settings(conf)
    assert s.data_dir == tmp_path / "etc" / "data"
    assert s.keystore == Path("/abs/relay.ks")
    client = tmp_path / "etc" / "client.toml"
    client.write_text(f'root_key = "{ROOT_KEY}"\nkeystore = "it.ks"\n')
    assert load_client_settings(client).keystore == tmp_path / "etc" / "it.ks"


def test_environment_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "relay.toml"
    conf.write_text(f'root_key = "{ROOT_KEY}"\nport = 9000\n')
    monkeypatch.setenv("RELAY_PORT", "9100")
    assert load_settings(conf).port == 9100


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"RELAY_PORT": "99999"}, "port (RELAY_PORT)"),
        ({"RELAY_PORT": "eighty"}, "port (RELAY_PORT)"),
        ({"RELAY_STORE": "postgres"}, "store (RELAY_STORE)"),
        ({"RELAY_ROOT_KEY": "not-a-key"}, "root_key (RELAY_ROOT_KEY)"),
        ({"RELAY_MAX_BATCH": "0"}, "max_batch (RELAY_MAX_BATCH)"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it(
    env: dict[str, str],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RELAY_ROOT_KEY", ROOT_KEY)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert relay_main(["check-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("relay: error: invalid setting") and needle in err[0]


def test_missing_root_key_and_missing_file_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("RELAY_ROOT_KEY", raising=False)
    with pytest.raises(ConfigError, match="root_key"):
        load_settings()
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ClientConfigError, match="root_key"):
        load_client_settings(relay_url="http://127.0.0.1:1")


def _relay_toml(settings: RelaySettings, *, passphrase: bool = True) -> Path:
    conf = settings.data_dir.parent / "relay.toml"
    lines = [
        f'root_key = "{settings.root_key}"',
        f'data_dir = "{settings.data_dir}"',
        f'directory_dir = "{settings.directory_dir}"',
        f'keystore = "{settings.keystore}"',
        "plain_http = true",
    ]
    if passphrase:
        lines.append(f'keystore_passphrase_file = "{settings.keystore_passphrase_file}"')
    conf.write_text("\n".join(lines) + "\n")
    return conf


@pytest.fixture
def files(tmp_path: Path, net: Network, monkeypatch: pytest.MonkeyPatch) -> RelaySettings:
    for name in ("RELAY_ROOT_KEY", "RELAY_KEYSTORE_PASSPHRASE", "RELAY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return write_relay_files(tmp_path, net)


def test_check_config_accepts_a_good_configuration(
    files: RelaySettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert relay_main(["check-config", "--config", str(_relay_toml(files))]) == 0
    out = capsys.readouterr().out
    assert "configuration OK: relay relay-eu, directory version" in out


def test_check_config_checks_what_serve_checks(
    files: RelaySettings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A configuration that cannot start is not OK: no passphrase, no directory version."""
    bare = _relay_toml(files, passphrase=False)
    assert relay_main(["check-config", "--config", str(bare)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no passphrase" in err[0] and "--passphrase-file" in err[0]
    # The option the message names exists on check-config (and serve).
    pass_file = str(files.keystore_passphrase_file)
    assert relay_main(["check-config", "--config", str(bare), "--passphrase-file", pass_file]) == 0
    capsys.readouterr()
    for version in files.directory_dir.iterdir():
        version.unlink()
    assert relay_main(["check-config", "--config", str(_relay_toml(files))]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("relay: error: cannot start: directory")


async def test_a_second_relay_on_the_same_data_dir_refuses_naming_the_holder(
    relay: RelayEnv,
) -> None:
    conf = await asyncio.to_thread(_relay_toml, relay.settings)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay.cli",
        "serve",
        "--config",
        str(conf),
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1, out
    lines = err.decode().strip().splitlines()
    assert lines[-1] == (
        f"relay: error: cannot start: {relay.settings.data_dir} is in use by another relay "
        f"(pid {os.getpid()} on {socket.gethostname()}); two relays cannot share one data_dir"
    )


def test_config_is_accepted_before_the_command_too(
    files: RelaySettings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = _relay_toml(files)
    with monkeypatch.context() as m:
        m.setenv("RELAY_CONFIG", "recorded so that the test restores it")
        m.delenv("RELAY_CONFIG")
        assert relay_main(["--config", str(conf), "check-config"]) == 0
        assert "configuration OK" in capsys.readouterr().out
