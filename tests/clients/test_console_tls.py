"""The officer console's own TLS: the settings that allow a non-loopback address, a real
daemon serving HTTPS with a self-signed certificate (the session cookie ``Secure``, plain
HTTP refused on the same port), and plain errors for unusable certificate files."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization

from clients.config import ClientSettings, ConfigError, load_client_settings

# Imported here, not first on the daemon's loop: its translations (Babel) read files.
from clients.console.app import COOKIE
from clients.console.tls import console_ssl_context
from clients.daemon import Daemon
from clients.errors import ClientError
from keys.encoding import b64e
from tests.daemonfixture import running_daemon
from tests.relayfixture import RelayEnv
from tests.tlsfixture import self_signed_certificate

ROOT_KEY = "x" * 43


def _certificate(folder: Path, name: str = "console") -> tuple[Path, Path]:
    return self_signed_certificate(folder, name)


def _trusting(cert: Path) -> ssl.SSLContext:
    """A client context that trusts exactly ``cert`` (and checks the host name)."""
    return ssl.create_default_context(cafile=str(cert))


# -- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_needs_neither_tls_nor_an_explicit_setting(host: str) -> None:
    settings = ClientSettings(root_key=ROOT_KEY, console_port=8000, console_host=host)
    assert settings.console_tls_cert is None and not settings.console_allow_remote


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::", "console.example.org"])  # noqa: S104
def test_a_non_loopback_address_without_tls_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match=r"not a loopback address.*console_tls_cert"):
        ClientSettings(root_key=ROOT_KEY, console_port=8000, console_host=host)
    # Even with the explicit yes: no TLS, no network.
    with pytest.raises(ValueError, match="not a loopback address"):
        ClientSettings(
            root_key=ROOT_KEY, console_port=8000, console_host=host, console_allow_remote=True
        )


def test_a_non_loopback_address_with_tls_but_no_explicit_setting_is_refused(
    tmp_path: Path,
) -> None:
    cert, key = _certificate(tmp_path)
    with pytest.raises(ValueError, match="console_allow_remote"):
        ClientSettings(
            root_key=ROOT_KEY,
            console_port=8000,
            console_host="0.0.0.0",  # noqa: S104
            console_tls_cert=cert,
            console_tls_key=key,
        )


def test_a_non_loopback_address_with_tls_and_the_explicit_setting_is_accepted(
    tmp_path: Path,
) -> None:
    cert, key = _certificate(tmp_path)
    settings = ClientSettings(
        root_key=ROOT_KEY,
        console_port=8000,
        console_host="0.0.0.0",  # noqa: S104
        console_tls_cert=cert,
        console_tls_key=key,
        console_allow_remote=True,
    )
    assert settings.console_host == "0.0.0.0"  # noqa: S104
    assert settings.console_tls_cert == cert and settings.console_tls_key == key


def test_the_certificate_and_the_key_go_together(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    with pytest.raises(ValueError, match="console_tls_cert and console_tls_key"):
        ClientSettings(root_key=ROOT_KEY, console_tls_cert=cert)
    with pytest.raises(ValueError, match="console_tls_cert and console_tls_key"):
        ClientSettings(root_key=ROOT_KEY, console_tls_key=key)


def test_the_refusal_is_one_line_saying_what_to_set(tmp_path: Path) -> None:
    config = tmp_path / "client.toml"
    config.write_text(f'root_key = "{ROOT_KEY}"\nconsole_port = 8443\nconsole_host = "0.0.0.0"\n')
    with pytest.raises(ConfigError) as caught:
        load_client_settings(config)
    message = str(caught.value)
    assert "\n" not in message
    for setting in ("console_tls_cert", "console_tls_key", "console_allow_remote"):
        assert setting in message


def test_relative_certificate_paths_in_the_file_are_relative_to_it(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path / "tls")
    config = tmp_path / "client.toml"
    config.write_text(
        f'root_key = "{ROOT_KEY}"\nconsole_port = 8443\nconsole_host = "0.0.0.0"\n'
        'console_allow_remote = true\nconsole_tls_cert = "tls/console.crt"\n'
        'console_tls_key = "tls/console.key"\n'
    )
    settings = load_client_settings(config)
    assert settings.console_tls_cert == cert and settings.console_tls_key == key


# -- the context --------------------------------------------------------------------------


def test_no_certificate_means_no_context() -> None:
    assert console_ssl_context(ClientSettings(root_key=ROOT_KEY)) is None


def test_the_context_is_a_tls12_server_context(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    context = console_ssl_context(
        ClientSettings(root_key=ROOT_KEY, console_tls_cert=cert, console_tls_key=key)
    )
    assert context is not None
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert not context.check_hostname and context.verify_mode == ssl.CERT_NONE


def _refusal(cert: Path, key: Path) -> str:
    settings = ClientSettings(root_key=ROOT_KEY, console_tls_cert=cert, console_tls_key=key)
    with pytest.raises(ClientError) as caught:
        console_ssl_context(settings)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unusable_certificate_files_are_named_plainly(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path / "a")
    other_cert, other_key = _certificate(tmp_path / "b")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a PEM file\n")
    missing = tmp_path / "missing.crt"

    assert _refusal(missing, key) == (
        f"the console's TLS certificate {missing} does not exist or is not a file"
    )
    assert _refusal(cert, tmp_path / "missing.key") == (
        f"the console's TLS private key {tmp_path / 'missing.key'} does not exist or is not a file"
    )
    assert _refusal(junk, key) == f"the console's TLS certificate {junk} is not a PEM certificate"
    assert _refusal(key, cert) == f"the console's TLS certificate {key} is not a PEM certificate"
    assert _refusal(cert, junk) == f"the console's TLS private key {junk} is not a PEM private key"
    assert _refusal(cert, other_key) == (
        f"the console's TLS private key {other_key} does not match the certificate {cert}"
    )
    assert other_cert.is_file()


def test_an_encrypted_key_is_refused_without_a_prompt(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"a passphrase"),
        )
    )
    assert "is encrypted" in _refusal(cert, encrypted)


# -- a real daemon ------------------------------------------------------------------------


async def _sign_in_over_https(link: str, cert: Path) -> None:
    """Open the one-time ``link`` trusting ``cert``, sign in, and check the cookie."""
    base = link.split("/login/")[0]
    jar = aiohttp.CookieJar(unsafe=True)
    connector = aiohttp.TCPConnector(ssl=_trusting(cert))
    async with aiohttp.ClientSession(cookie_jar=jar, connector=connector) as http:
        async with http.get(link) as resp:
            assert resp.status == 200
            token = re.search(r'name="token" value="([^"]+)"', await resp.text())
        assert token is not None
        async with http.post(
            base + "/login",
            data={"token": token.group(1), "person": "Lt. Moreau"},
            headers={"Origin": base},  # the same-origin check knows it is https
            allow_redirects=False,
        ) as resp:
            assert resp.status == 303
            cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"secure", "httponly"} <= attributes
        assert "SameSite=Strict" in cookie
        async with http.get(base + "/") as resp:
            assert resp.status == 200  # the Secure cookie is sent back over https
            assert "Lt. Moreau" in await resp.text()


async def test_the_daemon_serves_the_console_over_https(relay: RelayEnv, tmp_path: Path) -> None:
    cert, key = await asyncio.to_thread(_certificate, tmp_path / "tls")
    async with running_daemon(
        relay,
        "fr-oclcc",
        tmp_path / "fr",
        console_port=0,
        console_tls_cert=cert,
        console_tls_key=key,
    ) as daemon:
        link = daemon.console_link
        assert link is not None and link.startswith("https://127.0.0.1:")
        await _sign_in_over_https(link, cert)

        base = link.split("/login/")[0]
        port = base.rsplit(":", 1)[1]
        async with aiohttp.ClientSession() as http:
            # Plain HTTP to the same port gets no page: the server wants a TLS handshake.
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/login") as resp:
                    await resp.read()
            # And HTTPS that does not trust the certificate is refused by the client.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with http.get(link) as resp:
                    await resp.read()


async def test_a_remote_console_listens_on_every_address_over_tls(
    relay: RelayEnv, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = await asyncio.to_thread(_certificate, tmp_path / "tls")
    caplog.set_level(logging.WARNING, logger="clients.daemon")
    async with running_daemon(
        relay,
        "fr-oclcc",
        tmp_path / "fr",
        console_port=0,
        console_host="0.0.0.0",  # noqa: S104
        console_tls_cert=cert,
        console_tls_key=key,
        console_allow_remote=True,
    ) as daemon:
        link = daemon.console_link
        assert link is not None and link.startswith("https://0.0.0.0:")
        # Reached through loopback, the name the certificate is for.
        await _sign_in_over_https(link.replace("https://0.0.0.0:", "https://127.0.0.1:"), cert)
    assert any(
        "reachable from the network" in r.getMessage() and "TLS" in r.getMessage()
        for r in caplog.records
    )


async def test_the_daemon_refuses_to_start_with_an_unusable_certificate(
    relay: RelayEnv, tmp_path: Path
) -> None:
    cert, _ = await asyncio.to_thread(_certificate, tmp_path / "tls")
    missing = tmp_path / "tls" / "nope.key"
    settings = ClientSettings(
        relay_url=relay.base_url,
        root_key=b64e(relay.net.root.signing_key().public),
        data_dir=tmp_path / "fr",
        console_port=0,
        console_tls_cert=cert,
        console_tls_key=missing,
    )
    daemon = Daemon(settings, relay.net["fr-oclcc"], clock=relay.clock)
    with pytest.raises(ClientError, match=re.escape(f"private key {missing} does not exist")):
        await asyncio.wait_for(daemon.run(asyncio.Event()), 15)
    assert daemon.console_link is None
