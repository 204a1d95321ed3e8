"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

Every command the services run must be a console entry point of this project
(``[project.scripts]``) with real subcommands and options; every ``RELAY_*`` and
``CPAR_*`` variable must be a setting, with a value the settings accept; Redis must keep
the AOF with ``appendfsync always``; and the init service's key ceremony, run here with
its volume replaced by a temporary folder, must produce exactly what the relays and
daemons are configured to read.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

from clients.config import ClientSettings, load_client_settings
from keys.directory import Directory, root_public_key
from keys.keystore import load_keystore
from relay.api.ops import token_digest
from relay.app import load_identity
from relay.settings import RelaySettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROJECT_IMAGE = "cpar:latest"


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _init_script() -> str:
    command = SERVICES["init"]["command"]
    assert command[:2] == ["sh", "-ec"]
    return str(command[2])


def _invocations() -> list[list[str]]:
    """Every call of a project entry point: service commands and the init script's lines."""
    calls: list[list[str]] = []
    for service in SERVICES.values():
        command = service.get("command")
        if isinstance(command, list) and command and command[0] in SCRIPTS:
            calls.append([str(c) for c in command])
    heredoc: str | None = None
    for line in _init_script().splitlines():
        if heredoc is not None:  # a here-document's body is data, not commands
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        tokens = shlex.split(line)
        if tokens and tokens[0] in SCRIPTS:
            calls.append(tokens)
        marker = re.search(r"<<-?\s*'?(\w+)'?", line)
        if marker:
            heredoc = marker.group(1)
    return calls


def _click_root(script: str) -> click.Command:
    module = importlib.import_module(SCRIPTS[script].split(":", 1)[0])
    group = module.cli
    assert isinstance(group, click.Command)
    return group


def _check_invocation(tokens: list[str]) -> None:
    """The subcommands exist and every option is one the (sub)command takes."""
    command = _click_root(tokens[0])
    i = 1
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("-"):
            name = token.split("=", 1)[0]
            found = [
                p
                for p in command.params
                if isinstance(p, click.Option) and name in (*p.opts, *p.secondary_opts)
            ]
            assert found, f"{' '.join(tokens)}: {command.name} has no option {name}"
            if not found[0].is_flag and "=" not in token:
                i += 1  # its value
        elif isinstance(command, click.Group):
            sub = command.commands.get(token)
            assert sub is not None, f"{' '.join(tokens)}: no subcommand {token}"
            command = sub
        else:
            assert any(isinstance(p, click.Argument) for p in command.params), (
                f"{' '.join(tokens)}: {command.name} takes no argument {token}"
            )
        i += 1
    assert not isinstance(command, click.Group), f"{' '.join(tokens)} names no command"


# --- structure -----------------------------------------------------------------------------


def test_the_services_of_the_demo_network() -> None:
    relays = [n for n, s in SERVICES.items() if s.get("command") == ["relay", "serve"]]
    daemons = [n for n, s in SERVICES.items() if s.get("command") == ["notice", "daemon"]]
    assert len(relays) == 2 and len(daemons) == 2
    for name in relays + daemons + ["init"]:
        assert SERVICES[name]["image"] == PROJECT_IMAGE, name
    for name in relays:
        deps = SERVICES[name]["depends_on"]
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["init"]["condition"] == "service_completed_successfully"
    declared = set(COMPOSE["volumes"])
    for name, service in SERVICES.items():
        for dep in service.get("depends_on", []):
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source in declared, f"{name} mounts undeclared volume {source}"


def test_redis_keeps_an_append_only_file_fsynced_before_every_reply() -> None:
    command = SERVICES["redis"]["command"]
    args = dict(zip(command[1::2], command[2::2], strict=False))
    assert command[0] == "redis-server"
    assert args["--appendonly"] == "yes" and args["--appendfsync"] == "always"
    image = SERVICES["redis"]["image"]
    major, minor = (int(x) for x in re.findall(r"redis:(\d+)\.(\d+)", image)[0])
    assert (major, minor) >= (7, 2), "7.2+ so the relay confirms each write with WAITAOF"


def test_every_command_is_a_project_entry_point_with_real_subcommands_and_options() -> None:
    calls = _invocations()
    assert {c[0] for c in calls} == {"relay", "notice", "keys"}
    for tokens in calls:
        _check_invocation(tokens)


def test_every_variable_is_a_setting_and_every_value_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, service in SERVICES.items():
        env = _env(service)
        # RELAY_CONFIG names the relay's TOML file (the CLI's --config), not a setting;
        # the init ceremony test below loads it.
        relay = {k: v for k, v in env.items() if k.startswith("RELAY_") and k != "RELAY_CONFIG"}
        client = {k: v for k, v in env.items() if k.startswith("CPAR_")}
        for key in relay:
            assert key[6:].lower() in RelaySettings.model_fields, f"{name}: {key}"
        for key in client:
            assert key[5:].lower() in ClientSettings.model_fields, f"{name}: {key}"
        with monkeypatch.context() as m:
            for key in list(os.environ):
                if key.startswith(("RELAY_", "CPAR_")):
                    m.delenv(key)
            for key, value in {**relay, **client}.items():
                m.setenv(key, value)
            if relay:
                settings = load_settings()
                assert settings.store == "redis" and settings.redis_durability == "always"
                assert urlsplit(settings.redis_url).hostname in SERVICES
            if client:
                cs = load_client_settings()
                for url in [cs.relay_url, *cs.relay_urls]:
                    assert urlsplit(url).hostname in SERVICES, f"{name}: {url}"


def test_daemons_know_every_relay_instance_and_senders_use_the_proxy() -> None:
    relays = {n: _env(s) for n, s in SERVICES.items() if s.get("command") == ["relay", "serve"]}
    expected = {f"https://{n}:{env['RELAY_PORT']}" for n, env in relays.items()}
    for name, service in SERVICES.items():
        if service.get("command") != ["notice", "daemon"]:
            continue
        env = _env(service)
        assert set(yaml.safe_load(env["CPAR_RELAY_URLS"])) == expected, name
        assert urlsplit(env["CPAR_RELAY_URL"]).hostname == "proxy"


def test_the_proxy_spreads_over_both_instances_and_keeps_what_signatures_cover() -> None:
    conf = COMPOSE["configs"]["nginx-relay"]["content"].replace("$$", "$")
    for name, service in SERVICES.items():
        if service.get("command") == ["relay", "serve"]:
            assert f"server {name}:{_env(service)['RELAY_PORT']}" in conf
    assert "proxy_set_header Host $http_host;" in conf  # @authority is signed
    assert "proxy_set_header Upgrade $http_upgrade;" in conf  # /v1/stream
    assert SERVICES["proxy"]["configs"][0]["target"] == "/etc/nginx/conf.d/default.conf"


def test_the_dockerfile_installs_this_project() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert text.startswith("# ") and "\nFROM python:3.11-slim\n" in text
    assert "pip install --no-cache-dir ." in text
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    top = {p.split(".")[0] for p in include}
    assert top == {"keys", "relay", "clients"}
    for package in top:
        assert f"COPY {package} ./{package}" in text, package
    relay_build = SERVICES["relay-1"]["build"]
    assert relay_build == "." and SERVICES["init"]["build"] == "."


# --- the init service's ceremony, run here -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_init_ceremony_makes_what_relays_and_daemons_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = tmp_path / "net"
    net.mkdir()
    script = _init_script().replace("/net/", f"{net}/")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["sh", "-ec", script], env=env, capture_output=True, text=True, timeout=110, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # Run again (a restarted stack): it leaves the network alone.
    again = subprocess.run(
        ["sh", "-ec", script], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert again.returncode == 0 and "already made" in again.stdout

    root = root_public_key((net / "root.pub").read_text())
    directory = Directory.verify((net / "directory" / "v0001.jws").read_text().strip(), [root])
    for name, service in SERVICES.items():
        env_vars = {
            k: v.replace("/net/", f"{net}/")
            for k, v in _env(service).items()
            if k.startswith(("RELAY_", "CPAR_"))
        }
        for value in env_vars.values():
            if value.startswith(str(net)):
                assert Path(value).exists(), f"{name}: {value} is not made by init"
        if not env_vars:
            continue
        with monkeypatch.context() as m:
            for key in list(os.environ):
                if key.startswith(("RELAY_", "CPAR_")):
                    m.delenv(key)
            for key, value in env_vars.items():
                m.setenv(key, value)
            if "RELAY_STORE" in env_vars:
                settings = load_settings()  # RELAY_CONFIG: the operator made by init
                identity = load_identity(settings)
                assert identity.kind == "relay" and directory.get(identity.id) is not None
                token = (net / "ops.token").read_text().strip()
                (operator,) = settings.operators
                assert operator.token_sha256 == token_digest(token)
                assert (net / "ops.token").stat().st_mode & 0o777 == 0o600
            else:
                cs = load_client_settings()
                assert cs.passphrase_file is not None
                passphrase = cs.passphrase_file.read_text().strip()
                identity = load_keystore(cs.keystore, passphrase)
                entry = directory.get(identity.id)
                assert entry is not None and entry.role != "relay", name
