"""The officer console in a real headless browser (Debian's chromium, Playwright).

The relay and the recipient's daemon run in-process; the browser runs in a child
process (this module run with ``python -m``), as tests/relay/test_ops_browser.py does
and for the same reasons. The walk: sign in with the one-time link, see the inbox, see
a new notice arrive live (no reload), open it (the handling restrictions come first,
the decrypted photo shows), acknowledge it, and the sender's timeline says so. Every
page is also shot at 1280 and 390 px wide (kept in ``$CPAR_SCREENSHOTS`` when set), and
the page must raise no script error and break no CSP rule, and axe-core must find no
serious or critical accessibility violation on any of them.
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
from tests.daemonfixture import running_daemon
from tests.relayfixture import RelayEnv
from tests.waiting import until

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
TIMEOUT_MS = 15_000
WIDTHS = (1280, 390)


@dataclass
class Seen:
    axe: dict[str, list[str]] = field(default_factory=dict)
    """Per page: the serious or critical accessibility violations axe-core found."""
    inbox_rows: int = 0
    first_time: str = ""
    live_row: bool = False
    handling_first: bool = False
    photo_loaded: bool = False
    acknowledged: str = ""
    shots: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def browse(link: str, shots: Path) -> Seen:
    """The child's side: sign in, wait for "go" (a new notice sent), then the walk."""
    from playwright.async_api import async_playwright

    seen = Seen()
    base = link.split("/login/")[0]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        page = await browser.new_page(
            viewport={"width": 1280, "height": 900}, timezone_id="Europe/Paris"
        )
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda e: seen.errors.append(f"pageerror: {e}"))
        page.on(
            "console",
            lambda m: seen.errors.append(f"console: {m.text}") if m.type == "error" else None,
        )
        page.on("request", lambda r: seen.requests.append(r.url))

        axe_source = await asyncio.to_thread(_axe_source)

        async def shoot(name: str) -> None:
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

        await page.goto(link)
        await page.fill("#person", "Lt. Moreau")
        await page.click("button[type=submit]")
        try:
            await page.wait_for_selector("table.inbox")
        except Exception as exc:
            raise RuntimeError(f"no inbox at {page.url}: {(await page.content())[-1200:]}") from exc
        seen.inbox_rows = await page.locator("table.inbox tbody tr").count()
        seen.first_time = await page.locator("table.inbox time").first.inner_text()
        print("loaded", flush=True)
        if (await asyncio.to_thread(sys.stdin.readline)).strip() != "go":
            raise RuntimeError("no go")
        # The new notice appears without a reload (server-sent events).
        # (Polled from here: the page's CSP rightly forbids evaluating strings.)
        rows = page.locator("table.inbox tbody tr")
        async with asyncio.timeout(TIMEOUT_MS / 1000):
            while await rows.count() <= seen.inbox_rows:  # noqa: ASYNC110 - the page changes itself
                await asyncio.sleep(0.1)
        seen.live_row = True
        await shoot("inbox")
        await page.click("table.inbox tbody tr:first-child a")
        await page.wait_for_selector("section.handling")
        html = await page.content()
        seen.handling_first = html.index("Handling restrictions") < html.index("<h1>")
        img = page.locator("figure img")
        if await img.count():
            seen.photo_loaded = await img.first.evaluate("i => i.complete && i.naturalWidth > 0")
        await shoot("message")
        await page.check("input[name=confirm]")
        await page.click('button:has-text("Acknowledge")')
        await page.wait_for_selector("text=Acknowledged by")
        seen.acknowledged = await page.locator("section.decision").inner_text()
        await page.goto(base + "/compose")
        await shoot("compose")
        await page.goto(base + "/sent")
        await shoot("sent")
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
    from clients.config import ClientSettings
    from clients.directory import PinnedDirectory
    from clients.kinds import parse_notice
    from clients.sender import Outgoing, send
    from keys.encoding import b64e

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
    async with running_daemon(relay, "fr-oclcc", tmp_path / "fr", console_port=0) as daemon:
        await relay.client("it-tpc").send(first.token)

        async def stored(n: int) -> bool:
            assert daemon.inbox is not None
            return len(await daemon.inbox.received.list()) >= n

        await until(lambda: stored(1))
        assert daemon.console_link is not None
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.clients.test_console_browser",
            daemon.console_link,
            str(shots),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        assert child.stdin is not None and child.stdout is not None and child.stderr is not None
        try:
            async with asyncio.timeout(120):
                line = await child.stdout.readline()
                if line.strip() != b"loaded":
                    await child.wait()
                    raise AssertionError(
                        f"the browser failed: {line!r}\n{(await child.stderr.read()).decode()}"
                    )
                # The sender sends an urgent identification notice with a photo.
                photo = tmp_path / "front.png"
                await asyncio.to_thread(photo.write_bytes, _png())
                sender = ClientSettings(
                    relay_url=relay.base_url,
                    root_key=b64e(net.root.signing_key().public),
                    data_dir=tmp_path / "it",
                )
                await asyncio.to_thread(sender.data_dir.mkdir)
                notice = parse_notice(
                    {
                        "kind": "identification_notice",
                        "object_description": "Etruscan bronze mirror",
                        "identified_where": "Online auction, lot 42",
                        "identified_at": relay.clock() - 3_600_000,
                        "photos": ["front.png"],
                    }
                )
                out = Outgoing(
                    to=("fr-oclcc",),
                    fallback=(),
                    priority="urgent",
                    ttl_ms=86_400_000,
                    ack_within_ms=None,
                    handling=("no-onward-sharing",),
                    attachments=(photo,),
                    content=notice.model_dump(mode="json", exclude_none=True),
                    notice=notice,
                )
                pinned = await asyncio.to_thread(PinnedDirectory.load, sender)
                result = await send(sender, net["it-tpc"], pinned, out, clock=relay.clock)
                await until(lambda: stored(2))
                child.stdin.write(b"go\n")
                await child.stdin.drain()
                out_bytes, err = await child.communicate()
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()
        assert child.returncode == 0, err.decode()
        seen = Seen(**json.loads(out_bytes.splitlines()[-1]))

        async def acknowledged() -> bool:
            return (await relay.client("it-tpc").timeline(result.sealed.id)).state == "acknowledged"

        await until(acknowledged)
    assert seen.errors == []  # no script error, no CSP violation
    assert set(seen.axe) == {"inbox", "message", "compose", "sent"}
    assert seen.axe == {page: [] for page in seen.axe}  # no serious or critical violation
    assert seen.inbox_rows == 1 and seen.live_row
    # Dates in UTC, and in the viewer's own timezone beside them.
    assert "UTC" in seen.first_time and "Europe/Paris" in seen.first_time
    assert seen.handling_first and seen.photo_loaded
    assert "Acknowledged by Lt. Moreau" in seen.acknowledged
    base = daemon.console_link.split("/login/")[0] if daemon.console_link else ""
    assert seen.requests and all(u.startswith(base) for u in seen.requests)
    for name in ("inbox", "message", "compose", "sent"):
        for width in (1280, 390):
            data = await asyncio.to_thread((shots / f"console-{name}-{width}.png").read_bytes)
            assert data.startswith(b"\x89PNG") and len(data) > 5_000


def main(argv: list[str]) -> int:
    link, shots = argv
    try:
        seen = asyncio.run(browse(link, Path(shots)))
    except Exception:
        traceback.print_exc()
        return 1
    print(json.dumps(asdict(seen)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
