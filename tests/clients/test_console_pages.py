"""The officer console's pages beyond the basics (tests/clients/test_console.py): the
French catalogue and the language switch; compose showing reachability and the
escalation plan before sending, the authority search, lists of structured items; the
inbox showing an escalation notice as "escalated to you"; the live stream telling the
sender's pages of a receipt; the audit trail naming the person for every action."""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path

import aiohttp
import pytest

from clients.config import ClientSettings
from clients.console.compose import FORMS
from keys.envelope import open_envelope, seal
from keys.receipts import sign_receipt
from tests.consolefixture import csrf_of, signed_in
from tests.daemonfixture import running_daemon
from tests.inboxfixture import NOTICE
from tests.netfixture import Network
from tests.relayfixture import RelayEnv
from tests.waiting import until


def _pin(settings: ClientSettings, net: Network) -> None:
    """Pin ``net``'s directory history as the daemon's first refresh would (blocking)."""
    from clients.directory import PinnedDirectory
    from keys.keystore import write_private_file

    pinned = PinnedDirectory.load(settings)
    current = pinned.pin.accept_history([d.token for d in net.history])
    write_private_file(pinned.path, pinned.pin.dump().encode())
    write_private_file(pinned.path.with_name("directory-current.jws"), current.token.encode())


def _jar() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def test_the_french_catalogue_translates_every_text_of_the_console() -> None:
    from babel.messages.pofile import read_po

    from clients.console.catalogue import extracted_messages, untranslated

    path = Path(__file__).resolve().parents[2] / "clients/console/locale/fr.po"
    with path.open("rb") as fh:
        catalog = read_po(fh, locale="fr", domain="console")
    held = {m.id if isinstance(m.id, str) else tuple(m.id) for m in catalog if m.id}
    wanted = set(extracted_messages())
    # `make messages` was run after the last change of a text, and nothing is left over.
    assert wanted - held == set(), "texts missing from fr.po: run `make messages`"
    assert held - wanted == set(), "fr.po holds texts no longer used: run `make messages`"
    assert list(untranslated(catalog)) == []
    # Every translation keeps its message's %(name)s placeholders.
    problems = [(m.id, errors) for m, errors in catalog.check()]
    assert problems == []


def test_the_language_is_the_cookies_else_the_browsers_else_english() -> None:
    from clients.console.i18n import choose

    assert choose(None, None) == "en"
    assert choose(None, "fr-FR,fr;q=0.9,en;q=0.8") == "fr"
    assert choose(None, "fr-CA") == "fr"
    assert choose(None, "de-DE,de;q=0.9") == "en"  # not shipped: English
    assert choose(None, "de;q=0.9,en;q=0.5,fr;q=0.7") == "fr"  # by quality
    assert choose(None, "fr;q=0") == "en"  # q=0 means "not this"
    assert choose("en", "fr") == "en"  # the person's choice wins
    assert choose("xx", "fr") == "fr"  # a cookie naming no shipped language is ignored
    assert choose(None, ";;,q=x,") == "en"  # junk: English, no error


async def test_pages_in_french_the_language_switch_and_the_audit_trail(
    relay: RelayEnv, tmp_path: Path
) -> None:
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
    async with (
        running_daemon(relay, "fr-oclcc", tmp_path / "fr", console_port=0) as daemon,
        aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept-Language": "fr-FR,fr"}
        ) as http,
    ):
        assert daemon.inbox is not None and daemon.console_link is not None
        await relay.client("it-tpc").send(sealed.token)

        async def stored() -> bool:
            assert daemon.inbox is not None
            return await daemon.inbox.received.get(sealed.id) is not None

        await until(stored)
        async with http.get(daemon.console_link) as resp:
            page = await resp.text()
            assert '<html lang="fr">' in page and "Se connecter" in page
        base = await signed_in(http, daemon.console_link, "Cne Moreau")
        async with http.get(base + "/") as resp:
            assert resp.headers["Content-Language"] == "fr"
            page = await resp.text()
        assert "Boîte de réception" in page and "urgente" in page
        async with http.get(f"{base}/messages/{sealed.id}") as resp:
            page = await resp.text()
        # The handling restriction and the notice's labels, in French.
        assert "Restrictions de traitement" in page and "Ne pas diffuser" in page
        assert "<dt>Objet</dt>" in page and "<dt>Identifié le</dt>" in page
        async with http.post(
            f"{base}/messages/{sealed.id}/acknowledge",
            data={"csrf": csrf_of(page), "confirm": "on"},
        ) as resp:
            assert "Pris en charge par Cne Moreau" in await resp.text()

        # The switch: a cookie, back to the page it was on; never to another site.
        async with http.get(base + "/language/en?next=/directory", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/directory"
            assert "HttpOnly" in resp.headers["Set-Cookie"]
        async with http.get(base + "/directory") as resp:
            assert resp.headers["Content-Language"] == "en" and "Directory" in await resp.text()
        for elsewhere in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
            async with http.get(
                base + "/language/fr", params={"next": elsewhere}, allow_redirects=False
            ) as resp:
                assert resp.headers["Location"] == "/"
        async with http.get(base + "/language/xx", allow_redirects=False) as resp:
            assert resp.status == 404

        # Every action above is in the audit trail, with the person's name.
        trail = await daemon.inbox.audit.list(limit=20)
        done = [(e.person, e.action, e.message_id) for e in reversed(trail)]
        assert done == [
            ("Cne Moreau", "signed_in", None),
            ("Cne Moreau", "opened", sealed.id),
            ("Cne Moreau", "acknowledged", sealed.id),
            ("Cne Moreau", "opened", sealed.id),  # the page again, after the decision
        ]


async def test_compose_shows_reachability_and_the_plan_before_sending_and_searches(
    relay: RelayEnv, tmp_path: Path
) -> None:
    async with (
        running_daemon(relay, "it-tpc", tmp_path / "it", console_port=0) as daemon,
        running_daemon(relay, "de-bka", tmp_path / "de"),
        _jar() as http,
    ):
        assert daemon.console_link is not None
        base = await signed_in(http, daemon.console_link)

        async def de_reachable() -> bool:
            answer = await relay.client("it-tpc").presence()
            return any(p.id == "de-bka" and p.reachable for p in answer.authorities)

        await until(de_reachable)
        async with http.get(base + "/compose?kind=free_text") as resp:
            page = await resp.text()
        rows = dict(re.findall(r'data-search="([a-z0-9-]+) [^"]*" data-reachable="(\w+)"', page))
        assert rows["de-bka"] == "yes" and rows["fr-oclcc"] == "no"
        # The urgent plan of the relay's default policy, before anything is sent.
        plan = re.findall(r'<strong class="after">([^<]+)</strong>', page)
        assert plan == ["10 min", "30 min", "2 h"]
        async with http.get(base + "/compose?kind=free_text&q=bka") as resp:
            found = re.findall(r'name="to" value="([a-z0-9-]+)"', await resp.text())
        assert found == ["de-bka"]
        # An acknowledgement time earlier than the first step pulls every step earlier,
        # and a chosen recipient that is not reachable now is named. (The form comes back
        # because the text is missing: nothing is sent.)
        async with http.post(
            base + "/compose",
            data={
                "csrf": csrf_of(page),
                "kind": "free_text",
                "priority": "urgent",
                "ack_minutes": "5",
                "expires_hours": "24",
                "to": "fr-oclcc",
            },
        ) as resp:
            assert resp.status == 400
            page = await resp.text()
        assert re.findall(r'<strong class="after">([^<]+)</strong>', page) == [
            "5 min",
            "25 min",
            "1 h 55 min",
        ]
        unreachable = re.search(r'<p class="late" id="unreachable">([^<]+)</p>', page)
        assert unreachable is not None and "fr-oclcc" in unreachable.group(1)
        assert await relay.client("fr-oclcc").poll() == []


async def test_compose_a_stolen_property_update_from_rows_of_items(
    relay: RelayEnv, tmp_path: Path
) -> None:
    async with (
        running_daemon(relay, "it-tpc", tmp_path / "it", console_port=0) as daemon,
        _jar() as http,
    ):
        assert daemon.console_link is not None
        base = await signed_in(http, daemon.console_link)
        async with http.get(base + "/compose?kind=stolen_property_update") as resp:
            page = await resp.text()
        assert 'name="added.0.id"' in page and 'name="added.2.reported_at"' in page
        form = {
            "csrf": csrf_of(page),
            "kind": "stolen_property_update",
            "priority": "routine",
            "expires_hours": "24",
            "to": "fr-oclcc",
            "list_name": "Carabinieri TPC, weekly",
            "added.0.id": "TPC-2027-001",
            "added.0.description": "Attic red-figure kylix",
            "added.0.reported_at": "2027-01-10T09:30",
            "added.2.id": "TPC-2027-002",  # a row left empty between is skipped
            "added.2.description": "Roman marble head",
            "removed": "TPC-2019-117\n\nTPC-2020-004\n",
        }
        async with http.post(base + "/compose", data={**form, "added.2.description": ""}) as resp:
            assert resp.status == 400
            assert "Row 3: Description is required." in await resp.text()
        async with http.post(base + "/compose", data=form, allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
        (item,) = [i for i in await relay.client("fr-oclcc").poll() if i.type == "envelope"]
        assert item.envelope is not None
        opened = open_envelope(
            item.envelope, relay.net.directory, relay.net["fr-oclcc"], now=relay.clock()
        )
        content = opened.plaintext.content
        assert content["added"] == [
            {
                "id": "TPC-2027-001",
                "description": "Attic red-figure kylix",
                "reported_at": 1799573400000,
            },
            {"id": "TPC-2027-002", "description": "Roman marble head"},
        ]
        assert content["removed"] == ["TPC-2019-117", "TPC-2020-004"]


async def test_the_inbox_shows_an_escalation_as_escalated_to_you(
    relay: RelayEnv, tmp_path: Path
) -> None:
    net = relay.net
    async with (
        running_daemon(relay, "fr-deputy", tmp_path / "dep", console_port=0) as deputy,
        _jar() as http,
    ):
        sealed = seal(
            net["it-tpc"],
            net.directory,
            to=["fr-oclcc"],
            content=NOTICE,
            now=relay.clock(),
            priority="urgent",
        )
        await relay.client("it-tpc").send(sealed.token)
        await relay.escalate_past_release()  # the deputy is told

        async def notified() -> bool:
            return deputy.stats.escalations == 1

        await until(notified)
        assert deputy.console_link is not None
        base = await signed_in(http, deputy.console_link)
        async with http.get(base + "/") as resp:
            page = await resp.text()
        row = re.search(r'<tr class="escalated overdue">(.*?)</tr>', page, re.S)
        assert row is not None, page
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(1)))
        assert "escalated to you" in text and "as deputy" in text
        assert sealed.id in text and "fr-oclcc" in text and "step 2" in text


async def test_the_live_stream_tells_the_senders_pages_of_a_new_receipt(
    relay: RelayEnv, tmp_path: Path
) -> None:
    net = relay.net
    async with (
        running_daemon(relay, "it-tpc", tmp_path / "it", console_port=0) as daemon,
        _jar() as http,
    ):
        assert daemon.console_link is not None and daemon.inbox is not None
        base = await signed_in(http, daemon.console_link)
        async with http.get(base + "/compose?kind=free_text") as resp:
            csrf = csrf_of(await resp.text())
        async with http.post(
            base + "/compose",
            data={
                "csrf": csrf,
                "kind": "free_text",
                "priority": "urgent",
                "expires_hours": "24",
                "to": "fr-oclcc",
                "text": "Lot 112 closes at 18:00",
            },
            allow_redirects=False,
        ) as resp:
            target = resp.headers["Location"]
        msg_id = target.split("/sent/")[1].split("?")[0]
        sent = await daemon.inbox.sent.get(msg_id)
        assert sent is not None
        async with http.get(base + target) as resp:
            assert 'data-live="1"' in await resp.text()
        async with http.get(base + "/events") as stream:
            assert b"event: ready" in await stream.content.readuntil(b"\n\n")
            ack = sign_receipt(
                net["fr-oclcc"],
                msg_id=msg_id,
                envelope_hash=sent.envelope_hash,
                status="acknowledged",
                person="Cne Moreau",
                now=relay.clock(),
            )
            await relay.client("fr-oclcc").send_receipt(ack)
            async with asyncio.timeout(10):
                while b"event: change" not in await stream.content.readuntil(b"\n\n"):
                    pass
        async with http.get(base + target) as resp:
            page = await resp.text()
        assert "acknowledged</strong> by fr-oclcc" in page


async def test_malformed_compose_forms_are_answered_never_a_server_error(
    relay: RelayEnv, tmp_path: Path
) -> None:
    rnd = random.Random(20261202)
    names = ["kind", "priority", "ack_minutes", "expires_hours", "to", "fallback", "handling"]
    for form in FORMS.values():
        for f in form.fields:
            names.append(f.name)
            names += [f"{f.name}.{rnd.choice([0, 1, 999, -1])}.{s.name}" for s in f.items]
    junk = ["", " ", "x", "-1", "1e309", "nan", "0", "2027-13-45T25:61", "fr-oclcc", "😀" * 50,
            "<script>alert(1)</script>", "a" * 5000, "urgent", "identification_notice"]  # fmt: skip
    async with (
        running_daemon(relay, "it-tpc", tmp_path / "it", console_port=0) as daemon,
        _jar() as http,
    ):
        assert daemon.console_link is not None
        base = await signed_in(http, daemon.console_link)
        async with http.get(base + "/compose") as resp:
            csrf = csrf_of(await resp.text())
        for _ in range(60):
            data = aiohttp.FormData()
            data.add_field("csrf", csrf)
            for name in rnd.sample(names, rnd.randint(0, len(names))):
                data.add_field(name, rnd.choice(junk))
            async with http.post(base + "/compose", data=data, allow_redirects=False) as resp:
                body = await resp.text()
                assert resp.status in (303, 400), body[-2000:]
                assert "<script>alert(1)</script>" not in body  # escaped wherever shown


async def test_compose_answers_while_the_relay_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay that accepts connections and never answers (a real socket, silent):
    compose and the directory still come back, saying "unknown", and a refused relay
    likewise; the console never waits for the relay longer than ASK_RELAY_S."""
    from clients.client import RelayClient
    from clients.config import ClientSettings
    from clients.console import outgoing
    from clients.console.app import ConsoleContext, serve_console
    from clients.store import Inbox
    from keys.encoding import b64e
    from tests.netfixture import NOW, make_network

    monkeypatch.setattr(outgoing, "ASK_RELAY_S", 0.5)
    monkeypatch.setattr(outgoing, "SEND_ASK_RELAY_S", 0.5)
    held: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    net = await asyncio.to_thread(make_network)
    links: list[str] = []
    async with (
        await Inbox.open(tmp_path / "inbox.sqlite3") as inbox,
        RelayClient(f"http://127.0.0.1:{port}", net["it-tpc"], clock=lambda: NOW) as client,
        _jar() as http,
    ):
        settings = await asyncio.to_thread(
            lambda: ClientSettings(
                relay_url=f"http://127.0.0.1:{port}",
                root_key=b64e(net.root.signing_key().public),
                data_dir=tmp_path,
            )
        )
        await asyncio.to_thread(_pin, settings, net)
        ctx = ConsoleContext(
            settings,
            net["it-tpc"],
            inbox,
            lambda: NOW,
            directory=lambda: net.directory,
            presence=client.presence,
            policy=client.policy,
        )
        runner = await serve_console(ctx, "127.0.0.1", 0, on_link=links.append)
        try:
            base = await signed_in(http, links[-1])
            async with asyncio.timeout(10):
                for path in ("/compose?kind=free_text", "/directory"):
                    async with http.get(base + path) as resp:
                        assert resp.status == 200
                        page = await resp.text()
                    assert "unknown" in page
            async with http.get(base + "/compose") as resp:
                page = await resp.text()
            assert "The relay cannot be asked now" in page
            # Sending does not wait for the silent relay either: the notice is sealed
            # with the pinned directory and kept in the outbox for the daemon.
            async with (
                asyncio.timeout(outgoing.SEND_ASK_RELAY_S + 10),
                http.post(
                    base + "/compose",
                    data={
                        "csrf": csrf_of(page),
                        "kind": "free_text",
                        "priority": "urgent",
                        "expires_hours": "24",
                        "to": "fr-oclcc",
                        "text": "Lot 112 closes at 18:00",
                    },
                    allow_redirects=False,
                ) as resp,
            ):
                assert resp.status == 303, await resp.text()
                assert resp.headers["Location"].endswith("?sent=queued")
            (queued,) = await inbox.outbox.due(NOW + 3_600_000)
            assert queued.state == "queued"
        finally:
            await runner.cleanup()
            server.close()
            for w in held:
                w.close()
            await server.wait_closed()


async def test_a_link_can_sign_a_configured_person_in_when_opened(
    relay: RelayEnv, tmp_path: Path
) -> None:
    """``console_link_person`` (the demo sets it): opening the link is the sign-in."""
    async with (
        running_daemon(
            relay,
            "fr-oclcc",
            tmp_path / "fr",
            console_port=0,
            console_link_person="Demo officer, fr-oclcc",
        ) as daemon,
        _jar() as http,
    ):
        assert daemon.console_link is not None and daemon.inbox is not None
        link = daemon.console_link
        async with http.get(link, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/"
            assert "HttpOnly" in resp.headers["Set-Cookie"]
        base = link.split("/login/")[0]
        async with http.get(base + "/") as resp:
            assert resp.status == 200 and "Demo officer, fr-oclcc" in await resp.text()
        async with http.get(link, allow_redirects=False) as resp:
            assert resp.status == 403  # used: one time only
        (entry,) = await daemon.inbox.audit.list()
        assert (entry.person, entry.action) == ("Demo officer, fr-oclcc", "signed_in")
