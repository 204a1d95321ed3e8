"""``/ops`` in a real headless browser: Debian's chromium driven by Playwright.

The relay runs in-process (the ``relay`` fixture, fake clock) on this test's event loop.
The browser runs in a child process (this module run with ``python -m``) that talks to
the test over stdin/stdout. Not a thread: blockbuster checks every thread that runs an
event loop, and Playwright's driver start-up stats files on its loop; a separate process
keeps blockbuster fully armed on the relay's loop and keeps the browser's warnings out of
pytest's ``filterwarnings = error``.

The test fails, loudly, when chromium or playwright is missing: CI installs both
(``.ci/run``: ``apt-get install chromium``; ``.[dev]``: playwright). Playwright's own
browser downloads are never used (``executable_path``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from relay.api import ops
from relay.api.ops import token_digest
from relay.settings import OperatorCredential, RelaySettings
from tests.browserfixture import CHROMIUM, LAUNCH_ARGS, TIMEOUT_MS, watch
from tests.netfixture import AUTHORITIES, Network
from tests.opsfixture import (
    OPERATOR_TOKEN,
    answer,
    connect,
    open_escalation,
    seal_to,
    send,
)
from tests.relayfixture import RelayEnv, write_relay_files

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def relay_settings(tmp_path: Path, net: Network) -> RelaySettings:
    base = write_relay_files(tmp_path, net)
    cred = OperatorCredential(name="ops-alice", token_sha256=token_digest(OPERATOR_TOKEN))
    return base.model_copy(update={"operators": [cred]})


@dataclass
class Seen:
    """What the browser saw, handed back to the test's thread."""

    authorities: list[str] = field(default_factory=list)
    escalation_row: str = ""
    fr_open_escalations: str = ""
    bka_p50: str = ""
    lookup: str = ""
    live: str = ""
    presence_after: str = ""
    health: str = ""
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def browse(base_url: str, escalated_id: str, delivered_id: str, shot: Path) -> Seen:
    """The child's side: load /ops, report "loaded", wait for "go", check the update."""
    from playwright.async_api import async_playwright

    seen = Seen()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            context = await browser.new_context(
                http_credentials={"username": "ops-alice", "password": os.environ["OPS_TOKEN"]},
                viewport={"width": 1400, "height": 1000},
            )
            page = await context.new_page()
            watch(page, seen.requests, seen.errors)
            reply = await page.goto(base_url + "/ops", timeout=TIMEOUT_MS)
            assert reply is not None and reply.status == 200
            # The inline script has received a snapshot over SSE and redrawn the page.
            await page.wait_for_selector("#live.ok", timeout=TIMEOUT_MS)
            seen.live = await page.inner_text("#live")
            seen.authorities = await page.eval_on_selector_all(
                "#authorities-body tr", "rows => rows.map(r => r.dataset.authority)"
            )
            seen.escalation_row = await page.inner_text(f'tr[data-message="{escalated_id}"]')
            seen.fr_open_escalations = await page.inner_text(
                'tr[data-authority="fr-oclcc"] td:nth-child(7)'
            )
            seen.bka_p50 = await page.inner_text('tr[data-authority="de-bka"] td:nth-child(8)')
            # The search box: the form reloads the page with that message's timeline.
            await page.fill('input[name="message"]', delivered_id)
            await page.click("#lookup button")
            await page.wait_for_selector("#lookup-result table", timeout=TIMEOUT_MS)
            seen.lookup = await page.inner_text("#lookup-result")
            # Live: the test connects fr-oclcc's daemon now; the row turns "connected".
            print("loaded", flush=True)
            if (await asyncio.to_thread(sys.stdin.readline)).strip() != "go":
                raise AssertionError("the test did not connect the daemon")
            await page.wait_for_selector(
                'tr[data-authority="fr-oclcc"] td.presence.ok', timeout=TIMEOUT_MS
            )
            seen.presence_after = await page.inner_text('tr[data-authority="fr-oclcc"] td.presence')
            await page.wait_for_function(
                "!document.getElementById('health').textContent.includes('fr-oclcc')",
                timeout=TIMEOUT_MS,
            )
            seen.health = await page.inner_text("#health")
            await page.screenshot(path=str(shot), full_page=True)
        finally:
            await browser.close()
    return seen


@pytest.fixture
def browser_available() -> None:
    """Fail (never skip) when the browser or its driver is missing."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[dev]'")


@pytest.mark.usefixtures("browser_available")
async def test_dashboard_in_a_headless_browser(
    relay: RelayEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ops, "SSE_INTERVAL_S", 0.2)

    # Traffic: a notice to de-bka delivered after 1.5 s, then an urgent one to fr-oclcc
    # that nobody acknowledges past its reminder step.
    delivered = seal_to(relay, to="de-bka")
    await send(relay, delivered)
    relay.clock.advance(1500)
    await answer(relay, delivered, "delivered", by="de-bka")
    escalated = await open_escalation(relay)

    shot = tmp_path / "ops-dashboard.png"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.relay.test_ops_browser",
        relay.base_url,
        escalated.id,
        delivered.id,
        str(shot),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "OPS_TOKEN": OPERATOR_TOKEN},
    )
    assert child.stdin is not None and child.stdout is not None and child.stderr is not None
    ws = None
    try:
        async with asyncio.timeout(90):
            line = await child.stdout.readline()
            if line.strip() != b"loaded":
                await child.wait()
                raise AssertionError(
                    f"the browser failed: {line!r}\n{(await child.stderr.read()).decode()}"
                )
            ws = await connect(relay, "fr-oclcc")  # the page should turn it "connected"
            child.stdin.write(b"go\n")
            await child.stdin.drain()
            out, err = await child.communicate()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        if ws is not None:
            await ws.close()
    assert child.returncode == 0, err.decode()
    seen = Seen(**json.loads(out))

    assert seen.errors == []  # no script error, no CSP violation
    assert seen.live == "live"
    assert seen.authorities == list(AUTHORITIES)
    assert escalated.id in seen.escalation_row
    assert "urgent" in seen.escalation_row and "remind" in seen.escalation_row
    assert "escalated (remind) by relay-eu" in seen.escalation_row
    assert seen.fr_open_escalations == "1"
    assert seen.bka_p50 == "1.5 s"
    assert "delivered" in seen.lookup and "de-bka" in seen.lookup
    assert seen.presence_after == "connected"
    # Ten minutes with the other daemons offline: degraded, naming each; fr-oclcc, just
    # connected, is no longer named once the live update arrives.
    assert seen.health.startswith("degraded: ")
    assert "de-bka unreachable for 10m" in seen.health
    assert "fr-oclcc" not in seen.health
    # Everything the page loaded came from the relay itself.
    assert seen.requests and all(u.startswith(relay.base_url + "/") for u in seen.requests)
    data = await asyncio.to_thread(shot.read_bytes)
    keep = os.environ.get("CPAR_SCREENSHOTS")  # a folder to keep the screenshot in
    if keep:
        await asyncio.to_thread(Path(keep, "ops-degraded.png").write_bytes, data)
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def main(argv: list[str]) -> int:
    base_url, escalated_id, delivered_id, shot = argv
    try:
        seen = asyncio.run(browse(base_url, escalated_id, delivered_id, Path(shot)))
    except Exception:
        traceback.print_exc()
        return 1
    print(json.dumps(asdict(seen)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
