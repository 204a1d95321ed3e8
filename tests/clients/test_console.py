"""The officer console served by a real daemon against a real relay: one-time sign-in,
the inbox by urgency, a message with its handling restrictions first, acknowledging
through the daemon's signed receipt; CSRF, origin and sign-in refusals; strict headers."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
import pytest

from keys.envelope import open_envelope, seal
from tests.consolefixture import signed_in
from tests.daemonfixture import running_daemon
from tests.inboxfixture import NOTICE
from tests.relayfixture import RelayEnv
from tests.waiting import until


async def _read(resp: aiohttp.ClientResponse) -> str:
    return await resp.text()


async def test_sign_in_read_and_acknowledge_in_the_console(relay: RelayEnv, tmp_path: Path) -> None:
    net = relay.net
    sealed = seal(
        net["it-tpc"],
        net.directory,
        to=["fr-oclcc"],
        content=NOTICE,
        now=relay.clock(),
        priority="urgent",
        handling=["no-onward-sharing"],
    )
    routine = seal(
        net["it-tpc"],
        net.directory,
        to=["fr-oclcc"],
        content={"kind": "free_text", "text": "routine matter"},
        now=relay.clock(),
        priority="routine",
    )
    async with running_daemon(relay, "fr-oclcc", tmp_path / "fr", console_port=0) as daemon:
        await relay.client("it-tpc").send(routine.token)
        await relay.client("it-tpc").send(sealed.token)

        async def stored() -> bool:
            assert daemon.inbox is not None
            return len(await daemon.inbox.received.list()) == 2

        await until(stored)
        link = daemon.console_link
        assert link is not None and link.startswith("http://127.0.0.1:")
        base = link.split("/login/")[0]
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            async with http.get(base + "/") as resp:
                assert resp.status == 401  # not signed in
                assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
            async with http.get(link) as resp:
                assert resp.status == 200
                form = await _read(resp)
            token = re.search(r'name="token" value="([^"]+)"', form)
            assert token is not None
            async with http.post(
                base + "/login",
                data={"token": token.group(1), "person": "Lt. Moreau"},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 303
                cookie = resp.headers["Set-Cookie"]
                assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            async with http.get(link) as resp:
                assert resp.status == 403  # one-time: used
            assert daemon.console_link != link  # a new one was minted

            async with http.get(base + "/") as resp:
                assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
                page = await _read(resp)
            assert "Lt. Moreau" in page
            # Most urgent first.
            assert page.index(f"/messages/{sealed.id}") < page.index(f"/messages/{routine.id}")

            async with http.get(f"{base}/messages/{sealed.id}") as resp:
                page = await _read(resp)
            assert page.index("Handling restrictions") < page.index("Etruscan bronze mirror")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page)
            assert csrf is not None
            ack = f"{base}/messages/{sealed.id}/acknowledge"
            async with http.post(ack, data={"confirm": "on"}, allow_redirects=False) as resp:
                assert resp.status == 403  # no CSRF token
            async with http.post(
                ack,
                data={"csrf": csrf.group(1), "confirm": "on"},
                headers={"Origin": "http://evil.example"},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 403  # another origin
            assert daemon.inbox is not None
            assert (await daemon.inbox.received.get(sealed.id)).state == "new"  # type: ignore[union-attr]
            async with http.post(
                ack, data={"csrf": csrf.group(1), "confirm": "on"}, allow_redirects=False
            ) as resp:
                assert resp.status == 303
            async with http.get(f"{base}/messages/{sealed.id}") as resp:
                page = await _read(resp)
            assert "Acknowledged by Lt. Moreau at" in page
            # The message's history here: sent, received and verified, the decision and
            # what became of its signed receipt.
            history = page[page.index("<h2>History</h2>") : page.index('<section class="decision"')]
            assert "signed and sent</strong> (it-tpc)" in history
            assert "received here, signature verified, decrypted" in history
            assert "acknowledged</strong> (Lt. Moreau)" in history
            assert "the signed receipt of the decision" in history

            async def sender_sees_it() -> bool:
                t = await relay.client("it-tpc").timeline(sealed.id)
                return t.state == "acknowledged"

            await until(sender_sees_it)
            async with http.get(f"{base}/messages/not-a-message") as resp:
                assert resp.status == 404
            async with http.post(
                base + "/logout", data={"csrf": csrf.group(1)}, allow_redirects=False
            ) as resp:
                assert resp.status == 303
            async with http.get(base + "/") as resp:
                assert resp.status == 401


def test_the_console_refuses_a_non_loopback_address() -> None:
    from clients.config import ClientSettings

    with pytest.raises(ValueError, match="loopback"):
        ClientSettings(root_key="x" * 43, console_port=8000, console_host="0.0.0.0")  # noqa: S104


async def test_sent_timeline_evidence_and_directory_pages(relay: RelayEnv, tmp_path: Path) -> None:
    from keys.evidence import verify_bundle
    from keys.receipts import sign_receipt

    net = relay.net
    sealed = seal(net["it-tpc"], net.directory, to=["fr-oclcc"], content=NOTICE, now=relay.clock())
    async with running_daemon(relay, "it-tpc", tmp_path / "it", console_port=0) as daemon:
        assert daemon.inbox is not None and daemon.console_link is not None
        await daemon.inbox.sent.record(
            sealed.id,
            to=["fr-oclcc"],
            envelope_hash=sealed.hash,
            created=relay.clock(),
            priority="urgent",
            summary="Identification: Etruscan bronze mirror",
        )
        await relay.client("it-tpc").send(sealed.token)
        delivered = sign_receipt(
            net["fr-oclcc"],
            msg_id=sealed.id,
            envelope_hash=sealed.hash,
            status="delivered",
            now=relay.clock(),
        )
        await relay.client("fr-oclcc").send_receipt(delivered)

        async def recorded() -> bool:
            assert daemon.inbox is not None
            return len(await daemon.inbox.sent.timeline(sealed.id)) >= 1

        await until(recorded)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            base = await signed_in(http, daemon.console_link)
            async with http.get(base + "/sent") as resp:
                assert "Etruscan bronze mirror" in await resp.text()
            async with http.get(f"{base}/sent/{sealed.id}") as resp:
                page = await resp.text()
            assert "delivered</strong> by fr-oclcc" in page
            async with http.get(f"{base}/sent/{sealed.id}/evidence") as resp:
                assert resp.status == 200
                assert "attachment" in resp.headers["Content-Disposition"]
                bundle = await resp.read()
            proven = verify_bundle(bundle, [net.root.signing_key().public])
            assert [s[0] for s in proven.statements()][:2] == ["sent", "accepted"]
            async with http.get(base + "/directory") as resp:
                page = await resp.text()
            assert "fr-oclcc" in page and "Europe/Paris" in page
            assert f">{net.relay.id}<" not in page  # the relay is not an authority to write to


async def test_the_inbox_is_told_of_a_new_message_live(relay: RelayEnv, tmp_path: Path) -> None:
    net = relay.net
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with running_daemon(relay, "fr-oclcc", tmp_path / "fr", console_port=0) as daemon:
            assert daemon.console_link is not None
            base = await signed_in(http, daemon.console_link)
            async with http.get(base + "/") as resp:
                page = await resp.text()
            assert 'data-live="1"' in page and "/static/console.js" in page
            async with http.get(base + "/static/console.js") as resp:
                assert resp.status == 200 and "EventSource" in await resp.text()
            async with http.get(base + "/events") as stream:
                assert stream.headers["Content-Type"].startswith("text/event-stream")
                assert b"event: ready" in await stream.content.readuntil(b"\n\n")
                sealed = seal(
                    net["it-tpc"],
                    net.directory,
                    to=["fr-oclcc"],
                    content={"kind": "free_text", "text": "live"},
                    now=relay.clock(),
                )
                await relay.client("it-tpc").send(sealed.token)
                async with asyncio.timeout(10):
                    while True:
                        chunk = await stream.content.readuntil(b"\n\n")
                        if b"event: change" in chunk:
                            break
            async with http.get(base + "/") as resp:
                assert sealed.id in await resp.text()
            # A browser keeping the live stream open does not hold the daemon's shutdown.
            held = await http.get(base + "/events")
            assert b"event: ready" in await held.content.readuntil(b"\n\n")
            started = asyncio.get_running_loop().time()
        assert asyncio.get_running_loop().time() - started < 10
        held.release()


async def test_password_sign_in_is_checked_and_rate_limited(
    relay: RelayEnv, tmp_path: Path
) -> None:
    from clients.config import ConsoleUser
    from clients.console.users import MAX_FAILURES, hash_password

    users = [
        ConsoleUser(
            name=n, password_hash=await asyncio.to_thread(hash_password, f"{n} long secret")
        )
        for n in ("Lt. Rossi", "Sgt. Bruno")
    ]
    async with (
        running_daemon(
            relay, "fr-oclcc", tmp_path / "fr", console_port=0, console_users=users
        ) as daemon,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        assert daemon.console_link is not None
        base = daemon.console_link.split("/login/")[0]
        async with http.get(base + "/login") as resp:
            assert resp.status == 200 and 'type="password"' in await resp.text()

        async def sign_in(name: str, password: str) -> aiohttp.ClientResponse:
            return await http.post(
                base + "/login", data={"name": name, "password": password}, allow_redirects=False
            )

        ok = await sign_in("Lt. Rossi", "Lt. Rossi long secret")
        assert ok.status == 303 and "HttpOnly" in ok.headers["Set-Cookie"]
        async with http.get(base + "/") as resp:
            assert resp.status == 200 and "Lt. Rossi" in await resp.text()
        assert (await sign_in("Nobody", "whatever whatever")).status == 401  # unknown name
        for _ in range(MAX_FAILURES - 1):  # failures count per name and per address
            assert (await sign_in("Sgt. Bruno", "wrong password!!")).status == 401
        limited = await sign_in("Sgt. Bruno", "Sgt. Bruno long secret")  # right, but too late
        assert limited.status == 429 and int(limited.headers["Retry-After"]) > 0
        assert "Too many failed attempts" in await limited.text()


def test_console_users_are_managed_in_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clients.cli import main
    from clients.config import load_client_settings

    config = tmp_path / "client.toml"
    config.write_text(
        "# the authority's settings\nroot_key = \"" + "A" * 43 + '"\ndata_dir = "data"\n'
    )
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    assert (
        main(
            [
                "--config",
                str(config),
                "console",
                "user",
                "add",
                "Lt. Rossi",
                "--password-file",
                str(pw),
            ]
        )
        == 0
    )
    text_now = config.read_text()
    assert text_now.startswith("# the authority's settings") and "$argon2id$" in text_now
    (user,) = load_client_settings(config).console_users
    assert user.name == "Lt. Rossi"
    capsys.readouterr()
    assert main(["--config", str(config), "console", "user", "list"]) == 0
    assert "Lt. Rossi" in capsys.readouterr().out
    short = tmp_path / "short"
    short.write_text("short\n")
    assert (
        main(
            ["--config", str(config), "console", "user", "add", "X", "--password-file", str(short)]
        )
        == 1
    )
    assert main(["--config", str(config), "console", "user", "remove", "Lt. Rossi"]) == 0
    assert load_client_settings(config).console_users == []
    capsys.readouterr()
    assert main(["--config", str(config), "console", "user", "remove", "Lt. Rossi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("notice: error: no console user") and err.count("\n") == 1


async def test_compose_an_identification_notice_with_a_photo(
    relay: RelayEnv, tmp_path: Path
) -> None:
    async with (
        running_daemon(relay, "it-tpc", tmp_path / "it", console_port=0) as daemon,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http,
    ):
        assert daemon.console_link is not None
        base = await signed_in(http, daemon.console_link)
        async with http.get(base + "/compose?kind=identification_notice") as resp:
            page = await resp.text()
        assert 'name="object_description"' in page and 'type="file"' in page
        assert 'value="fr-oclcc"' in page and 'value="it-tpc"' not in page  # not to itself
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None

        def form(**extra: str) -> aiohttp.FormData:
            data = aiohttp.FormData()
            fields = {
                "csrf": csrf.group(1),
                "kind": "identification_notice",
                "priority": "urgent",
                "expires_hours": "48",
                "ack_minutes": "30",
                "object_description": "Etruscan bronze mirror, 3rd c. BC",
                "identified_where": "Online auction, lot 42",
                "identified_at": "2027-01-15T07:00",
                "country_of_origin": "IT",
                **extra,
            }
            for k, v in fields.items():
                data.add_field(k, v)
            for aid in ("fr-oclcc", "de-bka"):
                data.add_field("to", aid)
            data.add_field("fallback", "fr-desk")
            data.add_field("handling", "no-onward-sharing")
            data.add_field(
                "photo", b"\x89PNG fake photo bytes", filename="front.png", content_type="image/png"
            )
            return data

        async with http.post(base + "/compose", data=form(object_description="")) as resp:
            assert resp.status == 400  # a required field left empty: said beside it
            assert "Field required" in await resp.text()
        async with http.post(base + "/compose", data=form(), allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
            target = resp.headers["Location"]
        assert target.endswith("?sent=accepted")
        msg_id = target.split("/sent/")[1].split("?")[0]
        envelopes = {}
        for aid in ("fr-oclcc", "de-bka"):
            items = await relay.client(aid).poll()
            assert [i.id for i in items if i.type == "envelope"] == [msg_id]
            envelopes[aid] = items[0].envelope
        opened = open_envelope(
            envelopes["fr-oclcc"], relay.net.directory, relay.net["fr-oclcc"], now=relay.clock()
        )
        assert opened.header.prio == "urgent" and opened.header.fallbacks == ["fr-desk"]
        assert opened.plaintext.handling == ["no-onward-sharing"]
        assert opened.plaintext.content["photos"] == ["front.png"]
        assert [a.name for a in opened.plaintext.attachments] == ["front.png"]
        async with http.get(base + target) as resp:
            assert "the relay accepted it" in await resp.text()
