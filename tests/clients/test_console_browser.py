"""The officer console in a real headless browser (Debian's chromium, Playwright).

The relay and two daemons with consoles run in-process: the sender (it-tpc, a person
with a password) and the recipient (fr-oclcc, a one-time link). The browser runs in a
child process (this module run with ``python -m``), as tests/relay/test_ops_browser.py
does and for the same reasons. The walk: the recipient signs in and keeps the inbox
open; the sender signs in with a password and composes an identification notice with a
photo to two recipients with a fallback (seeing, before sending, who is unreachable and
when escalation would start); the notice appears in the recipient's inbox live; opened,
the handling restrictions come first and the decrypted photo shows; acknowledged, the
sender's page shows it without a reload. A POST without the CSRF token is refused, and
a wrong password is refused and then rate-limited. Every page is shot at 1280 and 390
px wide (kept in ``$CPAR_SCREENSHOTS`` when set), must raise no script error and break
no CSP rule, and axe-core must find no serious or critical violation on any of them
(in English and, for the inbox, in French).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from keys.envelope import seal
from tests.browserfixture import CHROMIUM, LAUNCH_ARGS, TIMEOUT_MS, watch
from tests.daemonfixture import running_daemon
from tests.relayfixture import RelayEnv
from tests.waiting import until

REPO = Path(__file__).resolve().parents[2]
WIDTHS = (1280, 390)
SENDER, PASSWORD = "Lt. Rossi", "Lt. Rossi's long secret"
PAGES = (
    "sign-in-link",
    "sign-in-password",
    "inbox",
    "message",
    "compose",
    "sent",
    "sent-message",
    "directory",
    "inbox-fr",
)


@dataclass
class Seen:
    axe: dict[str, list[str]] = field(default_factory=dict)
    """Per page: the serious or critical accessibility violations axe-core found."""
    inbox_rows: int = 0
    first_time: str = ""
    plan: list[str] = field(default_factory=list)
    unreachable: str = ""
    sent_to: str = ""
    msg_id: str = ""
    live_row: bool = False
    handling_first: bool = False
    photo_loaded: bool = False
    acknowledged: str = ""
    sender_saw: str = ""
    csrf_less: int = 0
    wrong_password: list[int] = field(default_factory=list)
    rate_limited_text: str = ""
    french_heading: str = ""
    shots: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def browse(link: str, sender_base: str, shots: Path, work: Path) -> Seen:
    """The child's side: the whole walk, in two browser contexts (two people)."""
    from playwright.async_api import Page, async_playwright

    seen = Seen()
    base = link.split("/login/")[0]
    photo = work / "front.png"
    await asyncio.to_thread(photo.write_bytes, _png())
    axe_source = await asyncio.to_thread(_axe_source)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)

        async def new_page(*, refusals_expected: bool = False) -> Page:
            context = await browser.new_context(
                viewport={"width": 1280, "height": 900}, timezone_id="Europe/Paris"
            )
            page = await context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            watch(page, seen.requests, seen.errors, refusals_expected=refusals_expected)
            return page

        async def shoot(page: Page, name: str) -> None:
            # axe-core, injected through the debugging protocol (the page's CSP allows no
            # foreign script, rightly); its serious and critical violations are failures.
            await page.evaluate(axe_source)
            found = await page.evaluate(
                "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations"
                ".filter(v => ['serious', 'critical'].includes(v.impact))"
                ".map(v => v.id + ': ' + v.help))"
            )
            seen.axe[name] = list(found)
            for width in WIDTHS:
                await page.set_viewport_size({"width": width, "height": 900})
                path = shots / f"console-{name}-{width}.png"
                await page.screenshot(path=str(path), full_page=True)
                seen.shots.append(path.name)
            await page.set_viewport_size({"width": 1280, "height": 900})

        # The recipient signs in with the one-time link and keeps the inbox open.
        officer = await new_page()
        await officer.goto(link)
        await shoot(officer, "sign-in-link")
        await officer.fill("#person", "Lt. Moreau")
        await officer.click("button[type=submit]")
        await officer.wait_for_selector("table.inbox")
        rows = officer.locator("table.inbox tbody tr")
        seen.inbox_rows = await rows.count()
        seen.first_time = await officer.locator("table.inbox time").first.inner_text()

        # The sender signs in with a password.
        sender = await new_page()
        await sender.goto(sender_base + "/login")
        await shoot(sender, "sign-in-password")
        await sender.fill("#name", SENDER)
        await sender.fill("#password", PASSWORD)
        await sender.click("button[type=submit]")
        await sender.wait_for_selector("h1:has-text('Inbox')")

        # ... and composes an identification notice with a photo, to two recipients with
        # a fallback; before sending, the page says who is unreachable and the plan.
        await sender.goto(sender_base + "/compose?kind=identification_notice")
        await sender.check("input[name=to][value=fr-oclcc]")
        await sender.check("input[name=to][value=de-bka]")
        await sender.check("input[name=fallback][value=fr-desk]")
        await sender.fill("#ack_minutes", "5")
        await sender.check("input[name=handling][value=no-onward-sharing]")
        await sender.fill("#f-object_description", "Etruscan bronze mirror, 3rd c. BC")
        await sender.fill("#f-identified_where", "Online auction, lot 42")
        await sender.fill("#f-identified_at", "2027-01-15T07:00")
        await sender.fill("#f-country_of_origin", "IT")
        await sender.fill("input[name='references.0.system']", "INTERPOL Works of Art")
        await sender.fill("input[name='references.0.ref']", "2027/1234")
        await sender.set_input_files("#photo", str(photo))
        await sender.wait_for_selector("#photo-preview img")
        seen.plan = await sender.locator("#plan .after").all_inner_texts()
        seen.unreachable = await sender.locator("#unreachable").inner_text()
        await shoot(sender, "compose")
        await sender.click("form.card button[type=submit]:has-text('Send')")
        await sender.wait_for_selector("p.ok")
        seen.msg_id = sender.url.split("/sent/")[1].split("?")[0]
        seen.sent_to = await sender.locator("p.meta strong").first.inner_text()
        await shoot(sender, "sent-message")

        # The notice appears in the recipient's inbox without a reload.
        async with asyncio.timeout(TIMEOUT_MS / 1000):
            while await rows.count() <= seen.inbox_rows:  # noqa: ASYNC110 - the page changes itself
                await asyncio.sleep(0.1)
        seen.live_row = True
        await shoot(officer, "inbox")
        await officer.click(f"a[href='/messages/{seen.msg_id}']")
        await officer.wait_for_selector("section.handling")
        html = await officer.content()
        seen.handling_first = html.index("Handling restrictions") < html.index("<h1>")
        img = officer.locator("figure img")
        async with asyncio.timeout(TIMEOUT_MS / 1000):
            while not await img.count():  # the photo is fetched and decrypted by the daemon
                await asyncio.sleep(0.2)
                await officer.reload()
        seen.photo_loaded = await img.first.evaluate("i => i.complete && i.naturalWidth > 0")
        await shoot(officer, "message")

        # A POST without the CSRF token is refused, even with the session's cookie.
        refused = await officer.request.post(
            f"{base}/messages/{seen.msg_id}/acknowledge", form={"confirm": "on"}
        )
        seen.csrf_less = refused.status
        await officer.check("section.decision input[name=confirm] >> nth=0")
        await officer.click('button:has-text("Acknowledge")')
        await officer.wait_for_selector("text=Acknowledged by")
        seen.acknowledged = await officer.locator("section.decision").inner_text()

        # The sender's page, left open, shows the acknowledgement without a reload.
        await sender.wait_for_selector("ol.timeline li:has-text('acknowledged')")
        seen.sender_saw = await sender.locator("ol.timeline").inner_text()
        await sender.goto(sender_base + "/sent")
        await shoot(sender, "sent")
        await officer.goto(base + "/directory")
        await shoot(officer, "directory")
        await officer.goto(base + "/")
        await officer.click("footer a[hreflang=fr]")
        await officer.wait_for_selector("html[lang=fr]")
        seen.french_heading = await officer.locator("h1").inner_text()
        await shoot(officer, "inbox-fr")

        # A wrong password is refused, then rate-limited (another person's browser).
        stranger = await new_page(refusals_expected=True)
        for _ in range(6):
            await stranger.goto(sender_base + "/login")
            await stranger.fill("#name", SENDER)
            await stranger.fill("#password", "not the password")
            async with stranger.expect_response(lambda r: r.request.method == "POST") as info:
                await stranger.click("button[type=submit]")
            seen.wrong_password.append((await info.value).status)
        seen.rate_limited_text = await stranger.locator("p.error").inner_text()
        await browser.close()
    return seen


def _axe_source() -> str:
    """axe-core as shipped by the axe-playwright-python package (a dev dependency)."""
    import axe_playwright_python

    return (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text()


def _png(width: int = 40, height: int = 30) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes([200, 120, 40]) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


async def test_console_walkthrough_in_a_headless_browser(relay: RelayEnv, tmp_path: Path) -> None:
    from clients.config import ConsoleUser
    from clients.console.users import hash_password

    net = relay.net
    shots = Path(os.environ.get("CPAR_SCREENSHOTS") or tmp_path)
    await asyncio.to_thread(shots.mkdir, parents=True, exist_ok=True)
    first = seal(
        net["it-tpc"],
        net.directory,
        to=["fr-oclcc"],
        content={"kind": "free_text", "text": "An earlier, routine matter"},
        now=relay.clock(),
        priority="routine",
    )
    user = ConsoleUser(name=SENDER, password_hash=await asyncio.to_thread(hash_password, PASSWORD))
    async with (
        running_daemon(relay, "fr-oclcc", tmp_path / "fr", console_port=0) as daemon,
        running_daemon(
            relay, "it-tpc", tmp_path / "it", console_port=0, console_users=[user]
        ) as sender,
    ):
        await relay.client("it-tpc").send(first.token)

        async def stored(n: int) -> bool:
            assert daemon.inbox is not None
            return len(await daemon.inbox.received.list()) >= n

        await until(lambda: stored(1))
        assert daemon.console_link is not None and sender.console_link is not None
        sender_base = sender.console_link.split("/login/")[0]
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.clients.test_console_browser",
            daemon.console_link,
            sender_base,
            str(shots),
            str(tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        try:
            async with asyncio.timeout(180):
                out_bytes, err = await child.communicate()
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        assert child.returncode == 0, err.decode()
        seen = Seen(**json.loads(out_bytes.splitlines()[-1]))

        async def acknowledged() -> bool:
            return (await relay.client("it-tpc").timeline(seen.msg_id)).state == "acknowledged"

        await until(acknowledged)
        (opened,) = [m for m in await relay.client("de-bka").poll() if m.type == "envelope"]
        assert opened.id == seen.msg_id  # the second recipient got it too
    assert seen.errors == []  # no script error, no CSP violation
    assert set(seen.axe) == set(PAGES)
    assert seen.axe == {page: [] for page in PAGES}  # no serious or critical violation
    assert seen.inbox_rows == 1 and seen.live_row
    # Dates in UTC, and in the viewer's own timezone beside them.
    assert "UTC" in seen.first_time and "Europe/Paris" in seen.first_time
    # Before sending: an acknowledgement within 5 minutes pulls the urgent plan earlier,
    # and de-bka (no daemon running) is named as not reachable now.
    assert seen.plan == ["5 min", "25 min", "1 h 55 min"]
    assert "de-bka" in seen.unreachable and "fr-oclcc" not in seen.unreachable
    assert set(seen.sent_to.split(", ")) == {"fr-oclcc", "de-bka"}
    assert seen.handling_first and seen.photo_loaded
    assert "Acknowledged by Lt. Moreau" in seen.acknowledged
    assert "acknowledged by fr-oclcc" in seen.sender_saw
    assert seen.csrf_less == 403
    assert seen.wrong_password[:4] == [401] * 4 and seen.wrong_password[-1] == 429
    assert "Too many failed attempts" in seen.rate_limited_text
    assert seen.french_heading == "Boîte de réception"
    bases = (daemon.console_link or "").split("/login/")[0], sender_base
    # Nothing but the two consoles (and the photo preview's local blob: URL).
    local = (*bases, *(f"blob:{b}" for b in bases))
    assert seen.requests and all(u.startswith(local) for u in seen.requests)
    for name in PAGES:
        for width in WIDTHS:
            data = await asyncio.to_thread((shots / f"console-{name}-{width}.png").read_bytes)
            assert data.startswith(b"\x89PNG") and len(data) > 5_000


def main(argv: list[str]) -> int:
    link, sender_base, shots, work = argv
    try:
        seen = asyncio.run(browse(link, sender_base, Path(shots), Path(work)))
    except Exception:
        traceback.print_exc()
        return 1
    print(json.dumps(asdict(seen)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
